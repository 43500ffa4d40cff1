"""Seeded graph matching, fast: batched FAQ restarts in torch, seeded, with warm starts.

Same problem as the paper's ``qap_matching`` (scipy's FAQ): maximise trace(A P B^T P^T) over permutations
P that keep every anchor (the first ``n_seeds`` rows of A and B) on its partner. Same algorithm as
``scipy.optimize.quadratic_assignment(method="faq")`` (Vogelstein et al. 2015; Fishkind et al. 2019):
Frank-Wolfe steps on the doubly stochastic relaxation, exact line search, tol on ||P - P'|| / sqrt(m),
projection by one Hungarian assignment. What makes it fast:

- restarts run as a batch: every product is a batched matmul on the device (GPU when A is on one);
- the products that involve P are kept and updated with the step, since the step towards a permutation
  Q only permutes rows or columns: one m^3 product per iteration (two when A or B is not symmetric)
  instead of scipy's six;
- the per-restart Hungarian assignments run in a thread pool (scipy releases the GIL);
- warm starts from a cheap graph (one Hungarian assignment) and early stopping when restarts stop
  improving the best objective.
"""
import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from .assignment import SPARSE_FROM, linear_assignment, solve_square

INITS = ("randomized", "barycenter", "warm")
SOLVERS = ("fast", "scipy")


@contextlib.contextmanager
def timed(timers, part, device):
    """Adds the block's seconds to timers[part] (nothing when timers is None; synchronises a GPU so the
    seconds are the device's)."""
    if timers is None:
        yield
        return
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    sync()
    t = time.perf_counter()
    try:
        yield
    finally:
        sync()
        timers[part] = timers.get(part, 0.0) + time.perf_counter() - t


@dataclass
class QAPResult:
    col_ind: np.ndarray     # full permutation (n,), anchors included: col_ind[i] = matched row of B
    objective: float        # sum(A * B[col_ind][:, col_ind]), as scipy's `fun`
    restarts: int           # restarts run
    objectives: list        # objective of every restart, in order


def doubly_stochastic(X, tol=1e-3, max_iter=1000):
    """Sinkhorn balancing of positive matrices (batch x m x m), scipy's _doubly_stochastic rule."""
    c = 1 / X.sum(dim=-2)
    r = 1 / (X @ c[..., None])[..., 0]
    P = X
    for _ in range(max_iter):
        if ((P.sum(dim=-1) - 1).abs() < tol).all() and ((P.sum(dim=-2) - 1).abs() < tol).all():
            break
        c = 1 / (r[..., None, :] @ X)[..., 0, :]
        r = 1 / (X @ c[..., None])[..., 0]
        P = r[..., :, None] * X * c[..., None, :]
    return P


def initial_points(init, m, count, generator, warm=None, perturb=0.25, dtype=torch.float64, device="cpu"):
    """``count`` starting points (count x m x m, doubly stochastic).

    randomized: (J + K) / 2, K a Sinkhorn-balanced uniform matrix (scipy's "randomized");
    barycenter: J = 11^T / m (deterministic, so one is enough);
    warm: the permutation ``warm`` (m,) first, then copies mixed with randomized points,
    (1 - perturb) P_warm + perturb (J + K) / 2.
    """
    J = torch.full((count, m, m), 1.0 / m, dtype=dtype, device=device)
    if init == "barycenter":
        return J
    U = torch.rand((count, m, m), generator=generator, dtype=dtype, device="cpu").to(device)
    rand = (J + doubly_stochastic(U)) / 2
    if init == "randomized":
        return rand
    Pw = torch.zeros(m, m, dtype=dtype, device=device)
    Pw[torch.arange(m, device=device), torch.as_tensor(warm, device=device)] = 1
    return (1 - perturb) * Pw + perturb * rand


def _lap_batch(M, maximize, pool, warm=None):
    """Optimal assignment of each matrix in a batch (``assignment.linear_assignment``); returns (batch, m)
    int64 columns.

    warm: None, or a list with one slot per matrix that carries each restart's last (columns, potentials)
    from one iteration to the next: from SPARSE_FROM on, the sparse solver starts from them (the gradient of
    the next Frank-Wolfe step is close to this one's, so its candidate set is nearly right from the start).
    The optimum is the same either way; only the time changes.
    """
    mats = M.detach().cpu().numpy()
    sign = -1.0 if maximize else 1.0
    if warm is None or mats.shape[1] < SPARSE_FROM:
        # below SPARSE_FROM scipy's solver: on these gradient matrices it beats LAPJV (assignment.py)
        cols = list(pool.map(lambda X: linear_assignment(X, maximize=maximize, scipy_below=SPARSE_FROM)[1], mats))
    else:
        def one(b):
            last_x, last_v = warm[b] if warm[b] is not None else (None, None)
            warm[b] = solve_square(sign * mats[b].astype(np.float64), v=last_v, extra=last_x)
            return warm[b][0]
        cols = list(pool.map(one, range(len(mats))))
    return torch.as_tensor(np.stack(cols), device=M.device)


