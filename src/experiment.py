"""The experiment of run.py: method registry, configurations, the seed loop, CSV rows and files.

A configuration is one method on one pair of sides (source, target), one task and one (base data, query
data). Configurations that differ only by method form a group: their sides are loaded once, and per seed
the anchors and queries are drawn once and the alignment metrics (``src/metrics.py``) computed once;
then each method builds its Q x Q graph, retrieval top-1/5/10 (-1 for qap, as the paper) and matching
accuracy. Every configuration writes its own CSVs, as the paper's run.py did.
"""
import fcntl
import hashlib
import io
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

import pandas as pd
import torch

from . import matching, metrics, utils
from .embeddings import atomic_write_text
from .errors import DataError, UsageError
from .names import Side, file_tag, parse_side
from .sides import load_side
from .tasks import TASKS

_logger = logging.getLogger(__name__)

# The paper's columns in the paper's order, then the new ones appended.
PAPER_COLUMNS = ["Base data", "Query data", "Source model", "Target model", "method", "base_samples",
                 "query_samples", "clustering_mode", "stretch"]
METRIC_COLUMNS = ["matching_acc", "top_1", "top_5", "top_10"]
RUN_COLUMNS = ["image_acc", "restarts", "device", "seconds", "created", "config", "objective"]
SIDE_COLUMNS = ["task", "source_side", "target_side", "source_modality", "source_lang", "target_modality",
                "target_lang", "data_dir"]


def seedwise_columns(permutations=0):
    return (PAPER_COLUMNS + ["seed1", "seed2"] + METRIC_COLUMNS + metrics.metric_columns(permutations)
            + RUN_COLUMNS + SIDE_COLUMNS)


def result_columns(permutations=0):
    return PAPER_COLUMNS + METRIC_COLUMNS + metrics.metric_columns(permutations) + RUN_COLUMNS + SIDE_COLUMNS


SEEDWISE_COLUMNS, RESULT_COLUMNS = seedwise_columns(), result_columns()


# ----------------------------------------------------------------------------------------------------------
# Methods: name -> (graph, retrieval, matching). A new method is one entry.
# ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Method:
    graph: Optional[Callable]          # (sb, tb, sq, tq, device) -> Q x Q graph, or None
    retrieval: Callable                # graph -> (top1, top5, top10)
    matching: Callable                 # (sb, tb, sq, tq, graph, device, options) -> (acc, info)
    description: str
    same_space: bool = False           # compares the two sides directly: needs equal dimensions


def _hungarian(sb, tb, sq, tq, graph, device, options):
    acc, assignment = matching.hungarian(graph)
    return acc, {"assignment": assignment}


def _no_retrieval(graph):
    return -1, -1, -1


def _qap(sb, tb, sq, tq, graph, device, options):
    return matching.qap(sb, tb, sq, tq, device, restarts=options["restarts"], seed=options["seed"],
                        solver=options["qap_solver"], init=options["qap_init"],
                        patience=options["qap_patience"], polish=options["qap_polish"],
                        progress=options["progress"])


METHODS = {
    "linear": Method(utils.linear_baseline, utils.get_retrieval, _hungarian,
                     "least squares from source to target on the anchors, then cosine"),
    "cos": Method(utils.cos_baseline, utils.get_retrieval, _hungarian,
                  "cosine between the two spaces directly (only meaningful for a shared space, e.g. CLIP)",
                  same_space=True),
    "relative": Method(utils.relative_baseline, utils.get_retrieval, _hungarian,
                       "relative representations: cosine to the anchors on each side, then cosine"),
    "linear_local_CKA": Method(utils.linear_local_CKA, utils.get_retrieval, _hungarian,
                               "linear CKA of [query; anchors] on both sides, for every pair"),
    "kernel_local_CKA": Method(utils.kernel_local_CKA, utils.get_retrieval, _hungarian,
                               "RBF-kernel CKA of [query; anchors] on both sides, for every pair"),
    "qap": Method(None, _no_retrieval, _qap,
                  "seeded graph matching (FAQ) of the two centred RBF kernels, anchors fixed"),
}


