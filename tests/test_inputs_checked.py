"""Issue 29: values checked where they are made (descriptions, captions ids, NaN rows, sides that disagree,
dtypes)."""
import json
from pathlib import Path

import pytest
import torch

from src import sides
from src.datasets import load_dataset, read_descriptions
from src.embed import EmbedOptions, check_existing, check_finite
from src.errors import DataError, UsageError
from src.experiment import one_dtype
from src.files import save_embeddings, side_file
from src.tasks import Draw


def test_a_repeated_key_in_descriptions_is_refused(tmp_path):
    """Issue 29 #8."""
    f = tmp_path / "d.json"
    f.write_text('{"cat": ["a cat."], "dog": ["a dog."], "cat": ["a small cat."]}')
    with pytest.raises(DataError, match="'cat' more than once"):
        read_descriptions(f, ["cat", "dog"])


def test_image_ids_mixing_numbers_and_strings(tmp_path):
    import tiny_models as tm
    img, cap = tm.tiny_dataset(tmp_path / "ds", n=4)
    data = json.loads(cap.read_text())
    orig, data["images"][0]["id"] = data["images"][0]["id"], "first"
    for a in data["annotations"]:
        if a["image_id"] == orig:
            a["image_id"] = "first"
    cap.write_text(json.dumps(data))
    ds = load_dataset("tiny", img, cap)
    assert ds.ids[-1] == "first" and ds.ids[:-1] == sorted(ds.ids[:-1])


@pytest.mark.parametrize("precision, advice", [("fp32", "check the checkpoint"), ("bf16", "--precision fp32")])
def test_nan_rows_are_refused_before_writing_naming_model_and_weights(tmp_path, precision, advice):
    """Issue 29 #7: no half-precision advice for an fp32 run; --weights named."""
    rows = torch.randn(5, 3)
    rows[2, 1] = float("nan")
    out = tmp_path / "x.pt"
    opts = EmbedOptions(dataset="d", precision=precision, weights="ckpt.pt")
    with pytest.raises(DataError, match=f"m with --weights ckpt.pt gave NaN or inf in 1 of 5 rows.*{advice}") as e:
        check_finite(rows, out, "m", opts)
    assert (precision == "fp32") == ("half" not in str(e.value)) and not out.exists()


def _file(tmp_path, **fields):
    path = side_file(tmp_path, "d", "efficientnet_lite0:img")
    save_embeddings(torch.randn(3, 2), path, {"model": "efficientnet_lite0", "modality": "img", "image_ids": [1, 2, 3],
                                              **fields})
    return path


@pytest.mark.parametrize("made, asked, needle", [
    ({"weights_flag": "/a.pt"}, {"weights": "/b.pt"}, "--weights /a.pt"),
    ({"weights_flag": ""}, {"weights": "/b.pt"}, "--weights .none"),
    ({"precision": "bf16"}, {"precision": "fp32"}, "--precision bf16"),
    ({"fold_bn": True}, {"fold_bn": False}, "BatchNorm folded"),
    ({"perturbation": {"kind": "blur", "level": 1, "seed": 3}}, {"perturb": "blur:1", "perturb_seed": 0},
     "--perturb-seed 3"),
])
def test_an_existing_file_of_other_options_is_not_skipped(tmp_path, made, asked, needle):
    """Issue 29 #6: every option that changes rows is compared before "exists, skipped"."""
    path = _file(tmp_path, **made)
    with pytest.raises(UsageError, match=f"exists, made with {needle}.*--overwrite"):
        check_existing(path, EmbedOptions(dataset="d", **asked))


def test_an_existing_file_of_the_same_options_is_skipped(tmp_path):
    path = _file(tmp_path, weights_flag="", precision="fp32", fold_bn=True)
    check_existing(path, EmbedOptions(dataset="d"))


@pytest.mark.parametrize("field, a, b", [("images", "imgs", "other_imgs"), ("captions", "c.json", "c2.json"),
                                         ("files", ["1.jpg", "2.jpg"], ["1.jpg", "9.jpg"])])
def test_sides_from_other_photos_are_refused_naming_both(tmp_path, field, a, b):
    """Issue 29 #5: a text side and an image side of one dataset name made from other files."""
    for model, mod, v in (("m1", "text", a), ("m2", "img", b)):
        save_embeddings(torch.randn(2, 2), side_file(tmp_path, "d", f"{model}:{mod}"),
                        {"model": model, "image_ids": [1, 2], field: v})
    x, y = sides.load_side(tmp_path, "d", "m1:text"), sides.load_side(tmp_path, "d", "m2:img")
    with pytest.raises(DataError, match=f"{x.path}.*{y.path} were made from different"):
        sides.pair_rows(x, y)


def test_float32_and_float64_sides_are_made_one_dtype():
    t32, t64 = torch.randn(4, 3), torch.randn(4, 3, dtype=torch.float64)
    d = one_dtype(Draw(sb=t32, tb=t64, sq=t32, tq=t64))
    assert {d.sb.dtype, d.tb.dtype, d.sq.dtype, d.tq.dtype} == {torch.float64}
    assert torch.equal(d.sb, t32.double())


def test_probe_on_one_class_is_one_message(tmp_path, monkeypatch, capsys):
    import run
    monkeypatch.chdir(tmp_path)
    save_embeddings(torch.randn(10, 3), tmp_path / "data" / "one_vis_img.pt",
                    {"model": "vis", "classes": ["a"], "labels": [0] * 10, "image_ids": [f"a/{i}" for i in range(10)]})
    assert run.main(["--task", "probe", "--target", "vis:img", "--base_data", "one", "-q"]) == 1
    err = capsys.readouterr().err
    assert "one class label" in err and "Traceback" not in err


def test_tv_fakedata_is_one_message(tmp_path, monkeypatch, capsys):
    import get_embeds
    monkeypatch.chdir(tmp_path)
    assert get_embeds.main(["--m", "pixels", "--d", "tv:FakeData", "--images", str(tmp_path), "-q"]) == 2
    err = capsys.readouterr().err
    assert "takes no root folder" in err and "Traceback" not in err


@pytest.mark.parametrize("dataset, model", [("x" * 300, "pixels"), ("y" * 110, "pixels"),
                                            ("d", "openclip:ViT-B-32/" + "c" * 120 + ".pt")])
def test_long_names_are_refused_by_the_path_builder_with_a_short_name_hint(tmp_path, monkeypatch, capsys,
                                                                            dataset, model):
    import get_embeds
    monkeypatch.chdir(tmp_path)
    if "/" in model:
        Path(model.split("/", 1)[1]).write_bytes(b"")   # the checkpoint exists: its name is what is too long
    assert get_embeds.main(["--m", model, "--d", dataset, "--images", str(tmp_path), "-q"]) == 2
    err = capsys.readouterr().err
    assert "use a shorter --d" in err and "Traceback" not in err and not (tmp_path / "data").exists()


@pytest.mark.parametrize("error, needle", [(AssertionError("text pos_embed width changed!"), "another architecture"),
                                           (__import__("pickle").UnpicklingError("Weights only load failed"),
                                            "pickled Python objects")])
def test_open_clip_checkpoint_errors_are_one_message(error, needle):
    from types import SimpleNamespace

    from src.openclip import _load_errors
    spec = SimpleNamespace(name="openclip:ViT-S-32-alt/x.pt", options={"arch": "ViT-S-32-alt"})
    with pytest.raises(DataError, match=f"checkpoint x.pt cannot be loaded into ViT-S-32-alt.*{needle}"):
        with _load_errors(spec, "checkpoint x.pt", local=True):
            raise error
