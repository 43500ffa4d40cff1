"""Blind matching (src/blind.py, --task blind): the objective, kernels and 2-swap gains against their plain
definitions, the solvers against brute force, equivariance, planted pairs through run.main, and bad input."""
import itertools

import numpy as np
import pandas as pd
import pytest
import torch
from test_run import _bad

import run
from src import blind
from src.blind_methods import BLIND_METHODS, BlindSearch
from src.files import save_embeddings
from src.tasks import Draw, blind_scorer

# ---- plain definitions ------------------------------------------------------------------------------------


def plain_objective(A, B, p):
    """trace(A P B P^T) with P the permutation matrix P[i, p[i]] = 1."""
    P = np.zeros((len(p), len(p)))
    P[np.arange(len(p)), p] = 1
    return float(np.trace(A @ P @ B @ P.T))


def plain_linear_kernel(X):
    """Cosine of every two centred rows."""
    Xc = X - X.mean(axis=0)
    n = len(X)
    return np.array([[Xc[i] @ Xc[j] / np.linalg.norm(Xc[i]) / np.linalg.norm(Xc[j]) for j in range(n)]
                     for i in range(n)])


def plain_distance_kernel(X):
    """Euclidean distances standardised by the mean and std of the off-diagonal ones (diagonal: 0 before)."""
    n = len(X)
    D = np.array([[np.linalg.norm(X[i] - X[j]) for j in range(n)] for i in range(n)])
    off = np.array([D[i, j] for i in range(n) for j in range(n) if i != j])
    return (D - off.mean()) / off.std()


def swapped(p, i, j):
    q = p.copy()
    q[[i, j]] = q[[j, i]]
    return q


def sym(rng, n):
    M = rng.normal(size=(n, n))
    return M + M.T


def noisy_pair(n=24, d=8, noise=0.02, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    R = np.linalg.qr(rng.normal(size=(d, d)))[0]
    return X, X @ R + noise * rng.normal(size=(n, d))


def test_objective_and_kernels_equal_their_plain_definitions():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(9, 5))
    np.testing.assert_allclose(blind.linear_kernel(X), plain_linear_kernel(X), atol=1e-12)
    np.testing.assert_allclose(blind.distance_kernel(X), plain_distance_kernel(X), atol=1e-10)
    A, B = sym(rng, 9), sym(rng, 9)
    perms = np.array([rng.permutation(9) for _ in range(4)])
    for p, batch in zip(perms, blind.objective(A, B, perms)):
        assert blind.objective(A, B, p) == pytest.approx(plain_objective(A, B, p))
        assert batch == pytest.approx(plain_objective(A, B, p))


@pytest.mark.parametrize("diagonal", ["general", "constant"])
def test_swap_gains_equal_the_change_of_the_objective(diagonal):
    rng = np.random.default_rng(1)
    n = 10
    A, B = sym(rng, n), sym(rng, n)
    if diagonal == "constant":   # the zeroed-diagonal fast path (linear and distance kernels)
        np.fill_diagonal(A, 1.0)
    p = rng.permutation(n)
    s = blind.SwapSearch(A, B, p)
    for _ in range(3):           # also after swaps (the incremental update of C)
        G = s.gains()
        f = plain_objective(A, B, s.p)
        assert s.f == pytest.approx(f)
        for i, j in itertools.combinations(range(n), 2):
            assert G[i, j] == pytest.approx(plain_objective(A, B, swapped(s.p, i, j)) - f, abs=1e-9)
        s.swap(*rng.choice(n, 2, replace=False))


@pytest.mark.parametrize("diagonal", ["general", "constant"])
def test_gains_updated_by_each_swap_equal_the_change_of_the_objective(diagonal):
    """The tabu search's path: ``swap(i, j, gain, G)`` updates G in place (rank-one term + two fresh rows)."""
    rng = np.random.default_rng(11)
    n = 9
    A, B = sym(rng, n), sym(rng, n)
    if diagonal == "constant":
        np.fill_diagonal(A, 1.0)
    s = blind.SwapSearch(A, B, rng.permutation(n))
    G = s.gains()
    for _ in range(6):
        i, j = rng.choice(n, 2, replace=False)
        s.swap(i, j, G[i, j], G)
        f = plain_objective(A, B, s.p)
        assert s.f == pytest.approx(f)
        for u, v in itertools.combinations(range(n), 2):
            assert G[u, v] == pytest.approx(plain_objective(A, B, swapped(s.p, u, v)) - f, abs=1e-9)
            assert G[v, u] == pytest.approx(G[u, v], abs=1e-9)