# ----------------------------------------------------------------------------------------------------------
# Configuration and names
# ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Config:
    method: str
    source: Side
    target: Side
    base_samples: int = 320
    query_samples: int = 500
    clustering_mode: int = 0
    base_data: str = "coco"
    query_data: str = "nocaps"
    stretch: bool = False
    seeds: tuple = (0, 1, 2)
    base_seed: int = 0
    restarts: int = 500
    qap_solver: str = "fast"
    qap_init: str = "randomized"
    qap_patience: Optional[int] = 10
    qap_polish: bool = False
    task: str = "captions"
    permutations: int = 0
    data_dir: str = "data"
    results_dir: str = "results"
    seedwise_dir: str = "seedwise"

    def __post_init__(self):
        object.__setattr__(self, "source", parse_side(self.source))
        object.__setattr__(self, "target", parse_side(self.target))
        object.__setattr__(self, "seeds", tuple(self.seeds))

    @classmethod
    def paper(cls, text_model, vid_model, vtl=False, **kw):
        """The paper's flags as two sides: source {text_model}:text, target {vid_model}:img, -vtl swaps."""
        text, img = Side(text_model, "text"), Side(vid_model, "img")
        return cls(source=img if vtl else text, target=text if vtl else img, **kw)

    @property
    def paper_style(self):
        """Captions against images with no language: the paper's setting, named as the paper's code did."""
        return (self.task == "captions" and not self.source.lang and not self.target.lang
                and {self.source.modality, self.target.modality} == {"text", "img"})

    @property
    def vtl(self):
        return self.paper_style and self.source.modality == "img"

    def identity(self):
        """What changes the numbers (paths other than the data folder, and the device, do not). Paper-style
        runs hash exactly the keys they always did, so their file names stay the same."""
        ident = {k: v for k, v in asdict(self).items() if k in (
            "method", "base_samples", "query_samples", "clustering_mode", "base_data", "query_data", "stretch",
            "seeds", "base_seed")}
        ident["seeds"] = list(self.seeds)
        if self.paper_style:
            text, img = (self.target, self.source) if self.vtl else (self.source, self.target)
            ident.update(vid_model=img.model, text_model=text.model, vtl=self.vtl)
        else:
            ident.update(source=self.source.text, target=self.target.text, task=self.task)
        if self.permutations:
            ident["permutations"] = self.permutations
        if os.path.realpath(self.data_dir) != os.path.realpath("data"):
            ident["data_dir"] = os.path.realpath(self.data_dir)  # another folder: another name
        if self.method == "qap":
            ident.update(restarts=self.restarts, qap_solver=self.qap_solver, qap_init=self.qap_init,
                         qap_patience=self.qap_patience, qap_polish=self.qap_polish)
        return ident

    def config_hash(self):
        return hashlib.sha1(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:8]

    def _side_part(self, side):
        if self.paper_style:
            return file_tag(side.model)
        return ".".join([file_tag(side.model), side.modality] + ([side.lang] if side.lang else []))

    def name(self):
        """A file name a reader recognises; the hash keeps two different configurations apart."""
        parts = [self.base_data, self.query_data, self._side_part(self.source), self._side_part(self.target),
                 self.method, f"b{self.base_samples}"]
        # the class tasks query every class that is not an anchor: --q does not apply there
        parts += [f"q{self.query_samples}", f"c{self.clustering_mode}"] if TASKS[self.task].uses_query_samples else []
        parts += ["str"] if self.stretch else []
        parts += ["vtl"] if self.vtl else []
        parts += [self.task] if self.task != "captions" else []
        return "_".join(map(str, parts + [self.config_hash()]))

    def group_key(self):
        """Everything but the method: configurations with one key share loading, draws and metrics."""
        return replace(self, method="", restarts=0, qap_solver="", qap_init="", qap_patience=None,
                       qap_polish=False)

    def output_paths(self):
        return {"seedwise": Path(self.seedwise_dir) / f"{self.name()}.csv",
                "results": Path(self.results_dir) / f"{self.name()}.csv",
                "summary": Path(self.results_dir) / "summary.csv"}


