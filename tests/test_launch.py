"""run.py --launcher: jobs per pair through submitit (local processes, a SLURM stand-in, debug), resume, failed
jobs named with their logs, checks before submission. Every comparison is against the in-process run."""
import os
import time

import pandas as pd
import pytest
import slurm_standin

import run
from conftest import ROOT

# four pairs (two text x two image models) on the workdir fixture's generated embeddings
PAIRS = ["--vid_model", "vis", "clipx", "--text_model", "txt", "clipx", "--base_data", "base", "--query_data",
         "query", "--b", "30", "--q", "40", "--m", "linear", "relative", "-q"]


def table(results):
    return (results / "table.csv").read_text()


def in_process(argv, where):
    assert run.main(argv + ["--results-dir", f"{where}/results", "--seedwise-dir", f"{where}/seedwise"]) == 0
    return where


def configs_of(argv):
    args = run.build_parser().parse_args(argv)
    return run.configs_from_args(args)


def job_folders(root):
    return sorted(p for p in (root / "jobs").glob("run_*") if p.is_dir())


def states(slurm, job, n):
    """The stand-in's task states once all n tasks have ended (it records them just after the job process)."""
    deadline = time.time() + 300
    while time.time() < deadline:
        found = sorted(p.read_text() for p in slurm.glob(f"{job}_*.state"))
        if len(found) == n and not {"PENDING", "RUNNING"} & set(found):
            return found
        time.sleep(0.2)
    return found


@pytest.fixture(params=["stand-in"])  # these check the stand-in's own records; the real scheduler's tests are in
def slurm(tmp_path, monkeypatch):       # test_launch_slurm.py
    for k, v in slurm_standin.install(tmp_path / "bin", tmp_path / "slurm").items():
        monkeypatch.setenv(k, v)
    return tmp_path / "slurm"


# ----------------------------------------------------------------------------------------------------------
# The bundled demo, pair by pair as local jobs
# ----------------------------------------------------------------------------------------------------------

# run.py --demo's pairs, data, anchors and queries written out as flags; two of its methods and one of its seeds
# (the whole demo takes minutes on two cores: benchmarks/bench_launch.py runs it both ways and compares)
DEMO = ["--vid_model", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "--text_model", "minilm",
        "mpnet", "--base_data", "flickr1k", "--query_data", "flickr1k", "--b", "320", "--q", "500", "--c", "0",
        "--seeds", "0", "--m", "relative", "linear_local_CKA", "-q"]


