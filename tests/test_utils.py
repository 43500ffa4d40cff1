"""src/utils.py against plain definitions written here, and the properties the paper relies on."""
import logging

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.linear_model import LinearRegression

from src import cka, draws, matching, utils

F64 = torch.float64


# ----------------------------------------------------------------------------------------------------------
# Plain definitions: the paper's formulas, one pair at a time, with explicit centering matrices
# ----------------------------------------------------------------------------------------------------------

def plain_center(K):
    n = K.shape[0]
    H = torch.eye(n, dtype=K.dtype) - torch.ones(n, n, dtype=K.dtype) / n
    return H @ K @ H


def plain_rbf(X):
    G = X @ X.T
    D = torch.diag(G) - G + (torch.diag(G) - G).T
    nz = torch.sort(D[D != 0]).values
    med = nz[(nz.numel() - 1) // 2]  # lower middle value
    sigma = torch.sqrt(med)
    return torch.exp(-D / (2 * sigma * sigma))


def plain_hsic(K, L):
    return torch.sum(plain_center(K) * plain_center(L))


def plain_cka(K, L):
    return plain_hsic(K, L) / torch.sqrt(plain_hsic(K, K) * plain_hsic(L, L))


def plain_linear_cka(X, Y):
    return plain_cka(X @ X.T, Y @ Y.T)


def plain_kernel_cka(X, Y):
    return plain_cka(plain_rbf(X), plain_rbf(Y))


def plain_local(cka, sb, tb, sq, tq):
    g = torch.empty(sq.shape[0], tq.shape[0], dtype=sq.dtype)
    for i in range(sq.shape[0]):
        for j in range(tq.shape[0]):
            g[i, j] = cka(torch.cat([sq[i:i + 1], sb]), torch.cat([tq[j:j + 1], tb]))
    return g


def plain_retrieval(graph):
    """The paper's loop: a stable sort of each row by -value."""
    hits = [0, 0, 0]
    for i in range(len(graph)):
        row = graph[i]
        order = sorted(range(len(graph)), key=lambda x: -row[x])
        for h, k in enumerate((1, 5, 10)):
            hits[h] += i in order[:k]
    return tuple(h / len(graph) for h in hits)


def paired(n, d1, d2, noise=0.5, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    Z = torch.randn(n, 6, generator=g, dtype=dtype)
    X = Z @ torch.randn(6, d1, generator=g, dtype=dtype) + noise * torch.randn(n, d1, generator=g, dtype=dtype)
    Y = torch.tanh(Z @ torch.randn(6, d2, generator=g, dtype=dtype)) + noise * torch.randn(n, d2, generator=g,
                                                                                               dtype=dtype)
    return X, Y


# ----------------------------------------------------------------------------------------------------------
# CKA and kernels
# ----------------------------------------------------------------------------------------------------------

def test_cka_matches_plain_definition():
    X, Y = paired(50, 12, 9)
    assert abs(utils.linear_CKA(X, Y, "cpu") - plain_linear_cka(X, Y)) < 1e-12
    assert abs(utils.kernel_CKA(X, Y, "cpu") - plain_kernel_cka(X, Y)) < 1e-12
    assert torch.allclose(utils.rbf(X), plain_rbf(X), atol=1e-13, rtol=0)
    assert torch.allclose(utils.centering(X @ X.T), plain_center(X @ X.T), atol=1e-11, rtol=0)
    C = utils.centered_scaled_corr_rbf(X, "cpu")
    K = plain_rbf(X)
    assert torch.allclose(C, plain_center(K) / torch.sqrt(plain_hsic(K, K)), atol=1e-13, rtol=0)
    C = utils.centered_scaled_corr(X, "cpu")
    assert torch.allclose(C, plain_center(X @ X.T) / torch.sqrt(plain_hsic(X @ X.T, X @ X.T)), atol=1e-12, rtol=0)


def test_rbf_median_is_lower_middle_of_nonzero_distances():
    # nonzero squared distances 1, 4, 9, 16, 36, 49, each twice (both triangles): 12 values whose middle two
    # differ. Lower middle 9; the upper middle (16), their mean (12.5) and a median that keeps the diagonal's
    # zeros (4) all give another sigma.
    X = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=F64)
    D = (X - X.T) ** 2
    assert torch.allclose(utils.rbf(X), torch.exp(-D / (2 * 9.0)), atol=1e-15, rtol=0)
    assert torch.allclose(utils.rbf(X), plain_rbf(X), atol=1e-15, rtol=0)
    # zeros off the diagonal (duplicate rows) are left out too: 0 0 1 1 4 -> nonzero 1 (x8), 9 (x4), 16 (x4),
    # lower middle 1, upper middle 9
    X = torch.tensor([[0.0], [0.0], [1.0], [1.0], [4.0]], dtype=F64)
    D = (X - X.T) ** 2
    assert torch.allclose(utils.rbf(X), torch.exp(-D / 2.0), atol=1e-15, rtol=0)


def test_kernels_are_exactly_symmetric():
    # the QAP solver's cheap branch needs exact symmetry: distances are symmetric by construction, the
    # centred kernels are symmetrised (centring alone rounds [i, j] and [j, i] differently)
    for dtype in (torch.float32, F64):
        X, _ = paired(70, 12, 3, dtype=dtype)
        D = cka.sq_dists(X)
        assert torch.equal(D, D.T) and torch.equal(utils.rbf(X), utils.rbf(X).T)
        for C in (utils.centered_scaled_corr_rbf(X), utils.centered_scaled_corr(X)):
            assert torch.equal(C, C.T)


def test_cka_properties():
    X, Y = paired(60, 10, 7)
    assert abs(utils.linear_CKA(X, X) - 1) < 1e-12
    assert abs(utils.kernel_CKA(X, X) - 1) < 1e-12
    Q, _ = torch.linalg.qr(torch.randn(10, 10, dtype=F64, generator=torch.Generator().manual_seed(3)))
    assert abs(utils.linear_CKA(X @ Q * 3.7, Y) - utils.linear_CKA(X, Y)) < 1e-12
    shuffled = Y[torch.randperm(60, generator=torch.Generator().manual_seed(1))]
    assert utils.linear_CKA(X, shuffled) < utils.linear_CKA(X, Y) - 0.1
    assert utils.kernel_CKA(X, shuffled) < utils.kernel_CKA(X, Y) - 0.1


# ----------------------------------------------------------------------------------------------------------
# Local CKA: all pairs at once == the per-pair loop
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fast, cka", [(utils.linear_local_CKA, plain_linear_cka),
                                       (utils.kernel_local_CKA, plain_kernel_cka)], ids=["linear", "kernel"])
