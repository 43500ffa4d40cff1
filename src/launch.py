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
- On SLURM, each command writes ``jobs.json`` (its job ids and the files each job writes) into its folder; a
  later command finds the jobs of the same work still waiting or running (``squeue``) and submits nothing for
  them. Job states come from ``sacct``, or from ``scontrol`` where sacct answers nothing (no accounting).
- The submitting process waits (unless ``--no-wait``), then the script prints one line per failed job with
  its log and rebuilds its report; a job that failed leaves nothing that looks finished, so the same command
  again runs only what is missing.
"""
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Optional

from .cli import library_verbosity, non_negative_int, positive_int, setup_logging
from .errors import DataError, UsageError

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
         "slurm_extra": "--slurm-extra", "slurm_setup": "--slurm-setup", "local_parallelism": "--local-parallelism",
         "no_wait": "--no-wait",
         "dry_run": "--dry-run"}
GONE = "GONE"   # the state of a job scontrol no longer lists (ended MinJobAge ago) on a cluster without sacct
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


def _slurm_name(text):
    """A partition or account name: sbatch would take an empty one and fail later, or not at all."""
    import argparse
    if not text.strip() or re.search(r"\s", text):
        raise argparse.ArgumentTypeError(f"{text!r}: give a name without spaces (`sinfo -s` lists the partitions, "
                                         f"`sacctmgr show assoc user=$USER` the accounts); leave the flag out for "
                                         f"the cluster's default")
    return text


def add_launch_args(parser):
    g = parser.add_argument_group(
        "sweeps", "run the work as submitit jobs, resumable, one per group / model (docs/sweeps.md); "
                  "without --launcher everything runs in this process, as always")
    g.add_argument("--launcher", choices=LAUNCHERS, default=None,
                   help="slurm: one SLURM job array; local: processes on this machine; debug: each job in this "
                        "process (a failing job opens pdb)")
    g.add_argument("--jobs-dir", default="jobs", metavar="DIR",
                   help="submitit's scripts, pickles and logs (a folder per command)")
    g.add_argument("--slurm-partition", type=_slurm_name, default=None, metavar="NAME", help="SLURM partition")
    g.add_argument("--slurm-time", type=positive_int, default=60, metavar="MIN", help="minutes a job may run")
    g.add_argument("--slurm-gpus", type=non_negative_int, default=None, metavar="N", help="GPUs per job")
    g.add_argument("--slurm-cpus", type=positive_int, default=None, metavar="N", help="CPUs per job")
    g.add_argument("--slurm-mem", type=_slurm_mem, default=None, metavar="MEM",
                   help="memory per job, as sbatch --mem (32G)")
    g.add_argument("--slurm-account", type=_slurm_name, default=None, metavar="NAME",
                   help="SLURM account to charge")
    g.add_argument("--slurm-array-parallelism", type=positive_int, default=None, metavar="P",
                   help="jobs of the array running at once (sbatch --array=0-N%%P)")
    g.add_argument("--slurm-extra", type=_key_value, nargs="+", default=[], metavar="KEY=VALUE",
                   help="other sbatch options, passed through (qos=high constraint=a100)")
    g.add_argument("--slurm-setup", nargs="+", default=[], metavar="LINE",
                   help="shell lines each job runs before Python ('module load cuda/12.1'); the environment of "
                        "this command is passed on as it is")
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
    setup: tuple = ()                 # shell lines before each SLURM job's Python
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
    if not args.dry_run:
        check_jobs_dir(args.jobs_dir)
    return LaunchOptions(
        launcher=args.launcher, jobs_dir=args.jobs_dir, partition=args.slurm_partition, time_min=args.slurm_time,
        gpus=args.slurm_gpus, cpus=args.slurm_cpus, mem=args.slurm_mem, account=args.slurm_account,
        array_parallelism=args.slurm_array_parallelism, extra=tuple(sorted(extra.items())),
        setup=tuple(args.slurm_setup),
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
    outputs: tuple = ()         # the files it writes (absolute), to find a queued job of the same work;
                                # empty: ``writes`` stands for them

    def keys(self):
        return set(self.outputs) or {self.writes}


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
    queued: list = field(default_factory=list)     # (spec, job id, state): not submitted, queued already


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
    from .experiment import group_configs, prepare
    from .results import finished
    for cfg in configs:
        cfg.check()
    done = set() if overwrite else {cfg for cfg in configs if finished(cfg)}
    groups = group_configs([cfg for cfg in configs if cfg not in done])
    for group in groups:
        prepare(group)
    specs = [JobSpec(_group_what(g), _group_writes(g), run_group_job, (g, device, gpu, progress),
                     tuple(os.path.abspath(c.output_paths()["results"]) for c in g)) for g in groups]
    return specs, [cfg for cfg in configs if cfg in done]


def _group_what(group):
    c = group[0]
    data = c.base_data if c.base_data == c.query_data else f"{c.base_data} -> {c.query_data}"
    if c.source is None:  # a one-sided task (the probe): one side, no method
        return f"{c.target.text} on {c.base_data} ({c.task}), seeds {' '.join(map(str, c.seeds))}"
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
    executor.update_parameters(setup=list(opts.setup) + setup, **opts.slurm_parameters(name))
    return executor


def check_jobs_dir(path):
    """--jobs-dir must be a folder this command can create or write in, found out before anything is checked
    further (as --results-dir); it is created only when jobs are submitted."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--jobs-dir {path} is a file, not a folder: remove it or pass another --jobs-dir")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise DataError(f"--jobs-dir {path}: cannot create it, {existing} is a file; pass another --jobs-dir")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DataError(f"--jobs-dir {path}: cannot write in {existing} (read-only or permission denied); pass "
                        f"another --jobs-dir")


