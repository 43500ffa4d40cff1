"""src/faq.py: the batched seeded FAQ against scipy's, from the same starts; src/matching.py's graph_matching
driver over it."""
import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment, quadratic_assignment

import run
from src import faq, matching, utils
from src.errors import UsageError
from src.methods import QAP

F64 = torch.float64


def problem(n_seeds, m, noise, seed=0):
    """A, B: the paper's centred RBF kernels of two noisy views of the same points; B's unseeded rows
    shuffled by a planted permutation. Returns A, B, planted (B row of each unseeded A row)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n_seeds + m, 6, generator=g, dtype=F64)
    Y = torch.tanh(X @ torch.randn(6, 9, generator=g, dtype=F64)) + noise * torch.randn(n_seeds + m, 9, generator=g,
                                                                                          dtype=F64)
    A = utils.centered_scaled_corr_rbf(X)
    B = utils.centered_scaled_corr_rbf(Y)
    perm = torch.randperm(m, generator=g)
    idx = torch.cat([torch.arange(n_seeds), n_seeds + perm])
    inv = torch.argsort(perm)
    return A, B[idx][:, idx], inv


def scipy_faq(A, B, s, P0):
    return quadratic_assignment(A.numpy(), B.numpy(), options=dict(
        P0=P0.numpy(), maximize=True, tol=1e-5, partial_match=np.array([np.arange(s), np.arange(s)]).T))


def starts(m, count, seed):
    """Randomized starts (J + K) / 2, balanced tightly enough for scipy's doubly-stochastic check."""
    g = torch.Generator().manual_seed(seed)
    return (1.0 / m + faq.doubly_stochastic(torch.rand(count, m, m, generator=g, dtype=F64), tol=1e-12)) / 2


def assert_same_as_scipy(A, B, s, P0):
    cols, objs, iters = faq.faq_batch(A, B, s, P0)
    for k in range(P0.shape[0]):
        ref = scipy_faq(A, B, s, P0[k])
        assert np.array_equal(ref.col_ind, np.concatenate([np.arange(s), s + cols[k].numpy()])), k
        assert objs[k].item() == pytest.approx(ref.fun, rel=1e-10, abs=0), k
        assert iters[k].item() == ref.nit, k
    return iters


@pytest.mark.parametrize("noise", [0.3, 1.0])
def test_fast_faq_is_scipys_step_for_step_on_real_like_kernels(noise):
    # the paper's centred RBF kernels: exactly symmetric, so the one-product branch runs
    s, m = 15, 40
    A, B, _ = problem(s, m, noise, seed=1)
    assert faq.is_symmetric(A, B)
    iters = assert_same_as_scipy(A, B, s, starts(m, 6, seed=2))
    assert (iters > 2).any()  # several Frank-Wolfe steps, not only the first


@pytest.mark.parametrize("noise", [2.0, 5.0])  # 3-4 steps; up to maxiter (30)
def test_fast_faq_is_scipys_step_for_step_on_an_asymmetric_problem(noise):
    # the two-product branch: A and B not symmetric (a planted permutation plus noise, so FAQ has work)
    s, m = 12, 40
    g = torch.Generator().manual_seed(9)
    A = torch.randn(s + m, s + m, generator=g, dtype=F64)
    perm = torch.cat([torch.arange(s), s + torch.randperm(m, generator=g)])
    B = A[perm][:, perm] + noise * torch.randn(s + m, s + m, generator=g, dtype=F64)
    assert not faq.is_symmetric(A, B) and not faq.is_symmetric(A, A)
    iters = assert_same_as_scipy(A, B, s, starts(m, 6, seed=3))
    assert (iters > 2).any()


def test_is_symmetric_is_exact():
    A, B, _ = problem(5, 10, 0.5)
    assert faq.is_symmetric(A, B)
    A2 = A.clone()
    A2[3, 7] += 1e-15 * abs(A2[3, 7])  # far inside the old rtol=1e-10: now the general branch
    assert not faq.is_symmetric(A2, B)


