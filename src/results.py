"""The results store: every file run.py writes, its columns, summary.csv's lock and rules, and ``finished``.

- ``{seedwise_dir}/{run name}.csv``: a row per seed (``seedwise_columns``);
  ``{results_dir}/{run name}.csv``: the row averaged over seeds (``result_columns``);
  ``{results_dir}/summary.csv``: every run's averaged row, in order (its lock: ``summary.csv.lock``);
  ``{results_dir}/table.csv``, ``correlations.csv`` and the figures (``report_paths``).
- A run's three files follow the one write rule (``files.write_together``): its two CSVs are staged, then
  summary.csv's new copy (made under the lock), and the three move into place together, the summary last:
  a run whose summary row could not be written leaves no CSV behind.
- Results know their inputs: every row records, per side, the digest of the rows it was computed from
  (``source_inputs``, ``target_inputs``: the file's bytes, the sidecar's image ids, labels, classes, images
  and captions files, and the cluster picks when --c uses that side). ``finished(cfg)`` is true only when the
  result file, its summary row and those digests all agree with the files on disk now.
"""
import csv
import fcntl
import hashlib
import io
import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from . import metrics
from .errors import DataError, UsageError
from .files import (
    CORRELATIONS_NAME,
    SUMMARY_NAME,
    TABLE_NAME,
    load_tensor,
    read_sidecar,
    side_file,
    tensor_digest,
    write_together,
)
from .tasks import TASKS

_logger = logging.getLogger(__name__)

# The paper's columns in the paper's order, then the new ones appended.
PAPER_COLUMNS = ["Base data", "Query data", "Source model", "Target model", "method", "base_samples",
                 "query_samples", "clustering_mode", "stretch"]
METRIC_COLUMNS = ["matching_acc", "top_1", "top_5", "top_10"]
RUN_COLUMNS = ["restarts", "device", "seconds", "created", "config", "objective"]
SIDE_COLUMNS = ["task", "source_side", "target_side", "source_modality", "source_lang", "target_modality",
                "target_lang", "data_dir"]
# what else the run key hashes, so that table.csv can tell two runs apart: the group hash (its row), the
# method's non-default options (its column), the seeds
IDENTITY_COLUMNS = ["group", "method_options", "seeds", "base_seed", "permutations"]
# what the run was computed from: a digest per side (``input_digests``)
INPUT_COLUMNS = ["source_inputs", "target_inputs"]


def _score_names(task):
    return [c.name for c in TASKS[task].columns]


def seedwise_columns(permutations=0, task="captions"):
    return (PAPER_COLUMNS + ["seed1", "seed2"] + METRIC_COLUMNS + metrics.metric_columns(permutations)
            + _score_names(task) + RUN_COLUMNS + SIDE_COLUMNS + IDENTITY_COLUMNS + INPUT_COLUMNS)


def result_columns(permutations=0, task="captions"):
    return (PAPER_COLUMNS + METRIC_COLUMNS + metrics.metric_columns(permutations) + _score_names(task)
            + RUN_COLUMNS + SIDE_COLUMNS + IDENTITY_COLUMNS + INPUT_COLUMNS)


SEEDWISE_COLUMNS, RESULT_COLUMNS = seedwise_columns(), result_columns()


def report_paths(results_dir, figure_name="figure1.png"):
    """The report's files in a results folder."""
    d = Path(results_dir)
    return {"table": d / TABLE_NAME, "figure": d / figure_name, "correlations": d / CORRELATIONS_NAME}


# ----------------------------------------------------------------------------------------------------------
# What a run was computed from
# ----------------------------------------------------------------------------------------------------------

_DIGESTS = {}  # (path, size, mtime) -> digest: a file read once per process however many runs use it


def _file_digest(path):
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        obj = load_tensor(path)
        _DIGESTS[key] = tensor_digest(obj) if hasattr(obj, "view") else hashlib.sha1(path.read_bytes()).hexdigest()
    return _DIGESTS[key]


SOURCE_FIELDS = ("images", "captions", "image_ids", "labels", "classes", "descriptions_digest", "perturbation")


