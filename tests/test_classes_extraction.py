"""get_embeds.py on classification datasets (ImageFolder trees): row order and labels, one text row per
class (the mean of the normalised prompt embeddings), class names and templates, bad input, and one run of
the real offline models on real photos. Nothing is downloaded."""
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import get_embeds
import tiny_models as tm
from conftest import CALTECH, NO_DATA
from src.datasets import DEFAULT_TEMPLATES, CaptionsDataset, ClassesDataset, load_dataset, open_rgb
from src.encoders import load_encoder
from src.extraction import extract_class_texts

# The tree the fixture writes, as a plain listing: folders in Python string order (uppercase first),
# files sorted within a folder; notes.txt, a hidden file and the root's README are not images.
FILES = {
    "Zebra": ["b.png", "a.jpg"],
    "sea_lion": ["img_10.jpeg", "IMG_2.JPG", "img_1.png", "notes.txt", ".hidden.jpg"],
    "dog": ["x.webp", "w.bmp"],
}
EXPECTED_IDS = ["Zebra/a.jpg", "Zebra/b.png",
                "dog/w.bmp", "dog/x.webp",
                "sea_lion/IMG_2.JPG", "sea_lion/img_1.png", "sea_lion/img_10.jpeg"]
EXPECTED_LABELS = [0, 0, 1, 1, 2, 2, 2]
EXPECTED_FOLDERS = ["Zebra", "dog", "sea_lion"]


def _write_image(path, rng):
    arr = (rng.random((int(rng.integers(24, 48)), int(rng.integers(24, 48)), 3)) * 255).astype(np.uint8)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WEBP"}[path.suffix.lower()]
    Image.fromarray(arr).save(path, format=fmt)


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """A tiny ImageFolder root in tmp_path (the working directory, so data/ lands there)."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    root = tmp_path / "root"
    for folder, files in FILES.items():
        (root / folder).mkdir(parents=True)
        for f in files:
            if f.endswith(".txt"):
                (root / folder / f).write_text("not an image")
            else:
                _write_image(root / folder / f, rng)
    (root / "README.txt").write_text("a file beside the class folders")
    return root


@pytest.fixture(scope="module")
def tiny_st(tmp_path_factory):
    return tm.sentence_transformer(tmp_path_factory.mktemp("st") / "st")


@pytest.fixture(scope="module")
def tiny_dino(tmp_path_factory):
    return tm.dinov2(tmp_path_factory.mktemp("dino") / "dino")


def run(root, model, weights=None, *extra):
    argv = ["--m", model, "--d", "tinycls", "--images", str(root), "--device", "cpu", "-j", "0", "-b", "3",
            "-q"] + (["--weights", str(weights)] if weights else []) + list(extra)
    return get_embeds.main(argv)


def sidecar(name):
    return json.loads(Path("data", name).read_text())


def plain_class_rows(st_model, names, templates):
    """Each prompt's embedding alone, L2-normalised, averaged over the templates: C x D."""
    rows = []
    for name in names:
        per_prompt = [F.normalize(torch.as_tensor(st_model.encode(t.replace("{}", name))), dim=-1)
                      for t in templates]
        rows.append(torch.stack(per_prompt).mean(dim=0))
    return torch.stack(rows)


# ----------------------------------------------------------------------------------------------------------
# Rows, labels, text rows, names, templates
# ----------------------------------------------------------------------------------------------------------

def test_dataset_rows_labels_and_default_names(tree):
    d = load_dataset("tinycls", str(tree))
    assert isinstance(d, ClassesDataset)
    assert d.ids == EXPECTED_IDS and d.labels == EXPECTED_LABELS and d.folders == EXPECTED_FOLDERS
    assert d.paths == [tree / i for i in EXPECTED_IDS] and len(d) == 7 and d.image_dir == tree
    assert d.class_names == ["Zebra", "dog", "sea lion"]  # "_" -> " " without --classes
    assert d.templates == list(DEFAULT_TEMPLATES) and len(DEFAULT_TEMPLATES) == 7
    assert all("{}" in t for t in DEFAULT_TEMPLATES)
    assert d.prompts(2)[0] == "itap of a sea lion."


