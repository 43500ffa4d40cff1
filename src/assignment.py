"""The one linear assignment of the project: every Hungarian matching, FAQ's inner steps, warm starts and blind
starts call ``linear_assignment``.

Contract: the optimum of the same problem as ``scipy.optimize.linear_sum_assignment`` (same arguments, same
return: row indices ascending and the column of each), objective equal within float rounding. scipy stays the
reference in the tests. NaN and infinite costs are refused (ValueError naming the first one).

How (square n x n, minimising; ``maximize`` negates, a rectangular matrix is padded with rows of zeros, which
leaves the optimum of the real rows unchanged):

- below ``SCIPY_BELOW`` rows (or columns), scipy's own solver (as fast there, and small integer tables such as
  tasks.py's contingency keep scipy's choice among tied optima);
- below ``SPARSE_FROM``, the dense Jonker-Volgenant solver LAPJV (``lap.lapjv``, 3-4x faster than scipy's);
- else a sparse candidate set with an optimality certificate: reduce the costs (column then row minima,
  R = C - u - v >= 0), keep the ``k`` smallest reduced costs of every row and every column plus the diagonal
  (so that a full matching exists), solve that sparse problem with LAPMOD (``lap.lapmod``, Jonker-Volgenant
  for sparse matrices), and derive dual potentials from its solution: shortest paths in the residual graph
  (Bellman-Ford over the candidate edges, vectorised; it converges because the sparse solution is optimal,
  so the graph has no negative cycle). The assignment is optimal for the WHOLE matrix when every reduced cost
  C_ij - u_i - v_j is >= 0 (LP duality: sum u + sum v bounds every assignment from below and the matched
  entries reach it); that is checked over the dense matrix in row blocks, to float rounding (``_tolerance``).
  Entries that violate it join the candidate set (at most the ``k`` worst of a row while the duals are far
  off) and the sparse problem is solved again (4 rounds on the real graph of benchmarks/bench_scale.py
  at 2,000 and 5,000 rows). After ``MAX_ROUNDS`` rounds, or when the set grows past a quarter of the matrix,
  or if Bellman-Ford finds a negative cycle, the dense LAPJV (``lap.lapjv``) solves the matrix instead: the
  answer is exact on every path.

Ties (several assignments with the optimal objective): below ``SCIPY_BELOW``, the one scipy returns; up to
``SPARSE_FROM``, LAPJV's; above, the one LAPMOD reaches on the candidate set (LAPJV's on the dense
fallback). All are deterministic (the same matrix gives the same assignment) but need not be scipy's: callers
may rely on the objective, not on which of several optimal assignments comes back. Costs equal within
``_tolerance`` count as ties.
"""
import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["linear_assignment", "solve_square"]

SCIPY_BELOW = 64      # min(rows, columns): scipy below this
SPARSE_FROM = 1200    # the sparse path from this size (n x n after padding); LAPJV below (measured faster there)
K_BEST = 20           # candidates per row and per column (4 rounds against 6 with 10 at Q = 5,000: faster)
MAX_ROUNDS = 12       # certificate rounds before the dense fallback
BLOCK = 512           # rows per block of the dense passes (bounds the temporaries to BLOCK x n float64)


def _as_matrix(cost):
    """A float64 2-D numpy copy of the cost (a torch tensor is read on the CPU); refuses NaN and inf."""
    if hasattr(cost, "detach"):
        cost = cost.detach().cpu().numpy()
    C = np.array(cost, dtype=np.float64, order="C", copy=True)
    if C.ndim != 2:
        raise ValueError(f"linear_assignment: the cost matrix must be 2-D, got shape {C.shape}")
    bad = ~np.isfinite(C)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(f"linear_assignment: the cost matrix has {int(bad.sum())} NaN or infinite entries "
                         f"(first at row {i}, column {j}: {C[i, j]}); every cost must be finite (use a large "
                         f"finite cost for a forbidden pair)")
    return C


