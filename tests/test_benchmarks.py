"""Every script of benchmarks/ runs its --smoke mode (tiny sizes, seconds) to the end, so an import, a flag or
a function that moves breaks this test rather than a user's benchmark. The scripts are found by globbing, so a
new benchmark is covered the day it lands (it must take --smoke)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py"))


def test_there_are_benchmarks():
    assert len(SCRIPTS) >= 5


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_smoke_mode_runs(script, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    figures = lambda: {p: p.stat().st_mtime_ns for p in (ROOT / "docs").glob("*.png")}  # noqa: E731
    before = figures()
    done = subprocess.run([sys.executable, str(script), "--smoke"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, f"{script.name} --smoke exited {done.returncode}:\n{done.stderr[-3000:]}"
    assert done.stdout.strip(), f"{script.name} --smoke printed nothing"
    # a smoke run leaves the pages' figures alone
    assert figures() == before
