r"""Match captions to images (or any two sides) with no training: anchors, methods, matching and retrieval.

The paper's command works as written:
    python run.py --m linear --b 320 --q 500 --c 0 --vid_model dinov2 --text_model allroberta \
        --base_data coco --query_data nocaps --gpu 0
Several methods and models in one process (their cross product, each with its own CSVs):
    python run.py --m relative qap --vid_model efficientnet_lite0 efficientnet_lite1 --text_model minilm mpnet ...
Any two sides, e.g. cross-lingual:  python run.py --source mpnet:text --target use:text:de --base_data flickr1k ...
Class names against images:  python run.py --task classes --b 20 --base_data caltech101 --query_data caltech101 ...
A sweep as cluster jobs, one per pair (resumable):  python run.py ... --launcher slurm --slurm-gpus 1
Perturbed sides, a configuration a level:  python run.py --source mpnet:text~swap:0 mpnet:text~swap:0.5 ...
A linear probe of each side (downstream performance):  python run.py --task probe --target pixels:img ...
Which metric predicts what:  python run.py --report [--performance FILE.csv]
``python run.py --demo`` draws Figure 1 in small from the bundled embeddings; ``--demo depth`` across depth.
"""
import itertools
import os
import shlex
import sys

from src.cli import (
    ArgumentParser,
    DataError,
    UsageError,
    add_device_args,
    check_device_name,
    resolve_device,
    run_main,
)
from src.config import Config
from src.experiment import check_output_files, prepare, run_and_write
from src.files import TABLE_NAME
from src.launch import add_launch_args, launch_options
from src.methods import METHODS
from src.metrics import METRICS
from src.names import check_path_part, parse_side
from src.perturb import INPUT, KINDS
from src.tasks import TASKS

ALL_BUT_COS = [m for m, method in METHODS.items() if not method.same_space and not method.blind_only]
DEMOS = {
    # Figure 1 in small: 3 image encoders x 2 text encoders, every method that applies
    "figure1": dict(methods=ALL_BUT_COS, vid_models=["efficientnet_lite0", "efficientnet_lite1",
                                                     "efficientnet_lite2"], text_models=["minilm", "mpnet"],
                    figure="figure1.png"),
    # Figure 1 across depth: EfficientNet-Lite0's blocks, pixels and a random Lite0 against mpnet captions
    "depth": dict(methods=ALL_BUT_COS, vid_models=[f"efficientnet_lite0@_blocks.{k}" for k in (1, 3, 5, 8, 11, 14)]
                  + ["efficientnet_lite0", "pixels", "random:efficientnet_lite0"], text_models=["mpnet"],
                  figure="figure1_depth.png"),
}
DEMO_DATA = dict(base_data="flickr1k", query_data="flickr1k", base_samples=320, query_samples=500,
                 clustering_mode=0, seeds=(0, 1, 2))
DEMO_NOTE = """\
What these numbers mean: {q} flickr8k captions are matched to their {q} photos (chance: 1/{q} = {chance:.1%})
using {b} known image-caption pairs as anchors, with no training, averaged over seeds 0 1 2. Matching
accuracy: the fraction of captions assigned their own photo; top-1: the fraction whose photo scores best
(qap only matches); alignment: how alike the two spaces are on the same rows (CKA variants, mutual k-NN,
CKNNA). {what}"""
DEMO_WHAT = {
    "figure1": "Captions by all-MiniLM-L6-v2 or all-mpnet-base-v2;\nphotos by small ImageNet classifiers "
               "(EfficientNet-Lite0/1/2), far weaker and more alike than the paper's ~30:\nexpect a narrow "
               "spread and low accuracy.",
    "depth": "Captions by all-mpnet-base-v2; photos by EfficientNet-Lite0 at six depths and its final "
             "layer,\nand two controls that learned nothing: 16 x 16 pixels and a randomly initialised Lite0.",
}


