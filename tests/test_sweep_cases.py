"""Issue 29's last sweep: cases a new user met where a file was reused although it no longer was what the
command would make (exit 0, old rows), each through the scripts' own entry points on tiny data. Nothing is
downloaded: the text model is a tiny sentence-transformer loaded with --weights, the image model is pixels."""
import json
import shutil
from pathlib import Path

import pytest
import torch

import cluster
import get_embeds
import run
import tiny_models as tm


@pytest.fixture(scope="module")
def tiny_st(tmp_path_factory):
    return tm.sentence_transformer(tmp_path_factory.mktemp("st") / "st")


@pytest.fixture
def ds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tm.tiny_dataset(tmp_path / "ds", n=6)


def embed(model, images, captions, *extra, name="t"):
    return get_embeds.main(["--m", model, "--d", name, "--images", str(images), "--captions", str(captions),
                            "--device", "cpu", "-j", "0", "-b", "3", "-q", *map(str, extra)])


def text(images, captions, st, *extra, name="t"):
    return embed("minilm", images, captions, "--weights", st, *extra, name=name)


def test_captions_edited_in_place_are_not_skipped(ds, tiny_st, capsys):
    images, captions = ds
    assert text(images, captions, tiny_st) == 0
    before = torch.load("data/t_minilm_text.pt")
    data = json.loads(captions.read_text())
    data["annotations"][0]["caption"] = "an edited caption"
    captions.write_text(json.dumps(data))
    capsys.readouterr()
    assert text(images, captions, tiny_st) == 2
    err = capsys.readouterr().err
    assert "before an edit" in err and "--overwrite" in err and "Traceback" not in err
    assert torch.equal(torch.load("data/t_minilm_text.pt"), before)
    assert text(images, captions, tiny_st, "--overwrite") == 0
    assert not torch.equal(torch.load("data/t_minilm_text.pt"), before)


def test_another_captions_file_or_images_folder_is_not_skipped(ds, tiny_st, tmp_path, capsys):
    images, captions = ds
    assert text(images, captions, tiny_st) == 0 and embed("pixels", images, captions) == 0
    other_cap = tmp_path / "other.json"
    shutil.copy(captions, other_cap)  # same bytes, another file: what the sidecar names is compared
    other_img = tmp_path / "other_images"
    shutil.copytree(images, other_img)
    capsys.readouterr()
    assert text(images, other_cap, tiny_st) == 2
    assert f"captions {captions.resolve()} (this command: {other_cap.resolve()})" in capsys.readouterr().err
    assert embed("pixels", other_img, captions) == 2
    assert f"images {images.resolve()} (this command: {other_img.resolve()})" in capsys.readouterr().err
    assert text(images, captions, tiny_st) == 0 and embed("pixels", images, captions) == 0  # the same: skipped


