"""Sweeps as jobs: the groups of a run.py command, or the models of a get_embeds.py command, as submitit jobs.

A job is a ``JobSpec``: what it runs and where it writes (one line each, for --dry-run and failures) and a
module-level function with its arguments, pickled by submitit (nothing re-parses argv inside a job). The
functions are the ones the in-process path calls: ``run_group_job`` runs a group of configurations through
``experiment.prepare`` and ``experiment.run_and_write``; ``embed_job`` runs ``embed.extract_model``. A job
runs in the submitting command's working folder and writes the same files as the in-process run.

- ``--launcher slurm``: one SLURM job array per command (submitit's SlurmExecutor; the sbatch script, the
  pickles and each job's logs under ``--jobs-dir``); ``local``: processes on this machine (LocalExecutor),
  ``--local-parallelism`` at a time; ``debug``: each job in this process when it is collected (DebugExecutor;
  a failing job opens pdb).
- The submitting process waits (unless ``--no-wait``), then the script prints one line per failed job with
  its log and rebuilds its report; a job that failed leaves nothing that looks finished, so the same command
  again runs only what is missing.
"""
import logging
import os
import re
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Optional

from .cli import library_verbosity, non_negative_int, positive_int, setup_logging
from .errors import UsageError

_logger = logging.getLogger(__name__)

LAUNCHERS = ("slurm", "local", "debug")
ROOT = Path(__file__).resolve().parents[1]   # on the jobs' PYTHONPATH: they unpickle src.* functions
LOCAL_TIMEOUT_MIN = 7 * 24 * 60               # LocalExecutor kills a job after 2 minutes unless told otherwise
POLL_S = {"slurm": 2.0, "local": 0.2, "debug": 0.0}
# sbatch options submitit writes itself (an --slurm-extra value would break its bookkeeping), and those that
# have a flag of their own
SUBMITIT_SETS = ("array", "output", "error", "open-mode", "signal")
SLURM_FLAGS = {"partition": "--slurm-partition", "time": "--slurm-time", "gpus-per-node": "--slurm-gpus",
               "cpus-per-task": "--slurm-cpus", "mem": "--slurm-mem", "account": "--slurm-account"}
# every launch flag by its dest, for the "applies to" checks
FLAGS = {"jobs_dir": "--jobs-dir", "slurm_partition": "--slurm-partition", "slurm_time": "--slurm-time",
         "slurm_gpus": "--slurm-gpus", "slurm_cpus": "--slurm-cpus", "slurm_mem": "--slurm-mem",
         "slurm_account": "--slurm-account", "slurm_array_parallelism": "--slurm-array-parallelism",
         "slurm_extra": "--slurm-extra", "local_parallelism": "--local-parallelism", "no_wait": "--no-wait",
         "dry_run": "--dry-run"}
SLURM_ONLY = [k for k in FLAGS if k.startswith("slurm_")] + ["no_wait"]


# ----------------------------------------------------------------------------------------------------------
# Flags
# ----------------------------------------------------------------------------------------------------------

def _slurm_mem(text):
    import argparse
    if not re.fullmatch(r"\d+[KMGT]?", text):
        raise argparse.ArgumentTypeError(f"{text!r}: give SLURM's --mem syntax, a whole number with K, M, G or T "
                                         f"(e.g. 32G)")
    return text


def _key_value(text):
    import argparse
    key, eq, value = text.partition("=")
    if not eq or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", key) or not value:
        raise argparse.ArgumentTypeError(f"{text!r}: write an sbatch option as KEY=VALUE, e.g. qos=high")
    return key.replace("_", "-"), value


