"""What run.py does once its flags are parsed: the checks of flag combinations, the configurations they name,
and the three branches (--report, a --launcher sweep, a run in this process) with what each prints.

run.py builds the parser and calls ``body(args, parser)``; every function here takes plain values or the
parsed namespace and never reads sys.argv, so tests call them directly.
"""
import itertools
import os
import shlex
import sys

from .cli import DataError, UsageError, check_device_name, resolve_device
from .config import Config
from .demo import DEMO_DATA, DEMOS, demo_note
from .experiment import prepare, run_and_write
from .files import TABLE_NAME
from .launch import launch_options
from .methods import METHODS
from .names import check_path_part, parse_side
from .perturb import INPUT, KINDS
from .results import check_output_files
from .tasks import TASKS

# ----------------------------------------------------------------------------------------------------------
# Help texts that the parser takes from the registries
# ----------------------------------------------------------------------------------------------------------

def methods_help():
    return ("one or more of: " + "; ".join(f"{n}: {m.description}" for n, m in METHODS.items())
            + f" (--task {one_sided()}: none)")


def tasks_help():
    return "; ".join(f"{n}: {t.description}" for n, t in TASKS.items())


def perturbations_help():
    return "; ".join(f"{k.name}:{k.level} ({stage(k)}): {k.meaning}" for k in KINDS.values())


def stage(kind):
    return "a get_embeds.py --perturb file" if kind.stage == INPUT else "rows, by run.py"


def one_sided():
    return "/".join(n for n, t in TASKS.items() if t.sides == 1)


def applies(flag):
    """For --help: which tasks a run flag applies to."""
    tasks = [n for n, t in TASKS.items() if flag in t.uses]
    return "" if len(tasks) == len(TASKS) else f" (--task {', '.join(tasks)} only)"


# flags that --demo sets itself, and those that --source / --target replace
DEMO_SETS = ("method", "vid_model", "text_model", "source", "target", "base_samples", "query_samples",
             "clustering_mode", "base_data", "query_data", "seeds", "task")
PAPER_MODELS = ("vid_model", "text_model")


# what --figure may end in: image formats matplotlib writes (tests/test_sweep_cases.py checks them against it)
FIGURE_TYPES = ("png", "pdf", "svg", "jpg", "jpeg", "eps", "ps", "tif", "tiff", "webp")


def check_flags(args, parser):
    """Flag combinations that would be silently ignored or give wrong numbers."""
    given = [k for k in DEMO_SETS if getattr(args, k) != parser.get_default(k)]
    flag = {"method": "--m", "vid_model": "--vid_model", "text_model": "--text_model", "base_samples": "--b",
            "query_samples": "--q", "clustering_mode": "--c", "base_data": "--base_data",
            "query_data": "--query_data"}
    if args.demo and given:
        raise UsageError(f"--demo sets its own models, methods, data and seeds: drop "
                         f"{', '.join(flag.get(k, '--' + k) for k in given)}")
    if args.source is not None and any(k in given for k in PAPER_MODELS):
        raise UsageError("--source / --target name both sides: drop --vid_model / --text_model")
    if os.path.realpath(args.results_dir) == os.path.realpath(args.seedwise_dir):
        raise UsageError(f"--results-dir and --seedwise-dir are both {args.results_dir}: the averaged CSV would "
                         f"replace the per-seed one; give two folders")
    if args.figure is not None:
        try:
            check_path_part(args.figure, "--figure")  # the one rule for a name in a path
        except UsageError:
            raise UsageError(f"--figure {args.figure!r}: give a file name; the figure goes into "
                             f"--results-dir") from None
        if os.path.splitext(args.figure)[1].lower().lstrip(".") not in FIGURE_TYPES:
            # a figure named summary.csv or table.csv would overwrite run.py's own files with an image
            raise UsageError(f"--figure {args.figure!r}: give an image file name ending in one of "
                             f"{', '.join('.' + t for t in FIGURE_TYPES)}, e.g. figure1.png")
    if args.report and args.launcher:
        raise UsageError("--report reads the CSVs already in --results-dir and runs nothing: drop --launcher")
    if args.overwrite and not args.launcher:
        raise UsageError("--overwrite: a run without --launcher computes every configuration anyway (a "
                         "--launcher run skips those with results); drop it, or add --launcher")
    if args.performance is not None and not args.report:
        raise UsageError("--performance is joined by --report: add --report (runs write no correlations)")
    named = [f for f in ("performance_model", "performance_score") if getattr(args, f) != parser.get_default(f)]
    if named and args.performance is None:
        raise UsageError(f"--{named[0].replace('_', '-')} names a column of --performance FILE.csv: add it")
    if TASKS[args.task].sides == 1 and not args.report:
        task = args.task
        if args.source is not None or any(k in given for k in PAPER_MODELS) or args.vtl:
            raise UsageError(f"--task {task} takes one side a configuration: name the sides with --target "
                             f"(drop --source, --vid_model, --text_model, -vtl)")
        if args.target is None:
            raise UsageError(f"--task {task}: name the side(s) with --target, e.g. --target efficientnet_lite0:img")
        if "method" in given:
            raise UsageError(f"--task {task} runs no matching method: drop --m")
        options = [o for m in METHODS.values() for o in m.options_from_args(args)]
        if options:
            raise UsageError(f"--task {task} runs no matching method, so method options such as "
                             f"--{options[0].replace('_', '-')} do not apply: drop them")


