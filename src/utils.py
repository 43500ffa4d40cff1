"""The paper's math, with the paper's API (Maniparambil et al., CVPR 2024, arXiv 2401.05224).

Every public name and signature of the paper's ``src/utils.py`` is kept, so code written against it runs
unchanged. Definitions are the paper's:

- HSIC is the biased estimator ``sum(HKH * HLH)`` with ``H = I - 11^T / n``; CKA is
  ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))``.
- The RBF kernel uses squared distances built from the Gram matrix; with ``sigma=None`` the bandwidth is
  ``sqrt(median of the nonzero squared distances)``, ``torch.median`` semantics (the lower middle value),
  computed separately for every set of rows it is given (so in local CKA it changes with each query).
- Graphs are Q x Q: rows are source queries, columns are target queries.

What differs is speed: local CKA for all Q x Q pairs is computed at once (no per-pair loop), retrieval
metrics are vectorised, and QAP restarts are seeded. Graphs keep the dtype and device their inputs come in
with (``device`` moves them first when given); float64 inputs give float64 results.

Device and dtype policy (MPS has no float64): what needs float64 (least squares, the QAP matrices, matching)
runs on the CPU in float64 (``.cpu().double()``, never ``.double()`` on a device); graphs follow the device.
"""
import logging

import numpy as np
import torch

_logger = logging.getLogger(__name__)

__all__ = [
    "centering", "rbf", "kernel_HSIC", "kernel_CKA", "linear_HSIC", "linear_CKA",
    "centered_scaled_corr", "centered_scaled_corr_rbf", "stretch_representations", "get_data_sep",
    "KernelCKA", "LinearCKA", "linear_baseline", "cos_baseline", "relative_baseline",
    "get_relative_representation", "linear_local_CKA", "kernel_local_CKA", "get_retrieval",
    "get_classes", "linear_matching", "qap_matching",
]


def _to(x, device):
    return x if device is None else x.to(device)


# ----------------------------------------------------------------------------------------------------------
# CKA on one pair of representations
# ----------------------------------------------------------------------------------------------------------

def centering(K, device=None):
    """HKH with H = I - 11^T/n, for an n x n matrix K (or a batch b x n x n).

    Computed as K minus row and column means plus the grand mean, which equals H @ K @ H without the
    two n^3 products.
    """
    K = _to(K, device)
    return (K - K.mean(dim=-1, keepdim=True) - K.mean(dim=-2, keepdim=True)
            + K.mean(dim=(-2, -1), keepdim=True))


def _sq_dists(X):
    """Squared distances of the rows of X (n x d) from the Gram matrix, exactly as the paper forms them."""
    GX = X @ X.T
    d = torch.diagonal(GX)
    return d - GX + (d - GX).T  # [i, j] = (G_jj - G_ij) + (G_ii - G_ji): symmetric, zero diagonal


def rbf(X, sigma=None):
    """RBF kernel exp(-||x_i - x_j||^2 / (2 sigma^2)) of the rows of X (n x d).

    sigma=None: sigma = sqrt(lower median of the nonzero squared distances of this X).
    """
    KX = _sq_dists(X)
    if sigma is None:
        sigma = torch.sqrt(torch.median(KX[KX != 0]))  # torch.median: the lower of two middle values
    return torch.exp(KX * (-0.5 / (sigma * sigma)))


def kernel_HSIC(X, Y, device=None, sigma=None):
    """Biased HSIC of the RBF kernels of X and Y (each with its own median sigma when sigma is None)."""
    X, Y = _to(X, device), _to(Y, device)
    return torch.sum(centering(rbf(X, sigma)) * centering(rbf(Y, sigma)))


def kernel_CKA(X, Y, device=None, sigma=None):
    """RBF-kernel CKA of X (n x d1) and Y (n x d2), rows paired."""
    hsic = kernel_HSIC(X, Y, device, sigma)
    var1 = torch.sqrt(kernel_HSIC(X, X, device, sigma))
    var2 = torch.sqrt(kernel_HSIC(Y, Y, device, sigma))
    return hsic / (var1 * var2)


def linear_HSIC(X, Y, device=None):
    """Biased HSIC of the linear kernels XX^T and YY^T."""
    X, Y = _to(X, device), _to(Y, device)
    return torch.sum(centering(X @ X.T) * centering(Y @ Y.T))