def check_config(cfg: Config):
    """Flag checks that need no file."""
    if cfg.task not in TASKS:
        raise UsageError(f"--task {cfg.task}: use one of {', '.join(TASKS)}")
    if cfg.clustering_mode not in (0, 1, 2):
        raise UsageError(f"--c {cfg.clustering_mode}: use 0 (random anchors), 1 (source clusters) or 2 "
                         f"(target clusters)")
    for flag, v in (("--b", cfg.base_samples), ("--q", cfg.query_samples)):
        if v < 1:
            raise UsageError(f"{flag} {v}: must be at least 1")
    if cfg.permutations < 0:
        raise UsageError(f"--permutations {cfg.permutations}: must be 0 or more")
    if cfg.task != "captions" and {cfg.source.modality, cfg.target.modality} != {"img", "text"}:
        raise UsageError(f"--task {cfg.task} matches images to class names: one side must be MODEL:img and "
                         f"the other MODEL:text (got {cfg.source} and {cfg.target})")
    if cfg.task != "captions" and (cfg.clustering_mode or cfg.stretch):
        raise UsageError(f"--task {cfg.task} draws anchor classes by seed: --c and -str apply to captions runs")
    if cfg.method == "kernel_local_CKA" and cfg.base_samples < 2:
        raise UsageError("--m kernel_local_CKA needs at least 2 anchors (its RBF bandwidth is the median "
                         "distance within [query; anchors]): raise --b")
    if cfg.method == "qap":
        matching.check_qap_options(restarts=cfg.restarts, solver=cfg.qap_solver, init=cfg.qap_init,
                                   patience=cfg.qap_patience, polish=cfg.qap_polish)


def check_output_dirs(*dirs):
    """The output folders must be folders we can write, found out before any computation (and before
    any of them is created)."""
    dirs = [Path(d) for d in dirs]
    for d in dirs:
        if d.exists() and not d.is_dir():
            raise UsageError(f"{d} is a file, not a folder: remove it or pass another output folder")
        summary = d / "summary.csv"
        if summary.exists() and not summary.is_file():
            raise DataError(f"{summary} is not a file: remove it or pass another --results-dir")
    for d in dirs:
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(f"cannot create the output folder {d} ({e.strerror}); pass another folder")
        if not os.access(d, os.W_OK | os.X_OK):
            raise DataError(f"cannot write in {d} (permission denied); pass another output folder")


# ----------------------------------------------------------------------------------------------------------
# Groups: loaded once, checked before any computation
# ----------------------------------------------------------------------------------------------------------

@dataclass
class Group:
    configs: list
    state: dict = field(default_factory=dict)

    @property
    def first(self):
        return self.configs[0]


class SideCache:
    """Every side file is read once per process, however many configurations use it."""

    def __init__(self, data_dir):
        self.data_dir, self.loaded = data_dir, {}

    def __call__(self, dataset, side):
        key = (dataset, side)
        if key not in self.loaded:
            self.loaded[key] = load_side(self.data_dir, dataset, side)
        return self.loaded[key]


def prepare(configs):
    """Group the configurations, load and check every input. Raises before any computation."""
    for cfg in configs:
        check_config(cfg)
    check_output_dirs(*{d for c in configs for d in (c.results_dir, c.seedwise_dir)})
    caches, groups = {}, {}
    for cfg in configs:
        groups.setdefault(cfg.group_key(), Group([])).configs.append(cfg)
    for key, group in groups.items():
        cfg = group.first
        load = caches.setdefault(cfg.data_dir, SideCache(cfg.data_dir))
        group.state = TASKS[cfg.task].prepare(cfg, load)
        same_space = [c.method for c in group.configs if METHODS[c.method].same_space]
        pools = group.state.get("pools")
        if same_space and pools is not None and pools[0].shape[1] != pools[1].shape[1]:
            raise DataError(f"--m {same_space[0]} compares the two spaces directly, but {cfg.source} gives "
                            f"{pools[0].shape[1]} dimensions and {cfg.target} {pools[1].shape[1]}; use it with "
                            f"one shared space (e.g. --vid_model clip --text_model clip) or another method")
    return list(groups.values())


# ----------------------------------------------------------------------------------------------------------
# The seed loop
# ----------------------------------------------------------------------------------------------------------

def _common(cfg):
    return {"Base data": cfg.base_data, "Query data": cfg.query_data, "Source model": cfg.source.model,
            "Target model": cfg.target.model, "method": cfg.method, "base_samples": cfg.base_samples,
            "query_samples": cfg.query_samples, "clustering_mode": cfg.clustering_mode, "stretch": cfg.stretch,
            "task": cfg.task, "source_side": cfg.source.text, "target_side": cfg.target.text,
            "source_modality": cfg.source.modality, "source_lang": cfg.source.lang or "",
            "target_modality": cfg.target.modality, "target_lang": cfg.target.lang or "",
            "data_dir": cfg.data_dir}


def alignment(draw, permutations=0, seed=0):
    """The registry's metrics of the paired anchors + queries (float64, CPU), with permutation nulls."""
    return metrics.metric_row(torch.cat([draw.sb, draw.sq]), torch.cat([draw.tb, draw.tq]), permutations, seed)


