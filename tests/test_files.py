"""src/files.py and src/names.py under faults: every write is whole or leaves the old file, a failed write is
one message, sidecars of the wrong JSON types are refused by name, names cannot leave their folder."""
import errno
import json
import pickle
from pathlib import Path

import pytest
import torch

from src import files
from src.errors import DataError, UsageError, reason
from src.files import (
    Sidecar,
    atomic_torch_save,
    atomic_write_text,
    load_tensor,
    read_sidecar,
    save_embeddings,
    side_file,
)
from src.names import Side, check_path_part, parse_side


def _fails_half_way(err):
    """A write function that writes part of its bytes and then fails as a full disk (or err) would."""
    def write(f):
        f.write(b"Base data,Query data\nhalf a ro")
        raise OSError(err, "simulated")
    return write


# ----------------------------------------------------------------------------------------------------------
# The rule for every write
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("err, needle", [(errno.ENOSPC, "disk full"), (errno.EACCES, "a read-only folder?"),
                                         (errno.EROFS, "a read-only folder?"), (errno.EIO, "cannot write")])
def test_a_write_that_fails_half_way_leaves_the_old_file(tmp_path, err, needle):
    path = tmp_path / "summary.csv"
    path.write_text("old,file\n1,2\n")
    with pytest.raises(DataError) as e:
        files._atomic(path, _fails_half_way(err))
    assert needle in str(e.value) and str(path) in str(e.value) and "is unchanged" in str(e.value)
    assert path.read_text() == "old,file\n1,2\n"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.csv"]  # the temporary file is gone


def test_torch_save_on_a_full_disk_says_disk_full(tmp_path, monkeypatch):
    # torch.save reports a failed write of its stream as its own RuntimeError; the message must still say why
    path = tmp_path / "x.pt"
    atomic_torch_save(torch.ones(3), path)

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

    real = files._Recording.__init__
    monkeypatch.setattr(files._Recording, "__init__", lambda self, f: real(self, Full(f)))
    with pytest.raises(DataError, match="disk full: cannot write .*x.pt"):
        atomic_torch_save(torch.zeros(1000), path)
    assert torch.equal(torch.load(path), torch.ones(3))


def test_a_folder_in_the_way_is_named(tmp_path):
    (tmp_path / "table.csv").mkdir()
    with pytest.raises(DataError, match="a folder of that name is in the way"):
        atomic_write_text(tmp_path / "table.csv", "x")


def test_a_folder_that_cannot_be_made(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DataError, match="cannot write"):
        atomic_write_text(tmp_path / "afile" / "y.csv", "x")


def test_an_interrupted_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")

    def killed(f):
        f.write(b"new, half")
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        files._atomic(path, killed)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


# ----------------------------------------------------------------------------------------------------------
# Reading tensors: pickles and truncated files in words
# ----------------------------------------------------------------------------------------------------------

class _Payload:
    def __reduce__(self):
        return (print, ("PAYLOAD RAN",))


def test_pickled_files_are_refused_without_torchs_unsafe_advice(tmp_path, capsys):
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_Payload()))
    objects = tmp_path / "objects.pt"
    torch.save({"w": object()}, objects)
    for path in (raw, objects):
        with pytest.raises(DataError) as e:
            load_tensor(path)
        msg = str(e.value)
        assert "holds pickled Python objects" in msg and "could run code" in msg
        assert "weights_only" not in msg and "\x1b" not in msg and "\n" not in msg
    assert "PAYLOAD RAN" not in capsys.readouterr().out


@pytest.mark.parametrize("cut", ["zip", "empty", "garbage"])
def test_truncated_or_corrupt_files(tmp_path, cut):
    path = tmp_path / "x.pt"
    torch.save(torch.zeros(100, 10), path)
    data = {"zip": path.read_bytes()[:300], "empty": b"", "garbage": b"not a torch file"}[cut]
    path.write_bytes(data)
    with pytest.raises(DataError, match="is truncated or corrupt"):
        load_tensor(path)


def test_reason_is_one_clean_sentence():
    text = reason(ValueError("\x1b[1mWeights only load failed.\x1b[0m Re-running with weights_only=False\nmore"))
    assert text == "ValueError: Weights only load failed."
    long = reason(RuntimeError("word " * 100))
    assert long.endswith(" ...") and "wor ..." not in long and len(long) < 200


# ----------------------------------------------------------------------------------------------------------
# Sidecars of the wrong JSON types: one message naming the field and the fix
# ----------------------------------------------------------------------------------------------------------

BASE = {"model": "m", "image_ids": [1, 2, 3]}