def linear_CKA(X, Y, device=None):
    """Linear CKA of X (n x d1) and Y (n x d2), rows paired."""
    hsic = linear_HSIC(X, Y, device)
    var1 = torch.sqrt(linear_HSIC(X, X, device))
    var2 = torch.sqrt(linear_HSIC(Y, Y, device))
    return hsic / (var1 * var2)


def _symmetric(C):
    """(C + C^T) / 2: exactly symmetric (float addition commutes). Centring rounds the [i, j] and [j, i]
    entries differently (about 1e-8 relative in float32, 1e-17 in float64); the QAP solver takes its
    cheaper symmetric branch only on exactly symmetric matrices."""
    return (C + C.T) / 2


def centered_scaled_corr(X, device=None):
    """H XX^T H / sqrt(HSIC(XX^T, XX^T)): the linear-kernel graph that QAP can match (exactly symmetric)."""
    X = _to(X, device)
    return _symmetric(centering(X @ X.T)) / torch.sqrt(linear_HSIC(X, X))


def centered_scaled_corr_rbf(X, device=None, sigma=None):
    """H K H / sqrt(HSIC(K, K)) with K the RBF kernel of X: the paper's QAP input (exactly symmetric;
    K already is, as _sq_dists is)."""
    X = _to(X, device)
    C = _symmetric(centering(rbf(X, sigma)))
    return C / torch.sqrt(torch.sum(C * C))


class KernelCKA:
    """The paper's per-pair kernel CKA object (kept for code written against it; slow by design)."""

    def __init__(self, n, device=None):
        self.device = device

    def kernel_HSIC(self, X, Y, sigma=None):
        return kernel_HSIC(X, Y, self.device, sigma)

    def calculate(self, X, Y, sigma=None):
        return kernel_CKA(X, Y, self.device, sigma)


class LinearCKA:
    """The paper's per-pair linear CKA object (kept for code written against it; slow by design)."""

    def __init__(self, n, device=None):
        self.device = device

    def linear_HSIC(self, X, Y, sigma=None):
        return linear_HSIC(X, Y, self.device)

    def calculate(self, X, Y, sigma=None):
        return linear_CKA(X, Y, self.device)


# ----------------------------------------------------------------------------------------------------------
# Data: stretch and anchor / query selection
# ----------------------------------------------------------------------------------------------------------

_warned_constant_dims = False


def stretch_representations(repr):
    """Divide each dimension by its standard deviation (unbiased, over rows), as the paper does.

    Dimensions that are constant up to rounding (all-MiniLM-L6-v2 has three with variance ~1e-66) would
    become inf or huge noise; they are left unscaled, with one warning per process.
    """
    global _warned_constant_dims
    std = torch.sqrt(repr.var(dim=0))
    near_constant = ~torch.isfinite(1.0 / std) | (std <= torch.finfo(std.dtype).eps * std.max())
    if near_constant.any():
        if not _warned_constant_dims:
            idx = torch.nonzero(near_constant).flatten().tolist()
            _logger.warning("stretch: %d near-constant dimension(s) %s left unscaled (std <= eps * max std)",
                            len(idx), idx[:10])
            _warned_constant_dims = True
        std = torch.where(near_constant, torch.ones_like(std), std)
    return repr / std


def _legacy_choice(seed, n, k):
    """The rows the paper's code draws (``np.random.seed(seed); np.random.choice(n, k, replace=False)``),
    from a local RandomState: the same legacy generator, without resetting the process-wide one."""
    return np.random.RandomState(seed).choice(n, k, replace=False)