def test_local_search_ends_2_swap_optimal():
    rng = np.random.default_rng(2)
    for _ in range(3):
        n = 9
        A, B = sym(rng, n), sym(rng, n)
        p, f = blind.local_search(A, B, rng.permutation(n))
        assert f == pytest.approx(plain_objective(A, B, p))
        for i, j in itertools.combinations(range(n), 2):
            assert plain_objective(A, B, swapped(p, i, j)) <= f + 1e-9


def test_exact_equals_brute_force_and_the_blind_search_reaches_it():
    X, Y = noisy_pair(n=7, noise=0.5, seed=3)
    A, B = blind.linear_kernel(X), blind.linear_kernel(Y)
    best = max(itertools.permutations(range(7)), key=lambda p: plain_objective(A, B, np.array(p)))
    exact = blind.ExactSolver().solve(X, Y)
    assert exact.objective == pytest.approx(plain_objective(A, B, np.array(best)))
    assert blind.BlindSolver(iterations=100).solve(X, Y).objective == pytest.approx(exact.objective)


def test_result_moves_with_shuffled_and_rotated_target_rows():
    X, Y = noisy_pair(n=30, noise=0.05, seed=4)
    rng = np.random.default_rng(5)
    pi = rng.permutation(30)                       # Y2 row j is Y row pi[j], rotated
    R = np.linalg.qr(rng.normal(size=(8, 8)))[0]
    Y2 = Y[pi] @ R
    inv = np.argsort(pi)
    for solver in (blind.BlindSolver(iterations=200), blind.GWSolver(), blind.RosettaSolver(centres=30)):
        p1, p2 = solver.solve(X, Y).perm, solver.solve(X, Y2).perm
        np.testing.assert_array_equal(inv[p1], p2, err_msg=type(solver).__name__)
        assert np.mean(p1 == np.arange(30)) == 1.0, type(solver).__name__


def test_each_start_alone_recovers_a_planted_pair_and_auto_adds_gw_for_large_n():
    X, Y = noisy_pair(n=30, noise=0.05, seed=8)
    for start in ("profile", "procrustes", "gw"):     # (FAQ alone lands elsewhere on this pair)
        sol = blind.BlindSolver(starts=(start,), iterations=60).solve(X, Y)
        assert (sol.perm == np.arange(30)).all(), start
    assert "gw" not in blind.auto_starts(blind.GW_FROM - 1) and "gw" in blind.auto_starts(blind.GW_FROM)
    with pytest.raises(ValueError, match="tenure"):
        blind.BlindSolver(tenure=0)


def test_gw_on_standardised_kernels_is_finite_and_recovers_a_planted_pair():
    X, Y = noisy_pair(n=30, noise=0.05, seed=6)
    A, B = blind.distance_kernel(X), blind.distance_kernel(Y)
    T = blind.GWSolver(kernel="distance", epsilon=1e-3).coupling(A, B)
    assert np.isfinite(T).all() and T.sum() == pytest.approx(1.0, abs=1e-3)
    assert (blind.GWSolver(kernel="distance").solve(X, Y).perm == np.arange(30)).all()


def plain_held_out_agreement(EA, EB, p, folds):
    """Per fold, the orthogonal map minimising ||EA_train R - EB_p(train)|| (SVD of the cross-covariance),
    then for each held-out row the target of highest inner product with its mapped row."""
    n, hits = len(p), 0
    for f in range(folds):
        test = [i for i in range(n) if i % folds == f]
        train = [i for i in range(n) if i % folds != f]
        U, _, Vt = np.linalg.svd(EA[train].T @ EB[p[train]])
        R = U @ Vt
        for i in test:
            hits += int(max(range(n), key=lambda j: float(EA[i] @ R @ EB[j])) == p[i])
    return hits / n


