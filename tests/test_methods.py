"""src/methods.py: the method contract. A method with an option is one dataclass and one registry line: its
flag appears in run.py, its value reaches the computation, names the files, and is checked before any work."""
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from test_utils import plain_center, plain_kernel_cka, plain_linear_cka, plain_local, plain_rbf

import run
from src import methods, utils
from src.errors import UsageError
from src.methods import METHODS, QAP, Method, option
from src.tasks import Draw

ARGS = ["--vid_model", "vis", "--text_model", "txt", "--base_data", "base", "--query_data", "query",
        "--b", "30", "--q", "40", "-q"]


@dataclass(frozen=True)
class FirstAnchors(Method):
    """Relative representations on the first k anchors only (a method with one option)."""
    description = "relative representations on the first --first-k anchors"
    k: int = option(10, "--first-k", "anchors used", least=2)

    def graph(self, draw, device):
        return utils.relative_baseline(draw.sb[:self.k], draw.tb[:self.k], draw.sq, draw.tq, device)


@pytest.fixture
def first_anchors(monkeypatch):
    monkeypatch.setitem(METHODS, "first_anchors", FirstAnchors)  # the one registry line


def _expected(workdir, k, seed):
    """The definition written out: the paper's draw, relative representations on k anchors, Hungarian."""
    data = {d: {m: torch.load(workdir / "data" / f"{d}_{n}_{m}.pt") for n, m in (("txt", "text"), ("vis", "img"))}
            for d in ("base", "query")}
    sb, tb, sq, tq = utils.get_data_sep(0, seed, 30, 40, data["base"]["text"], data["base"]["img"],
                                        data["query"]["text"], data["query"]["img"], None, None, 0, False)
    graph = utils.relative_baseline(sb[:k], tb[:k], sq, tq)
    return utils.linear_matching(sb, tb, sq, tq, graph), utils.get_retrieval(graph)[0]


def test_a_new_method_with_an_option_runs_through_main(workdir, first_anchors, capsys):
    assert "--first-k" in run.build_parser().format_help()
    assert run.main(["--m", "first_anchors", "--first-k", "5"] + ARGS) == 0
    assert run.main(["--m", "first_anchors"] + ARGS) == 0  # the default, k = 10: another configuration
    frames = {f.name: pd.read_csv(f) for f in (workdir / "seedwise").glob("*.csv")}
    assert len(frames) == 2
    for frame in frames.values():
        k = 5 if frame["method_options"].notna().all() else 10   # "" (NaN here) for the defaults
        assert k == 10 or (frame["method_options"] == '{"k": 5}').all()
        for seed, row in zip((0, 1, 2), frame.to_dict("records")):
            acc, top1 = _expected(workdir, k, seed)
            assert row["matching_acc"] == acc and row["top_1"] == top1
    # the option is part of the run key and of the table: two columns of one row
    capsys.readouterr()
    assert run.main(["--report", "-q"]) == 0
    table = pd.read_csv(workdir / "results" / "table.csv")
    assert len(table) == 1 and {"first_anchors_acc", "first_anchors[k=5]_acc"} <= set(table.columns)
    assert "first_anchors[k=5]" in capsys.readouterr().out


def test_a_bad_option_is_refused_before_any_work(workdir, first_anchors, capsys, monkeypatch):
    monkeypatch.setattr(FirstAnchors, "graph", lambda *a: pytest.fail("computed"))
    assert run.main(["--m", "first_anchors", "--first-k", "1"] + ARGS) == 2
    assert "--first-k 1: must be at least 2" in capsys.readouterr().err
    assert not list(workdir.rglob("*.csv"))


def test_options_of_the_paper_methods():
    assert QAP.create({"qap_patience": 0}).qap_patience is None            # 0: never stop early
    assert QAP().options() == {"restarts": 500, "qap_solver": "fast", "qap_init": "randomized",
                               "qap_patience": 10, "qap_polish": False}    # the hash keys of qap files
    assert methods.Linear().options() == {}
    with pytest.raises(UsageError, match="has no option 'restart'"):
        QAP.create({"restart": 5})
    with pytest.raises(UsageError, match="--restarts 2.5: must be a whole number"):
        QAP.create({"restarts": 2.5})
    with pytest.raises(UsageError, match="at least 2 anchors"):
        methods.KernelLocalCKA.check_config(1)


def test_every_registry_method_has_a_description_and_unique_flags():
    flags = {}
    for name, method in METHODS.items():
        assert method.description, name
        for f in method.option_fields():
            flags.setdefault(f.metadata["flag"], set()).add(f.name)
    assert all(len(names) == 1 for names in flags.values())  # a shared flag must mean one option


# ----------------------------------------------------------------------------------------------------------
# Every registry method against its plain definition, written here
# ----------------------------------------------------------------------------------------------------------

def _cos(a, b):
    a = a / a.norm(dim=1, keepdim=True)
    b = b / b.norm(dim=1, keepdim=True)
    return a @ b.T


def plain_linear(sb, tb, sq, tq):
    W = torch.linalg.lstsq(sb, tb).solution               # least squares, no intercept
    return _cos(sq @ W, tq)


def plain_local_graph(cka):
    return lambda sb, tb, sq, tq: plain_local(cka, sb, tb, sq, tq)


