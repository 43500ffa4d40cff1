"""Local CKA for all Q x Q pairs at once: graph[i, j] = CKA([sq_i; anchors_s], [tq_j; anchors_t]).

``linear_local_CKA`` by a block decomposition; ``kernel_local_CKA`` (RBF, a median bandwidth per set, as
the paper's ``rbf``) by an expansion of the anchors' kernel block in the bandwidth (``RBFExpansion``: an
r x r form plus one Q x n x Q product, with an error bound), or, where that bound does not reach its
tolerance or with ``exact=True``, by dot products of every pair's centred kernels' upper triangles. Both
equal the paper's per-pair loop (tests/test_utils.py and tests/test_local_cka.py check them against it).
"""
import logging
import math

import torch

from .cka import sq_dists, to_device

_logger = logging.getLogger(__name__)

# torch's parallel reductions: a tensor of fewer elements than this is summed serially (at::internal::GRAIN_SIZE)
_GRAIN = 32768


def _serial_sum(v):
    """The sum of a 1-D tensor in one thread's order, whatever torch's thread count: a reduction with two
    outputs (the same row twice) is split over its outputs, never inside one, so each row is summed serially."""
    return v.unsqueeze(0).expand(2, -1).sum(dim=1)[0]


def fixed_sum(x):
    """sum(x) in an order that does not depend on torch's thread count.

    A plain ``x.sum()`` of many elements splits them into one part per thread and adds the parts, so its
    rounding depends on the thread count: enough, in float32, to flip linear_local_CKA's near-ties in the
    Hungarian matching (the demo's mpnet -> lite0 read 0.1513 with one thread and 0.1500 with two). This
    sums the two halves serially and adds them, which is the order of torch's two-thread reduction (the
    pages' numbers were made with two), now at every thread count; below ``_GRAIN`` elements torch sums
    serially anyway."""
    v = x.reshape(-1)
    if v.numel() < _GRAIN:
        return v.sum()
    half = (v.numel() + 1) // 2
    return _serial_sum(v[:half]) + _serial_sum(v[half:])


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
    sb, tb, sq, tq = (to_device(t, device) for t in (source_base, target_base, source_query, target_query))
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
    # the three anchor-block sums in a fixed order (fixed_sum): the graph is the same at every thread count
    hsic = fixed_sum(P * R) + c1 * (p @ q.T) + c2 * alpha[:, None] * gamma[None, :]
    var_x = fixed_sum(P * P) + c1 * (p * p).sum(dim=1) + c2 * alpha * alpha
    var_y = fixed_sum(R * R) + c1 * (q * q).sum(dim=1) + c2 * gamma * gamma
    return hsic / (torch.sqrt(var_x)[:, None] * torch.sqrt(var_y)[None, :])


def _kth_of_union(A, Bsorted, k):
    """k-th smallest (0-based) of the multiset A + 2 x Bsorted[i], for every row i.

    A: sorted 1-D tensor shared by all rows (the anchor-anchor distances); Bsorted: Q x m sorted per
    row with +inf for entries to ignore; each finite entry of Bsorted counts twice (the kernel matrix
    holds each query-anchor distance at [0, k] and [k, 0]). Returns a Q-vector.

    No per-query sort of the shared values, and no search over all of them: with c(v) = #{A <= v} +
    2 #{B_i <= v}, the answer is the smallest v with c(v) >= k_i + 1. A[k_i] has that count, and any v
    below A[k_i - 2m] has fewer than k_i + 1, so the answer lies in the window A[lo:hi] (lo = min k - 2m,
    hi past max k and its ties: at most about 3m values) or is a B value inside it. Both kinds of candidate
    are counted against that window only.
    """
    Q, m = Bsorted.shape
    need = (k + 1).to(torch.int32)  # smallest v with count(union <= v) >= k + 1
    inf = torch.tensor(float("inf"), dtype=A.dtype, device=A.device)
    M = A.shape[0]
    if M == 0:  # one anchor: no anchor-anchor distances, the set's only nonzero ones are the query's
        return torch.where(torch.isfinite(Bsorted), Bsorted, inf).min(dim=1).values
    lo = max(0, int(k.min()) - 2 * m)
    hi = min(M, int(k.max()) + 1)
    hi = int(torch.searchsorted(A, A[hi - 1:hi], right=True)[0])  # the ties of A[hi - 1] too
    W = A[lo:hi]
    B = Bsorted.contiguous()
    finite = torch.isfinite(B)
    # candidates from B: #{A <= B_ij} is lo + its place in W when B_ij >= A[lo] (exact: W holds all ties
    # of its last value; above W it undercounts, but such a value is never the smallest that qualifies)
    count_b = torch.searchsorted(W, B, right=True, out_int32=True)
    count_b += 2 * torch.searchsorted(B, B, right=True, out_int32=True) + lo
    ok_b = finite & (count_b >= need[:, None])
    if lo > 0:
        ok_b &= B >= A[lo]
    cand_b = torch.where(ok_b, B, inf).min(dim=1).values
    # candidates from W: #{B_i <= W_p} for every p, by counting each B_ij at its place in W and summing
    place = torch.searchsorted(W, B, right=False)  # B_ij <= W_p  <=>  place_ij <= p
    hist = torch.zeros(Q, W.shape[0] + 1, dtype=torch.int32, device=A.device)
    hist.scatter_add_(1, place, finite.to(torch.int32))
    count_w = hist[:, :-1].cumsum(dim=1, dtype=torch.int32).mul_(2)
    count_w += torch.searchsorted(W, W, right=True, out_int32=True)[None, :] + lo
    first = (count_w < need[:, None]).sum(dim=1)  # the count grows with p: the first p that qualifies
    cand_w = torch.where(first < W.shape[0], W[first.clamp(max=W.shape[0] - 1)], inf)
    return torch.minimum(cand_w, cand_b)


