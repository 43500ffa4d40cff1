"""torchvision classification datasets by name (``--d tv:NAME``): Caltech-101's on-disk layout fabricated from
real photos under tmp_path and read by torchvision itself, rows in its index order, its categories and
labels in the sidecar, a classes run on it; datasets without readable class names; bad input. Nothing is
downloaded (``--download`` is never given)."""
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import get_embeds
import run
import tiny_models as tm
from conftest import CALTECH, NO_DATA
from src.datasets import open_rgb
from src.encoders import load_encoder
from src.tvdatasets import parse_tv_name

# Categories in Python's sorted order (upper case first, as torchvision sorts them), with 3-5 photos each;
# ant has greyscale photos. BACKGROUND_Google is not a class (torchvision drops it) but must be there.
KEEP = {"Faces": 3, "Leopards": 4, "accordion": 5, "ant": 4, "car_side": 3}


@pytest.fixture(scope="module")
def caltech(tmp_path_factory):
    """ROOT/caltech101/101_ObjectCategories/<category>/image_0001.jpg ..., copied from caltech101-2k and
    numbered 1..n as torchvision reads them (it counts the files of a category and opens image_{k:04d}.jpg)."""
    if not all((CALTECH / "images" / c).is_dir() for c in KEEP):
        pytest.skip(NO_DATA)
    root = tmp_path_factory.mktemp("tv")
    cats = root / "tvroot" / "caltech101" / "101_ObjectCategories"
    files, labels = [], []
    for label, (category, n) in enumerate(sorted(KEEP.items())):
        (cats / category).mkdir(parents=True)
        for k, src in enumerate(sorted((CALTECH / "images" / category).iterdir())[:n], start=1):
            dst = cats / category / f"image_{k:04d}.jpg"
            shutil.copyfile(src, dst)
            files.append(dst)
            labels.append(label)
    (cats / "BACKGROUND_Google").mkdir()
    shutil.copyfile(files[0], cats / "BACKGROUND_Google" / "image_0001.jpg")
    # class names the tiny text model's vocabulary holds: names it does not know would all read [UNK], one
    # class row for every class, which run.py refuses (a draw of identical rows)
    names = {c: w for c, w in zip(sorted(KEEP), ("dog", "cat", "car", "man", "woman"))}
    classes = root / "classes.json"
    classes.write_text(json.dumps(names))
    return {"root": root, "tvroot": root / "tvroot", "files": files, "labels": labels, "classes": classes,
            "names": [names[c] for c in sorted(KEEP)], "dino": tm.dinov2(root / "dino"),
            "st": tm.sentence_transformer(root / "st")}


def embeds(world, model, weights, *extra, data="data"):
    argv = ["--m", model, "--d", "tv:Caltech101", "--images", str(world["tvroot"]), "--device", "cpu", "-j", "0",
            "-b", "4", "-q", "--weights", str(weights), "--data-dir", str(world["root"] / data)] + list(extra)
    return get_embeds.main(argv)


def sidecar(path):
    return json.loads(Path(path).with_suffix(".json").read_text())


def test_rows_in_index_order_with_categories_and_labels(caltech):
    assert embeds(caltech, "dinov2", caltech["dino"]) == 0
    out = caltech["root"] / "data" / "tv~Caltech101_dinov2_img.pt"
    X = torch.load(out, weights_only=True)
    side = sidecar(out)
    n = len(caltech["files"])
    assert X.shape == (n, 16) and side["image_ids"] == list(range(n)) and side["labels"] == caltech["labels"]
    assert side["classes"] == ["Faces", "Leopards", "accordion", "ant", "car side"]   # "_" -> " "
    assert side["dataset"] == "tv:Caltech101" and side["task_data"] == "classes" and "folders" not in side
    assert side["images"] == str(caltech["tvroot"]) and "split" not in side            # Caltech101 has none
    enc = load_encoder("dinov2", "cpu", caltech["dino"])
    with torch.inference_mode():
        for i, f in enumerate(caltech["files"]):
            px = enc.transform(open_rgb(f))[None]
            assert torch.allclose(X[i], enc.model(pixel_values=px).last_hidden_state.mean(dim=1)[0], atol=1e-5), f


