"""Matching source queries to target queries: Hungarian on a Q x Q graph, or seeded graph matching (QAP).

Both follow the paper: the target queries are shuffled first (the paper's ``torch.manual_seed(0)``
permutation, drawn from a local generator) so that ties cannot favour the true pairs, and accuracy is the
fraction of source queries matched to their own target. Both also return the assignment, in the unshuffled
order: ``assignment[i]`` = index of the target query matched to source query i.

Device and dtype: what needs float64 (the QAP matrices and objectives, the Hungarian cost) is computed on the
CPU in float64 (``.cpu().double()``, never ``.double()`` on a device: MPS has none); graphs and the fast
solver's float32 iterates follow ``device``.
"""
import functools
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from scipy.optimize import quadratic_assignment
from tqdm import tqdm

from . import faq
from .assignment import SPARSE_FROM, linear_assignment
from .baselines import relative_baseline
from .cka import centered_scaled_corr_rbf
from .local_cka import kernel_local_CKA, linear_local_CKA

__all__ = [
    "QAP_INITS",
    "SOLVERS",
    "WARM_GRAPHS",
    "estimate_qap_seconds",
    "graph_matching",
    "hungarian",
    "qap_accuracy",
    "qap_inputs",
    "query_shuffle",
]

SOLVERS = faq.SOLVERS  # "fast": src/faq.py, batched; "scipy": the paper's loop of scipy FAQ runs
# Warm starts of the fast solver: one Hungarian assignment on one of these graphs.
WARM_GRAPHS = {"relative": relative_baseline, "linear_local_CKA": linear_local_CKA,
               "kernel_local_CKA": kernel_local_CKA}
QAP_INITS = ("randomized", "barycenter") + tuple(WARM_GRAPHS)


