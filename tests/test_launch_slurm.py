"""--launcher slurm on a scheduler: the real one (a single-node SLURM started by tests/slurm/start.sh, when
VLSIM_SLURM=real says it is up, as .ci/run does) or else the stand-in of tests/slurm_standin.py. Each test's id
names the one it ran on ([real-slurm] or [stand-in]); what the stand-in cannot do (time limits) is skipped with
that reason.

Job arrays of run.py's groups and of get_embeds.py's models, a failing job and its rerun, --no-wait and the
call that collects, a second launch while the first one's jobs wait, a cancelled job, a time limit, resume.
Failing and sleeping jobs are injected through a sitecustomize module on the jobs' PYTHONPATH."""
import os
import re
import subprocess
import threading
import time

import pandas as pd
import pytest
import slurm_standin

import get_embeds
import run
import tiny_models as tm
from conftest import ROOT

REAL = os.environ.get("VLSIM_SLURM") == "real"
KIND = "real-slurm" if REAL else "stand-in"

# two pairs (one text x two image models) on the workdir fixture's embeddings: a 2-task array
PAIRS = ["--vid_model", "vis", "clipx", "--text_model", "txt", "--base_data", "base", "--query_data", "query",
         "--b", "30", "--q", "40", "--m", "linear", "relative", "--seeds", "0", "-q"]
ONE = ["--vid_model", "vis", "--text_model", "txt", "--base_data", "base", "--query_data", "query", "--b", "30",
       "--q", "40", "--m", "linear", "--seeds", "0", "-q"]

FAIL_HOOK = """
import src.experiment as experiment
_write = experiment.write_outputs
def write_outputs(cfg, rows, avg):
    if cfg.target.model == "clipx":
        raise RuntimeError("injected failure of the txt -> clipx job")
    return _write(cfg, rows, avg)
experiment.write_outputs = write_outputs
"""
# the job sleeps before it writes anything (a cancelled or timed-out job leaves no result behind)
SLEEP_HOOK = """
import time
import src.experiment as experiment
def write_outputs(cfg, rows, avg):
    time.sleep(600)
experiment.write_outputs = write_outputs
"""


class Scheduler:
    def __init__(self, kind, state=None):
        self.kind, self.state = kind, state

    def flags(self):
        return ["--launcher", "slurm"] + (["--slurm-partition", "debug"] if self.kind == "real-slurm" else [])

    def live(self, array):
        """{job id: state} of the array's tasks still waiting or running."""
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T"], capture_output=True, text=True, check=True)
        lines = [line.split("|") for line in out.stdout.splitlines() if "|" in line]
        return {i: s for i, s in lines if i.split("_")[0] == str(array)}

    def wait_ended(self, array, limit=300):
        deadline = time.time() + limit
        while self.live(array) and time.time() < deadline:
            time.sleep(0.5)
        assert not self.live(array), f"job {array} still queued after {limit} s"


@pytest.fixture(params=[KIND])
def scheduler(request, tmp_path, monkeypatch):
    if request.param == "real-slurm":
        up = subprocess.run(["sinfo", "-h", "-o", "%P %a %t"], capture_output=True, text=True)
        assert up.returncode == 0 and "debug" in up.stdout, \
            f"VLSIM_SLURM=real but no debug partition answers (sinfo: {up.stdout}{up.stderr}): tests/slurm/start.sh"
        return Scheduler("real-slurm")
    for k, v in slurm_standin.install(tmp_path / "bin", tmp_path / "slurm").items():
        monkeypatch.setenv(k, v)
    return Scheduler("stand-in", tmp_path / "slurm")


def hook(where, monkeypatch, text):
    (where / "hook").mkdir(exist_ok=True)
    (where / "hook" / "sitecustomize.py").write_text(text)
    monkeypatch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{where / 'hook'}")


def submitted(out):
    """The array's id from 'submitted N job(s) as SLURM job array ID'."""
    found = re.search(r"submitted (\d+) job\(s\) as SLURM job (?:array )?(\d+)", out)
    assert found, out
    return int(found.group(1)), found.group(2)