def get_data_sep(seed1, seed2, base_samples, query_samples, source_base_large, target_base_large,
                 source_query_large, target_query_large, source_base_cluster, target_base_cluster,
                 clustering_mode=0, same=False, stretch=False):
    """Pick anchors (base) and queries, exactly the rows the paper's code picks.

    clustering_mode 0: ``base_samples`` random anchors (seed1); 1: the source side's cluster picks;
    2: the target side's. Queries: ``query_samples`` random rows of the query pool (seed2); when base and
    query come from one dataset (``same``) the anchor rows are left out of the query pool first.
    With ``stretch`` each side is stretched over base pool + query pool together.

    Returns (source_base, target_base, source_query, target_query).
    """
    n_base = source_base_large.shape[0]
    if stretch:
        source_total = stretch_representations(torch.cat([source_base_large, source_query_large], dim=0))
        target_total = stretch_representations(torch.cat([target_base_large, target_query_large], dim=0))
        source_base_large, source_query_large = source_total[:n_base], source_total[n_base:]
        target_base_large, target_query_large = target_total[:n_base], target_total[n_base:]

    if clustering_mode == 0:
        choose = _legacy_choice(seed1, n_base, base_samples)
    elif clustering_mode == 1:
        choose = np.asarray(torch.as_tensor(source_base_cluster).cpu(), dtype=np.int64)
    elif clustering_mode == 2:
        choose = np.asarray(torch.as_tensor(target_base_cluster).cpu(), dtype=np.int64)
    else:
        raise ValueError(f"clustering_mode must be 0, 1 or 2, got {clustering_mode}")
    choose_t = torch.as_tensor(choose, device=source_base_large.device)
    source_base, target_base = source_base_large[choose_t], target_base_large[choose_t]

    n_query = source_query_large.shape[0]
    if not same:
        query = torch.as_tensor(_legacy_choice(seed2, n_query, query_samples))
    else:
        mask = np.ones(n_query, dtype=bool)
        mask[choose] = False
        # The paper draws from n - base_samples rows of the remaining pool (not n - len(choose)).
        query_choose = _legacy_choice(seed2, n_query - base_samples, query_samples)
        query = torch.as_tensor(np.nonzero(mask)[0][query_choose])
    query = query.to(source_query_large.device)
    return source_base, target_base, source_query_large[query], target_query_large[query]


# ----------------------------------------------------------------------------------------------------------
# Graphs (Q x Q): baselines
# ----------------------------------------------------------------------------------------------------------

def _l2n(x):
    return x / torch.linalg.norm(x, dim=1, keepdim=True)


def _cosine(x, y):
    return _l2n(x) @ _l2n(y).T


def linear_baseline(source_base, target_base, source_query, target_query, device=None):
    """Least squares (no intercept) from source to target on the anchors; cosine of projected source
    queries to the true target queries."""
    sb, tb, sq, tq = (_to(t, device) for t in (source_base, target_base, source_query, target_query))
    W = torch.linalg.lstsq(sb.cpu().double(), tb.cpu().double(), driver="gelsd").solution
    projected = (sq.cpu().double() @ W).to(dtype=sq.dtype, device=sq.device)
    return _cosine(projected, tq)


def cos_baseline(source_base, target_base, source_query, target_query, device=None):
    """Plain cosine between source and target queries (meaningful only for a shared space, e.g. CLIP)."""
    return _cosine(_to(source_query, device), _to(target_query, device))


def get_relative_representation(q, prior):
    """Cosine of each row of q to each anchor in prior (relative representations)."""
    return _cosine(q, prior)


def relative_baseline(source_base, target_base, source_query, target_query, device=None):
    """Relative representations: cosine to the anchors on each side, rows normalised, then cosine."""
    sb, tb, sq, tq = (_to(t, device) for t in (source_base, target_base, source_query, target_query))
    return _cosine(get_relative_representation(sq, sb), get_relative_representation(tq, tb))


# ----------------------------------------------------------------------------------------------------------
# Graphs (Q x Q): local CKA, all pairs at once
# ----------------------------------------------------------------------------------------------------------

