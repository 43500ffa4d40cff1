"""Hub ids (hf:, timm:, st:), a layer tap and random: through all three scripts, in-process.

Tiny random-weight models are saved under tmp_path (tests/tiny_models.py) and loaded with --weights, so
the names go through get_embeds.py, cluster.py and run.py exactly as a user types them. The numbers of
one configuration per clustering mode are checked against the paper's definitions written out here.
"""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.optimize import linear_sum_assignment

import cluster
import get_embeds
import run
import tiny_models as tm
from src import utils
from src.names import file_tag

N, B, Q = 12, 4, 7  # 12 images; 4 anchors + 7 queries from the same pool (11 rows: mutual_knn's k = 10 needs 11)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Tiny models, a 12-image captions dataset, and every embedding and cluster file the tests read."""
    root = tmp_path_factory.mktemp("e2e")
    img_dir, cap = tm.tiny_dataset(root / "ds", n=N)
    weights = {"hf:tiny-dinov2": tm.dinov2(root / "dino", seed=123),  # random: draws after seed 0
               "st:tiny": tm.sentence_transformer(root / "st"),
               "timm:test_vit": tm.timm_checkpoint(root / "vit.pth")}
    data = root / "data"

    def embeds(model, weights_dir):
        argv = ["--m", model, "--d", "tiny", "--images", str(img_dir), "--captions", str(cap), "--device", "cpu",
                "-j", "0", "-b", "5", "-q", "--data-dir", str(data)]
        assert get_embeds.main(argv + (["--weights", str(weights_dir)] if weights_dir else [])) == 0, model

    images = ["hf:tiny-dinov2", "timm:test_vit", "hf:tiny-dinov2@encoder.layer.0", "random:hf:tiny-dinov2",
              "random:timm:test_vit"]
    for model in images:
        base = model.removeprefix("random:").partition("@")[0]
        # random: hub models read their config from --weights; timm builds test_vit from its own code
        embeds(model, None if model == "random:timm:test_vit" else weights[base])
    embeds("st:tiny", weights["st:tiny"])
    for model in images:
        assert cluster.main(["--m", model, "--d", "tiny", "--nc", str(B), "--data-dir", str(data), "-q"]) == 0
    assert cluster.main(["--m", "st:tiny", "--d", "tiny", "--nc", str(B), "-t", "--data-dir", str(data), "-q"]) == 0
    return dict(root=root, data=data, images=images, ids=sorted([7, 3, 11, 5, 2, 9, 4, 8, 6, 10, 12, 13][:N]))


def test_files_are_named_by_file_tag_with_consistent_sidecars(world):
    data = world["data"]
    expected = {f"tiny_{file_tag(m)}_img.pt" for m in world["images"]} | {"tiny_st~tiny_text.pt"}
    assert expected == {p.name for p in data.glob("*.pt") if not p.name.endswith("_cluster.pt")}
    assert {"tiny_hf~tiny-dinov2_img.pt", "tiny_timm~test_vit_img.pt", "tiny_hf~tiny-dinov2@encoder.layer.0_img.pt",
            "tiny_random~hf~tiny-dinov2_img.pt", "tiny_random~timm~test_vit_img.pt"} <= expected
    for m in world["images"] + ["st:tiny"]:
        mod = "text" if m == "st:tiny" else "img"
        pt = data / f"tiny_{file_tag(m)}_{mod}.pt"
        X = torch.load(pt, weights_only=True)
        meta = json.loads(pt.with_suffix(".json").read_text())
        assert X.shape[0] == N == meta["n"] and meta["image_ids"] == world["ids"], m
        assert meta["model"] == m and meta["modality"] == mod, meta["model"]
        assert meta["layer"] == ("encoder.layer.0" if "@" in m else "final")
        assert meta["init"].startswith("random") == m.startswith("random:")
        picks = torch.load(data / f"tiny_{file_tag(m)}_{mod}_cluster.pt", weights_only=True)
        assert 1 <= picks.numel() <= B and picks.max() < N
    # three different files: the tap is not the final row, random: did not read the saved weights
    a = torch.load(data / "tiny_hf~tiny-dinov2_img.pt", weights_only=True)
    t = torch.load(data / "tiny_hf~tiny-dinov2@encoder.layer.0_img.pt", weights_only=True)
    r = torch.load(data / "tiny_random~hf~tiny-dinov2_img.pt", weights_only=True)
    assert a.shape == t.shape == r.shape and not torch.allclose(a, t) and not torch.allclose(a, r, atol=1e-3)


def run_in(world, monkeypatch, argv):
    monkeypatch.chdir(world["root"])
    out = world["root"] / f"out{abs(hash(tuple(argv)))}"
    common = ["--base_data", "tiny", "--query_data", "tiny", "--b", str(B), "--q", str(Q), "--restarts", "3",
              "--data-dir", str(world["data"]), "--results-dir", str(out / "results"),
              "--seedwise-dir", str(out / "seedwise"), "-q", "--device", "cpu"]
    assert run.main(argv + common) == 0, argv
    return {f.name: pd.read_csv(f) for f in (out / "seedwise").glob("*.csv")}


def paper_relative_acc(world, src, tgt, seed, mode, cluster_file=None):
    """The paper's definitions: get_data_sep (legacy seeds, same pool), relative graph, Hungarian with
    the torch.manual_seed(0) shuffle."""
    S = torch.load(world["data"] / src, weights_only=True)
    T = torch.load(world["data"] / tgt, weights_only=True)
    picks = torch.load(world["data"] / cluster_file, weights_only=True) if cluster_file else None
    sb, tb, sq, tq = utils.get_data_sep(0, seed, B, Q, S, T, S, T, picks, picks, mode, True)
    graph = utils.relative_baseline(sb, tb, sq, tq)
    shuffle = torch.randperm(Q, generator=torch.Generator().manual_seed(0))
    _, col = linear_sum_assignment(graph[:, shuffle].double().numpy(), maximize=True)
    return float(np.mean(shuffle.numpy()[col] == np.arange(Q)))