def build_parser():
    p = ArgumentParser(prog="run.py", description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--m", "--method", dest="method", nargs="+", default=["linear"], choices=sorted(METHODS),
                   metavar="METHOD", help="one or more of: " + "; ".join(f"{n}: {m.description}"
                                                                          for n, m in METHODS.items())
                   + f" (--task {_one_sided()}: none)")
    p.add_argument("--b", "--base-samples", dest="base_samples", type=int, default=320,
                   help=f"number of anchors (--task classes/classify: anchor classes; --task {_one_sided()}: "
                        f"accepted and not used)")
    p.add_argument("--q", "--query-samples", dest="query_samples", type=int, default=500,
                   help="number of queries" + _applies("query_samples"))
    p.add_argument("--c", "--clustering-mode", dest="clustering_mode", type=int, default=0, choices=(0, 1, 2),
                   help="0: random anchors; 1: anchors from the source side's k-means clusters; 2: the target's"
                        + _applies("clustering_mode"))
    p.add_argument("--vid_model", "--vision-model", dest="vid_model", nargs="+", default=["dinov2"],
                   metavar="MODEL", help="vision model(s) of the _img files ([random:]NAME[@LAYER])")
    p.add_argument("--text_model", "--text-model", dest="text_model", nargs="+", default=["allroberta"],
                   metavar="MODEL", help="text model(s) of the _text files")
    p.add_argument("--source", nargs="+", default=None, metavar="SIDE",
                   help="source side(s) MODEL:img|text[:LANG][~KIND:LEVEL] (with --target; replaces the paper's "
                        "model flags). ~KIND:LEVEL perturbs the side, each level its own configuration: "
                        + "; ".join(f"{k.name}:{k.level} ({_stage(k)}): {k.meaning}" for k in KINDS.values()))
    p.add_argument("--target", nargs="+", default=None, metavar="SIDE",
                   help=f"target side(s), as --source (--task {_one_sided()}: the sides, each its own "
                        f"configuration)")
    p.add_argument("--task", default="captions", choices=tuple(TASKS),
                   help="; ".join(f"{n}: {t.description}" for n, t in TASKS.items()))
    p.add_argument("--base_data", "--base-data", dest="base_data", default="coco", help="dataset of the anchors")
    p.add_argument("--query_data", "--query-data", dest="query_data", default="nocaps",
                   help=f"dataset of the queries (--task {_one_sided()}: not used)")
    p.add_argument("-str", "--stretch", dest="stretch", action="store_true",
                   help="divide every dimension by its standard deviation first" + _applies("stretch"))
    p.add_argument("-vtl", "--vision-to-language", dest="vtl", action="store_true",
                   help="images are the source side, captions the target")
    add_device_args(p)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="query seeds (the paper's seed2; the class tasks: anchor-class seeds; --task probe: fold "
                        "seeds); they also seed row perturbations")
    p.add_argument("--base-seed", type=int, default=0,
                   help="anchor seed (the paper's fixed seed1)" + _applies("base_seed"))
    p.add_argument("--permutations", type=int, default=0,
                   help="also report each alignment metric's mean over N shuffled pairings and a z-score")
    p.add_argument("--data-dir", default="data", help="where the embeddings and cluster files are")
    p.add_argument("--results-dir", default="results", help="averaged CSVs, summary.csv, table.csv, figures")
    p.add_argument("--seedwise-dir", default="seedwise", help="per-seed CSVs")
    p.add_argument("--report", action="store_true",
                   help="only make results/table.csv, results/figure1.png and results/correlations.csv (every "
                        "alignment metric against every method's accuracy and --performance: Pearson, Spearman, "
                        "n, 95%% bootstrap intervals), perturbation.png (when sides are perturbed) and "
                        "performance.png (with --performance) from the CSVs in --results-dir")
    p.add_argument("--performance", default=None, metavar="FILE.csv",
                   help="--report: a per-model performance table joined to the table's rows by the model of "
                        "either side (the target's first), e.g. the probe's table.csv")
    p.add_argument("--performance-model", default="model", metavar="COLUMN",
                   help="--performance: the column of model names (as the sides write them; a side is read as "
                        "its model)")
    p.add_argument("--performance-score", default="score", metavar="COLUMN",
                   help="--performance: the column of scores")
    p.add_argument("--x", default="kernel_cka", choices=tuple(METRICS), help="the figure's x-axis metric")
    p.add_argument("--figure", default=None,
                   help="file name of the figure in --results-dir (default: figure1.png; --demo depth: "
                        "figure1_depth.png)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or logs")
    p.add_argument("--demo", nargs="?", const="figure1", choices=tuple(DEMOS), default=None,
                   help="the bundled flickr1k demo: figure1 (6 model pairs) or depth (Lite0 across depth)")
    add_launch_args(p)
    p.add_argument("--overwrite", action="store_true",
                   help="--launcher: also run the configurations whose results exist (without --launcher every "
                        "configuration is computed, as always)")
    seen = set()
    for name, method in METHODS.items():  # each method adds its own options' flags
        method.add_arguments(p, name, seen)
    return p


