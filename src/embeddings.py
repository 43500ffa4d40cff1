"""Embedding and cluster files: names, atomic writes, provenance sidecars, checked loading.

``{data_dir}/{dataset}_{model}_{img|text}.pt`` holds a plain float32 N x D tensor (loadable exactly like
the paper's files); beside it ``..._{img|text}.json`` says which model, pooling, dataset and image ids
(in row order) produced it. Cluster picks go to ``{dataset}_{model}_{img|text}_cluster.pt`` (1-D int64).
"""
import hashlib
import json
import os
import shlex
import tempfile
from pathlib import Path

import torch

from .errors import DataError
from .names import file_tag

MODALITIES = ("img", "text")


def embedding_path(data_dir, dataset, model, modality):
    """``{data_dir}/{dataset}_{file_tag(model)}_{modality}.pt``: the one place a file name is built from a
    model name (``model`` is the name as the user writes it, e.g. ``hf:org/x@encoder.layer.6``)."""
    assert modality in MODALITIES, modality
    return Path(data_dir) / f"{dataset}_{file_tag(model)}_{modality}.pt"


def cluster_path(data_dir, dataset, model, modality):
    assert modality in MODALITIES, modality
    return Path(data_dir) / f"{dataset}_{file_tag(model)}_{modality}_cluster.pt"


def sidecar_path(path):
    return Path(path).with_suffix(".json")


def get_embeds_command(dataset, model, path=None):
    """The command that writes an embeddings file. ``path``: that file, to name its folder (--data-dir when
    it is not data/), to read its sidecar (a classification dataset takes --images ROOT alone) and, when it
    exists but is unusable, to add --overwrite (without it get_embeds.py would skip the file)."""
    cmd = f"python get_embeds.py --m {shlex.quote(str(model))} --d {shlex.quote(str(dataset))}"
    if dataset not in ("coco", "nocaps"):
        classes = False
        if path is not None:
            try:
                classes = json.loads(sidecar_path(path).read_text()).get("task_data") == "classes"
            except (OSError, ValueError, AttributeError):
                pass
        cmd += " --images ROOT" if classes else " --images DIR --captions FILE"
    if path is not None:
        if Path(path).parent != Path("data"):
            cmd += f" --data-dir {shlex.quote(str(Path(path).parent))}"
        if Path(path).exists():
            cmd += " --overwrite"
    return cmd


def cluster_command(dataset, model, modality, n_clusters):
    return f"python cluster.py --m {model} --d {dataset} --nc {n_clusters}" + (" -t" if modality == "text" else "")


def tensor_digest(tensor):
    """sha1 of a tensor's bytes: ties a cluster file to the exact embeddings it was made from."""
    t = tensor.detach().cpu().contiguous()
    return hashlib.sha1(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"").hexdigest()


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


def atomic_write_bytes(path, data):
    _atomic(path, lambda f: f.write(data))


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
    if obj.dtype in (torch.float16, torch.bfloat16):
        obj = obj.float()  # the math needs float32 or float64; half-precision files are valid input
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
    if obj.unique().numel() != obj.numel():
        raise DataError(f"{path} lists {obj.numel() - obj.unique().numel()} row index(es) more than once "
                        f"(repeated anchors inflate CKA); " + (fix or "re-run cluster.py"))
    return obj