class _Anchors:
    """One side's anchors: their squared distances D (n x n, the paper's formula), shared by every set
    [x_i; anchors], and per query row its n distances to the anchors and its set's median sigma^2."""

    def __init__(self, base):
        self.base = base
        self.D = sq_dists(base)
        self.A = torch.sort(self.D[self.D != 0]).values
        self.gb = torch.diagonal(base @ base.T)

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


class _LocalRBF(_Anchors):
    """Centred RBF kernels of the sets [x_i; base] for many query rows x_i, as upper-triangle vectors (the
    exact path). Each set gets its own median sigma, as the paper's rbf()."""

    # Rows handled together when building kernels. On a CPU: small enough that the N x N temporaries
    # stay in cache (fresh multi-GB temporaries cost more in page faults than the arithmetic); on a GPU:
    # large, so each kernel launch does enough work.
    cpu_block, gpu_block = 32, 256

    def __init__(self, base):
        super().__init__(base)
        n = base.shape[0]
        N = n + 1
        self.D_full = torch.zeros(N, N, dtype=base.dtype, device=base.device)
        self.D_full[1:, 1:] = self.D
        # <X, Y> of symmetric matrices = diagonal + 2 x upper triangle (the 2 goes on one side only)
        iu = torch.triu_indices(N, N, device=base.device)
        self.flat = iu[0] * N + iu[1]

    @property
    def size(self):
        return self.flat.shape[0]

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


# The fast path's defaults: the largest error its expansion may add to the graph (its bound, in exact
# arithmetic; float64 rounding adds about 1e-13 on top), and the most terms it tries before the exact path.
FAST_TOL = 1e-9
# Up to this many query pairs (the paper's Q = 500, the demo's, up to Q = 1,000) the exact path runs unless
# exact=False is asked for: it costs about a second there, and its graph is the paper's, rounding included, so
# retrieval and matching break near-ties as they always did (the expansion moves entries by up to its bound,
# ~1e-9, enough to flip a tie between two queries' scores).
EXACT_PAIRS = 1000 * 1000
MAX_TERMS = 12
# Kernels are shifted by exp(-1/2), the value each set's kernel takes at its own median distance: HSIC
# does not see a constant added to a kernel, and the sums below then add small numbers of both signs.
_SHIFT = math.exp(-0.5)


def _interpolation_error(D, a, b, r):
    """sqrt(sum over the entries of D of eps^2), eps bounding |exp(-t D_kl) - p(t)| for t in [a, b], p the
    degree r - 1 interpolant at r Chebyshev points of [a, b] (``RBFExpansion``)."""
    if b == a:
        return 0.0
    Dn = D[D != 0]  # zero distances (the diagonal, duplicates) interpolate exactly: exp(0) = 1 at every t
    if Dn.numel() == 0:
        return 0.0
    log_eps = (math.log(2) + r * torch.log(Dn.abs() * ((b - a) / 4)) - torch.minimum(a * Dn, b * Dn)
               - math.lgamma(r + 1))
    return float(torch.sqrt(torch.exp(2 * log_eps).sum()))