def in_process(argv, where):
    assert run.main(argv + ["--results-dir", f"{where}/results", "--seedwise-dir", f"{where}/seedwise"]) == 0


def table(where):
    return (where / "results" / "table.csv").read_text()


def no_sacct_noise(err, kind):
    """Without accounting (the real single node) one line says where states come from; submitit's warning on
    every poll never shows."""
    assert "Bypassing sacct error" not in err
    if kind == "real-slurm":
        assert err.count("sacct answers nothing here") <= 1


def test_run_groups_as_a_job_array_then_resume_submits_nothing(workdir, scheduler, capsys):
    in_process(PAIRS, workdir / "inproc")
    capsys.readouterr()
    assert run.main(PAIRS + scheduler.flags()) == 0
    out, err = capsys.readouterr()
    n, array = submitted(out)
    assert n == 2 and "2 of 2 job(s) done: 4 configuration(s) written" in out
    assert table(workdir) == table(workdir / "inproc")  # every value, every digit
    no_sacct_noise(err, scheduler.kind)
    scheduler.wait_ended(array)
    first = out.splitlines()[0]

    assert run.main(PAIRS + scheduler.flags()) == 0  # everything done: nothing is submitted
    out = capsys.readouterr().out
    assert "skipped 4 of 4 configurations" in out and "nothing to run" in out
    assert not re.search(r"submitted \d+ job", out)
    assert len(list((workdir / "jobs").iterdir())) == 1
    print(f"[{scheduler.kind}] run.py: {first}; sacct: {err.strip() or 'answered'}")


