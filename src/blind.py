"""Blind matching: pair two sets of N embeddings with no known pair at all.

The problem (Schnaus et al., "It's a (Blind) Match!", CVPR 2025): with A (N x N) a kernel of the source rows
and B one of the target rows, find the permutation p (source row i -> target row p[i]) that maximises

    f(p) = sum_ij A_ij B_{p_i p_j} = trace(A P B P^T),    P_{i, p_i} = 1,

a quadratic assignment problem (QAP). The kernels (``KERNELS``, all symmetric, float64):

- ``linear``: centred cosine, X - mean(X) with each row L2-normalised, then X X^T (what linear CKA compares);
- ``rbf``: the paper's QAP input, the centred RBF kernel with the median bandwidth scaled to unit norm
  (``cka.centered_scaled_corr_rbf``);
- ``distance``: itsamatch's standardised Euclidean distances, (D - mean) / std over the off-diagonal entries;
  their squared loss sum_ij (Da_ij - Db_{p_i p_j})^2 is a constant minus 2 f(p), so one maximiser serves all.

Solvers (one class each, options as constructor arguments, ``solve(X, Y) -> Solution``):

- ``FAQSolver``: seeded-FAQ restarts with no anchors (``src/faq.py``), the peers' baseline;
- ``BlindSolver``: a portfolio of starts (sorted kernel profiles matched by the assignment, spectral Procrustes
  with sign flips, FAQ, Gromov-Wasserstein from N = 150), each improved by a best-improvement 2-swap local
  search, then a tabu search from the best ones within a step budget (an optional time limit), then from
  N = 100 one more start, self-learning (an orthogonal map fitted to the matching found, in a dimension
  chosen by held-out pairs) descended; the best objective wins;
- ``GWSolver``: entropic Gromov-Wasserstein (POT) with the log-domain Sinkhorn, rounded by the assignment;
- ``ExactSolver``: every permutation (N <= MAX_EXACT): the certified optimum;
- ``RosettaSolver``: for large N, k-means centres of each side matched blind (``BlindSolver``), then
  Wasserstein Procrustes (alternating orthogonal Procrustes and the assignment) over all rows, in a common
  PCA space.
"""
import itertools
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .assignment import linear_assignment

# ----------------------------------------------------------------------------------------------------------
# Kernels and the objective
# ----------------------------------------------------------------------------------------------------------


def _rows(X):
    return np.asarray(X.detach().cpu().double().numpy() if hasattr(X, "detach") else X, dtype=np.float64)


def linear_kernel(X):
    """Centred cosine: rows centred (column means removed), L2-normalised, then X X^T (N x N)."""
    X = _rows(X)
    X = X - X.mean(axis=0)
    X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    return X @ X.T


def rbf_kernel(X):
    """The paper's QAP input: centred RBF kernel (median bandwidth), scaled to unit Frobenius norm."""
    from .cka import centered_scaled_corr_rbf
    return centered_scaled_corr_rbf(torch.as_tensor(_rows(X))).numpy()


def distance_kernel(X):
    """itsamatch's standardised Euclidean distances: (D - mean) / std over the off-diagonal entries."""
    X = _rows(X)
    sq = (X * X).sum(axis=1)
    D = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * X @ X.T, 0))
    np.fill_diagonal(D, 0)
    off = D[~np.eye(len(D), dtype=bool)]
    return (D - off.mean()) / max(off.std(), 1e-12)


KERNELS = {"linear": linear_kernel, "rbf": rbf_kernel, "distance": distance_kernel}


def objective(A, B, p):
    """f(p) = sum_ij A_ij B_{p_i p_j} for one permutation p (or a batch, k x N: one value each)."""
    p = np.asarray(p)
    if p.ndim == 1:
        return float((A * B[np.ix_(p, p)]).sum())
    return (A[None] * B[p[:, :, None], p[:, None, :]]).sum(axis=(1, 2))


@dataclass
class Solution:
    perm: np.ndarray              # (N,) int64: source row i -> target row perm[i]
    objective: float              # f(perm) on the solver's kernels
    info: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------
# The 2-swap neighbourhood
# ----------------------------------------------------------------------------------------------------------

TABU = 1e300   # subtracted from a tabu swap's gain (gains are sums of kernel products, far below it)


