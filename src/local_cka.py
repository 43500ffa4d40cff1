"""Local CKA for all Q x Q pairs at once: graph[i, j] = CKA([sq_i; anchors_s], [tq_j; anchors_t]).

``linear_local_CKA`` by a block decomposition, ``kernel_local_CKA`` (RBF, a median bandwidth per set, as
the paper's ``rbf``) by dot products of centred kernels' upper triangles. Both equal the paper's per-pair
loop (tests/test_utils.py checks them against it).
"""
import torch

from .cka import sq_dists, to_device


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
        D = sq_dists(base)
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
    sb, tb, sq, tq = (to_device(t, device) for t in (source_base, target_base, source_query, target_query))
    src, tgt = _LocalRBF(sb), _LocalRBF(tb)
    vt, var_t = tgt.vectors(tq)
    std_t = torch.sqrt(var_t)
    graph = torch.empty(sq.shape[0], tq.shape[0], dtype=vt.dtype, device=vt.device)
    vs = torch.empty(min(chunk_size, sq.shape[0]), src.size, dtype=sq.dtype, device=sq.device)
    for i in range(0, sq.shape[0], chunk_size):
        part, var_s = src.vectors(sq[i:i + chunk_size], out=vs[:min(chunk_size, sq.shape[0] - i)], weighted=True)
        graph[i:i + part.shape[0]] = (part @ vt.T) / (torch.sqrt(var_s)[:, None] * std_t[None, :])
    return graph