def _gather_cols(X, idx):
    """X[b][:, idx[b]] for a batch (X: m x k or b x m x k, idx: b x k)."""
    X = X.expand(idx.shape[0], *X.shape[-2:])
    return X.gather(2, idx[:, None, :].expand(-1, X.shape[1], -1))


def _gather_rows(X, idx):
    """X[b][idx[b]] for a batch (X: k x m or b x k x m, idx: b x k)."""
    X = X.expand(idx.shape[0], *X.shape[-2:])
    return X.gather(1, idx[:, :, None].expand(-1, -1, X.shape[2]))


def is_symmetric(A, B):
    """Whether faq_batch takes its symmetric branch: A and B both exactly equal to their transposes.

    Exact, since the branch replaces A^T by A: a tolerance would let a nearly symmetric problem follow
    another path than scipy's. utils.qap_inputs builds exactly symmetric matrices.
    """
    return bool(torch.equal(A, A.T) and torch.equal(B, B.T))


def faq_batch(A, B, n_seeds, P0, maxiter=30, tol=1e-5, pool=None, timers=None):
    """Seeded FAQ from each start in P0 (b x m x m, m = n - n_seeds). Anchors are fixed to themselves.

    Returns (cols (b x m) of the unseeded part, objectives (b,), iterations (b,)). Iterates follow
    scipy's faq step for step (its gradient, line search and stopping rule), in the dtype of A, on both
    branches (``is_symmetric``: one m^3 product per iteration, else two).

    timers: a dict, or None; when given, seconds are added under "assignment" (the Hungarian steps, the
    final projection included), "products" (everything else: gradients, line search, updates), and the
    number of restart-iterations run under "iterations".
    """
    s = n_seeds
    A21, A12, A22 = A[s:, :s], A[:s, s:], A[s:, s:]
    B21, B12, B22 = B[s:, :s], B[:s, s:], B[s:, s:]
    sym = is_symmetric(A, B)
    const_sum = A21 @ B21.T + A12.T @ B12
    own_pool = pool is None
    pool = pool or ThreadPoolExecutor(os.cpu_count() or 1)

    dev = A.device
    try:
        if sym:
            n_iter, P = _symmetric_steps(A22, B22, const_sum, P0, maxiter, tol, pool, timers)
        else:
            n_iter, P = _general_steps(A22, A21, A12, B22, B21, B12, const_sum, P0, maxiter, tol, pool, timers)
        with timed(timers, "assignment", dev):
            cols = _lap_batch(P, True, pool)
    finally:
        if own_pool:
            pool.shutdown()
    if timers is not None:
        timers["iterations"] = timers.get("iterations", 0) + int(n_iter.sum())
    return cols, objective_batch(A, B, n_seeds, cols), n_iter


