"""The experiment of run.py: method registry, inputs, the seed loop, CSV rows and files.

One run = one method on one (text model, vision model, base data, query data) configuration over several
query seeds. Per seed: anchors and queries (``get_data_sep``), the method's Q x Q graph, retrieval
top-1/5/10 (-1 for qap, as the paper), matching accuracy, and linear / kernel CKA of the paired
anchors + queries (the x-axis of the paper's Figure 1).
"""
import fcntl
import hashlib
import io
import json
import logging
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

import pandas as pd
import torch
from scipy.optimize import linear_sum_assignment

from . import qap as fastqap
from . import utils
from .errors import DataError, UsageError
from .embeddings import (atomic_write_text, check_pair, cluster_command, cluster_path, embedding_path,
                         get_embeds_command, load_cluster, load_embeddings, load_sidecar)

_logger = logging.getLogger(__name__)

# The paper's columns in the paper's order, then the new ones appended.
PAPER_COLUMNS = ["Base data", "Query data", "Source model", "Target model", "method", "base_samples",
                 "query_samples", "clustering_mode", "stretch"]
METRIC_COLUMNS = ["matching_acc", "top_1", "top_5", "top_10"]
NEW_COLUMNS = ["linear_cka", "kernel_cka", "restarts", "device", "seconds", "created", "config", "objective"]
SEEDWISE_COLUMNS = PAPER_COLUMNS + ["seed1", "seed2"] + METRIC_COLUMNS + NEW_COLUMNS
RESULT_COLUMNS = PAPER_COLUMNS + METRIC_COLUMNS + NEW_COLUMNS


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
    return utils.linear_matching(sb, tb, sq, tq, graph, device), {}


def _no_retrieval(graph):
    return -1, -1, -1


WARM_GRAPHS = {"relative": utils.relative_baseline, "linear_local_CKA": utils.linear_local_CKA,
               "kernel_local_CKA": utils.kernel_local_CKA}
QAP_INITS = ("randomized", "barycenter") + tuple(WARM_GRAPHS)


def _qap(sb, tb, sq, tq, graph, device, options):
    """Seeded graph matching: the paper's scipy FAQ, or the batched solver of src/qap.py."""
    restarts, seed, init = options["restarts"], options["seed"], options["qap_init"]
    progress = options.get("progress", True)
    if options["qap_solver"] == "scipy":
        return utils.qap_matching(sb, tb, sq, tq, None, device, restarts=restarts, seed=seed,
                                  progress=progress, return_info=True)
    A, B, shuffle, n_base = utils.qap_inputs(sb, tb, sq, tq, device)
    warm, kind = None, init
    if init in WARM_GRAPHS:
        # one Hungarian assignment on the cheap graph, in the shuffled target order the problem uses
        g = WARM_GRAPHS[init](sb, tb, sq, tq, device).detach().cpu().double()
        warm = linear_sum_assignment(g[:, shuffle].numpy(), maximize=True)[1]
        kind = "warm"
    res = fastqap.seeded_qap(A.double(), B.double(), n_base, restarts=restarts, init=kind, warm=warm,
                             seed=seed, patience=options.get("qap_patience"))
    col_ind, objective = res.col_ind, res.objective
    if options.get("qap_polish"):
        col_ind, objective, _ = fastqap.two_opt(A, B, n_base, col_ind)
    acc = utils.qap_accuracy(col_ind, shuffle.numpy(), n_base)
    return acc, {"objective": objective, "restarts": res.restarts}


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

@dataclass
class Config:
    method: str = "linear"
    base_samples: int = 320
    query_samples: int = 500
    clustering_mode: int = 0
    vid_model: str = "dinov2"
    text_model: str = "allroberta"
    base_data: str = "coco"
    query_data: str = "nocaps"
    stretch: bool = False
    vtl: bool = False
    seeds: tuple = (0, 1, 2)
    base_seed: int = 0
    restarts: int = 500
    qap_solver: str = "fast"
    qap_init: str = "randomized"
    qap_patience: Optional[int] = 10
    qap_polish: bool = False
    data_dir: str = "data"
    results_dir: str = "results"
    seedwise_dir: str = "seedwise"

    # what changes the numbers (paths and the device do not)
    _identity = ("method", "base_samples", "query_samples", "clustering_mode", "vid_model", "text_model",
                 "base_data", "query_data", "stretch", "vtl", "seeds", "base_seed")
    _qap_identity = ("restarts", "qap_solver", "qap_init", "qap_patience", "qap_polish")

    @property
    def source_model(self):
        return self.vid_model if self.vtl else self.text_model

    @property
    def target_model(self):
        return self.text_model if self.vtl else self.vid_model

    def identity(self):
        keys = self._identity + (self._qap_identity if self.method == "qap" else ())
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if k in keys}

    def config_hash(self):
        return hashlib.sha1(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:8]

    def name(self):
        """A file name a reader recognises; the hash keeps two different configurations apart."""
        parts = [self.base_data, self.query_data, self.source_model, self.target_model, self.method,
                 f"b{self.base_samples}", f"q{self.query_samples}", f"c{self.clustering_mode}"]
        parts += ["str"] if self.stretch else []
        parts += ["vtl"] if self.vtl else []
        return "_".join(map(str, parts + [self.config_hash()]))

    def output_paths(self):
        return {"seedwise": Path(self.seedwise_dir) / f"{self.name()}.csv",
                "results": Path(self.results_dir) / f"{self.name()}.csv",
                "summary": Path(self.results_dir) / "summary.csv"}


