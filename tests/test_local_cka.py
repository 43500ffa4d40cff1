"""src/local_cka.py's kernel local CKA: the fast path (bandwidth expansion) and the exact path against the
plain per-pair definition written here, the expansion's error bound, and the fallback to the exact path."""
import pytest
import torch

from src import local_cka
from src.cka import kernel_CKA, sq_dists
from src.local_cka import RBFExpansion, kernel_local_CKA

F64 = torch.float64


def plain_local(sb, tb, sq, tq):
    """graph[i, j] = kernel CKA of [sq_i; sb] and [tq_j; tb], one pair at a time (src.cka.kernel_CKA: RBF,
    each set's own median bandwidth, biased HSIC)."""
    g = torch.empty(sq.shape[0], tq.shape[0], dtype=F64)
    for i in range(sq.shape[0]):
        for j in range(tq.shape[0]):
            g[i, j] = kernel_CKA(torch.cat([sq[i:i + 1], sb]).double(), torch.cat([tq[j:j + 1], tb]).double())
    return g


def paired(n, d1, d2, seed, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    Z = torch.randn(n, 6, generator=g, dtype=F64)
    X = Z @ torch.randn(6, d1, generator=g, dtype=F64) + 0.5 * torch.randn(n, d1, generator=g, dtype=F64)
    Y = torch.tanh(Z @ torch.randn(6, d2, generator=g, dtype=F64)) + 0.5 * torch.randn(n, d2, generator=g, dtype=F64)
    return X.to(dtype), Y.to(dtype)


@pytest.fixture
def paths(monkeypatch):
    """Records which path each kernel_local_CKA call took ("fast" or "exact")."""
    taken = []
    fast, exact = local_cka._expanded_graph, local_cka._exact_graph

    def spy_fast(*a, **k):
        out = fast(*a, **k)
        if out is not None:
            taken.append("fast")
        return out

    def spy_exact(*a, **k):
        taken.append("exact")
        return exact(*a, **k)

    monkeypatch.setattr(local_cka, "_expanded_graph", spy_fast)
    monkeypatch.setattr(local_cka, "_exact_graph", spy_exact)
    return taken


@pytest.mark.parametrize("seed", [0, 1])
def test_fast_and_exact_paths_match_the_plain_definition(paths, seed):
    X, Y = paired(70, 16, 11, seed=seed)
    sb, sq, tb, tq = X[:40], X[40:], Y[:40], Y[40:]
    expected = plain_local(sb, tb, sq, tq)
    fast = kernel_local_CKA(sb, tb, sq, tq, exact=False)
    exact = kernel_local_CKA(sb, tb, sq, tq, exact=True)
    assert paths == ["fast", "exact"]
    assert fast.shape == (30, 30) and fast.dtype == F64
    assert (exact - expected).abs().max() < 1e-12
    assert (fast - expected).abs().max() < 1e-9   # the default tol, plus float64 rounding


def test_float32_inputs_are_within_1e_6_of_the_float64_graph(paths):
    X, Y = paired(300, 64, 48, seed=2)
    sb, sq, tb, tq = X[:200], X[200:], Y[:200], Y[200:]
    reference = kernel_local_CKA(sb, tb, sq, tq, exact=True)
    got = kernel_local_CKA(sb.float(), tb.float(), sq.float(), tq.float(), exact=False)
    assert paths == ["exact", "fast"]
    assert got.dtype == torch.float32
    assert (got.double() - reference).abs().max() < 1e-6
    # the float32 graph is the float64 one rounded: closer than the exact path in float32 gets
    exact32 = kernel_local_CKA(sb.float(), tb.float(), sq.float(), tq.float(), exact=True)
    assert (got.double() - reference).abs().max() <= (exact32.double() - reference).abs().max()


def test_the_bound_holds_and_terms_are_chosen_by_it():
    X, Y = paired(120, 8, 6, seed=3)
    sb, sq, tb, tq = X[:30], X[30:], Y[:30], Y[30:]
    exact = kernel_local_CKA(sb, tb, sq, tq, exact=True)
    errors = []
    for terms in (1, 2, 3):
        src = RBFExpansion.fit(sb, sq, tol=float("inf"), max_terms=terms)
        tgt = RBFExpansion.fit(tb, tq, tol=float("inf"), max_terms=terms)
        assert src.terms == tgt.terms == 1  # any bound passes an infinite tol: the fewest terms
        src, tgt = (RBFExpansion.fit(b, q, tol=0.0, max_terms=terms) for b, q in ((sb, sq), (tb, tq)))
        assert src is None and tgt is None  # a zero tol is never reached by a spread of bandwidths
    for tol in (1e-2, 1e-4, 1e-6, 1e-9, 1e-12):
        src, tgt = RBFExpansion.fit(sb, sq, tol / 2), RBFExpansion.fit(tb, tq, tol / 2)
        assert src.bound <= tol / 2 and tgt.bound <= tol / 2
        # one term fewer would not have reached it
        if src.terms > 1:
            assert RBFExpansion.fit(sb, sq, tol / 2, max_terms=src.terms - 1) is None
        err = (kernel_local_CKA(sb, tb, sq, tq, exact=False, tol=tol) - exact).abs().max().item()
        assert err <= src.bound + tgt.bound + 1e-13
        errors.append(err)
    assert errors[0] > 1e-8 and errors[-1] < 1e-12  # the bound is not vacuous: errors shrink with tol


def test_a_wide_spread_of_bandwidths_falls_back_to_the_exact_path(paths):
    # three anchors, two of them close: a query near those two has a tiny median distance, a far query a
    # large one, so t = 1 / (2 sigma^2) spreads over orders of magnitude
    g = torch.Generator().manual_seed(4)
    sb = torch.tensor([[0.0, 0.0], [0.01, 0.0], [1.0, 0.5]], dtype=F64)
    tb = torch.tensor([[0.0], [0.02], [2.0]], dtype=F64)
    sq = torch.cat([torch.tensor([[0.005, 0.0], [10.0, 3.0]], dtype=F64), torch.randn(6, 2, generator=g, dtype=F64)])
    tq = torch.cat([torch.tensor([[0.01], [20.0]], dtype=F64), torch.randn(6, 1, generator=g, dtype=F64)])
    assert RBFExpansion.fit(sb, sq) is None and RBFExpansion.fit(tb, tq) is None
    got = kernel_local_CKA(sb, tb, sq, tq, exact=False)
    assert paths == ["exact"]
    assert (got - plain_local(sb, tb, sq, tq)).abs().max() < 1e-12
    got32 = kernel_local_CKA(sb.float(), tb.float(), sq.float(), tq.float(), exact=False)
    assert paths == ["exact", "exact"] and got32.dtype == torch.float32


def test_duplicates_and_a_query_equal_to_an_anchor(paths):
    # small integers: every distance is exact, so zero distances of duplicates are exactly zero
    g = torch.Generator().manual_seed(7)
    X = torch.randint(-3, 4, (45, 6), generator=g).to(F64)
    Y = torch.randint(-3, 4, (45, 5), generator=g).to(F64)
    X[41] = X[3]                       # a query equal to an anchor
    X[43] = X[42]                      # two equal queries
    Y[44] = Y[10]
    Y[1] = Y[0]                        # duplicated anchors
    sb, sq, tb, tq = X[:40], X[40:], Y[:40], Y[40:]
    expected = plain_local(sb, tb, sq, tq)
    got = kernel_local_CKA(sb, tb, sq, tq, exact=False)
    assert paths == ["fast"]
    assert (got - expected).abs().max() < 1e-9
    assert torch.equal(got[2], got[3])  # equal queries, equal rows
    got32 = kernel_local_CKA(sb.float(), tb.float(), sq.float(), tq.float(), exact=False)
    assert (got32.double() - expected).abs().max() < 1e-6


@pytest.mark.parametrize("n", [1, 2])
def test_one_or_two_anchors(n):
    X, Y = paired(13, 5, 4, seed=16)
    sb, sq, tb, tq = X[:n], X[n:], Y[:n], Y[n:]
    got = kernel_local_CKA(sb, tb, sq, tq, exact=False)
    assert got.shape == (13 - n, 13 - n)
    assert (got - plain_local(sb, tb, sq, tq)).abs().max() < 1e-9
    if n == 1:  # two rows a set: one anchor carries no information
        assert (got - 1).abs().max() < 1e-12


def test_float32_graph_in_row_blocks_equals_one_block():
    X, Y = paired(90, 20, 13, seed=5, dtype=torch.float32)
    sb, sq, tb, tq = X[:50], X[50:], Y[:50], Y[50:]
    whole = local_cka._expanded_graph(sb, tb, sq, tq, local_cka.FAST_TOL)
    blocks = local_cka._expanded_graph(sb, tb, sq, tq, local_cka.FAST_TOL, rows=7 * 40)  # 7 rows a block
    assert whole.dtype == torch.float32 and torch.equal(whole, blocks)
    assert torch.equal(kernel_local_CKA(sb, tb, sq, tq, exact=False), whole)  # deterministic


def test_medians_are_torch_median_of_each_set():
    # the windowed k-th-of-union search against torch.median on every set [x_i; anchors], duplicates and
    # zero distances included (integers: distances are exact whichever way they are formed)
    g = torch.Generator().manual_seed(8)
    for n in (1, 2, 3, 5, 12, 40):
        X = torch.randint(-2, 3, (n + 25, 3), generator=g).to(F64)
        base, query = X[:n], X[n:]
        _, med = local_cka._Anchors(base).sigmas(query)
        for i in range(query.shape[0]):
            D = sq_dists(torch.cat([query[i:i + 1], base]))
            nonzero = D[D != 0]
            expected = torch.median(nonzero) if nonzero.numel() else torch.tensor(float("inf"), dtype=F64)
            assert med[i] == expected, (n, i)


def test_the_default_is_the_exact_path_up_to_exact_pairs_and_the_expansion_beyond(monkeypatch):
    """The paper's sizes get the exact graph bit for bit (its near-ties break as they always did); past
    EXACT_PAIRS query pairs, the expansion's graph."""
    g = torch.Generator().manual_seed(3)
    sb, tb = torch.randn(30, 8, generator=g, dtype=torch.float64), torch.randn(30, 6, generator=g, dtype=torch.float64)
    sq, tq = torch.randn(20, 8, generator=g, dtype=torch.float64), torch.randn(20, 6, generator=g, dtype=torch.float64)
    exact, fast = kernel_local_CKA(sb, tb, sq, tq, exact=True), kernel_local_CKA(sb, tb, sq, tq, exact=False)
    assert not torch.equal(exact, fast)  # the two paths differ in rounding, so the choice below is visible
    assert torch.equal(kernel_local_CKA(sb, tb, sq, tq), exact)
    monkeypatch.setattr(local_cka, "EXACT_PAIRS", 20 * 20 - 1)
    assert torch.equal(kernel_local_CKA(sb, tb, sq, tq), fast)


# ----------------------------------------------------------------------------------------------------------
# The same graph at every thread count (a plain sum's rounding follows torch's thread count)
# ----------------------------------------------------------------------------------------------------------

@pytest.fixture
def threads():
    """Sets torch's thread count for the test; the process's own count is restored after."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.mark.parametrize("n", [10, 181, 320])  # below and above torch's parallel-reduction grain (n x n entries)
def test_fixed_sum_is_the_sum_and_the_same_at_every_thread_count(threads, n):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, n, generator=g) * torch.randn(n, n, generator=g)
    sums = []
    for t in (1, 2, 3, 4):
        threads(t)
        sums.append(local_cka.fixed_sum(x))
    assert all(torch.equal(s, sums[0]) for s in sums)
    assert abs(float(sums[0]) - float(x.double().sum())) <= 1e-5 * float(x.double().abs().sum())


def test_linear_local_cka_is_the_same_at_every_thread_count(threads, dtype=torch.float32):
    """320 anchors (the demo's): the anchor blocks hold 102,400 entries, which a plain sum splits by thread.
    Also the graph is the plain definition (src.cka.linear_CKA per pair) to float rounding. One and two
    threads only, float32 (the bundled files'): MKL's own small matrix products (20 x 320 here) may round
    differently from 3 threads on, and in float64 from 2."""
    from src.cka import linear_CKA
    from src.local_cka import linear_local_CKA
    X, Y = paired(340, 48, 32, 5, dtype)
    sb, tb, sq, tq = X[:320], Y[:320], X[320:], Y[320:]
    graphs = []
    for t in (1, 2):
        threads(t)
        graphs.append(linear_local_CKA(sb, tb, sq, tq))
    assert all(torch.equal(g, graphs[0]) for g in graphs)
    def pair(i, j):
        return float(linear_CKA(torch.cat([sq[i:i + 1], sb]).double(), torch.cat([tq[j:j + 1], tb]).double()))
    plain = torch.tensor([[pair(i, j) for j in range(tq.shape[0])] for i in range(sq.shape[0])], dtype=F64)
    assert torch.allclose(graphs[0].double(), plain, atol=1e-5, rtol=0)