def side_inputs(data_dir, dataset, side, cluster=False):
    """The digest of what a side's rows are: its file's tensor, what its sidecar says they were made from, and
    (``cluster``) the cluster picks used as anchors. "" when a file is missing (such a run cannot be
    finished)."""
    path = side_file(data_dir, dataset, side)
    if not path.is_file():
        return ""
    try:
        parts = {"rows": _file_digest(path)}
        sidecar = read_sidecar(path)
        if sidecar is not None:
            parts.update({k: getattr(sidecar, k) for k in SOURCE_FIELDS})
        if cluster:
            picks = side_file(data_dir, dataset, side, cluster=True)
            parts["cluster"] = _file_digest(picks) if picks.is_file() else None
    except (DataError, OSError):
        return ""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def input_digests(cfg):
    """``{source_inputs, target_inputs}`` of a configuration, from the files on disk now."""
    out = {}
    datasets = list(dict.fromkeys([cfg.base_data] + ([] if cfg.one_sided else [cfg.query_data])))
    for role, side, mode in (("source", cfg.source, 1), ("target", cfg.target, 2)):
        if side is None:
            out[f"{role}_inputs"] = ""
            continue
        parts = [side_inputs(cfg.data_dir, d, side, cluster=d == cfg.base_data and not cfg.one_sided
                             and cfg.clustering_mode == mode) for d in datasets]
        out[f"{role}_inputs"] = "" if "" in parts else parts[0] if len(parts) == 1 else \
            hashlib.sha1(" ".join(parts).encode()).hexdigest()[:16]
    return out


# ----------------------------------------------------------------------------------------------------------
# Output folders, checked before any computation
# ----------------------------------------------------------------------------------------------------------

def lock_path(summary):
    return Path(summary).with_name(Path(summary).name + ".lock")


def check_output_dirs(*dirs):
    """The output folders must be folders we can write, and a summary.csv there one we can extend (its lock a
    file), found out before any computation (and before any of them is created)."""
    dirs = [Path(d) for d in dirs]
    for d in dirs:
        if d.exists() and not d.is_dir():
            raise UsageError(f"{d} is a file, not a folder: remove it or pass another output folder")
        summary = d / SUMMARY_NAME
        if summary.exists() and not summary.is_file():
            raise DataError(f"{summary} is not a file: remove it or pass another --results-dir")
        if lock_path(summary).exists() and not lock_path(summary).is_file():
            raise DataError(f"{lock_path(summary)} is a folder, but run.py locks summary.csv with a file of that "
                            f"name: move the folder away (or pass another --results-dir) and re-run")
        if summary.is_file():
            read_summary(summary)  # refuses a file that is not this project's CSV before anything runs
    for d in dirs:
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(f"cannot create the output folder {d} ({e.strerror}); pass another folder")
        if not os.access(d, os.W_OK | os.X_OK):
            raise DataError(f"cannot write in {d} (permission denied); pass another output folder")


def check_output_files(paths):
    """A file this run will write must not be a folder (found out before any computation)."""
    for path in map(Path, paths):
        if path.is_dir():
            raise DataError(f"{path} is a folder, but this run writes a file of that name there; move the folder "
                            f"away (or pass another output folder) and re-run")


# ----------------------------------------------------------------------------------------------------------
# summary.csv
# ----------------------------------------------------------------------------------------------------------

def _csv_text(rows, columns, header=True):
    buf = io.StringIO()
    pd.DataFrame(rows, columns=columns).to_csv(buf, index=False, header=header)
    return buf.getvalue()


def _whole_records(text):
    """(the rows of a CSV's text, None) when it is whole, else (None, why): a newline at its end, a comma CSV,
    every line with as many fields as the header. run.py writes every CSV whole (``write_together``), so a
    text that is not was cut afterwards (a copy or a disk that failed) or edited by hand."""
    if not text.endswith("\n"):
        return None, "ends in a cut line (no newline at its end: a write was interrupted)"
    try:
        records = list(csv.reader(io.StringIO(text)))
    except csv.Error as e:
        return None, f"is not a comma CSV ({e})"
    for i, r in enumerate(records[1:], start=2):
        if len(r) != len(records[0]):
            return None, f"has {len(r)} fields on line {i}, its header {len(records[0])}"
    return records, None


def read_summary(path):
    """summary.csv as (header, rows as lists of strings), checked to be this project's comma CSV: a header,
    every row with as many fields, a complete last line. Anything else is a DataError: such a file is never
    rewritten (it may be a hand-edited file, or one cut by a full disk)."""
    path = Path(path)
    # utf-8-sig: a file saved by a spreadsheet starts with a byte-order mark, which would glue itself to the
    # first column's name (and the rewrite would add a second "Base data" column)
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    keep = (f"{path} is kept as it is: move it away (or repair it) and re-run; the run's own CSVs are "
            f"written beside it either way")
    if not text:
        return None, []
    records, why = _whole_records(text)
    if why:
        raise DataError(f"{path} {why}. {keep}")
    header, body = records[0], records[1:]
    if len(header) < 2 or "method" not in header:
        raise DataError(f"{path} has no header of this project's columns (e.g. 'method'). {keep}")
    return header, body


