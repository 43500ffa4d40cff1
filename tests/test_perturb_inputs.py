"""get_embeds.py --perturb: input perturbations written to their own files, on a tiny dataset with a tiny text
model and the weight-free pixels control; read back by run.py through the side that names them."""
import json

import pytest
import torch
import torch.nn.functional as F
from test_perturb import plain_blur

import get_embeds
import run
import tiny_models as tm
from src import perturb
from src.datasets import load_dataset, open_rgb
from src.encoders import load_encoder


@pytest.fixture
def ds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tm.tiny_dataset(tmp_path / "ds")


def embeds(ds, model, *extra):
    img, cap = ds
    return get_embeds.main(["--m", model, "--d", "tiny", "--images", str(img), "--captions", str(cap), "--device",
                            "cpu", "-j", "0", "-b", "4", "-q"] + list(extra))


def load(tmp_path, name):
    path = tmp_path / "data" / f"{name}.pt"
    return torch.load(path, weights_only=True), json.loads(path.with_suffix(".json").read_text())


def test_drop_zero_rows_equal_the_unperturbed_file_and_the_sidecar_names_it(ds, tmp_path):
    st = tm.sentence_transformer(tmp_path / "st")
    assert embeds(ds, "st:tiny", "--weights", str(st)) == 0
    assert embeds(ds, "st:tiny", "--weights", str(st), "--perturb", "drop:0") == 0
    plain, _ = load(tmp_path, "tiny_st~tiny_text")
    zero, meta = load(tmp_path, "tiny_st~tiny_text~drop~0")
    assert torch.equal(plain, zero)
    assert meta["perturbation"]["kind"] == "drop" and meta["perturbation"]["level"] == 0
    assert meta["perturbation"]["seed"] == 0 and meta["image_ids"] == json.loads(
        (tmp_path / "data" / "tiny_st~tiny_text.json").read_text())["image_ids"]


def test_drop_and_shuffle_rows_are_the_perturbed_captions_encoded(ds, tmp_path):
    st = tm.sentence_transformer(tmp_path / "st")
    captions = load_dataset("tiny", *ds).captions
    enc = load_encoder("st:tiny", "cpu", st)
    for kind, f in (("drop:0.5", perturb.drop_words), ("shuffle:1", perturb.shuffle_words)):
        assert embeds(ds, "st:tiny", "--weights", str(st), "--perturb", kind, "--perturb-seed", "3") == 0
        X, meta = load(tmp_path, f"tiny_st~tiny_text~{kind.replace(':', '~')}")
        assert meta["perturbation"]["seed"] == 3
        level = float(kind.split(":")[1])
        for i, caps in enumerate(captions):
            # caption j of row i: its words under the kind's definition, drawn from the seeded stream (3, i, j)
            changed = [f(c, level, perturb.rng(3, i, j)) for j, c in enumerate(caps)]
            assert changed != caps
            want = torch.as_tensor(enc.model.encode(changed)).mean(dim=0)
            assert torch.allclose(X[i], want, atol=1e-5), (kind, i)


def test_blur_and_patches_of_the_pixels_control(ds, tmp_path):
    img_dir, _ = ds
    assert embeds(ds, "pixels") == 0
    assert embeds(ds, "pixels", "--perturb", "blur:2") == 0
    assert embeds(ds, "pixels", "--perturb", "patches:2") == 0
    assert embeds(ds, "pixels", "--perturb", "patches:1") == 0
    plain, _ = load(tmp_path, "tiny_pixels_img")
    blurred, meta = load(tmp_path, "tiny_pixels_img~blur~2")
    assert meta["perturbation"]["kind"] == "blur"
    enc = load_encoder("pixels", "cpu")
    x = enc.prepare(enc.transform(open_rgb(img_dir / "img_002.jpg"))[None])   # row 0 is image id 2
    want = F.adaptive_avg_pool2d(plain_blur(x.float(), 2.0), 16).flatten(1)[0]
    assert torch.allclose(blurred[0], want, atol=1e-5)
    assert torch.equal(load(tmp_path, "tiny_pixels_img~patches~1")[0], plain)
    # 224 / 2 = 112-pixel patches, area-averaged to 16 x 16: each 8 x 8 quarter of a row's grid is a quarter
    # of the unperturbed row's, and together they are the four quarters
    shuffled, _ = load(tmp_path, "tiny_pixels_img~patches~2")

    def quarters(row):
        g = row.view(3, 16, 16)
        return [g[:, i:i + 8, j:j + 8] for i in (0, 8) for j in (0, 8)]
    for r in range(len(plain)):
        got, orig = quarters(shuffled[r]), quarters(plain[r])
        match = [next(k for k, o in enumerate(orig) if torch.allclose(q, o, atol=1e-5)) for q in got]
        assert sorted(match) == [0, 1, 2, 3]


def test_run_reads_a_perturbed_side_from_its_file(ds, tmp_path, capsys):
    st = tm.sentence_transformer(tmp_path / "st")
    assert embeds(ds, "st:tiny", "--weights", str(st), "--perturb", "shuffle:0.5") == 0
    assert embeds(ds, "st:tiny", "--weights", str(st)) == 0      # noise:0.5 perturbs its rows
    assert embeds(ds, "pixels") == 0
    assert run.main(["--source", "st:tiny:text~shuffle:0.5", "st:tiny:text~noise:0.5", "--target", "pixels:img",
                     "--base_data", "tiny", "--query_data", "tiny", "--b", "2", "--q", "3", "--m", "relative",
                     "-q"]) == 0
    out = capsys.readouterr()
    assert run.main(["--source", "st:tiny:text~drop:0.5", "--target", "pixels:img", "--base_data", "tiny",
                     "--query_data", "tiny", "--b", "2", "--q", "3", "--m", "relative", "-q"]) == 1
    err = capsys.readouterr().err
    assert "python get_embeds.py --m st:tiny --d tiny --images DIR --captions FILE --perturb drop:0.5" in err
    assert "Traceback" not in out.err + err


def test_another_seed_needs_overwrite(ds, tmp_path, capsys):
    assert embeds(ds, "pixels", "--perturb", "patches:2") == 0
    before = load(tmp_path, "tiny_pixels_img~patches~2")[0]
    assert embeds(ds, "pixels", "--perturb", "patches:2", "--perturb-seed", "1") == 2
    assert "--perturb-seed 0" in capsys.readouterr().err
    assert torch.equal(load(tmp_path, "tiny_pixels_img~patches~2")[0], before)
    assert embeds(ds, "pixels", "--perturb", "patches:2", "--perturb-seed", "1", "--overwrite") == 0
    assert load(tmp_path, "tiny_pixels_img~patches~2")[1]["perturbation"]["seed"] == 1


@pytest.mark.parametrize("model, kind, needle", [
    ("pixels", "swap:0.5", "applied by run.py"),
    ("pixels", "drop:0.5", "perturbs captions"),
    ("pixels", "blur:-1", "sigma >= 0"),
    ("pixels", "patches:0", "k >= 1"),
    ("pixels", "smear:1", "unknown kind"),
])
def test_bad_perturb_flag_exits_2_and_writes_nothing(ds, tmp_path, capsys, model, kind, needle):
    assert embeds(ds, model, "--perturb", kind) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not (tmp_path / "data").exists()