# ----------------------------------------------------------------------------------------------------------
# Inputs: the four embedding files (two when base and query are one dataset), checked
# ----------------------------------------------------------------------------------------------------------

@dataclass
class Inputs:
    source_base: torch.Tensor
    target_base: torch.Tensor
    source_query: torch.Tensor
    target_query: torch.Tensor
    source_cluster: Optional[torch.Tensor] = None
    target_cluster: Optional[torch.Tensor] = None


def _load_dataset(data_dir, dataset, text_model, vid_model):
    """(text, img) embeddings of one dataset, rows paired and checked."""
    loaded = {}
    for modality, model in (("text", text_model), ("img", vid_model)):
        path = embedding_path(data_dir, dataset, model, modality)
        fix = f"make it with: {get_embeds_command(dataset, model)}"
        loaded[modality] = (path, load_embeddings(path, fix), load_sidecar(path))
    (tp, text, tmeta), (ip, img, imeta) = loaded["text"], loaded["img"]
    if text.shape[0] != img.shape[0]:
        raise DataError(f"{tp} has {text.shape[0]} rows but {ip} has {img.shape[0]}: text and image "
                        f"embeddings must pair row by row; re-extract both over the same images")
    check_pair(tp, tmeta, ip, imeta)
    return text, img


def load_inputs(cfg: Config) -> Inputs:
    """Load and check everything run.py needs before any computation or writing."""
    if cfg.clustering_mode not in (0, 1, 2):
        raise UsageError(f"--c {cfg.clustering_mode}: use 0 (random anchors), 1 (source clusters) or 2 (target clusters)")
    for flag, v in (("--b", cfg.base_samples), ("--q", cfg.query_samples)):
        if v < 1:
            raise UsageError(f"{flag} {v}: must be at least 1")
    if cfg.method == "qap" and cfg.qap_solver == "scipy":
        if cfg.qap_init != "randomized":
            raise UsageError(f"--qap-init {cfg.qap_init} needs --qap-solver fast "
                             f"(scipy runs the paper's randomized starts)")
        if cfg.qap_polish:
            raise UsageError("--qap-polish needs --qap-solver fast")
    same = cfg.base_data == cfg.query_data
    base_text, base_img = _load_dataset(cfg.data_dir, cfg.base_data, cfg.text_model, cfg.vid_model)
    if same:
        query_text, query_img = base_text, base_img
    else:
        query_text, query_img = _load_dataset(cfg.data_dir, cfg.query_data, cfg.text_model, cfg.vid_model)

    n_base, n_query = base_text.shape[0], query_text.shape[0]
    if same and cfg.base_samples + cfg.query_samples > n_base:
        raise DataError(f"{cfg.base_samples} anchors + {cfg.query_samples} queries = "
                        f"{cfg.base_samples + cfg.query_samples} rows, but {cfg.base_data} has only {n_base}; "
                        f"lower --b or --q")
    if not same and cfg.base_samples > n_base:
        raise DataError(f"{cfg.base_samples} anchors, but {cfg.base_data} has only {n_base} rows; lower --b")
    if not same and cfg.query_samples > n_query:
        raise DataError(f"{cfg.query_samples} queries, but {cfg.query_data} has only {n_query} rows; lower --q")

    if METHODS[cfg.method].same_space and base_text.shape[1] != base_img.shape[1]:
        raise DataError(f"--m {cfg.method} compares the two spaces directly, but {cfg.text_model} gives "
                        f"{base_text.shape[1]} dimensions and {cfg.vid_model} {base_img.shape[1]}; use it with "
                        f"one shared space (e.g. --vid_model clip --text_model clip) or another method")

    # source = text, target = image (-vtl swaps the roles)
    if cfg.vtl:
        inputs = Inputs(base_img, base_text, query_img, query_text)
    else:
        inputs = Inputs(base_text, base_img, query_text, query_img)

    if cfg.clustering_mode in (1, 2):
        # the paper's code read both cluster files always; only the one used is needed
        use_source = cfg.clustering_mode == 1
        text_side = use_source != cfg.vtl
        model, modality = (cfg.text_model, "text") if text_side else (cfg.vid_model, "img")
        path = cluster_path(cfg.data_dir, cfg.base_data, model, modality)
        fix = f"make it with: {cluster_command(cfg.base_data, model, modality, cfg.base_samples)}"
        picks = load_cluster(path, n_base, fix)
        if same and n_base - cfg.base_samples < cfg.query_samples:
            raise DataError(f"{n_base} rows cannot hold {cfg.base_samples} anchors + {cfg.query_samples} queries")
        if picks.numel() > cfg.base_samples:
            raise DataError(f"{path} holds {picks.numel()} anchors, more than --b {cfg.base_samples}; "
                            f"re-run: {cluster_command(cfg.base_data, model, modality, cfg.base_samples)}")
        if picks.numel() != cfg.base_samples:
            _logger.warning("%s holds %d distinct anchors (k-means centres that share a nearest row are "
                            "merged, as in the paper); --b %d is kept in the CSV", path, picks.numel(),
                            cfg.base_samples)
        if use_source:
            inputs.source_cluster = picks
        else:
            inputs.target_cluster = picks
    return inputs