def test_relative_paths_from_two_folders_are_two_sources(tmp_path, tiny_st, monkeypatch, capsys):
    """The same relative --images/--captions typed in two folders name two datasets: the sidecars record real
    paths, so run.py refuses to pair the sides (it paired them by id before)."""
    a_img, a_cap = tm.tiny_dataset(tmp_path / "A", n=6)
    b_img, _ = tm.tiny_dataset(tmp_path / "B", n=6)
    files = sorted(p.name for p in b_img.iterdir())
    for x, y in zip(files, files[1:] + files[:1]):  # B: each photo under the next file name
        shutil.copy(a_img / x, b_img / y)
    shutil.copy(a_cap, tmp_path / "B" / "captions.json")
    data = tmp_path / "data"
    monkeypatch.chdir(tmp_path / "A")
    assert text("images", "captions.json", tiny_st, "--data-dir", data) == 0
    monkeypatch.chdir(tmp_path / "B")
    assert embed("pixels", "images", "captions.json", "--data-dir", data) == 0
    sidecar = json.loads((data / "t_pixels_img.json").read_text())
    assert sidecar["images"] == str(b_img.resolve())
    capsys.readouterr()
    rc = run.main(["--m", "linear", "--b", "2", "--q", "3", "--seeds", "0", "--vid_model", "pixels", "--text_model",
                   "minilm", "--base_data", "t", "--query_data", "t", "--data-dir", str(data), "--results-dir",
                   str(tmp_path / "r"), "--seedwise-dir", str(tmp_path / "s"), "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and "different image folders" in err and str(a_img.resolve()) in err
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").glob("*.csv"))


def class_tree(tmp_path, n):
    """An ImageFolder root with classes ant and beaver, two of n tiny photos each; (root, the n photos)."""
    root = tmp_path / "root"
    img, _ = tm.tiny_dataset(tmp_path / "src", n=n)
    photos = sorted(img.iterdir())
    for k, folder in enumerate(["ant", "beaver"]):
        (root / folder).mkdir(parents=True)
        for p in photos[2 * k:2 * k + 2]:
            shutil.copy(p, root / folder / p.name)
    return root, photos


def test_class_names_changed_are_not_skipped(tmp_path, tiny_st, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    root, _ = class_tree(tmp_path, 4)
    names = tmp_path / "classes.json"
    names.write_text(json.dumps({"ant": "ant", "beaver": "beaver"}))
    argv = ["--m", "minilm", "--weights", str(tiny_st), "--d", "cls", "--images", str(root), "--device", "cpu",
            "-j", "0", "-q"]
    assert get_embeds.main(argv + ["--classes", str(names)]) == 0
    before = torch.load("data/cls_minilm_text.pt")
    names.write_text(json.dumps({"ant": "beaver", "beaver": "ant"}))
    capsys.readouterr()
    assert get_embeds.main(argv + ["--classes", str(names)]) == 1
    err = capsys.readouterr().err
    assert "other class names" in err and "folder ant: 'ant' there, 'beaver' now" in err
    assert torch.equal(torch.load("data/cls_minilm_text.pt"), before)
    names.write_text(json.dumps({"ant": "ant", "beaver": "beaver"}))
    assert get_embeds.main(argv + ["--classes", str(names)]) == 0  # the same names again: skipped
    assert get_embeds.main(argv) == 0  # without --classes: folder names, here the same


def _key(*flags):
    args = run.build_parser().parse_args(["--m", "linear", "--b", "5", "--vid_model", "v", "--text_model", "t",
                                          "--base_data", "d", "--query_data", "d", *flags])
    (cfg,) = run.configs_from_args(args)
    return cfg.key()


@pytest.mark.parametrize("task", ["classes", "blind"])
def test_flags_a_task_does_not_use_leave_its_key(task):
    """--q / --base-seed accepted and not used by a task gave the same numbers under three keys (three rows
    of table.csv); the seeds' order gave two."""
    b = ["--b", "0"] if task == "blind" else []
    plain = _key("--task", task, *b)
    unused = [f for f, v in (("--q", "3"), ("--base-seed", "4"))
              if (f == "--q") != (task == "blind")]  # blind draws --q items: --q is its own
    for flag in unused:
        assert _key("--task", task, *b, flag, {"--q": "3", "--base-seed": "4"}[flag]) == plain
    assert _key("--task", task, *b, "--seeds", "2", "0", "1") == _key("--task", task, *b, "--seeds", "0", "1", "2")


def test_flags_the_captions_task_uses_change_its_key():
    plain = _key()
    assert _key("--q", "3") != plain and _key("--base-seed", "4") != plain
    assert _key("--seeds", "1", "0") == _key("--seeds", "0", "1")


def _result(method, created, inputs, acc, cka):
    row = {"task": "captions", "source_side": "minilm:text", "target_side": "pixels:img", "group": "g1",
           "method": method, "created": created, "matching_acc": acc, "linear_cka": cka}
    if inputs:
        row.update(source_inputs=inputs[0], target_inputs=inputs[1])
    return row


def test_a_row_of_table_csv_comes_from_one_version_of_its_inputs(caplog):
    """The second sweep: a side re-extracted, then only one method re-run; --report mixed the new linear
    result with the old relative one in one row."""
    import logging

    from src.report import build_table
    rows = [_result("relative", "2026-01-01T00:00:00", ("old", "img"), 0.05, 0.30),
            _result("linear", "2026-01-01T00:00:00", ("old", "img"), 0.10, 0.30),
            _result("linear", "2026-01-02T00:00:00", ("new", "img"), 0.00, 0.09),
            _result("cos", "2025-01-01T00:00:00", None, 0.5, 0.7)]  # records no inputs: cannot be told apart
    with caplog.at_level(logging.WARNING, logger="src.report"):
        table = build_table(rows)
    (rec,) = table.to_dict("records")
    assert rec["linear_acc"] == 0.0 and rec["linear_cka"] == 0.09 and rec["cos_acc"] == 0.5
    assert "relative_acc" not in rec or rec["relative_acc"] != rec["relative_acc"]  # left out (NaN or absent)
    (said,) = [r.getMessage() for r in caplog.records if r.name == "src.report"]
    assert "results of relative were made from other inputs" in said
    same = build_table(rows[:2])  # one version of the inputs: both methods, no warning
    assert list(same["relative_acc"]) == [0.05] and list(same["linear_acc"]) == [0.10]


@pytest.mark.parametrize("change, needle", [("replace", "replaced or touched"), ("delete", "no longer in")])
def test_an_image_replaced_or_gone_is_not_skipped(ds, capsys, change, needle):
    """The second sweep: an image edited in place, or deleted, kept "exists, skipped" with the old rows."""
    images, captions = ds
    assert embed("pixels", images, captions) == 0
    before = torch.load("data/t_pixels_img.pt")
    first, second = sorted(images.iterdir())[:2]
    if change == "replace":
        shutil.copy(second, first)
    else:
        first.unlink()
    capsys.readouterr()
    assert embed("pixels", images, captions) == 2
    err = capsys.readouterr().err
    assert needle in err and "--overwrite" in err
    assert torch.equal(torch.load("data/t_pixels_img.pt"), before)


def test_a_class_folder_added_is_not_skipped(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    root, photos = class_tree(tmp_path, 6)
    argv = ["--m", "pixels", "--d", "cls", "--images", str(root), "--device", "cpu", "-j", "0", "-q"]
    assert get_embeds.main(argv) == 0
    assert get_embeds.main(argv) == 0  # nothing changed: skipped
    (root / "camel").mkdir()
    for p in photos[4:]:
        shutil.copy(p, root / "camel" / p.name)
    capsys.readouterr()
    assert get_embeds.main(argv) == 2
    assert "1 added since, e.g. camel" in capsys.readouterr().err


def test_two_text_sides_of_one_captions_file_edited_between_are_refused(ds, tiny_st, tmp_path, capsys):
    """The third sweep: a text side re-made after an edit of the captions file, paired with a text side of
    the old captions (another model, or another layer), compared German rows with English ones silently."""
    images, captions = ds
    assert text(images, captions, tiny_st) == 0
    data = json.loads(captions.read_text())
    data["annotations"][0]["caption"] = "an edited caption"
    captions.write_text(json.dumps(data))
    assert embed("mpnet", images, captions, "--weights", tiny_st) == 0
    capsys.readouterr()
    rc = run.main(["--m", "linear", "--b", "2", "--q", "3", "--seeds", "0", "--source", "minilm:text", "--target",
                   "mpnet:text", "--base_data", "t", "--query_data", "t", "--results-dir", str(tmp_path / "r"),
                   "--seedwise-dir", str(tmp_path / "s"), "-q"])
    assert rc == 1 and "versions of the captions file" in capsys.readouterr().err
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").glob("*.csv"))


def test_the_launcher_describes_a_one_sided_group():
    """The third sweep: --task probe --launcher local raised AttributeError (no source side)."""
    from src.launch import _group_what
    args = run.build_parser().parse_args(["--task", "probe", "--target", "pixels:img", "--base_data", "cal",
                                          "--seeds", "0", "1"])
    (cfg,) = run.configs_from_args(args)
    assert _group_what([cfg]) == "pixels:img on cal (probe), seeds 0 1"


# ---- the fourth sweep ----------------------------------------------------------------------------------------

def small_run(tmp_path, *extra, method="linear"):
    return run.main(["--m", method, "--b", "2", "--q", "3", "--seeds", "0", "--vid_model", "pixels", "--text_model",
                     "minilm", "--base_data", "t", "--query_data", "t", "--results-dir", str(tmp_path / "r"),
                     "--seedwise-dir", str(tmp_path / "s"), "-q", *extra])


@pytest.fixture
def two_sides(ds, tiny_st):
    images, captions = ds
    assert text(images, captions, tiny_st) == 0 and embed("pixels", images, captions) == 0
    return ds


@pytest.mark.parametrize("name", ["summary.csv", "table.csv", "figure"])
def test_a_figure_named_like_a_results_file_is_refused(two_sides, tmp_path, capsys, name):
    """--figure summary.csv wrote the PNG over run.py's own summary (exit 0), and every later run was refused."""
    assert small_run(tmp_path) == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir()}
    capsys.readouterr()
    assert small_run(tmp_path, "--report", "--figure", name) == 2
    assert "give an image file name ending in one of .png" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir()} == before   # nothing written or replaced


def test_every_figure_type_is_one_matplotlib_writes():
    from matplotlib.figure import Figure

    from src.run_cli import FIGURE_TYPES
    assert set(FIGURE_TYPES) <= set(Figure().canvas.get_supported_filetypes())


def test_a_cut_result_csv_is_left_out_of_the_report_and_not_reused(two_sides, tmp_path, caplog, capsys):
    """A per-run CSV cut short gave table.csv a phantom row (pandas filled the cut row with blanks), and a cut
    per-seed CSV counted as done when the launcher resumed."""
    assert small_run(tmp_path, method="relative") == 0
    assert small_run(tmp_path) == 0
    (result,) = (tmp_path / "r").glob("*_linear_*.csv")
    whole = result.read_bytes()
    result.write_bytes(whole[:len(whole) * 2 // 3])
    capsys.readouterr()
    with caplog.at_level("WARNING"):
        assert small_run(tmp_path, "--report") == 0
    assert f"skipping {result}: it ends in a cut line" in caplog.text + capsys.readouterr().err
    header = (tmp_path / "r" / "table.csv").read_text().splitlines()[0].split(",")
    assert "relative_acc" in header and "linear_acc" not in header     # the cut file's row is left out
    from src.results import finished
    (cfg,) = run.configs_from_args(run.build_parser().parse_args(
        ["--m", "linear", "--b", "2", "--q", "3", "--seeds", "0", "--vid_model", "pixels", "--text_model", "minilm",
         "--base_data", "t", "--query_data", "t", "--results-dir", str(tmp_path / "r"), "--seedwise-dir",
         str(tmp_path / "s")]))
    result.write_bytes(whole)
    assert finished(cfg)
    (seedwise,) = (tmp_path / "s").glob("*_linear_*.csv")
    seedwise.write_bytes(seedwise.read_bytes()[:-30])
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert not finished(cfg)
    assert "(a write was cut): it is not reused" in caplog.text + capsys.readouterr().err


def test_an_image_dropped_by_skip_missing_then_repaired_is_not_skipped(ds, capsys):
    images, captions = ds
    first = sorted(images.iterdir())[0]
    whole = first.read_bytes()
    first.write_bytes(whole[:200])   # cut: undecodable
    assert embed("pixels", images, captions, "--skip-missing") == 0
    assert embed("pixels", images, captions, "--skip-missing") == 0     # nothing changed: skipped
    first.write_bytes(whole)
    capsys.readouterr()
    assert embed("pixels", images, captions, "--skip-missing") == 2
    err = capsys.readouterr().err
    assert f"left out by --skip-missing as they were (e.g. {first.name}" in err and "--overwrite" in err


def test_cluster_refuses_a_file_that_disagrees_with_its_sidecar(two_sides, capsys):
    rows = torch.load("data/t_minilm_text.pt")
    torch.save(rows.flip(0), "data/t_minilm_text.pt")     # replaced by hand: the sidecar describes other rows
    capsys.readouterr()
    assert cluster.main(["--m", "minilm", "--d", "t", "-t", "--nc", "2"]) == 1
    assert "disagree" in capsys.readouterr().err
    assert not list(Path("data").glob("*_cluster.pt"))


def test_a_cluster_file_without_its_sidecar_is_named_in_a_warning(two_sides, tmp_path, caplog, capsys):
    assert cluster.main(["--m", "minilm", "--d", "t", "-t", "--nc", "2"]) == 0
    assert cluster.main(["--m", "pixels", "--d", "t", "--nc", "2"]) == 0
    Path("data/t_minilm_text_cluster.json").unlink()
    with caplog.at_level("WARNING"):
        assert small_run(tmp_path, "--c", "1") == 0
    assert "t_minilm_text_cluster.pt has no sidecar, so nothing ties its picks" in caplog.text + capsys.readouterr().err


def test_an_output_without_its_sidecar_or_that_is_a_folder_is_not_skipped(ds, tiny_st, capsys):
    images, captions = ds
    Path("data/t_pixels_img.pt").mkdir(parents=True)
    assert embed("pixels", images, captions) == 1     # it printed "exists, skipped" (exit 0) before
    assert "t_pixels_img.pt: a folder of that name is in the way" in capsys.readouterr().err
    Path("data/t_pixels_img.pt").rmdir()
    assert text(images, captions, tiny_st) == 0
    Path("data/t_minilm_text.json").unlink()
    capsys.readouterr()
    assert text(images, captions, tiny_st) == 2
    assert "exists without its sidecar" in capsys.readouterr().err
    assert text(images, captions, tiny_st, "--overwrite") == 0 and Path("data/t_minilm_text.json").is_file()


def test_repeated_json_keys_are_refused(ds, tmp_path, capsys):
    """json.loads keeps the last of a repeated key: a second "annotations" replaced the first, a class repeated
    in --classes kept its last name."""
    images, captions = ds
    body = captions.read_text()
    twice = tmp_path / "twice.json"
    twice.write_text(body[:-1] + ', "annotations": []}')
    assert embed("pixels", images, twice) == 1
    assert "'annotations' more than once" in capsys.readouterr().err
    root, _ = class_tree(tmp_path, 6)
    folders = sorted(p.name for p in root.iterdir())
    classes = tmp_path / "classes.json"
    classes.write_text("{" + ", ".join(f'"{f}": "a {f}"' for f in folders) + f', "{folders[0]}": "other"}}')
    assert get_embeds.main(["--m", "pixels", "--d", "cls", "--images", str(root), "--classes", str(classes),
                            "--device", "cpu", "-j", "0", "-q"]) == 1
    assert f"lists the class folder(s) '{folders[0]}' more than once" in capsys.readouterr().err


def test_a_truncated_embeddings_file_is_called_truncated(two_sides, capsys):
    path = Path("data/t_pixels_img.pt")
    path.write_bytes(path.read_bytes()[:300])
    images, captions = two_sides
    assert embed("pixels", images, captions) == 1
    err = capsys.readouterr().err
    assert "is truncated or corrupt" in err and "--overwrite" in err


def test_cluster_with_a_data_dir_that_is_a_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("afile").write_text("x")
    assert cluster.main(["--m", "minilm", "--d", "t", "-t", "--nc", "2", "--data-dir", "afile"]) == 2
    assert "--data-dir afile is a file, not a folder" in capsys.readouterr().err


def test_a_summary_csv_deleted_is_named_as_missing(two_sides, tmp_path, caplog, capsys):
    assert small_run(tmp_path) == 0
    (tmp_path / "r" / "summary.csv").unlink()
    from src.results import finished
    (cfg,) = run.configs_from_args(run.build_parser().parse_args(
        ["--m", "linear", "--b", "2", "--q", "3", "--seeds", "0", "--vid_model", "pixels", "--text_model", "minilm",
         "--base_data", "t", "--query_data", "t", "--results-dir", str(tmp_path / "r"), "--seedwise-dir",
         str(tmp_path / "s")]))
    with caplog.at_level("WARNING"):
        assert not finished(cfg)
    assert "summary.csv is missing (deleted or moved)" in caplog.text + capsys.readouterr().err