def linear_local_CKA(source_base, target_base, source_query, target_query, device=None):
    """graph[i, j] = linear_CKA([sq_i; source_base], [tq_j; target_base]) for all i, j.

    Block decomposition. Centre the anchors on their mean: B (n x d), a_i = sq_i - mean, p_i = B a_i,
    alpha_i = |a_i|^2, P = B B^T, s = 1/(n+1). The centred Gram matrix of [sq_i; anchors] is then
        [0, 0] = (n s)^2 alpha_i,   [0, k] = n s (p_ik - s alpha_i),
        [k, l] = P_kl - s (p_ik + p_il) + s^2 alpha_i,
    and since P 1 = 0 and sum_k p_ik = 0, its inner product with the target side's (C, c_j, q_j, gamma_j,
    R) collapses to
        HSIC_ij = <P, R> + 2 n s p_i . q_j + (n s)^2 alpha_i gamma_j.
    Cost O(Q n d + Q^2 n) instead of the per-pair loop's O(Q^2 n^2 d).
    """
    sb, tb, sq, tq = (_to(t, device) for t in (source_base, target_base, source_query, target_query))
    n = sb.shape[0]
    s = 1.0 / (n + 1)
    c1, c2 = 2.0 * n * s, (n * s) ** 2

    def side(base, query):
        mean = base.mean(dim=0, keepdim=True)
        B, a = base - mean, query - mean
        P = B @ B.T
        p = a @ B.T
        alpha = (a * a).sum(dim=1)
        return P, p, alpha

    P, p, alpha = side(sb, sq)
    R, q, gamma = side(tb, tq)
    hsic = (P * R).sum() + c1 * (p @ q.T) + c2 * alpha[:, None] * gamma[None, :]
    var_x = (P * P).sum() + c1 * (p * p).sum(dim=1) + c2 * alpha * alpha
    var_y = (R * R).sum() + c1 * (q * q).sum(dim=1) + c2 * gamma * gamma
    return hsic / (torch.sqrt(var_x)[:, None] * torch.sqrt(var_y)[None, :])


def _kth_of_union(A, Bsorted, k):
    """k-th smallest (0-based) of the multiset A + 2 x Bsorted[i], for every row i.

    A: sorted 1-D tensor shared by all rows (the anchor-anchor distances); Bsorted: Q x m sorted per
    row with +inf for entries to ignore; each finite entry of Bsorted counts twice (the kernel matrix
    holds each query-anchor distance at [0, k] and [k, 0]). Returns a Q-vector. No per-query sort of
    the n^2 shared values: a vectorised binary search over A plus a direct check of the m candidates.
    """
    Q = Bsorted.shape[0]
    need = (k + 1).to(torch.int64)  # smallest v with count(union <= v) >= k + 1

    def count_le(values):  # values: Q x c
        in_a = torch.searchsorted(A, values.contiguous(), right=True)
        in_b = torch.searchsorted(Bsorted, values.contiguous(), right=True)
        return in_a + 2 * in_b

    inf = torch.tensor(float("inf"), dtype=A.dtype, device=A.device)
    ok_b = torch.isfinite(Bsorted) & (count_le(Bsorted) >= need[:, None])
    cand_b = torch.where(ok_b, Bsorted, inf).min(dim=1).values

    M = A.shape[0]
    if M == 0:  # one anchor: no anchor-anchor distances, the set's only nonzero ones are the query's
        return cand_b
    lo = torch.zeros(Q, dtype=torch.int64, device=A.device)
    hi = torch.full((Q,), M, dtype=torch.int64, device=A.device)
    for _ in range(max(1, M).bit_length() + 1):
        mid = (lo + hi) // 2
        midc = mid.clamp(max=max(M - 1, 0))
        cond = (mid < M) & (count_le(A[midc][:, None])[:, 0] >= need)
        hi = torch.where(cond, mid, hi)
        lo = torch.where(cond, lo, torch.minimum(mid + 1, hi))
    cand_a = torch.where(hi < M, A[hi.clamp(max=max(M - 1, 0))], inf)
    return torch.minimum(cand_a, cand_b)


