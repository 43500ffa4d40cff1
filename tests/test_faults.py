"""Issue 21, trust under faults: each case of the issue through the scripts' main(), as a user meets it.
Silent damage (stale rows, damaged summaries, escaping names, degenerate data), tracebacks turned into one
message, unclear behaviour; every fix-it hint is run to show that it is not itself refused."""
import errno
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_run import ARGS, _bad

import cluster
import get_embeds
import run
import tiny_models as tm
from src import experiment, extraction, files, metrics, results
from src.files import save_embeddings, tensor_digest

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------------------
# get_embeds.py on a tiny captions dataset (the pixels control: no weights; a tiny sentence-transformer)
# ----------------------------------------------------------------------------------------------------------

@pytest.fixture
def ds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tm.tiny_dataset(tmp_path / "ds", n=8)


def embeds(ds, model="pixels", *extra):
    img, cap = ds
    return get_embeds.main(["--m", model, "--d", "tiny", "--images", str(img), "--captions", str(cap),
                            "--device", "cpu", "-q", "--chunk-size", "2"] + list(extra))


def killed_after_first_chunk(monkeypatch):
    """get_embeds killed right after it saved its first chunk (as Ctrl-C or a scheduler would)."""
    real = extraction._Partial.save

    def save(self, k, rows):
        real(self, k, rows)
        raise KeyboardInterrupt
    monkeypatch.setattr(extraction._Partial, "save", save)
    return real


def fresh(ds, model, *extra):
    """The rows of a complete extraction from scratch, in another data folder."""
    assert embeds(ds, model, *extra, "--data-dir", "fresh") == 0
    return torch.load(Path("fresh") / f"tiny_{model.replace(':', '~')}_{'img' if model == 'pixels' else 'text'}.pt")


def edit_captions(cap, image_id, text):
    data = json.loads(cap.read_text())
    for a in data["annotations"]:
        if a["image_id"] == image_id:
            a["caption"] = text
    cap.write_text(json.dumps(data))


def full_disk(monkeypatch, when=lambda path: True, partial=b""):
    """Make ``files._stage`` (every write goes through it) fail as on a full disk for the writes ``when(path)``
    picks: the temporary file gets ``partial`` bytes, then ENOSPC. Returns the real ``_stage`` (to put back
    within a test)."""
    real = files._stage

    def atomic(path, write):
        if not when(path):
            return real(path, write)

        def half(f):
            f.write(partial)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, half)
    monkeypatch.setattr(files, "_stage", atomic)
    return real


# ---- 1. stale resume --------------------------------------------------------------------------------------

def test_resume_after_captions_were_edited_recomputes_their_chunk(ds, tmp_path, monkeypatch):
    st = tm.sentence_transformer(tmp_path / "st")
    real = killed_after_first_chunk(monkeypatch)
    assert embeds(ds, "st:tiny", "--weights", str(st)) == 130
    monkeypatch.setattr(extraction._Partial, "save", real)
    edit_captions(ds[1], 2, "a red car on the grass")   # image id 2: the first row, in the saved chunk
    assert embeds(ds, "st:tiny", "--weights", str(st)) == 0
    assert torch.allclose(torch.load("data/tiny_st~tiny_text.pt"), fresh(ds, "st:tiny", "--weights", str(st)),
                          atol=1e-6)


def test_resume_after_an_image_was_edited_recomputes_its_chunk(ds, monkeypatch):
    from PIL import Image
    killed_after_first_chunk(monkeypatch)
    assert embeds(ds) == 130
    monkeypatch.undo()
    monkeypatch.chdir(ds[0].parents[1])
    Image.new("RGB", (40, 30), (255, 0, 0)).save(ds[0] / "img_002.jpg")  # the first row's image
    assert embeds(ds) == 0
    assert torch.equal(torch.load("data/tiny_pixels_img.pt"), fresh(ds, "pixels"))


def test_overwrite_discards_the_saved_chunks(ds, monkeypatch):
    killed_after_first_chunk(monkeypatch)
    assert embeds(ds) == 130
    monkeypatch.undo()
    monkeypatch.chdir(ds[0].parents[1])
    (chunk,) = Path("data/.tiny_pixels_img.pt.partial").glob("chunk_*.pt")
    torch.save(torch.zeros(2, 768), chunk)   # a valid chunk of wrong rows: only --overwrite can tell
    assert embeds(ds, "pixels", "--overwrite") == 0
    assert torch.equal(torch.load("data/tiny_pixels_img.pt"), fresh(ds, "pixels"))


