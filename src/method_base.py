"""The base of every method (``src/methods.py`` holds the registry): a frozen dataclass of options, declared
with ``option``; the contract is in ``src/methods.py``'s docstring. In a module of its own so that methods kept
in other modules (``src/blind_methods.py``) subclass it without importing the registry that lists them."""
import argparse
from dataclasses import field, fields

import numpy as np

from .errors import UsageError
from .matching import hungarian

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

    anchor_free = False  # matches with no anchors at all (the methods --task blind accepts)
    blind_only = False   # matches only with no anchors (refuses anchors; the demos leave it out)
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