class _LocalRBF:
    """Centred RBF kernels of the sets [x_i; base] for many query rows x_i, as upper-triangle vectors.

    Each set gets its own median sigma, as the paper's rbf(). The anchor-anchor distances are shared;
    only the n query-anchor distances change per query.
    """

    # Rows handled together when building kernels. On a CPU: small enough that the N x N temporaries
    # stay in cache (fresh multi-GB temporaries cost more in page faults than the arithmetic); on a GPU:
    # large, so each kernel launch does enough work.
    cpu_block, gpu_block = 32, 256

    def __init__(self, base):
        self.base = base
        n = base.shape[0]
        N = n + 1
        D = _sq_dists(base)
        self.A = torch.sort(D[D != 0]).values
        self.gb = torch.diagonal(base @ base.T)
        self.D_full = torch.zeros(N, N, dtype=base.dtype, device=base.device)
        self.D_full[1:, 1:] = D
        # <X, Y> of symmetric matrices = diagonal + 2 x upper triangle (the 2 goes on one side only)
        iu = torch.triu_indices(N, N, device=base.device)
        self.flat = iu[0] * N + iu[1]

    @property
    def size(self):
        return self.flat.shape[0]

    def sigmas(self, query):
        """Query-anchor squared distances (c x n) and each set's median sigma^2 (c)."""
        gq = (query * query).sum(dim=1)
        G = query @ self.base.T
        d = (self.gb[None, :] - G) + (gq[:, None] - G)  # the paper's order: (G_kk - G_0k) + (G_00 - G_k0)
        nonzero = d != 0
        kth = (self.A.shape[0] + 2 * nonzero.sum(dim=1) - 1) // 2  # torch.median: the lower middle
        inf = torch.tensor(float("inf"), dtype=d.dtype, device=d.device)
        dsorted = torch.sort(torch.where(nonzero, d, inf), dim=1).values
        return d, _kth_of_union(self.A, dsorted, kth)

    def vectors(self, query, out=None, weighted=False):
        """Upper triangles of H K_i H for each row of query (c x d), written to out (c x N(N+1)/2), and
        each set's HSIC(K_i, K_i) = ||H K_i H||^2 (c). weighted=True doubles the off-diagonal entries,
        so that a plain dot product with an unweighted vector gives the full inner product."""
        c, N = query.shape[0], self.D_full.shape[0]
        if out is None:
            out = torch.empty(c, self.size, dtype=query.dtype, device=query.device)
        self_hsic = torch.empty(c, dtype=query.dtype, device=query.device)
        block = self.cpu_block if query.device.type == "cpu" else self.gpu_block
        buf = torch.empty(min(block, c), N, N, dtype=query.dtype, device=query.device)
        for i in range(0, c, block):
            d, med = self.sigmas(query[i:i + block])
            sigma = torch.sqrt(med)
            b = d.shape[0]
            K = buf[:b]
            K.copy_(self.D_full.expand(b, N, N))
            K[:, 0, 1:] = d
            K[:, 1:, 0] = d
            K.mul_((-0.5 / (sigma * sigma))[:, None, None]).exp_()
            # centre in place: K - row means - column means + grand mean (K is symmetric)
            r = K.mean(dim=2)
            K.sub_(r[:, :, None]).sub_(r[:, None, :]).add_(r.mean(dim=1)[:, None, None])
            self_hsic[i:i + b] = (K * K).sum(dim=(1, 2))
            if weighted:
                K.mul_(2)
                K.diagonal(dim1=1, dim2=2).mul_(0.5)
            torch.gather(K.view(b, -1), 1, self.flat.expand(b, -1), out=out[i:i + b])  # faster than index_select
        return out, self_hsic


def kernel_local_CKA(source_base, target_base, source_query, target_query, device=None, chunk_size=256):
    """graph[i, j] = kernel_CKA([sq_i; source_base], [tq_j; target_base]) for all i, j (RBF, per-set
    median sigma, biased HSIC).

    <HKH, HLH> is a dot product of flattened centred kernels, so all Q x Q HSIC values are matrix
    products; the kernels are symmetric, so upper triangles suffice (half the products). The target
    side's vectors are kept (Q x N(N+1)/2); source queries go in chunks of ``chunk_size`` rows, so
    memory stays bounded (Q = 5,000, 320 anchors, float64: about 2.5 GB).

    One anchor is allowed: each set then has two rows, its median is their one nonzero squared distance,
    and every entry is 1 up to rounding (so is linear_local_CKA's): one anchor carries no information.
    """
    sb, tb, sq, tq = (_to(t, device) for t in (source_base, target_base, source_query, target_query))
    src, tgt = _LocalRBF(sb), _LocalRBF(tb)
    vt, var_t = tgt.vectors(tq)
    std_t = torch.sqrt(var_t)
    graph = torch.empty(sq.shape[0], tq.shape[0], dtype=vt.dtype, device=vt.device)
    vs = torch.empty(min(chunk_size, sq.shape[0]), src.size, dtype=sq.dtype, device=sq.device)
    for i in range(0, sq.shape[0], chunk_size):
        part, var_s = src.vectors(sq[i:i + chunk_size], out=vs[:min(chunk_size, sq.shape[0] - i)], weighted=True)
        graph[i:i + part.shape[0]] = (part @ vt.T) / (torch.sqrt(var_s)[:, None] * std_t[None, :])
    return graph


# ----------------------------------------------------------------------------------------------------------
# Retrieval and matching
# ----------------------------------------------------------------------------------------------------------