def test_a_corrupt_chunk_names_its_folder_and_the_hint_works(ds, monkeypatch, capsys):
    killed_after_first_chunk(monkeypatch)
    assert embeds(ds) == 130
    monkeypatch.undo()
    monkeypatch.chdir(ds[0].parents[1])
    (chunk,) = Path("data/.tiny_pixels_img.pt.partial").glob("chunk_*.pt")
    chunk.write_bytes(b"garbage")
    capsys.readouterr()
    assert embeds(ds) == 1
    err = capsys.readouterr().err
    assert "the resume folder data/.tiny_pixels_img.pt.partial" in err and "truncated or corrupt" in err
    hint = re.search(r"\(rm (\S+)\)", err).group(1)
    subprocess.run(["rm", hint], check=True)   # the hint, as written
    assert embeds(ds) == 0
    assert torch.equal(torch.load("data/tiny_pixels_img.pt"), fresh(ds, "pixels"))


def test_a_second_extraction_of_one_output_is_refused(ds, capsys):
    with extraction.output_lock([Path("data/tiny_pixels_img.pt")]):
        assert embeds(ds) == 1
        err = capsys.readouterr().err
        assert f"pid {os.getpid()}" in err and "wait for it to finish, then re-run this command" in err
    assert embeds(ds) == 0   # the hint: re-run once the other one is done
    assert not Path("data/.tiny_pixels_img.pt.partial").exists()


def test_two_extractions_into_one_data_folder_at_once(ds, tmp_path):
    """Two processes, one output, other chunk sizes: before, the second discarded the first's partial folder
    (other fingerprint) and the first failed; now the second is refused and the first finishes right."""
    img, cap = ds
    slow = ("import sys, time; sys.path[:0] = [{root!r}]; import src.extraction as X; s = X._Partial.save\n"
            "X._Partial.save = lambda self, k, rows: (s(self, k, rows), time.sleep(2.0))\n"
            "import get_embeds; sys.exit(get_embeds.main(sys.argv[1:]))").format(root=str(ROOT))
    argv = ["--m", "pixels", "--d", "tiny", "--images", str(img), "--captions", str(cap), "--device", "cpu", "-q"]
    first = subprocess.Popen([sys.executable, "-c", slow] + argv + ["--chunk-size", "1"], cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "data" / ".tiny_pixels_img.pt.lock"
    for _ in range(300):   # until the first holds its lock and has saved a chunk
        if lock.exists() and list((tmp_path / "data").glob(".*partial/chunk_*")):
            break
        time.sleep(0.1)
    second = subprocess.run([sys.executable, "get_embeds.py"] + argv + ["--chunk-size", "3", "--data-dir",
                            str(tmp_path / "data")], cwd=ROOT, capture_output=True, text=True)
    out, err = first.communicate(timeout=300)
    assert second.returncode == 1 and "being extracted right now" in second.stderr, second.stderr
    assert first.returncode == 0, err
    assert torch.equal(torch.load(tmp_path / "data" / "tiny_pixels_img.pt"), fresh(ds, "pixels"))


# ---- 5. empty captions; null and number captions ----------------------------------------------------------

def test_empty_captions_are_refused_with_their_image_ids(ds, capsys):
    edit_captions(ds[1], 7, "  ")
    data = json.loads(ds[1].read_text())
    data["annotations"][-1]["caption"] = ""
    ds[1].write_text(json.dumps(data))
    assert embeds(ds) == 1
    err = capsys.readouterr().err
    assert "empty caption(s)" in err and "image ids 7, " in err and "--skip-missing" in err
    assert not Path("data").exists()
    assert embeds(ds, "pixels", "--skip-missing") == 0   # the hint
    side = json.loads(Path("data/tiny_pixels_img.json").read_text())
    assert 7 not in side["image_ids"] and side["dropped"] == {"7": "img_007.jpg: only empty captions"}
    assert len(side["image_ids"]) == 7   # the other image with an empty caption keeps its other captions


@pytest.mark.parametrize("caption", [None, 5, ["a"]])
def test_a_caption_that_is_not_text(ds, capsys, caption):
    data = json.loads(ds[1].read_text())
    data["annotations"][2]["caption"] = caption
    ds[1].write_text(json.dumps(data))
    assert embeds(ds) == 1
    err = capsys.readouterr().err
    assert "caption that is not text" in err and "Traceback" not in err
    assert not Path("data").exists() or not list(Path("data").glob(".*partial"))


# ---- full disk, folders in the way, --weights -------------------------------------------------------------

def test_get_embeds_on_a_full_disk_says_disk_full_and_which_file(ds, capsys, monkeypatch):
    real = full_disk(monkeypatch, lambda path: str(path).endswith(".pt") and "partial" not in str(path),
                     b"PK\x03\x04")
    assert embeds(ds) == 1
    err = capsys.readouterr().err
    assert "disk full: cannot write data/tiny_pixels_img.pt" in err and "Traceback" not in err
    assert not Path("data/tiny_pixels_img.pt").exists()
    monkeypatch.setattr(files, "_stage", real)
    assert embeds(ds) == 0   # the chunks were kept: the rerun only assembles them


def test_an_output_that_is_a_folder(ds, capsys):
    Path("data/tiny_pixels_img.pt").mkdir(parents=True)
    assert embeds(ds, "pixels", "--overwrite") == 1
    assert "data/tiny_pixels_img.pt: a folder of that name is in the way" in capsys.readouterr().err


@pytest.mark.parametrize("content, needle", [
    (bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8)), "is truncated or corrupt"),
    ("state dict", "is not a state dict of this model"),
])
def test_weights_that_are_not_a_state_dict(ds, tmp_path, capsys, content, needle):
    w = tmp_path / "w.pt"
    if content == "state dict":
        torch.save({"foo": torch.zeros(3)}, w)
    else:
        w.write_bytes(content)
    assert embeds(ds, "efficientnet_lite0", "--weights", str(w)) == 1
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and "weights_only" not in err and len(err.splitlines()) == 1


