"""Matching source queries to target queries: Hungarian on a Q x Q graph, or seeded graph matching (QAP).

Both follow the paper: the target queries are shuffled first (the paper's ``torch.manual_seed(0)``
permutation, drawn from a local generator) so that ties cannot favour the true pairs, and accuracy is the
fraction of source queries matched to their own target. Both also return the assignment, in the unshuffled
order: ``assignment[i]`` = index of the target query matched to source query i.

Device and dtype: what needs float64 (the QAP matrices and objectives, the Hungarian cost) is computed on the
CPU in float64 (``.cpu().double()``, never ``.double()`` on a device: MPS has none); graphs and the fast
solver's float32 iterates follow ``device``.
"""
import numpy as np
import torch
from scipy.optimize import linear_sum_assignment, quadratic_assignment
from tqdm import tqdm

from . import qap as fastqap
from . import utils
from .errors import UsageError

__all__ = ["hungarian", "qap", "check_qap_options", "SOLVERS", "WARM_GRAPHS", "QAP_INITS"]

SOLVERS = fastqap.SOLVERS  # "fast": src/qap.py, batched; "scipy": the paper's loop of scipy FAQ runs
# Warm starts of the fast solver: one Hungarian assignment on one of these graphs.
WARM_GRAPHS = {"relative": utils.relative_baseline, "linear_local_CKA": utils.linear_local_CKA,
               "kernel_local_CKA": utils.kernel_local_CKA}
QAP_INITS = ("randomized", "barycenter") + tuple(WARM_GRAPHS)


def hungarian(graph):
    """The paper's linear matching: maximum-weight assignment (Hungarian) on the column-shuffled graph.

    graph: Q x C scores (rows source queries, columns target queries; any device and dtype, matched in
    float64 on the CPU). Returns (acc, assignment): acc = fraction of rows i matched to column i (over the
    min(Q, C) pairs made); assignment (np.int64, Q) = column matched to row i, unshuffled (-1 for a row
    left unmatched when Q > C).
    """
    graph = torch.as_tensor(graph).detach().cpu().double()
    Q, C = graph.shape
    shuffle = utils._query_shuffle(C).numpy()
    row_ind, col_ind = linear_sum_assignment(graph[:, shuffle].numpy(), maximize=True)
    assignment = np.full(Q, -1, dtype=np.int64)
    assignment[row_ind] = shuffle[col_ind]
    return float(np.sum(assignment == np.arange(Q))) / len(col_ind), assignment


def check_qap_options(solver="fast", init="randomized", restarts=500, patience=10, polish=False):
    """Raise UsageError for QAP options that cannot work; cheap, so a script can call it before loading
    any file. The messages name the command-line flags of run.py."""
    if solver not in SOLVERS:
        raise UsageError(f"--qap-solver {solver}: use one of {', '.join(SOLVERS)}")
    if init not in QAP_INITS:
        raise UsageError(f"--qap-init {init}: use one of {', '.join(QAP_INITS)}")
    if isinstance(restarts, bool) or not isinstance(restarts, (int, np.integer)) or restarts < 1:
        raise UsageError(f"--restarts {restarts}: must be a whole number, at least 1")
    if patience is not None and (isinstance(patience, bool) or not isinstance(patience, (int, np.integer))
                                 or patience < 0):
        raise UsageError(f"--qap-patience {patience}: must be 0 (never stop early) or a positive whole number")
    if solver == "scipy" and init != "randomized":
        raise UsageError(f"--qap-init {init} needs --qap-solver fast (scipy runs the paper's randomized starts)")
    if solver == "scipy" and polish:
        raise UsageError("--qap-polish needs --qap-solver fast")


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


def qap(source_base, target_base, source_query, target_query, device=None, restarts=500, seed=None,
        solver="fast", init="randomized", patience=10, polish=False, progress=True):
    """Seeded graph matching of the two sides' centred RBF kernels (utils.qap_inputs), anchors fixed.

    Maximises sum(A * B[p][:, p]) over permutations p that keep every anchor on its partner.
    solver "scipy": the paper's loop (``restarts`` randomized scipy FAQ runs; seed None draws fresh
    starts, as the paper); "fast": src/qap.py's batched FAQ (seed None means 0), which also takes
    ``init`` ("randomized", "barycenter", or a warm start from the Hungarian assignment of one of
    WARM_GRAPHS' graphs), ``patience`` (stop after that many restarts without a better objective; 0 or
    None: never) and ``polish`` (pair-swap local search on the best permutation). Its iterates run on
    ``device`` (default: the inputs' device).

    Returns (acc, info): acc = fraction of source queries matched to their own target; info =
    {"objective": best objective (float), "restarts": restarts run (int), "assignment": np.int64 (Q,),
    assignment[i] = target query matched to source query i, unshuffled}.
    """
    check_qap_options(solver, init, restarts, patience, polish)
    A, B, shuffle, n_base = utils.qap_inputs(source_base, target_base, source_query, target_query)
    if solver == "scipy":
        col_ind, objective = _scipy_restarts(A, B, n_base, restarts, seed, progress)
        done = restarts
    else:
        warm, kind = None, init
        if init in WARM_GRAPHS:
            # one Hungarian assignment on the cheap graph, in the shuffled target order the problem uses
            g = WARM_GRAPHS[init](source_base, target_base, source_query, target_query, device)
            warm = linear_sum_assignment(g.detach().cpu().double()[:, shuffle].numpy(), maximize=True)[1]
            kind = "warm"
        work = torch.as_tensor(source_base).device if device is None else torch.device(device)
        with tqdm(total=restarts, desc="qap restarts", disable=not progress, leave=False) as bar:
            res = fastqap.seeded_qap(A, B, n_base, restarts=restarts, init=kind, warm=warm, seed=seed,
                                     patience=patience or None, device=work,
                                     progress=lambda done, best: bar.update(done - bar.n))
        col_ind, objective, done = res.col_ind, res.objective, res.restarts
        if polish:
            col_ind, objective, _ = fastqap.two_opt(A, B, n_base, col_ind)
    acc = utils.qap_accuracy(col_ind, shuffle.numpy(), n_base)
    assignment = shuffle.numpy()[np.asarray(col_ind)[n_base:] - n_base].astype(np.int64)
    return acc, {"objective": float(objective), "restarts": int(done), "assignment": assignment}
