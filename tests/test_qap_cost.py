"""Where qap's time goes and how long a run will take: src/faq.py's timers, src/matching.py's estimate, and
the warning src/experiment.py gives before a long configuration."""
from collections import namedtuple
from types import SimpleNamespace

import numpy as np
import torch
from test_faq import problem

from src import experiment, faq, matching
from src.methods import QAP, Linear


def test_timers_split_the_solve_and_change_nothing():
    A, B, _ = problem(20, 30, 0.1)
    timers = {}
    plain = faq.seeded_qap(A, B, 20, restarts=8, seed=3)
    timed = faq.seeded_qap(A, B, 20, restarts=8, seed=3, timers=timers)
    assert np.array_equal(plain.col_ind, timed.col_ind) and plain.objectives == timed.objectives
    assert set(timers) == {"start", "products", "assignment", "objective", "iterations"}
    assert timers["iterations"] >= 8 and all(v > 0 for v in timers.values())


def test_qap_estimate_grows_with_queries_and_restarts():
    assert matching.expected_restarts(500, 10) == 24 and matching.expected_restarts(500, None) == 500
    assert matching.expected_restarts(8, 10) == 8
    paper = QAP.create({})
    small, large = paper.estimate_seconds(320, 100), paper.estimate_seconds(320, 5000)
    assert 0 < small < large
    assert QAP.create({"restarts": 8}).estimate_seconds(320, 5000) < large
    assert QAP.create({"qap_patience": 0}).estimate_seconds(320, 5000) > large  # 0: all 500 restarts
    assert QAP.create({"qap_init": "barycenter"}).estimate_seconds(320, 5000) < large
    assert Linear.create({}).estimate_seconds(320, 5000) is None


def test_a_long_run_is_announced_with_the_flags_that_bound_it(monkeypatch, caplog):
    monkeypatch.setattr(QAP, "estimate_seconds", lambda self, n_anchors, n_queries, device="cpu": 1800.0)
    draw = SimpleNamespace(sb=torch.zeros(320, 4), sq=torch.zeros(5000, 4))
    Cfg = namedtuple("Cfg", "method source target")
    cfgs = [Cfg(m, "a:text", "b:img") for m in ("qap", "linear")]
    with caplog.at_level("WARNING"):
        experiment.warn_long_runs(dict(zip(cfgs, [QAP.create({}), Linear.create({})], strict=True)), draw, "cpu", 3)
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert message.startswith("qap a:text -> b:img: estimated 90 min for 3 seed(s) of 5000 queries and 320 anchors")
    assert message.endswith("bound it with --restarts and --qap-patience")