class SwapSearch:
    """A permutation with what makes every 2-swap's gain one O(N^2) pass: Bp = B[p][:, p] and C = A Bp.

    Swapping positions i, j of p changes f by (A, B symmetric)
        2 (C_ij + C_ji - C_ii - C_jj - (A_ii - A_ij)(Bp_ij - Bp_ii) - (A_ij - A_jj)(Bp_jj - Bp_ij))
        + (A_ii - A_jj)(Bp_jj - Bp_ii),
    and the swap updates C by a rank-one term plus two recomputed columns (O(N^2)).
    """

    def __init__(self, A, B, p):
        # a constant diagonal on either side makes sum_i A_ii B_{p_i p_i} a constant: both diagonals are then
        # zeroed (f shifted by ``offset``) and the gain loses its diagonal terms
        dA, dB = np.diag(A), np.diag(B)
        self.zero = bool(np.ptp(dA) <= 1e-12 * max(1.0, np.abs(dA).max())
                         or np.ptp(dB) <= 1e-12 * max(1.0, np.abs(dB).max()))
        self.offset = float(dA.sum() * dB.mean()) if np.ptp(dA) <= np.ptp(dB) else float(dB.sum() * dA.mean())
        if self.zero:
            A, B = A.copy(), B.copy()
            np.fill_diagonal(A, 0)
            np.fill_diagonal(B, 0)
        else:
            self.offset = 0.0
        self.A, self.B = A, B
        self.dA = np.diag(A).copy()
        self.reset(p)

    def reset(self, p):
        self.p = np.array(p, dtype=np.int64)
        self.Bp = self.B[np.ix_(self.p, self.p)].copy()
        self.C = self.A @ self.Bp
        self.f = self.exact()

    def exact(self):
        """f of the current permutation, summed afresh (on the original kernels)."""
        return float((self.A * self.Bp).sum()) + self.offset

    def gains(self):
        """N x N: the change of f when positions i and j swap (0 on the diagonal)."""
        A, Bp, C, dA = self.A, self.Bp, self.C, self.dA
        dB, dC = np.diag(Bp), np.diag(C)
        G = C + C.T
        G -= dC[:, None]
        G -= dC[None, :]
        if self.zero:   # the formula with zero diagonals
            G += 2 * A * Bp
            G *= 2
            np.fill_diagonal(G, 0)
            return G
        G -= (dA[:, None] - A) * (Bp - dB[:, None])
        G -= (A - dA[None, :]) * (dB[None, :] - Bp)
        G *= 2
        G += (dA[:, None] - dA[None, :]) * (dB[None, :] - dB[:, None])
        np.fill_diagonal(G, 0)
        return G

    def gain_rows(self, rows):
        """The rows ``rows`` of ``gains()`` (len(rows) x N), from C in O(N) each."""
        A, Bp, C, dA = self.A[rows], self.Bp[rows], self.C, self.dA
        dC = np.diagonal(C)
        dCr = dC[rows][:, None]
        G = C[rows] + C[:, rows].T
        G -= dCr
        G -= dC[None, :]
        if self.zero:
            G += 2 * A * Bp
            G *= 2
        else:
            dB = np.diagonal(self.Bp)
            dAr, dBr = dA[rows][:, None], dB[rows][:, None]
            G -= (dAr - A) * (Bp - dBr)
            G -= (A - dA[None, :]) * (dB[None, :] - Bp)
            G *= 2
            G += (dAr - dA[None, :]) * (dB[None, :] - dBr)
        G[np.arange(len(rows)), rows] = 0
        return G

    def swap(self, i, j, gain=None, G=None):
        """Swap positions i and j; with ``G`` (the gains before the swap), update it in place to the gains after.

        For u, v not in {i, j} only the C terms of a gain move: C changes by the outer product of
        x = A_i - A_j and y = Bp_j - Bp_i, so the gain changes by -2 (x_u - x_v)(y_u - y_v); the rows and
        columns i and j are computed afresh (``gain_rows``)."""
        A, Bp = self.A, self.Bp
        row_diff = Bp[j] - Bp[i]
        col_diff = A[:, i] - A[:, j]
        self.p[[i, j]] = self.p[[j, i]]
        Bp[[i, j]] = Bp[[j, i]]
        Bp[:, [i, j]] = Bp[:, [j, i]]
        self.C += np.outer(col_diff, row_diff)
        self.C[:, [i, j]] = A @ Bp[:, [i, j]]
        self.f = self.exact() if gain is None else self.f + float(gain)
        if G is not None:
            dx = np.subtract.outer(col_diff, col_diff)
            row_diff *= 2                          # (x_u - x_v) 2 (y_u - y_v): the factor 2 on N entries
            dx *= np.subtract.outer(row_diff, row_diff)
            G -= dx
            rows = self.gain_rows(np.array([i, j]))
            G[[i, j]] = rows
            G[:, [i, j]] = rows.T

    def tol(self):
        return 1e-12 * max(1.0, abs(self.f))

    def descend(self, max_swaps=100000):
        """Best-improvement 2-swaps until none improves f (a 2-swap local optimum). Returns swaps made."""
        n = len(self.p)
        for swaps in range(max_swaps):
            G = self.gains()
            k = int(np.argmax(G))
            if G.flat[k] <= self.tol():
                return swaps
            self.swap(*divmod(k, n), G.flat[k])
        return max_swaps

    def snapshot(self):
        return self.p.copy(), self.Bp.copy(), self.C.copy(), self.f

    def restore(self, snap):
        self.p, self.Bp, self.C, self.f = snap[0].copy(), snap[1].copy(), snap[2].copy(), snap[3]

    def tabu(self, iterations, rng, deadline=None, tenure=None, refresh=None):
        """Robust tabu search (Taillard 1991) over 2-swaps: each step takes the best swap that does not put
        both items back where they were within the last ``tenure`` (+ a random extra) steps, unless it beats
        the best objective seen (aspiration). Ends at the best permutation seen, then descends from it.
        The gains are updated by each swap (``swap(..., G)``) and summed afresh every ``refresh`` steps
        (default N) so that rounding cannot build up. Returns steps run."""
        n = len(self.p)
        if n < 3:
            return 0
        tenure = tenure or max(4, n // 4)
        refresh = refresh or n
        # held_until[i, k]: the step until which the item now at position k is tabu at position i (the columns
        # move with the items, so no gather by p is needed each step)
        held_until = np.zeros((n, n), dtype=np.int64)
        best = self.snapshot()
        G = self.gains()
        masked = np.empty_like(G)
        step = 0
        for step in range(1, iterations + 1):
            if deadline is not None and step % 16 == 0 and time.perf_counter() > deadline:
                break
            if step % refresh == 0:
                G = self.gains()
            k = int(np.argmax(G))
            # aspiration: when the best swap beats the best objective seen it is taken, tabu or not (and then
            # it is also the best allowed one); otherwise the best swap that is not tabu
            if G.flat[k] <= best[3] - self.f + self.tol():
                held = held_until > step
                held &= held.T
                np.fill_diagonal(held, True)
                # tabu gains pushed to about -1e300 by arithmetic, not by np.where (whose branch on this
                # irregular mask costs three times the argmax and the arithmetic together)
                np.multiply(held, TABU, out=masked)
                np.subtract(G, masked, out=masked)
                k = int(np.argmax(masked))
                if held.flat[k]:   # every swap tabu: take the best one
                    np.copyto(masked, G)
                    np.fill_diagonal(masked, -np.inf)
                    k = int(np.argmax(masked))
            i, j = divmod(k, n)
            held_until[i, i] = step + tenure + rng.integers(0, tenure + 1)
            held_until[j, j] = step + tenure + rng.integers(0, tenure + 1)
            held_until[:, [i, j]] = held_until[:, [j, i]]
            self.swap(i, j, G[i, j], G)
            if self.f > best[3] + self.tol():
                best = self.snapshot()
        self.restore(best)
        self.f = self.exact()  # drop the summed gains' rounding
        self.descend()
        return step


def local_search(A, B, p):
    """The 2-swap local optimum reached by best-improvement descent from p: (perm, objective)."""
    s = SwapSearch(A, B, p)
    s.descend()
    return s.p.copy(), objective(A, B, s.p)


# ----------------------------------------------------------------------------------------------------------
# Starts
# ----------------------------------------------------------------------------------------------------------

def profile_start(A, B):
    """VecMap's start (Artetxe et al. 2018): each row's similarities sorted, so a row's profile does not depend
    on the order of the others; source and target profiles matched by the assignment (squared distance)."""
    n = len(A)
    off = ~np.eye(n, dtype=bool)
    SA = -np.sort(-A[off].reshape(n, n - 1), axis=1)
    SB = -np.sort(-B[off].reshape(n, n - 1), axis=1)
    cost = (SA * SA).sum(1)[:, None] + (SB * SB).sum(1)[None, :] - 2 * SA @ SB.T
    return linear_assignment(cost)[1]


def spectral_embedding(K, dim):
    """Rows of K's top ``dim`` eigenvectors scaled by sqrt(eigenvalue) (a kernel's PCA coordinates)."""
    w, U = np.linalg.eigh((K + K.T) / 2)
    top = np.argsort(-w)[:dim]
    return U[:, top] * np.sqrt(np.maximum(w[top], 0))


def procrustes_match(EA, EB, R, iters):
    """Wasserstein Procrustes (Grave et al. 2019): alternately the assignment of EA R to EB and the orthogonal
    R that best maps EA onto the matched rows. Returns (perm, R)."""
    p = None
    for _ in range(iters):
        p = linear_assignment(-(EA @ R) @ EB.T)[1]
        U, _, Vt = np.linalg.svd(EA.T @ EB[p])
        R = U @ Vt
    return p, R


def procrustes_starts(A, B, flips=4, dim=10, iters=4):
    """Spectral starts: both kernels' top ``dim`` eigen-coordinates, aligned up to the sign of each of the
    first ``flips`` eigenvectors (2^flips tries), each refined by ``procrustes_match``."""
    dim = min(dim, len(A) - 1)
    flips = min(flips, dim)
    EA, EB = spectral_embedding(A, dim), spectral_embedding(B, dim)
    out = []
    for signs in itertools.product((1.0, -1.0), repeat=flips):
        s = np.ones(dim)
        s[:flips] = signs
        out.append(procrustes_match(EA, EB, np.diag(s), iters)[0])
    return out


def _unit_rows(E):
    return E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)


