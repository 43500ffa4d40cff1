"""get_embeds.py: every encoder family from tiny local models, real offline models on real photos,
resume, torchrun sharding, and clear errors. Nothing is downloaded."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import get_embeds
import tiny_models as tm
from src import utils
from src.datasets import open_rgb
from src.encoders import REGISTRY, load_encoder
from src.extraction import extract

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def ds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tm.tiny_dataset(tmp_path / "ds")


def run_embeds(ds, model, weights=None, *extra):
    img, cap = ds
    argv = ["--m", model, "--d", "tiny", "--images", str(img), "--captions", str(cap), "--device", "cpu",
            "-j", "0", "-b", "4", "-q"] + (["--weights", str(weights)] if weights else []) + list(extra)
    return get_embeds.main(argv)


def first_image_pixels(enc, img_dir):
    # rows are sorted by image id: row 0 is id 2
    return enc.transform(open_rgb(img_dir / "img_002.jpg"))[None]


# Independent computations of row 0 for each family, written against the models' own outputs.
def expect_token_mean(enc, px):
    return enc.model(pixel_values=px).last_hidden_state.mean(dim=1)


def expect_spatial_mean(enc, px):
    return enc.model(pixel_values=px).last_hidden_state.mean(dim=(2, 3))


def _clip_image_features(model, px):
    out = model.get_image_features(pixel_values=px)  # a tensor, or an output whose pooler_output it is (v5)
    return out if torch.is_tensor(out) else out.pooler_output


EXPECT = {
    "dinov2": expect_token_mean,
    "convnext": lambda e, px: F.normalize(expect_spatial_mean(e, px), dim=-1),
    "resnet101": expect_spatial_mean,
    "segformer": expect_spatial_mean,
    "segformer_segment": expect_spatial_mean,
    "dpt": lambda e, px: e.model(pixel_values=px, output_hidden_states=True).hidden_states[-1].mean(dim=1),
    "sam": lambda e, px: e.model.vision_encoder(pixel_values=px, output_hidden_states=True)
    .hidden_states[-1].flatten(1, 2).mean(dim=1),
    "sam_embed": lambda e, px: e.model.vision_encoder(pixel_values=px).last_hidden_state.mean(dim=(2, 3)),
    "detr_resnet_50_backbone": lambda e, px: e.model.backbone(px, torch.ones(1, *px.shape[2:]))[-1][0].mean(dim=(2, 3)),
    "detr_resnet_101_encoder": lambda e, px: e.model(pixel_values=px).encoder_last_hidden_state.mean(dim=1),
    "detr_resnet_50_decoder": lambda e, px: e.model(pixel_values=px).last_hidden_state.mean(dim=1),
    "clip": lambda e, px: F.normalize(_clip_image_features(e.model, px), dim=-1),
    "timm:test_vit": lambda e, px: e.model.forward_head(e.model.forward_features(px), pre_logits=True),
}
BUILDERS = {
    "dinov2": tm.dinov2, "convnext": tm.convnext, "resnet101": tm.resnet, "segformer": tm.segformer,
    "segformer_segment": lambda p: tm.segformer(p, segment=True), "dpt": tm.dpt, "sam": tm.sam,
    "sam_embed": tm.sam, "detr_resnet_50_backbone": tm.detr, "detr_resnet_101_encoder": tm.detr,
    "detr_resnet_50_decoder": tm.detr, "clip": tm.clip, "timm:test_vit": tm.timm_checkpoint,
}


@pytest.mark.parametrize("model", sorted(BUILDERS))
def test_image_families_from_local_weights(ds, tmp_path, model):
    weights = BUILDERS[model](tmp_path / model.replace(":", "_"))
    assert run_embeds(ds, model, weights) == 0
    tag = model.replace(":", "~")  # file_tag: ":" -> "~", "/" -> "+"
    X = torch.load(tmp_path / "data" / f"tiny_{tag}_img.pt", weights_only=True)
    side = json.loads((tmp_path / "data" / f"tiny_{tag}_img.json").read_text())
    assert X.dtype == torch.float32 and X.shape[0] == 6 and torch.isfinite(X).all()
    assert side["image_ids"] == [2, 3, 5, 7, 9, 11]
    assert side["n"] == 6 and side["d"] == X.shape[1] and side["model"] == model
    enc = load_encoder(model, "cpu", weights)
    with torch.inference_mode():
        expected = EXPECT[model](enc, first_image_pixels(enc, ds[0]))[0]
    assert torch.allclose(X[0], expected.float(), atol=1e-5), model


def test_row_order_is_sorted_ids_with_captions_in_annotation_order(ds):
    from src.datasets import load_dataset
    d = load_dataset("tiny", *ds)
    cap = json.loads(ds[1].read_text())
    assert d.ids == sorted(i["id"] for i in cap["images"])
    for img_id, caps in zip(d.ids, d.captions):
        assert caps == [a["caption"] for a in cap["annotations"] if a["image_id"] == img_id]


def test_text_families_mean_over_captions(ds, tmp_path):
    from src.datasets import load_dataset
    captions = load_dataset("tiny", *ds).captions
    st_dir = tm.sentence_transformer(tmp_path / "st")
    assert run_embeds(ds, "st:tiny", st_dir) == 0
    X = torch.load(tmp_path / "data" / "tiny_st~tiny_text.pt", weights_only=True)
    enc = load_encoder("st:tiny", "cpu", st_dir)
    assert torch.allclose(X[1], torch.as_tensor(enc.model.encode(captions[1])).mean(dim=0), atol=1e-5)

    bert = tm.bert_text(tmp_path / "bert")
    assert run_embeds(ds, "hf:tiny-bert", bert) == 0
    X = torch.load(tmp_path / "data" / "tiny_hf~tiny-bert_text.pt", weights_only=True)
    enc = load_encoder("hf:tiny-bert", "cpu", bert)
    rows = []
    for c in captions[2]:  # one caption at a time: no padding, a plain token mean
        tok = enc.tokenizer(c, return_tensors="pt")
        rows.append(enc.model(**tok).last_hidden_state[0].mean(dim=0))
    assert torch.allclose(X[2], torch.stack(rows).mean(dim=0), atol=1e-5)


def test_clip_writes_both_files(ds, tmp_path):
    w = tm.clip(tmp_path / "clip")
    assert run_embeds(ds, "clip", w) == 0
    T = torch.load(tmp_path / "data" / "tiny_clip_text.pt", weights_only=True)
    I = torch.load(tmp_path / "data" / "tiny_clip_img.pt", weights_only=True)
    assert T.shape == I.shape == (6, 8)
    enc = load_encoder("clip", "cpu", w)
    from src.datasets import load_dataset
    caps = load_dataset("tiny", *ds).captions[0]
    with torch.inference_mode():
        single = torch.stack([enc.encode_captions([[c]])[0] for c in caps]).mean(dim=0)
    assert torch.allclose(T[0], single, atol=1e-5)


def test_vit_registry_entry_loads_a_local_checkpoint(ds, tmp_path):
    import timm
    torch.manual_seed(0)
    model = timm.create_model(REGISTRY["vit"].hub_id, pretrained=False)
    torch.save(model.state_dict(), tmp_path / "vit.pth")
    assert run_embeds(ds, "vit", tmp_path / "vit.pth") == 0
    X = torch.load(tmp_path / "data" / "tiny_vit_img.pt", weights_only=True)
    assert X.shape == (6, 768)


def test_detr_runs_one_image_a_batch(ds, tmp_path):
    w = tm.detr(tmp_path / "detr")
    enc = load_encoder("detr_resnet_50_encoder", "cpu", w)
    from src.datasets import load_dataset
    d = load_dataset("tiny", *ds)
    a = extract(enc, d, "img", tmp_path / "a.pt", batch_size=4, num_workers=0, progress=False)
    b = extract(enc, d, "img", tmp_path / "b.pt", batch_size=1, num_workers=0, progress=False)
    assert torch.equal(a, b)


# ----------------------------------------------------------------------------------------------------------
# Real offline models on real photos
# ----------------------------------------------------------------------------------------------------------

@pytest.fixture
def flickr64(flickr, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cap = json.loads((flickr / "captions.json").read_text())
    keep = sorted(i["id"] for i in cap["images"])[:64]
    sub = {"images": [i for i in cap["images"] if i["id"] in keep],
           "annotations": [a for a in cap["annotations"] if a["image_id"] in keep]}
    path = tmp_path / "flickr64.json"
    path.write_text(json.dumps(sub))
    return flickr / "images", path


def test_real_models_on_real_photos(flickr64, tmp_path):
    img, cap = flickr64
    common = ["--d", "flickr64", "--images", str(img), "--captions", str(cap), "--device", "cpu", "-q"]
    assert get_embeds.main(["--m", "efficientnet_lite0", "-b", "16", "-j", "2"] + common) == 0
    assert get_embeds.main(["--m", "minilm", "-b", "16"] + common) == 0
    I = torch.load(tmp_path / "data" / "flickr64_efficientnet_lite0_img.pt", weights_only=True)
    T = torch.load(tmp_path / "data" / "flickr64_minilm_text.pt", weights_only=True)
    assert I.shape == (64, 1280) and T.shape == (64, 384)
    true = utils.linear_CKA(I.double(), T.double()).item()
    g = torch.Generator().manual_seed(0)
    shuffled = [utils.linear_CKA(I.double(), T[torch.randperm(64, generator=g)].double()).item() for _ in range(5)]
    assert true > max(shuffled) + 0.1, (true, shuffled)

    # batch size does not change the rows
    for model, modality, full in (("efficientnet_lite0", "img", I), ("minilm", "text", T)):
        assert get_embeds.main(["--m", model, "-b", "1", "-j", "0", "--data-dir", "b1"] + common) == 0
        one = torch.load(tmp_path / "b1" / f"flickr64_{model}_{modality}.pt", weights_only=True)
        assert (one - full).abs().max() < 1e-5, model


# ----------------------------------------------------------------------------------------------------------
# Resume, skip, torchrun
# ----------------------------------------------------------------------------------------------------------

def test_interrupted_run_resumes_to_the_same_tensor(ds, tmp_path, monkeypatch):
    from src.datasets import load_dataset
    d = load_dataset("tiny", *ds)
    enc = load_encoder("dinov2", "cpu", tm.dinov2(tmp_path / "m"))
    full = extract(enc, d, "img", tmp_path / "full.pt", batch_size=2, num_workers=0, chunk_size=2, progress=False)

    calls = {"n": 0}
    real = enc.encode_images

    def dies_on_third_batch(px):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(px)

    monkeypatch.setattr(enc, "encode_images", dies_on_third_batch)
    out = tmp_path / "resumed.pt"
    with pytest.raises(KeyboardInterrupt):
        extract(enc, d, "img", out, batch_size=2, num_workers=0, chunk_size=2, progress=False)
    partial = tmp_path / ".resumed.pt.partial"
    # chunk_{k}_{digest of its inputs}.pt: chunks 0 and 1 are saved
    assert sorted(p.name[:12] for p in partial.glob("chunk_*.pt")) == ["chunk_000000", "chunk_000001"]
    calls["n"] = 10
    resumed = extract(enc, d, "img", out, batch_size=2, num_workers=0, chunk_size=2, progress=False)
    assert calls["n"] == 11  # only the missing chunk was computed
    assert torch.equal(resumed, full)


def test_existing_output_is_skipped_unless_overwrite(ds, tmp_path, capsys):
    w = tm.dinov2(tmp_path / "m")
    assert run_embeds(ds, "dinov2", w) == 0
    path = tmp_path / "data" / "tiny_dinov2_img.pt"
    stamp = path.stat().st_mtime_ns
    assert run_embeds(ds, "dinov2", w) == 0
    assert "exists, skipped" in capsys.readouterr().out and path.stat().st_mtime_ns == stamp
    assert run_embeds(ds, "dinov2", w, "--overwrite") == 0
    assert path.stat().st_mtime_ns != stamp
    assert not list((tmp_path / "data").glob(".*partial"))


def test_torchrun_two_processes_equal_one(ds, tmp_path):
    w = tm.dinov2(tmp_path / "m")
    img, cap = ds
    # --model, not --m: torchrun's own parser reads --m as an ambiguous abbreviation of its options
    args = ["get_embeds.py", "--model", "dinov2", "--dataset", "tiny", "--images", str(img), "--captions", str(cap),
            "--weights", str(w), "--device", "cpu", "-b", "2", "--chunk-size", "2", "-j", "0", "-q"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    one = subprocess.run([sys.executable] + [str(ROOT / args[0])] + args[1:] + ["--data-dir", str(tmp_path / "one")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "29613", str(ROOT / args[0])] + args[1:]
                         + ["--data-dir", str(tmp_path / "two")], env=env, capture_output=True, text=True,
                         timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    a = torch.load(tmp_path / "one" / "tiny_dinov2_img.pt", weights_only=True)
    b = torch.load(tmp_path / "two" / "tiny_dinov2_img.pt", weights_only=True)
    assert torch.equal(a, b)


# ----------------------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------------------

def test_unknown_model_lists_the_names(ds, capsys):
    assert run_embeds(ds, "dinov3") == 2
    err = capsys.readouterr().err
    assert "unknown model 'dinov3'" in err and "dinov2" in err and "efficientnet_lite0" in err
    assert "Traceback" not in err


def test_missing_locations_name_the_flag_and_variable(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COCO_ROOT", raising=False)
    assert get_embeds.main(["--m", "minilm", "--d", "coco", "-q"]) == 2
    assert "--images" in (err := capsys.readouterr().err) and "COCO_ROOT" in err
    monkeypatch.setenv("COCO_ROOT", str(tmp_path / "nowhere"))
    assert get_embeds.main(["--m", "minilm", "--d", "coco", "-q"]) == 1
    assert "nowhere/val2017 does not exist" in (err := capsys.readouterr().err) and "COCO_ROOT" in err
    img = tmp_path / "imgs"
    img.mkdir()
    assert get_embeds.main(["--m", "minilm", "--d", "x", "--images", str(img), "--captions", "no.json", "-q"]) == 1
    assert "captions file no.json does not exist (--captions)" in capsys.readouterr().err


def test_missing_image_is_named_and_skip_missing_drops_it_from_both(ds, tmp_path, capsys):
    img, cap = ds
    (img / "img_005.jpg").unlink()
    (img / "img_009.jpg").write_bytes(b"not a jpeg")
    w = tm.clip(tmp_path / "clip")
    assert run_embeds(ds, "clip", w) == 1
    err = capsys.readouterr().err
    assert "img_005.jpg" in err and "missing" in err and "--skip-missing" in err
    assert not (tmp_path / "data").exists()
    assert run_embeds(ds, "clip", w, "--skip-missing") == 0
    for modality in ("img", "text"):
        side = json.loads((tmp_path / "data" / f"tiny_clip_{modality}.json").read_text())
        assert side["image_ids"] == [2, 3, 7, 11] and side["n"] == 4
        assert set(side["dropped"]) == {"5", "9"}


def test_image_without_captions(ds, capsys):
    img, cap = ds
    data = json.loads(cap.read_text())
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 3]
    cap.write_text(json.dumps(data))
    assert run_embeds(ds, "minilm") == 1
    assert "image id 3" in (err := capsys.readouterr().err) and "no captions" in err


def test_offline_model_not_in_cache(ds, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    assert run_embeds(ds, "dinov2") == 1
    err = capsys.readouterr().err
    assert "facebook/dinov2-large" in err and "HF_HUB_OFFLINE" in err and "Traceback" not in err


def test_truncated_image_found_during_extraction_is_named(ds, tmp_path, capsys):
    img, cap = ds
    data = (img / "img_007.jpg").read_bytes()
    (img / "img_007.jpg").write_bytes(data[:len(data) // 3])  # the header parses, the pixels do not
    w = tm.dinov2(tmp_path / "m")
    assert run_embeds(ds, "dinov2", w) == 1
    err = capsys.readouterr().err
    assert "img_007.jpg" in err and "--skip-missing" in err and "Traceback" not in err
    assert not (tmp_path / "data" / "tiny_dinov2_img.pt").exists()
