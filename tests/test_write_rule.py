"""Issue 29, the write rule (src/files.write_together): a file and the file that vouches for it (a tensor and
its sidecar; a run's CSVs and its summary.csv row) become visible together or not at all, whatever fails; a
reader that finds a pair disagreeing says so and how to remake it."""
import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import cluster
from src import files, sides
from src.errors import DataError
from src.files import save_embeddings, side_file, sidecar_path

ROOT = Path(__file__).resolve().parents[1]


def _pair(data, rows, captions):
    path = side_file(data, "d", "minilm:text")
    save_embeddings(rows, path, {"model": "minilm", "image_ids": list(range(rows.shape[0])), "captions": captions})
    return path


def _snapshot(path):
    return path.read_bytes(), sidecar_path(path).read_text()


def _fail(monkeypatch, stage=None, replace=None):
    """A failing write: ``stage(path)`` picks the temporary writes that hit a full disk, ``replace(path)`` the
    moves into place that fail."""
    real_stage, real_replace = files._stage, files.os.replace

    def staged(path, write):
        if stage and stage(Path(path)):
            raise files.write_error(path, OSError(errno.ENOSPC, "No space left on device"))
        return real_stage(path, write)

    def replaced(src, dst):
        if replace and replace(Path(dst)) and not str(src).endswith(".old"):
            raise OSError(errno.EIO, "Input/output error")
        return real_replace(src, dst)
    monkeypatch.setattr(files, "_stage", staged)
    monkeypatch.setattr(files.os, "replace", replaced)


@pytest.mark.parametrize("stage, replace", [
    (lambda p: p.suffix == ".json", None),        # the sidecar's write fails: the tensor was written first
    (lambda p: p.suffix == ".pt", None),          # the tensor's write fails
    (None, lambda p: p.suffix == ".json"),        # the sidecar's move fails after the tensor's move
])
def test_a_failed_overwrite_leaves_the_old_pair(tmp_path, monkeypatch, stage, replace):
    path = _pair(tmp_path, torch.randn(4, 3), "old.json")
    before = _snapshot(path)
    _fail(monkeypatch, stage, replace)
    with pytest.raises(DataError, match="cannot write"):
        _pair(tmp_path, torch.randn(4, 3), "edited.json")
    assert _snapshot(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, sidecar_path(path).name])  # no debris
    assert sides.load_side(tmp_path, "d", "minilm:text").sidecar.captions == "old.json"


def test_a_full_disk_under_ulimit_leaves_the_old_pair(tmp_path):
    """Issue 29 #1 with a real file-size limit: the new sidecar is small, the new tensor is not."""
    path = _pair(tmp_path, torch.randn(4, 3), "old.json")
    before = _snapshot(path)
    code = ("import sys, torch; sys.path.insert(0, %r); from src.files import save_embeddings; "
            "save_embeddings(torch.randn(40000, 3), %r, {'model': 'minilm', 'image_ids': list(range(40000)), "
            "'captions': 'edited.json'})" % (str(ROOT), str(path)))
    out = subprocess.run(["bash", "-c", f"ulimit -f 200; {sys.executable} -c \"{code}\""], capture_output=True,
                         text=True)
    assert out.returncode != 0 and "cannot write" in out.stderr and "File too large" in out.stderr
    assert _snapshot(path) == before


def test_a_pair_cut_between_its_two_moves_is_refused(tmp_path):
    path = _pair(tmp_path, torch.randn(4, 3), "c.json")
    torch.save(torch.randn(4, 3), path)   # the new tensor moved, the kill came before the sidecar's move
    with pytest.raises(DataError, match="disagree.*get_embeds.py --m minilm .*--overwrite"):
        sides.load_side(tmp_path, "d", "minilm:text")


def test_cluster_overwrite_that_fails_keeps_the_old_picks_and_run_refuses_other_anchor_counts(workdir, capsys,
                                                                                              monkeypatch):
    """Issue 29 #2: --nc 5, then --nc 12 failing: the pair stays the --nc 5 one, and --b 12 is refused."""
    assert cluster.main(["--m", "vis", "--d", "base", "--nc", "5", "-q"]) == 0
    out = Path("data/base_vis_img_cluster.pt")
    before = _snapshot(out)
    _fail(monkeypatch, stage=lambda p: p.suffix == ".pt")
    assert cluster.main(["--m", "vis", "--d", "base", "--nc", "12", "-q"]) == 1
    assert "disk full" in capsys.readouterr().err
    assert _snapshot(out) == before and json.loads(sidecar_path(out).read_text())["n_clusters"] == 5
    loaded = sides.load_side("data", "base", "vis:img")
    with pytest.raises(DataError, match=r"anchors of 5 clusters .*not of --b 12.*cluster.py --m vis --d base --nc 12"):
        sides.load_side_cluster("data", "base", loaded, 12, torch.arange(150))


def test_a_folder_named_summary_csv_lock_is_refused_before_any_computation(workdir, capsys):
    import run
    Path("results/summary.csv.lock").mkdir(parents=True)
    assert run.main(["--vid_model", "vis", "--text_model", "txt", "--base_data", "base", "--query_data", "query",
                     "--b", "30", "--q", "40", "--m", "linear", "-q"]) == 1
    err = capsys.readouterr().err
    assert "summary.csv.lock is a folder" in err and "Traceback" not in err
    assert not list(Path("results").glob("*.csv"))