def orthogonal_map(EA, EB):
    """The orthogonal R minimising ||EA R - EB|| (Schoenemann's Procrustes)."""
    U, _, Vt = np.linalg.svd(EA.T @ EB)
    return U @ Vt


def held_out_agreement(EA, EB, p, folds=5):
    """How well an orthogonal map between these coordinates generalises over the pairs (i, p_i), with no truth:
    the share of rows whose nearest target under the map fitted to the other folds' pairs is p_i."""
    n = len(p)
    hits = 0
    for f in range(folds):
        test = np.arange(f, n, folds)
        train = np.setdiff1d(np.arange(n), test)
        R = orthogonal_map(EA[train], EB[p[train]])
        hits += int(np.sum(np.argmax(EA[test] @ R @ EB.T, axis=1) == p[test]))
    return hits / n


# the refinement from this many items on: below, its 5-fold fits have few pairs (taken as the result it lowered
# N = 50's accuracy, 0.94 -> 0.91; as a start kept only on a higher objective it changed nothing at 20 and 50)
REFINE_FROM = 100
REFINE_DIMS = (0.05, 0.08, 0.1, 0.12, 0.16, 0.2, 0.25, 0.3, 0.4)   # the dimensions it tries, fractions of N


def refine_start(A, B, p, iters=20):
    """Self-learning from a found matching p (VecMap's refinement; Rosetta's Wasserstein Procrustes): both
    kernels' spectral coordinates (rows L2-normalised) in the dimension whose orthogonal map, fitted to p's
    pairs, best predicts held-out pairs (``held_out_agreement``: a map of too few dimensions misses structure,
    one of too many fits p's wrong pairs too), then the map and the assignment alternately until the matching
    stops changing. A start, not a result: the caller descends from it and keeps the better objective.
    Returns (perm, dim)."""
    n = len(A)
    dims = sorted({min(n - 1, max(2, round(f * n))) for f in REFINE_DIMS})
    FA, FB = spectral_embedding(A, dims[-1]), spectral_embedding(B, dims[-1])
    coords = {d: (_unit_rows(FA[:, :d]), _unit_rows(FB[:, :d])) for d in dims}
    dim = max(dims, key=lambda d: held_out_agreement(*coords[d], p))    # the first of equals
    EA, EB = coords[dim]
    q = np.asarray(p, dtype=np.int64)
    for _ in range(iters):
        nq = linear_assignment(-(EA @ orthogonal_map(EA, EB[q])) @ EB.T)[1]
        if np.array_equal(nq, q):
            break
        q = nq
    return q, dim