def _chebyshev_basis(t, a, b, r):
    """The r Chebyshev points (first kind) of [a, b] and the Lagrange basis at t: (nodes (r), Q x r)."""
    k = torch.arange(r, dtype=t.dtype, device=t.device)
    x_nodes = torch.cos((2 * k + 1) * math.pi / (2 * r))
    nodes = (a + b) / 2 + (b - a) / 2 * x_nodes
    if r == 1:
        return nodes, torch.ones(t.shape[0], 1, dtype=t.dtype, device=t.device)
    x = (2 * t - (a + b)) / (b - a)
    diff = x[:, None] - x_nodes[None, :]
    basis = torch.empty(t.shape[0], r, dtype=t.dtype, device=t.device)
    for j in range(r):
        others = torch.arange(r, device=t.device) != j
        basis[:, j] = diff[:, others].prod(dim=1) / (x_nodes[j] - x_nodes[others]).prod()
    return nodes, basis


class RBFExpansion:
    """One side's sets [x_i; anchors] (i < Q) in the form the fast path of ``kernel_local_CKA`` uses.

    With t_i = 1 / (2 sigma_i^2) (the set's median bandwidth), d_i the query's n squared distances to the
    anchors and D the anchors' (n x n), the set's RBF kernel shifted by kappa = exp(-1/2) is
        K_i - kappa 11^T = [[1 - kappa, u_i^T], [u_i, M(t_i)]],  u_i = exp(-t_i d_i) - kappa,
        M(t) = exp(-t D) - kappa 11^T,
    and only M depends on the bandwidth, which barely moves between queries. M(t) is replaced by its
    interpolant at r Chebyshev points t_1..t_r of [a, b] = [min t_i, max t_i]:
        M(t_i) ~ sum_k c_k(t_i) M(t_k),   c_k the Lagrange basis (``terms`` = r).
    Entrywise (Cauchy's remainder, |d^r/dt^r exp(-t D)| <= |D|^r exp(-min(aD, bD)), |prod (t - t_k)| <=
    2 ((b - a) / 4)^r at Chebyshev points) the error is at most
        eps(D) = 2 (|D| (b - a) / 4)^r exp(-min(aD, bD)) / r!,
    zero where D = 0, so the error matrix E_i of K_i has ||E_i||_F <= e = sqrt(sum_kl eps(D_kl)^2)
    (``error``), for every i. Attributes: t (Q), u (Q x n), coef (Q x r), Ms (r x n x n: M(t_k)), m (r x n:
    M(t_k) 1), mu (r: 1^T M(t_k) 1), std (Q: ||H K^_i H||_F of the expanded kernel), bound = 2 e / min std:
    the most the expansion moves any graph entry through this side (``kernel_local_CKA``).
    """

    rows = 4096  # queries whose medians are found at once

    def __init__(self, n, t, u, error, nodes, coef):
        self.n, self.t, self.u, self.error = n, t, u, error
        self.terms = coef.shape[1]
        self.coef, self.nodes = coef, nodes
        self.std, self.bound = None, float("inf")

    @classmethod
    def fit(cls, base, query, tol=FAST_TOL / 2, max_terms=MAX_TERMS):
        """The expansion of the fewest terms (<= max_terms) whose bound is <= tol, or None (no such number
        of terms, or bandwidths that are not finite and positive). Computed in base's dtype (the caller
        passes float64)."""
        anchors = _Anchors(base)
        t = torch.empty(query.shape[0], dtype=query.dtype, device=query.device)
        u = torch.empty(query.shape[0], base.shape[0], dtype=query.dtype, device=query.device)
        for i in range(0, query.shape[0], cls.rows):  # the medians' temporaries stay a few times rows x n
            d, med = anchors.sigmas(query[i:i + cls.rows])
            t[i:i + cls.rows] = 0.5 / med
            torch.exp(-t[i:i + cls.rows, None] * d, out=u[i:i + cls.rows]).sub_(_SHIFT)
        if not bool(torch.isfinite(t).all() and (t > 0).all()):
            return None
        a, b = float(t.min()), float(t.max())
        for r in range(1, max_terms + 1):
            error = _interpolation_error(anchors.D, a, b, r)
            nodes, coef = _chebyshev_basis(t, a, b, r)
            exp = cls(base.shape[0], t, u, error, nodes, coef)
            exp.Ms = torch.exp(-nodes[:, None, None] * anchors.D[None]) - _SHIFT
            exp.m = exp.Ms.sum(dim=2)
            exp.mu = exp.m.sum(dim=1)
            std = torch.sqrt(exp.self_hsic())
            if not bool(torch.isfinite(std).all() and (std > 0).all()):
                return None
            exp.std, exp.bound = std, 2 * error / float(std.min())
            if exp.bound <= tol:
                return exp
        return None

    def features(self, other):
        """[1, sum(u_i), c(t_i), u_i . (other's M(t_k) 1) for each of its terms]: Q x (2 + r + s)."""
        ones = torch.ones(self.u.shape[0], 1, dtype=self.u.dtype, device=self.u.device)
        return torch.cat([ones, self.u.sum(dim=1, keepdim=True), self.coef, self.u @ other.m.T], dim=1)

    def form(self, other):
        """W ((2 + r + s) x (2 + s + r)) with HSIC(K_i, L_j) = (2 - 2/N) u_i . v_j + f_i W g_j, f =
        self.features(other), g = other.features(self) (``kernel_local_CKA`` derives it)."""
        r, s, N = self.terms, other.terms, self.n + 1
        k00, l00 = 1 - _SHIFT, 1 - _SHIFT
        W = torch.zeros(2 + r + s, 2 + s + r, dtype=self.u.dtype, device=self.u.device)
        W[0, 0] = k00 * l00                                                      # <K, L>: the [0, 0] entries
        G = self.Ms.reshape(r, -1) @ other.Ms.reshape(s, -1).T                   # <M(t_k), M'(t'_l)>
        W[2:2 + r, 2:2 + s] = G - (2 / N) * (self.m @ other.m.T)                 # and (M 1) . (M' 1)
        W[2 + r:, 2:2 + s] -= (2 / N) * torch.eye(s, dtype=W.dtype, device=W.device)  # u . (M' 1)
        W[2:2 + r, 2 + s:] -= (2 / N) * torch.eye(r, dtype=W.dtype, device=W.device)  # (M 1) . v
        alpha = torch.zeros(2 + r + s, dtype=W.dtype, device=W.device)        # first entry of K 1
        beta = torch.zeros(2 + s + r, dtype=W.dtype, device=W.device)
        alpha[0], alpha[1], beta[0], beta[1] = k00, 1.0, l00, 1.0
        W -= (2 / N) * alpha[:, None] * beta[None, :]
        sk = torch.zeros_like(alpha)                                            # 1^T K 1
        sl = torch.zeros_like(beta)
        sk[0], sk[1], sk[2:2 + r] = k00, 2.0, self.mu
        sl[0], sl[1], sl[2:2 + s] = l00, 2.0, other.mu
        W += sk[:, None] * sl[None, :] / N ** 2
        return W

    def self_hsic(self):
        """HSIC(K^_i, K^_i) of the expanded kernels (Q)."""
        f = self.features(self)
        return (2 - 2 / (self.n + 1)) * (self.u * self.u).sum(dim=1) + ((f @ self.form(self)) * f).sum(dim=1)


