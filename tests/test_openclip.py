"""open_clip models through the ids a user types: ``openclip:ARCH/<checkpoint file>`` (and ``--weights``,
``random:``, ``@LAYER``, ``--list-layers``) through get_embeds.py, cluster.py and run.py, in-process.

A tiny architecture is registered with open_clip (tests/tiny_models.openclip_checkpoint), given random
weights and saved as a checkpoint under tmp_path; the rows are checked against an open_clip forward pass of
the same checkpoint written out here. Nothing is downloaded.
"""
import json
from pathlib import Path

import open_clip
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import cluster
import get_embeds
import run
import tiny_models as tm
from src.datasets import open_rgb
from src.names import file_tag

N, B, Q = 12, 4, 7
ARCH = tm.OPENCLIP_ARCH
MODEL = f"openclip:{ARCH}/ckpt.pt"   # the checkpoint path relative to the working directory


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("openclip")
    img_dir, cap = tm.tiny_dataset(root / "ds", n=N)
    ckpt = tm.openclip_checkpoint(root / "ckpt.pt", seed=1)  # seed 1: random: (seed 0) differs from it
    return {"root": root, "img_dir": img_dir, "cap": cap, "ckpt": ckpt, "data": root / "data",
            "captions": json.loads(cap.read_text())}


@pytest.fixture
def at_root(world, monkeypatch):
    monkeypatch.chdir(world["root"])
    return world


def embeds(world, model, *extra, data=None):
    argv = ["--m", model, "--d", "tiny", "--images", str(world["img_dir"]), "--captions", str(world["cap"]),
            "--device", "cpu", "-j", "0", "-b", "5", "-q", "--data-dir", str(data or world["data"])] + list(extra)
    return get_embeds.main(argv)


def reference(world):
    """open_clip's own forward pass of the checkpoint: image rows and per-image caption means, in id order."""
    model, _, preprocess = open_clip.create_model_and_transforms(ARCH, pretrained=str(world["ckpt"]))
    tokenizer = open_clip.get_tokenizer(ARCH)
    model.eval()
    images = sorted(world["captions"]["images"], key=lambda im: im["id"])
    img_rows, txt_rows = [], []
    with torch.no_grad():
        for im in images:
            px = preprocess(open_rgb(world["img_dir"] / im["file_name"]))[None]
            img_rows.append(model.encode_image(px)[0])
            caps = [a["caption"] for a in world["captions"]["annotations"] if a["image_id"] == im["id"]]
            txt_rows.append(model.encode_text(tokenizer(caps)).mean(dim=0))
    return torch.stack(img_rows), torch.stack(txt_rows), model, preprocess, tokenizer, images


def load(world, name, data=None):
    d = Path(data or world["data"])
    return torch.load(d / f"{name}.pt", weights_only=True), json.loads((d / f"{name}.json").read_text())


def test_checkpoint_rows_equal_open_clip_and_run_end_to_end(at_root):
    w = at_root
    assert embeds(w, MODEL) == 0
    tag = file_tag(MODEL)
    assert tag == f"openclip~{ARCH}+ckpt.pt"
    img, side_i = load(w, f"tiny_{tag}_img")
    txt, side_t = load(w, f"tiny_{tag}_text")
    ref_img, ref_txt, *_ = reference(w)
    assert img.shape == ref_img.shape == (N, 16) and txt.shape == ref_txt.shape == (N, 16)
    assert F.cosine_similarity(img, ref_img).min() >= 0.999
    assert F.cosine_similarity(txt, ref_txt).min() >= 0.999
    assert torch.allclose(img, ref_img, atol=1e-5) and torch.allclose(txt, ref_txt, atol=1e-5)
    assert not torch.allclose(img.norm(dim=1), torch.ones(N))  # the towers' features, not normalised
    assert side_i["family"] == "openclip" and side_i["model"] == MODEL and side_i["weights"] == f"{ARCH}/ckpt.pt"
    assert "unnormalised" in side_i["pooling"] and side_t["image_ids"] == side_i["image_ids"]

    for extra in ([], ["-t"]):
        assert cluster.main(["--m", MODEL, "--d", "tiny", "--nc", str(B), "--data-dir", str(w["data"]), "-q"]
                            + extra) == 0
    for c in ("0", "1"):
        argv = ["--m", "linear", "relative", "qap", "--b", str(B), "--q", str(Q), "--c", c, "--vid_model", MODEL,
                "--text_model", MODEL, "--base_data", "tiny", "--query_data", "tiny", "--seeds", "0", "1",
                "--data-dir", str(w["data"]), "--results-dir", f"res{c}", "--seedwise-dir", f"seed{c}",
                "--device", "cpu", "-q"]
        assert run.main(argv) == 0, c
        frames = [pd.read_csv(f) for f in (w["root"] / f"seed{c}").glob("*.csv")]
        assert len(frames) == 3 and all(len(f) == 2 for f in frames)
        assert all(f["matching_acc"].between(0, 1).all() and f["kernel_cka"].between(0, 1).all() for f in frames)
        assert all(tag in p.name for p in (w["root"] / f"res{c}").glob("tiny_*.csv"))


