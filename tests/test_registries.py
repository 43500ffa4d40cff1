"""A new entry in each registry (tests/scratch_entries.py: a metric, a method with an option, a task with a
score column, a perturbation kind) runs through run.main, and the tests that iterate the registries stay green
with all four added."""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scratch_entries
import torch

import run
from src import utils

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--base_data", "base", "--query_data", "query", "--b", "30", "--q", "40", "-q"]
PAPER = ["--vid_model", "vis", "--text_model", "txt"] + ARGS


@pytest.fixture
def scratch(monkeypatch):
    return scratch_entries.register(monkeypatch.setitem)


def seedwise(root):
    return [pd.read_csv(f) for f in sorted((root / "seedwise").glob("*.csv"))]


def paper_draw(root, seed):
    data = {d: [torch.load(root / "data" / f"{d}_{n}.pt") for n in ("txt_text", "vis_img")] for d in ("base", "query")}
    return utils.get_data_sep(0, seed, 30, 40, *data["base"], *data["query"], None, None, 0, False)


def test_a_new_metric_runs_through_main(workdir, scratch, capsys):
    assert run.main(["--m", "relative", "--x", "rsa"] + PAPER) == 0     # its column, and the figure's --x
    (sw,) = seedwise(workdir)
    for seed, row in zip((0, 1, 2), sw.to_dict("records")):
        sb, tb, sq, tq = paper_draw(workdir, seed)                       # the metric on anchors + queries
        X, Y = torch.cat([sb, sq]).double().numpy(), torch.cat([tb, tq]).double().numpy()
        assert row["rsa"] == pytest.approx(scratch_entries.plain_rsa(X, Y), rel=1e-9)
    assert "rsa" in capsys.readouterr().out


def test_a_new_method_with_an_option_runs_through_main(workdir, scratch):
    assert "--scratch-k" in run.build_parser().format_help()
    assert run.main(["--m", "scratch_anchors", "--scratch-k", "5"] + PAPER) == 0
    (sw,) = seedwise(workdir)
    assert (sw["method_options"] == '{"k": 5}').all()
    for seed, row in zip((0, 1, 2), sw.to_dict("records")):
        sb, tb, sq, tq = paper_draw(workdir, seed)
        graph = scratch_entries.plain_scratch_anchors(sb, tb, sq, tq, k=5)
        assert row["matching_acc"] == pytest.approx(utils.linear_matching(sb, tb, sq, tq, graph))
    assert run.main(["--m", "scratch_anchors", "--scratch-k", "1"] + PAPER) == 2   # checked before any work


def test_a_new_task_runs_through_main(workdir, scratch):
    assert run.main(["--task", "scratch_half", "--m", "relative"] + PAPER) == 0
    (sw,) = seedwise(workdir)
    assert (sw["task"] == "scratch_half").all()
    for seed, row in zip((0, 1, 2), sw.to_dict("records")):
        sb, tb, sq, tq = paper_draw(workdir, seed)
        graph = utils.relative_baseline(sb, tb, sq, tq)
        from src.matching import hungarian
        _, assignment = hungarian(graph)
        assert row["scratch_half_acc"] == pytest.approx(np.mean(assignment[:20] == np.arange(20)))


def test_a_new_perturbation_kind_runs_through_main(workdir, scratch):
    assert run.main(["--source", "txt:text", "txt:text~negate:0", "txt:text~negate:1", "--target", "vis:img",
                     "--m", "relative"] + ARGS) == 0
    frames = {f["source_side"][0]: f for f in seedwise(workdir)}
    assert set(frames) == {"txt:text", "txt:text~negate:0", "txt:text~negate:1"}
    cols = ["matching_acc", "linear_cka", "kernel_cka"]
    pd.testing.assert_frame_equal(frames["txt:text"][cols], frames["txt:text~negate:0"][cols])   # level 0
    # negate:1 negates every row of the pool: linear CKA is unchanged (XX^T is), the rows are not
    negated = frames["txt:text~negate:1"]["linear_cka"].tolist()
    assert negated == pytest.approx(frames["txt:text"]["linear_cka"].tolist())
    assert run.main(["--source", "txt:text~negate:2", "--target", "vis:img", "--m", "relative"] + ARGS) == 2


# The tests that iterate a registry (and the scratch entries' own end-to-end ones), run with all four entries
# registered by the plugin before collection. The whole suite with the plugin passes too (run it by hand:
# PYTHONPATH=tests python -m pytest -p scratch_entries tests; docs/usage.md's page test then asks for the
# generator to be re-run, as the recipe says).
REGISTRY_TESTS = [
    "tests/test_metrics.py", "tests/test_perturb.py", "tests/test_methods.py",
    "tests/test_tasks.py::test_every_registry_task_names_the_test_that_checks_it",
    "tests/test_tasks.py::test_every_registry_task_declares_its_contract",
    "tests/test_run.py::test_every_method_end_to_end",
    "tests/test_control.py::test_level_zero_gives_the_unperturbed_numbers_as_its_own_configuration",
]


def test_existing_registry_tests_stay_green_with_a_new_entry_in_each_registry():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), str(ROOT)]))
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "scratch_entries", "-rN", "-v",
                           "-p", "no:cacheprovider", *REGISTRY_TESTS], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    for new in ("rsa", "scratch_anchors", "negate", "scratch_half"):    # the new entries were iterated
        assert re.search(rf"\[([^\]]*-)?{new}(-[^\]]*)?\] PASSED", done.stdout), new