def test_real_inputs_take_the_symmetric_branch(monkeypatch):
    # float32 embeddings, as the real files: qap_inputs builds CPU float64 matrices that are exactly
    # symmetric (they were asymmetric by ~1e-8 when centred in float32), also once cast to float32
    g = torch.Generator().manual_seed(11)
    X = torch.randn(60, 24, generator=g)
    Y = torch.tanh(X @ torch.randn(24, 16, generator=g)) + 0.3 * torch.randn(60, 16, generator=g)
    A, B, _, n_base = utils.qap_inputs(X[:30], Y[:30], X[30:], Y[30:])
    assert A.dtype == B.dtype == F64 and A.device.type == B.device.type == "cpu" and n_base == 30
    assert torch.equal(A, A.T) and torch.equal(B, B.T)
    assert faq.is_symmetric(A.float(), B.float())
    branches = []
    real = faq.is_symmetric
    monkeypatch.setattr(faq, "is_symmetric", lambda a, b: branches.append(real(a, b)) or branches[-1])
    matching.graph_matching(X[:30], Y[:30], X[30:], Y[30:], restarts=3, seed=0, patience=None, progress=False)
    assert branches and all(branches)


def test_objective_is_scipys_score():
    A, B, inv = problem(10, 20, 0.5)
    other = torch.randperm(20, generator=torch.Generator().manual_seed(1))
    objs = faq.objective_batch(A, B, 10, torch.stack([inv, other]))
    for k, cols in enumerate((inv, other)):
        perm = torch.cat([torch.arange(10), 10 + cols])
        assert objs[k].item() == pytest.approx(float((A * B[perm][:, perm]).sum()), rel=1e-12, abs=0)
    assert objs[0] > objs[1]  # the planted permutation scores higher than a random one


def test_planted_permutation_recovered_and_anchors_fixed():
    s, m = 40, 30
    A, B, inv = problem(s, m, 0.02, seed=3)
    res = faq.seeded_qap(A, B, s, restarts=8, init="randomized", seed=0)
    assert (res.col_ind[:s] == np.arange(s)).all()
    assert (res.col_ind[s:] - s == inv.numpy()).all()
    assert res.restarts == 8 and len(res.objectives) == 8 and res.objective == max(res.objectives)


def test_same_seed_same_result():
    A, B, _ = problem(20, 40, 1.0, seed=4)
    a = faq.seeded_qap(A, B, 20, restarts=12, seed=5, batch_size=4)
    b = faq.seeded_qap(A, B, 20, restarts=12, seed=5, batch_size=4)
    assert a.objectives == b.objectives and (a.col_ind == b.col_ind).all()


def test_patience_stops_when_restarts_stop_improving():
    A, B, _ = problem(30, 20, 0.05, seed=4)  # easy: every restart finds the same optimum
    res = faq.seeded_qap(A, B, 30, restarts=100, seed=5, patience=4, batch_size=4)
    assert res.restarts < 100
    best_at = int(np.argmax(res.objectives))  # the first best
    assert res.restarts - 1 - best_at >= 4


def test_warm_start_runs_first_from_the_given_assignment():
    s, m = 40, 30
    A, B, inv = problem(s, m, 0.02, seed=6)
    res = faq.seeded_qap(A, B, s, restarts=3, init="warm", warm=inv.numpy(), seed=0)
    assert (res.col_ind[s:] - s == inv.numpy()).all()
    exact = faq.objective_batch(A, B, s, inv[None])[0].item()
    assert res.objectives[0] == pytest.approx(exact)
    assert faq.seeded_qap(A, B, s, init="barycenter", restarts=50).restarts == 1  # deterministic: one run


def test_float32_iterates_reach_the_float64_solution():
    A, B, inv = problem(40, 30, 0.05, seed=7)
    r64 = faq.seeded_qap(A, B, 40, restarts=8, seed=1, dtype=F64)
    r32 = faq.seeded_qap(A, B, 40, restarts=8, seed=1, dtype=torch.float32)
    assert (r32.col_ind == r64.col_ind).all() and r32.objective == r64.objective  # scored in float64


