"""Messages of issue 29's last cases: --list-layers with --m alone, rows skipped by pairing said once and why,
torchvision datasets that are not classification ones refused before any download, a failed download told
what to do (never to pass --download again), a class-text variant's remake command. Each message is one line,
no traceback, nothing written. Nothing is downloaded (the download functions are replaced)."""
import json
import logging
import tarfile
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision.datasets as tvd

import get_embeds
import run
import tiny_models as tm
from src.encoders import load_encoder
from src.files import Sidecar, save_embeddings
from src.hints import get_embeds_command
from src.names import parse_side
from src.sides import LoadedSide, pair_rows
from src.tvdatasets import NOT_CLASSES


def one_line(capsys):
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


# ---- --list-layers ------------------------------------------------------------------------------------------

def test_list_layers_needs_only_the_model(tmp_path, monkeypatch, capsys):
    weights = tm.dinov2(tmp_path / "dino")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COCO_ROOT", raising=False)
    assert get_embeds.main(["--m", "dinov2", "--weights", str(weights), "--list-layers", "--device", "cpu",
                            "-q"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("# dinov2 img:") and "blank 224 x 224 image" in out[0]
    listed = [line.split("\t")[0] for line in out[1:]]
    root = load_encoder("dinov2", "cpu", weights).tap_root()
    assert listed == [n for n, _ in root.named_modules() if n]   # every module path, in the model's order
    shapes = dict(line.split("\t") for line in out[1:])
    assert shapes["embeddings"].startswith("(1, ")                # a batch of one blank image ran
    assert not Path("data").exists()


def test_list_layers_with_a_dataset_flag_still_reads_the_dataset(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COCO_ROOT", raising=False)
    # --captions locates a dataset: the default coco is asked for, as before
    assert get_embeds.main(["--m", "pixels", "--list-layers", "--captions", "nowhere.json", "-q"]) in (1, 2)
    assert "coco" in one_line(capsys)


def test_list_layers_unknown_model_is_refused_before_loading(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert get_embeds.main(["--m", "no_such_model", "--list-layers", "-q"]) == 2
    assert "no_such_model" in one_line(capsys)


# ---- rows skipped by pairing ----------------------------------------------------------------------------------

def loaded(tmp_path, name, side, ids, dropped=None):
    path = tmp_path / f"{name}.pt"
    rows = torch.randn(len(ids), 4, generator=torch.Generator().manual_seed(len(name)))
    sidecar = Sidecar(model=side.split(":")[0], modality=side.split(":")[1].split("~")[0], dataset="d",
                      image_ids=ids, dropped=dropped or {})
    save_embeddings(rows, path, sidecar)
    return LoadedSide(parse_side(side), "d", path, rows, sidecar, fix="make it with: python get_embeds.py ...")


def test_rows_skipped_by_pairing_are_said_once_with_why(tmp_path, caplog):
    full = loaded(tmp_path, "txt", "minilm:text", [1, 2, 3, 4, 5])
    full2 = loaded(tmp_path, "txt2", "minilm:text~drop:0.5", [1, 2, 3, 4, 5])
    blurred = loaded(tmp_path, "img_blur", "lite0:img~blur:1", [1, 2, 4, 5], dropped={"3": "c.jpg: missing"})
    with caplog.at_level(logging.INFO, logger="src.sides"):
        ra, rb, ia, ib = pair_rows(blurred, full)
        pair_rows(blurred, full2)   # the same file lacking the same id: not said again
        pair_rows(full2, full)      # same ids: nothing to say
    said = [r for r in caplog.records if r.name == "src.sides" and r.levelno == logging.WARNING]
    assert len(said) == 1
    text = said[0].getMessage()
    assert "img_blur.pt lacks 1 image id(s)" in text and "--skip-missing" in text and "c.jpg: missing" in text
    assert "those 1 rows of minilm:text are skipped" in text and "(4 here)" in text
    # the rows are the shared ids' rows in id order: the plain definition
    assert ia.tolist() == [0, 1, 2, 3] and ib.tolist() == [0, 1, 3, 4]
    assert torch.equal(rb, full.rows[[0, 1, 3, 4]])


def test_ids_a_file_never_had_are_the_ordinary_case(tmp_path, caplog):
    """A language whose captions cover fewer images: one info line, no warning and no advice to re-make."""
    a = loaded(tmp_path, "other", "minilm:text", [1, 2, 9])
    b = loaded(tmp_path, "img", "lite0:img", [1, 2, 3])
    with caplog.at_level(logging.INFO, logger="src.sides"):
        pair_rows(a, b)
    said = [r for r in caplog.records if r.name == "src.sides"]
    assert [r.levelno for r in said] == [logging.INFO]
    assert "2 shared images" in said[0].getMessage()


# ---- torchvision datasets that are not classification ones ---------------------------------------------------

def test_every_refused_name_is_a_torchvision_class():
    names = set(tvd.__all__)
    assert set(NOT_CLASSES) <= names, set(NOT_CLASSES) - names


@pytest.mark.parametrize("name", ["tv:VOCSegmentation", "tv:Cityscapes", "tv:SBDataset", "tv:VOCDetection",
                                  "tv:CocoCaptions", "tv:Flickr8k", "tv:Kinetics", "tv:CelebA"])
def test_not_a_classification_dataset_is_refused_before_download(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)

    def no_network(*a, **k):
        raise AssertionError("nothing may be downloaded")
    monkeypatch.setattr("torchvision.datasets.utils.download_url", no_network)
    monkeypatch.setattr("torchvision.datasets.utils.download_and_extract_archive", no_network)
    assert get_embeds.main(["--m", "pixels", "--d", name, "--images", "root", "--download", "-q"]) == 2
    err = one_line(capsys)
    assert f"{name} is not supported" in err and "tv:CIFAR100" in err and "--images ROOT" in err
    assert "pass --download" not in err
    assert not Path("root").exists() and not Path("data").exists()


def test_image_folder_through_tv_is_pointed_at_the_plain_flag(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert get_embeds.main(["--m", "pixels", "--d", "tv:ImageFolder", "--images", "root", "-q"]) == 2
    assert "needs no tv: prefix" in one_line(capsys)


def test_emnist_asks_for_its_split(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "root").mkdir()
    assert get_embeds.main(["--m", "pixels", "--d", "tv:EMNIST", "--images", "root", "-q"]) == 2
    assert "pass --split" in one_line(capsys)


def test_no_download_hint_for_a_class_that_cannot_download(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "root").mkdir()
    assert get_embeds.main(["--m", "pixels", "--d", "tv:ImageNet", "--images", "root", "-q"]) == 1
    err = one_line(capsys)
    assert "by hand" in err and "--download" not in err


# ---- a failed --download -------------------------------------------------------------------------------------

@pytest.mark.parametrize("error", [urllib.error.URLError("[Errno -2] Name or service not known"),
                                   tarfile.ReadError("file could not be opened successfully")])
def test_failed_download_is_one_message_that_never_says_pass_download(error, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)

    def fails(*a, **k):
        raise error
    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", fails)
    assert get_embeds.main(["--m", "pixels", "--d", "tv:CIFAR10", "--images", "new_root", "--download",
                            "-q"]) == 1
    err = one_line(capsys)
    assert "could not download it into new_root" in err and type(error).__name__ in err
    assert "re-run without --download" in err and "pass --download" not in err
    assert not Path("new_root").exists() and not Path("data").exists()   # the root it created is removed


def test_failed_download_keeps_a_root_that_was_there(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "mine.txt").write_text("kept")

    def fails(*a, **k):
        raise urllib.error.URLError("offline")
    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", fails)
    assert get_embeds.main(["--m", "pixels", "--d", "tv:CIFAR10", "--images", "root", "--download", "-q"]) == 1
    one_line(capsys)
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["mine.txt"]


# ---- a class-text variant's remake command ----------------------------------------------------------------

def test_class_text_variant_is_told_descriptions_not_captions(tmp_path):
    data = tmp_path / "data"
    classes = tmp_path / "classes.json"
    save_embeddings(torch.randn(3, 4), data / "cal_lite0_img.pt",
                    Sidecar(model="lite0", modality="img", dataset="cal", task_data="classes",
                            classes=["a", "b", "c"], labels=[0, 1, 2], image_ids=["a/1", "b/1", "c/1"],
                            classes_file=str(classes)))
    variant = get_embeds_command("cal-informative", "minilm", data / "cal-informative_minilm_text.pt")
    assert "--captions" not in variant and "--images ROOT" in variant and "--descriptions FILE.json" in variant
    assert f"--classes {classes}" in variant
    plain = get_embeds_command("cal", "minilm", data / "cal_minilm_text.pt")
    assert "--captions" not in plain and "--descriptions" not in plain
    # nothing of the dataset in the folder: the captions form, as before
    other = get_embeds_command("flickr", "minilm", data / "flickr_minilm_text.pt")
    assert "--images DIR --captions FILE" in other


def test_run_names_the_variant_command(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    save_embeddings(torch.randn(4, 4), Path("data/cal_lite0_img.pt"),
                    Sidecar(model="lite0", modality="img", dataset="cal", task_data="classes",
                            classes=["a", "b"], labels=[0, 1, 0, 1], image_ids=["a/1", "b/1", "a/2", "b/2"]))
    save_embeddings(torch.randn(2, 4), Path("data/cal_minilm_text.pt"),
                    Sidecar(model="minilm", modality="text", dataset="cal", task_data="classes",
                            classes=["a", "b"], templates=["{}"]))
    code = run.main(["--task", "classes", "--b", "1", "--source", "lite0:img", "--target", "minilm:text:informative",
                     "--base_data", "cal", "--query_data", "cal", "-q"])
    assert code == 1
    err = one_line(capsys)
    assert "cal-informative_minilm_text.pt does not exist" in err and "--descriptions FILE.json" in err
    assert "--captions" not in err
    assert json.loads(Path("data/cal_lite0_img.json").read_text())["task_data"] == "classes"


def test_list_layers_of_a_model_without_modules_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert get_embeds.main(["--m", "pixels", "--list-layers", "--perturb", "blur:1", "-q"]) == 0  # no dataset asked
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("# pixels img:") and out[1].startswith("(no modules: pixels has no layers to tap")
    assert len(out) == 2 and not Path("data").exists()


def test_a_class_that_downloads_through_its_keyword_arguments_is_offered_download(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "root").mkdir()
    assert get_embeds.main(["--m", "pixels", "--d", "tv:EMNIST", "--split", "letters", "--images", "root", "-q"]) == 1
    assert "pass --download" in one_line(capsys)   # EMNIST(root, split, **kwargs) hands download to MNIST

    def fails(*a, **k):
        raise urllib.error.URLError("offline")
    monkeypatch.setattr("torchvision.datasets.mnist.download_and_extract_archive", fails)
    assert get_embeds.main(["--m", "pixels", "--d", "tv:EMNIST", "--split", "letters", "--images", "root",
                            "--download", "-q"]) == 1
    err = one_line(capsys)
    assert "could not download" in err and "pass --download" not in err