@pytest.mark.parametrize("mode", [0, 1, 2])
def test_paper_flags_with_hub_ids(world, monkeypatch, mode):
    vids = world["images"]
    frames = run_in(world, monkeypatch, ["--m", "relative", "linear_local_CKA", "qap", "--c", str(mode),
                                         "--vid_model", *vids, "--text_model", "st:tiny"])
    assert len(frames) == 3 * len(vids)
    for vid in vids:
        mine = {n: f for n, f in frames.items() if f"_st~tiny_{file_tag(vid)}_" in n}
        assert len(mine) == 3, (vid, sorted(frames))
        for name, f in mine.items():
            assert (f["Source model"] == "st:tiny").all() and (f["Target model"] == vid).all(), name
            assert (f["source_side"] == "st:tiny:text").all() and (f["target_side"] == f"{vid}:img").all()
            assert (f["clustering_mode"] == mode).all() and f["matching_acc"].between(0, 1).all()
        (rel,) = [f for n, f in mine.items() if "_relative_" in n]
        cluster_file = {0: None, 1: "tiny_st~tiny_text_cluster.pt",
                        2: f"tiny_{file_tag(vid)}_img_cluster.pt"}[mode]
        for row, seed in enumerate((0, 1, 2)):
            assert rel["matching_acc"][row] == paper_relative_acc(
                world, "tiny_st~tiny_text.pt", f"tiny_{file_tag(vid)}_img.pt", seed, mode, cluster_file), (vid, seed)


def test_sides_with_hub_ids_equal_the_paper_flags(world, monkeypatch):
    paper = run_in(world, monkeypatch, ["--m", "relative", "--c", "2", "--vid_model", "hf:tiny-dinov2@encoder.layer.0",
                                        "--text_model", "st:tiny"])
    sides = run_in(world, monkeypatch, ["--m", "relative", "--c", "2", "--source", "st:tiny:text",
                                        "--target", "hf:tiny-dinov2@encoder.layer.0:img"])
    # captions <-> images with no language is the paper's setting: the same file name and numbers
    assert sorted(paper) == sorted(sides)
    (name,) = paper
    cols = ["Source model", "Target model", "matching_acc", "top_1", "top_5", "top_10", "linear_cka"]
    pd.testing.assert_frame_equal(paper[name][cols], sides[name][cols])
    # -vtl and the swapped sides: images are the source
    vtl = run_in(world, monkeypatch, ["--m", "relative", "--vid_model", "random:timm:test_vit", "--text_model",
                                      "st:tiny", "-vtl"])
    swapped = run_in(world, monkeypatch, ["--m", "relative", "--source", "random:timm:test_vit:img",
                                          "--target", "st:tiny:text"])
    ((vn, v),), ((sn, s),) = vtl.items(), swapped.items()
    assert vn == sn and (v["Source model"] == "random:timm:test_vit").all()
    pd.testing.assert_frame_equal(v[cols], s[cols])
    for row, seed in enumerate((0, 1, 2)):
        assert s["matching_acc"][row] == paper_relative_acc(world, "tiny_random~timm~test_vit_img.pt",
                                                            "tiny_st~tiny_text.pt", seed, 0)


def test_image_against_image_with_hub_ids(world, monkeypatch):
    frames = run_in(world, monkeypatch, ["--m", "relative", "kernel_local_CKA", "--c", "1", "--source",
                                         "hf:tiny-dinov2@encoder.layer.0:img", "--target", "timm:test_vit:img"])
    assert len(frames) == 2
    for f in frames.values():
        assert (f["Source model"] == "hf:tiny-dinov2@encoder.layer.0").all()
        assert (f["source_side"] == "hf:tiny-dinov2@encoder.layer.0:img").all()
        assert (f["Target model"] == "timm:test_vit").all()
    (rel,) = [f for n, f in frames.items() if "_relative_" in n]
    for row, seed in enumerate((0, 1, 2)):
        assert rel["matching_acc"][row] == paper_relative_acc(
            world, "tiny_hf~tiny-dinov2@encoder.layer.0_img.pt", "tiny_timm~test_vit_img.pt", seed, 1,
            "tiny_hf~tiny-dinov2@encoder.layer.0_img_cluster.pt")


def test_ten_rows_still_run_the_methods(world, monkeypatch):
    monkeypatch.chdir(world["root"])
    argv = ["--m", "relative", "--vid_model", "hf:tiny-dinov2", "--text_model", "st:tiny", "--base_data", "tiny",
            "--query_data", "tiny", "--b", "4", "--q", "6", "--data-dir", str(world["data"]),
            "--results-dir", "ten/results", "--seedwise-dir", "ten/seedwise", "-q", "--device", "cpu"]
    assert run.main(argv) == 0   # the paper's run.py runs any b + q <= n
    (sw,) = list((world["root"] / "ten" / "seedwise").glob("*.csv"))
    row = pd.read_csv(sw).iloc[0]
    assert 0 <= row["matching_acc"] <= 1 and 0 < row["kernel_cka"] <= 1
    assert pd.isna(row["mutual_knn"]) and pd.isna(row["cknna"])  # k = 10 neighbours need 11 rows