def _topk_hits(graph, target_cols):
    """Rank (0-based) of column target_cols[i] in row i when the row is sorted by descending value with
    ties broken toward the lower column index, as Python's stable sort on -row does."""
    idx = torch.arange(graph.shape[1], device=graph.device)
    own = graph.gather(1, target_cols[:, None])
    above = (graph > own).sum(dim=1)
    tied_before = ((graph == own) & (idx[None, :] < target_cols[:, None])).sum(dim=1)
    return above + tied_before


def _recall_at(ranks):
    n = ranks.shape[0]
    return tuple(float((ranks < k).sum().item()) / n for k in (1, 5, 10))


def get_retrieval(graph):
    """(top1, top5, top10): fraction of rows i whose own column i is among the k largest entries of the
    row (ties toward the lower index). Returns (None, None, None) for graph None, as the paper."""
    if graph is None:
        return None, None, None
    graph = torch.as_tensor(graph)
    cols = torch.arange(graph.shape[0], device=graph.device)
    return _recall_at(_topk_hits(graph, cols))


def get_classes(graph, classes, target_query):
    """Class retrieval: row i is a hit at k when the column of target_query[i]'s class (its row in
    ``classes``, the last one for duplicate rows, as the paper's dict) is among the k largest."""
    graph = torch.as_tensor(graph)
    class_to_ind = {tuple(row): i for i, row in enumerate(classes.cpu().numpy().tolist())}
    cols = torch.tensor([class_to_ind[tuple(row)] for row in target_query.cpu().numpy().tolist()],
                        device=graph.device)
    return _recall_at(_topk_hits(graph, cols))


def _query_shuffle(n):
    """The paper's column shuffle (``torch.manual_seed(0); torch.randperm(n)``), drawn from a local CPU
    generator: the same permutation, and the process-wide generator is left alone."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(0))


def linear_matching(source_base, target_base, source_query, target_query, graph, device=None):
    """Hungarian assignment (maximise) on the column-shuffled graph; fraction of recovered pairs
    (src/matching.py's ``hungarian``, which also returns the assignment)."""
    from .matching import hungarian  # matching.py builds on this module, so it is imported here
    return hungarian(graph)[0]


def qap_inputs(source_base, target_base, source_query, target_query, device=None):
    """The paper's QAP problem: A, B (CPU float64 tensors, exactly symmetric) of anchors + queries on each
    side, with the target queries shuffled (the paper's torch.manual_seed(0) permutation), the shuffle
    (CPU int64), and the number of anchors. Built on the CPU in float64 whatever the inputs' device:
    ``device`` is accepted for the paper's signature and not used."""
    sb, tb, sq, tq = (torch.as_tensor(t).detach().cpu().double()
                      for t in (source_base, target_base, source_query, target_query))
    shuffle = _query_shuffle(sq.shape[0])
    A = centered_scaled_corr_rbf(torch.cat([sb, sq], dim=0))
    B = centered_scaled_corr_rbf(torch.cat([tb, tq[shuffle]], dim=0))
    return A, B, shuffle, sb.shape[0]


def qap_accuracy(col_ind, shuffle, n_base):
    """Fraction of source queries whose matched target (in the shuffled order) is their own partner."""
    new_col_ind = np.asarray(col_ind)[n_base:] - n_base
    q = len(new_col_ind)
    return float(np.sum(new_col_ind[np.asarray(shuffle)] == np.arange(q))) / q


def qap_matching(source_base, target_base, source_query, target_query, graph, device=None, restarts=500,
                 seed=None, progress=True, return_info=False):
    """The paper's seeded graph matching: scipy FAQ (randomized P0, maximise, tol 1e-5) with the anchors
    fixed by ``partial_match``; the best objective over ``restarts`` runs; accuracy of the query pairs
    (src/matching.py's ``qap`` with solver "scipy").

    ``seed`` makes the restarts reproducible (the paper's are not); ``return_info`` also returns a dict
    with the best objective and the restarts run.
    """
    from .matching import qap  # matching.py builds on this module, so it is imported here
    acc, info = qap(source_base, target_base, source_query, target_query, device, restarts=restarts, seed=seed,
                    solver="scipy", progress=progress)
    if return_info:
        return acc, {"objective": info["objective"], "restarts": info["restarts"]}
    return acc
