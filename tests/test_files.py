"""src/files.py: the one path builder, the versioned sidecar type, atomic writes and checked loading."""
import errno
import json
import os
from pathlib import Path

import pytest
import torch

from src import files
from src.errors import DataError
from src.files import Sidecar, read_sidecar, save_embeddings, side_file


def test_one_path_builder():
    assert side_file("data", "flickr1k", "minilm:text") == Path("data/flickr1k_minilm_text.pt")
    assert side_file("d", "flickr1k", "use:text:de") == Path("d/flickr1k-de_use_text.pt")
    assert side_file("d", "x", "hf:org/m@enc.3:img", cluster=True) == Path("d/x_hf~org+m@enc.3_img_cluster.pt")
    paths = files.run_paths("r", "s", "name")
    assert paths == {"seedwise": Path("s/name.csv"), "results": Path("r/name.csv"),
                     "summary": Path("r/summary.csv")}


def test_sidecar_round_trip_and_versions(tmp_path):
    X = torch.randn(3, 4)
    save_embeddings(X, tmp_path / "a.pt", Sidecar(model="m", image_ids=[1, 2, 3], modality="text"))
    side = read_sidecar(tmp_path / "a.pt")
    assert side.version == files.SIDECAR_VERSION and (side.n, side.d, side.file) == (3, 4, "a.pt")
    assert side.image_ids == [1, 2, 3] and side.row_count() == 3
    # a sidecar from before the type (no version field) reads as version 1; unknown fields are kept
    (tmp_path / "old.json").write_text(json.dumps({"model": "m", "image_ids": [5], "custom": 1}))
    old = read_sidecar(tmp_path / "old.pt")
    assert old.version == 1 and old.extra == {"custom": 1} and old.to_dict()["custom"] == 1
    (tmp_path / "new.json").write_text(json.dumps({"version": files.SIDECAR_VERSION + 1}))
    with pytest.raises(DataError, match="newer than this code reads"):
        read_sidecar(tmp_path / "new.pt")
    assert read_sidecar(tmp_path / "none.pt") is None


@pytest.mark.parametrize("data, message", [
    ([1, 2], "not an object"),
    ({"image_ids": 7}, "image_ids must be a list"),
    ({"labels": ["a"]}, "labels must be a list of class indices"),
    ({"labels": [0, 3], "classes": ["a", "b"]}, "labels must be class indices in 0..1"),
    ({"labels": [-1], "classes": ["a"]}, "labels must be class indices in 0..0"),
    ({"classes": [1, 2]}, "classes must be a list of class names"),
    ({"digest": 5}, "digest must be a string"),
])
def test_sidecars_of_the_wrong_types_are_data_errors(tmp_path, data, message):
    (tmp_path / "a.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=message):
        read_sidecar(tmp_path / "a.pt")


def test_a_write_that_fails_half_way_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "t.csv"
    files.atomic_write_text(path, "old\n")

    real_fdopen = os.fdopen

    class FullDisk:
        """The temporary file takes 3 bytes, then the disk is full."""
        def __init__(self, fd, mode):
            self.f = real_fdopen(fd, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[:3])
            self.f.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fdopen", FullDisk)
    with pytest.raises(OSError, match="No space left"):
        files.atomic_write_text(path, "new text\n")
    monkeypatch.undo()
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["t.csv"]


def test_checked_loading(tmp_path):
    torch.save(torch.tensor([[1.0, float("nan")]]), tmp_path / "nan.pt")
    with pytest.raises(DataError, match="NaN or inf in 1 row"):
        files.load_embeddings(tmp_path / "nan.pt")
    torch.save(torch.arange(3), tmp_path / "int.pt")
    with pytest.raises(DataError, match="not an N x D float tensor"):
        files.load_embeddings(tmp_path / "int.pt")
    torch.save(torch.tensor([0, 2, 2]), tmp_path / "c.pt")
    with pytest.raises(DataError, match="more than once"):
        files.load_cluster(tmp_path / "c.pt", 5)
    with pytest.raises(DataError, match="does not exist; make it with X"):
        files.load_embeddings(tmp_path / "missing.pt", "make it with X")