def run_group(group: Group, device, progress=True):
    """Every seed of a group, every method per seed. Returns [(cfg, seedwise rows, averaged row)]."""
    cfg0 = group.first
    task = TASKS[cfg0.task]
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rows = {cfg: [] for cfg in group.configs}
    for seed2 in cfg0.seeds:
        draw = task.draw(group.state, cfg0, seed2, device)
        values = alignment(draw, cfg0.permutations, seed=seed2)
        for cfg in group.configs:
            method = METHODS[cfg.method]
            options = {"restarts": cfg.restarts, "qap_solver": cfg.qap_solver, "qap_init": cfg.qap_init,
                       "qap_patience": cfg.qap_patience, "qap_polish": cfg.qap_polish, "progress": progress,
                       "seed": seed2}
            t0 = time.perf_counter()
            graph = method.graph(draw.sb, draw.tb, draw.sq, draw.tq, device) if method.graph is not None else None
            top_1, top_5, top_10 = method.retrieval(graph)
            acc, info = method.matching(draw.sb, draw.tb, draw.sq, draw.tq, graph, device, options)
            seconds = time.perf_counter() - t0
            extra = draw.score(info["assignment"]) if draw.score is not None else {}
            row = dict(_common(cfg), seed1=cfg.base_seed if cfg.task == "captions" else "", seed2=seed2,
                       matching_acc=acc, top_1=top_1, top_5=top_5, top_10=top_10, **values,
                       image_acc=extra.get("image_acc", ""), restarts=info.get("restarts", ""),
                       device=str(device), seconds=round(seconds, 3), created=created,
                       config=cfg.config_hash(), objective=info.get("objective", ""))
            row.update(draw.extra)  # class tasks: query_samples = the number of query classes
            _logger.info("%s %s -> %s seed %s: matching %.4f top1 %s (%.1f s)", cfg.method, cfg.source,
                         cfg.target, seed2, acc, top_1, seconds)
            rows[cfg].append(row)
    return [(cfg, r, average(r, cfg.permutations)) for cfg, r in rows.items()]


def average(rows, permutations=0):
    """The paper's averaged row: metrics averaged over seeds, seconds summed."""
    avg = {k: v for k, v in rows[0].items() if k not in ("seed1", "seed2")}
    for k in METRIC_COLUMNS + metrics.metric_columns(permutations) + ["image_acc", "restarts", "objective"]:
        vals = [r[k] for r in rows if r.get(k, "") != ""]
        avg[k] = sum(vals) / len(vals) if vals else ""
    avg["seconds"] = round(sum(r["seconds"] for r in rows), 3)
    return avg


# ----------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------

def _csv_text(rows, columns, header=True):
    buf = io.StringIO()
    pd.DataFrame(rows, columns=columns).to_csv(buf, index=False, header=header)
    return buf.getvalue()


def append_summary(path, row, columns=None):
    """Append one averaged row to summary.csv under an exclusive lock (shell loops finish at once).

    When the row's columns differ from the file's header (a run that adds a column, an older file), the
    file is rewritten with the union of the columns, so pandas can always read it. The lock is on a
    separate file because the rewrite replaces summary.csv.
    """
    path = Path(path)
    columns = list(columns or row.keys())
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            header = None
            if path.is_file() and path.stat().st_size:
                with open(path, encoding="utf-8") as f:
                    header = f.readline().rstrip("\r\n")
            if header is None:
                atomic_write_text(path, _csv_text([row], columns))
            elif header.split(",") == columns:
                with open(path, "a", encoding="utf-8") as f:
                    f.write(_csv_text([row], columns, header=False))
            else:
                old = pd.read_csv(path, dtype=str, keep_default_na=False)
                union = list(old.columns) + [c for c in columns if c not in old.columns]
                new = pd.DataFrame([{c: row.get(c, "") for c in columns}]).astype(str)
                merged = pd.concat([old, new], ignore_index=True).reindex(columns=union).fillna("")
                buf = io.StringIO()
                merged.to_csv(buf, index=False)
                atomic_write_text(path, buf.getvalue())
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_outputs(cfg: Config, rows, avg):
    """seedwise/<name>.csv and results/<name>.csv (replaced atomically), one row appended to summary.csv."""
    paths = cfg.output_paths()
    atomic_write_text(paths["seedwise"], _csv_text(rows, seedwise_columns(cfg.permutations)))
    atomic_write_text(paths["results"], _csv_text([avg], result_columns(cfg.permutations)))
    append_summary(paths["summary"], avg, result_columns(cfg.permutations))
    return paths
