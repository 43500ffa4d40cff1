"""The bundled demos: real embeddings of 1,000 Flickr8k photos (EfficientNet-Lite0/1/2, Lite0's blocks,
pixels, a random Lite0; all-MiniLM-L6-v2, all-mpnet-base-v2, USE in three languages)."""
import json

import pandas as pd
import pytest
import torch

import run
from conftest import ROOT
from src.files import side_file
from src.names import parse_model

DATA = ROOT / "data"
SIDES = [f"{m}:img" for m in run.DEMOS["figure1"]["vid_models"] + run.DEMOS["depth"]["vid_models"]] + [
    f"{m}:text" for m in run.DEMOS["figure1"]["text_models"]] + ["use:text", "use:text:zh", "use:text:de"]


@pytest.mark.parametrize("side", sorted(set(SIDES)))
def test_bundled_files_are_consistent(side):
    path = side_file(DATA, "flickr1k", side)
    X = torch.load(path, weights_only=True)
    meta = json.loads(path.with_suffix(".json").read_text())
    n = 937 if side.endswith(":de") else 1000
    assert X.shape[0] == n == meta["n"] == len(meta["image_ids"]) and X.dtype == torch.float32
    assert torch.isfinite(X).all()
    model = parse_model(side.rsplit(":", 2)[0] if side.endswith((":zh", ":de")) else side.rsplit(":", 1)[0])
    assert meta.get("layer", "final") == (model.layer or "final")


def _demo(name, tmp_path, capsys):
    argv = ["--demo", name, "-q", "--results-dir", str(tmp_path / "results"), "--seedwise-dir",
            str(tmp_path / "seedwise")]
    assert run.main(argv) == 0
    out = capsys.readouterr().out
    table = pd.read_csv(tmp_path / "results" / "table.csv")
    assert (tmp_path / "results" / run.DEMOS[name]["figure"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return out, table


def test_figure1_demo(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    out, table = _demo("figure1", tmp_path, capsys)
    assert len(table) == 6 and "chance: 1/500 = 0.2%" in out
    for m in ("linear", "relative", "linear_local_CKA", "kernel_local_CKA", "qap"):
        assert f"{m}: matching accuracy vs kernel_cka: pearson" in out
        assert table[f"{m}_acc"].between(0, 1).all()
    for m in ("relative", "kernel_local_CKA", "qap"):
        assert (table[f"{m}_acc"] > 0.05).all(), m  # 25x chance
    for c in ("linear_cka", "kernel_cka", "unbiased_cka", "mutual_knn", "cknna"):
        assert table[c].between(0, 1).all(), c


def test_depth_demo(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    out, table = _demo("depth", tmp_path, capsys)
    assert len(table) == 9
    by = table.set_index("target_side")
    # the controls sit at the floor, the final layer far above them
    for control in ("pixels:img", "random:efficientnet_lite0:img"):
        assert by.loc[control, "kernel_local_CKA_acc"] < by.loc["efficientnet_lite0:img", "kernel_local_CKA_acc"]