def test_local_cka_matches_per_pair_loop(fast, cka):
    X, Y = paired(70, 16, 11, seed=4)
    sb, sq, tb, tq = X[:40], X[40:], Y[:40], Y[40:]
    expected = plain_local(cka, sb, tb, sq, tq)
    got = fast(sb, tb, sq, tq, "cpu")
    assert got.shape == (30, 30) and got.dtype == F64
    assert (got - expected).abs().max() < 1e-10


@pytest.mark.parametrize("fast, cka", [(utils.linear_local_CKA, plain_linear_cka),
                                       (utils.kernel_local_CKA, plain_kernel_cka)], ids=["linear", "kernel"])
def test_local_cka_with_duplicated_rows_and_constant_dims(fast, cka):
    # small integers: every distance is exact, so zero distances of duplicates are exactly zero on both sides
    g = torch.Generator().manual_seed(7)
    X = torch.randint(-3, 4, (45, 6), generator=g).to(F64)
    Y = torch.randint(-3, 4, (45, 5), generator=g).to(F64)
    X[:, 2] = 1.0                      # a constant dimension
    X[41] = X[3]                       # a query equal to an anchor
    X[43] = X[42]                      # two equal queries
    Y[44] = Y[10]
    Y[1] = Y[0]                        # duplicated anchors
    sb, sq, tb, tq = X[:40], X[40:], Y[:40], Y[40:]
    assert (fast(sb, tb, sq, tq) - plain_local(cka, sb, tb, sq, tq)).abs().max() < 1e-10


@pytest.mark.parametrize("fast, cka", [(utils.linear_local_CKA, plain_linear_cka),
                                       (utils.kernel_local_CKA, plain_kernel_cka)], ids=["linear", "kernel"])