def faq_start(A, B, restarts, seed):
    """The best of ``restarts`` seeded-FAQ runs with no anchors (``src/faq.py``)."""
    from . import faq
    res = faq.seeded_qap(torch.as_tensor(A), torch.as_tensor(B), 0, restarts=restarts, seed=seed,
                         patience=None)
    return np.asarray(res.col_ind, dtype=np.int64)


def gw_start(A, B):
    """Entropic Gromov-Wasserstein's coupling (``GWSolver``) rounded by the assignment: a start from a smooth
    relaxation, which lands near the truth where the sorted profiles and spectral starts do not (N >= 150)."""
    return GWSolver().solve_kernels(A, B).perm


STARTS = ("profile", "procrustes", "faq", "gw", "random")
AUTO_STARTS = ("profile", "procrustes", "faq")
REFINE = ("auto", "on", "off")
GW_FROM = 150     # "auto" adds the gw start from this many items on (it costs 1-3 s at N = 100-200, one thread)


def default_iterations(n):
    """The default tabu budget of n items: 40 n steps up to n = 100, then 40 n (n / 100): the steps a swap
    needs to travel grow with n, and the truth's objective was not reached at n = 200 with 40 n."""
    return round(40 * n * max(1.0, n / 100))


def auto_starts(n):
    """The default portfolio of n items: ``AUTO_STARTS``, plus ``gw`` from ``GW_FROM`` items on."""
    return AUTO_STARTS + (("gw",) if n >= GW_FROM else ())