def add_launch_args(parser):
    g = parser.add_argument_group(
        "sweeps", "run the work as submitit jobs, resumable, one per group / model (docs/sweeps.md); "
                  "without --launcher everything runs in this process, as always")
    g.add_argument("--launcher", choices=LAUNCHERS, default=None,
                   help="slurm: one SLURM job array; local: processes on this machine; debug: each job in this "
                        "process (a failing job opens pdb)")
    g.add_argument("--jobs-dir", default="jobs", metavar="DIR",
                   help="submitit's scripts, pickles and logs (a folder per command)")
    g.add_argument("--slurm-partition", default=None, metavar="NAME", help="SLURM partition")
    g.add_argument("--slurm-time", type=positive_int, default=60, metavar="MIN", help="minutes a job may run")
    g.add_argument("--slurm-gpus", type=non_negative_int, default=None, metavar="N", help="GPUs per job")
    g.add_argument("--slurm-cpus", type=positive_int, default=None, metavar="N", help="CPUs per job")
    g.add_argument("--slurm-mem", type=_slurm_mem, default=None, metavar="MEM",
                   help="memory per job, as sbatch --mem (32G)")
    g.add_argument("--slurm-account", default=None, metavar="NAME", help="SLURM account to charge")
    g.add_argument("--slurm-array-parallelism", type=positive_int, default=None, metavar="P",
                   help="jobs of the array running at once (sbatch --array=0-N%%P)")
    g.add_argument("--slurm-extra", type=_key_value, nargs="+", default=[], metavar="KEY=VALUE",
                   help="other sbatch options, passed through (qos=high constraint=a100)")
    g.add_argument("--local-parallelism", type=positive_int, default=1, metavar="N",
                   help="--launcher local: jobs running at once (submitit's LocalExecutor would start all)")
    g.add_argument("--no-wait", action="store_true",
                   help="--launcher slurm: print the job ids and how to collect, and return")
    g.add_argument("--dry-run", action="store_true",
                   help="print the jobs (what each runs, where it writes), submit nothing")


@dataclass(frozen=True)
class LaunchOptions:
    launcher: str
    jobs_dir: str = "jobs"
    partition: Optional[str] = None
    time_min: int = 60
    gpus: Optional[int] = None
    cpus: Optional[int] = None
    mem: Optional[str] = None
    account: Optional[str] = None
    array_parallelism: Optional[int] = None
    extra: tuple = ()                 # (sbatch option, value), ...
    local_parallelism: int = 1
    wait: bool = True
    dry_run: bool = False
    quiet: bool = False

    def slurm_parameters(self, name):
        """SlurmExecutor.update_parameters' arguments (None values are left out of the sbatch script)."""
        params = dict(job_name=name, time=self.time_min, partition=self.partition, gpus_per_node=self.gpus,
                      cpus_per_task=self.cpus, mem=self.mem, account=self.account,
                      array_parallelism=self.array_parallelism, additional_parameters=dict(self.extra) or None)
        return {k: v for k, v in params.items() if v is not None}


def launch_options(args, parser):
    """LaunchOptions from the flags, or None without --launcher; a launch flag that would be ignored is a
    UsageError (as run.py refuses every flag it would ignore)."""
    given = [k for k in FLAGS if getattr(args, k) != parser.get_default(k)]
    if args.launcher is None:
        if given:
            raise UsageError(f"{', '.join(FLAGS[k] for k in given)}: for --launcher runs only; add --launcher "
                             f"slurm|local|debug, or drop {'it' if len(given) == 1 else 'them'}")
        return None
    stray = [FLAGS[k] for k in given if (k in SLURM_ONLY and args.launcher != "slurm")
             or (k == "local_parallelism" and args.launcher != "local")]
    if stray:
        only = "--launcher slurm" if stray[0] != "--local-parallelism" else "--launcher local"
        why = (" (local jobs are started by this command as slots free up, so it waits for them)"
               if "--no-wait" in stray and args.launcher == "local" else "")
        raise UsageError(f"{', '.join(stray)}: for {only} only; drop with --launcher {args.launcher}{why}")
    extra = dict(args.slurm_extra)
    for key in extra:
        if key in SUBMITIT_SETS:
            raise UsageError(f"--slurm-extra {key}=...: submitit writes --{key} itself; leave it out")
        if key in SLURM_FLAGS or key == "gpus":
            raise UsageError(f"--slurm-extra {key}=...: use {SLURM_FLAGS.get(key, '--slurm-gpus')}")
    if args.launcher == "slurm" and not args.dry_run:  # a dry run only looks: it needs no SLURM
        check_slurm()
    return LaunchOptions(
        launcher=args.launcher, jobs_dir=args.jobs_dir, partition=args.slurm_partition, time_min=args.slurm_time,
        gpus=args.slurm_gpus, cpus=args.slurm_cpus, mem=args.slurm_mem, account=args.slurm_account,
        array_parallelism=args.slurm_array_parallelism, extra=tuple(sorted(extra.items())),
        local_parallelism=args.local_parallelism, wait=not args.no_wait, dry_run=args.dry_run,
        quiet=getattr(args, "quiet", False))