def test_demo_pairs_as_local_jobs_equal_in_process_and_resume(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # the bundled data/ as a user runs it; every output goes to tmp_path
    assert run.DEMOS["figure1"]["vid_models"] == DEMO[1:4] and run.DEMOS["figure1"]["text_models"] == DEMO[5:7]
    in_process(DEMO, tmp_path / "inproc")
    capsys.readouterr()
    out = ["--results-dir", str(tmp_path / "results"), "--seedwise-dir", str(tmp_path / "seedwise"),
           "--jobs-dir", str(tmp_path / "jobs")]
    sweep = DEMO + out + ["--launcher", "local", "--local-parallelism", "2"]
    assert run.main(sweep) == 0
    printed = capsys.readouterr().out
    assert "running 6 job(s) on this machine" in printed and "6 of 6 job(s) done: 12 configuration(s)" in printed
    assert table(tmp_path / "results") == table(tmp_path / "inproc" / "results")  # every value, every digit
    (first,) = job_folders(tmp_path)
    assert len(list(first.glob("*_submitted.pkl"))) == 6  # one job per pair

    # the same command again: nothing runs, the report is rebuilt
    assert run.main(sweep) == 0
    printed = capsys.readouterr().out
    assert "skipped 12 of 12 configurations" in printed and "nothing to run" in printed
    assert len(job_folders(tmp_path)) == 1
    assert table(tmp_path / "results") == table(tmp_path / "inproc" / "results")

    # one pair's results removed: only that pair runs
    gone = [c for c in configs_of(DEMO + out) if c.target.model == "efficientnet_lite1" and c.source.model == "mpnet"]
    assert len(gone) == 2
    for cfg in gone:
        cfg.output_paths()["results"].unlink()
    assert run.main(sweep) == 0
    printed = capsys.readouterr().out
    assert "skipped 10 of 12" in printed and "running 1 job(s)" in printed
    new = [f for f in job_folders(tmp_path) if f != first]
    assert len(new) == 1 and len(list(new[0].glob("*_submitted.pkl"))) == 1
    assert table(tmp_path / "results") == table(tmp_path / "inproc" / "results")


# ----------------------------------------------------------------------------------------------------------
# A job that fails while running
# ----------------------------------------------------------------------------------------------------------

# Started in each job's Python (not in this process, which started long before): the job of txt -> clipx raises
# once its group has computed, before it writes a CSV. A folder in the way of a CSV would be refused before
# submission (experiment.prepare checks every output path), so the failure is injected into the job itself.
FAIL_HOOK = """
import src.experiment as experiment
_write = experiment.write_outputs
def write_outputs(cfg, rows, avg):
    if cfg.source.model == "txt" and cfg.target.model == "clipx":
        raise RuntimeError("injected failure of the txt -> clipx job")
    return _write(cfg, rows, avg)
experiment.write_outputs = write_outputs
"""


def test_failed_job_is_named_with_its_log_and_the_rerun_runs_only_it(workdir, capsys, monkeypatch):
    in_process(PAIRS, workdir / "inproc")
    capsys.readouterr()
    hook = workdir / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(FAIL_HOOK)
    monkeypatch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{hook}")
    sweep = PAIRS + ["--launcher", "local", "--local-parallelism", "2"]
    assert run.main(sweep) == 1
    captured = capsys.readouterr()
    failed = [line for line in captured.err.splitlines() if line.startswith("failed: job ")]
    assert len(failed) == 1 and "txt:text -> clipx:img" in failed[0] and "injected failure" in failed[0]
    log = workdir / failed[0].rsplit("; log: ", 1)[1]
    assert log.name.endswith("_log.err") and "injected failure" in log.read_text()
    assert "1 of 4 job(s) failed" in captured.err and "3 of 4 job(s) done" in captured.out
    # the other pairs finished, and the report holds them
    assert len(pd.read_csv(workdir / "results" / "table.csv")) == 3

    monkeypatch.delenv("PYTHONPATH")
    assert run.main(sweep) == 0
    printed = capsys.readouterr().out
    assert "skipped 6 of 8 configurations" in printed and "running 1 job(s)" in printed
    assert table(workdir / "results") == table(workdir / "inproc" / "results")


# ----------------------------------------------------------------------------------------------------------
# SLURM without a cluster
# ----------------------------------------------------------------------------------------------------------

SLURM_FLAGS = ["--launcher", "slurm", "--slurm-partition", "gpu", "--slurm-time", "30", "--slurm-gpus", "1",
               "--slurm-cpus", "4", "--slurm-mem", "16G", "--slurm-account", "proj", "--slurm-array-parallelism",
               "2", "--slurm-extra", "qos=high", "--slurm-setup", "module load cuda/12.1", "echo set up"]


def test_slurm_job_array_script_and_results(workdir, slurm, capsys):
    in_process(PAIRS, workdir / "inproc")
    capsys.readouterr()
    assert run.main(PAIRS + SLURM_FLAGS) == 0
    printed = capsys.readouterr().out
    assert "submitted 4 job(s) as SLURM job array 4821" in printed
    (folder,) = job_folders(workdir)
    (script,) = folder.glob("*_submission.sh")
    text = script.read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=30", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --array=0-3%2", "#SBATCH --cpus-per-task=4", "#SBATCH --mem=16G",
                 "#SBATCH --account=proj", "#SBATCH --qos=high", "#SBATCH --job-name=vlsim-run"):
        assert line in text.splitlines(), line
    assert f"export PYTHONPATH={ROOT}" in text  # the jobs find src/ wherever the command was started
    lines = text.splitlines()  # the setup lines, in their order, before the job's Python
    assert lines.index("module load cuda/12.1") < lines.index("echo set up") < lines.index(
        next(line for line in lines if line.startswith("srun ")))
    assert [p.name for p in slurm.glob("*.sbatch")] == ["4821.sbatch"]  # one sbatch call: one job array
    assert (slurm / "4821.sbatch").read_text() == text
    assert states(slurm, 4821, 4) == ["COMPLETED"] * 4
    assert table(workdir / "results") == table(workdir / "inproc" / "results")


