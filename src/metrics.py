"""Alignment metrics between two paired representations, one registry (as platonic-rep's metrics.py).

Every metric takes X (n x d1) and Y (n x d2) whose rows are paired (row i of X and row i of Y describe
the same item) and returns a Python float. Metrics run in float64 on the CPU whatever device the data is
on, so a number does not depend on where the embeddings happened to be.

``METRICS`` maps a name to its function; the CSV columns follow its order:

- ``linear_cka``: the paper's linear CKA (``utils.linear_CKA``): biased HSIC of the linear kernels.
- ``kernel_cka``: the paper's RBF CKA (``utils.kernel_CKA``): biased HSIC, each side's sigma the square
  root of the lower median of its nonzero squared distances.
- ``unbiased_cka``: linear kernels of the raw rows, Song et al.'s unbiased HSIC (platonic-rep's
  ``unbiased_cka``), no epsilon in the denominator.
- ``mutual_knn``: the mean fraction of shared cosine neighbours (k = 10, self excluded).
- ``cknna``: platonic-rep's CKNNA (``unbiased=True``) on L2-normalised rows, k = 10, no epsilon.

Neighbours (``mutual_knn``, ``cknna``): the k largest similarities of a row, self excluded, ties broken
toward the lower row index (a stable descending sort). platonic-rep uses ``torch.topk``/``argsort``,
whose order among ties is unspecified; on real embeddings ties do not occur, so the values agree.
"""
import logging
import time

import numpy as np
import torch
from tqdm import tqdm

from . import cka
from .errors import DataError, UsageError

_logger = logging.getLogger(__name__)

DEFAULT_K = 10