def test_local_cka_with_one_anchor(fast, cka):
    # --b 1: every set has two rows (the kernel's median is their one nonzero distance); CKA is then 1
    X, Y = paired(13, 5, 4, seed=16)
    sb, sq, tb, tq = X[:1], X[1:], Y[:1], Y[1:]
    got = fast(sb, tb, sq, tq)
    assert got.shape == (12, 12)
    assert (got - plain_local(cka, sb, tb, sq, tq)).abs().max() < 1e-12
    assert (got - 1).abs().max() < 1e-12


def test_kernel_local_cka_chunking_and_float32():
    X, Y = paired(90, 20, 13, seed=5)
    sb, sq, tb, tq = X[:50], X[50:], Y[:50], Y[50:]
    full = utils.kernel_local_CKA(sb, tb, sq, tq)
    assert (utils.kernel_local_CKA(sb, tb, sq, tq, chunk_size=7) - full).abs().max() < 1e-12
    assert torch.equal(utils.kernel_local_CKA(sb, tb, sq, tq), full)  # deterministic
    f32 = utils.kernel_local_CKA(sb.float(), tb.float(), sq.float(), tq.float())
    assert f32.dtype == torch.float32 and (f32.double() - full).abs().max() < 1e-4


def test_local_cka_finds_true_pairs():
    X, Y = paired(260, 24, 18, noise=0.3, seed=6)
    sb, sq, tb, tq = X[:200], X[200:], Y[:200], Y[200:]
    for fast in (utils.linear_local_CKA, utils.kernel_local_CKA):
        top1, _, _ = utils.get_retrieval(fast(sb, tb, sq, tq))
        assert top1 > 0.3  # chance is 1/60


# ----------------------------------------------------------------------------------------------------------
# Baselines
# ----------------------------------------------------------------------------------------------------------

def test_linear_baseline_is_least_squares_without_intercept():
    X, Y = paired(100, 8, 6, seed=8)
    sb, sq, tb, tq = X[:60], X[60:], Y[:60], Y[60:]
    model = LinearRegression(fit_intercept=False).fit(sb.numpy(), tb.numpy())
    P = model.predict(sq.numpy())
    P = P / np.linalg.norm(P, axis=1, keepdims=True)
    T = tq.numpy() / np.linalg.norm(tq.numpy(), axis=1, keepdims=True)
    assert np.abs(utils.linear_baseline(sb, tb, sq, tq, "cpu").numpy() - P @ T.T).max() < 1e-10


def test_relative_and_cos_baselines():
    X, Y = paired(80, 8, 8, seed=9)
    sb, sq, tb, tq = X[:50], X[50:], Y[:50], Y[50:]

    def cos(a, b):
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        return a @ b.T

    rs, rt = cos(sq.numpy(), sb.numpy()), cos(tq.numpy(), tb.numpy())
    assert np.abs(utils.relative_baseline(sb, tb, sq, tq, "cpu").numpy() - cos(rs, rt)).max() < 1e-12
    assert np.abs(utils.cos_baseline(sb, tb, sq, tq, "cpu").numpy() - cos(sq.numpy(), tq.numpy())).max() < 1e-12


# ----------------------------------------------------------------------------------------------------------
# Retrieval and matching
# ----------------------------------------------------------------------------------------------------------

def test_retrieval_matches_stable_sort_including_ties():
    g = torch.Generator().manual_seed(10)
    for graph in (torch.randn(40, 40, generator=g, dtype=F64),
                  torch.randint(0, 3, (40, 40), generator=g).to(F64),     # many ties
                  torch.zeros(12, 12, dtype=F64)):                        # all tied: only the first rows hit
        assert utils.get_retrieval(graph) == pytest.approx(plain_retrieval(graph.tolist()), abs=0)
    assert utils.get_retrieval(None) == (None, None, None)