def test_slurm_no_wait_prints_ids_and_report_collects(workdir, slurm, capsys):
    in_process(PAIRS, workdir / "inproc")
    capsys.readouterr()
    assert run.main(PAIRS + ["--launcher", "slurm", "--no-wait", "--slurm-array-parallelism", "4"]) == 0
    printed = capsys.readouterr().out
    assert [line.split(":")[0] for line in printed.splitlines() if line.startswith("job 4821_")] == \
        [f"job 4821_{i}" for i in range(4)]
    assert "python run.py --report --results-dir results" in printed and "squeue -j 4821" in printed
    assert states(slurm, 4821, 4) == ["COMPLETED"] * 4
    assert run.main(["--report"]) == 0
    assert table(workdir / "results") == table(workdir / "inproc" / "results")


def test_slurm_without_sbatch_names_local(workdir, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(workdir / "empty"))
    assert run.main(PAIRS + ["--launcher", "slurm"]) == 2
    err = capsys.readouterr().err
    assert "sbatch is not on PATH" in err and "--launcher local" in err and "Traceback" not in err
    assert not (workdir / "jobs").exists() and not (workdir / "results").exists()


# ----------------------------------------------------------------------------------------------------------
# debug, dry run, checks before submission
# ----------------------------------------------------------------------------------------------------------

def test_debug_launcher_runs_in_this_process(workdir, capsys):
    in_process(PAIRS, workdir / "inproc")
    assert run.main(PAIRS + ["--launcher", "debug"]) == 0
    assert table(workdir / "results") == table(workdir / "inproc" / "results")


def test_dry_run_lists_jobs_and_writes_nothing(workdir, capsys):
    assert run.main(PAIRS + ["--launcher", "slurm", "--dry-run"]) == 0  # no sbatch needed to look
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and "nothing submitted" in lines[-1]
    assert lines[0].startswith("job 1/4: txt:text -> vis:img on base -> query (captions): linear relative, "
                               "seeds 0 1 2; writes results/base_query_txt_vis_linear_b30_q40_c0_")
    assert lines[0].endswith(".csv and 1 more (and each in seedwise/)")
    assert not (workdir / "jobs").exists() and not list((workdir / "results").glob("*"))


def test_missing_file_or_bad_flag_fails_before_any_job(workdir, capsys):
    argv = PAIRS[:3] + ["nosuch"] + PAIRS[3:] + ["--launcher", "local"]
    assert run.main(argv) == 1
    err = capsys.readouterr().err
    assert "base_nosuch_img.pt does not exist" in err and "get_embeds.py" in err
    assert not (workdir / "jobs").exists()
    assert run.main(PAIRS + ["--launcher", "local", "--permutations", "1"]) == 2
    assert not (workdir / "jobs").exists()