def test_captions_flag_still_selects_a_captions_dataset(tmp_path, monkeypatch, capsys):
    img, cap = tm.tiny_dataset(tmp_path / "ds")
    assert isinstance(load_dataset("tiny", img, cap), CaptionsDataset)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COCO_ROOT", raising=False)
    assert get_embeds.main(["--m", "minilm", "--d", "coco", "-q"]) == 2  # no locations: as before
    assert "COCO_ROOT" in capsys.readouterr().err


def test_image_rows_labels_and_sidecar(tree, tiny_dino):
    assert run(tree, "dinov2", tiny_dino) == 0
    X = torch.load("data/tinycls_dinov2_img.pt", weights_only=True)
    side = sidecar("tinycls_dinov2_img.json")
    assert X.shape == (7, 16) and side["n"] == 7
    assert side["task_data"] == "classes" and side["image_ids"] == EXPECTED_IDS
    assert side["labels"] == EXPECTED_LABELS and side["folders"] == EXPECTED_FOLDERS
    assert side["classes"] == ["Zebra", "dog", "sea lion"] and side.get("captions") is None
    enc = load_encoder("dinov2", "cpu", tiny_dino)
    with torch.inference_mode():
        for i, rel in enumerate(EXPECTED_IDS):
            px = enc.transform(open_rgb(tree / rel))[None]
            assert torch.allclose(X[i], enc.model(pixel_values=px).last_hidden_state.mean(dim=1)[0], atol=1e-5), rel


def test_text_rows_are_the_template_mean_of_normalised_prompts(tree, tiny_st, tmp_path):
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps({"sea_lion": "sea lion", "dog": "dog", "Zebra": "zebra"}))
    templates = tmp_path / "templates.txt"
    templates.write_text("a photo of a {}.\n\n  the {} runs on the grass  \na red {}\n")
    assert run(tree, "st:tiny", tiny_st, "--classes", str(classes), "--templates", str(templates)) == 0
    T = torch.load("data/tinycls_st~tiny_text.pt", weights_only=True)
    side = sidecar("tinycls_st~tiny_text.json")
    expected_templates = ["a photo of a {}.", "the {} runs on the grass", "a red {}"]
    assert side["templates"] == expected_templates and side.get("image_ids") is None
    assert side["classes"] == ["zebra", "dog", "sea lion"] and side["folders"] == EXPECTED_FOLDERS
    assert side["task_data"] == "classes" and "labels" not in side
    assert side["classes_file"] == str(classes) and side["templates_file"] == str(templates)
    enc = load_encoder("st:tiny", "cpu", tiny_st)
    assert T.shape == (3, 16)
    assert torch.allclose(T, plain_class_rows(enc.model, ["zebra", "dog", "sea lion"], expected_templates),
                          atol=1e-5)


def test_json_templates_and_default_templates(tree, tiny_st, tmp_path):
    enc = load_encoder("st:tiny", "cpu", tiny_st)
    d = load_dataset("tinycls", tree)
    rows = extract_class_texts(enc, d, batch_size=4, progress=False)  # batches cross class boundaries
    assert torch.allclose(rows, plain_class_rows(enc.model, d.class_names, DEFAULT_TEMPLATES), atol=1e-5)
    tj = tmp_path / "t.json"
    tj.write_text(json.dumps(["a {} on the grass", "{}"]))
    d = load_dataset("tinycls", tree, templates=str(tj))
    assert d.templates == ["a {} on the grass", "{}"]
    rows = extract_class_texts(enc, d, batch_size=32, progress=False)
    assert torch.allclose(rows, plain_class_rows(enc.model, d.class_names, d.templates), atol=1e-5)


def test_class_rows_are_batched_prompt_ensembles(tree):
    d = load_dataset("tinycls", tree)

    def embed(texts):  # any deterministic text -> vector function
        return torch.tensor([[len(t), t.count("a") + 1.0, sum(map(ord, t)) % 7 + 1.0] for t in texts])

    calls = []
    encoder = SimpleNamespace(spec=SimpleNamespace(name="fake"), device=torch.device("cpu"),
                              encode_texts=lambda texts: calls.append(len(texts)) or embed(texts))
    a = extract_class_texts(encoder, d, batch_size=5, progress=False)
    assert calls == [5, 5, 5, 5, 1]
    expected = torch.stack([F.normalize(embed(d.prompts(c)), dim=-1).mean(dim=0) for c in range(3)])
    assert torch.allclose(a, expected)


