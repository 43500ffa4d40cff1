"""The bundled demo: real embeddings (EfficientNet-Lite0 x all-MiniLM-L6-v2 on 1,000 Flickr8k photos)."""
import json

import pandas as pd
import torch

import run
from conftest import ROOT
from src.experiment import RESULT_COLUMNS


def test_demo_files_are_consistent():
    data = ROOT / "data"
    for stem, d in (("flickr1k_efficientnet_lite0_img", 1280), ("flickr1k_minilm_text", 384)):
        X = torch.load(data / f"{stem}.pt", weights_only=True)
        side = json.loads((data / f"{stem}.json").read_text())
        assert X.shape == (1000, d) and X.dtype == torch.float32 and torch.isfinite(X).all()
        assert side["n"] == 1000 and side["image_ids"] == list(range(1, 1001))
        picks = torch.load(data / f"{stem}_cluster.pt", weights_only=True)
        assert picks.dtype == torch.int64 and 0 < picks.numel() <= 320


def test_demo_runs_every_method_and_beats_chance(tmp_path, capsys):
    argv = ["--demo", "-q", "--data-dir", str(ROOT / "data"), "--results-dir", str(tmp_path / "results"),
            "--seedwise-dir", str(tmp_path / "seedwise")]
    assert run.main(argv) == 0
    out = capsys.readouterr().out
    assert "chance: 1/500 = 0.2%" in out
    summary = pd.read_csv(tmp_path / "results" / "summary.csv")
    assert list(summary.columns) == RESULT_COLUMNS
    assert set(summary["method"]) == {"linear", "relative", "linear_local_CKA", "kernel_local_CKA", "qap"}
    assert (summary["query_samples"] == 500).all() and (summary["base_samples"] == 320).all()
    by = summary.set_index("method")
    for m in ("relative", "linear_local_CKA", "kernel_local_CKA", "qap"):
        assert by.loc[m, "matching_acc"] > 0.05, m  # 25x chance
    assert 0 < by.loc["linear", "linear_cka"] < 1