# ----------------------------------------------------------------------------------------------------------
# Jobs
# ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class JobSpec:
    what: str                   # what the job runs, one line
    writes: str                 # where it writes, one line
    fn: Callable                # a module-level function of src/ (pickled by reference)
    args: tuple = ()


@dataclass(frozen=True)
class Failure:
    spec: JobSpec
    job_id: str
    error: str                  # the last line of the job's error
    log: Path                   # the job's stderr


@dataclass
class Outcome:
    results: list = field(default_factory=list)    # (spec, what its function returned) of each job that ended
    failures: list = field(default_factory=list)   # Failure, one per job that failed
    waited: bool = True                            # False: --dry-run or --no-wait, nothing collected


def _job(cwd, quiet, submitter_pid, fn, args):
    """What every job executes. A job in a process of its own (local, slurm) works in the submitting
    command's folder (the configurations hold relative paths) with the script's logging; a debug job runs
    in the submitting process, whose logging is set."""
    if os.getpid() != submitter_pid:
        os.chdir(cwd)
        setup_logging(quiet)
    with library_verbosity(quiet):
        return fn(*args)


def run_group_job(configs, device="auto", gpu=None, progress=True):
    """One job of run.py: a group of configurations (one pair x data x task, its methods and seeds), run as
    the in-process path runs them. Returns the averaged CSVs written."""
    from .cli import resolve_device
    from .experiment import prepare, run_and_write
    return [str(paths["results"]) for _, _, paths in run_and_write(prepare(configs), resolve_device(device, gpu),
                                                                     progress)]


def embed_job(opts, model):
    """One job of get_embeds.py: one model over one dataset, as the in-process path runs it. Returns the
    lines it would print."""
    from .cli import resolve_device
    from .embed import extract_model
    return extract_model(opts, model, resolve_device(opts.device, opts.gpu))


def run_specs(configs, device="auto", gpu=None, overwrite=False, progress=True):
    """run.py's jobs: one per group of configurations that share loaded sides (``Config.group_key()``), made
    of its configurations without results (``experiment.finished``; all of them with overwrite).

    Before any job exists, every configuration is checked (``Config.check``) and every group that will run is
    prepared as its job will prepare it (files present, rows, dimensions, cluster files), one group at a time
    so that the submitting process never holds more than one group's embeddings.
    Returns (specs, the configurations skipped because their results exist)."""
    from .experiment import finished, group_configs, prepare
    for cfg in configs:
        cfg.check()
    done = set() if overwrite else {cfg for cfg in configs if finished(cfg)}
    groups = group_configs([cfg for cfg in configs if cfg not in done])
    for group in groups:
        prepare(group)
    specs = [JobSpec(_group_what(g), _group_writes(g), run_group_job, (g, device, gpu, progress)) for g in groups]
    return specs, [cfg for cfg in configs if cfg in done]