def plain_qap_objective(draw, assignment):
    """sum_ij A[i, j] B[p(i), p(j)]: A, B the centred RBF kernels of [anchors; queries] scaled to unit norm,
    p keeping each anchor and taking source query i to target query assignment[i]."""
    def kernel(X):
        C = plain_center(plain_rbf(X))
        return C / torch.sqrt(torch.sum(C * C))
    A, B = kernel(torch.cat([draw.sb, draw.sq])), kernel(torch.cat([draw.tb, draw.tq]))
    b = draw.sb.shape[0]
    p = list(range(b)) + [b + int(j) for j in assignment]
    return sum(float(A[i, j]) * float(B[p[i], p[j]]) for i in range(len(p)) for j in range(len(p)))


def plain_blind_objective(draw, assignment):
    """trace(A P B P^T) on the queries alone (no anchors): A, B the cosines of every two centred query rows
    of each side (the blind solvers' default ``--kernel linear``), P[i, assignment[i]] = 1."""
    def kernel(X):
        Xc = X - X.mean(dim=0)
        return torch.stack([torch.stack([Xc[i] @ Xc[j] / Xc[i].norm() / Xc[j].norm() for j in range(len(X))])
                            for i in range(len(X))])
    A, B = kernel(draw.sq.double()), kernel(draw.tq.double())
    n = len(assignment)
    return sum(float(A[i, j]) * float(B[assignment[i], assignment[j]]) for i in range(n) for j in range(n))


# name -> ("graph", f(sb, tb, sq, tq) -> Q x Q): a method matched by Hungarian on its graph; or
# ("objective", f(draw, assignment) -> float): a method that reports the objective its matching maximises.
# A new method adds its line here (blind matching's solvers: their objective, e.g. "blind", "gw", "exact").
PLAIN = {
    "linear": ("graph", plain_linear),
    "cos": ("graph", lambda sb, tb, sq, tq: _cos(sq, tq)),
    "relative": ("graph", lambda sb, tb, sq, tq: _cos(_cos(sq, sb), _cos(tq, tb))),
    "linear_local_CKA": ("graph", plain_local_graph(plain_linear_cka)),
    "kernel_local_CKA": ("graph", plain_local_graph(plain_kernel_cka)),
    "qap": ("objective", plain_qap_objective),
    "blind": ("objective", plain_blind_objective),
    "gw": ("objective", plain_blind_objective),
    "exact": ("objective", plain_blind_objective),
    "rosetta": ("objective", plain_blind_objective),
}


def test_every_registry_method_has_a_plain_definition():
    assert set(PLAIN) == set(METHODS)


def small_draw(seed=0, b=12, q=8, d=6):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(b + q, d, generator=g, dtype=torch.float64)
    Y = X @ torch.randn(d, d, generator=g, dtype=torch.float64) + 0.3 * torch.randn(b + q, d, generator=g,
                                                                                       dtype=torch.float64)
    return Draw(X[:b], Y[:b], X[b:], Y[b:])


@pytest.mark.parametrize("name", list(METHODS))
def test_method_equals_its_plain_definition(name):
    draw = small_draw()
    method = METHODS[name].create()
    kind, plain = PLAIN[name]
    graph = method.graph(draw, "cpu")
    acc, info = method.match(draw, graph, "cpu", 0, False)
    assignment = np.asarray(info["assignment"])
    assert sorted(assignment.tolist()) == list(range(len(assignment)))   # one-to-one
    assert acc == pytest.approx(float(np.mean(assignment == np.arange(len(assignment)))))
    if kind == "graph":
        want = plain(draw.sb, draw.tb, draw.sq, draw.tq)
        assert torch.allclose(torch.as_tensor(graph).double(), want, atol=1e-9)
        # Hungarian: no one-to-one matching has a larger total on the plain graph
        rows, cols = linear_sum_assignment(want.numpy(), maximize=True)
        assert float(want[np.arange(len(assignment)), assignment].sum()) == pytest.approx(
            float(want.numpy()[rows, cols].sum()), abs=1e-9)
    else:
        assert info["objective"] == pytest.approx(plain(draw, assignment), rel=1e-9)


# ----------------------------------------------------------------------------------------------------------
# Method options live in their own namespace
# ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Hushed(Method):
    """An option field named like one of run.py's flags (-q/--quiet's dest is ``quiet``)."""
    description = "relative representations, with an option named quiet"
    quiet: int = option(3, "--hush-level", "an option whose field shares a run.py flag's name", least=0)

    def graph(self, draw, device):
        return utils.relative_baseline(draw.sb, draw.tb, draw.sq, draw.tq, device)


def test_an_option_named_like_a_script_flag_keeps_its_own_value(workdir, monkeypatch):
    monkeypatch.setitem(METHODS, "hushed", Hushed)
    parser = run.build_parser()
    args = parser.parse_args(["--m", "hushed", "-q"] + ARGS)
    assert args.quiet is True and Hushed.options_from_args(args) == {}          # -q is not the option
    args = parser.parse_args(["--m", "hushed", "--hush-level", "5"] + ARGS)
    assert Hushed.options_from_args(args) == {"quiet": 5}
    assert run.main(["--m", "hushed"] + ARGS) == 0                              # ARGS hold -q
    (frame,) = [pd.read_csv(f) for f in (workdir / "seedwise").glob("*.csv")]
    assert frame["method_options"].isna().all()                                 # the default, not -q's True


def test_an_option_flag_that_is_a_script_flag_is_refused_when_the_parser_is_built(monkeypatch):
    @dataclass(frozen=True)
    class Loud(Method):
        description = "an option whose flag run.py already has"
        seeds: int = option(1, "--seeds", "clashes with run.py's --seeds")
    monkeypatch.setitem(METHODS, "loud", Loud)
    with pytest.raises(ValueError, match="method 'loud': its option flag --seeds is already a flag of run.py"):
        run.build_parser()
