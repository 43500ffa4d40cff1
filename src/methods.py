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
import argparse
from dataclasses import dataclass, field, fields

import numpy as np

from .baselines import cos_baseline, linear_baseline, relative_baseline
from .errors import UsageError
from .local_cka import kernel_local_CKA, linear_local_CKA
from .matching import (
    QAP_INITS,
    SOLVERS,
    estimate_qap_seconds,
    graph_matching,
    hungarian,
)

OPTION_PREFIX = "option:"  # argparse dests of method options: their own namespace


def option(default, flag, help, choices=None, least=None, zero_means_none=False):
    """A method option: a dataclass field whose metadata says how run.py offers and checks it.

    ``least``: the smallest allowed value (ints); ``choices``: the allowed values; ``zero_means_none``:
    the flag's 0 means "no limit" and is stored as None (``--qap-patience 0``)."""
    return field(default=default, metadata={"flag": flag, "help": help, "choices": choices, "least": least,
                                            "zero_means_none": zero_means_none})


def _whole(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


class Method:
    """Base of every method (a frozen dataclass of options in each subclass)."""

    description = ""
    same_space = False   # compares the two sides directly: needs equal dimensions
    cost_flags = ()      # the flags that bound its run time (named when its estimate is long)

    # ---- options -------------------------------------------------------------------------------------

    @classmethod
    def option_fields(cls):
        return [f for f in fields(cls) if "flag" in f.metadata] if hasattr(cls, "__dataclass_fields__") else []

    @staticmethod
    def dest(field_name):
        """Where argparse stores an option: a namespace of its own (``option:NAME``), so an option named like
        one of the script's own flags (``quiet``) never reads or overwrites that flag's value."""
        return OPTION_PREFIX + field_name

    @classmethod
    def add_arguments(cls, parser, name, seen):
        """Add this method's flags to parser (a flag that another method already added is shared). A flag
        that the script itself already has is refused here, when the parser is built."""
        own = [f for f in cls.option_fields() if f.metadata["flag"] not in seen]
        if not own:
            return
        taken = {s for a in parser._actions for s in a.option_strings}
        clash = [f.metadata["flag"] for f in own if f.metadata["flag"] in taken]
        if clash:
            raise ValueError(f"method {name!r}: its option flag {clash[0]} is already a flag of "
                             f"{parser.prog}; give the option another flag")
        group = parser.add_argument_group(f"--m {name} options")
        for f in own:
            meta = f.metadata
            seen.add(meta["flag"])
            kw = {"dest": cls.dest(f.name), "help": meta["help"], "default": argparse.SUPPRESS}
            if isinstance(f.default, bool):
                group.add_argument(meta["flag"], action="store_true", **kw)
                continue
            if meta["choices"] is not None:
                kw["choices"] = tuple(meta["choices"])
            group.add_argument(meta["flag"], type=type(f.default) if f.default is not None else str,
                               **kw, metavar=None if meta["choices"] else f.name.upper())
        return group

    @classmethod
    def options_from_args(cls, args):
        """{option: value} of the flags given on the command line (defaults left out: the dataclass has
        them)."""
        return {f.name: getattr(args, cls.dest(f.name)) for f in cls.option_fields()
                if hasattr(args, cls.dest(f.name))}

    @classmethod
    def create(cls, options=()):
        """The method with these options ({name: value} or its items), checked."""
        options = dict(options)
        known = {f.name for f in cls.option_fields()}
        unknown = sorted(set(options) - known)
        if unknown:
            raise UsageError(f"{cls.__name__} has no option {unknown[0]!r}"
                             + (f"; its options: {', '.join(sorted(known))}" if known else ""))
        for f in cls.option_fields():
            if f.metadata["zero_means_none"] and options.get(f.name) == 0 and _whole(options[f.name]):
                options[f.name] = None
        method = cls(**options)
        method.check()
        return method

    def options(self):
        """The option values as a mapping (what a configuration hashes)."""
        return {f.name: getattr(self, f.name) for f in self.option_fields()}

    def check(self):
        """UsageError, naming the flag, for an option value that cannot work."""
        for f in self.option_fields():
            v, meta = getattr(self, f.name), f.metadata
            if v is None and (meta["zero_means_none"] or f.default is None):
                continue
            flag = meta["flag"]
            if meta["choices"] is not None and v not in meta["choices"]:
                raise UsageError(f"{flag} {v}: use one of {', '.join(map(str, meta['choices']))}")
            if isinstance(f.default, bool) and not isinstance(v, bool):
                raise UsageError(f"{flag}: must be true or false, got {v!r}")
            if _whole(f.default) and not _whole(v):
                raise UsageError(f"{flag} {v}: must be a whole number")
            if meta["least"] is not None and v < meta["least"]:
                zero = " (0: no limit)" if meta["zero_means_none"] else ""
                raise UsageError(f"{flag} {v}: must be at least {meta['least']}{zero}")
        self.validate()

    def validate(self):
        """Checks that involve several options (a subclass's)."""

    @classmethod
    def check_config(cls, base_samples):
        """A method's limits on the configuration."""

    # ---- computation -----------------------------------------------------------------------------------

    def estimate_seconds(self, n_anchors, n_queries, device="cpu"):
        """Estimated seconds of graph + match for one seed, or None: no estimate (the method is cheap)."""

    def graph(self, draw, device):
        return None

    def match(self, draw, graph, device, seed, progress):
        """The paper's linear matching: Hungarian on the graph."""
        acc, assignment = hungarian(graph)
        return acc, {"assignment": assignment}


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
}


def get_method(name):
    if name not in METHODS:
        raise UsageError(f"--m {name}: use one of {', '.join(METHODS)}")
    return METHODS[name]