def query_shuffle(n):
    """The paper's column shuffle (``torch.manual_seed(0); torch.randperm(n)``), drawn from a local CPU
    generator: the same permutation, and the process-wide generator is left alone."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(0))


def hungarian(graph):
    """The paper's linear matching: maximum-weight assignment (Hungarian) on the column-shuffled graph.

    graph: Q x C scores (rows source queries, columns target queries; any device and dtype, matched in
    float64 on the CPU). Returns (acc, assignment): acc = fraction of rows i matched to column i (over the
    min(Q, C) pairs made); assignment (np.int64, Q) = column matched to row i, unshuffled (-1 for a row
    left unmatched when Q > C).
    """
    graph = torch.as_tensor(graph).detach().cpu().double()
    Q, C = graph.shape
    shuffle = query_shuffle(C).numpy()
    row_ind, col_ind = linear_assignment(graph[:, shuffle].numpy(), maximize=True)
    assignment = np.full(Q, -1, dtype=np.int64)
    assignment[row_ind] = shuffle[col_ind]
    return float(np.sum(assignment == np.arange(Q))) / len(col_ind), assignment


def qap_inputs(source_base, target_base, source_query, target_query, device=None):
    """The paper's QAP problem: A, B (CPU float64 tensors, exactly symmetric) of anchors + queries on each
    side, with the target queries shuffled (the paper's torch.manual_seed(0) permutation), the shuffle
    (CPU int64), and the number of anchors. Built on the CPU in float64 whatever the inputs' device:
    ``device`` is accepted for the paper's signature and not used."""
    sb, tb, sq, tq = (torch.as_tensor(t).detach().cpu().double()
                      for t in (source_base, target_base, source_query, target_query))
    shuffle = query_shuffle(sq.shape[0])
    A = centered_scaled_corr_rbf(torch.cat([sb, sq], dim=0))
    B = centered_scaled_corr_rbf(torch.cat([tb, tq[shuffle]], dim=0))
    return A, B, shuffle, sb.shape[0]


def qap_accuracy(col_ind, shuffle, n_base):
    """Fraction of source queries whose matched target (in the shuffled order) is their own partner."""
    new_col_ind = np.asarray(col_ind)[n_base:] - n_base
    q = len(new_col_ind)
    return float(np.sum(new_col_ind[np.asarray(shuffle)] == np.arange(q))) / q


def _scipy_restarts(A, B, n_base, restarts, seed, progress):
    """The paper's loop: scipy FAQ from ``restarts`` randomized starts (maximise, tol 1e-5, anchors fixed
    by partial_match); the first of the best objectives."""
    rng = np.random.default_rng(seed)
    options = {"P0": "randomized", "maximize": True, "tol": 1e-5, "rng": rng,
               "partial_match": np.array([np.arange(n_base), np.arange(n_base)]).T}
    A, B = A.numpy(), B.numpy()
    best = None
    for _ in tqdm(range(restarts), desc="qap restarts", disable=not progress, leave=False):
        out = quadratic_assignment(A, B, options=options)
        if best is None or out.fun > best.fun:  # strict: the first of equal objectives, as a stable sort
            best = out
    return best.col_ind, float(best.fun)


def graph_matching(source_base, target_base, source_query, target_query, device=None, restarts=500, seed=None,
                   solver="fast", init="randomized", patience=10, polish=False, progress=True, timers=None):
    """Seeded graph matching of the two sides' centred RBF kernels (``qap_inputs``), anchors fixed: the
    paper's QAP method. Options are checked by the method's options (``src/methods.py``).

    Maximises sum(A * B[p][:, p]) over permutations p that keep every anchor on its partner.
    solver "scipy": the paper's loop (``restarts`` randomized scipy FAQ runs; seed None draws fresh
    starts, as the paper); "fast": src/faq.py's batched FAQ (seed None means 0), which also takes
    ``init`` ("randomized", "barycenter", or a warm start from the Hungarian assignment of one of
    WARM_GRAPHS' graphs), ``patience`` (stop after that many restarts without a better objective; 0 or
    None: never) and ``polish`` (pair-swap local search on the best permutation). Its iterates run on
    ``device`` (default: the inputs' device). ``timers``: a dict that collects where the fast solver's time
    goes (``faq.seeded_qap``), and "inputs" (building A and B).

    Returns (acc, info): acc = fraction of source queries matched to their own target; info =
    {"objective": best objective (float), "restarts": restarts run (int), "assignment": np.int64 (Q,),
    assignment[i] = target query matched to source query i, unshuffled}.
    """
    with faq.timed(timers, "inputs", "cpu"):
        A, B, shuffle, n_base = qap_inputs(source_base, target_base, source_query, target_query)
    if solver == "scipy":
        col_ind, objective = _scipy_restarts(A, B, n_base, restarts, seed, progress)
        done = restarts
    else:
        warm, kind = None, init
        if init in WARM_GRAPHS:
            # one Hungarian assignment on the cheap graph, in the shuffled target order the problem uses
            g = WARM_GRAPHS[init](source_base, target_base, source_query, target_query, device)
            warm = linear_assignment(g.detach().cpu().double()[:, shuffle].numpy(), maximize=True)[1]
            kind = "warm"
        work = torch.as_tensor(source_base).device if device is None else torch.device(device)
        with tqdm(total=restarts, desc="qap restarts", disable=not progress, leave=False) as bar:
            res = faq.seeded_qap(A, B, n_base, restarts=restarts, init=kind, warm=warm, seed=seed,
                                     patience=patience or None, device=work, timers=timers,
                                     progress=lambda done, best: bar.update(done - bar.n))
        col_ind, objective, done = res.col_ind, res.objective, res.restarts
        if polish:
            col_ind, objective, _ = faq.two_opt(A, B, n_base, col_ind)
    acc = qap_accuracy(col_ind, shuffle.numpy(), n_base)
    assignment = shuffle.numpy()[np.asarray(col_ind)[n_base:] - n_base].astype(np.int64)
    return acc, {"objective": float(objective), "restarts": int(done), "assignment": assignment}


# estimate_qap_seconds' model of one restart: ITERATIONS Frank-Wolfe steps (2 to 3 per restart measured on
# the bundled data and on synthetic kernels at Q = 250 to 2,000), each one m^3 product, PASSES elementwise
# passes over an m x m matrix (faq's line search and updates, and the gradient's copy for the assignment:
# they cost more than the product below Q = 2,000), one m x m assignment and a fixed overhead. The
# assignment is scipy's (cubic in m at worst) up to assignment.SPARSE_FROM, then the sparse
# solver's, whose dense passes over the m x m gradient grow as m^2 (SPARSE_EXPONENT);
# benchmarks/bench_scale.py prints the estimates next to measured times. The fast solver counts FAST_ITERATIONS:
# a batch runs until its slowest restart converges, and its products and passes on matrices past the caches
# run slower than the calibration's; 3 gave half the measured time at Q = 2,000 on the real inputs (32.6 s
# against 62.3 s, docs/speed.md), 6 its order.
ITERATIONS, FAST_ITERATIONS, CALIBRATION_SIZE, SPARSE_EXPONENT, PASSES = 3, 6, 512, 2, 16


def expected_restarts(restarts, patience, batch=8):
    """Restarts the fast solver typically runs: all of them without patience; with patience P, about 2 P
    rounded up to its batches of 8 (the bundled demo, P = 10: 16 to 32), never more than ``restarts``."""
    if patience is None:
        return restarts
    return min(restarts, batch * math.ceil(2 * patience / batch))


def _elapsed(f, device):
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    sync()
    t = time.perf_counter()
    f()
    sync()
    return time.perf_counter() - t


@functools.lru_cache(maxsize=16)
def qap_step_costs(m, device="cpu", batch=8):
    """Timed on ``device`` (once per process and size): (seconds of one restart-iteration's fixed overhead,
    seconds of one restart-iteration's m0^3 product, seconds of one elementwise pass over m0 x m0, seconds of
    one m0 x m0 assignment per restart, m0),
    with m0 = min(m, CALIBRATION_SIZE), as faq_batch runs them (float32 batches of ``batch``, assignments
    in its thread pool)."""
    g = torch.Generator().manual_seed(0)
    m0 = min(m, CALIBRATION_SIZE)
    # the overhead: a tiny solve (Python, small kernels, thread pool), per restart-iteration
    X = torch.randn(48, 4, generator=g, dtype=torch.float64)
    A = centered_scaled_corr_rbf(X)
    B = centered_scaled_corr_rbf(X + 0.1 * torch.randn(48, 4, generator=g, dtype=torch.float64))
    faq.seeded_qap(A, B, 16, restarts=batch, device=device)  # warm-up
    timers = {}
    faq.seeded_qap(A, B, 16, restarts=batch, device=device, timers=timers)
    overhead = (timers["products"] + timers["assignment"]) / timers["iterations"]
    # the product: U @ B22 on a batch
    U = torch.rand(batch, m0, m0, generator=g).to(device)
    B22 = torch.rand(m0, m0, generator=g).to(device)
    U @ B22
    product = min(_elapsed(lambda: U @ B22, device) for _ in range(3)) / batch
    # one elementwise pass, on matrices too large for the caches (as faq's are from Q = 1,000 on), per m0^2
    E = torch.rand(batch, 1024, 1024, generator=g).to(device)
    F = torch.empty_like(E)
    elementwise = min(_elapsed(lambda: torch.mul(E, 0.5, out=F), device) for _ in range(3)) / batch
    elementwise *= (m0 / 1024) ** 2
    # the assignment: a batch of dense m0 x m0 matrices in faq's thread pool
    M = torch.rand(batch, m0, m0, generator=g, dtype=torch.float64)
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        assignment = _elapsed(lambda: faq._lap_batch(M, True, pool), "cpu") / batch
    return overhead, product, elementwise, assignment, m0


def estimate_qap_seconds(n_anchors, n_queries, restarts=500, solver="fast", patience=10, init="randomized",
                         device="cpu"):
    """Estimated seconds of one graph_matching call (one seed) with these options: an order of magnitude to
    decide whether to bound a run (``--restarts``, ``--qap-patience``), not a promise.

    One restart = FAST_ITERATIONS x (overhead + product x (m / m0)^3 + PASSES x elementwise x (m / m0)^2
    + assignment x (its growth: cubic to SPARSE_FROM, then m^SPARSE_EXPONENT)), m = n_queries,
    from ``qap_step_costs`` timed on ``device``; times the restarts expected (``expected_restarts``; one
    for the barycenter start; all of them for scipy, ITERATIONS steps each, which has no patience and makes
    about six float64 products an iteration, counted as 12 float32 ones). n_anchors is accepted for the
    contract; the cost is in the m x m blocks.
    """
    overhead, product, elementwise, assignment, m0 = qap_step_costs(n_queries, str(torch.device(device)))
    grow = (n_queries / m0) ** 3
    dense = min(n_queries, SPARSE_FROM)
    lap_grow = (dense / m0) ** 3 * (n_queries / dense) ** SPARSE_EXPONENT
    if solver == "scipy":   # scipy's FAQ runs scipy's own assignment, cubic
        return restarts * ITERATIONS * (overhead + 12 * product * grow + assignment * grow)
    runs = 1 if init == "barycenter" else expected_restarts(restarts, patience)
    passes = PASSES * elementwise * (n_queries / m0) ** 2
    return runs * FAST_ITERATIONS * (overhead + product * grow + passes + assignment * lap_grow)
