"""Embedding and cluster files: names, atomic writes, provenance sidecars, checked loading.

``{data_dir}/{dataset}_{model}_{img|text}.pt`` holds a plain float32 N x D tensor (loadable exactly like
the paper's files); beside it ``..._{img|text}.json`` says which model, pooling, dataset and image ids
(in row order) produced it. Cluster picks go to ``{dataset}_{model}_{img|text}_cluster.pt`` (1-D int64).
"""
import json
import os
import tempfile
from pathlib import Path

import torch

from .errors import DataError

MODALITIES = ("img", "text")


def embedding_path(data_dir, dataset, model, modality):
    assert modality in MODALITIES, modality
    return Path(data_dir) / f"{dataset}_{model}_{modality}.pt"


def cluster_path(data_dir, dataset, model, modality):
    assert modality in MODALITIES, modality
    return Path(data_dir) / f"{dataset}_{model}_{modality}_cluster.pt"


def sidecar_path(path):
    return Path(path).with_suffix(".json")


def get_embeds_command(dataset, model):
    return f"python get_embeds.py --m {model} --d {dataset}"


def cluster_command(dataset, model, modality, n_clusters):
    return f"python cluster.py --m {model} --d {dataset} --nc {n_clusters}" + (" -t" if modality == "text" else "")


# ----------------------------------------------------------------------------------------------------------
# Writing: temporary file in the same folder, then os.replace, so a killed job never leaves a truncated
# file that later looks finished.
# ----------------------------------------------------------------------------------------------------------

def _atomic(path, write):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_torch_save(obj, path):
    _atomic(path, lambda f: torch.save(obj, f))


def atomic_write_text(path, text):
    _atomic(path, lambda f: f.write(text.encode("utf-8")))


def save_embeddings(tensor, path, meta):
    """Write the N x D float32 tensor and its JSON sidecar (sidecar first: a .pt never lacks one)."""
    tensor = tensor.detach().to("cpu", torch.float32).contiguous()
    meta = dict(meta, n=int(tensor.shape[0]), d=int(tensor.shape[1]), dtype="float32", file=Path(path).name)
    atomic_write_text(sidecar_path(path), json.dumps(meta, indent=1) + "\n")
    atomic_torch_save(tensor, path)


# ----------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------

def load_tensor(path, fix=None):
    """torch.load(weights_only=True) with one clear message for a missing, unreadable or non-tensor file."""
    path = Path(path)
    hint = f"; {fix}" if fix else ""
    if not path.is_file():
        raise DataError(f"{path} does not exist{hint}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated, pickled objects refused by weights_only, ...
        raise DataError(f"{path} cannot be read as a tensor file ({type(e).__name__}: {str(e)[:200]}){hint}")
    return obj


def load_sidecar(path):
    """The JSON sidecar beside an embeddings file, or None when there is none (e.g. the paper's files)."""
    side = sidecar_path(path)
    if not side.is_file():
        return None
    try:
        return json.loads(side.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{side} is not valid JSON ({e}); delete it or re-run get_embeds.py --overwrite")


def load_embeddings(path, fix=None):
    """An N x D floating tensor with finite values, on the CPU."""
    obj = load_tensor(path, fix)
    if not isinstance(obj, torch.Tensor) or obj.ndim != 2 or not obj.is_floating_point():
        what = f"a {obj.ndim}-D {obj.dtype} tensor" if isinstance(obj, torch.Tensor) else type(obj).__name__
        raise DataError(f"{path} holds {what}, not an N x D float tensor of embeddings"
                        + (f"; {fix}" if fix else ""))
    bad = ~torch.isfinite(obj).all(dim=1)
    if bad.any():
        rows = torch.nonzero(bad).flatten().tolist()
        raise DataError(f"{path} has NaN or inf in {len(rows)} row(s), first {rows[:5]}; "
                        f"re-extract it with get_embeds.py --overwrite (try --precision fp32)")
    return obj


def load_cluster(path, n_rows, fix=None):
    """Anchor row indices as a 1-D int64 tensor, checked to fit embeddings of n_rows rows. A plain list of
    ints (the paper's format) is accepted; the paper's lists of NumPy integers are refused by
    weights_only loading, and the message says to re-run cluster.py."""
    obj = load_tensor(path, fix)
    if isinstance(obj, (list, tuple)):
        obj = torch.tensor(obj)
    if not isinstance(obj, torch.Tensor) or obj.ndim != 1 or obj.is_floating_point():
        raise DataError(f"{path} is not a 1-D integer tensor of row indices" + (f"; {fix}" if fix else ""))
    obj = obj.to(torch.int64)
    if obj.numel() and (obj.min() < 0 or obj.max() >= n_rows):
        raise DataError(f"{path} holds row indices outside 0..{n_rows - 1} of its embeddings; "
                        + (fix or "re-run cluster.py"))
    return obj


def check_pair(path_a, meta_a, path_b, meta_b):
    """Refuse two embedding files whose sidecars show different images or a different row order."""
    if meta_a is None or meta_b is None:
        return  # plain tensors such as the paper's: rows are paired by position
    ids_a, ids_b = meta_a.get("image_ids"), meta_b.get("image_ids")
    if ids_a is None or ids_b is None or ids_a == ids_b:
        return
    if sorted(map(str, ids_a)) == sorted(map(str, ids_b)):
        problem = "the same images in a different row order"
    else:
        only_a = len(set(map(str, ids_a)) - set(map(str, ids_b)))
        only_b = len(set(map(str, ids_b)) - set(map(str, ids_a)))
        problem = f"different images ({only_a} only in the first, {only_b} only in the second)"
    raise DataError(f"{path_a} and {path_b} cannot be paired row by row: their sidecars show {problem}. "
                    f"Re-extract both with the same get_embeds.py dataset flags (and --skip-missing for both)")
