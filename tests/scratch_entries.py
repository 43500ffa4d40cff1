"""One new entry in each registry, added as a contributor would: a metric, a method with an option, a task
with a score column and a perturbation kind, each one function or class, one registry line and the plain
reference beside the test that iterates that registry. Nothing else of the repository changes.

Used two ways:
- ``register(monkeypatch)``: tests/test_registries.py adds them for one test and runs them through run.main;
- as a pytest plugin, ``python -m pytest -p scratch_entries tests/...`` (tests/ on PYTHONPATH): every test
  collected sees the entries, which shows that the existing tests stay green with them.
"""
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

TESTS = Path(__file__).resolve().parent

# ----------------------------------------------------------------------------------------------------------
# A metric: representational similarity (Pearson over the pairs i < j of the two cosine Gram matrices)
# ----------------------------------------------------------------------------------------------------------


def rsa(X, Y):
    """Pearson correlation of the cosine similarities of all pairs i < j on each side (RSA)."""
    from src import metrics
    X, Y = metrics._prepare(X, Y)
    Xn, Yn = X / X.norm(dim=1, keepdim=True), Y / Y.norm(dim=1, keepdim=True)
    i, j = torch.triu_indices(X.shape[0], X.shape[0], offset=1)
    a, b = (Xn @ Xn.T)[i, j], (Yn @ Yn.T)[i, j]
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / torch.sqrt((a * a).sum() * (b * b).sum()))


def plain_rsa(X, Y):
    def cos(M):
        return [[float(np.dot(M[i], M[j]) / math.sqrt(np.dot(M[i], M[i]) * np.dot(M[j], M[j])))
                 for j in range(len(M))] for i in range(len(M))]
    SX, SY = cos(X), cos(Y)
    pairs = [(i, j) for i in range(len(X)) for j in range(i + 1, len(X))]
    a, b = [SX[i][j] for i, j in pairs], [SY[i][j] for i, j in pairs]
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    cov = sum((u - ma) * (v - mb) for u, v in zip(a, b))
    return cov / math.sqrt(sum((u - ma) ** 2 for u in a) * sum((v - mb) ** 2 for v in b))


# ----------------------------------------------------------------------------------------------------------
# A method with an option: relative representations on the first k anchors
# ----------------------------------------------------------------------------------------------------------

def _method_class():
    from src import utils
    from src.methods import Method, option

    @dataclass(frozen=True)
    class ScratchAnchors(Method):
        description = "relative representations on the first --scratch-k anchors"
        k: int = option(10, "--scratch-k", "scratch_anchors: anchors used", least=2)

        def graph(self, draw, device):
            return utils.relative_baseline(draw.sb[:self.k], draw.tb[:self.k], draw.sq, draw.tq, device)
    return ScratchAnchors


def plain_scratch_anchors(sb, tb, sq, tq, k=10):
    def cos(a, b):
        return (a / a.norm(dim=1, keepdim=True)) @ (b / b.norm(dim=1, keepdim=True)).T
    return cos(cos(sq, sb[:k]), cos(tq, tb[:k]))


# ----------------------------------------------------------------------------------------------------------
# A task with a score column: captions, also scored on the first half of the queries
# ----------------------------------------------------------------------------------------------------------

def _task():
    from src import tasks

    class ScratchHalf(tasks.Captions):
        name = "scratch_half"
        description = "captions, also scored on the first half of the queries"
        columns = (tasks.ScoreColumn("scratch_half_acc", "first-half accuracy"),)

        def draw(self, state, cfg, seed, device):
            draw = super().draw(state, cfg, seed, device)
            half = draw.sq.shape[0] // 2
            draw.score = lambda assignment: {"scratch_half_acc": float(np.mean(assignment[:half] == np.arange(half)))}
            return draw
    return ScratchHalf()


# ----------------------------------------------------------------------------------------------------------
# A perturbation kind: a seeded fraction p of the rows negated
# ----------------------------------------------------------------------------------------------------------

def negate_rows(rows, p, gen):
    """``negate:p``: the first round(p n) rows of a seeded permutation negated."""
    chosen = gen.permutation(rows.shape[0])[:int(math.floor(p * rows.shape[0] + 0.5))]
    out = rows.clone()
    out[torch.as_tensor(chosen, dtype=torch.long)] *= -1
    return out


def plain_negate(X, p, gen):
    order = [int(v) for v in gen.permutation(len(X))]
    flipped = set(order[:math.floor(p * len(X) + 0.5)])
    return torch.stack([-X[i] if i in flipped else X[i] for i in range(len(X))])


def _kind():
    from src import perturb
    return perturb.Kind("negate", perturb.ROWS, None, "p", 0, 1, False, "a fraction p of the rows negated", negate_rows)


# ----------------------------------------------------------------------------------------------------------

def register(setitem):
    """Add the four entries and their references; setitem(dict, key, value) (monkeypatch.setitem or plain)."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    from src import methods, metrics, perturb, tasks
    method = _method_class()
    setitem(metrics.METRICS, "rsa", rsa)                             # the registry lines
    setitem(methods.METHODS, "scratch_anchors", method)
    setitem(tasks.TASKS, "scratch_half", _task())
    setitem(perturb.KINDS, "negate", _kind())
    import test_methods
    import test_metrics
    import test_perturb
    import test_tasks
    setitem(test_metrics.PLAIN, "rsa", plain_rsa)                  # the references beside the tests
    setitem(test_methods.PLAIN, "scratch_anchors", ("graph", plain_scratch_anchors))
    setitem(test_perturb.PLAIN, "negate", (0.5, plain_negate))
    setitem(test_tasks.CHECKED_BY, "scratch_half", "tests/test_registries.py::test_a_new_task_runs_through_main")
    return method


def pytest_configure(config):
    register(lambda d, k, v: d.__setitem__(k, v))