def test_classes_file_and_a_classes_run(caltech, monkeypatch):
    monkeypatch.chdir(caltech["root"])
    assert embeds(caltech, "dinov2", caltech["dino"], "--classes", str(caltech["classes"]), data="named") == 0
    assert embeds(caltech, "st:tiny", caltech["st"], "--classes", str(caltech["classes"]), data="named") == 0
    img = sidecar(caltech["root"] / "named" / "tv~Caltech101_dinov2_img.pt")
    txt = sidecar(caltech["root"] / "named" / "tv~Caltech101_st~tiny_text.pt")
    assert img["classes"] == txt["classes"] == caltech["names"] and img["classes_file"] == str(caltech["classes"])
    assert torch.load(caltech["root"] / "named" / "tv~Caltech101_st~tiny_text.pt", weights_only=True).shape == (5, 16)
    argv = ["--task", "classes", "--b", "2", "--seeds", "0", "1", "--m", "relative", "qap", "--vid_model", "dinov2",
            "--text_model", "st:tiny", "--base_data", "tv:Caltech101", "--query_data", "tv:Caltech101",
            "--data-dir", "named", "--results-dir", "res", "--seedwise-dir", "seed", "--device", "cpu", "-q"]
    assert run.main(argv) == 0
    frames = [pd.read_csv(f) for f in Path("seed").glob("*.csv")]
    assert len(frames) == 2 and all(len(f) == 2 and (f["task"] == "classes").all() for f in frames)
    assert all(f["image_acc"].between(0, 1).all() for f in frames)
    assert all(p.name.startswith("tv~Caltech101_tv~Caltech101_") for p in Path("seed").glob("*.csv"))


# ----------------------------------------------------------------------------------------------------------
# Names, splits, class names torchvision does not give
# ----------------------------------------------------------------------------------------------------------

def test_name_grammar():
    assert parse_tv_name("tv:CIFAR100").text == "tv:CIFAR100"
    assert parse_tv_name("tv:CIFAR100", "test").text == "tv:CIFAR100:test" == parse_tv_name("tv:CIFAR100:test").text
    v = parse_tv_name("tv:Caltech101-informative")
    assert (v.cls, v.split, v.variant, v.text) == ("Caltech101", None, "informative", "tv:Caltech101-informative")
    assert parse_tv_name("tv:Food101:test-spurious").text == "tv:Food101:test-spurious"
    for bad in ("tv:", "tv:A:", "tv:A-", "tv:A:b:c"):
        with pytest.raises(Exception, match="tv:NAME"):
            parse_tv_name(bad)


class _Fake:
    """A torchvision-style dataset: root, split, download; PIL images; a label list; ``classes`` or none."""
    classes = None

    def __init__(self, root, split="train", download=False):
        if not (Path(root) / "fake").is_dir():
            raise RuntimeError("Dataset not found or corrupted. You can use download=True to download it")
        if split not in ("train", "test"):
            raise ValueError(f"Unknown value '{split}' for argument split. Valid values are {{train, test}}.")
        rng = np.random.default_rng(0 if split == "train" else 1)
        self._labels = [0, 1, 1, 0, 1]
        self._images = [Image.fromarray((rng.random((20, 24, 3)) * 255).astype(np.uint8)) for _ in self._labels]

    def __len__(self):
        return len(self._labels)

    def __getitem__(self, i):
        return self._images[i], self._labels[i]


class NoNames(_Fake):
    pass


class IdNames(_Fake):
    classes = ("n01440764", "n01443537")


class GoodNames(_Fake):
    classes = ("sea_lion", "dog")


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    import torchvision.datasets as tvd
    for cls in (NoNames, IdNames, GoodNames):
        monkeypatch.setattr(tvd, cls.__name__, cls, raising=False)
        monkeypatch.setattr(tvd, "__all__", tuple(tvd.__all__) + (cls.__name__,))
    (tmp_path / "root" / "fake").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TORCHVISION_ROOT", raising=False)
    return tmp_path