# ----------------------------------------------------------------------------------------------------------
# The seed loop
# ----------------------------------------------------------------------------------------------------------

def run(cfg: Config, inputs: Inputs, device, progress=True):
    """Run every seed. Returns (seedwise rows, averaged row), as dicts keyed by the CSV columns."""
    method = METHODS[cfg.method]
    same = cfg.base_data == cfg.query_data
    data = [t.to(device) for t in (inputs.source_base, inputs.target_base, inputs.source_query, inputs.target_query)]
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    options = {"restarts": cfg.restarts, "qap_solver": cfg.qap_solver, "qap_init": cfg.qap_init,
               "qap_patience": cfg.qap_patience, "qap_polish": cfg.qap_polish, "progress": progress}
    common = {"Base data": cfg.base_data, "Query data": cfg.query_data, "Source model": cfg.source_model,
              "Target model": cfg.target_model, "method": cfg.method, "base_samples": cfg.base_samples,
              "query_samples": cfg.query_samples, "clustering_mode": cfg.clustering_mode,
              "stretch": cfg.stretch}
    rows = []
    for seed2 in cfg.seeds:
        t0 = time.perf_counter()
        sb, tb, sq, tq = utils.get_data_sep(cfg.base_seed, seed2, cfg.base_samples, cfg.query_samples, *data,
                                            inputs.source_cluster, inputs.target_cluster, cfg.clustering_mode,
                                            same, cfg.stretch)
        graph = method.graph(sb, tb, sq, tq, device) if method.graph is not None else None
        top_1, top_5, top_10 = method.retrieval(graph)
        acc, info = method.matching(sb, tb, sq, tq, graph, device, dict(options, seed=seed2))
        seconds = time.perf_counter() - t0
        X = torch.cat([sb, sq]).double()
        Y = torch.cat([tb, tq]).double()
        row = dict(common, seed1=cfg.base_seed, seed2=seed2, matching_acc=acc, top_1=top_1, top_5=top_5,
                   top_10=top_10, linear_cka=float(utils.linear_CKA(X, Y)),
                   kernel_cka=float(utils.kernel_CKA(X, Y)), restarts=info.get("restarts", ""),
                   device=str(device), seconds=round(seconds, 3), created=created, config=cfg.config_hash(),
                   objective=info.get("objective", ""))
        _logger.info("seed %s: matching %.4f top1 %s top5 %s top10 %s (%.1f s)", seed2, acc, top_1, top_5,
                     top_10, seconds)
        rows.append(row)
    return rows, average(rows)


def average(rows):
    """The paper's averaged row: metrics and CKA averaged over seeds, seconds summed."""
    avg = {k: rows[0][k] for k in RESULT_COLUMNS if k in rows[0]}
    for k in METRIC_COLUMNS + ["linear_cka", "kernel_cka"]:
        avg[k] = sum(r[k] for r in rows) / len(rows)
    for k in ("restarts", "objective"):
        vals = [r[k] for r in rows if r[k] != ""]
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


def append_summary(path, row):
    """Append one averaged row to summary.csv under an exclusive lock (shell loops finish at once)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.seek(0, 2)
            f.write(_csv_text([row], RESULT_COLUMNS, header=f.tell() == 0))
            f.flush()
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def write_outputs(cfg: Config, rows, avg):
    """seedwise/<name>.csv and results/<name>.csv (replaced atomically), one row appended to summary.csv."""
    paths = cfg.output_paths()
    atomic_write_text(paths["seedwise"], _csv_text(rows, SEEDWISE_COLUMNS))
    atomic_write_text(paths["results"], _csv_text([avg], RESULT_COLUMNS))
    append_summary(paths["summary"], avg)
    return paths
