"""Layer taps (MODEL@LAYER, --layers, --list-layers), random: initialisation and the pixels control, on tiny
local models. Each expected row is computed in the test by running the model's own submodules by hand."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import get_embeds
import tiny_models as tm
from src.datasets import load_dataset, open_rgb
from src.encoders import load_encoder
from src.extraction import extract_layers
from src.names import FINAL


@pytest.fixture
def ds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    img, cap = tm.tiny_dataset(tmp_path / "ds")
    # captions of different lengths, so a text batch is padded and a tap must leave the padding out
    data = json.loads(cap.read_text())
    for k, a in enumerate(data["annotations"]):
        a["caption"] = " ".join(a["caption"].split()[:2 + k % 4])
    cap.write_text(json.dumps(data))
    return img, cap


def run_embeds(ds, model, weights=None, *extra, data_dir="data"):
    img, cap = ds
    argv = ["--m", model, "--d", "tiny", "--images", str(img), "--captions", str(cap), "--device", "cpu",
            "-j", "0", "-b", "4", "-q", "--data-dir", data_dir] + (["--weights", str(weights)] if weights else [])
    return get_embeds.main(argv + list(extra))


def load(path):
    return torch.load(path, weights_only=True)


def first(out):
    return out if torch.is_tensor(out) else out[0]


def row0_pixels(enc, img_dir):
    return enc.transform(open_rgb(img_dir / "img_002.jpg"))[None]  # rows are sorted by id: row 0 is id 2


def test_image_tap_token_mean_equals_the_submodules_by_hand(ds, tmp_path):
    w = tm.dinov2(tmp_path / "m")
    assert run_embeds(ds, "dinov2@encoder.layer.0", w) == 0
    X = load(tmp_path / "data" / "tiny_dinov2@encoder.layer.0_img.pt")
    side = json.loads((tmp_path / "data" / "tiny_dinov2@encoder.layer.0_img.json").read_text())
    assert side["layer"] == "encoder.layer.0" and side["model"] == "dinov2@encoder.layer.0"
    enc = load_encoder("dinov2", "cpu", w)
    with torch.inference_mode():
        h = enc.model.embeddings(row0_pixels(enc, ds[0]))          # 1 x T x C
        h = first(enc.model.encoder.layer[0](h))
    assert h.ndim == 3
    assert torch.allclose(X[0], h.mean(dim=1)[0], atol=1e-5)


def test_image_tap_spatial_mean_equals_the_submodules_by_hand(ds, tmp_path):
    w = tm.convnext(tmp_path / "m")
    assert run_embeds(ds, "convnext@encoder.stages.0", w) == 0
    X = load(tmp_path / "data" / "tiny_convnext@encoder.stages.0_img.pt")
    enc = load_encoder("convnext", "cpu", w)
    with torch.inference_mode():
        h = first(enc.model.encoder.stages[0](enc.model.embeddings(row0_pixels(enc, ds[0]))))  # 1 x C x H x W
    assert h.ndim == 4
    # a tap is the module's output, not L2-normalised like convnext's final row
    assert torch.allclose(X[0], h.mean(dim=(2, 3))[0], atol=1e-5)


def test_text_tap_leaves_padding_out(ds, tmp_path):
    w = tm.bert_text(tmp_path / "bert")
    assert run_embeds(ds, "hf:tiny-bert", w, "--layers", "encoder.layer.0", "embeddings") == 0
    X = load(tmp_path / "data" / "tiny_hf~tiny-bert@encoder.layer.0_text.pt")
    E = load(tmp_path / "data" / "tiny_hf~tiny-bert@embeddings_text.pt")
    captions = load_dataset("tiny", *ds).captions
    enc = load_encoder("hf:tiny-bert", "cpu", w)
    for i in (0, 2):
        assert len({len(c.split()) for c in captions[i]}) > 1  # the batch is padded
        layer, emb = [], []
        with torch.inference_mode():
            for c in captions[i]:  # one caption at a time: no padding, a plain token mean
                ids = enc.tokenizer(c, return_tensors="pt")["input_ids"]
                h = enc.model.embeddings(input_ids=ids)
                emb.append(h[0].mean(dim=0))
                layer.append(first(enc.model.encoder.layer[0](h))[0].mean(dim=0))
        assert torch.allclose(E[i], torch.stack(emb).mean(dim=0), atol=1e-5)
        assert torch.allclose(X[i], torch.stack(layer).mean(dim=0), atol=1e-5)


def test_layers_in_one_pass_equal_separate_runs_and_final_is_the_plain_file(ds, tmp_path):
    w = tm.dinov2(tmp_path / "m")
    layers = ["embeddings", "encoder.layer.0"]
    assert run_embeds(ds, "dinov2", w, "--layers", *layers, "final", data_dir="together") == 0
    assert run_embeds(ds, "dinov2", w, data_dir="plain") == 0
    for layer in layers:
        assert run_embeds(ds, f"dinov2@{layer}", w, data_dir="apart") == 0
    plain = load(tmp_path / "plain" / "tiny_dinov2_img.pt")
    assert torch.equal(load(tmp_path / "together" / "tiny_dinov2_img.pt"), plain)
    assert run_embeds(ds, "dinov2@final", w, data_dir="atfinal") == 0
    assert torch.equal(load(tmp_path / "atfinal" / "tiny_dinov2_img.pt"), plain)
    for layer in layers:
        name = f"tiny_dinov2@{layer}_img.pt"
        assert torch.equal(load(tmp_path / "together" / name), load(tmp_path / "apart" / name)), layer
    assert not list((tmp_path / "together").glob(".*partial"))

    # one forward pass a batch for all three outputs
    enc = load_encoder("dinov2", "cpu", w)
    calls = []
    enc.model.register_forward_pre_hook(lambda *a: calls.append(1))
    d = load_dataset("tiny", *ds)
    rows = extract_layers(enc, d, "img", {l: tmp_path / "x" / f"{l}.pt" for l in layers + [FINAL]},
                          batch_size=4, num_workers=0, progress=False)
    assert len(calls) == 2  # 6 images, batches of 4
    assert torch.equal(rows[FINAL], load(tmp_path / "plain" / "tiny_dinov2_img.pt"))


def test_clip_vision_layer_is_written_for_images_only(ds, tmp_path):
    w = tm.clip(tmp_path / "clip")
    assert run_embeds(ds, "clip", w, "--layers", "vision_model.encoder.layers.0", "final") == 0
    names = sorted(p.name for p in (tmp_path / "data").glob("*.pt"))
    assert names == ["tiny_clip@vision_model.encoder.layers.0_img.pt", "tiny_clip_img.pt", "tiny_clip_text.pt"]


def test_bad_layer_is_exit_2_naming_a_close_path_and_writes_nothing(ds, tmp_path, capsys):
    w = tm.dinov2(tmp_path / "m")
    assert run_embeds(ds, "dinov2", w, "--layers", "final", "encoder.layer.O") == 2
    err = capsys.readouterr().err
    assert "encoder.layer.O" in err and "encoder.layer.0" in err and "Traceback" not in err
    assert not (tmp_path / "data").exists()
    assert run_embeds(ds, "dinov2@encoder.layer.9", w) == 2
    assert not (tmp_path / "data").exists()


def test_list_layers_prints_paths_and_shapes(ds, tmp_path, capsys):
    w = tm.dinov2(tmp_path / "m")
    assert run_embeds(ds, "dinov2", w, "--list-layers") == 0
    out = capsys.readouterr().out
    assert "encoder.layer.0\t(1, 17, 16)" in out  # 1 image, CLS + 4 x 4 patches, 16 channels
    assert "embeddings.patch_embeddings.projection\t(1, 16, 4, 4)" in out
    assert not (tmp_path / "data").exists()


def test_random_init_is_deterministic_reads_no_weights_and_differs(ds, tmp_path):
    w = tm.dinov2(tmp_path / "m", seed=123)  # "pretrained" weights from another seed than random:'s 0
    assert run_embeds(ds, "dinov2", w, data_dir="pre") == 0
    for p in w.glob("*.safetensors"):
        p.unlink()  # random: builds from the config alone
    assert run_embeds(ds, "random:dinov2@encoder.layer.0", w, "--layers", "final", "encoder.layer.0",
                      data_dir="r1") == 2  # the layer in the name and in --layers
    assert run_embeds(ds, "random:dinov2", w, "--layers", "final", "encoder.layer.0", data_dir="r1") == 0
    assert run_embeds(ds, "random:dinov2", w, data_dir="r2") == 0
    a = load(tmp_path / "r1" / "tiny_random~dinov2_img.pt")
    assert torch.equal(a, load(tmp_path / "r2" / "tiny_random~dinov2_img.pt"))
    assert not torch.allclose(a, load(tmp_path / "pre" / "tiny_dinov2_img.pt"), atol=1e-3)
    side = json.loads((tmp_path / "r1" / "tiny_random~dinov2@encoder.layer.0_img.json").read_text())
    assert side["init"] == "random (torch.manual_seed(0))" and side["layer"] == "encoder.layer.0"


def test_random_efficientnet_reads_no_weights_file(monkeypatch):
    import efficientnet_lite_pytorch.model as en
    monkeypatch.setattr(en, "load_pretrained_weights", lambda *a, **k: pytest.fail("weights were read"))
    a, b = load_encoder("random:efficientnet_lite0"), load_encoder("random:efficientnet_lite0@_blocks.8")
    for (k, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(x, y), k
    monkeypatch.undo()
    pre = load_encoder("efficientnet_lite0").model.state_dict()
    assert not torch.equal(pre["_conv_stem.weight"], a.model.state_dict()["_conv_stem.weight"])


def test_pixels_is_the_preprocessed_image_area_averaged(ds, tmp_path):
    assert run_embeds(ds, "pixels") == 0
    X = load(tmp_path / "data" / "tiny_pixels_img.pt")
    assert X.shape == (6, 768)
    img = Image.open(ds[0] / "img_002.jpg").convert("RGB")
    w, h = img.size
    short, long = min(w, h), max(w, h)
    size = (256, int(256 * long / short)) if w <= h else (int(256 * long / short), 256)
    img = img.resize(size, Image.BICUBIC)
    left, top = int(round((img.size[0] - 224) / 2)), int(round((img.size[1] - 224) / 2))
    x = np.asarray(img.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255  # 224 x 224 x 3
    x = (x - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    blocks = x.reshape(16, 14, 16, 14, 3).mean(axis=(1, 3))  # 16 x 16 x 3, each a 14 x 14 area mean
    expected = torch.tensor(blocks.transpose(2, 0, 1).reshape(-1), dtype=torch.float32)  # C, H, W order
    assert torch.allclose(X[0], expected, atol=1e-5)
    assert run_embeds(ds, "pixels@x") == 2 and run_embeds(ds, "random:pixels") == 2


def test_help_lists_the_new_names(capsys):
    assert get_embeds.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("efficientnet_lite1", "efficientnet_lite2", "mpnet", "use:", "pixels", "--layers",
                 "--list-layers", "random:"):
        assert name in out, name