def _stage(kind):
    return "a get_embeds.py --perturb file" if kind.stage == INPUT else "rows, by run.py"


def _one_sided():
    return "/".join(n for n, t in TASKS.items() if t.sides == 1)


def _applies(flag):
    """For --help: which tasks a run flag applies to."""
    tasks = [n for n, t in TASKS.items() if flag in t.uses]
    return "" if len(tasks) == len(TASKS) else f" (--task {', '.join(tasks)} only)"


# flags that --demo sets itself, and those that --source / --target replace
DEMO_SETS = ("method", "vid_model", "text_model", "source", "target", "base_samples", "query_samples",
             "clustering_mode", "base_data", "query_data", "seeds", "task")
PAPER_MODELS = ("vid_model", "text_model")


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


def _say_what_was_written(done, configs, results_dir):
    """After a multi-configuration run stopped (an error, a full disk, Ctrl-C): which configurations have
    their CSVs (and summary.csv row), and that no table or figure was made."""
    names = [c.name() for c in done]
    print(f"run.py: stopped after {len(done)} of {len(configs)} configurations"
          + (f"; these have their CSVs and summary.csv row: {', '.join(names)}" if names else
             "; none was written")
          + ". No table.csv or figure was made"
          + (f": python run.py --report --results-dir {shlex.quote(str(results_dir))} makes them from the CSVs "
             f"written" if names else "") + ".", file=sys.stderr)


def main(argv=None):
    parser = build_parser()

    def body(args):
        check_flags(args, parser)
        launch = launch_options(args, parser)
        if args.report:
            from src import report  # matplotlib only when a report is made
            check_output_files([os.path.join(args.results_dir, n) for n in (TABLE_NAME, figure_name(args))])
            rows = report.read_results(args.results_dir)
            if not rows:
                raise DataError(f"{args.results_dir} holds no result CSVs: run some configurations first")
            performance = None
            if args.performance is not None:
                from src.correlations import read_performance
                performance = read_performance(args.performance, args.performance_model, args.performance_score)
            paths, text = report.write_full_report(rows, args.results_dir, x=args.x,
                                                   figure_name=figure_name(args),
                                                   performance=performance)
            print(text + "\n\n" + "\n".join(f"wrote {p}" for p in paths))
            return 0
        configs = configs_from_args(args)
        if launch:
            return sweep(args, configs, launch)
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
                _say_what_was_written(done, configs, args.results_dir)
            raise
        from src import report
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
            q = DEMO_DATA["query_samples"]
            print("\n" + DEMO_NOTE.format(q=q, b=DEMO_DATA["base_samples"], chance=1 / q,
                                           what=DEMO_WHAT[args.demo]))
        return 0

    return run_main(parser, argv, body)


def figure_name(args):
    return args.figure or (DEMOS[args.demo]["figure"] if args.demo else "figure1.png")


def sweep(args, configs, launch_opts):
    """--launcher: a job per group of configurations without results (every input checked first); when the
    jobs have ended, table.csv and the figure from every result in --results-dir, as --report makes them, and
    one line per failed job. Exit 1 if a job failed."""
    from src import launch, report
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
        print(f"\n{text}\n\nwrote {table_path}\nwrote {figure_path}")
    return launch.print_failures(outcome, len(specs))


if __name__ == "__main__":
    sys.exit(main())