def configs_from_args(args):
    """The cross product of methods x sides (or the paper's models) as configurations."""
    common = dict(base_samples=args.base_samples, query_samples=args.query_samples,
                  clustering_mode=args.clustering_mode, base_data=args.base_data, query_data=args.query_data,
                  stretch=args.stretch, seeds=tuple(args.seeds), base_seed=args.base_seed, task=args.task,
                  permutations=args.permutations, data_dir=args.data_dir, results_dir=args.results_dir,
                  seedwise_dir=args.seedwise_dir)

    def options(method):  # the method's own flags as given (defaults: its dataclass's)
        return tuple(METHODS[method].options_from_args(args).items())
    methods, vid_models, text_models = args.method, args.vid_model, args.text_model
    if args.demo:
        demo = DEMOS[args.demo]
        methods, vid_models, text_models = demo["methods"], demo["vid_models"], demo["text_models"]
        common.update(DEMO_DATA)
    if TASKS[args.task].sides == 1 and not args.demo:
        # one configuration a side, no method; sides that read the same once (swap:.50 is swap:0.5)
        return [Config(method="", source=None, target=t, **common)
                for t in dict.fromkeys(parse_side(t) for t in args.target)]
    if (args.source is None) != (args.target is None):
        raise UsageError("--source and --target go together (or use the paper's --text_model / --vid_model)")
    if args.source is not None and not args.demo:
        if args.vtl:
            raise UsageError("-vtl swaps the paper's model flags; with --source / --target name the sides directly")
        sources = list(dict.fromkeys(parse_side(s) for s in args.source))
        targets = list(dict.fromkeys(parse_side(t) for t in args.target))
        same = [s for s in sources if s in targets]
        if same:
            raise UsageError(f"{same[0]} is both a source and a target: the run would match a file to itself")
        return [Config(method=m, source=s, target=t, options=options(m), **common)
                for s, t, m in itertools.product(sources, targets, dict.fromkeys(methods))]
    return [Config.paper(tm, vm, args.vtl, method=m, options=options(m), **common)
            for vm, tm, m in itertools.product(dict.fromkeys(vid_models), dict.fromkeys(text_models),
                                               dict.fromkeys(methods))]


def say_what_was_written(done, configs, results_dir):
    """After a multi-configuration run stopped (an error, a full disk, Ctrl-C): which configurations have
    their CSVs (and summary.csv row), and that no table or figure was made."""
    names = [c.name() for c in done]
    print(f"run.py: stopped after {len(done)} of {len(configs)} configurations"
          + (f"; these have their CSVs and summary.csv row: {', '.join(names)}" if names else
             "; none was written")
          + ". No table.csv or figure was made"
          + (f": python run.py --report --results-dir {shlex.quote(str(results_dir))} makes them from the CSVs "
             f"written" if names else "") + ".", file=sys.stderr)

def body(args, parser):
    """run.py after parsing: the checks, then --report, a --launcher sweep, or the run in this process."""
    check_flags(args, parser)
    launch = launch_options(args, parser)
    if args.report:
        return report_from_csvs(args)
    configs = configs_from_args(args)
    if launch:
        return sweep(args, configs, launch)
    return run_here(args, parser, configs)


def report_from_csvs(args):
    """--report: table.csv, the figure and correlations.csv from the CSVs already in --results-dir."""
    from . import report  # matplotlib only when a report is made
    check_output_files([os.path.join(args.results_dir, n) for n in (TABLE_NAME, figure_name(args))])
    rows = report.read_results(args.results_dir)
    if not rows:
        raise DataError(f"{args.results_dir} holds no result CSVs: run some configurations first")
    performance = None
    if args.performance is not None:
        from .correlations import read_performance
        performance = read_performance(args.performance, args.performance_model, args.performance_score)
    paths, text = report.write_full_report(rows, args.results_dir, x=args.x, figure_name=figure_name(args),
                                           performance=performance)
    print(text + "\n\n" + "\n".join(f"wrote {p}" for p in paths))
    return 0


