"""Everything on disk: the one path builder, the sidecar type, atomic writes and checked reading.

Files (``data_dir`` defaults to ``data/``, results to ``results/`` and ``seedwise/``):

- ``{data_dir}/{dataset_tag(dataset)}[-{lang}]_{file_tag(model)}_{img|text}.pt``: a plain float32 N x D tensor (loadable
  exactly like the paper's files), and beside it ``.json``, its sidecar (``Sidecar``): which model, pooling,
  dataset and image ids (in row order), classes and labels produced it.
- ``..._{img|text}~{KIND}~{LEVEL}.pt``: the rows of an input perturbation (``src/perturb.py``; get_embeds.py
  --perturb), its sidecar recording kind, level and seed. Such a name ends in a number, never in ``_img`` or
  ``_text``, and ``~`` appears in no escaped model name (``names.file_tag``), so it cannot be another model's
  file. A row perturbation (``~swap:0.5``) reads the unperturbed file.
- ``..._{img|text}_cluster.pt``: anchor row indices (1-D int64), its sidecar ties it to the embeddings it was
  made from (their digest).
- ``{results_dir}/{run name}.csv`` (averaged over seeds), ``{seedwise_dir}/{run name}.csv`` (a row per
  seed), ``{results_dir}/summary.csv`` (every run's averaged row), ``table.csv`` and figures.

The rule for every write (docs/files.md states it): a file and the file that vouches for it (a tensor and its
sidecar; a run's CSVs and summary.csv) become visible together or not at all, a file alone complete or
unchanged; one function does every write (``write_together``). A failed write is one message (``write_error``:
"disk full", "permission denied", "is a folder") naming the file. The results store (run.py's CSVs,
summary.csv, ``finished``) is ``src/results.py``.
Every name that becomes part of a path goes through ``names.check_path_part``.
"""
import contextlib
import errno
import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional

import torch

from .errors import DataError, UsageError, reason, unreadable_why
from .names import check_path_part, dataset_tag, file_tag, parse_side, perturbation_tag

SIDECAR_VERSION = 2


# ----------------------------------------------------------------------------------------------------------
# Paths: the one builder
# ----------------------------------------------------------------------------------------------------------

def side_file(data_dir, dataset, side, cluster=False):
    """The file of a side (``MODEL:MODALITY[:LANG][~KIND:LEVEL]``, a Side or its text) of a dataset:
    ``{data_dir}/{dataset_tag(dataset[-lang])}_{file_tag(model)}_{modality}[~{KIND}~{LEVEL}][_cluster].pt``; the
    input kinds only (a row perturbation's rows are the unperturbed file's)."""
    side = parse_side(side).file_side
    check_path_part(dataset, "dataset")
    check_name_length(dataset_tag(side.dataset(dataset)), file_tag(side.model))
    name = (f"{dataset_tag(side.dataset(dataset))}_{file_tag(side.model)}_{side.modality}"
            + (f"~{perturbation_tag(side.perturbation)}" if side.perturbation else "")
            + ("_cluster" if cluster else ""))
    return Path(data_dir) / f"{name}.pt"


NAME_MAX = 255           # bytes in one file name on the usual file systems
MAX_SIDE_NAME = 100      # dataset tag + model tag: run.py's file names hold two of each, plus ~50 characters


def check_name_length(dataset, model):
    """The one length rule for names that become file names: a dataset name and a model name (as written in
    file names) of at most MAX_SIDE_NAME characters together, so that get_embeds.py's files and the run.py
    file names made of two such pairs fit in NAME_MAX (with the temporary name's prefix and suffix)."""
    n = len(dataset.encode()) + len(model.encode())
    if n > MAX_SIDE_NAME:
        raise UsageError(f"the dataset name ({dataset[:30]}{'...' if len(dataset) > 30 else ''}, {len(dataset)} "
                         f"characters) and the model name ({model[:30]}{'...' if len(model) > 30 else ''}, "
                         f"{len(model)}) are {n} characters together, more than the {MAX_SIDE_NAME} that file "
                         f"names allow here (run.py's names hold two of each): use a shorter --d, or copy the "
                         f"checkpoint to a shorter path (openclip:ARCH/FILE, --weights)")


def sidecar_path(path):
    return Path(path).with_suffix(".json")


SUMMARY_NAME, TABLE_NAME, CORRELATIONS_NAME = "summary.csv", "table.csv", "correlations.csv"
NOT_RESULTS = {SUMMARY_NAME, TABLE_NAME, CORRELATIONS_NAME}  # CSVs in results/ that are not one run's averaged row