def _group_what(group):
    c = group[0]
    data = c.base_data if c.base_data == c.query_data else f"{c.base_data} -> {c.query_data}"
    return (f"{c.source.text} -> {c.target.text} on {data} ({c.task}): "
            f"{' '.join(cfg.method_label() for cfg in group)}, seeds {' '.join(map(str, c.seeds))}")


def _group_writes(group):
    paths = group[0].output_paths()
    more = f" and {len(group) - 1} more" if len(group) > 1 else ""
    return f"{paths['results']}{more} (and each in {paths['seedwise'].parent}/)"


# ----------------------------------------------------------------------------------------------------------
# Submitting and collecting
# ----------------------------------------------------------------------------------------------------------

def _executor(opts: LaunchOptions, folder, name):
    import submitit
    # the jobs import src/ however the command was started (python run.py from another folder included)
    setup = [f"export PYTHONPATH={shlex.quote(str(ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}"]
    if opts.launcher == "debug":
        return submitit.DebugExecutor(folder)
    if opts.launcher == "local":
        executor = submitit.LocalExecutor(folder)
        # LocalExecutor hides every GPU (CUDA_VISIBLE_DEVICES="") unless given gpus_per_node: give the jobs
        # the devices this command sees
        cuda = os.environ.get("CUDA_VISIBLE_DEVICES")
        setup.append("unset CUDA_VISIBLE_DEVICES" if cuda is None
                     else f"export CUDA_VISIBLE_DEVICES={shlex.quote(cuda)}")
        executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN, setup=setup)
        return executor
    check_slurm()
    executor = submitit.SlurmExecutor(folder)
    executor.update_parameters(setup=setup, **opts.slurm_parameters(name))
    return executor


def check_slurm():
    """--launcher slurm needs SLURM's commands (submitit runs sbatch, then its jobs run srun)."""
    for command in ("sbatch", "srun"):
        if shutil.which(command) is None:
            raise UsageError(f"--launcher slurm: {command} is not on PATH (no SLURM here). Run the same command "
                             f"with --launcher local to run its jobs on this machine, or on a SLURM login node")


def _short(path):
    """A path relative to the working folder when it is inside it (shorter lines, as the user typed them)."""
    try:
        return Path(os.path.relpath(path)) if not os.path.relpath(path).startswith("..") else Path(path)
    except ValueError:
        return Path(path)


def launch(specs, opts: LaunchOptions, name, collect):
    """Submit ``specs`` as jobs and wait for them (--dry-run: print them; --no-wait: print the ids and
    ``collect``, how to gather the results later). Returns an Outcome."""
    n = len(specs)
    if opts.dry_run:
        for i, spec in enumerate(specs, 1):
            print(f"job {i}/{n}: {spec.what}; writes {spec.writes}")
        print(f"dry run: {n} job(s) with --launcher {opts.launcher}; nothing submitted")
        return Outcome(waited=False)
    # a folder per command, its jobs' files side by side (submitit names them by job id); it exists before
    # any job starts, so SLURM can open the logs in it
    folder = Path(opts.jobs_dir) / f"{name}_{datetime.now():%Y%m%d-%H%M%S}_{os.getpid()}"
    executor = _executor(opts, folder, f"vlsim-{name}")

    def args(spec):
        return os.getcwd(), opts.quiet, os.getpid(), spec.fn, spec.args

    if opts.launcher == "local":
        print(f"running {n} job(s) on this machine, {opts.local_parallelism} at a time (logs: {_short(folder)}/)",
              flush=True)
        return _run_local(executor, specs, opts, args)
    with executor.batch():  # one job array on SLURM
        jobs = [executor.submit(_job, *args(spec)) for spec in specs]
    if opts.launcher == "slurm":
        array = jobs[0].job_id.split("_")[0]
        print(f"submitted {n} job(s) as SLURM job {'array ' if n > 1 else ''}{array} (scripts and logs: "
              f"{_short(folder)}/)", flush=True)
        if not opts.wait:
            for job, spec in zip(jobs, specs):
                print(f"job {job.job_id}: {spec.what}")
            print(f"not waiting (--no-wait): `squeue -j {array}` lists them; once they have ended, {collect}")
            return Outcome(waited=False)
    outcome = Outcome()
    pending = dict(enumerate(jobs))
    try:
        while pending:
            for i, job in list(pending.items()):
                # debug jobs run here, in order; submitit's result file or sacct says when the others end
                if opts.launcher == "debug" or job.done():
                    del pending[i]
                    _collect(job, specs[i], opts.launcher, outcome, n)
            if pending:
                time.sleep(POLL_S[opts.launcher])
    except KeyboardInterrupt:
        if opts.launcher == "slurm":
            print(f"stopped waiting; the jobs go on (`scancel {jobs[0].job_id.split('_')[0]}` stops them); "
                  f"{collect}", file=sys.stderr)
        raise
    return outcome


