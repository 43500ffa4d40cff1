"""The experiment of run.py: configurations -> groups -> seeds -> methods -> rows -> CSV files.

Configurations that differ only by method (and its options) form a group: their sides are loaded once, and
per seed the task draws anchors and queries once and the alignment metrics (``src/metrics.py``) are computed
once; then each method builds its graph, retrieval top-1/5/10 (-1 without a graph, as the paper's qap rows)
and matching accuracy. A one-sided task (``Task.sides == 1``, the probe) has no method: per seed it fills its
own score columns and leaves the matching and metric columns empty. Every configuration writes its own CSVs,
as the paper's run.py did.
"""
import csv
import fcntl
import io
import logging
import os
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import torch

from . import metrics
from .config import Config
from .errors import DataError, UsageError
from .files import SUMMARY_NAME, atomic_write_text
from .names import parse_side
from .retrieval import get_retrieval
from .sides import load_side, require_distinct
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


def _score_names(task):
    return [c.name for c in TASKS[task].columns]


def seedwise_columns(permutations=0, task="captions"):
    return (PAPER_COLUMNS + ["seed1", "seed2"] + METRIC_COLUMNS + metrics.metric_columns(permutations)
            + _score_names(task) + RUN_COLUMNS + SIDE_COLUMNS + IDENTITY_COLUMNS)


def result_columns(permutations=0, task="captions"):
    return (PAPER_COLUMNS + METRIC_COLUMNS + metrics.metric_columns(permutations) + _score_names(task)
            + RUN_COLUMNS + SIDE_COLUMNS + IDENTITY_COLUMNS)


SEEDWISE_COLUMNS, RESULT_COLUMNS = seedwise_columns(), result_columns()


# ----------------------------------------------------------------------------------------------------------
# Groups: loaded once, checked before any computation
# ----------------------------------------------------------------------------------------------------------

@dataclass
class Group:
    configs: list
    state: object = None   # the task's state (its prepare())

    @property
    def first(self):
        return self.configs[0]


class SideCache:
    """Every side file is read once per process, however many configurations use it (the levels of a row
    perturbation share the unperturbed file)."""

    def __init__(self, data_dir):
        self.data_dir, self.loaded = data_dir, {}

    def __call__(self, dataset, side):
        side = parse_side(side)
        key = (dataset, side.file_side)
        if key not in self.loaded:
            self.loaded[key] = load_side(self.data_dir, dataset, side.file_side)
        return replace(self.loaded[key], side=side)


def check_output_dirs(*dirs):
    """The output folders must be folders we can write, and a summary.csv there one we can extend, found
    out before any computation (and before any of them is created)."""
    dirs = [Path(d) for d in dirs]
    for d in dirs:
        if d.exists() and not d.is_dir():
            raise UsageError(f"{d} is a file, not a folder: remove it or pass another output folder")
        summary = d / SUMMARY_NAME
        if summary.exists() and not summary.is_file():
            raise DataError(f"{summary} is not a file: remove it or pass another --results-dir")
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


def prepare(configs):
    """Group the configurations, load and check every input. Raises before any computation."""
    for cfg in configs:
        cfg.check()
    check_output_dirs(*{d for c in configs for d in (c.results_dir, c.seedwise_dir)})
    check_output_files(p for c in configs for p in c.output_paths().values())
    caches, groups = {}, [Group(g) for g in group_configs(configs)]
    for group in groups:
        cfg = group.first
        load = caches.setdefault(cfg.data_dir, SideCache(cfg.data_dir))
        group.state = TASKS[cfg.task].prepare(cfg, load)
        if cfg.one_sided:
            continue
        same_space = [c.method for c in group.configs if c.method_instance().same_space]
        d_source, d_target = group.state.dims
        if same_space and d_source != d_target:
            raise DataError(f"--m {same_space[0]} compares the two spaces directly, but {cfg.source} gives "
                            f"{d_source} dimensions and {cfg.target} {d_target}; use it with one shared space "
                            f"(e.g. --vid_model clip --text_model clip) or another method")
    return groups


def group_configs(configs):
    """The configurations in groups that share loaded sides, draws and metrics (``Config.group_key()``), in
    the order they first appear."""
    groups = {}
    for cfg in configs:
        groups.setdefault(cfg.group_key(), []).append(cfg)
    return list(groups.values())


# ----------------------------------------------------------------------------------------------------------
# The seed loop
# ----------------------------------------------------------------------------------------------------------

def _common(cfg: Config, n_queries):
    """The columns that say what a row is; a one-sided task leaves the source, the method and the flags it
    does not use empty."""
    source, used = cfg.source, not cfg.one_sided
    return {"Base data": cfg.base_data, "Query data": cfg.query_data if used else "",
            "Source model": source.model if source else "", "Target model": cfg.target.model,
            "method": cfg.method, "base_samples": cfg.base_samples if used else "",
            "query_samples": n_queries, "clustering_mode": cfg.clustering_mode if used else "",
            "stretch": cfg.stretch, "task": cfg.task, "source_side": source.text if source else "",
            "target_side": cfg.target.text, "source_modality": source.modality if source else "",
            "source_lang": (source.lang if source else "") or "", "target_modality": cfg.target.modality,
            "target_lang": cfg.target.lang or "", "data_dir": cfg.data_dir, "group": cfg.group(),
            "method_options": cfg.changed_options(), "seeds": " ".join(map(str, cfg.seeds)),
            "base_seed": cfg.base_seed if used else "", "permutations": cfg.permutations}