def test_held_out_agreement_equals_its_plain_definition():
    rng = np.random.default_rng(3)
    EA, EB = rng.normal(size=(30, 4)), rng.normal(size=(30, 4))
    for p in (np.arange(30), rng.permutation(30)):
        assert blind.held_out_agreement(EA, EB, p, folds=5) == plain_held_out_agreement(EA, EB, p, 5)


def test_refinement_repairs_a_partly_wrong_matching_and_only_a_better_objective_is_kept():
    X, Y = noisy_pair(n=120, d=12, noise=0.05, seed=4)
    A, B = blind.linear_kernel(X), blind.linear_kernel(Y)
    rng = np.random.default_rng(0)
    p = np.arange(120)
    wrong = rng.choice(120, 36, replace=False)      # 30% of the pairs wrong
    p[wrong] = p[rng.permutation(wrong)]
    q, dim = blind.refine_start(A, B, p)
    assert np.array_equal(q, np.arange(120)) and 2 <= dim < 120
    # the solver's refinement is one more start: its objective is never below the search's without it
    kw = dict(starts=("random",), iterations=50, seed=1)
    off = blind.BlindSolver(refine="off", **kw).solve(X, Y)
    on = blind.BlindSolver(refine="on", **kw).solve(X, Y)
    assert on.objective >= off.objective - 1e-9
    assert on.info["refined"] == (on.objective > off.objective + 1e-9)
    assert on.info["refined"] or np.array_equal(on.perm, off.perm)
    assert "refined" not in blind.BlindSolver(**kw).solve(X[:60], Y[:60]).info     # auto: from REFINE_FROM


def test_method_and_scorer_use_the_truth_only_to_score():
    X, Y = noisy_pair(n=20, noise=0.05, seed=7)
    sq, tq = torch.as_tensor(X), torch.as_tensor(Y)
    draw = Draw(sq[:0], tq[:0], sq, tq, blind_scorer(sq, tq))
    acc, info = BlindSearch(blind_iterations=50).match(draw, None, "cpu", 0, False)
    assert acc == 1.0 and (info["assignment"] == np.arange(20)).all()
    scores = draw.score(np.roll(np.arange(20), 1))
    A, B = plain_linear_kernel(X), plain_linear_kernel(Y)
    assert scores["objective_ratio"] == pytest.approx(plain_objective(A, B, np.roll(np.arange(20), 1))
                                                      / plain_objective(A, B, np.arange(20)))
    assert scores["beats_truth"] == 0 and scores["oracle_acc"] == 1.0


# ---- through run.main -------------------------------------------------------------------------------------

N_POOL = 220


@pytest.fixture
def blind_dir(tmp_path, monkeypatch):
    """A toy dataset: target rows are the source rows rotated (the linear kernels are equal: B = A permuted
    once the task draws and the method shuffles)."""
    monkeypatch.chdir(tmp_path)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(N_POOL, 16, generator=g, dtype=torch.float64)
    R = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64)).Q
    ids = list(range(N_POOL))
    save_embeddings(X.float(), tmp_path / "data" / "toy_a_text.pt", {"model": "a", "image_ids": ids})
    save_embeddings((X @ R).float(), tmp_path / "data" / "toy_b_text.pt", {"model": "b", "image_ids": ids})
    return tmp_path


ARGS = ["--task", "blind", "--source", "a:text", "--target", "b:text", "--base_data", "toy", "--query_data", "toy",
        "--b", "0", "-q"]


def test_planted_isomorphic_pair_is_recovered_at_200(blind_dir):
    assert run.main(ARGS + ["--q", "200", "--m", "blind", "--blind-iterations", "20", "--seeds", "0"]) == 0
    (f,) = list((blind_dir / "seedwise").glob("*.csv"))
    sw = pd.read_csv(f)
    assert (sw["matching_acc"] == 1).all() and (sw["oracle_acc"] == 1).all()
    assert sw["objective_ratio"].tolist() == pytest.approx([1.0])
    assert (sw["base_samples"] == 0).all() and (sw["task"] == "blind").all()