def test_weights_for_a_model_without_weights(ds, tmp_path, capsys):
    (tmp_path / "w.pt").write_bytes(b"x")
    assert embeds(ds, "pixels", "--weights", str(tmp_path / "w.pt")) == 2
    assert "pixels has no weights to load" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# run.py
# ----------------------------------------------------------------------------------------------------------

# ---- 2. summary.csv ---------------------------------------------------------------------------------------

def test_summary_write_that_fails_half_way_keeps_the_old_file(workdir, capsys, monkeypatch):
    assert run.main(["--m", "linear"] + ARGS) == 0
    summary = workdir / "results" / "summary.csv"
    before = summary.read_bytes()
    real = full_disk(monkeypatch, lambda path: Path(path).name == "summary.csv", before[:len(before) // 2])
    assert run.main(["--m", "relative"] + ARGS) == 1
    err = capsys.readouterr().err
    assert "disk full: cannot write results/summary.csv" in err and "is unchanged" in err
    assert summary.read_bytes() == before
    monkeypatch.setattr(files, "_stage", real)
    assert run.main(["--m", "relative"] + ARGS) == 0
    assert summary.read_text().startswith(before.decode()) and len(summary.read_text().splitlines()) == 3


@pytest.mark.parametrize("damage, needle", [
    (lambda t: t[:-20], "ends in a cut line"),
    (lambda t: "\n".join([t.splitlines()[0]] + [r + ",extra" for r in t.splitlines()[1:]]) + "\n", "fields"),
    (lambda t: t.replace(",", ";"), "no header of this project's columns"),
])
def test_a_damaged_summary_is_refused_before_computing_and_kept(workdir, capsys, monkeypatch, damage, needle):
    assert run.main(["--m", "linear"] + ARGS) == 0
    summary = workdir / "results" / "summary.csv"
    summary.write_text(damage(summary.read_text()))
    kept = summary.read_bytes()
    computed = []
    monkeypatch.setattr(experiment, "run_group", lambda *a, **k: computed.append(1))
    assert run.main(["--m", "relative"] + ARGS) == 1
    err = capsys.readouterr().err
    assert needle in err and "is kept as it is" in err and not computed and summary.read_bytes() == kept
    shutil.move(summary, workdir / "old_summary.csv")   # the hint: move it away and re-run
    monkeypatch.undo()
    monkeypatch.chdir(workdir)
    assert run.main(["--m", "relative"] + ARGS) == 0


def test_a_summary_saved_by_a_spreadsheet_keeps_its_columns(workdir):
    assert run.main(["--m", "linear"] + ARGS) == 0
    summary = workdir / "results" / "summary.csv"
    summary.write_bytes(b"\xef\xbb\xbf" + summary.read_bytes().replace(b"\n", b"\r\n"))  # BOM, CRLF
    assert run.main(["--m", "relative"] + ARGS) == 0
    header, rows = results.read_summary(summary)
    assert header == results.RESULT_COLUMNS and len(rows) == 2


# ---- 3. names that escape their folders -------------------------------------------------------------------

def test_names_that_escape_their_folders_are_refused(workdir, capsys):
    (workdir / "x").mkdir()
    for name in ("base", "query"):   # files that a path through ../x/ok would reach
        for side in ("txt_text", "vis_img"):
            shutil.copy(workdir / "data" / f"{name}_{side}.pt", workdir / "x" / f"ok_{side}.pt")
    _bad(workdir, capsys, ["--m", "linear"] + ARGS[:4] + ["--base_data", "../x/ok", "--query_data", "../x/ok",
                                                          "--b", "30", "--q", "40", "-q"], 2, "--base_data '../x/ok'")
    _bad(workdir, capsys, ["--m", "linear", "--source", "txt:text:a/../../E", "--target", "vis:img", "--base_data",
                           "base", "--query_data", "base", "-q"], 2, "a language is letters and digits")
    _bad(workdir, capsys, ["--report", "--figure", ".."], 2, "--figure '..': give a file name")
    assert cluster.main(["--m", "vis", "--d", "../d0/ok", "--nc", "5"]) == 2
    assert "--d (the dataset name) '../d0/ok'" in capsys.readouterr().err
    assert sorted(p.name for p in workdir.iterdir()) == ["data", "x"]


# ---- 4. degenerate data -----------------------------------------------------------------------------------

def _constant(workdir, name="base_vis_img", value=1.0, n=150, d=20):
    save_embeddings(torch.full((n, d), value), workdir / "data" / f"{name}.pt",
                    {"model": name.split("_")[1], "image_ids": list(range(1, n + 1))})


@pytest.mark.parametrize("method", ["linear", "relative", "qap", "kernel_local_CKA"])
@pytest.mark.parametrize("value", [1.0, 0.0])
def test_a_constant_side_is_refused_before_any_computation(workdir, capsys, monkeypatch, method, value):
    _constant(workdir, value=value)
    computed = []
    monkeypatch.setattr(experiment, "run_group", lambda *a, **k: computed.append(1))
    _bad(workdir, capsys, ["--m", method] + ARGS[:6] + ["--query_data", "base"] + ARGS[8:], 1,
         "base_vis_img.pt", "all 150 rows are the same vector")
    assert not computed


def test_a_constant_side_in_a_multi_pair_run_writes_nothing(workdir, capsys):
    _constant(workdir, "base_zero_img", 0.0)
    _bad(workdir, capsys, ["--m", "linear", "relative", "--vid_model", "vis", "zero", "--text_model", "txt",
                           "--base_data", "base", "--query_data", "base", "--b", "30", "--q", "40", "-q"], 1,
         "base_zero_img.pt", "(all zero)")


def test_a_draw_that_collapses_is_refused_naming_the_seed(workdir, capsys):
    from src.draws import legacy_choice
    anchors = set(legacy_choice(0, 150, 30).tolist())
    rows = torch.ones(150, 20)
    odd = next(i for i in range(150) if i not in anchors)
    rows[odd] = 2.0   # the pool has two distinct rows, the 30 anchors of --base-seed 0 do not
    save_embeddings(rows, workdir / "data" / "base_vis_img.pt", {"model": "vis", "image_ids": list(range(1, 151))})
    _bad(workdir, capsys, ["--m", "linear"] + ARGS[:6] + ["--query_data", "base"] + ARGS[8:], 1,
         "seed 0: the 30 anchors drawn from vis:img", "all 30 rows are the same vector")


def test_classify_with_identical_image_rows(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    classes = [f"c{i}" for i in range(6)]
    labels = [i % 6 for i in range(60)]
    save_embeddings(torch.ones(60, 8), tmp_path / "data" / "cls_vis_img.pt",
                    {"model": "vis", "task_data": "classes", "classes": classes, "labels": labels,
                     "image_ids": [f"c{c}/{i}.jpg" for i, c in enumerate(labels)]})
    save_embeddings(torch.randn(6, 8), tmp_path / "data" / "cls_txt_text.pt",
                    {"model": "txt", "task_data": "classes", "classes": classes})
    assert run.main(["--m", "linear", "--task", "classify", "--source", "vis:img", "--target", "txt:text",
                     "--base_data", "cls", "--query_data", "cls", "--b", "3", "-q"]) == 1
    assert "cls_vis_img.pt: all 60 rows are the same vector" in capsys.readouterr().err
    assert not (tmp_path / "results").exists() or not list((tmp_path / "results").glob("*.csv"))


# ---- 6. cluster sidecars without a digest -----------------------------------------------------------------

def test_bundled_cluster_sidecars_carry_the_digest_of_their_embeddings():
    for stem in ("flickr1k_minilm_text", "flickr1k_efficientnet_lite0_img"):
        side = files.read_sidecar(ROOT / "data" / f"{stem}_cluster.pt")
        rows = torch.load(ROOT / "data" / f"{stem}.pt", weights_only=True)
        assert side.kind == "cluster" and side.embeddings == f"{stem}.pt"
        assert side.digest == tensor_digest(rows) and side.rows == rows.shape[0]


def test_a_cluster_file_copied_from_the_other_side_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(ROOT / "data", tmp_path / "data")
    for ext in ("pt", "json"):
        shutil.copy(f"data/flickr1k_efficientnet_lite0_img_cluster.{ext}", f"data/flickr1k_minilm_text_cluster.{ext}")
    argv = ["--m", "linear", "--vid_model", "efficientnet_lite0", "--text_model", "minilm", "--base_data",
            "flickr1k", "--query_data", "flickr1k", "--c", "1", "--seeds", "0", "-q"]
    assert run.main(argv) == 1
    assert "was made from other embeddings" in capsys.readouterr().err
    side = json.loads(Path("data/flickr1k_minilm_text_cluster.json").read_text())
    for k in ("digest", "version", "kind", "rows"):   # an older sidecar: only the embeddings name to go by
        side.pop(k)
    Path("data/flickr1k_minilm_text_cluster.json").write_text(json.dumps(side))
    assert run.main(argv) == 1
    err = capsys.readouterr().err
    assert "was made from flickr1k_efficientnet_lite0_img.pt, not from flickr1k_minilm_text.pt" in err
    hint = err.split("re-run: ")[1].strip()
    assert hint == "python cluster.py --m minilm --d flickr1k --nc 320 -t"
    assert cluster.main(shlex.split(hint)[2:] + ["-q"]) == 0   # the hint, as written
    assert run.main(argv) == 0


# ---- tracebacks: seeds, --report on a read-only folder, full disk, folders in the way ----------------------

@pytest.mark.parametrize("flags", [["--seeds", str(2**32)], ["--seeds", "-1"], ["--base-seed", str(2**32)],
                                   ["--base-seed", "-5"]])
def test_seeds_outside_the_legacy_range(workdir, capsys, flags):
    _bad(workdir, capsys, ["--m", "linear"] + ARGS + flags, 2, "0..4294967295")
    assert not (workdir / "results").exists() and not (workdir / "seedwise").exists()


def test_report_on_a_read_only_results_folder(workdir, capsys, monkeypatch):
    assert run.main(["--m", "linear"] + ARGS) == 0
    real = files.tempfile.mkstemp

    def read_only(*a, **k):   # root writes anywhere: the refusal is simulated where the write happens
        if Path(k.get("dir", "")).name == "results":
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(*a, **k)
    monkeypatch.setattr(files.tempfile, "mkstemp", read_only)
    _bad(workdir, capsys, ["--report"], 1, "cannot write results/table.csv: Permission denied")


def test_run_on_a_full_disk_says_disk_full(workdir, capsys, monkeypatch):
    full_disk(monkeypatch, partial=b"Base")
    assert run.main(["--m", "linear"] + ARGS) == 1
    err = capsys.readouterr().err
    assert "disk full: cannot write seedwise/" in err and "Traceback" not in err
    assert not list(workdir.rglob("*.csv")) and not list(workdir.rglob("*.tmp"))


@pytest.mark.parametrize("which", ["table.csv", "figure1.png", "seedwise", "results"])
def test_an_output_name_that_is_a_folder(workdir, capsys, monkeypatch, which):
    computed = []
    if which in ("table.csv", "figure1.png"):
        (workdir / "results" / which).mkdir(parents=True)
        argv = ["--m", "linear", "relative", "--vid_model", "vis", "clipx", "--text_model", "txt", "clipx"] + ARGS[4:]
    else:
        cfg = run.configs_from_args(run.build_parser().parse_args(["--m", "linear"] + ARGS))[0]
        cfg.output_paths()[which].mkdir(parents=True)
        argv = ["--m", "linear"] + ARGS
    monkeypatch.setattr(experiment, "run_group", lambda *a, **k: computed.append(1))
    _bad(workdir, capsys, argv, 1, "is a folder, but this run writes a file of that name there")
    assert not computed


# ---- unclear behaviour --------------------------------------------------------------------------------------

def test_permutations_are_bounded(workdir, capsys):
    _bad(workdir, capsys, ["--m", "linear"] + ARGS + ["--permutations", "100000"], 2,
         f"at most {metrics.MAX_PERMUTATIONS}")


def test_slow_permutations_warn_and_show_progress(workdir, capsys, monkeypatch, caplog):
    clock = iter(range(0, 10**9, 1000))   # every shuffle "takes" 1000 s
    monkeypatch.setattr(metrics.time, "perf_counter", lambda: next(clock))
    assert run.main(["--m", "linear"] + ARGS[:-1] + ["--permutations", "3", "--seeds", "0"]) == 0
    err = capsys.readouterr().err
    assert "--permutations 3: about 50 minutes for this seed" in err or \
        "--permutations 3: about 50 minutes" in caplog.text
    assert "permutations" in err and "shuffle" in err   # the progress bar


def test_interrupted_multi_configuration_run_says_what_was_written(workdir, capsys, monkeypatch):
    real, calls = experiment.write_outputs, []

    def write(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(experiment, "write_outputs", write)
    assert run.main(["--m", "linear", "relative"] + ARGS) == 130
    err = capsys.readouterr().err
    (written,) = [p.stem for p in (workdir / "results").glob("*.csv") if p.name != "summary.csv"]
    assert f"stopped after 1 of 2 configurations; these have their CSVs and summary.csv row: {written}" in err
    assert "No table.csv or figure was made" in err
    hint = re.search(r"made: (python run\.py --report [^\n]*?) makes them", err).group(1)
    monkeypatch.undo()
    monkeypatch.chdir(workdir)
    assert run.main(shlex.split(hint)[2:]) == 0   # the hint, as written
    assert (workdir / "results" / "table.csv").is_file()


def test_run_with_no_flags_points_at_the_demo(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run.main([]) == 1
    err = capsys.readouterr().err
    assert "python run.py --demo" in err and "Traceback" not in err


def test_figure_help_shows_one_default_and_the_epilog_keeps_the_papers_command(capsys):
    assert run.main(["--help"]) == 0
    out = capsys.readouterr().out
    figure = out[out.index("  --figure FIGURE"):].split("\n  -")[0]
    assert figure.count("default") == 1 and "None" not in figure
    assert ("python run.py --m linear --b 320 --q 500 --c 0 --vid_model dinov2 --text_model allroberta \\\n"
            "        --base_data coco --query_data nocaps --gpu 0") in out


def test_hints_name_commands_that_run(tmp_path, monkeypatch, capsys):
    """A missing file of a model get_embeds.py knows: the hint's command (DIR / FILE filled in) runs; one it
    does not know: the hint names no command."""
    monkeypatch.chdir(tmp_path)
    img, cap = tm.tiny_dataset(tmp_path / "ds", n=8)
    (tmp_path / "data").mkdir()
    save_embeddings(torch.randn(8, 6), tmp_path / "data" / "tiny_other_text.pt",
                    {"model": "other", "image_ids": [2, 3, 4, 5, 7, 8, 9, 11]})
    argv = ["--m", "linear", "--vid_model", "pixels", "--text_model", "other", "--base_data", "tiny",
            "--query_data", "tiny", "--b", "3", "--q", "4", "--seeds", "0", "-q"]
    assert run.main(argv) == 1
    err = capsys.readouterr().err
    cmd = err.split("make it with: ")[1].strip().replace("DIR", str(img)).replace("FILE", str(cap))
    assert cmd.startswith("python get_embeds.py --m pixels --d tiny")
    assert get_embeds.main(shlex.split(cmd)[2:] + ["-q"]) == 0
    assert run.main(argv) == 0
    (tmp_path / "data" / "tiny_other_text.pt").unlink()
    assert run.main(argv) == 1
    err = capsys.readouterr().err
    assert "other is not a model get_embeds.py knows" in err and "make it with" not in err


# ----------------------------------------------------------------------------------------------------------
# More cases tried as a new user (the note's table)
# ----------------------------------------------------------------------------------------------------------

def test_empty_or_dotted_names_for_figure_and_data(workdir, capsys):
    assert run.main(["--m", "linear"] + ARGS) == 0
    capsys.readouterr()
    for figure in ("", ".."):
        _bad(workdir, capsys, ["--report", "--figure", figure], 2, "give a file name")
    _bad(workdir, capsys, ["--m", "linear", "--vid_model", "vis", "--text_model", "txt", "--base_data", "",
                           "--query_data", "query", "-q"], 2, "--base_data ''")


def test_dataset_name_that_would_read_as_a_flag(ds, capsys):
    img, cap = ds
    assert get_embeds.main(["--m", "pixels", "--d=-x", "--images", str(img), "--captions", str(cap), "-q"]) == 2
    assert "start with -" in capsys.readouterr().err and not Path("data").exists()


def test_data_dir_that_is_a_file(ds, capsys):
    Path("afile").write_text("x")
    assert embeds(ds, "pixels", "--data-dir", "afile") == 2
    assert "--data-dir afile is a file" in capsys.readouterr().err


@pytest.mark.parametrize("edit, needle", [
    (lambda c: c["images"].append(dict(c["images"][0])), "more than once"),
    (lambda c: c["images"][0].pop("file_name"), "has no file_name"),
    (lambda c: c["annotations"][0].update(caption="\n"), "empty caption(s)"),
])
def test_captions_json_mistakes(ds, capsys, edit, needle):
    data = json.loads(ds[1].read_text())
    edit(data)
    ds[1].write_text(json.dumps(data))
    assert embeds(ds) == 1
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_read_only_data_folder(ds, capsys, monkeypatch):
    real = files.tempfile.mkstemp

    def read_only(*a, **k):
        if Path(k.get("dir", "")).name == "data":
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(*a, **k)
    monkeypatch.setattr(files.tempfile, "mkstemp", read_only)
    assert embeds(ds) == 1
    assert "cannot write data/tiny_pixels_img.pt: Permission denied" in capsys.readouterr().err


def test_cluster_on_a_constant_side_and_on_a_full_disk(workdir, capsys, monkeypatch):
    _constant(workdir)
    assert cluster.main(["--m", "vis", "--d", "base", "--nc", "10", "-q"]) == 1
    assert "all 150 rows are the same vector" in capsys.readouterr().err
    assert cluster.main(["--m", "txt", "--d", "base", "--nc", "10", "-t", "-q"]) == 0
    before = (workdir / "data" / "base_txt_text_cluster.pt").read_bytes()

    full_disk(monkeypatch, partial=b"{")
    assert cluster.main(["--m", "txt", "--d", "base", "--nc", "12", "-t", "-q"]) == 1
    assert "disk full: cannot write data/base_txt_text_cluster.pt" in capsys.readouterr().err
    assert (workdir / "data" / "base_txt_text_cluster.pt").read_bytes() == before


def test_full_disk_at_the_second_configuration(workdir, capsys, monkeypatch):
    n = []

    def fourth(path):  # seedwise, results, summary of the first configuration; then the second's seedwise
        n.append(path)
        return len(n) == 4
    full_disk(monkeypatch, fourth, b"x")
    assert run.main(["--m", "linear", "relative"] + ARGS) == 1
    err = capsys.readouterr().err
    assert "stopped after 1 of 2 configurations" in err and "disk full: cannot write seedwise/" in err
    assert "Traceback" not in err