def test_skip_missing_drops_undecodable_images(tree, tiny_dino, capsys):
    (tree / "dog" / "w.bmp").write_bytes(b"not a bitmap")
    assert run(tree, "dinov2", tiny_dino) == 1
    assert "dog/w.bmp" in capsys.readouterr().err
    assert not Path("data").exists()
    assert run(tree, "dinov2", tiny_dino, "--skip-missing") == 0
    side = sidecar("tinycls_dinov2_img.json")
    assert side["image_ids"] == [i for i in EXPECTED_IDS if i != "dog/w.bmp"]
    assert side["labels"] == [0, 0, 1, 2, 2, 2] and list(side["dropped"]) == ["dog/w.bmp"]


# ----------------------------------------------------------------------------------------------------------
# Bad input: one message naming the file or class, the right exit code, nothing written
# ----------------------------------------------------------------------------------------------------------

def _bad_classes(tree, tmp):
    p = tmp / "classes.json"
    p.write_text(json.dumps({"Zebra": "zebra", "dog": "dog", "cat": "cat", "lion": "lion"}))
    return ["--classes", str(p)], ["classes.json", "'sea_lion'", "'cat'", "'lion'", "no entry", "no folder"]


def _invalid_json(tree, tmp):
    p = tmp / "classes.json"
    p.write_text("{not json")
    return ["--classes", str(p)], [str(p), "cannot be read"]


def _missing_classes(tree, tmp):
    return ["--classes", str(tmp / "nowhere.json")], [str(tmp / "nowhere.json")]


def _classes_not_a_mapping(tree, tmp):
    p = tmp / "classes.json"
    p.write_text(json.dumps(["zebra", "dog", "sea lion"]))
    return ["--classes", str(p)], [str(p), "json object"]


def _template_without_braces(tree, tmp):
    p = tmp / "templates.txt"
    p.write_text("a photo of a {}.\na photo of a thing.\n")
    return ["--templates", str(p)], [str(p), "'a photo of a thing.'", "{}"]


def _unreadable_templates(tree, tmp):
    p = tmp / "templates.json"
    p.write_text("[\"a {}\",")
    return ["--templates", str(p)], [str(p), "cannot be read"]


def _missing_templates(tree, tmp):
    return ["--templates", str(tmp / "none.txt")], [str(tmp / "none.txt")]


def _empty_class_folder(tree, tmp):
    (tree / "empty").mkdir()
    (tree / "empty" / "notes.txt").write_text("no images here")
    return [], [str(tree / "empty"), "no images"]


def _undecodable_image(tree, tmp):
    (tree / "Zebra" / "a.jpg").write_bytes(b"not a jpeg")
    return [], [str(tree / "Zebra" / "a.jpg"), "--skip-missing"]