@contextmanager
def summary_lock(path):
    """An exclusive lock on summary.csv (on a separate file, because a new copy replaces summary.csv)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = lock_path(path)
    if lock.is_dir():
        raise DataError(f"{lock} is a folder, but run.py locks summary.csv with a file of that name: move the "
                        f"folder away and re-run")
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _summary_with(path, row, columns):
    """The text of summary.csv with ``row`` added (old rows + the new one, the columns the union of both, in
    order), or None for a file that is not this project's CSV (a warning says so: it is kept as it is)."""
    path = Path(path)
    header, body = None, []
    if path.is_file():
        try:
            header, body = read_summary(path)
        except DataError as e:
            _logger.warning("%s", e)
            return None
    header = header or []
    union = header + [c for c in columns if c not in header]
    new = {c: row.get(c, "") for c in columns}
    old = pd.DataFrame(body, columns=header, dtype=str).reindex(columns=union, fill_value="") if header else None
    frame = pd.DataFrame([new]).astype(str).reindex(columns=union, fill_value="")
    merged = frame if old is None else pd.concat([old, frame], ignore_index=True)
    buf = io.StringIO()
    merged.to_csv(buf, index=False)
    return buf.getvalue()


def _text(text):
    return lambda f: f.write(text.encode("utf-8"))


def append_summary(path, row, columns=None):
    """Add one averaged row to summary.csv under its lock (shell loops finish at once); replaced by a complete
    new copy only. Returns False (with a warning) for a file that is not this project's CSV."""
    with summary_lock(path):
        text = _summary_with(path, row, list(columns or row.keys()))
        if text is None:
            return False
        write_together([(path, _text(text))])
        return True


# ----------------------------------------------------------------------------------------------------------
# A run's files
# ----------------------------------------------------------------------------------------------------------

def write_outputs(cfg, rows, avg):
    """seedwise/<name>.csv, results/<name>.csv and summary.csv's new copy, under the write rule: all three or
    none (summary.csv last, made under its lock)."""
    paths = cfg.output_paths()
    columns = result_columns(cfg.permutations, cfg.task)
    writes = [(paths["seedwise"], _text(_csv_text(rows, seedwise_columns(cfg.permutations, cfg.task)))),
              (paths["results"], _text(_csv_text([avg], columns)))]
    with summary_lock(paths["summary"]):
        summary = _summary_with(paths["summary"], avg, columns)
        write_together(writes + ([(paths["summary"], _text(summary))] if summary is not None else []))
    return paths


def cut_csv(path):
    """Why a per-run CSV of run.py's is not whole (``_whole_records``; or unreadable), or None: pandas would
    fill a cut last row with blanks."""
    try:
        return _whole_records(Path(path).read_text(encoding="utf-8-sig"))[1]
    except (OSError, UnicodeDecodeError) as e:
        return f"cannot be read ({type(e).__name__})"


def _rows(path):
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def finished(cfg):
    """Whether a configuration has its results from the inputs on disk now: ``seedwise/<name>.csv`` exists,
    ``results/<name>.csv`` is a CSV of one row whose ``config`` column is ``cfg.key()`` and whose input digests
    (``INPUT_COLUMNS``) are those of the files now, and summary.csv (when it is this project's CSV) holds that
    row. Otherwise a warning says why it is recomputed."""
    path = cfg.output_paths()["results"]
    if not path.is_file():
        return False
    seedwise = cfg.output_paths()["seedwise"]
    if not seedwise.is_file():  # written with the result: missing after a deletion, or under a new --seedwise-dir
        _logger.warning("%s has no per-seed rows beside it (%s is missing): it is not reused", path, seedwise)
        return False
    for written in (path, seedwise):
        cut = cut_csv(written)
        if cut:
            _logger.warning("%s %s (a write was cut): it is not reused", written, cut)
            return False
    rows = _rows(path)
    if len(rows) != 1 or rows[0].get("config") != cfg.key():
        _logger.warning("%s is not the result of configuration %s (config column %r): it is not reused", path,
                        cfg.key(), rows[0].get("config") if len(rows) == 1 else None)
        return False
    now = input_digests(cfg)
    recorded = {k: rows[0].get(k) for k in now}
    if recorded != now:
        why = ("it does not record its inputs' digests (made before they were recorded)"
               if not any(recorded.values()) else
               "its inputs changed since (" + ", ".join(k.split("_")[0] for k in now if recorded[k] != now[k])
               + " side re-extracted, edited or re-clustered)")
        _logger.warning("%s: %s: it is not reused", path, why)
        return False
    summary = cfg.output_paths()["summary"]
    if not summary.exists():
        _logger.warning("%s is missing (deleted or moved), so %s has no row there: it is not reused (its run "
                        "writes the row)", summary, path.name)
        return False
    try:
        header, body = read_summary(summary) if summary.is_file() else (None, [])
    except DataError:
        return True  # a summary.csv that is not this project's is never extended: the result file stands alone
    if header and "config" in header:
        want = {"config": cfg.key(), **now}
        cols = [header.index(c) for c in want if c in header]
        if any(all(r[i] == want[header[i]] for i in cols) for r in body):
            return True
    _logger.warning("%s has no row of %s (a run cut before its summary row): it is not reused", summary, path.name)
    return False
