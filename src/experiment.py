"""The experiment of run.py: configurations -> groups -> seeds -> methods -> rows -> CSV files.

Configurations that differ only by method (and its options) form a group: their sides are loaded once, and
per seed the task draws anchors and queries once and the alignment metrics (``src/metrics.py``) are computed
once; then each method builds its graph, retrieval top-1/5/10 (-1 without a graph, as the paper's qap rows)
and matching accuracy. A one-sided task (``Task.sides == 1``, the probe) has no method: per seed it fills its
own score columns and leaves the matching and metric columns empty. Every configuration writes its own CSVs,
as the paper's run.py did, through the results store (``src/results.py``: the files, their columns, summary.csv
and ``finished``).
"""
import logging
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import torch

from . import metrics
from .config import Config
from .errors import DataError
from .names import parse_side
from .results import METRIC_COLUMNS, check_output_dirs, check_output_files, input_digests, write_outputs
from .retrieval import get_retrieval
from .sides import load_side, require_distinct
from .tasks import TASKS

_logger = logging.getLogger(__name__)

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
            "base_seed": cfg.base_seed if used else "", "permutations": cfg.permutations,
            **input_digests(cfg)}


def one_dtype(draw):
    """A float32 side against a float64 side (docs/devices.md allows float64 files): both in the wider dtype
    before any method runs (a matmul of the two would fail)."""
    parts = (draw.sb, draw.tb, draw.sq, draw.tq)
    if len({p.dtype for p in parts}) == 1:
        return draw
    dtype = parts[0].dtype
    for p in parts[1:]:
        dtype = torch.promote_types(dtype, p.dtype)
    return replace(draw, sb=draw.sb.to(dtype), tb=draw.tb.to(dtype), sq=draw.sq.to(dtype), tq=draw.tq.to(dtype))


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
        draw = one_dtype(task.draw(group.state, cfg0, seed, device))
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


def run_and_write(groups, device, progress=True):
    """Every prepared group's seeds and methods; each configuration's CSVs written as its group ends. Yields
    (cfg, averaged row, its paths) as each is written, so a caller that is stopped knows what was."""
    for group in groups:
        for cfg, rows, avg in run_group(group, device, progress=progress):
            yield cfg, avg, write_outputs(cfg, rows, avg)