@pytest.mark.parametrize("extra,message", [
    (["--overwrite"], "--overwrite: a run without --launcher"),
    (["--jobs-dir", "x"], "--jobs-dir: for --launcher runs only"),
    (["--launcher", "local", "--slurm-time", "5"], "--slurm-time: for --launcher slurm only"),
    (["--launcher", "local", "--no-wait"], "--no-wait: for --launcher slurm only"),
    (["--launcher", "slurm", "--local-parallelism", "2"], "--local-parallelism: for --launcher local only"),
    (["--launcher", "slurm", "--slurm-extra", "array=0-3"], "submitit writes --array itself"),
    (["--launcher", "slurm", "--slurm-extra", "partition=gpu"], "use --slurm-partition"),
    (["--launcher", "slurm", "--slurm-mem", "lots"], "SLURM's --mem syntax"),
    (["--launcher", "local", "--report"], "--report reads the CSVs"),
])
def test_launch_flags_that_would_be_ignored_exit_2(workdir, capsys, extra, message):
    assert run.main(PAIRS + extra) == 2
    assert message in capsys.readouterr().err
    assert not (workdir / "jobs").exists()


def test_overwrite_reruns_finished_configurations(workdir, capsys):
    assert run.main(PAIRS + ["--launcher", "debug"]) == 0
    results = sorted((workdir / "results").glob("base_*.csv"))
    stamps = [p.stat().st_mtime_ns for p in results]
    capsys.readouterr()
    assert run.main(PAIRS + ["--launcher", "debug", "--overwrite"]) == 0
    assert "skipped" not in capsys.readouterr().out
    assert all(p.stat().st_mtime_ns != s for p, s in zip(results, stamps))


def test_a_results_file_of_another_configuration_is_not_finished(workdir, capsys):
    from src.results import finished
    assert run.main(PAIRS + ["--launcher", "debug"]) == 0
    cfg = configs_of(PAIRS)[0]
    assert finished(cfg)
    path = cfg.output_paths()["results"]
    frame = pd.read_csv(path)
    frame["config"] = "0badc0de"
    frame.to_csv(path, index=False)
    assert not finished(cfg)
    os.remove(path)
    assert not finished(cfg)


def test_a_result_without_its_seedwise_rows_is_not_finished(workdir, capsys):
    """Issue 29's sweep: the per-seed CSV deleted, or a new --seedwise-dir: the resume recomputes."""
    from src.results import finished
    assert run.main(PAIRS + ["--launcher", "debug"]) == 0
    cfg = configs_of(PAIRS)[0]
    os.remove(cfg.output_paths()["seedwise"])
    assert not finished(cfg)
    capsys.readouterr()
    assert run.main(PAIRS + ["--launcher", "debug"]) == 0
    n = len(configs_of(PAIRS))
    assert f"skipped {n - 1} of {n}" in capsys.readouterr().out and cfg.output_paths()["seedwise"].is_file()
    assert all(finished(c) for c in configs_of(PAIRS))


# ----------------------------------------------------------------------------------------------------------
# --jobs-dir and SLURM names checked before anything runs
# ----------------------------------------------------------------------------------------------------------

def test_jobs_dir_that_is_a_file_or_cannot_be_made_is_one_message(workdir, capsys, monkeypatch):
    (workdir / "afile").write_text("not a folder")
    for jobs_dir, code, needle in (("afile", 2, "--jobs-dir afile is a file, not a folder"),
                                   ("afile/sub", 1, "--jobs-dir afile/sub: cannot create it, afile is a file")):
        assert run.main(PAIRS + ["--launcher", "local", "--jobs-dir", jobs_dir]) == code
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err
    assert not (workdir / "results").exists()

    # a read-only disk (root may write anywhere else, so the answer of os.access is what a read-only mount gives)
    (workdir / "ro").mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == "ro" else real_access(p, mode))
    assert run.main(PAIRS + ["--launcher", "local", "--jobs-dir", "ro/jobs"]) == 1
    err = capsys.readouterr().err
    assert "--jobs-dir ro/jobs: cannot write in ro (read-only or permission denied)" in err and "Traceback" not in err
    monkeypatch.setattr(os, "access", real_access)

    # the folder of the command itself cannot be made when the jobs are submitted (a disk turned read-only)
    import errno
    from pathlib import Path
    real_mkdir = Path.mkdir

    def mkdir(self, *a, **k):
        if self.parent.name == "jobs":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_mkdir(self, *a, **k)
    monkeypatch.setattr(Path, "mkdir", mkdir)
    assert run.main(PAIRS + ["--launcher", "local"]) == 1
    err = capsys.readouterr().err
    assert "--jobs-dir jobs: cannot create jobs/run_" in err and "Read-only file system" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("flag", ["--slurm-partition", "--slurm-account"])