def run_paths(results_dir, seedwise_dir, name):
    """The files of one run (configuration) named ``name``."""
    check_path_part(name, "run name")
    if len(f".{name}.csv.XXXXXXXX.tmp".encode()) > NAME_MAX:
        raise UsageError(f"the run's file name {name[:40]}... would be {len(name) + 4} characters, more than a file "
                         f"name may hold ({NAME_MAX}): use shorter dataset names (--base_data, --query_data) or "
                         f"model names")
    return {"seedwise": Path(seedwise_dir) / f"{name}.csv", "results": Path(results_dir) / f"{name}.csv",
            "summary": Path(results_dir) / SUMMARY_NAME}


# ----------------------------------------------------------------------------------------------------------
# Sidecars
# ----------------------------------------------------------------------------------------------------------

@dataclass
class Sidecar:
    """What an embeddings (or cluster) file was made from. Written and read only through this type.

    Version 1: the sidecars before this type (no ``version`` field), read the same way. Fields added within
    version 2 (``split``, ``descriptions_file``, ``descriptions_digest``, ``folded_batchnorm``) are optional:
    code that predates them keeps them in ``extra``, and their absence means what it meant before (no split,
    prompt templates, BatchNorm not folded).
    """
    version: int = SIDECAR_VERSION
    kind: str = "embeddings"                # "embeddings" or "cluster"
    # the model and how a row is made
    model: Optional[str] = None             # [random:]BASE[@LAYER]
    base: Optional[str] = None
    layer: Optional[str] = None
    init: Optional[str] = None              # "pretrained" or "random (torch.manual_seed(0))"
    family: Optional[str] = None
    hub_id: Optional[str] = None
    revision: Optional[str] = None
    weights: Optional[str] = None
    weights_flag: Optional[str] = None      # --weights as given (its real path), "" without it
    pooling: Optional[str] = None
    modality: Optional[str] = None
    precision: Optional[str] = None
    batch_size: Optional[int] = None
    folded_batchnorm: int | None = None     # image rows: BatchNorm layers folded into convolutions (src/fold.py)
    fold_bn: bool | None = None             # image rows: folding asked for (False: --no-fold-bn)
    versions: Optional[dict] = None
    created: Optional[str] = None
    # the data: rows in order
    dataset: Optional[str] = None
    images: Optional[str] = None
    captions: Optional[str] = None
    captions_digest: str | None = None      # captions data: sha1 of the captions file's bytes (an edit in place shows)
    images_stat: str | None = None          # sha1 of each row's image file: name, size, modification time
    image_ids: Optional[list] = None        # captions data: image id of each row; classes: "folder/file"
    files: Optional[list] = None            # captions data: the image file of each row (under ``images``)
    dropped: Optional[dict] = None
    dropped_files: list | None = None       # --skip-missing: the files of the dropped images (under ``images``)
    dropped_stat: str | None = None         # and their names, sizes and modification times ("missing" if none)
    n: Optional[int] = None
    d: Optional[int] = None
    dtype: Optional[str] = None
    file: Optional[str] = None
    # classification datasets
    task_data: Optional[str] = None         # "classes"
    classes: Optional[list] = None          # class names in label (and text row) order
    folders: Optional[list] = None
    classes_file: Optional[str] = None
    labels: Optional[list] = None           # image rows: class index of each row
    templates: Optional[list] = None        # text rows: the prompt templates
    templates_file: Optional[str] = None
    descriptions_file: str | None = None       # text rows: --descriptions (then templates is None)
    descriptions_digest: str | None = None     # sha1 of that file's bytes
    split: str | None = None                # tv: datasets: the split read (None: the class has no splits)
    # input perturbations (get_embeds.py --perturb): kind, level, seed, stage, meaning (perturb.Perturbation.record)
    perturbation: Optional[dict] = None
    # cluster files
    embeddings: Optional[str] = None        # the embeddings file's name
    digest: Optional[str] = None            # sha1 of the embeddings tensor's bytes
    # every file: sha1 of the bytes of the tensor beside this sidecar (``check_pair``)
    data_digest: Optional[str] = None
    rows: Optional[int] = None
    n_clusters: Optional[int] = None
    anchors: Optional[int] = None
    exact_count: Optional[bool] = None
    kmeans: Optional[str] = None
    extra: dict = field(default_factory=dict)  # fields this version does not know, kept as they are

    @classmethod
    def from_dict(cls, data, path="sidecar"):
        if not isinstance(data, dict):
            raise DataError(f"{path} holds a JSON {type(data).__name__}, not an object; {remake_hint(path)}")
        known = {f.name for f in fields(cls)} - {"extra"}
        side = cls(**{k: v for k, v in data.items() if k in known},
                   extra={k: v for k, v in data.items() if k not in known})
        if "version" not in data:
            side.version = 1
            if "embeddings" in data or "digest" in data:  # the cluster sidecars before this type had no kind
                side.kind = "cluster"
        side._check(path)
        return side

    def to_dict(self):
        out = {k: v for k, v in asdict(self).items() if k != "extra" and (v is not None or k == "revision")}
        out.update(self.extra)
        return out

    def _check(self, path):
        """Types of the fields that run.py relies on (a hand-edited sidecar gets a message, not a traceback)."""
        def bad(name, what):
            raise DataError(f"{path}: {name} must be {what}; {remake_hint(path, self.kind)}")
        if not isinstance(self.version, int) or isinstance(self.version, bool):
            bad("version", "a whole number")
        if self.version > SIDECAR_VERSION:
            raise DataError(f"{path} is a version {self.version} sidecar, newer than this code reads "
                            f"({SIDECAR_VERSION}); update the repository")
        for name in ("image_ids", "files", "labels", "classes", "folders", "templates", "dropped_files"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), list):
                bad(name, "a list")
        if self.image_ids is not None and not all(isinstance(i, (int, str)) and not isinstance(i, bool)
                                                  for i in self.image_ids):
            bad("image_ids", "a list of numbers or strings")
        if self.classes is not None and not all(isinstance(c, str) for c in self.classes):
            bad("classes", "a list of class names (strings)")
        if self.labels is not None:
            if not all(isinstance(x, int) and not isinstance(x, bool) for x in self.labels):
                bad("labels", "a list of class indices (whole numbers)")
            if self.labels and min(self.labels) < 0:
                bad("labels", "class indices of 0 or more")
            if self.classes is not None and self.labels and max(self.labels) >= len(self.classes):
                bad("labels", f"class indices in 0..{len(self.classes) - 1} (one per class in 'classes')")
            if self.image_ids is not None and len(self.image_ids) != len(self.labels):
                bad("labels", f"one class index per image row ({len(self.image_ids)} image_ids, "
                              f"{len(self.labels)} labels)")
        if self.dropped is not None and not isinstance(self.dropped, dict):
            bad("dropped", "an object (image id -> reason)")
        for name in ("n", "d", "rows"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                bad(name, "a whole number")
        if self.perturbation is not None and not (isinstance(self.perturbation, dict)
                                                  and {"kind", "level"} <= set(self.perturbation)):
            bad("perturbation", "an object with kind and level")
        for name in ("digest", "data_digest", "task_data", "model", "embeddings", "kind", "descriptions_digest",
                     "captions_digest", "images_stat", "dropped_stat"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                bad(name, "a string")

    def row_count(self):
        """How many rows the sidecar says its file has (None: it does not say)."""
        listed = self.image_ids if self.image_ids is not None else self.labels
        return len(listed) if listed is not None else self.n


def same_path(x, y):
    """Whether two recorded paths name one file or folder (as written, or the same one on disk)."""
    if os.path.normpath(x) == os.path.normpath(y):
        return True
    try:
        return os.path.samefile(x, y)
    except OSError:
        return False


def read_sidecar(path):
    """The Sidecar beside a file (its ``.json``), or None when there is none (e.g. the paper's files)."""
    side = sidecar_path(path)
    if not side.is_file():
        if side.exists():
            raise DataError(f"{side} is not a file; remove it")
        return None
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{side} is not valid JSON ({reason(e)}); {remake_hint(side)}")
    return Sidecar.from_dict(data, side)


def remake_hint(sidecar_file, kind=None):
    """How to replace a broken sidecar: cluster.py replaces its file on every run (it has no --overwrite);
    get_embeds.py skips a file that exists unless --overwrite."""
    cluster = kind == "cluster" or Path(sidecar_file).stem.endswith("_cluster")
    return ("re-run the cluster.py command that made it (it replaces the file)" if cluster else
            "re-run the get_embeds.py command that made it with --overwrite") + ", or fix the sidecar by hand"


def write_sidecar(path, sidecar: Sidecar):
    """A sidecar alone (a tensor and its sidecar go through ``save_with_sidecar``)."""
    _atomic(sidecar_path(path), _sidecar_write(sidecar))


# ----------------------------------------------------------------------------------------------------------
# Digests of the inputs a sidecar records
# ----------------------------------------------------------------------------------------------------------

def stat_digest(root, names, missing_ok=False):
    """sha1 of each file's name (under root), size and modification time: an image replaced or touched shows,
    at the cost of a stat (reading every image again would cost an extraction's reading). None when a file is
    missing, unless missing_ok (then "missing" is hashed for it: an image --skip-missing dropped because it
    was missing shows when it is put back)."""
    h = hashlib.sha1()
    for name in names:
        try:
            st = os.stat(os.path.join(root, name))
        except OSError:
            if not missing_ok:
                return None
            h.update(f"{name}\0missing\n".encode())
            continue
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def file_digest(path):
    """sha1 of a file's bytes (a descriptions file recorded in a sidecar)."""
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def tensor_digest(tensor):
    """sha1 of a tensor's bytes: ties a cluster file to the exact embeddings it was made from."""
    t = tensor.detach().cpu().contiguous()
    return hashlib.sha1(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"").hexdigest()


# ----------------------------------------------------------------------------------------------------------
# Writing: temporary file in the same folder, then os.replace
# ----------------------------------------------------------------------------------------------------------

def write_error(path, error):
    """The DataError for a write of ``path`` that failed with the OSError ``error``: one message that says
    what happened ("disk full", "permission denied", "is a folder") and that the old file is unchanged."""
    path = Path(path)
    kept = "nothing was changed" if not path.exists() else f"{path} is unchanged"
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return DataError(f"disk full: cannot write {path} ({error.strerror}); {kept}. Free some space (or pass "
                         f"another output folder) and re-run")
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return DataError(f"cannot write {path}: {error.strerror} (a read-only folder?); {kept}. Pass another "
                         f"output folder, or make {path.parent} writable, and re-run")
    if error.errno == errno.EISDIR or path.is_dir():
        return DataError(f"cannot write {path}: a folder of that name is in the way; move it away and re-run")
    return DataError(f"cannot write {path} ({error.strerror or reason(error)}); {kept}")


class _Recording:
    """A file object that remembers the OSError of a failed write: torch.save reports a failed write of its
    own as a RuntimeError ("file write failed") that does not say why."""

    def __init__(self, f):
        self._f, self.error = f, None

    def write(self, data):
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = e
            raise

    def __getattr__(self, name):
        return getattr(self._f, name)


def _stage(path, write):
    """Write through ``write(file)`` into a temporary file beside ``path`` (flushed to disk) and return its
    name; on failure the temporary file is removed and the error is one DataError naming ``path``."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"cannot write {path}: a folder of that name is in the way; move it away and re-run")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise write_error(path, e) from None
    umask = os.umask(0)
    os.umask(umask)
    f = None
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as raw:
            f = _Recording(raw)
            write(f)
            raw.flush()
            os.fsync(raw.fileno())
        return tmp
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        cause = e if isinstance(e, OSError) else (f.error if f is not None else None)
        if cause is not None:
            raise write_error(path, cause) from None
        raise


def write_together(writes):
    """THE write rule of this project, for a file alone and for a file with the file that vouches for it (a
    tensor and its sidecar; a run's CSVs and summary.csv): ``writes`` is [(path, write(file))], the data
    first and the vouching file last. Every file is written whole under a temporary name first (a full disk
    or a kill there leaves every old file as it was); then they are moved into place in that order, the old
    files kept as hard links until the last move succeeded, and put back if a move fails. A kill between two
    moves is the one window left: the sidecars record their data's digest (``data_digest``) and readers
    compare it (``check_pair``), so such a pair is refused, never used."""
    staged, backups, moved = [], {}, []
    try:
        for path, write in writes:
            staged.append((Path(path), _stage(path, write)))
        for path, _ in staged:
            if path.is_file():
                backup = path.with_name(f".{path.name}.{os.getpid()}.old")
                with contextlib.suppress(OSError):
                    if backup.exists():
                        backup.unlink()
                    os.link(path, backup)
                    backups[path] = backup
        for path, tmp in staged:
            try:
                os.replace(tmp, path)
            except OSError as e:
                raise write_error(path, e) from None
            moved.append(path)
    except BaseException:
        for path in reversed(moved):  # put the old pair back
            with contextlib.suppress(OSError):
                if path in backups:
                    os.replace(backups.pop(path), path)
                else:
                    path.unlink()
        raise
    finally:
        for _, tmp in staged:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        for backup in backups.values():
            with contextlib.suppress(OSError):
                backup.unlink()


def _atomic(path, write):
    """One file alone under the write rule (``write_together``)."""
    write_together([(path, write)])


def atomic_torch_save(obj, path):
    _atomic(path, lambda f: torch.save(obj, f))


def atomic_write_text(path, text):
    _atomic(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_bytes(path, data):
    _atomic(path, lambda f: f.write(data))


def _sidecar_write(sidecar):
    text = json.dumps(sidecar.to_dict(), indent=1) + "\n"
    return lambda f: f.write(text.encode("utf-8"))


def save_with_sidecar(obj, path, sidecar: "Sidecar"):
    """A tensor and its sidecar under the write rule: both new or both old. The sidecar records the tensor's
    digest (``data_digest``), so a reader can tell a pair that disagrees."""
    sidecar.version = SIDECAR_VERSION
    sidecar.data_digest = tensor_digest(obj)
    write_together([(path, lambda f: torch.save(obj, f)), (sidecar_path(path), _sidecar_write(sidecar))])


def save_embeddings(tensor, path, sidecar):
    """Write the N x D float32 tensor and its sidecar (a Sidecar or a dict of its fields) under the write
    rule."""
    tensor = tensor.detach().to("cpu", torch.float32).contiguous()
    if not isinstance(sidecar, Sidecar):
        sidecar = Sidecar.from_dict(dict(sidecar), path)
    sidecar.n, sidecar.d, sidecar.dtype, sidecar.file = int(tensor.shape[0]), int(tensor.shape[1]), "float32", \
        Path(path).name
    save_with_sidecar(tensor, path, sidecar)


def save_cluster(picks, path, embeddings_path, embeddings, n_clusters, exact_count, kmeans):
    """Write anchor row indices and their sidecar (with the digest of the embeddings they index) under the
    write rule."""
    save_with_sidecar(picks, path, Sidecar(kind="cluster", embeddings=Path(embeddings_path).name,
                                           digest=tensor_digest(embeddings), rows=int(embeddings.shape[0]),
                                           n_clusters=n_clusters, anchors=int(picks.numel()),
                                           exact_count=exact_count, kmeans=kmeans))


def check_pair(path, tensor, sidecar, fix):
    """A DataError when a file and its sidecar disagree: the sidecar records the digest of other data (a write
    cut between its two moves, or one of the two replaced by hand)."""
    if sidecar is not None and sidecar.data_digest is not None and sidecar.data_digest != tensor_digest(tensor):
        raise DataError(f"{path} and its sidecar {sidecar_path(path)} disagree: the sidecar describes other "
                        f"data (a write was cut between the two files, or one was replaced); {fix}")


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
        raise DataError(f"{path} {unreadable_why(e, path)}{hint}") from None
    return obj


def load_embeddings(path, fix=None):
    """An N x D floating tensor with finite values, on the CPU."""
    obj = load_tensor(path, fix)
    if not isinstance(obj, torch.Tensor) or obj.ndim != 2 or not obj.is_floating_point():
        what = f"a {obj.ndim}-D {obj.dtype} tensor" if isinstance(obj, torch.Tensor) else type(obj).__name__
        raise DataError(f"{path} holds {what}, not an N x D float tensor of embeddings"
                        + (f"; {fix}" if fix else ""))
    if obj.dtype in (torch.float16, torch.bfloat16):
        obj = obj.float()  # the math needs float32 or float64; half-precision files are valid input
    bad = nonfinite_rows(obj)
    if bad:
        try:
            sidecar = read_sidecar(path)
        except DataError:
            sidecar = None
        half = sidecar is not None and sidecar.precision not in (None, "fp32")
        raise DataError(f"{path} has NaN or inf in {len(bad)} row(s), first {bad[:5]}; "
                        f"{fix or 're-extract it with get_embeds.py --overwrite'}"
                        + (f" (with --precision fp32: it was made in {sidecar.precision}, and half precision can "
                           f"overflow)" if half else ""))
    return obj


def nonfinite_rows(rows):
    """Indices of the rows holding NaN or inf."""
    return torch.nonzero(~torch.isfinite(rows).all(dim=1)).flatten().tolist()


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
