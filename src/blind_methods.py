"""The blind solvers as methods (``src/blind.py``), for ``--task blind``: no anchors, no graph (top-k is -1).

Each method builds its solver from its options and the seed, matches the source queries to the target queries
with the target rows in the paper's fixed shuffled order (``matching.query_shuffle``: ties cannot favour the
truth), and returns the assignment in the unshuffled order. ``qap`` (``src/methods.py``) also runs with no
anchors: the seeded-FAQ baseline.
"""
from dataclasses import dataclass

import numpy as np

from . import blind
from .errors import UsageError
from .matching import query_shuffle
from .method_base import Method, option

KERNEL_HELP = ("blind solvers: each side's kernel: linear (centred cosine), rbf (the paper's centred RBF), distance "
               "(itsamatch's standardised Euclidean distances)")


# Options that several blind methods share (one flag, one help): a fresh dataclass field each time
def kernel_option():
    return option("linear", "--kernel", KERNEL_HELP, choices=tuple(blind.KERNELS))


def seconds_option():
    return option(0.0, "--blind-seconds", "blind, rosetta: wall-clock limit of a seed's search (0: none, the step "
                  "budget ends it and the result does not depend on the machine's load)", least=0)


class BlindMethod(Method):
    """Base of the anchor-free solvers: ``solver(n, seed)`` returns a ``blind.Solver``."""

    anchor_free = True
    blind_only = True
    name = ""

    @classmethod
    def check_config(cls, base_samples):
        if base_samples:
            raise UsageError(f"--m {cls.name} matches with no anchors: run it with --task blind --b 0")

    @classmethod
    def check_size(cls, n):
        """A method's limit on the number of items (``--q``), before any file is read."""

    def solver(self, n, seed):
        raise NotImplementedError

    def match(self, draw, graph, device, seed, progress):
        X, Y = draw.sq, draw.tq
        n = X.shape[0]
        shuffle = query_shuffle(n).numpy()
        solution = self.solver(n, seed).solve(X, Y[shuffle])
        assignment = shuffle[solution.perm].astype(np.int64)
        acc = float(np.mean(assignment == np.arange(n)))
        return acc, {"assignment": assignment, "objective": solution.objective}


@dataclass(frozen=True)
class BlindSearch(BlindMethod):
    description = ("blind matching, no anchors: starts (sorted profiles, spectral Procrustes, FAQ, GW), 2-swap "
                   "descent, tabu search under a step budget")
    name = "blind"
    kernel: str = kernel_option()
    blind_starts: str = option("auto", "--blind-starts",
                               f"blind: comma-separated starts, of {', '.join(blind.STARTS)} (auto: "
                               f"{','.join(blind.AUTO_STARTS)}, and gw from N = {blind.GW_FROM})")
    blind_keep: int = option(3, "--blind-keep", "blind: tabu search from this many of the best starts", least=1)
    blind_iterations: int = option(0, "--blind-iterations", "blind: tabu steps in all (0: 40 N up to N = 100, "
                                   "then 40 N (N / 100))", least=0)
    blind_tenure: float = option(2.0, "--blind-tenure", "blind: tabu tenure, a multiple of N (each entry lasts "
                                 "tenure N steps plus up to as many again)")
    blind_seconds: float = seconds_option()
    blind_refine: str = option("auto", "--blind-refine",
                               f"blind: self-learning from the matching found (an orthogonal map between the "
                               f"kernels' spectral coordinates, then the assignment), kept when its objective "
                               f"is higher (auto: from N = {blind.REFINE_FROM})", choices=blind.REFINE)
    cost_flags = ("--blind-iterations", "--blind-seconds")

    def starts(self):
        return None if self.blind_starts == "auto" else [s for s in self.blind_starts.split(",") if s]

    def validate(self):
        starts = self.starts()
        if starts is not None and (not starts or any(s not in blind.STARTS for s in starts)):
            raise UsageError(f"--blind-starts {self.blind_starts}: give auto or comma-separated starts of "
                             f"{', '.join(blind.STARTS)}")
        if not self.blind_tenure > 0:
            raise UsageError(f"--blind-tenure {self.blind_tenure}: must be positive (a multiple of N, e.g. 2)")

    def estimate_seconds(self, n_anchors, n_queries, device="cpu"):
        # about 1 ms a tabu step at N = 200 on one loaded core, scaling with N^2 (plus the starts)
        steps = self.blind_iterations or blind.default_iterations(n_queries)
        return self.blind_seconds or 1e-3 * steps * (n_queries / 200) ** 2 + 1

    def solver(self, n, seed):
        return blind.BlindSolver(self.kernel, starts=self.starts(), keep=self.blind_keep,
                                 iterations=self.blind_iterations or None, tenure=self.blind_tenure,
                                 seconds=self.blind_seconds or None, seed=seed, refine=self.blind_refine)


@dataclass(frozen=True)
class GW(BlindMethod):
    description = "entropic Gromov-Wasserstein (POT, log-domain Sinkhorn), rounded by the assignment; no anchors"
    name = "gw"
    kernel: str = kernel_option()
    gw_epsilon: float = option(0.005, "--gw-epsilon", "gw: entropic regularisation (kernels scaled to norm N)")
    gw_iterations: int = option(30, "--gw-iterations", "gw: projected-gradient steps (epsilon annealed from 0.1)",
                                least=1)

    def validate(self):
        if not self.gw_epsilon > 0:
            raise UsageError(f"--gw-epsilon {self.gw_epsilon}: must be positive")

    def solver(self, n, seed):
        return blind.GWSolver(self.kernel, epsilon=self.gw_epsilon, iterations=self.gw_iterations)


@dataclass(frozen=True)
class Exact(BlindMethod):
    description = f"every permutation (N <= {blind.MAX_EXACT}): the certified optimum of the blind objective"
    name = "exact"
    kernel: str = kernel_option()

    @classmethod
    def check_size(cls, n):
        if n > blind.MAX_EXACT:
            raise UsageError(f"--m exact tries every permutation: --q {n} is too many (at most {blind.MAX_EXACT}); "
                             f"use --m blind")

    def solver(self, n, seed):
        return blind.ExactSolver(self.kernel)


@dataclass(frozen=True)
class Rosetta(BlindMethod):
    description = ("large N, no anchors: k-means centres matched blind, then Wasserstein Procrustes over all rows "
                   "in a common PCA space")
    name = "rosetta"
    kernel: str = kernel_option()
    rosetta_centres: int = option(100, "--rosetta-centres", "rosetta: k-means centres a side", least=3)
    rosetta_dim: int = option(64, "--rosetta-dim", "rosetta: common PCA dimensions", least=1)
    blind_seconds: float = seconds_option()

    def solver(self, n, seed):
        k = min(self.rosetta_centres, n)
        return blind.RosettaSolver(self.kernel, centres=k, dim=self.rosetta_dim,
                                   seconds=self.blind_seconds or None, seed=seed)


BLIND_METHODS = {"blind": BlindSearch, "gw": GW, "exact": Exact, "rosetta": Rosetta}
