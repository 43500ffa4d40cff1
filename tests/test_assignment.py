"""src/assignment.py against scipy's linear_sum_assignment (the reference): the objective, the return
convention, every path (scipy below SCIPY_BELOW, LAPJV, the sparse certificate and its dense fallback)."""
import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from src import assignment
from src.assignment import linear_assignment, solve_square


def objective(C, rows, cols):
    return float(np.asarray(C, dtype=np.float64)[rows, cols].sum())


def check_against_scipy(C, maximize):
    rows, cols = linear_assignment(C, maximize=maximize)
    ref_rows, ref_cols = linear_sum_assignment(C, maximize=maximize)
    assert rows.dtype == np.int64 and cols.dtype == np.int64
    assert np.array_equal(rows, ref_rows)                  # the same rows, ascending
    assert len(np.unique(cols)) == len(cols)               # one column a row
    got, ref = objective(C, rows, cols), objective(C, ref_rows, ref_cols)
    assert abs(got - ref) <= 1e-9 * max(1.0, abs(ref))


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (5, 1), (2, 2), (3, 7), (7, 3), (63, 63), (64, 64),
                                   (80, 200), (200, 80), (300, 300), (1200, 1200), (1300, 1250), (1250, 1300)])
@pytest.mark.parametrize("maximize", [False, True])
def test_random_matrices_match_scipy(shape, maximize):
    rng = np.random.default_rng(sum(shape))
    check_against_scipy(rng.normal(size=shape), maximize)


@pytest.mark.parametrize("n", [5, 100, 1200])
@pytest.mark.parametrize("maximize", [False, True])
def test_integer_ties_match_scipy_objective(n, maximize):
    # few distinct values: many optimal assignments; only the objective is the contract
    rng = np.random.default_rng(n)
    check_against_scipy(rng.integers(0, 4, size=(n, n)).astype(float), maximize)


def test_low_rank_graph_with_hubs():
    # scores like a local-CKA graph: rows much alike, so the optimum leaves the rows' k best entries
    rng = np.random.default_rng(0)
    n = 1500
    G = rng.normal(size=(n, 8)) @ rng.normal(size=(8, n)) + 0.05 * rng.normal(size=(n, n))
    check_against_scipy(G, True)


def test_torch_and_float32_inputs():
    G = torch.rand(1300, 1300, generator=torch.Generator().manual_seed(0))
    rows, cols = linear_assignment(G, maximize=True)
    r2, c2 = linear_sum_assignment(G.double().numpy(), maximize=True)
    assert abs(objective(G.double().numpy(), rows, cols) - objective(G.double().numpy(), r2, c2)) < 1e-9 * 1300


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_refused(bad):
    C = np.zeros((4, 4))
    C[2, 1] = bad
    with pytest.raises(ValueError, match=r"row 2, column 1.*finite"):
        linear_assignment(C)


def test_shapes_refused_and_empty():
    with pytest.raises(ValueError, match="2-D"):
        linear_assignment(np.zeros(4))
    rows, cols = linear_assignment(np.zeros((0, 3)))
    assert rows.shape == cols.shape == (0,)


def test_certificate_holds_and_warm_start():
    # the certificate path's potentials make every reduced cost >= 0 to rounding and the matched ones 0
    rng = np.random.default_rng(1)
    n = 1400
    C = rng.normal(size=(n, 5)) @ rng.normal(size=(5, n)) + 0.1 * rng.normal(size=(n, n))
    info = {}
    x, v = solve_square(C, info=info)
    assert info["path"] == "certificate"
    u = C[np.arange(n), x] - v[x]
    reduced = C - u[:, None] - v[None, :]
    assert reduced.min() > -1e-9 and np.abs(reduced[np.arange(n), x]).max() < 1e-9
    ref = linear_sum_assignment(C)[1]
    assert abs(C[np.arange(n), x].sum() - C[np.arange(n), ref].sum()) < 1e-9 * n
    # a nearby matrix from these potentials and this permutation: still the optimum
    C2 = C + 0.01 * rng.normal(size=(n, n))
    x2, _ = solve_square(C2, v=v, extra=x)
    ref2 = linear_sum_assignment(C2)[1]
    assert abs(C2[np.arange(n), x2].sum() - C2[np.arange(n), ref2].sum()) < 1e-9 * n


def test_dense_fallback_gives_the_same_optimum(monkeypatch):
    # no certificate round allowed: the dense LAPJV answers, and the optimum is the same
    rng = np.random.default_rng(2)
    C = rng.normal(size=(1300, 1300))
    monkeypatch.setattr(assignment, "MAX_ROUNDS", 0)
    info = {}
    x, _ = solve_square(C, info=info)
    assert info["path"] == "dense"
    ref = linear_sum_assignment(C)[1]
    assert abs(C[np.arange(1300), x].sum() - C[np.arange(1300), ref].sum()) < 1e-9 * 1300


def test_faq_warm_started_batches_reach_the_optimum(monkeypatch):
    # faq's inner assignments: each restart's last columns and potentials start the next step's solve (on the
    # sparse path, here from 100 rows so that the test stays small); every answer is still scipy's optimum
    from concurrent.futures import ThreadPoolExecutor

    from src import faq
    monkeypatch.setattr(faq, "SPARSE_FROM", 100)
    g = torch.Generator().manual_seed(0)
    M = torch.rand(3, 150, 150, generator=g, dtype=torch.float64)
    slots = [None] * 3
    with ThreadPoolExecutor(2) as pool:
        for _ in range(3):
            cols = faq._lap_batch(M, True, pool, slots).numpy()
            for b in range(3):
                ref = linear_sum_assignment(M[b].numpy(), maximize=True)[1]
                assert abs(M[b].numpy()[np.arange(150), cols[b]].sum()
                           - M[b].numpy()[np.arange(150), ref].sum()) < 1e-9 * 150
            assert all(s is not None for s in slots)
            M = M + 0.05 * torch.rand(3, 150, 150, generator=g, dtype=torch.float64)