def _general_steps(A22, A21, A12, B22, B21, B12, const_sum, P0, maxiter, tol, pool, timers):
    """faq_batch's iterations for any A and B: (iterations (b,), final P (b x m x m)); scipy's gradient, line
    search and stopping rule, two m^3 products a step."""
    A22T, A12T, B22T = A22.T.contiguous(), A12.T.contiguous(), B22.T.contiguous()
    b, m = P0.shape[0], P0.shape[1]
    dev = P0.device
    with timed(timers, "products", dev):
        P = P0.clone()
        U = A22 @ P                                  # A22 P
        V = A22T @ P                                 # A22^T P
        W21 = P.transpose(1, 2) @ A21                # P^T A21
        W12 = P.transpose(1, 2) @ A12T               # P^T A12^T
        Z = B22 @ P.transpose(1, 2)                  # B22 P^T
    active = torch.ones(b, dtype=torch.bool, device=dev)
    warm = [None] * b          # each restart's last assignment and potentials (``_lap_batch``)
    n_iter = torch.zeros(b, dtype=torch.int64)
    for it in range(1, maxiter + 1):
        idx = torch.nonzero(active).flatten()
        if idx.numel() == 0:
            break
        n_iter[idx.cpu()] = it
        with timed(timers, "products", dev):
            Ui, Vi, Pi = U[idx], V[idx], P[idx]
            grad = const_sum + Ui @ B22T + Vi @ B22
        with timed(timers, "assignment", dev):
            slots = [warm[i] for i in idx.tolist()]
            cols = _lap_batch(grad, True, pool, slots)            # Q = eye[cols]
            for i, slot in zip(idx.tolist(), slots, strict=True):
                warm[i] = slot
        with timed(timers, "products", dev):
            inv = torch.argsort(cols, dim=1)                      # Q^T = eye[inv]
            # products with Q are permutations of rows or columns
            AQ = _gather_cols(A22, inv)                           # A22 Q
            ATQ = _gather_cols(A22T, inv)                         # A22^T Q
            QA21 = _gather_rows(A21, inv)                         # Q^T A21
            QA12 = _gather_rows(A12T, inv)                        # Q^T A12^T
            BQ = _gather_cols(B22, cols)                          # B22 Q^T
            Q = torch.zeros_like(Pi).scatter_(2, cols[:, :, None], 1.0)
            R = Pi - Q
            b21 = ((W21[idx] - QA21) * B21).sum(dim=(1, 2))
            b12 = ((W12[idx] - QA12) * B12.T).sum(dim=(1, 2))
            AR22 = Vi - ATQ
            BR22 = Z[idx] - BQ
            b22a = (AR22 * _gather_rows(B22T, cols)).sum(dim=(1, 2))
            b22b = (A22 * _gather_rows(BR22, cols)).sum(dim=(1, 2))
            a = (AR22.transpose(1, 2) * BR22).sum(dim=(1, 2))
            bb = b21 + b12 + b22a + b22b
            # maximise: interior critical point when a < 0, else the better end point (scipy's rule)
            crit = -bb / (2 * a)
            interior = (a < 0) & (crit >= 0) & (crit <= 1)
            end = ((bb + a) > 0).to(A22.dtype)  # argmin([0, -(b + a)]) is 1 when b + a > 0
            alpha = torch.where(interior, crit, end)
            al = alpha[:, None, None]
            P[idx] = al * Pi + (1 - al) * Q
            U[idx] = al * Ui + (1 - al) * AQ
            V[idx] = al * Vi + (1 - al) * ATQ
            W21[idx] = al * W21[idx] + (1 - al) * QA21
            W12[idx] = al * W12[idx] + (1 - al) * QA12
            Z[idx] = al * Z[idx] + (1 - al) * BQ
            step = (1 - alpha) * torch.linalg.norm(R.reshape(R.shape[0], -1), dim=1) / np.sqrt(m)
            active[idx[step < tol]] = False
    return n_iter, P


def _dot(X, Y):
    """<X_b, Y_b> for each matrix of a batch, in float64: float32 sums of rows (one pass, no temporary),
    then the rows' sums in float64 (one float32 sum of all m^2 products loses about 3 digits)."""
    return torch.einsum("bij,bij->bi", X, Y).to(torch.float64).sum(dim=-1)


def _at(X, cols):
    """<X_b, Q_b> = sum_i X_b[i, cols_b[i]], in float64."""
    return X.gather(-1, cols[..., None])[..., 0].to(torch.float64).sum(dim=-1)