@pytest.mark.parametrize("data, needle", [
    ([BASE], "holds a JSON list, not an object"),
    ("text", "holds a JSON str, not an object"),
    (dict(BASE, image_ids=5), "image_ids must be a list"),
    (dict(BASE, image_ids="1 2 3"), "image_ids must be a list"),
    (dict(BASE, image_ids=[1, [2], 3]), "image_ids must be a list of numbers or strings"),
    (dict(BASE, labels=[0, 1, 5], classes=["a", "b"]), "class indices in 0..1"),
    (dict(BASE, labels=[0, -1, 1], classes=["a", "b"]), "class indices of 0 or more"),
    (dict(BASE, labels=[0, -1, 1]), "class indices of 0 or more"),
    (dict(BASE, labels=["a", "b", "a"], classes=["a", "b"]), "labels must be a list of class indices"),
    (dict(BASE, labels=3), "labels must be a list"),
    (dict(BASE, labels=[0, 1], classes=["a", "b"]), "one class index per image row"),
    (dict(BASE, classes="a b"), "classes must be a list"),
    (dict(BASE, n=-3), "n must be a whole number"),
    (dict(BASE, n=True), "n must be a whole number"),
    (dict(BASE, dropped=[1, 2]), "dropped must be an object"),
    (dict(BASE, model=7), "model must be a string"),
    (dict(BASE, version="2"), "version must be a whole number"),
])
def test_sidecars_of_the_wrong_types(tmp_path, data, needle):
    path = tmp_path / "d_m_img.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError) as e:
        files.read_sidecar(tmp_path / "d_m_img.pt")
    assert needle in str(e.value) and str(path) in str(e.value)
    assert "get_embeds.py command that made it with --overwrite" in str(e.value)


def test_a_broken_cluster_sidecar_names_cluster_py_without_overwrite(tmp_path):
    # cluster.py has no --overwrite (it always replaces its file): the hint must not name that flag for it
    for data in ([1], {"embeddings": 5}, {"kind": "cluster", "digest": 3}):
        (tmp_path / "d_m_img_cluster.json").write_text(json.dumps(data))
        with pytest.raises(DataError) as e:
            files.read_sidecar(tmp_path / "d_m_img_cluster.pt")
        assert "re-run the cluster.py command that made it" in str(e.value) and "--overwrite" not in str(e.value)


def test_old_cluster_sidecars_read_as_cluster_sidecars(tmp_path):
    side = Sidecar.from_dict({"embeddings": "x_m_img.pt", "n_clusters": 3}, "p")
    assert side.kind == "cluster" and side.version == 1 and side.digest is None


# ----------------------------------------------------------------------------------------------------------
# Names that become part of a path: one rule
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../x/ok", "a/b", "..", ".", "", "a\\b", "-x", " a", "a ", "a\nb", "a\x00b"])
def test_names_that_would_leave_their_folder(name):
    with pytest.raises(UsageError, match="becomes part of a file name"):
        check_path_part(name, "--base_data")
    with pytest.raises(UsageError):
        files.side_file("data", name, "m:img")
    with pytest.raises(UsageError):
        files.run_paths("results", "seedwise", name)


@pytest.mark.parametrize("name", ["coco", "flickr1k-de", "caltech101", "x.y_z", "ÄÖ"])
def test_ordinary_names_pass(name):
    assert check_path_part(name) == name


@pytest.mark.parametrize("lang", ["a/../../E", "..", "de_x", "de x", "-de"])
def test_languages_are_tags(lang):
    with pytest.raises(UsageError, match="a language is letters and digits"):
        parse_side(f"txt:text:{lang}")


def test_languages_that_are_tags():
    assert [parse_side(f"use:text:{lang}").lang for lang in ("de", "zh", "pt-BR", "zh-Hans")] == \
        ["de", "zh", "pt-BR", "zh-Hans"]


def test_model_names_stay_inside_the_data_folder(tmp_path):
    # file_tag escapes / and \\ in a model name: every side file stays directly in the data folder
    for model in ("hf:../../x", "hf:a/b/../c", "random:..\\x", "hf:org/x@a.b"):
        path = files.side_file(tmp_path, "d", Side(model, "img"))
        assert path.parent == tmp_path and "/" not in path.name and "\\" not in path.name


def test_save_embeddings_writes_sidecar_and_tensor_whole(tmp_path, monkeypatch):
    path = tmp_path / "d_m_img.pt"
    save_embeddings(torch.ones(3, 2), path, {"model": "m", "image_ids": [1, 2, 3]})

    def full_disk(obj, f):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(files.torch, "save", full_disk)
    with pytest.raises(DataError, match="disk full"):
        save_embeddings(torch.zeros(3, 2), path, {"model": "m", "image_ids": [1, 2, 3]})
    assert torch.equal(torch.load(path), torch.ones(3, 2))


# ----------------------------------------------------------------------------------------------------------
# Paths, sidecar versions, checked loading
# ----------------------------------------------------------------------------------------------------------

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
