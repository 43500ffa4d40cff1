"""get_embeds.py with several models and datasets: one after another in process, or a job each with --launcher;
the same files either way, every check before the first job."""
import json

import pytest
import torch

import get_embeds
import tiny_models as tm


def same_files(a, b):
    """Every .pt of folder a equals b's (tensor bytes), every sidecar too but for its creation time (hidden
    files, the extraction's lock files, left out)."""
    names = sorted(p.name for p in a.iterdir() if not p.name.startswith("."))
    assert names == sorted(p.name for p in b.iterdir() if not p.name.startswith(".")) and names
    for name in names:
        if name.endswith(".pt"):
            assert torch.equal(torch.load(a / name, weights_only=True), torch.load(b / name, weights_only=True)), name
        else:
            sa, sb = json.loads((a / name).read_text()), json.loads((b / name).read_text())
            sa.pop("created"), sb.pop("created")
            assert sa == sb, name


@pytest.fixture
def flickr24(flickr, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cap = json.loads((flickr / "captions.json").read_text())
    keep = set(sorted(i["id"] for i in cap["images"])[:24])
    path = tmp_path / "flickr24.json"
    path.write_text(json.dumps({"images": [i for i in cap["images"] if i["id"] in keep],
                                "annotations": [a for a in cap["annotations"] if a["image_id"] in keep]}))
    return ["--d", "flickr24", "--images", str(flickr / "images"), "--captions", str(path), "--device", "cpu",
            "-b", "8", "-j", "0", "-q"]


def test_two_models_as_local_jobs_write_what_two_in_process_runs_write(flickr24, tmp_path, capsys):
    for model in ("minilm", "efficientnet_lite0"):
        assert get_embeds.main(["--m", model, "--data-dir", "one"] + flickr24) == 0
    capsys.readouterr()
    sweep = ["--m", "minilm", "efficientnet_lite0", "--data-dir", "jobs_out"] + flickr24 + ["--launcher", "local"]
    assert get_embeds.main(sweep) == 0
    out = capsys.readouterr().out
    assert "running 2 job(s) on this machine" in out
    assert "wrote jobs_out/flickr24_minilm_text.pt (24 x 384)" in out
    assert "wrote jobs_out/flickr24_efficientnet_lite0_img.pt (24 x 1280)" in out
    same_files(tmp_path / "one", tmp_path / "jobs_out")
    (folder,) = (tmp_path / "jobs").iterdir()
    assert len(list(folder.glob("*_submitted.pkl"))) == 2  # one job per model

    assert get_embeds.main(sweep) == 0  # again: every file exists, nothing is submitted
    out = capsys.readouterr().out
    assert "jobs_out/flickr24_minilm_text.pt exists, skipped" in out and "nothing to run" in out
    assert len(list((tmp_path / "jobs").iterdir())) == 1


@pytest.fixture
def two_datasets(tmp_path, monkeypatch):
    """coco and nocaps laid out as COCO_ROOT and NOCAPS_ROOT expect them, from generated images."""
    monkeypatch.chdir(tmp_path)
    for name, var, images, captions in (("coco", "COCO_ROOT", "val2017", "annotations/captions_val2017.json"),
                                        ("nocaps", "NOCAPS_ROOT", "validation", "nocaps_val_4500_captions.json")):
        img, cap = tm.tiny_dataset(tmp_path / f"src_{name}")
        root = tmp_path / name
        (root / captions).parent.mkdir(parents=True, exist_ok=True)
        img.rename(root / images)
        cap.rename(root / captions)
        monkeypatch.setenv(var, str(root))
    return tmp_path


def test_dry_run_is_one_job_per_model_and_dataset(two_datasets, capsys):
    argv = ["--m", "pixels", "minilm", "--d", "coco", "nocaps", "--launcher", "slurm", "--dry-run", "-q"]
    assert get_embeds.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["job 1/4: pixels on coco; writes data/coco_pixels_img.pt",
                     "job 2/4: minilm on coco; writes data/coco_minilm_text.pt",
                     "job 3/4: pixels on nocaps; writes data/nocaps_pixels_img.pt",
                     "job 4/4: minilm on nocaps; writes data/nocaps_minilm_text.pt",
                     "dry run: 4 job(s) with --launcher slurm; nothing submitted"]
    assert not (two_datasets / "jobs").exists() and not (two_datasets / "data").exists()


def test_several_models_and_datasets_in_process_and_as_debug_jobs(two_datasets, capsys):
    argv = ["--m", "pixels", "random:efficientnet_lite0", "--d", "coco", "nocaps", "--device", "cpu", "-j", "0",
            "-q"]
    assert get_embeds.main(argv + ["--data-dir", "one"]) == 0  # one after another, in this process
    assert get_embeds.main(argv + ["--data-dir", "two", "--launcher", "debug"]) == 0  # a job each
    same_files(two_datasets / "one", two_datasets / "two")
    assert sorted(p.name for p in (two_datasets / "one").glob("*.pt")) == [
        "coco_pixels_img.pt", "coco_random~efficientnet_lite0_img.pt", "nocaps_pixels_img.pt",
        "nocaps_random~efficientnet_lite0_img.pt"]


@pytest.mark.parametrize("extra,code,message", [
    (["--m", "pixels", "nosuch"], 2, "unknown model 'nosuch'"),
    (["--m", "pixels", "random:use"], 2, "random:use: the use family has no random initialisation"),
    (["--m", "pixels", "minilm", "--weights", "w"], 2, "--weights holds one model's weights"),
    (["--m", "pixels", "--list-layers"], 2, "--list-layers prints here: drop --launcher"),
    (["--m", "pixels", "--d", "a", "b"], 2, "give one --d per command"),
    (["--m", "pixels", "--captions", "nowhere.json"], 1, "captions file nowhere.json does not exist"),
])
def test_errors_come_before_any_job(tmp_path, monkeypatch, capsys, extra, code, message):
    monkeypatch.chdir(tmp_path)
    img, cap = tm.tiny_dataset(tmp_path / "ds")
    argv = ["--d", "tiny", "--images", str(img), "--captions", str(cap)] + extra + ["--launcher", "local", "-q"]
    assert get_embeds.main(argv) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "jobs").exists() and not (tmp_path / "data").exists()