def _symmetric_steps(A22, B22, K, P0, maxiter, tol, pool, timers):
    """faq_batch's iterations when A and B are symmetric: (iterations (b,), final P (b x m x m)).

    Same steps as the general branch (scipy's gradient, line search and stopping rule), with fewer passes
    over the b x m x m batch, since for symmetric A22, B22 every term of the line search is an inner product
    with M = A22 P B22, which the gradient (K + 2 M) computes anyway. Along P(alpha) = Q + alpha R, R = P - Q:
        a = <A22 R B22, R> = <M, P> - 2 <M, Q> + T,       T = tr(A22 Q B22 Q^T) = <A22 Q, Q B22>
        b = <K + 2 A22 Q B22, R> = <K, P> - <K, Q> + 2 <M, Q> - 2 T
    (<A22 Q B22, P> = <Q, M> by symmetry), and ||R||^2 = ||P||^2 - 2 <P, Q> + m. <., Q> reads m entries; T
    one row gather of B22 against A22 Q, which the update of U = A22 P needs anyway. The sums run in float64
    (``_dot``: a is a difference of such sums). Only P, U and the gradient's M live across the batch (and
    two m x m gathers a restart for the step): about half the general branch's b x m x m matrices, and about
    a quarter of its passes over them. The updates of P and U are the general branch's to the bit.
    """
    b, m = P0.shape[0], P0.shape[1]
    dev = A22.device
    f64 = torch.float64
    with timed(timers, "products", dev):
        P = P0.clone()
        U = A22 @ P                                  # A22 P
    active = torch.ones(b, dtype=torch.bool, device=dev)
    warm = [None] * b          # each restart's last assignment and potentials (``_lap_batch``)
    n_iter = torch.zeros(b, dtype=torch.int64)
    rows = torch.arange(m, device=dev)
    for it in range(1, maxiter + 1):
        idx = torch.nonzero(active).flatten()
        if idx.numel() == 0:
            break
        n_iter[idx.cpu()] = it
        every = idx.numel() == b
        with timed(timers, "products", dev):
            Ui, Pi = (U, P) if every else (U[idx], P[idx])
            # 2 A22 P B22, as the general branch computes it (scaling by 2 is exact, so doubling the product in
            # place gives the same bits as the product of 2 Ui, without a b x m x m temporary)
            M = torch.matmul(Ui, B22).mul_(2)
            grad = K + M
        with timed(timers, "assignment", dev):
            slots = [warm[i] for i in idx.tolist()]
            cols = _lap_batch(grad, True, pool, slots)            # Q = eye[cols]
            for i, slot in zip(idx.tolist(), slots, strict=True):
                warm[i] = slot
        del grad
        with timed(timers, "products", dev):
            inv = torch.argsort(cols, dim=1)                      # Q^T = eye[inv]
            k = idx.numel()
            MP, KP, PP = _dot(M, Pi) / 2, _dot(K.expand(k, m, m), Pi), _dot(Pi, Pi)   # <M, P>, <K, P>, ||P||^2
            MQ, KQ, PQ = _at(M, cols) / 2, _at(K.expand(k, m, m), cols), _at(Pi, cols)  # <., Q>
            del M
            AQ = _gather_cols(A22, inv)                           # A22 Q
            T = _dot(AQ, _gather_rows(B22, cols))
            a = MP - 2 * MQ + T
            bb = KP - KQ + 2 * MQ - 2 * T
            # maximise: interior critical point when a < 0, else the better end point (scipy's rule)
            crit = -bb / (2 * a)
            interior = (a < 0) & (crit >= 0) & (crit <= 1)
            end = ((bb + a) > 0).to(f64)  # argmin([0, -(b + a)]) is 1 when b + a > 0
            alpha = torch.where(interior, crit, end)
            al = alpha.to(P.dtype)[:, None, None]
            Pi.mul_(al)
            Pi[torch.arange(k, device=dev)[:, None], rows[None, :], cols] += (1 - al)[:, :, 0]
            Ui.mul_(al)
            Ui.add_(AQ.mul_(1 - al))
            if not every:
                P[idx], U[idx] = Pi, Ui
            del AQ
            norm = (PP - 2 * PQ + m).clamp(min=0).sqrt()
            step = (1 - alpha) * norm / np.sqrt(m)
            active[idx[step < tol]] = False
    return n_iter, P


def objective_batch(A, B, n_seeds, cols):
    """sum(A * B[perm][:, perm]) for perm = (anchors fixed, then n_seeds + cols), per row of cols."""
    s = n_seeds
    perm = torch.cat([torch.arange(s, device=cols.device).expand(cols.shape[0], s), cols + s], dim=1)
    Bp = _gather_rows(B, perm)
    Bp = Bp.gather(2, perm[:, None, :].expand(-1, Bp.shape[1], -1))
    return (A * Bp).sum(dim=(1, 2))