def fake_embeds(name, *extra, root="root"):
    return get_embeds.main(["--m", "pixels", "--d", name, "--device", "cpu", "-j", "0", "-q"]
                           + (["--images", root] if root else []) + list(extra))


def test_split_names_the_files_and_is_recorded(fakes):
    assert fake_embeds("tv:GoodNames", "--split", "test") == 0
    side = sidecar("data/tv~GoodNames:test_pixels_img.pt".replace(":", "~"))
    assert side["dataset"] == "tv:GoodNames:test" and side["split"] == "test" and side["classes"] == ["sea lion", "dog"]
    assert side["labels"] == [0, 1, 1, 0, 1] and side["image_ids"] == [0, 1, 2, 3, 4]
    assert fake_embeds("tv:GoodNames") == 0       # the default split is recorded, the name stays plain
    assert sidecar("data/tv~GoodNames_pixels_img.pt")["split"] == "train"
    rows_test = torch.load("data/tv~GoodNames~test_pixels_img.pt", weights_only=True)
    rows_train = torch.load("data/tv~GoodNames_pixels_img.pt", weights_only=True)
    assert not torch.equal(rows_test, rows_train)


def test_root_from_the_environment(fakes, monkeypatch):
    monkeypatch.setenv("TORCHVISION_ROOT", str(fakes / "root"))
    assert fake_embeds("tv:GoodNames", root=None) == 0
    assert Path("data/tv~GoodNames_pixels_img.pt").is_file()


def test_classes_file_names_label_indices(fakes):
    classes = fakes / "c.json"
    classes.write_text(json.dumps({"0": "tench", "1": "goldfish"}))
    assert fake_embeds("tv:NoNames", "--classes", str(classes)) == 0
    assert sidecar("data/tv~NoNames_pixels_img.pt")["classes"] == ["tench", "goldfish"]
    assert fake_embeds("tv:IdNames", "--classes", str(classes)) == 1   # keys are torchvision's names here
    classes.write_text(json.dumps({"n01440764": "tench", "n01443537": "goldfish"}))
    assert fake_embeds("tv:IdNames", "--classes", str(classes)) == 0


@pytest.mark.parametrize("args, code, needles", [
    (["tv:NoNames"], 2, ["gives no class names", "--classes FILE", "label index", "'0', '1'"]),
    (["tv:IdNames"], 2, ["ids, not words", "'n01440764'", "--classes FILE"]),
    (["tv:GoodNames", "--images", "nowhere"], 1, ["nowhere does not exist", "--download", "TORCHVISION_ROOT"]),
    (["tv:GoodNames", "--split", "val"], 2, ["--split val", "train, test"]),
    (["tv:GoodNamez"], 2, ["not a torchvision.datasets class", "GoodNames"]),
    (["tv:GoodNames", "--skip-missing"], 2, ["--skip-missing"]),
    (["tv:GoodNames:test", "--split", "train"], 2, ["two splits"]),
    (["mine", "--images", "root", "--download"], 2, ["--download", "tv:NAME"]),
])
def test_bad_input(fakes, capsys, args, code, needles):
    name, *extra = args
    root = None if "--images" in extra else "root"
    assert fake_embeds(name, *extra, root=root) == code
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not Path("data").exists() and not Path("nowhere").exists()


def test_missing_caltech_says_download_and_leaves_no_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    assert get_embeds.main(["--m", "pixels", "--d", "tv:Caltech101", "--images", "empty", "-q"]) == 1
    err = capsys.readouterr().err
    assert "--download" in err and "torchvision cannot read it" in err and len(err.strip().splitlines()) == 1
    assert list((tmp_path / "empty").iterdir()) == []   # torchvision's makedirs(root/caltech101) is undone
    assert not Path("data").exists()
    assert get_embeds.main(["--m", "pixels", "--d", "tv:Caltech101", "--images", "empty", "--split", "test",
                            "-q"]) == 2
    assert "has no splits" in capsys.readouterr().err