def check_draw(draw, cfg, seed):
    """A draw whose anchors or queries on one side are all one vector collapses every method to tie-breaking
    (and the RBF bandwidth to 0): refused before its metrics, naming the seed."""
    fix = "draw with other --seeds / --base-seed, or use a side with more distinct rows"
    for rows, role, side in ((draw.sb, "anchors", cfg.source), (draw.tb, "anchors", cfg.target),
                             (draw.sq, "queries", cfg.source), (draw.tq, "queries", cfg.target)):
        require_distinct(rows, f"seed {seed}: the {rows.shape[0]} {role} drawn from {side}", fix)


def alignment(draw, permutations=0, seed=0, progress=False):
    """The registry's metrics of the paired anchors + queries (float64, CPU), with permutation nulls."""
    return metrics.metric_row(torch.cat([draw.sb, draw.sq]), torch.cat([draw.tb, draw.tq]), permutations, seed,
                              progress)


LONG_RUN_SECONDS = 60


def warn_long_runs(methods, draw, device, n_seeds):
    """A warning (stderr, also with -q) for each configuration whose method estimates more than
    LONG_RUN_SECONDS for its seeds, naming the flags that bound it (the method's ``cost_flags``)."""
    n_anchors, n_queries = draw.sb.shape[0], draw.sq.shape[0]
    for cfg, method in methods.items():
        seconds = method.estimate_seconds(n_anchors, n_queries, device)
        if seconds is None or seconds * n_seeds <= LONG_RUN_SECONDS:
            continue
        bound = f"; bound it with {' and '.join(method.cost_flags)}" if method.cost_flags else ""
        _logger.warning("%s %s -> %s: estimated %s for %d seed(s) of %d queries and %d anchors%s",
                        cfg.method, cfg.source, cfg.target, _duration(seconds * n_seeds), n_seeds, n_queries,
                        n_anchors, bound)


def _duration(seconds):
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def run_group(group: Group, device, progress=True):
    """Every seed of a group, every method per seed. Returns [(cfg, seedwise rows, averaged row)]."""
    cfg0 = group.first
    task = TASKS[cfg0.task]
    declared = [c.name for c in task.columns]
    created = datetime.now(UTC).isoformat(timespec="seconds")
    if cfg0.one_sided:
        return [_run_one_sided(cfg, task, group.state, device, created) for cfg in group.configs]
    methods = {cfg: cfg.method_instance() for cfg in group.configs}
    rows = {cfg: [] for cfg in group.configs}
    for seed in cfg0.seeds:
        draw = task.draw(group.state, cfg0, seed, device)
        check_draw(draw, cfg0, seed)
        if seed == cfg0.seeds[0]:
            warn_long_runs(methods, draw, device, len(cfg0.seeds))
        values = alignment(draw, cfg0.permutations, seed=seed, progress=progress)
        for cfg, method in methods.items():
            t0 = time.perf_counter()
            graph = method.graph(draw, device)
            top_1, top_5, top_10 = get_retrieval(graph) if graph is not None else (-1, -1, -1)
            acc, info = method.match(draw, graph, device, seed, progress)
            seconds = time.perf_counter() - t0
            scores = draw.score(info["assignment"]) if draw.score is not None else {}
            _check_declared(task, scores)
            row = dict(_common(cfg, draw.sq.shape[0]),
                       seed1=cfg.base_seed if "base_seed" in task.uses else "", seed2=seed,
                       matching_acc=acc, top_1=top_1, top_5=top_5, top_10=top_10, **values,
                       **{c: scores.get(c, "") for c in declared},
                       restarts=info.get("restarts", ""), device=str(device), seconds=round(seconds, 3),
                       created=created, config=cfg.key(), objective=info.get("objective", ""))
            _logger.info("%s %s -> %s seed %s: matching %.4f top1 %s (%.1f s)", cfg.method, cfg.source,
                         cfg.target, seed, acc, top_1, seconds)
            rows[cfg].append(row)
    return [(cfg, r, average(r, cfg.permutations, cfg.task)) for cfg, r in rows.items()]


def _check_declared(task, scores):
    """A task may fill only the score columns it declares (a typo would otherwise add a column silently)."""
    undeclared = sorted(set(scores) - {c.name for c in task.columns})
    if undeclared:
        raise TypeError(f"task {task.name} scored column(s) {undeclared} that it does not declare in its columns")