def _deadline(seconds):
    return None if not seconds else time.perf_counter() + seconds


# ----------------------------------------------------------------------------------------------------------
# Solvers
# ----------------------------------------------------------------------------------------------------------

class Solver:
    """Base of the blind solvers: ``solve(X, Y)`` matches the rows of X (N x D) to those of Y (N x D') with no
    pair known; ``solve_kernels(A, B)`` does it on two N x N kernels."""

    kernel = "linear"

    def kernels(self, X, Y):
        f = KERNELS[self.kernel]
        return f(X), f(Y)

    def solve(self, X, Y) -> Solution:
        return self.solve_kernels(*self.kernels(X, Y))

    def solve_kernels(self, A, B) -> Solution:
        raise NotImplementedError


class FAQSolver(Solver):
    """Seeded FAQ (``src/faq.py``) from random starts, no anchors: the relaxation's best, as peers run it."""

    def __init__(self, kernel="rbf", restarts=50, seed=0):
        self.kernel, self.restarts, self.seed = kernel, restarts, seed

    def solve_kernels(self, A, B):
        p = faq_start(A, B, self.restarts, self.seed)
        return Solution(p, objective(A, B, p), {"restarts": self.restarts})


class BlindSolver(Solver):
    """Portfolio of starts, 2-swap descent from each, then tabu search from the best ``keep`` of them.

    starts: the kinds of ``STARTS`` to try (None: ``auto_starts(N)``);
    iterations: tabu steps in all (None: ``default_iterations(N)``), half split evenly over the ``keep`` best
    starts, the best of them then taking what is left;
    tenure: the tabu tenure as a multiple of N (Taillard's robust tabu search draws it from [0.9 N, 1.1 N];
    here each entry lasts tenure N steps plus up to as many again, drawn: a long memory, since short ones
    (N / 4) cycled among a few local optima of these kernels);
    seconds: a wall-clock limit on the whole solve (None, the default: none, so that the step budget ends the
    search and the result does not depend on the machine; ``info["stopped"]`` says when the limit ended it);
    refine: "auto" (from ``REFINE_FROM`` items on), "on" or "off": a last start, ``refine_start`` from the
    search's result, descended, replaces it when its objective is higher (``info["refined"]``).
    """

    def __init__(self, kernel="linear", starts=None, keep=3, iterations=None, tenure=2.0, seconds=None,
                 faq_restarts=8, seed=0, refine="auto"):
        unknown = set(starts or ()) - set(STARTS)
        if unknown:
            raise ValueError(f"unknown starts {sorted(unknown)}; use some of {STARTS}")
        if not tenure > 0:
            raise ValueError(f"tenure {tenure}: must be positive")
        self.kernel, self.starts, self.keep, self.tenure = kernel, tuple(starts) if starts else None, keep, tenure
        self.iterations, self.seconds, self.faq_restarts, self.seed = iterations, seconds, faq_restarts, seed
        if refine not in REFINE:
            raise ValueError(f"refine {refine!r}: use one of {REFINE}")
        self.refine = refine

    def candidates(self, A, B, rng):
        out = []
        for kind in self.starts or auto_starts(len(A)):
            if kind == "profile":
                out.append(("profile", profile_start(A, B)))
            elif kind == "procrustes":
                out += [("procrustes", p) for p in procrustes_starts(A, B)]
            elif kind == "faq":
                out.append(("faq", faq_start(A, B, self.faq_restarts, self.seed)))
            elif kind == "gw":
                out.append(("gw", gw_start(A, B)))
            else:
                out.append(("random", rng.permutation(len(A))))
        return out

    def solve_kernels(self, A, B):
        n = len(A)
        t0 = time.perf_counter()
        deadline = _deadline(self.seconds)
        rng = np.random.default_rng(self.seed)
        if n < 3:   # nothing to search beyond one swap
            best = max((np.arange(n), np.arange(n)[::-1]), key=lambda p: objective(A, B, p))
            return Solution(np.asarray(best, dtype=np.int64), objective(A, B, best), {})
        descended = []
        for kind, p in self.candidates(A, B, rng):
            s = SwapSearch(A, B, p)
            s.descend()
            descended.append((s.f, kind, s.p.copy()))
        descended.sort(key=lambda t: -t[0])
        unique, seen = [], set()
        for f, kind, p in descended:
            if p.tobytes() not in seen:
                seen.add(p.tobytes())
                unique.append((f, kind, p))
        budget = default_iterations(n) if self.iterations is None else self.iterations
        keep = unique[:max(1, self.keep)]
        share = budget // (2 * len(keep)) if len(keep) > 1 else budget
        results, steps = [], 0
        tenure = max(4, round(self.tenure * n))
        for _, kind, p in keep:
            s = SwapSearch(A, B, p)
            steps += s.tabu(share, rng, deadline, tenure)
            results.append((s.f, kind, s.p.copy(), s))
        results.sort(key=lambda t: -t[0])
        f, kind, p, s = results[0]
        if budget - steps > 0:
            steps += s.tabu(budget - steps, rng, deadline, tenure)
        stopped = deadline is not None and time.perf_counter() > deadline
        info = {"start": kind, "steps": steps, "stopped": stopped}
        if self.refine == "on" or (self.refine == "auto" and n >= REFINE_FROM):
            q, info["refine_dim"] = refine_start(A, B, s.p)
            r = SwapSearch(A, B, q)
            r.descend()
            info["refined"] = r.f > s.f + s.tol()     # only a better objective replaces the search's result
            if info["refined"]:
                s = r
        p = s.p.copy()
        return Solution(p, objective(A, B, p), {**info, "seconds": time.perf_counter() - t0})