def test_get_embeds_models_as_a_job_array(tmp_path, scheduler, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    img, cap = tm.tiny_dataset(tmp_path / "ds")
    argv = ["--m", "pixels", "random:efficientnet_lite0", "--d", "tiny", "--images", str(img), "--captions", str(cap),
            "--device", "cpu", "-j", "0", "-q"]
    assert get_embeds.main(argv + ["--data-dir", "one"]) == 0
    capsys.readouterr()
    assert get_embeds.main(argv + ["--data-dir", "two"] + scheduler.flags()) == 0
    out, err = capsys.readouterr()
    n, array = submitted(out)
    assert n == 2 and "wrote two/tiny_pixels_img.pt" in out and "wrote two/tiny_random~efficientnet_lite0_img.pt" in out
    no_sacct_noise(err, scheduler.kind)
    import test_launch_embeds
    test_launch_embeds.same_files(tmp_path / "one", tmp_path / "two")
    print(f"[{scheduler.kind}] get_embeds.py array {array}: {out.splitlines()[0]}")


def test_failed_job_is_named_the_rest_finish_and_the_rerun_runs_only_it(workdir, scheduler, capsys, monkeypatch):
    in_process(PAIRS, workdir / "inproc")
    capsys.readouterr()
    hook(workdir, monkeypatch, FAIL_HOOK)
    assert run.main(PAIRS + scheduler.flags()) == 1
    out, err = capsys.readouterr()
    _, array = submitted(out)
    failed = [line for line in err.splitlines() if line.startswith("failed: job ")]
    assert len(failed) == 1 and "txt:text -> clipx:img" in failed[0] and "injected failure" in failed[0], err
    log = workdir / failed[0].rsplit("; log: ", 1)[1]
    assert log.name.endswith("_log.err") and "Traceback" in log.read_text() and "injected failure" in log.read_text()
    assert "1 of 2 job(s) failed" in err and "1 of 2 job(s) done" in out
    assert len(pd.read_csv(workdir / "results" / "table.csv")) == 1  # the other pair finished
    scheduler.wait_ended(array)

    monkeypatch.delenv("PYTHONPATH")
    assert run.main(PAIRS + scheduler.flags()) == 0
    out = capsys.readouterr().out
    assert "skipped 2 of 4 configurations" in out and re.search(r"submitted 1 job\(s\) as SLURM job \d+", out)
    assert table(workdir) == table(workdir / "inproc")
    print(f"[{scheduler.kind}] {failed[0]}\n[{scheduler.kind}] the rerun: {out.splitlines()[1]}")


def test_no_wait_then_a_second_launch_finds_them_queued_then_collects(workdir, scheduler, capsys):
    in_process(PAIRS, workdir / "inproc")
    capsys.readouterr()
    # held for ten minutes: still waiting when the same command comes again
    held = PAIRS + scheduler.flags() + ["--no-wait", "--slurm-extra", "begin=now+600"]
    assert run.main(held) == 0
    out = capsys.readouterr().out
    n, array = submitted(out)
    ids = [line.split(":")[0].split()[1] for line in out.splitlines() if line.startswith("job ")]
    assert n == 2 and ids == [f"{array}_0", f"{array}_1"] and f"squeue -j {array}" in out
    assert set(scheduler.live(array).values()) == {"PENDING"}

    assert run.main(PAIRS + scheduler.flags() + ["--no-wait"]) == 0
    out = capsys.readouterr().out
    assert not re.search(r"submitted \d+ job", out) and out.count("not submitted: ") == 2
    assert f"SLURM job {array}_0 (PENDING" in out and f"SLURM job {array}_1 (PENDING" in out
    assert len(list((workdir / "jobs").iterdir())) == 1  # no second folder: nothing was submitted
    subprocess.run(["scancel", array], check=True)
    scheduler.wait_ended(array)

    # once they have ended (here: cancelled), the same command submits them; --no-wait, then the call that collects
    assert run.main(PAIRS + scheduler.flags() + ["--no-wait"]) == 0
    out = capsys.readouterr().out
    _, array = submitted(out)
    scheduler.wait_ended(array)
    assert run.main(PAIRS + scheduler.flags()) == 0
    out = capsys.readouterr().out
    assert "skipped 4 of 4 configurations" in out and "nothing to run" in out
    assert table(workdir) == table(workdir / "inproc")
    print(f"[{scheduler.kind}] held array, second launch found it queued, collected array {array}")


def test_cancelled_job_is_reported_by_its_state(workdir, scheduler, capsys, monkeypatch):
    hook(workdir, monkeypatch, SLEEP_HOOK)

    def cancel_when_running():
        deadline = time.time() + 300
        while time.time() < deadline:
            out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T"], capture_output=True, text=True).stdout
            running = [line.split("|")[0] for line in out.splitlines() if line.endswith("|RUNNING")]
            if running:
                subprocess.run(["scancel", running[0]], check=True)
                return
            time.sleep(0.5)

    canceller = threading.Thread(target=cancel_when_running, daemon=True)
    canceller.start()
    assert run.main(ONE + scheduler.flags()) == 1
    canceller.join()
    out, err = capsys.readouterr()
    submitted(out)
    (failed,) = [line for line in err.splitlines() if line.startswith("failed: job ")]
    assert "ended without a result, SLURM state CANCELLED" in failed and "cancelled by scancel" in failed, err
    assert not list((workdir / "results").glob("base_*.csv"))
    no_sacct_noise(err, scheduler.kind)
    print(f"[{scheduler.kind}] {failed}")


def test_time_limit_is_reported_as_such(workdir, scheduler, capsys, monkeypatch):
    if scheduler.kind == "stand-in":
        pytest.skip("stand-in: it enforces no time limits; runs on the real single-node SLURM (VLSIM_SLURM=real)")
    hook(workdir, monkeypatch, SLEEP_HOOK)
    assert run.main(ONE + scheduler.flags() + ["--slurm-time", "1"]) == 1
    out, err = capsys.readouterr()
    submitted(out)
    (failed,) = [line for line in err.splitlines() if line.startswith("failed: job ")]
    assert "SLURM state TIMEOUT (it reached its time limit" in failed, err
    assert "give it more with --slurm-time" in failed
    no_sacct_noise(err, scheduler.kind)
    print(f"[{scheduler.kind}] {failed}")