def test_get_classes_matches_paper_loop():
    g = torch.Generator().manual_seed(11)
    classes = torch.randn(7, 3, generator=g)
    pick = torch.randint(0, 7, (20,), generator=g)
    graph = torch.randint(0, 4, (20, 7), generator=g).float()
    expected = [0, 0, 0]
    for i in range(20):
        order = sorted(range(7), key=lambda x: -graph[i, x].item())
        for h, k in enumerate((1, 5, 10)):
            expected[h] += int(pick[i]) in order[:k]
    assert utils.get_classes(graph, classes, classes[pick]) == tuple(e / 20 for e in expected)


def test_linear_matching():
    g = torch.Generator().manual_seed(12)
    graph = torch.randn(30, 30, generator=g, dtype=F64) + 10 * torch.eye(30, dtype=F64)
    assert utils.linear_matching(None, None, None, None, graph) == 1.0
    noisy = torch.randn(30, 30, generator=g, dtype=F64)
    torch.manual_seed(0)
    perm = torch.randperm(30)
    rows, cols = linear_sum_assignment(noisy[:, perm].numpy(), maximize=True)
    expected = np.mean(perm.numpy()[cols] == rows)
    assert utils.linear_matching(None, None, None, None, noisy) == pytest.approx(expected)


# ----------------------------------------------------------------------------------------------------------
# Stretch and data selection
# ----------------------------------------------------------------------------------------------------------

def test_stretch_divides_by_std_and_leaves_constant_dims(caplog):
    g = torch.Generator().manual_seed(13)
    X = torch.randn(50, 5, generator=g)
    assert torch.allclose(utils.stretch_representations(X), X / X.std(dim=0))
    X[:, 1] = 0.25
    X[:, 3] = 1e-3 + 1e-33 * torch.randn(50, generator=g)  # variance ~1e-66: zero in float32
    draws._warned_constant_dims = False
    with caplog.at_level(logging.WARNING):
        S = utils.stretch_representations(X)
        utils.stretch_representations(X)
    assert torch.isfinite(S).all()
    assert torch.equal(S[:, 1], X[:, 1]) and torch.equal(S[:, 3], X[:, 3])
    for j in (0, 2, 4):
        assert torch.allclose(S[:, j], X[:, j] / X[:, j].std())
    assert sum("near-constant" in r.message for r in caplog.records) == 1


def _legacy(seed, n, k):
    np.random.seed(seed)
    return np.random.choice(n, k, replace=False)


def _global_shuffle(n):
    torch.manual_seed(0)
    return torch.randperm(n)


def _np_state_equal(a, b):
    return a[0] == b[0] and np.array_equal(a[1], b[1]) and a[2:] == b[2:]


def test_draws_are_the_papers_and_leave_the_global_generators_alone():
    np.random.seed(1234)
    torch.manual_seed(1234)
    np_before, torch_before = np.random.get_state(), torch.get_rng_state()
    cases = [(0, 200, 30), (1, 5000, 320), (2, 10, 10), (7, 100000, 500)]
    rows = [draws.legacy_choice(seed, n, k) for seed, n, k in cases]
    shuffles = [matching.query_shuffle(n) for n in (1, 30, 500, 5000)]
    g = torch.Generator().manual_seed(3)
    utils.linear_matching(None, None, None, None, torch.randn(20, 20, generator=g, dtype=F64))
    S = torch.randn(60, 4, generator=g, dtype=F64)
    utils.get_data_sep(0, 1, 10, 20, S, S, S, S, None, None, 0, True, False)
    assert _np_state_equal(np.random.get_state(), np_before)
    assert torch.equal(torch.get_rng_state(), torch_before)
    # the very same draws as the paper's global seeding
    for (seed, n, k), got in zip(cases, rows):
        assert np.array_equal(got, _legacy(seed, n, k))
    for n, got in zip((1, 30, 500, 5000), shuffles):
        assert torch.equal(got, _global_shuffle(n))


