"""src/methods.py: the method contract. A method with an option is one dataclass and one registry line: its
flag appears in run.py, its value reaches the computation, names the files, and is checked before any work."""
from dataclasses import dataclass

import pandas as pd
import pytest
import torch

import run
from src import methods, utils
from src.errors import UsageError
from src.methods import METHODS, QAP, Method, option

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