def linear_assignment(cost, maximize=False, scipy_below=SCIPY_BELOW):
    """Optimal assignment of a 2-D cost matrix (rows x columns, any float dtype; a torch tensor is read on the
    CPU). Returns (row_ind, col_ind), np.int64, as scipy's ``linear_sum_assignment``: min(rows, columns)
    pairs, row indices ascending. Raises ValueError on NaN or infinite costs.

    ``scipy_below``: the size under which scipy's solver is used instead of LAPJV. LAPJV is 3-4x faster than
    scipy on similarity graphs, but about 2x slower on FAQ's gradient matrices (faq passes ``SPARSE_FROM``:
    the bundled depth demo's qap took 41 s a seed against scipy's 26 s on the pixels control)."""
    C = _as_matrix(cost)
    nr, nc = C.shape
    if nr == 0 or nc == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if min(nr, nc) < scipy_below:
        rows, cols = linear_sum_assignment(C, maximize=maximize)
        return rows.astype(np.int64), cols.astype(np.int64)
    if maximize:
        np.negative(C, out=C)
    if nr > nc:                       # columns become rows: every column is matched
        C = np.ascontiguousarray(C.T)
    n_real, n = C.shape
    if n_real < n:                    # dummy rows of zeros take the columns left over
        C = np.concatenate([C, np.zeros((n - n_real, n))])
    x = solve_square(C)[0] if n >= SPARSE_FROM else _dense(C, duals=False)[0]
    x = x[:n_real]
    if nr > nc:                       # x[j] = row of column j
        order = np.argsort(x)
        return x[order].astype(np.int64), order.astype(np.int64)
    return np.arange(nr, dtype=np.int64), x.astype(np.int64)


def solve_square(C, v=None, k=K_BEST, extra=None, info=None):
    """Minimum-cost perfect matching of a square float64 matrix C (finite). Returns (x, v): x[i] = column of
    row i (np.int64), v the column potentials of the certificate (np.float64, n), which a caller solving a
    nearby matrix next may pass back as ``v`` (the reduction starts from them, so the candidate set is chosen
    by reduced costs that are already nearly right). ``extra``: a permutation (n,) whose entries join the
    candidate set (e.g. the previous solution). ``info``: a dict that receives "path" ("certificate" or
    "dense", the fallback), "rounds" and "candidates" (the final set's size). Used by linear_assignment and by
    faq's inner steps."""
    n = C.shape[0]
    if n == 1:
        return np.zeros(1, np.int64), C[0].copy()
    k = min(k, n - 1)
    v = _column_minima(C) if v is None else np.asarray(v, dtype=np.float64).copy()
    u = _row_minima(C, v)
    scale = max(C.max(), -C.min())      # max |C| without an n x n temporary
    mask = _candidates(C, u, v, k)        # n x n bool: the candidate set
    if extra is not None:
        mask[np.arange(n), np.asarray(extra, dtype=np.int64)] = True
    info = {} if info is None else info
    for rounds in range(1, MAX_ROUNDS + 1):
        key = np.flatnonzero(mask)        # sorted: rows ascending, columns ascending within a row
        if len(key) > n * n // 4:
            break
        rows, cols = key // n, key % n
        cc = C[rows, cols] - u[rows] - v[cols]
        x = _lapmod(n, rows, cols, cc)
        potentials = _potentials(rows, cols, cc, x, n)
        if potentials is None:        # a negative cycle: the sparse solution was not optimal
            break
        du, dv = potentials
        u, v = u + du, v + dv
        info.update(path="certificate", rounds=rounds, candidates=len(key))
        if not _add_violations(C, u, v, mask, _tolerance(scale, u, v), k):
            return x, v
    info["path"] = "dense"
    return _dense(C)


def _column_minima(C):
    v = np.full(C.shape[1], np.inf)
    for s in range(0, C.shape[0], BLOCK):
        np.minimum(v, C[s:s + BLOCK].min(axis=0), out=v)
    return v


def _row_minima(C, v):
    return np.concatenate([(C[s:s + BLOCK] - v).min(axis=1) for s in range(0, C.shape[0], BLOCK)])


def _candidates(C, u, v, k):
    """The candidate set (n x n bool): the k smallest reduced costs of every row and every column, and the
    diagonal."""
    n = C.shape[0]
    mask = np.zeros((n, n), dtype=bool)
    mask[np.arange(n), np.arange(n)] = True
    col_vals, col_rows = None, None
    for s in range(0, n, BLOCK):
        R = C[s:s + BLOCK] - u[s:s + BLOCK, None] - v[None, :]
        b = R.shape[0]
        j = np.argpartition(R, k, axis=1)[:, :k]
        mask[np.arange(s, s + b)[:, None], j] = True
        # the k smallest of each column so far: this block's rows against the best kept from earlier blocks
        kb = min(k, b)
        i = np.argpartition(R, kb - 1, axis=0)[:kb] if kb < b else np.broadcast_to(np.arange(b)[:, None], (b, n))
        vals = np.take_along_axis(R, i, axis=0)
        rws = i + s
        if col_vals is not None:
            vals, rws = np.concatenate([col_vals, vals]), np.concatenate([col_rows, rws])
        if vals.shape[0] > k:
            pick = np.argpartition(vals, k - 1, axis=0)[:k]
            vals, rws = np.take_along_axis(vals, pick, axis=0), np.take_along_axis(rws, pick, axis=0)
        col_vals, col_rows = vals, rws
    mask[col_rows, np.arange(n)[None, :]] = True
    return mask


