"""The paper's flags give the same files and numbers as before sides, tasks and many-pairs runs existed.

tests/data/demo_before_sides.json holds the seedwise rows that run.py printed for the bundled demo
(EfficientNet-Lite0 x all-MiniLM-L6-v2 on flickr1k, 320 anchors, 500 queries, seeds 0 1 2, every method
but cos) before that change, with their file names.
"""
import json

import pandas as pd
import pytest

import run
from conftest import ROOT

BEFORE = json.loads((ROOT / "tests" / "data" / "demo_before_sides.json").read_text())
PAPER_COLUMNS = ["Base data", "Query data", "Source model", "Target model", "method", "base_samples",
                 "query_samples", "clustering_mode", "stretch", "seed1", "seed2"]
VALUES = ["matching_acc", "top_1", "top_5", "top_10", "linear_cka", "kernel_cka"]


def test_paper_flags_same_files_and_numbers(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the default data folder, as a user runs it
    methods = sorted({r["method"] for r in BEFORE})
    argv = ["--m", *methods, "--vid_model", "efficientnet_lite0", "--text_model", "minilm", "--base_data",
            "flickr1k", "--query_data", "flickr1k", "--b", "320", "--q", "500", "--c", "0", "-q",
            "--results-dir", str(tmp_path / "results"),
            "--seedwise-dir", str(tmp_path / "seedwise")]
    assert run.main(argv) == 0
    files = {r["file"] for r in BEFORE}
    assert {p.name for p in (tmp_path / "seedwise").glob("*.csv")} == files
    for name in files:
        now = pd.read_csv(tmp_path / "seedwise" / name, dtype=str, keep_default_na=False)
        before = [r for r in BEFORE if r["file"] == name]
        assert len(now) == len(before)
        for row, old in zip(now.to_dict("records"), before):
            assert [row[c] for c in PAPER_COLUMNS] == [old[c] for c in PAPER_COLUMNS]
            for c in VALUES:
                assert float(row[c]) == pytest.approx(float(old[c]), rel=1e-12, abs=1e-15), (name, c)