def run_here(args, parser, configs):
    """Every configuration in this process: its CSVs and summary.csv row; the table and figure of a run of
    several; what was written."""
    device = resolve_device(args.device, args.gpu)
    try:
        groups = prepare(configs)  # every check before any computation or writing
    except DataError as e:
        if all(getattr(args, k) == parser.get_default(k) for k in vars(args)):
            raise DataError(f"{e}. (With no flags run.py runs the paper's default models on COCO and "
                            f"nocaps; to try it on the bundled embeddings: python run.py --demo)") from None
        raise
    if len(groups) > 1:  # the report's files, too, before any computation
        check_output_files([os.path.join(args.results_dir, n) for n in (TABLE_NAME, figure_name(args))])
    avgs, written, done = [], [], []
    try:
        for cfg, avg, paths in run_and_write(groups, device, progress=not args.quiet):
            avgs.append(avg)
            done.append(cfg)
            written += [f"wrote {paths['seedwise']}", f"wrote {paths['results']}"]
    except BaseException:
        if len(configs) > 1:
            say_what_was_written(done, configs, args.results_dir)
        raise
    from . import report
    if len(groups) > 1:
        table_path, figure_path, text = report.write_report(avgs, args.results_dir, x=args.x,
                                                            figure_name=figure_name(args))
        print(text)
        written += [f"wrote {p}" for p in (table_path, figure_path) if p is not None]
    else:
        print(report.format_table(report.build_table(avgs)))
    chance = sorted({a["query_samples"] for a in avgs if a["query_samples"] != ""})
    if chance:
        print("\nchance level of matching_acc and top_1: " + ", ".join(f"1/{q} = {1 / q:.2%}" for q in chance))
    print()
    if len(avgs) > 3:
        dirs = sorted({str(c.output_paths()[k].parent) for c in configs for k in ("seedwise", "results")})
        written = [f"wrote {len(avgs)} seedwise and {len(avgs)} averaged CSVs in {' and '.join(dirs)}"] + [
            w for w in written if not w.endswith(".csv") or w.endswith("table.csv")]
    print("\n".join(written))
    print(f"appended {len(avgs)} row(s) to {configs[0].output_paths()['summary']}")
    if args.demo:
        print("\n" + demo_note(args.demo))
    return 0


def figure_name(args):
    return args.figure or (DEMOS[args.demo]["figure"] if args.demo else "figure1.png")


def sweep(args, configs, launch_opts):
    """--launcher: a job per group of configurations without results (every input checked first); when the
    jobs have ended, table.csv and the figure from every result in --results-dir, as --report makes them, and
    one line per failed job. Exit 1 if a job failed."""
    from . import launch, report
    if launch_opts.launcher == "slurm":  # the jobs' nodes may have devices this one lacks
        if args.device != "auto":
            check_device_name(args.device)
    else:  # the jobs run on this machine
        resolve_device(args.device, args.gpu)
    specs, skipped = launch.run_specs(configs, args.device, args.gpu, args.overwrite, progress=not args.quiet)
    if skipped:
        print(f"skipped {len(skipped)} of {len(configs)} configurations: their results are in {args.results_dir}/ "
              f"(same configuration hash; --overwrite recomputes them)")
    if not specs:
        print("nothing to run: every configuration has its results")
        outcome = launch.Outcome()
    else:
        collect = (f"`python run.py --report --results-dir {args.results_dir}` makes table.csv and the figure, "
                   f"and this command again runs only what is missing")
        outcome = launch.launch(specs, launch_opts, "run", collect)
        if not outcome.waited:
            return 0
        ran = sum(len(written) for _, written in outcome.results)
        print(f"{len(outcome.results)} of {len(specs)} job(s) done: {ran} configuration(s) written")
    rows = report.read_results(args.results_dir) if os.path.isdir(args.results_dir) else []
    if rows:
        table_path, figure_path, text = report.write_report(rows, args.results_dir, x=args.x,
                                                            figure_name=figure_name(args))
        print(f"\n{text}\n\nwrote {table_path}" + (f"\nwrote {figure_path}" if figure_path else ""))
    return launch.print_failures(outcome, len(specs))