class GWSolver(Solver):
    """Entropic Gromov-Wasserstein (Alvarez-Melis and Jaakkola 2018) through POT: the inner-product loss
    (maximise sum A_ij B_kl T_ik T_jl over couplings T) by projected gradient steps, each an entropic transport
    solved by POT's log-domain Sinkhorn (``ot.gromov``'s own solver uses the plain Sinkhorn, which underflows
    once epsilon is small against the cost), then rounded to a permutation by the assignment. Each step's cost
    is scaled to a maximum of 1, and epsilon falls geometrically from ``start`` to ``epsilon`` (annealing: a
    large epsilon first finds the coarse alignment)."""

    def __init__(self, kernel="linear", epsilon=0.005, iterations=30, start=0.1, tol=1e-6):
        self.kernel, self.epsilon, self.iterations, self.start, self.tol = kernel, epsilon, iterations, start, tol

    def coupling(self, A, B):
        import warnings

        import ot
        # torch tensors select POT's torch backend: its logsumexp is about 4x faster than scipy's at N = 200
        # (the numpy backend's), with the same coupling to 1e-16
        A, B = torch.as_tensor(A, dtype=torch.float64), torch.as_tensor(B, dtype=torch.float64)
        n = len(A)
        p = q = torch.full((n,), 1.0 / n, dtype=torch.float64)
        T = torch.outer(p, q)
        start = max(self.start, self.epsilon)
        for k in range(self.iterations):
            eps = start * (self.epsilon / start) ** (k / max(1, self.iterations - 1))
            cost = -(A @ T @ B)                  # gradient of -sum A T B T^T (up to a factor 2)
            low = cost.min()
            cost = (cost - low) / max(float(cost.max() - low), 1e-300)
            with warnings.catch_warnings():    # an unconverged inner Sinkhorn still gives a usable step
                warnings.simplefilter("ignore")
                new = ot.sinkhorn(p, q, cost, eps, method="sinkhorn_log", numItermax=100, stopThr=1e-6)
            change = float((new - T).abs().sum())
            T = new
            if change < self.tol and eps <= self.epsilon * 1.0001:
                break
        return T.numpy()

    def solve_kernels(self, A, B):
        T = self.coupling(A, B)
        p = linear_assignment(-T)[1]
        return Solution(p, objective(A, B, p), {})