def _make_jobs_folder(folder, jobs_dir):
    """A new folder for this command's jobs (``folder``, or ``folder-2``, ... when a command of the same second
    and process made it already). Returns it."""
    for k in range(1, 1000):
        path = folder if k == 1 else folder.with_name(f"{folder.name}-{k}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
        except OSError as e:  # a read-only disk, a file in the way
            raise DataError(f"--jobs-dir {jobs_dir}: cannot create {path} ({e.strerror}); pass another --jobs-dir")
    raise DataError(f"--jobs-dir {jobs_dir}: {folder} and 998 more exist; clean --jobs-dir up")


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
    queued = []
    if opts.launcher == "slurm":  # an earlier command's jobs of the same work, still waiting or running
        specs, queued = _not_queued(specs, opts.jobs_dir)
        if not specs:
            return Outcome(waited=False, queued=queued)
        n = len(specs)
    # a folder per command, its jobs' files side by side (submitit names them by job id); it exists before
    # any job starts, so SLURM can open the logs in it
    folder = Path(opts.jobs_dir) / f"{name}_{datetime.now():%Y%m%d-%H%M%S}_{os.getpid()}"
    folder = _make_jobs_folder(folder, opts.jobs_dir)
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
        _write_manifest(folder, jobs, specs)
        watcher = _slurm_watcher()
        for job in jobs:  # job states from sacct, or from scontrol where sacct answers nothing
            job.watcher = watcher
            watcher.register_job(job.job_id)
        array = jobs[0].job_id.split("_")[0]
        print(f"submitted {n} job(s) as SLURM job {'array ' if n > 1 else ''}{array} (scripts and logs: "
              f"{_short(folder)}/)", flush=True)
        if not opts.wait:
            for job, spec in zip(jobs, specs):
                print(f"job {job.job_id}: {spec.what}")
            print(f"not waiting (--no-wait): `squeue -j {array}` lists them; once they have ended, {collect}")
            return Outcome(waited=False, queued=queued)
    outcome = Outcome(queued=queued)
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
        # submitit's own handler of SLURM's warning signal (sent 90 s before the time limit, or on preemption)
        # ends a job that cannot checkpoint with "Job not requeued because: timed-out and not checkpointable."
        for state, word in (("TIMEOUT", "timed-out"), ("PREEMPTED", "preempted")):
            if "Job not requeued because" in last and word in last:
                return f"ended without a result, SLURM state {state} ({STATE_WORDS[state]})"
        return re.sub(r"^(?:\w+\.)+(?=\w+:)", "", last)  # src.errors.DataError: ... -> DataError: ...
    if launcher == "slurm":  # sacct's or scontrol's word: TIMEOUT, OUT_OF_MEMORY, CANCELLED, NODE_FAIL, ...
        state = job.state
        why = STATE_WORDS.get(state.split()[0], "see its log")
        return f"ended without a result, SLURM state {state} ({why})"
    return "its process ended without a result (killed, or out of memory?)"


STATE_WORDS = {
    "TIMEOUT": "it reached its time limit, SLURM warns 90 s before it: give it more with --slurm-time MIN",
    "CANCELLED": "cancelled by scancel or an administrator",
    "OUT_OF_MEMORY": "it ran out of memory: give it more with --slurm-mem",
    "NODE_FAIL": "its node failed: run the same command again",
    "PREEMPTED": "preempted by a job of higher priority: run the same command again",
    GONE: "no accounting here, and scontrol no longer lists it: see its log",
}


def print_failures(outcome, n):
    """One line per failed job on stderr: what it ran, its error, its log. Returns the exit code (1 if any)."""
    for f in outcome.failures:
        print(f"failed: job {f.job_id} ({f.spec.what}): {f.error}; log: {_short(f.log)}", file=sys.stderr)
    if outcome.failures:
        print(f"{len(outcome.failures)} of {n} job(s) failed; the other jobs' files are written. Run the same "
              f"command again to run only what is missing.", file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------------------------------------------------
# SLURM: job states, jobs already queued
# ----------------------------------------------------------------------------------------------------------

MANIFEST = "jobs.json"   # in each command's folder: its SLURM job ids and the files each job writes
SACCT_POLL_S = 20        # at most this long between two state queries (submitit waits up to 10 minutes)


def _slurm_watcher():
    """A watcher of job states for this command's SLURM jobs: submitit's (sacct), and where sacct answers
    nothing (a cluster without accounting, common on small sites) states from ``scontrol show job``, with one
    line saying so instead of submitit's warning on every poll."""
    from submitit.slurm.slurm import SlurmInfoWatcher

    class Watcher(SlurmInfoWatcher):
        sacct_error = None   # the reason sacct answers nothing, once it did not

        def update(self):
            command = self._make_command()
            if command is None:
                return
            self._num_calls += 1
            if self.sacct_error is None:
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode == 0:
                    self._info_dict.update(self.read_info(done.stdout))
                else:
                    said = [line for line in done.stderr.splitlines() if line.strip()]
                    self.sacct_error = said[-1].strip() if said else f"exit status {done.returncode}"
                    _logger.warning("sacct answers nothing here (%s): job states come from scontrol instead",
                                    self.sacct_error)
            if self.sacct_error is not None:
                arrays = {x.split("_")[0] for x in self._registered - self._finished}
                self._info_dict.update(scontrol_states(arrays, self._registered - self._finished))
            self._last_status_check = time.time()
            for job_id in self._registered - self._finished:
                if self.is_done(job_id, mode="cache"):
                    self._finished.add(job_id)

    return Watcher(delay_s=SACCT_POLL_S)


def scontrol_states(arrays, wanted=()):
    """{job id: {"JobID", "State"}} of the tasks of the given job arrays (or single jobs), from ``scontrol show
    job -o``; a job of ``wanted`` that scontrol no longer lists gets the state GONE."""
    states = {}
    for array in sorted(arrays):
        done = subprocess.run(["scontrol", "show", "job", "-o", str(array)], capture_output=True, text=True)
        for line in done.stdout.splitlines() if done.returncode == 0 else []:
            fields = dict(re.findall(r"(\w+)=(\S*)", line))
            state = fields.get("JobState", "UNKNOWN")
            if fields.get("ArrayJobId"):
                for task in _task_ids(fields.get("ArrayTaskId", "")):
                    states[f"{fields['ArrayJobId']}_{task}"] = {"JobID": f"{fields['ArrayJobId']}_{task}",
                                                                "State": state}
            elif "JobId" in fields:
                states[fields["JobId"]] = {"JobID": fields["JobId"], "State": state}
    for job_id in wanted:
        if job_id.split("_")[0] in {str(a) for a in arrays} and job_id not in states:
            states[job_id] = {"JobID": job_id, "State": GONE}
    return states


def _task_ids(text):
    """scontrol's ArrayTaskId: 3, 0-7, 0-7%2, 1,3-5 -> the task numbers."""
    out = []
    for part in text.split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit():
            out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def _write_manifest(folder, jobs, specs):
    import json
    entries = [{"job_id": job.job_id, "what": spec.what, "outputs": sorted(spec.keys())}
               for job, spec in zip(jobs, specs)]
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps({"jobs": entries}, indent=1))
    os.replace(tmp, folder / MANIFEST)


def queued_jobs():
    """{job id: state} of this user's SLURM jobs that are waiting or running (``squeue -r``: one line per
    array task), or None when squeue cannot say."""
    import getpass
    try:
        done = subprocess.run(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return dict(line.strip().split("|", 1) for line in done.stdout.splitlines() if "|" in line)


def _not_queued(specs, jobs_dir):
    """The specs whose work no earlier command's job, still waiting or running, is doing (found from the
    jobs.json of each folder of --jobs-dir and squeue); the others are said and not submitted again (both
    would write the same files). Returns (specs to submit, [(spec, job id, state)])."""
    import json
    earlier = {}   # job id -> (its output keys, the folder)
    for manifest in sorted(Path(jobs_dir).glob(f"*/{MANIFEST}")):
        try:
            for entry in json.loads(manifest.read_text())["jobs"]:
                earlier[entry["job_id"]] = (set(entry["outputs"]), manifest.parent)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a folder of another version, or a half-written one: it cannot say what it runs
    if not earlier:
        return specs, []
    live = queued_jobs()
    if live is None:
        print("could not ask squeue whether jobs of earlier commands are still queued; submitting all",
              file=sys.stderr)
        return specs, []
    keep, queued = [], []
    for spec in specs:
        found = [(job_id, live[job_id], folder) for job_id, (keys, folder) in earlier.items()
                 if job_id in live and keys & spec.keys()]
        if found:
            job_id, state, folder = found[0]
            queued.append((spec, job_id, state))
            print(f"not submitted: {spec.what}: SLURM job {job_id} ({state}, logs: {_short(folder)}/) does this "
                  f"already; once it has ended, the same command again runs what is still missing")
        else:
            keep.append(spec)
    return keep, queued