def _run_one_sided(cfg, task, state, device, created):
    """A one-sided configuration: per seed the task's own score columns, no draw, metrics or matching."""
    declared = [c.name for c in task.columns]
    rows = []
    for seed in cfg.seeds:
        t0 = time.perf_counter()
        scores = task.score(state, cfg, seed, device)
        _check_declared(task, scores)
        seconds = time.perf_counter() - t0
        row = dict(_common(cfg, ""), seed1="", seed2=seed, **{c: "" for c in METRIC_COLUMNS},
                   **{c: "" for c in metrics.metric_columns(cfg.permutations)},
                   **{c: scores.get(c, "") for c in declared}, restarts="", device=str(device),
                   seconds=round(seconds, 3), created=created, config=cfg.key(), objective="")
        _logger.info("%s %s seed %s: %s (%.1f s)", task.name, cfg.target, seed,
                     ", ".join(f"{c} {v:.4f}" for c, v in scores.items()), seconds)
        rows.append(row)
    return cfg, rows, average(rows, cfg.permutations, cfg.task)


def average(rows, permutations=0, task="captions"):
    """The paper's averaged row: metrics averaged over seeds (a task's score columns as it declares), seconds
    summed."""
    avg = {k: v for k, v in rows[0].items() if k not in ("seed1", "seed2")}
    averages = {c: (lambda vals: sum(vals) / len(vals))
                for c in METRIC_COLUMNS + metrics.metric_columns(permutations) + ["restarts", "objective"]}
    averages.update({c.name: c.average for c in TASKS[task].columns})
    for k, how in averages.items():
        vals = [r[k] for r in rows if r.get(k, "") != ""]
        avg[k] = how(vals) if vals else ""
    avg["seconds"] = round(sum(r["seconds"] for r in rows), 3)
    return avg


# ----------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------

def _csv_text(rows, columns, header=True):
    buf = io.StringIO()
    pd.DataFrame(rows, columns=columns).to_csv(buf, index=False, header=header)
    return buf.getvalue()


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
    if not text.endswith("\n"):
        raise DataError(f"{path} ends in a cut line (no newline at the end: a write was interrupted). {keep}")
    try:
        records = list(csv.reader(io.StringIO(text)))
    except csv.Error as e:
        raise DataError(f"{path} is not a comma CSV ({e}). {keep}")
    header, body = records[0], records[1:]
    if len(header) < 2 or "method" not in header:
        raise DataError(f"{path} has no header of this project's columns (e.g. 'method'). {keep}")
    for i, r in enumerate(body, start=2):
        if len(r) != len(header):
            raise DataError(f"{path}: line {i} has {len(r)} fields, its header {len(header)}. {keep}")
    return header, body


def append_summary(path, row, columns=None):
    """Add one averaged row to summary.csv under an exclusive lock (shell loops finish at once).

    The file is only ever replaced by a complete new copy (old rows + the new one, the columns the union of
    both, in order), so it is whole after any failure; one that is not this project's CSV is kept as it is
    (a warning says so) and not extended. The lock is on a separate file because the copy replaces
    summary.csv.
    """
    path = Path(path)
    columns = list(columns or row.keys())
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            header, body = None, []
            if path.is_file():
                try:
                    header, body = read_summary(path)
                except DataError as e:
                    _logger.warning("%s", e)
                    return False
            header = header or []
            union = header + [c for c in columns if c not in header]
            new = {c: row.get(c, "") for c in columns}
            old = pd.DataFrame(body, columns=header, dtype=str).reindex(columns=union, fill_value="") \
                if header else None
            frame = pd.DataFrame([new]).astype(str).reindex(columns=union, fill_value="")
            merged = frame if old is None else pd.concat([old, frame], ignore_index=True)
            buf = io.StringIO()
            merged.to_csv(buf, index=False)
            atomic_write_text(path, buf.getvalue())
            return True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def run_and_write(groups, device, progress=True):
    """Every prepared group's seeds and methods; each configuration's CSVs written as its group ends. Yields
    (cfg, averaged row, its paths) as each is written, so a caller that is stopped knows what was."""
    for group in groups:
        for cfg, rows, avg in run_group(group, device, progress=progress):
            yield cfg, avg, write_outputs(cfg, rows, avg)


def finished(cfg: Config):
    """Whether a configuration has its results: ``results/<name>.csv`` (the name ends in the run key) is a
    CSV of one row whose ``config`` column is ``cfg.key()``. Its seedwise CSV was written before it, and a
    killed job never leaves a partial file (atomic writes), so such a file is a finished run."""
    path = cfg.output_paths()["results"]
    if not path.is_file():
        return False
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error):
        rows = []
    if len(rows) == 1 and rows[0].get("config") == cfg.key():
        return True
    _logger.warning("%s is not the result of configuration %s (config column %r): it is recomputed", path,
                    cfg.key(), rows[0].get("config") if len(rows) == 1 else None)
    return False


def write_outputs(cfg: Config, rows, avg):
    """seedwise/<name>.csv and results/<name>.csv (replaced atomically), one row added to summary.csv."""
    paths = cfg.output_paths()
    atomic_write_text(paths["seedwise"], _csv_text(rows, seedwise_columns(cfg.permutations, cfg.task)))
    atomic_write_text(paths["results"], _csv_text([avg], result_columns(cfg.permutations, cfg.task)))
    append_summary(paths["summary"], avg, result_columns(cfg.permutations, cfg.task))
    return paths