@pytest.mark.parametrize("argv, code, needle", [
    (["--q", str(N_POOL + 1), "--m", "blind"], 1, f"only {N_POOL}"),
    (["--q", "2", "--m", "blind"], 2, "at least 3"),
    (["--q", "10", "--m", "linear"], 2, "needs anchors"),
    (["--q", "10", "--m", "exact", "--kernel", "linear"], 0, None),
    (["--q", "20", "--m", "exact"], 2, "at most"),
    (["--q", "10", "--m", "blind", "--blind-tenure", "0"], 2, "--blind-tenure 0"),
    (["--q", "10", "--m", "blind", "--blind-starts", "gw,bogus"], 2, "--blind-starts gw,bogus"),
    (["--q", "10", "--m", "blind", "--blind-starts", "gw,random", "--blind-tenure", "0.5"], 0, None),
])
def test_bad_input_one_message_nothing_written(blind_dir, capsys, argv, code, needle):
    if code == 0:   # a valid small exact run, to show the refusals are about the values
        assert run.main(ARGS + argv + ["--seeds", "0"]) == 0
        return
    _bad(blind_dir, capsys, ARGS + argv, code, needle)


def test_anchors_are_refused(blind_dir, capsys):
    argv = [a for a in ARGS if a not in ("--b", "0")]
    _bad(blind_dir, capsys, argv + ["--q", "10", "--m", "blind"], 2, "--b 0")
    _bad(blind_dir, capsys, ["--task", "captions", "--source", "a:text", "--target", "b:text", "--base_data", "toy",
                             "--query_data", "toy", "--b", "10", "--q", "10", "--m", "blind", "-q"], 2,
         "--task blind")


def test_class_names_against_half_class_prototypes(tmp_path, monkeypatch):
    from test_tasks import make_classes
    monkeypatch.chdir(tmp_path)
    img, labels, text = make_classes(tmp_path, [6] * 12, noise=0.05)
    argv = ["--task", "blind", "--source", "txt:text", "--target", "vis:img", "--base_data", "toy", "--query_data",
            "toy", "--b", "0", "--q", "8", "--m", "blind", "--seeds", "0", "-q"]
    assert run.main(argv) == 0
    (f,) = list((tmp_path / "seedwise").glob("*.csv"))
    sw = pd.read_csv(f)
    assert (sw["matching_acc"] == 1).all() and (sw["query_samples"] == 8).all()
    # the draw, written out: 8 classes, then per class a random half of its images, averaged
    rng = np.random.default_rng(0)
    picked = np.sort(rng.choice(12, 8, replace=False))
    protos = []
    for c in picked:
        rows = torch.nonzero(labels == int(c)).flatten().numpy()
        protos.append(img[rng.permutation(rows)[:3]].double().mean(dim=0))
    from src.config import Config
    from src.experiment import SideCache
    from src.tasks import TASKS
    cfg = Config("blind", "txt:text", "vis:img", base_samples=0, query_samples=8, base_data="toy",
                 query_data="toy", task="blind")
    draw = TASKS["blind"].draw(TASKS["blind"].prepare(cfg, SideCache("data")), cfg, 0, "cpu")
    torch.testing.assert_close(draw.tq.double(), torch.stack(protos))
    torch.testing.assert_close(draw.sq, text[torch.as_tensor(picked)])


@pytest.mark.parametrize("method", sorted(BLIND_METHODS))
def test_every_blind_method_end_to_end(blind_dir, method):
    quick = {"blind": ["--blind-iterations", "20"], "gw": ["--gw-iterations", "5"], "rosetta": ["--rosetta-centres",
                                                                                               "5"], "exact": []}
    assert run.main(ARGS + ["--q", "8", "--m", method, "--seeds", "0", "1"] + quick[method]) == 0
    (f,) = list((blind_dir / "seedwise").glob("*.csv"))
    sw = pd.read_csv(f)
    assert sw["matching_acc"].between(0, 1).all() and (sw["top_1"] == -1).all()
    assert sw["objective_ratio"].notna().all() and sw["oracle_acc"].between(0, 1).all()