def test_bad_init_names():
    A, B, _ = problem(5, 5, 0.1)
    with pytest.raises(ValueError):
        faq.seeded_qap(A, B, 5, init="nope")
    with pytest.raises(ValueError):
        faq.seeded_qap(A, B, 5, init="warm")


def test_bad_solver_and_init_are_usage_errors(capsys):
    assert run.main(["--m", "qap", "--qap-solver", "magic"]) == 2
    assert "--qap-solver" in capsys.readouterr().err
    assert run.main(["--m", "qap", "--qap-init", "magic"]) == 2
    assert "--qap-init" in capsys.readouterr().err


def test_two_opt_gains_are_exact_and_never_lower_the_objective():
    s, m = 10, 25
    A, B, _ = problem(s, m, 1.0, seed=8)
    start = np.concatenate([np.arange(s), s + np.random.default_rng(0).permutation(m)])
    score = lambda p: float((A * B[p][:, p]).sum())  # noqa: E731
    col, obj, swaps = faq.two_opt(A, B, s, start)
    assert swaps > 0 and obj > score(start)
    assert obj == pytest.approx(score(col), abs=1e-12)
    assert (col[:s] == np.arange(s)).all() and sorted(col) == list(range(s + m))
    for i in range(s, s + m):  # a local optimum: no single swap improves it
        for j in range(i + 1, s + m):
            q = col.copy()
            q[[i, j]] = q[[j, i]]
            assert score(q) <= obj + 1e-12


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_runs_on_gpu_tensors():
    A, B, inv = problem(40, 30, 0.02, seed=3)
    res = faq.seeded_qap(A.cuda(), B.cuda(), 40, restarts=8, seed=0)
    assert (res.col_ind[40:] - 40 == inv.numpy()).all()


# ----------------------------------------------------------------------------------------------------------
# src/matching.py: the drivers
# ----------------------------------------------------------------------------------------------------------

