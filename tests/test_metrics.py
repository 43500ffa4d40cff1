"""src/metrics.py against plain definitions written here (loops, explicit sets, the HSIC formula)."""
import math

import numpy as np
import pytest
import torch

from src import metrics
from src.errors import DataError, UsageError

# ----------------------------------------------------------------------------------------------------------
# Plain definitions, one entry at a time
# ----------------------------------------------------------------------------------------------------------

def plain_biased_hsic(K, L):
    n = K.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    return float(np.sum((H @ K @ H) * (H @ L @ H)))


def plain_cka(hsic, K, L):
    return hsic(K, L) / math.sqrt(hsic(K, K) * hsic(L, L))


def plain_rbf(X):
    n = X.shape[0]
    D = np.array([[float(np.sum((X[i] - X[j]) ** 2)) for j in range(n)] for i in range(n)])
    nz = np.sort(D[~np.eye(n, dtype=bool)])
    med = nz[(len(nz) - 1) // 2]  # lower middle value, as torch.median
    return np.exp(-D / (2 * med))


def plain_unbiased_hsic(K, L):
    """Song et al. eq. 5 with explicit sums over the diagonal-zeroed kernels (K, L may be asymmetric)."""
    n = K.shape[0]
    Kt = [[0.0 if i == j else float(K[i, j]) for j in range(n)] for i in range(n)]
    Lt = [[0.0 if i == j else float(L[i, j]) for j in range(n)] for i in range(n)]
    trace = sum(Kt[i][j] * Lt[j][i] for i in range(n) for j in range(n))
    sum_k = sum(Kt[i][j] for i in range(n) for j in range(n))
    sum_l = sum(Lt[i][j] for i in range(n) for j in range(n))
    sum_kl = sum(Kt[i][m] * Lt[m][j] for i in range(n) for j in range(n) for m in range(n))
    return (trace + sum_k * sum_l / ((n - 1) * (n - 2)) - 2 * sum_kl / (n - 2)) / (n * (n - 3))


def plain_cos(X):
    n = X.shape[0]
    norms = [math.sqrt(float(np.dot(X[i], X[i]))) for i in range(n)]
    return np.array([[float(np.dot(X[i], X[j])) / (norms[i] * norms[j]) for j in range(n)] for i in range(n)])


def plain_knn(S, i, k):
    """The k nearest of row i (self excluded), ties toward the lower index, as a set."""
    others = [j for j in range(S.shape[0]) if j != i]
    return set(sorted(others, key=lambda j: (-S[i, j], j))[:k])


def plain_mutual_knn(X, Y, k):
    SX, SY = plain_cos(X), plain_cos(Y)
    n = X.shape[0]
    return sum(len(plain_knn(SX, i, k) & plain_knn(SY, i, k)) / k for i in range(n)) / n


def plain_cknna(X, Y, k):
    K, L = plain_cos(X), plain_cos(Y)  # kernels of the L2-normalised rows
    n = X.shape[0]

    def sim(A, B):
        M = np.zeros((n, n))
        for i in range(n):
            for j in plain_knn(A, i, k) & plain_knn(B, i, k):
                M[i, j] = 1.0
        return plain_unbiased_hsic(A * M, B * M)

    return sim(K, L) / math.sqrt(sim(K, K) * sim(L, L))


# metric -> its plain definition (X, Y) -> float, written above. A new metric adds its line here.
PLAIN = {
    "linear_cka": lambda X, Y: plain_cka(plain_biased_hsic, X @ X.T, Y @ Y.T),
    "kernel_cka": lambda X, Y: plain_cka(plain_biased_hsic, plain_rbf(X), plain_rbf(Y)),
    "unbiased_cka": lambda X, Y: plain_cka(plain_unbiased_hsic, X @ X.T, Y @ Y.T),
    "mutual_knn": lambda X, Y: plain_mutual_knn(X, Y, 10),
    "cknna": lambda X, Y: plain_cknna(X, Y, 10),
}


def paired(n=24, d1=7, d2=5, noise=0.5, seed=0):
    """A related pair: Y is a linear map of X plus noise."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d1))
    Y = X @ rng.normal(size=(d1, d2)) + noise * rng.normal(size=(n, d2))
    return X, Y


# ----------------------------------------------------------------------------------------------------------
# Each metric against its plain definition
# ----------------------------------------------------------------------------------------------------------

def test_every_metric_has_a_plain_definition():
    assert set(PLAIN) == set(metrics.METRICS)


def test_the_papers_two_metrics_come_first():
    assert list(metrics.METRICS)[:2] == ["linear_cka", "kernel_cka"]  # the paper's CSV columns, in its order


@pytest.mark.parametrize("name", list(metrics.METRICS))
@pytest.mark.parametrize("seed", [0, 1])
def test_metric_matches_plain_definition(name, seed):
    X, Y = paired(seed=seed)
    got = metrics.measure(name, torch.tensor(X), torch.tensor(Y))
    assert isinstance(got, float)
    assert got == pytest.approx(PLAIN[name](X, Y), rel=1e-9, abs=1e-12)


def test_unbiased_hsic_matches_formula_on_asymmetric_kernels():
    rng = np.random.default_rng(3)
    K, L = rng.normal(size=(9, 9)), rng.normal(size=(9, 9))
    got = float(metrics.hsic_unbiased(torch.tensor(K), torch.tensor(L)))
    assert got == pytest.approx(plain_unbiased_hsic(K, L), rel=1e-10)


def test_paper_cka_variants_are_the_paper_functions():
    from src import utils
    X, Y = paired(seed=4)
    Xt, Yt = torch.tensor(X), torch.tensor(Y)
    assert metrics.linear_cka(X, Y) == float(utils.linear_CKA(Xt, Yt))
    assert metrics.kernel_cka(X, Y) == float(utils.kernel_CKA(Xt, Yt))


def test_knn_ties_go_to_the_lower_index():
    # rows of +-1 (norm 2): every cosine is an exact multiple of 1/4, so ties are exact on both sides and
    # the rule (lower index first) decides the neighbours
    rng = np.random.default_rng(5)
    X = rng.choice([-1.0, 1.0], size=(15, 4))
    Y = rng.choice([-1.0, 1.0], size=(15, 4))
    for k in (2, 3, 5):
        assert metrics.mutual_knn(X, Y, k=k) == pytest.approx(plain_mutual_knn(X, Y, k), abs=1e-12)
        assert metrics.cknna(X, Y, k=k) == pytest.approx(plain_cknna(X, Y, k), rel=1e-9)


@pytest.mark.parametrize("k", [2, 5, 23])
def test_k_is_a_parameter(k):
    X, Y = paired(seed=6)
    assert metrics.measure("mutual_knn", X, Y, k=k) == pytest.approx(plain_mutual_knn(X, Y, k), abs=1e-12)
    assert metrics.measure("cknna", X, Y, k=k) == pytest.approx(plain_cknna(X, Y, k), rel=1e-9)


# ----------------------------------------------------------------------------------------------------------
# Properties
# ----------------------------------------------------------------------------------------------------------

def test_identical_sides_give_one():
    X, _ = paired(n=40, seed=7)
    for name, value in metrics.measure_all(X, X).items():
        assert value == pytest.approx(1.0, abs=1e-12), name


def test_shuffled_pairing_drops_every_metric():
    X, Y = paired(n=80, noise=0.2, seed=8)
    aligned = metrics.measure_all(X, Y)
    shuffled = metrics.measure_all(X, Y[np.random.default_rng(0).permutation(80)])
    for name in metrics.METRICS:
        assert shuffled[name] < aligned[name] - 0.2, name


def test_float32_and_float64_inputs_are_measured_in_float64():
    X, Y = paired(seed=9)
    a = metrics.measure_all(torch.tensor(X, dtype=torch.float32), torch.tensor(Y, dtype=torch.float32))
    b = metrics.measure_all(torch.tensor(X, dtype=torch.float32).double(),
                            torch.tensor(Y, dtype=torch.float32).double())
    assert a == b


def test_measure_all_is_in_registry_order():
    X, Y = paired(seed=10)
    assert list(metrics.measure_all(X, Y)) == list(metrics.METRICS)


# ----------------------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mutual_knn", "cknna"])
def test_k_not_below_n_is_refused(name):
    X, Y = paired(n=10)
    with pytest.raises(DataError, match="k = 10"):
        metrics.measure(name, X, Y)
    assert math.isfinite(metrics.measure(name, X, Y, k=9))  # n - 1 neighbours is the most there are


def test_bad_inputs():
    X, Y = paired(n=10)
    with pytest.raises(UsageError, match="unknown metric"):
        metrics.measure("cka", X, Y)
    with pytest.raises(DataError, match="paired rows"):
        metrics.measure("linear_cka", X, Y[:9])
    with pytest.raises(DataError, match="non-finite"):
        metrics.measure("linear_cka", np.full_like(X, np.nan), Y)
    with pytest.raises(DataError, match="at least 4 rows"):
        metrics.measure("unbiased_cka", X[:3], Y[:3])
    with pytest.raises(UsageError):
        metrics.measure("mutual_knn", X, Y, k=0)


# ----------------------------------------------------------------------------------------------------------
# Calibration
# ----------------------------------------------------------------------------------------------------------

def test_permutation_null_is_the_plain_shuffle_statistics():
    X, Y = paired(n=30, seed=11)
    got = metrics.permutation_null(X, Y, 4, seed=3)
    rng = np.random.default_rng(3)  # one generator, the same shuffles for every metric
    shuffled = [metrics.measure_all(X, Y[rng.permutation(30)]) for _ in range(4)]
    value = metrics.measure_all(X, Y)
    for name in metrics.METRICS:
        vals = [s[name] for s in shuffled]
        mean, std = float(np.mean(vals)), float(np.std(vals, ddof=1))
        assert got[name][0] == pytest.approx(mean, rel=1e-12, abs=1e-15)
        assert got[name][1] == pytest.approx(std, rel=1e-12)
        assert got[name][2] == pytest.approx((value[name] - mean) / std, rel=1e-9)


def test_permutation_null_deterministic_and_large_z_when_aligned():
    X, Y = paired(n=60, noise=0.1, seed=12)
    a = metrics.permutation_null(X, Y, 8, seed=0)
    assert a == metrics.permutation_null(X, Y, 8, seed=0)
    assert a != metrics.permutation_null(X, Y, 8, seed=1)
    for name, (_, _, z) in a.items():
        assert z > 5, name


def test_permutation_null_single_shuffle_has_no_z():
    X, Y = paired(n=20)
    for mean, std, z in metrics.permutation_null(X, Y, 1).values():
        assert math.isfinite(mean) and std == 0.0 and math.isnan(z)
    with pytest.raises(UsageError):
        metrics.permutation_null(X, Y, 0)


def test_metric_columns_and_row():
    names = list(metrics.METRICS)
    assert metrics.metric_columns(0) == names
    assert metrics.metric_columns(3) == names + [c for n in names for c in (f"{n}_null", f"{n}_z")]
    X, Y = paired(n=20)
    row = metrics.metric_row(X, Y, permutations=2, seed=5)
    assert list(row) == metrics.metric_columns(2)
    null = metrics.permutation_null(X, Y, 2, seed=5)
    assert row["cknna_null"] == null["cknna"][0] and row["cknna_z"] == null["cknna"][2]
    assert list(metrics.metric_row(X, Y)) == names