def _run_local(executor, specs, opts, args):
    """LocalExecutor starts a job's process when it is submitted: submit as slots free up."""
    outcome, queue, running = Outcome(), list(enumerate(specs)), {}
    try:
        while queue or running:
            while queue and len(running) < opts.local_parallelism:
                i, spec = queue.pop(0)
                running[i] = executor.submit(_job, *args(spec))
                _logger.info("job %s started: %s", running[i].job_id, spec.what)
            for i, job in list(running.items()):
                if job.done():
                    del running[i]
                    _collect(job, specs[i], "local", outcome, len(specs))
            if running:
                time.sleep(POLL_S["local"])
    except KeyboardInterrupt:
        for job in running.values():  # local jobs would outlive this command otherwise
            job.cancel()
        raise
    return outcome


def _collect(job, spec, launcher, outcome, n):
    """A job that has ended: its result, or its Failure."""
    failure = None
    if launcher == "debug":  # DebugJob raises the job's own exception (after pdb)
        try:
            outcome.results.append((spec, job.result()))
        except Exception as e:  # whatever the job raised is its failure
            failure = Failure(spec, job.job_id, f"{type(e).__name__}: {e}", job.paths.stderr)
    else:
        error = job.exception()
        if error is None:
            outcome.results.append((spec, job.result()))
        else:
            failure = Failure(spec, job.job_id, _error_line(error, job, launcher), job.paths.stderr)
    if failure is not None:
        outcome.failures.append(failure)
    _logger.info("job %s %s (%d/%d ended): %s", job.job_id, "failed" if failure else "done",
                 len(outcome.results) + len(outcome.failures), n, spec.what)


def _error_line(error, job, launcher):
    """The last line of a failed job's traceback (``DataError: ...``), or how it ended without a result."""
    from submitit.core.utils import FailedJobError
    if isinstance(error, FailedJobError):
        # submitit frames the job's traceback between two lines of dashes
        parts = re.split(r"\n-{10,}\n", str(error))
        trace = parts[1] if len(parts) >= 3 else str(error)
        lines = [line for line in trace.splitlines() if line.strip()]
        last = lines[-1].strip() if lines else str(error).strip()
        return re.sub(r"^(?:\w+\.)+(?=\w+:)", "", last)  # src.errors.DataError: ... -> DataError: ...
    if launcher == "slurm":  # sacct's word: TIMEOUT, OUT_OF_MEMORY, CANCELLED, NODE_FAIL, ...
        return f"ended without a result, SLURM state {job.state} (see its log)"
    return "its process ended without a result (killed, or out of memory?)"


def print_failures(outcome, n):
    """One line per failed job on stderr: what it ran, its error, its log. Returns the exit code (1 if any)."""
    for f in outcome.failures:
        print(f"failed: job {f.job_id} ({f.spec.what}): {f.error}; log: {_short(f.log)}", file=sys.stderr)
    if outcome.failures:
        print(f"{len(outcome.failures)} of {n} job(s) failed; the other jobs' files are written. Run the same "
              f"command again to run only what is missing.", file=sys.stderr)
        return 1
    return 0