def test_get_data_sep_picks_the_papers_rows():
    n = 200
    S = torch.arange(n, dtype=F64)[:, None].repeat(1, 3)        # row i holds i, so picks are readable
    T = -torch.arange(n, dtype=F64)[:, None].repeat(1, 2)
    Sq = 1000 + torch.arange(150, dtype=F64)[:, None].repeat(1, 3)
    Tq = -1000 - torch.arange(150, dtype=F64)[:, None].repeat(1, 2)

    # different datasets: anchors from seed1, queries from seed2
    sb, tb, sq, tq = utils.get_data_sep(0, 2, 30, 40, S, T, Sq, Tq, None, None, 0, False, False)
    assert sb[:, 0].long().tolist() == _legacy(0, n, 30).tolist()
    assert (-tb[:, 0]).long().tolist() == _legacy(0, n, 30).tolist()
    assert (sq[:, 0] - 1000).long().tolist() == _legacy(2, 150, 40).tolist()
    assert (-tq[:, 0] - 1000).long().tolist() == _legacy(2, 150, 40).tolist()

    # one dataset: anchors left out of the query pool, queries drawn from n - base_samples rows
    sb, tb, sq, tq = utils.get_data_sep(0, 1, 30, 40, S, T, S, T, None, None, 0, True, False)
    anchors = _legacy(0, n, 30)
    rest = np.setdiff1d(np.arange(n), anchors)   # the pool in row order
    assert sq[:, 0].long().tolist() == rest[_legacy(1, n - 30, 40)].tolist()
    assert not set(sq[:, 0].long().tolist()) & set(anchors.tolist())

    # cluster modes: 1 takes the source side's picks, 2 the target side's
    src_picks, tgt_picks = torch.tensor([5, 7, 9]), torch.tensor([1, 2, 3])
    sb, tb, _, _ = utils.get_data_sep(0, 0, 3, 10, S, T, S, T, src_picks, tgt_picks, 1, True, False)
    assert sb[:, 0].long().tolist() == [5, 7, 9] and (-tb[:, 0]).long().tolist() == [5, 7, 9]
    sb, _, sq, _ = utils.get_data_sep(0, 0, 3, 10, S, T, S, T, src_picks, tgt_picks, 2, True, False)
    assert sb[:, 0].long().tolist() == [1, 2, 3] and not set(sq[:, 0].long().tolist()) & {1, 2, 3}


def test_get_data_sep_stretch_uses_base_and_query_pools():
    X, Y = paired(120, 6, 4, seed=14)
    Xq, Yq = paired(80, 6, 4, seed=15)
    sb, tb, sq, tq = utils.get_data_sep(0, 0, 20, 30, X, Y, Xq, Yq, None, None, 0, False, True)
    std = torch.cat([X, Xq]).std(dim=0)
    assert torch.allclose(sb, X[torch.as_tensor(_legacy(0, 120, 20))] / std)
    assert torch.allclose(sq, Xq[torch.as_tensor(_legacy(0, 80, 30))] / std)


# ----------------------------------------------------------------------------------------------------------
# The paper's QAP (scipy FAQ)
# ----------------------------------------------------------------------------------------------------------

def planted(n_base, n_query, seed=0):
    X, _ = paired(n_base + n_query, 10, 10, noise=0.05, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    R, _ = torch.linalg.qr(torch.randn(10, 10, dtype=F64, generator=g))
    Y = X @ R + 0.01 * torch.randn(X.shape, dtype=F64, generator=g)  # the same geometry, rotated
    return X[:n_base], Y[:n_base], X[n_base:], Y[n_base:]


def test_qap_matching_recovers_a_planted_permutation_and_is_seeded():
    sb, tb, sq, tq = planted(30, 25)
    acc, info = utils.qap_matching(sb, tb, sq, tq, None, "cpu", restarts=4, seed=1, progress=False,
                                   return_info=True)
    assert acc == 1.0
    again = utils.qap_matching(sb, tb, sq, tq, None, "cpu", restarts=4, seed=1, progress=False, return_info=True)
    assert again == (acc, info)


def test_qap_never_moves_an_anchor(monkeypatch):
    sb, tb, sq, tq = planted(20, 30, seed=3)
    seen = []
    real = matching.qap_accuracy

    def spy(col_ind, shuffle, n_base):
        seen.append(np.asarray(col_ind))
        return real(col_ind, shuffle, n_base)

    monkeypatch.setattr(matching, "qap_accuracy", spy)
    utils.qap_matching(sb, tb, sq, tq + 0.5 * torch.randn_like(tq), None, restarts=3, seed=0, progress=False)
    assert (seen[0][:20] == np.arange(20)).all()