MAX_EXACT = 10


class ExactSolver(Solver):
    """Every permutation, in chunks: the certified optimum for N <= MAX_EXACT (10! = 3.6 M permutations)."""

    def __init__(self, kernel="linear", chunk=20000):
        self.kernel, self.chunk = kernel, chunk

    def solve_kernels(self, A, B):
        n = len(A)
        if n > MAX_EXACT:
            raise ValueError(f"exact search takes N <= {MAX_EXACT}, got {n}")
        best_f, best_p = -np.inf, None
        perms = itertools.permutations(range(n))
        while True:
            block = np.array(list(itertools.islice(perms, self.chunk)), dtype=np.int64)
            if not len(block):
                break
            values = objective(A, B, block)
            k = int(np.argmax(values))
            if values[k] > best_f:   # strict: the first of equal objectives in lexicographic order
                best_f, best_p = float(values[k]), block[k]
        return Solution(best_p, objective(A, B, best_p), {"permutations": math.factorial(n)})


def pca(X, dim):
    """Centred rows projected on their top ``dim`` principal directions (N x dim)."""
    X = _rows(X)
    X = X - X.mean(axis=0)
    U, S, _ = np.linalg.svd(X, full_matrices=False)
    return U[:, :dim] * S[:dim]


class RosettaSolver(Solver):
    """Large N (Schnaus et al., "Shared Geometry as a Rosetta Stone"): ``centres`` k-means centres of each side,
    matched blind by ``BlindSolver``; the orthogonal map of the matched centres (both sides in a common PCA
    space of ``dim`` dimensions, rows L2-normalised) starts Wasserstein Procrustes over all rows."""

    def __init__(self, kernel="linear", centres=100, dim=64, iterations=20, seconds=None, seed=0):
        self.kernel, self.centres, self.dim, self.iterations = kernel, centres, dim, iterations
        self.seconds, self.seed = seconds, seed

    def solve(self, X, Y):
        from sklearn.cluster import KMeans
        n = len(X)
        dim = min(self.dim, n - 1, _rows(X).shape[1], _rows(Y).shape[1])
        EX, EY = (pca(Z, dim) for Z in (X, Y))
        EX, EY = (E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12) for E in (EX, EY))
        k = min(self.centres, n)
        cx = KMeans(k, n_init=4, random_state=self.seed).fit(EX).cluster_centers_
        cy = KMeans(k, n_init=4, random_state=self.seed).fit(EY).cluster_centers_
        matched = BlindSolver(self.kernel, seconds=self.seconds, seed=self.seed).solve(cx, cy)
        U, _, Vt = np.linalg.svd(cx.T @ cy[matched.perm])
        p, _ = procrustes_match(EX, EY, U @ Vt, self.iterations)
        A, B = self.kernels(X, Y)
        return Solution(p, objective(A, B, p), {"centre_objective": matched.objective})