def _lapmod(n, rows, cols, cc):
    """LAPMOD on the candidate set (rows sorted, columns sorted within a row): x[i] = column of row i."""
    import lap
    ii = np.searchsorted(rows, np.arange(n + 1))
    # lapmod needs non-negative costs; a constant shift leaves every perfect matching's order unchanged
    x = lap.lapmod(n, cc - min(float(cc.min()), 0.0), ii, cols, return_cost=False)[0]
    return np.asarray(x, dtype=np.int64)


def _potentials(rows, cols, cc, x, n):
    """Dual potentials (du, dv) with cc_ij - du_i - dv_j >= 0 on every candidate edge and = 0 on the matched
    ones, from the sparse optimum x; None when the residual graph has a negative cycle.

    The residual graph's row nodes have one incoming edge each (from their matched column, cost -cc_i,x_i),
    so they fold into column-to-column edges x_i -> j of weight cc_ij - cc_i,x_i; dv are shortest distances
    in that graph from a source joined to every column at 0, by Bellman-Ford that relaxes, at each step, only
    the edges leaving the columns whose distance just fell (the edges of their matched rows, contiguous
    since the edges are sorted by row); du_i = cc_i,x_i - dv_x_i.
    """
    on = cols == x[rows]
    if on.sum() != n:
        return None
    matched_cost = np.empty(n)
    matched_cost[rows[on]] = cc[on]
    w = cc - matched_cost[rows]
    starts = np.searchsorted(rows, np.arange(n + 1))
    row_of = np.empty(n, dtype=np.int64)
    row_of[x] = np.arange(n)
    d = np.zeros(n)
    np.minimum.at(d, cols, w)                       # the first sweep, from d = 0 everywhere
    changed = np.flatnonzero(d < 0)
    for _ in range(n):
        if len(changed) == 0:
            return matched_cost - d[x], d
        r = row_of[changed]
        lo, hi = starts[r], starts[r + 1]
        lengths = hi - lo
        edge = np.repeat(lo - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
        cand = np.repeat(d[changed], lengths) + w[edge]
        old = d.copy()
        np.minimum.at(d, cols[edge], cand)
        changed = np.flatnonzero(d < old)
    return None


def _tolerance(scale, u, v):
    """Reduced costs below -tolerance violate the certificate: the rounding of C - u - v in float64 (scale =
    max |C|). An assignment certified to it is within n x tolerance of the optimum."""
    return 64 * np.finfo(np.float64).eps * (scale + np.abs(u).max() + np.abs(v).max())


def _add_violations(C, u, v, mask, tol, k):
    """Adds to the mask the entries with reduced cost C_ij - u_i - v_j < -tol, over the whole matrix (at most
    the k most violated of a row when a block holds many: while the duals are still far off, adding them all
    would make the sparse problem dense, and the next round's duals are better); whether there was any.
    Tested as C_ij - v_j < u_i - tol, in two passes a block over buffers made once (the dense check is the
    sparse path's largest cost)."""
    found = False
    width = min(BLOCK, C.shape[0])
    buf, bad_buf = np.empty((width, C.shape[1])), np.empty((width, C.shape[1]), dtype=bool)
    for s in range(0, C.shape[0], BLOCK):
        Cb = C[s:s + BLOCK]
        R, bad = buf[:Cb.shape[0]], bad_buf[:Cb.shape[0]]
        np.subtract(Cb, v, out=R)
        np.less(R, (u[s:s + BLOCK] - tol)[:, None], out=bad)
        count = int(np.count_nonzero(bad))
        if count == 0:
            continue
        found = True
        if count <= 2 * k * R.shape[0]:
            mask[s:s + BLOCK] |= bad
            continue
        r = np.flatnonzero(bad.any(axis=1))
        worst = np.argpartition(R[r], k, axis=1)[:, :k]   # u_i is constant along a row: same order as R - u
        keep = np.take_along_axis(bad[r], worst, axis=1)
        mask[np.broadcast_to(r[:, None] + s, worst.shape)[keep], worst[keep]] = True
    return found


def _dense(C, duals=True):
    """LAPJV on the whole matrix, and column potentials for a later warm start (``lap`` does not return its
    duals: the column minima of C - u, u the matched costs)."""
    import lap
    x = np.asarray(lap.lapjv(C, return_cost=False)[0], dtype=np.int64)
    if not duals:
        return x, None
    u = C[np.arange(C.shape[0]), x]
    return x, _column_minima(C - u[:, None])