def test_weights_flag_and_absolute_path_give_the_same_rows(at_root, tmp_path):
    w = at_root
    assert embeds(w, f"openclip:{ARCH}", "--weights", str(w["ckpt"]), data=tmp_path / "a") == 0
    absolute = f"openclip:{ARCH}/{w['ckpt']}"            # ARCH//abs/path
    assert absolute.startswith(f"openclip:{ARCH}//")
    assert embeds(w, absolute, data=tmp_path / "b") == 0
    ref_img, *_ = reference(w)
    a_img, side = load(w, f"tiny_openclip~{ARCH}_img", tmp_path / "a")
    b_img, _ = load(w, f"tiny_{file_tag(absolute)}_img", tmp_path / "b")
    assert torch.allclose(a_img, ref_img, atol=1e-5) and torch.allclose(b_img, ref_img, atol=1e-5)
    assert side["weights"] == str(w["ckpt"])
    # the path is in the name, escaped: the file name stays one path component and tells the ids apart
    names = {file_tag(m) for m in (absolute, f"openclip:{ARCH}/ckpt.pt", f"openclip:{ARCH}",
                                   f"openclip:{ARCH}/x/ckpt.pt", f"openclip:{ARCH}/x+ckpt.pt")}
    assert len(names) == 5 and not any("/" in n or ":" in n for n in names)


def test_random_init_reads_no_weights(at_root, tmp_path):
    w = at_root
    assert embeds(w, f"random:openclip:{ARCH}", data=tmp_path) == 0
    img, side = load(w, f"tiny_random~openclip~{ARCH}_img", tmp_path)
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(ARCH)
    model.eval()
    first = min(w["captions"]["images"], key=lambda im: im["id"])
    with torch.no_grad():
        expected = model.encode_image(preprocess(open_rgb(w["img_dir"] / first["file_name"]))[None])[0]
    assert torch.allclose(img[0], expected, atol=1e-5)
    ref_img, *_ = reference(w)
    assert not torch.allclose(img, ref_img, atol=1e-3)
    assert side["init"].startswith("random") and "weights" not in side


def test_layer_taps_on_both_towers_and_list_layers(at_root, tmp_path, capsys):
    w = at_root
    vis, txt_layer = "visual.transformer.resblocks.0", "transformer.resblocks.1"
    assert embeds(w, MODEL, "--layers", vis, txt_layer, "final", data=tmp_path) == 0
    files = sorted(p.name for p in tmp_path.glob("*.pt"))
    tag = file_tag(MODEL)
    assert files == sorted([f"tiny_{tag}@{vis}_img.pt", f"tiny_{tag}@{txt_layer}_text.pt", f"tiny_{tag}_img.pt",
                            f"tiny_{tag}_text.pt"])  # each tower's layer only for its own modality
    img, _ = load(w, f"tiny_{tag}@{vis}_img", tmp_path)
    txt, _ = load(w, f"tiny_{tag}@{txt_layer}_text", tmp_path)
    _, _, model, preprocess, tokenizer, images = reference(w)
    got = {}
    hooks = [model.get_submodule(p).register_forward_hook(lambda m, i, o, p=p: got.__setitem__(p, o))
             for p in (vis, txt_layer)]
    with torch.no_grad():
        for k, im in enumerate(images):
            model.encode_image(preprocess(open_rgb(w["img_dir"] / im["file_name"]))[None])
            assert torch.allclose(img[k], got[vis][0].mean(dim=0), atol=1e-5)     # token mean, CLS included
            caps = [a["caption"] for a in w["captions"]["annotations"] if a["image_id"] == im["id"]]
            tokens = tokenizer(caps)
            model.encode_text(tokens)
            ends = tokens.argmax(dim=1)                                            # the end-of-text token
            per_caption = torch.stack([got[txt_layer][j, :ends[j] + 1].mean(dim=0) for j in range(len(caps))])
            assert torch.allclose(txt[k], per_caption.mean(dim=0), atol=1e-5)
    for h in hooks:
        h.remove()

    capsys.readouterr()
    assert embeds(w, MODEL, "--list-layers", data=tmp_path / "none") == 0
    out = capsys.readouterr().out
    assert f"# {MODEL} img" in out and f"# {MODEL} text" in out
    assert f"{vis}\t(1, 17, 32)" in out and f"{txt_layer}\t(1, 77, 32)" in out
    assert not (tmp_path / "none").exists()


def test_help_says_the_rows_are_unnormalised(capsys):
    assert get_embeds.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "openclip:ARCH/TAG" in out and "openclip:hf-hub:ORG/NAME" in out and "unnormalised" in out


@pytest.mark.parametrize("model, code, needles", [
    ("openclip:ViT-B-31/laion2b_s34b_b79k", 2, ["'ViT-B-31' is not an open_clip architecture", "ViT-B-32",
                                                 "open_clip.list_pretrained()"]),
    ("openclip:ViT-B-32/laion2b_s34b_b79", 2, ["'laion2b_s34b_b79'", "laion2b_s34b_b79k",
                                                "open_clip.list_pretrained()"]),
    (f"openclip:{ARCH}/missing.pt", 1, ["missing.pt does not exist"]),
    (f"openclip:{ARCH}", 2, [f"openclip:{ARCH}/TAG", "--weights FILE", f"random:openclip:{ARCH}"]),
    ("openclip:ViT-B-32/laion2b_s34b_b79k", 1, ["could not fetch", "HF_HUB_OFFLINE", "--weights FILE"]),
    ("openclip:hf-hub:nobody-here/no-such-model", 1, ["could not fetch", "HF_HUB_OFFLINE"]),
])
def test_bad_ids_one_message_nothing_written(at_root, tmp_path, capsys, model, code, needles):
    assert embeds(at_root, model, data=tmp_path / "out") == code
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err   # open_clip's own error log is not repeated
    last = err.strip()
    assert last.startswith("get_embeds.py: error:") and "Traceback" not in err
    for needle in needles:
        assert needle in last, (needle, last)
    assert not (tmp_path / "out").exists()