def seeded_qap(A, B, n_seeds, restarts=500, init="randomized", warm=None, seed=0, batch_size=8, patience=None,
               maxiter=30, tol=1e-5, perturb=0.25, dtype=torch.float32, progress=None, device=None, timers=None):
    """Best of up to ``restarts`` seeded FAQ runs, ``batch_size`` at a time.

    init: "randomized" (the paper's), "barycenter" (one run: it is deterministic) or "warm" (needs
    ``warm``, an (m,) assignment of the unseeded rows of A to those of B; the first run starts from it,
    later ones from perturbed copies). ``patience``: stop once that many restarts in a row have not
    improved the best objective (None: run them all). ``dtype``: of the FAQ iterates (float32 halves the
    time of the products; objectives are always compared in float64, on A's device). ``device``: where
    the iterates run (default A's): A and B may stay on the CPU in float64 while the iterates run on a GPU
    (MPS has no float64). Deterministic for a given seed. ``timers``: a dict that collects faq_batch's
    parts, and "start" (the starting points) and "objective" (scoring each restart's permutation).
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if init == "warm" and warm is None:
        raise ValueError("init='warm' needs a warm-start assignment")
    A = torch.as_tensor(A, dtype=torch.float64)
    B = torch.as_tensor(B, dtype=torch.float64, device=A.device)
    work = A.device if device is None else torch.device(device)
    Aw, Bw = A.to(dtype).to(work), B.to(dtype).to(work)  # cast where float64 lives, then move
    n = A.shape[0]
    m = n - n_seeds
    if init == "barycenter":
        restarts = 1
    gen = torch.Generator().manual_seed(int(seed or 0))
    objectives, best, best_cols, since = [], -np.inf, None, 0
    done = 0
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        while done < restarts:
            count = min(batch_size, restarts - done)
            with timed(timers, "start", work):
                P0 = initial_points(init, m, count, gen, warm=warm, perturb=perturb, dtype=dtype, device=work)
                if init == "warm" and done == 0:
                    P0[0] = initial_points("warm", m, 1, gen, warm=warm, perturb=0.0, dtype=dtype, device=work)[0]
            cols, _, _ = faq_batch(Aw, Bw, n_seeds, P0, maxiter=maxiter, tol=tol, pool=pool, timers=timers)
            with timed(timers, "objective", work):
                objs = objective_batch(A, B, n_seeds, cols.to(A.device))
            for k, obj in enumerate(objs.tolist()):
                objectives.append(obj)
                if obj > best:
                    best, best_cols, since = obj, cols[k].cpu().numpy(), 0
                else:
                    since += 1
            done += count
            if progress is not None:
                progress(done, best)
            if patience is not None and since >= patience:
                break
    col_ind = np.concatenate([np.arange(n_seeds), best_cols + n_seeds])
    return QAPResult(col_ind=col_ind, objective=float(best), restarts=done, objectives=objectives)


def two_opt(A, B, n_seeds, col_ind, max_swaps=100000, rtol=1e-12):
    """Polish a permutation by best-improvement pair swaps of unseeded rows until none improves.

    For symmetric A, B (the centred kernels are), swapping positions i, j of the permutation changes
    sum(A * B[p][:, p]) by
        2 (C_ij + C_ji - C_ii - C_jj - (A_ii - A_ij)(Bp_ij - Bp_ii) - (A_ij - A_jj)(Bp_jj - Bp_ij))
        + (A_ii - A_jj)(Bp_jj - Bp_ii),     C = A Bp, Bp = B[p][:, p],
    so every swap's gain is one O(m^2) pass, and a swap updates C by a rank-one term plus two columns.
    Returns (col_ind, objective, swaps). The objective never decreases; anchors never move.
    """
    A = torch.as_tensor(A, dtype=torch.float64)
    B = torch.as_tensor(B, dtype=torch.float64, device=A.device)
    A, B = (A + A.T) / 2, (B + B.T) / 2
    perm = torch.as_tensor(np.asarray(col_ind), device=A.device).clone()
    n, s = A.shape[0], n_seeds
    u = torch.arange(s, n, device=A.device)
    Bp = B[perm][:, perm]
    Ar = A[u]                                   # m x n
    Au = Ar[:, u]
    dA = torch.diagonal(Au)
    C = Ar @ Bp[:, u]                           # m x m block of A Bp
    objective = float((A * Bp).sum())
    swaps = 0
    while swaps < max_swaps:
        Bu = Bp[u][:, u]
        dB, dC = torch.diagonal(Bu), torch.diagonal(C)
        gain = 2 * (C + C.T - dC[:, None] - dC[None, :] - (dA[:, None] - Au) * (Bu - dB[:, None])
                    - (Au - dA[None, :]) * (dB[None, :] - Bu)) \
            + (dA[:, None] - dA[None, :]) * (dB[None, :] - dB[:, None])
        best, k = gain.view(-1).max(dim=0)
        if best.item() <= rtol * abs(objective):
            break
        i, j = divmod(int(k), len(u))
        gi, gj = s + i, s + j
        row_diff = Bp[gj, u] - Bp[gi, u]
        perm[[gi, gj]] = perm[[gj, gi]]
        Bp[[gi, gj]] = Bp[[gj, gi]]
        Bp[:, [gi, gj]] = Bp[:, [gj, gi]]
        C += (Ar[:, gi] - Ar[:, gj])[:, None] * row_diff[None, :]
        C[:, [i, j]] = Ar @ Bp[:, [gi, gj]]
        objective += best.item()
        swaps += 1
    return perm.cpu().numpy(), float((A * Bp).sum()), swaps