def _as_f64(x, name):
    # .cpu() before .double(): the same numbers (float32 -> float64 is exact), and no float64 copy on a
    # device that lacks float64 (MPS) or has little memory left.
    x = torch.as_tensor(x).detach().cpu().double()
    if x.ndim != 2:
        raise DataError(f"{name} must be a matrix (n x d), got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise DataError(f"{name} holds non-finite values (nan or inf); the embeddings are broken")
    return x


def _prepare(X, Y):
    X, Y = _as_f64(X, "X"), _as_f64(Y, "Y")
    if X.shape[0] != Y.shape[0]:
        raise DataError(f"X and Y must have paired rows, got {X.shape[0]} and {Y.shape[0]} rows")
    return X, Y


class TooFewRows(DataError):
    """A metric is not defined for this few rows."""


def _check_rows(n, need, what):
    if n < need:
        raise TooFewRows(f"{what} needs at least {need} rows, got {n}")


def _check_k(k, n, least=1):
    if not isinstance(k, (int, np.integer)) or k < least:
        raise UsageError(f"k must be an integer >= {least}, got {k!r}")
    if k >= n:
        # self is excluded, so a row has only n - 1 neighbours
        raise TooFewRows(f"k = {k} neighbours need more than k rows (self excluded), got {n} rows")


def _normalise(X):
    """Rows scaled to unit L2 norm (a zero row stays zero)."""
    return torch.nn.functional.normalize(X, dim=1)


def _neighbours(S, k):
    """n x n boolean mask: [i, j] is True when j is among the k largest S[i, :], j != i.

    Ties go to the lower index (stable sort), so the mask is a function of S alone.
    """
    S = S.clone()
    S.fill_diagonal_(float("-inf"))
    idx = torch.sort(S, dim=1, descending=True, stable=True).indices[:, :k]
    return torch.zeros(S.shape, dtype=torch.bool).scatter_(1, idx, True)


def hsic_unbiased(K, L):
    """Song et al.'s (2012, eq. 5) unbiased HSIC of two n x n kernels (n >= 4).

    With the diagonals zeroed (K~, L~):
    (tr(K~ L~) + sum(K~) sum(L~) / ((n-1)(n-2)) - 2 sum(K~ L~) / (n-2)) / (n(n-3)).
    K and L need not be symmetric (CKNNA's masked kernels are not): tr(K~ L~) = sum(K~ * L~^T) and
    sum(K~ L~) = (column sums of K~) . (row sums of L~), which avoids the n^3 product.
    """
    n = K.shape[0]
    K, L = K.clone(), L.clone()
    K.fill_diagonal_(0)
    L.fill_diagonal_(0)
    trace = torch.sum(K * L.T)
    both = K.sum() * L.sum() / ((n - 1) * (n - 2))
    cross = 2 * torch.dot(K.sum(dim=0), L.sum(dim=1)) / (n - 2)
    return (trace + both - cross) / (n * (n - 3))


def _paper_cka(Kc, Lc):
    """utils.kernel_CKA / linear_CKA from centred kernels computed once: the same operations on the same
    matrices (the paper's code builds each kernel three times), so the same numbers, bit for bit."""
    return float(torch.sum(Kc * Lc) / (torch.sqrt(torch.sum(Kc * Kc)) * torch.sqrt(torch.sum(Lc * Lc))))


def linear_cka(X, Y):
    """The paper's linear CKA: biased HSIC of XX^T and YY^T (``utils.linear_CKA``)."""
    X, Y = _prepare(X, Y)
    return _paper_cka(cka.centering(X @ X.T), cka.centering(Y @ Y.T))


def kernel_cka(X, Y):
    """The paper's RBF CKA: biased HSIC, per-side sigma = sqrt(lower median nonzero squared distance)
    (``utils.kernel_CKA``)."""
    X, Y = _prepare(X, Y)
    return _paper_cka(cka.centering(cka.rbf(X)), cka.centering(cka.rbf(Y)))


def unbiased_cka(X, Y):
    """CKA with the linear kernels XX^T, YY^T of the raw rows and the unbiased HSIC:
    hsic(K, L) / sqrt(hsic(K, K) hsic(L, L)). No epsilon: nan when a side is constant (or when an
    unbiased self-HSIC comes out negative, possible for tiny n)."""
    X, Y = _prepare(X, Y)
    _check_rows(X.shape[0], 4, "unbiased HSIC")
    K, L = X @ X.T, Y @ Y.T
    return float(hsic_unbiased(K, L) / torch.sqrt(hsic_unbiased(K, K) * hsic_unbiased(L, L)))


def mutual_knn(X, Y, k=DEFAULT_K):
    """Mean over rows i of |N_X(i) & N_Y(i)| / k, N(i) the k nearest rows by cosine similarity, self
    excluded, ties toward the lower index. 1 when both sides have the same neighbourhoods; about
    k / (n - 1) for unrelated sides."""
    X, Y = _prepare(X, Y)
    _check_k(k, X.shape[0])
    Xn, Yn = _normalise(X), _normalise(Y)
    shared = _neighbours(Xn @ Xn.T, k) & _neighbours(Yn @ Yn.T, k)
    return float(shared.sum(dim=1).double().mean() / k)


def cknna(X, Y, k=DEFAULT_K):
    """CKNNA (Huh et al. 2024, platonic-rep's ``cknna`` with ``unbiased=True``), without its epsilon.

    Rows L2-normalised; K = Xn Xn^T, L = Yn Yn^T. For a pair of kernels (A, B) the mask M keeps [i, j]
    when j is among the k nearest of i in A and in B (self excluded); sim(A, B) = unbiased HSIC of
    (A * M, B * M). CKNNA = sim(K, L) / sqrt(sim(K, K) sim(L, L)).
    """
    X, Y = _prepare(X, Y)
    n = X.shape[0]
    _check_rows(n, 4, "unbiased HSIC")
    _check_k(k, n, least=2)  # platonic-rep refuses k < 2 too
    Xn, Yn = _normalise(X), _normalise(Y)
    K, L = Xn @ Xn.T, Yn @ Yn.T
    mask_k, mask_l = _neighbours(K, k), _neighbours(L, k)
    both = mask_k & mask_l
    sim_kl = hsic_unbiased(K * both, L * both)
    sim_kk = hsic_unbiased(K * mask_k, K * mask_k)
    sim_ll = hsic_unbiased(L * mask_l, L * mask_l)
    return float(sim_kl / torch.sqrt(sim_kk * sim_ll))


# name -> function(X, Y) -> float; the order is the CSV column order
METRICS = {
    "linear_cka": linear_cka,
    "kernel_cka": kernel_cka,
    "unbiased_cka": unbiased_cka,
    "mutual_knn": mutual_knn,
    "cknna": cknna,
}


def measure(name, X, Y, **kwargs):
    """The metric ``name`` of X (n x d1) and Y (n x d2), rows paired; kwargs go to the metric (k=...)."""
    if name not in METRICS:
        raise UsageError(f"unknown metric {name!r}; choose from {', '.join(METRICS)}")
    return METRICS[name](X, Y, **kwargs)


def measure_all(X, Y):
    """{name: value} for every metric, in registry order. A metric that needs more rows than there are
    (k = 10 neighbours need 11, unbiased HSIC 4) is nan, so that small runs still get the others."""
    X, Y = _prepare(X, Y)  # once, not per metric
    out = {}
    for name, fn in METRICS.items():
        try:
            out[name] = fn(X, Y)
        except TooFewRows:
            out[name] = float("nan")
    return out


MAX_PERMUTATIONS = 10_000   # each shuffle recomputes every metric; 1000 already pin a z-score to ~0.03


def permutation_null(X, Y, n_permutations, seed=0, values=None, progress=False):
    """Each metric against shuffled pairings: {name: (mean, std, z)}.

    ``n_permutations`` shuffles of Y's rows from one ``np.random.default_rng(seed)`` (the same shuffles
    for every metric); mean and std (ddof=1; 0 for a single shuffle) of each metric over them, and
    z = (value - mean) / std with value the metric of the true pairing (``values``, computed when None).
    A single shuffle gives z = nan; a null with zero spread gives z = +-inf (or nan when value == mean).
    With progress, a bar on stderr; a warning with the expected time when it will take over a minute.
    """
    if not isinstance(n_permutations, (int, np.integer)) or n_permutations < 1:
        raise UsageError(f"n_permutations must be an integer >= 1, got {n_permutations!r}")
    X, Y = _prepare(X, Y)
    if values is None:
        values = measure_all(X, Y)
    rng = np.random.default_rng(seed)
    null = {name: [] for name in METRICS}
    bar = tqdm(total=n_permutations, desc="permutations", unit="shuffle", disable=not progress, leave=False,
               dynamic_ncols=True)
    t0 = time.perf_counter()
    for i in range(n_permutations):
        perm = torch.as_tensor(rng.permutation(Y.shape[0]))
        for name, value in measure_all(X, Y[perm]).items():
            null[name].append(value)
        bar.update(1)
        if i == 0 and n_permutations > 1:
            expected = (time.perf_counter() - t0) * n_permutations
            if expected > 60:
                _logger.warning("--permutations %d: about %.0f minutes for this seed (%.2f s a shuffle of %d "
                                "rows); 1000 shuffles pin a z-score well", n_permutations, expected / 60,
                                expected / n_permutations, X.shape[0])
    bar.close()
    out = {}
    for name, vals in null.items():
        vals = np.asarray(vals, dtype=np.float64)
        mean = float(vals.mean())
        if len(vals) == 1:
            std, z = 0.0, float("nan")
        else:
            std = float(vals.std(ddof=1))
            with np.errstate(divide="ignore", invalid="ignore"):
                z = float(np.float64(values[name] - mean) / np.float64(std))
        out[name] = (mean, std, z)
    return out


def metric_columns(permutations=0):
    """CSV column names: the registry names, then ``{name}_null`` and ``{name}_z`` for each metric when
    ``permutations`` > 0."""
    cols = list(METRICS)
    if permutations > 0:
        for name in METRICS:
            cols += [f"{name}_null", f"{name}_z"]
    return cols


def metric_row(X, Y, permutations=0, seed=0, progress=False):
    """{column: value} for ``metric_columns(permutations)``: the metrics, then (with permutations) the
    null mean and z of each."""
    X, Y = _prepare(X, Y)
    row = measure_all(X, Y)
    if permutations > 0:
        for name, (mean, _, z) in permutation_null(X, Y, permutations, seed, dict(row), progress).items():
            row[f"{name}_null"] = mean
            row[f"{name}_z"] = z
    return {c: row[c] for c in metric_columns(permutations)}
