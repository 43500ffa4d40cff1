"""Methods: how one seed's anchors and queries become a Q x Q graph, a ranking and a one-to-one matching.

A method is a frozen dataclass whose fields are its options (itsamatch's habit: a solver's options are its
constructor arguments). Each field is declared with ``option(default, flag, help, ...)``: run.py adds the
flag to its parser, a configuration carries the values as one hashed mapping (``Config.options``), and
``check()`` refuses values that cannot work, naming the flag. The rest of the code only calls:

- ``graph(draw, device)``: the Q x Q graph (rows source queries, columns target queries), or None;
- ``match(draw, graph, device, seed, progress)``: (accuracy, info) with ``info["assignment"]`` (np.int64,
  Q: the target query matched to source query i) and optionally ``objective`` and ``restarts``;
- ``check_config(base_samples)``: a method's limits on the configuration (before any file is read);
- ``estimate_seconds(n_anchors, n_queries, device)``: its estimated seconds for one seed, or None (cheap
  methods); run.py warns before a configuration whose estimate passes a minute, naming ``cost_flags``.

Top-1/5/10 come from the graph (``src/retrieval.py``); a method without a graph reports -1, as the paper's
qap rows. Adding a method: a dataclass here (or in a file of its own) and one line in ``METHODS``.
"""
from dataclasses import dataclass

from .baselines import cos_baseline, linear_baseline, relative_baseline
from .blind_methods import BLIND_METHODS
from .errors import UsageError
from .local_cka import kernel_local_CKA, linear_local_CKA
from .matching import QAP_INITS, SOLVERS, estimate_qap_seconds, graph_matching
from .method_base import Method, option  # noqa: F401  (option: the methods contract, re-exported)


class _GraphMethod(Method):
    """A method given by a graph function (sb, tb, sq, tq, device) -> Q x Q, matched by Hungarian."""

    function = None

    def graph(self, draw, device):
        return type(self).function(draw.sb, draw.tb, draw.sq, draw.tq, device)


@dataclass(frozen=True)
class Linear(_GraphMethod):
    description = "least squares from source to target on the anchors, then cosine"
    function = staticmethod(linear_baseline)


@dataclass(frozen=True)
class Cos(_GraphMethod):
    description = "cosine between the two spaces directly (only meaningful for a shared space, e.g. CLIP)"
    function = staticmethod(cos_baseline)
    same_space = True


@dataclass(frozen=True)
class Relative(_GraphMethod):
    description = "relative representations: cosine to the anchors on each side, then cosine"
    function = staticmethod(relative_baseline)


@dataclass(frozen=True)
class LinearLocalCKA(_GraphMethod):
    description = "linear CKA of [query; anchors] on both sides, for every pair"
    function = staticmethod(linear_local_CKA)


@dataclass(frozen=True)
class KernelLocalCKA(_GraphMethod):
    description = "RBF-kernel CKA of [query; anchors] on both sides, for every pair"
    function = staticmethod(kernel_local_CKA)

    @classmethod
    def check_config(cls, base_samples):
        if base_samples < 2:
            raise UsageError("--m kernel_local_CKA needs at least 2 anchors (its RBF bandwidth is the median "
                             "distance within [query; anchors]): raise --b")


@dataclass(frozen=True)
class QAP(Method):
    """Seeded graph matching (FAQ) of the two centred RBF kernels, anchors fixed (``matching.graph_matching``)."""

    description = "seeded graph matching (FAQ) of the two centred RBF kernels, anchors fixed"
    anchor_free = True   # FAQ runs with no anchors too (--task blind): the blind baseline
    restarts: int = option(500, "--restarts", "qap: most FAQ restarts", least=1)
    qap_solver: str = option("fast", "--qap-solver", "qap: fast (batched, src/faq.py) or scipy (the paper's loop)",
                             choices=SOLVERS)
    qap_init: str = option("randomized", "--qap-init", "qap starts: randomized (the paper's), barycenter, or a "
                           "warm start from that graph", choices=QAP_INITS)
    qap_patience: int | None = option(10, "--qap-patience", "qap, fast solver: stop after this many restarts "
                                         "without a better objective (0: never)", least=0, zero_means_none=True)
    qap_polish: bool = option(False, "--qap-polish", "qap, fast solver: pair-swap local search on the best "
                              "permutation (a higher objective)")

    def validate(self):
        if self.qap_solver == "scipy" and self.qap_init != "randomized":
            raise UsageError(f"--qap-init {self.qap_init} needs --qap-solver fast (scipy runs the paper's "
                             f"randomized starts)")
        if self.qap_solver == "scipy" and self.qap_polish:
            raise UsageError("--qap-polish needs --qap-solver fast")

    cost_flags = ("--restarts", "--qap-patience")

    def estimate_seconds(self, n_anchors, n_queries, device="cpu"):
        return estimate_qap_seconds(n_anchors, n_queries, self.restarts, self.qap_solver, self.qap_patience,
                                    self.qap_init, device)

    def match(self, draw, graph, device, seed, progress):
        return graph_matching(draw.sb, draw.tb, draw.sq, draw.tq, device, restarts=self.restarts, seed=seed,
                              solver=self.qap_solver, init=self.qap_init, patience=self.qap_patience,
                              polish=self.qap_polish, progress=progress)


QAPOptions = QAP  # the paper API (utils.qap_matching) checks its arguments as the qap method's options

METHODS = {
    "linear": Linear,
    "cos": Cos,
    "relative": Relative,
    "linear_local_CKA": LinearLocalCKA,
    "kernel_local_CKA": KernelLocalCKA,
    "qap": QAP,
    **BLIND_METHODS,   # blind, gw, exact, rosetta (src/blind_methods.py; --task blind)
}


def get_method(name):
    if name not in METHODS:
        raise UsageError(f"--m {name}: use one of {', '.join(METHODS)}")
    return METHODS[name]