def _expanded_graph(sb, tb, sq, tq, tol, rows=2 ** 22):
    """The fast path of kernel_local_CKA (float64 throughout, the graph in sq's dtype), or None where the
    expansion's bound does not reach tol on either side. ``rows``: entries of the float64 product held at
    once when the graph is not float64."""
    f64 = torch.float64
    src = RBFExpansion.fit(sb.to(f64), sq.to(f64), tol / 2)
    tgt = RBFExpansion.fit(tb.to(f64), tq.to(f64), tol / 2) if src is not None else None
    if tgt is None:
        return None
    _logger.debug("kernel_local_CKA: expansion of %d x %d terms, bound %.1e", src.terms, tgt.terms,
                  src.bound + tgt.bound)
    N = sb.shape[0] + 1
    left = torch.cat([(2 - 2 / N) * src.u, src.features(tgt) @ src.form(tgt)], dim=1) / src.std[:, None]
    right = torch.cat([tgt.u, tgt.features(src)], dim=1) / tgt.std[:, None]
    right_t = right.T.contiguous()
    if sq.dtype == f64:
        return left @ right_t
    graph = torch.empty(sq.shape[0], tq.shape[0], dtype=sq.dtype, device=sq.device)
    step = max(1, rows // max(1, tq.shape[0]))
    buf = torch.empty(min(step, sq.shape[0]), tq.shape[0], dtype=f64, device=sq.device)
    for i in range(0, sq.shape[0], step):
        part = buf[:min(step, sq.shape[0] - i)]
        torch.matmul(left[i:i + step], right_t, out=part)
        graph[i:i + part.shape[0]] = part
    return graph


def _exact_graph(sb, tb, sq, tq, chunk_size):
    """Every pair's centred kernels, dot products of their upper triangles, in the inputs' dtype."""
    src, tgt = _LocalRBF(sb), _LocalRBF(tb)
    vt, var_t = tgt.vectors(tq)
    std_t = torch.sqrt(var_t)
    graph = torch.empty(sq.shape[0], tq.shape[0], dtype=vt.dtype, device=vt.device)
    vs = torch.empty(min(chunk_size, sq.shape[0]), src.size, dtype=sq.dtype, device=sq.device)
    for i in range(0, sq.shape[0], chunk_size):
        part, var_s = src.vectors(sq[i:i + chunk_size], out=vs[:min(chunk_size, sq.shape[0] - i)], weighted=True)
        graph[i:i + part.shape[0]] = (part @ vt.T) / (torch.sqrt(var_s)[:, None] * std_t[None, :])
    return graph


def kernel_local_CKA(source_base, target_base, source_query, target_query, device=None, chunk_size=256,
                     exact=None, tol=FAST_TOL):
    """graph[i, j] = kernel_CKA([sq_i; source_base], [tq_j; target_base]) for all i, j (RBF, per-set
    median sigma, biased HSIC). Returns Q x Q in the source queries' dtype, on their device.

    ``exact``: None (the default) takes the exact path up to EXACT_PAIRS query pairs and the fast path beyond;
    True or False chooses.

    Fast path: HSIC(K, L) = <HKH, HLH> = <K, L> - (2/N) (K1).(L1) + (1/N^2)(1^T K 1)(1^T L 1)
    for symmetric N x N kernels, N = n + 1. With the block form of ``RBFExpansion`` (source: 1 - kappa,
    u_i, M(t_i) = sum_k c_ik M_k; target: 1 - kappa, v_j, P(s_j) = sum_l e_jl P_l) every term is a
    product of per-query features:
        <K, L>        = (1 - kappa)^2 + 2 u.v + c^T G e,            G_kl = <M_k, P_l>
        K1 = [1 - kappa + sum u;  u + sum_k c_k M_k 1]  (and L1 alike),
        (K1).(L1)     = (1 - kappa + sum u)(1 - kappa + sum v) + u.v + u.(P_l 1) e_l + c_k (M_k 1).v
                        + c^T [(M_k 1).(P_l 1)] e,
        1^T K 1       = 1 - kappa + 2 sum u + c . [1^T M_k 1],
    so HSIC_ij = (2 - 2/N) u_i . v_j + f_i W g_j with f, g of 2 + r + s entries (``RBFExpansion.form``):
    one Q x (n + 2 + r + s) x Q product in float64 (float32 inputs are promoted: the graph is within the
    bound of the exact float64 graph, not of the float32 one), the self-HSICs the same form on the diagonal.

    Error bound: the expanded kernel is K^ = K + E (E zero outside the anchor block, ||E||_F <= e_s), so
    ||H K^ H - H K H||_F <= e_s (H is a projection); CKA is the cosine of H K H and H L H, and for unit
    vectors |x/|x| - y/|y|| <= 2 |x - y| / |y|, so every graph entry moves by at most
        2 e_s / min_i ||H K^_i H||_F + 2 e_t / min_j ||H L^_j H||_F
    (``RBFExpansion.bound``, both sides). Each side takes the fewest terms (up to MAX_TERMS) whose share is
    <= tol / 2; bandwidths that spread 0.2-0.3% (the bundled data) need 3 or 4. Where no number of terms
    reaches it (a wide spread of bandwidths, e.g. very few anchors), or on MPS (no float64), the exact path
    runs instead.

    Exact path (``exact=True``, or the fallback): <HKH, HLH> is a dot product of flattened centred
    kernels, so all Q x Q HSIC values are matrix products of their upper triangles (the kernels are
    symmetric), in the inputs' dtype. The target side's vectors are kept (Q x N(N+1)/2); source queries go
    in chunks of ``chunk_size`` rows, so memory stays bounded (Q = 5,000, 320 anchors, float64: about 2.5 GB).

    One anchor is allowed: each set then has two rows, its median is their one nonzero squared distance,
    and every entry is 1 up to rounding (so is linear_local_CKA's): one anchor carries no information.
    """
    sb, tb, sq, tq = (to_device(t, device) for t in (source_base, target_base, source_query, target_query))
    if exact is None:
        exact = sq.shape[0] * tq.shape[0] <= EXACT_PAIRS
    if not exact and sq.device.type != "mps":
        graph = _expanded_graph(sb, tb, sq, tq, tol)
        if graph is not None:
            return graph
        _logger.debug("kernel_local_CKA: the expansion's bound does not reach %.0e: exact path", tol)
    return _exact_graph(sb, tb, sq, tq, chunk_size)