def views(n_base, n_query, seed=0, noise=0.01):
    """Two float32 views (a rotation plus noise) of the same points: anchors and queries per side."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n_base + n_query, 10, generator=g)
    R, _ = torch.linalg.qr(torch.randn(10, 10, generator=g))
    Y = X @ R + noise * torch.randn(X.shape, generator=g)
    return X[:n_base], Y[:n_base], X[n_base:], Y[n_base:]


def test_hungarian_is_linear_matching_and_returns_the_unshuffled_assignment():
    g = torch.Generator().manual_seed(12)
    Q = 30
    pi = torch.randperm(Q, generator=g)          # source i's best target is pi[i]
    graph = torch.randn(Q, Q, generator=g, dtype=F64)
    graph[torch.arange(Q), pi] += 10
    acc, assignment = matching.hungarian(graph)
    assert assignment.dtype == np.int64 and np.array_equal(assignment, pi.numpy())
    assert acc == float(np.mean(pi.numpy() == np.arange(Q))) == utils.linear_matching(None, None, None, None, graph)
    noisy = torch.randn(Q, Q, generator=g)       # float32, ties unlikely: the paper's rule decides
    acc, assignment = matching.hungarian(noisy)
    shuffle = torch.randperm(Q, generator=torch.Generator().manual_seed(0)).numpy()
    rows, cols = linear_sum_assignment(noisy.double()[:, shuffle].numpy(), maximize=True)
    assert acc == float(np.sum(cols[shuffle] == rows)) / Q == utils.linear_matching(None, None, None, None, noisy)
    assert np.array_equal(assignment, shuffle[cols]) and sorted(assignment) == list(range(Q))
    assert acc == float(np.mean(assignment == np.arange(Q)))


@pytest.mark.parametrize("options", [dict(solver="scipy"), dict(solver="fast"),
                                     dict(solver="fast", init="kernel_local_CKA", polish=True),
                                     dict(solver="fast", init="barycenter")],
                         ids=["scipy", "fast", "fast-warm-polish", "fast-barycenter"])
def test_qap_recovers_a_planted_permutation_as_an_assignment(options):
    sb, tb, sq, tq = views(30, 25, seed=1)
    sigma = torch.randperm(25, generator=torch.Generator().manual_seed(2))
    acc, info = matching.graph_matching(sb, tb, sq, tq[sigma], restarts=4, seed=1, progress=False, **options)
    assert set(info) == {"objective", "restarts", "assignment"}
    assert info["assignment"].dtype == np.int64
    assert np.array_equal(info["assignment"], torch.argsort(sigma).numpy())  # source i -> its own target
    assert acc == float(np.mean(info["assignment"] == np.arange(25)))
    assert isinstance(info["objective"], float) and info["restarts"] == (1 if "barycenter" in options.values() else 4)


def test_qap_scipy_is_the_papers_qap_matching():
    sb, tb, sq, tq = views(20, 20, seed=3, noise=0.5)
    acc, info = matching.graph_matching(sb, tb, sq, tq, solver="scipy", restarts=3, seed=4, progress=False)
    assert utils.qap_matching(sb, tb, sq, tq, None, restarts=3, seed=4, progress=False, return_info=True) == (
        acc, {"objective": info["objective"], "restarts": 3})


def test_qap_fast_options():
    sb, tb, sq, tq = views(20, 30, seed=5, noise=1.0)
    run_all = matching.graph_matching(sb, tb, sq, tq, restarts=16, seed=0, patience=0, progress=False)[1]
    assert run_all["restarts"] == 16  # patience 0: never stop early (run.py's "0: never")
    never = matching.graph_matching(sb, tb, sq, tq, restarts=16, seed=0, patience=None, progress=False)[1]
    assert never["restarts"] == 16
    assert matching.graph_matching(sb, tb, sq, tq, restarts=16, seed=0, patience=1, progress=False)[1]["restarts"] < 16
    A, B, shuffle, n = utils.qap_inputs(sb, tb, sq, tq)
    unshuffle = torch.argsort(shuffle).numpy()

    def score(assignment):  # the objective of an assignment given in the unshuffled order
        perm = np.concatenate([np.arange(n), n + unshuffle[assignment]])
        return float((A * B[perm][:, perm]).sum())

    plain = matching.graph_matching(sb, tb, sq, tq, restarts=4, seed=0, progress=False)[1]
    polished = matching.graph_matching(sb, tb, sq, tq, restarts=4, seed=0, polish=True, progress=False)[1]
    for info in (plain, polished):
        assert info["objective"] == pytest.approx(score(info["assignment"]), rel=1e-12, abs=0)
    assert polished["objective"] > plain["objective"]  # this problem has a pair swap to make
    again = matching.graph_matching(sb, tb, sq, tq, restarts=4, seed=0, progress=False)[1]
    assert again["objective"] == plain["objective"]


@pytest.mark.parametrize("options, message", [
    (dict(qap_solver="magic"), "--qap-solver magic"),
    (dict(qap_init="magic"), "--qap-init magic"),
    (dict(restarts=0), "--restarts 0"),
    (dict(qap_patience=-1), "--qap-patience -1"),
    (dict(qap_solver="scipy", qap_init="relative"), "--qap-init relative needs --qap-solver fast"),
    (dict(qap_solver="scipy", qap_init="barycenter"), "--qap-init barycenter needs --qap-solver fast"),
    (dict(qap_solver="scipy", qap_polish=True), "--qap-polish needs --qap-solver fast"),
])
def test_bad_qap_options_are_usage_errors_before_any_work(options, message, monkeypatch):
    with pytest.raises(UsageError, match=message):
        QAP.create(options)
    monkeypatch.setattr(matching, "qap_inputs", lambda *a, **k: pytest.fail("built the problem"))
    if "restarts" in options:  # the paper's API checks its arguments as the qap method's options
        with pytest.raises(UsageError, match=message):
            utils.qap_matching(None, None, None, None, None, progress=False, **options)


def test_good_qap_options_pass():
    for solver in matching.SOLVERS:
        assert QAP.create(dict(qap_solver=solver, restarts=1, qap_patience=0)).qap_patience is None
    for init in matching.QAP_INITS:
        QAP.create(dict(qap_init=init, qap_patience=None, qap_polish=True))
    assert set(matching.WARM_GRAPHS) < set(matching.QAP_INITS)