CASES = {"classes_mismatch": _bad_classes, "classes_invalid_json": _invalid_json,
         "classes_missing": _missing_classes, "classes_not_a_mapping": _classes_not_a_mapping,
         "template_without_braces": _template_without_braces, "templates_unreadable": _unreadable_templates,
         "templates_missing": _missing_templates, "empty_class_folder": _empty_class_folder,
         "undecodable_image": _undecodable_image}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_named_and_nothing_is_written(tree, tmp_path, capsys, case):
    extra, needles = CASES[case](tree, tmp_path)
    # minilm: a real model, but the dataset is read (and refused) before any model is loaded
    assert get_embeds.main(["--m", "minilm", "--d", "tinycls", "--images", str(tree), "--device", "cpu",
                            "-q"] + extra) == 1
    err = capsys.readouterr().err
    for needle in needles:
        assert needle in err, (needle, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not Path("data").exists()


def test_root_without_class_folders(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    flat = tmp_path / "flat"
    flat.mkdir()
    _write_image(flat / "a.jpg", np.random.default_rng(0))
    assert get_embeds.main(["--m", "minilm", "--d", "x", "--images", str(flat), "-q"]) == 1
    err = capsys.readouterr().err
    assert str(flat) in err and "--captions" in err and "ImageFolder" in err and "Traceback" not in err
    assert not Path("data").exists()


@pytest.mark.parametrize("flag", [("--templates", "t.txt"), ("--descriptions", "d.json")])
def test_classes_flags_with_captions_are_a_usage_error(tmp_path, monkeypatch, capsys, flag):
    monkeypatch.chdir(tmp_path)
    img, cap = tm.tiny_dataset(tmp_path / "ds")
    assert get_embeds.main(["--m", "minilm", "--d", "x", "--images", str(img), "--captions", str(cap),
                            *flag, "-q"]) == 2
    assert flag[0] in capsys.readouterr().err
    assert not Path("data").exists()


# ----------------------------------------------------------------------------------------------------------
# Real offline models on real photos
# ----------------------------------------------------------------------------------------------------------

@pytest.fixture
def caltech6(tmp_path, monkeypatch):
    """2 classes x 3 photos of caltech101-2k, copied into tmp_path (never into the repository)."""
    keep = ["Faces", "accordion"]
    if not all((CALTECH / "images" / k).is_dir() for k in keep) or not (CALTECH / "classes.json").is_file():
        pytest.skip(NO_DATA)
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "caltech6"
    for k in keep:
        (root / k).mkdir(parents=True)
        for f in sorted((CALTECH / "images" / k).iterdir())[:3]:
            shutil.copy(f, root / k / f.name)
    names = json.loads((CALTECH / "classes.json").read_text())
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps({k: names[k] for k in keep}))
    return root, classes, [names[k] for k in keep]


def test_real_models_on_real_photos(caltech6):
    root, classes, names = caltech6
    common = ["--d", "caltech6", "--images", str(root), "--classes", str(classes), "--device", "cpu", "-q"]
    assert get_embeds.main(["--m", "efficientnet_lite0", "-b", "4", "-j", "0"] + common) == 0
    assert get_embeds.main(["--m", "minilm", "-b", "4"] + common) == 0
    I = torch.load("data/caltech6_efficientnet_lite0_img.pt", weights_only=True)
    T = torch.load("data/caltech6_minilm_text.pt", weights_only=True)
    assert I.shape == (6, 1280) and T.shape == (2, 384)
    side_i, side_t = sidecar("caltech6_efficientnet_lite0_img.json"), sidecar("caltech6_minilm_text.json")
    assert side_i["labels"] == [0, 0, 0, 1, 1, 1] and side_i["classes"] == side_t["classes"] == names
    assert [i.split("/")[0] for i in side_i["image_ids"]] == ["Faces"] * 3 + ["accordion"] * 3
    assert side_t["templates"] == list(DEFAULT_TEMPLATES)

    # the labels follow the photos: each photo is nearer its own class's other photos (leave-one-out)
    X, y = F.normalize(I, dim=1), torch.tensor(side_i["labels"])
    for i in range(6):
        rest = torch.arange(6) != i
        protos = torch.stack([X[rest & (y == c)].mean(dim=0) for c in (0, 1)])
        assert (protos @ X[i]).argmax().item() == y[i].item(), side_i["image_ids"][i]

    enc = load_encoder("minilm", "cpu")
    assert torch.allclose(T, plain_class_rows(enc.model, names, DEFAULT_TEMPLATES), atol=1e-5)


def test_help_names_the_classification_flags(capsys):
    assert get_embeds.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--classes" in out and "--templates" in out and "ImageFolder" in out


def test_two_folders_with_one_name_are_allowed_with_a_warning(tree, tmp_path, caplog):
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps({"Zebra": "crane", "dog": "crane", "sea_lion": "sea lion"}))
    d = load_dataset("tinycls", tree, classes=str(classes))
    assert d.class_names == ["crane", "crane", "sea lion"]
    assert "'crane': Zebra, dog" in caplog.text