@pytest.mark.parametrize("value", ["", " ", "gpu debug"])
def test_empty_slurm_partition_or_account_is_refused(workdir, capsys, flag, value):
    assert run.main(PAIRS + ["--launcher", "slurm", "--dry-run", flag, value]) == 2
    err = capsys.readouterr().err
    assert f"{value!r}: give a name without spaces" in err and "Traceback" not in err


def test_job_states_from_scontrol_where_sacct_answers_nothing(tmp_path, monkeypatch):
    """scontrol's records of an array (one per task that started, one for the waiting rest) read as sacct's
    would be; a task it no longer lists is GONE. The real scheduler's run is in test_launch_slurm.py."""
    from src import launch
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "scontrol").write_text(
        "#!/bin/sh\n"
        "echo 'JobId=9 ArrayJobId=7 ArrayTaskId=0 JobName=x JobState=COMPLETED Reason=None'\n"
        "echo 'JobId=10 ArrayJobId=7 ArrayTaskId=1 JobName=x JobState=TIMEOUT Reason=TimeLimit'\n"
        "echo 'JobId=7 ArrayJobId=7 ArrayTaskId=2-4,6%2 JobName=x JobState=PENDING Reason=JobArrayTaskLimit'\n"
        "echo 'JobId=12 JobName=y JobState=CANCELLED Reason=None'\n")
    (fake / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    got = {k: v["State"] for k, v in launch.scontrol_states({"7"}, {"7_0", "7_1", "7_3", "7_5"}).items()}
    assert got == {"7_0": "COMPLETED", "7_1": "TIMEOUT", "7_2": "PENDING", "7_3": "PENDING", "7_4": "PENDING",
                   "7_6": "PENDING", "12": "CANCELLED", "7_5": launch.GONE}
    # the watcher: sacct fails once, one line says so, every later poll asks scontrol only
    (fake / "sacct").write_text("#!/bin/sh\necho 'Slurm accounting storage is disabled' >&2\n"
                                "echo called >> \"$(dirname \"$0\")/sacct.calls\"\nexit 1\n")
    (fake / "sacct").chmod(0o755)
    import logging
    watcher = launch._slurm_watcher()
    watcher.register_job("7_1")
    watcher.register_job("7_3")
    with _caught(logging.WARNING) as records:
        for _ in range(3):
            watcher.update()
    assert [r.getMessage() for r in records] == [
        "sacct answers nothing here (Slurm accounting storage is disabled): job states come from scontrol instead"]
    assert (fake / "sacct.calls").read_text().count("called") == 1
    assert watcher.get_state("7_1", mode="cache") == "TIMEOUT" and watcher.is_done("7_1", mode="cache")
    assert watcher.get_state("7_3", mode="cache") == "PENDING" and not watcher.is_done("7_3", mode="cache")


class _caught:
    """The records src.launch logs at ``level`` or above (its logger may not propagate to caplog)."""
    def __init__(self, level):
        import logging
        self.handler = logging.Handler(level)
        self.records = []
        self.handler.emit = self.records.append

    def __enter__(self):
        import logging
        logging.getLogger("src.launch").addHandler(self.handler)
        return self.records

    def __exit__(self, *exc):
        import logging
        logging.getLogger("src.launch").removeHandler(self.handler)
