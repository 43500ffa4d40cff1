"""A configuration: one method (with its options) on one pair of sides, one task, one (base data, query data),
seeds; for a one-sided task (``Task.sides == 1``, the probe) one target side, no source and no method. Its
identity (what changes the numbers) names its files and keys its rows in table.csv; a side's perturbation
(``~swap:0.5``) is part of the side's text, so of the identity.

- ``Config.key()``: the run key, a hash of ``identity()``; the ``config`` column of every row and the end
  of the run's file name (``name()``, which keeps the paper's file names for paper-style runs).
- ``Config.group()``: the hash of everything but the method and its options: configurations with one group
  share loaded sides, draws and alignment metrics, and make one row of table.csv (a column per method).
- ``Config.check()``: every check of a configuration that needs no file, in one place (the method's
  options were checked when the configuration was made).
"""
import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace

from .errors import UsageError
from .files import run_paths
from .methods import METHODS, get_method
from .metrics import MAX_PERMUTATIONS
from .names import Side, check_path_part, dataset_tag, file_tag, parse_side, perturbation_tag
from .tasks import TASK_FLAGS, TASKS

MAX_SEED = 2**32 - 1  # NumPy's legacy generator takes seeds in 0..2**32 - 1


def _hash(ident):
    return hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Config:
    method: str                  # "" for a one-sided task
    source: Side                 # None for a one-sided task
    target: Side
    base_samples: int = 320
    query_samples: int = 500
    clustering_mode: int = 0
    base_data: str = "coco"
    query_data: str = "nocaps"
    stretch: bool = False
    seeds: tuple = (0, 1, 2)
    base_seed: int = 0
    options: tuple = ()          # the method's options as sorted (name, value) items; given ones or defaults
    task: str = "captions"
    permutations: int = 0
    data_dir: str = "data"
    results_dir: str = "results"
    seedwise_dir: str = "seedwise"

    def __post_init__(self):
        object.__setattr__(self, "source", None if self.source is None else parse_side(self.source))
        object.__setattr__(self, "target", parse_side(self.target))
        object.__setattr__(self, "seeds", tuple(self.seeds))
        if self.method in METHODS:  # an unknown method is refused by check()
            options = METHODS[self.method].create(self.options).options()
            object.__setattr__(self, "options", tuple(sorted(options.items())))

    @classmethod
    def paper(cls, text_model, vid_model, vtl=False, **kw):
        """The paper's flags as two sides: source {text_model}:text, target {vid_model}:img, -vtl swaps."""
        text, img = Side(text_model, "text"), Side(vid_model, "img")
        return cls(source=img if vtl else text, target=text if vtl else img, **kw)

    # ---- what it is -----------------------------------------------------------------------------------

    @property
    def one_sided(self):
        """A task of one side (the probe): no source, no method."""
        return self.task in TASKS and TASKS[self.task].sides == 1

    @property
    def paper_style(self):
        """Captions against images with no language or perturbation: the paper's setting, named as the paper's
        code did."""
        return (self.task == "captions" and self.source is not None and not self.source.lang
                and not self.target.lang and self.source.perturbation is None
                and self.target.perturbation is None
                and {self.source.modality, self.target.modality} == {"text", "img"})

    @property
    def vtl(self):
        return self.paper_style and self.source.modality == "img"

    def method_instance(self):
        return get_method(self.method)(**dict(self.options))

    def method_label(self):
        """The method's name, with the options that differ from its defaults: ``qap[restarts=50]``."""
        if self.one_sided:
            return ""
        defaults = get_method(self.method)().options()
        changed = [f"{k}={v}" for k, v in self.options if defaults.get(k) != v]
        return self.method + (f"[{','.join(changed)}]" if changed else "")

    def changed_options(self):
        """The options that differ from the method's defaults, as a JSON object (the CSV's method_options)."""
        if self.one_sided:
            return ""
        defaults = get_method(self.method)().options()
        return json.dumps({k: v for k, v in self.options if defaults.get(k) != v}, sort_keys=True) \
            if any(defaults.get(k) != v for k, v in self.options) else ""

    # ---- identity and names ---------------------------------------------------------------------------

    def identity(self):
        """What changes the numbers (paths other than the data folder, and the device, do not). Paper-style
        runs hash exactly the keys they always did, so their file names stay the same. A one-sided task hashes
        what it uses: its side, its data, its seeds."""
        if self.one_sided:
            ident = {"task": self.task, "target": self.target.text, "base_data": self.base_data,
                     "seeds": sorted(self.seeds)}
            if os.path.realpath(self.data_dir) != os.path.realpath("data"):
                ident["data_dir"] = os.path.realpath(self.data_dir)
            return ident
        ident = {k: v for k, v in asdict(self).items() if k in (
            "method", "base_samples", "query_samples", "clustering_mode", "base_data", "query_data", "stretch",
            "seeds", "base_seed")}
        ident["seeds"] = sorted(self.seeds)  # the same seeds in another order give the same rows
        defaults = Config(self.method, self.source, self.target)
        for flag in TASK_FLAGS:  # a flag the task does not use changes nothing: hashed at its default
            if flag not in TASKS[self.task].uses:
                ident[flag] = getattr(defaults, flag)
        if self.paper_style:
            text, img = (self.target, self.source) if self.vtl else (self.source, self.target)
            ident.update(vid_model=img.model, text_model=text.model, vtl=self.vtl)
        else:
            ident.update(source=self.source.text, target=self.target.text, task=self.task)
        if self.permutations:
            ident["permutations"] = self.permutations
        if os.path.realpath(self.data_dir) != os.path.realpath("data"):
            ident["data_dir"] = os.path.realpath(self.data_dir)  # another folder: another name
        ident.update(dict(self.options))
        return ident

    def key(self):
        """The run key: the hash of identity() (the ``config`` column, the end of the file name)."""
        return _hash(self.identity())

    config_hash = key

    def group(self):
        """The hash of the identity without the method and its options: one row of table.csv."""
        ident = self.identity()
        for k in ["method"] + [k for k, _ in self.options]:
            ident.pop(k, None)
        return _hash(ident)

    def _side_part(self, side):
        if self.paper_style:
            return file_tag(side.model)
        return ".".join([file_tag(side.model), side.modality] + ([side.lang] if side.lang else [])
                        + ([perturbation_tag(side.perturbation)] if side.perturbation else []))

    def name(self):
        """A file name a reader recognises; the hash keeps two different configurations apart."""
        if self.one_sided:
            return "_".join([self.base_data, self._side_part(self.target), self.task, self.key()])
        uses = TASKS[self.task].uses
        parts = [dataset_tag(self.base_data), dataset_tag(self.query_data), self._side_part(self.source),
                 self._side_part(self.target),
                 self.method, f"b{self.base_samples}"]
        parts += [f"q{self.query_samples}"] if "query_samples" in uses else []
        parts += [f"c{self.clustering_mode}"] if "clustering_mode" in uses else []
        parts += ["str"] if self.stretch else []
        parts += ["vtl"] if self.vtl else []
        parts += [self.task] if self.task != "captions" else []
        return "_".join(map(str, parts + [self.key()]))

    def group_key(self):
        """Configurations with one group key share loading, draws and metrics (and the output folders)."""
        return replace(self, method="", options=())

    def output_paths(self):
        return run_paths(self.results_dir, self.seedwise_dir, self.name())

    # ---- checks ---------------------------------------------------------------------------------------

    def check(self):
        """Every check that needs no file (UsageError naming the flag)."""
        if self.task not in TASKS:
            raise UsageError(f"--task {self.task}: use one of {', '.join(TASKS)}")
        check_path_part(self.base_data, "--base_data")  # both become part of file names
        check_path_part(self.query_data, "--query_data")
        if self.one_sided:
            return self._check_one_sided()
        if self.source is None:
            raise UsageError(f"--task {self.task} matches two sides: give --source and --target")
        method = get_method(self.method)
        if self.clustering_mode not in (0, 1, 2):
            raise UsageError(f"--c {self.clustering_mode}: use 0 (random anchors), 1 (source clusters) or 2 "
                             f"(target clusters)")
        least_b = 1 if TASKS[self.task].anchors else 0   # --task blind: --b 0, no anchors
        for flag, v, least in (("--b", self.base_samples, least_b), ("--q", self.query_samples, 1)):
            if v < least:
                raise UsageError(f"{flag} {v}: must be at least {least}")
        if self.permutations < 0:
            raise UsageError(f"--permutations {self.permutations}: must be 0 or more")
        if self.permutations > MAX_PERMUTATIONS:
            raise UsageError(f"--permutations {self.permutations}: at most {MAX_PERMUTATIONS} (each shuffle "
                             f"recomputes every metric, for every seed and pair: hours; 1000 pin a z-score well)")
        if self.permutations == 1:
            raise UsageError("--permutations 1: a z-score needs the spread of at least 2 shuffles (use 20 or "
                             "more for a z-score worth reading)")
        self._check_seeds()
        if not 0 <= self.base_seed <= MAX_SEED:
            raise UsageError(f"--base-seed {self.base_seed}: use a seed in 0..{MAX_SEED}")
        task = TASKS[self.task]
        defaults = Config(self.method, self.source, self.target)
        ignored = [TASK_FLAGS[f] for f in task.refuses
                   if f not in task.uses and getattr(self, f) != getattr(defaults, f)]
        if ignored:
            users = [t.name for t in TASKS.values() if all(f in t.uses for f in task.refuses)]
            raise UsageError(f"--task {self.task} draws its anchors by --seeds: {' and '.join(ignored)} "
                             f"{'does' if len(ignored) == 1 else 'do'} not apply to it (only to --task "
                             f"{', '.join(users) or 'none'}); drop {'it' if len(ignored) == 1 else 'them'}")
        task.check(self)
        method.check_config(self.base_samples)

    def _check_seeds(self):
        if not self.seeds:
            raise UsageError("--seeds: give at least one seed")
        if len(set(self.seeds)) != len(self.seeds) or not all(0 <= s <= MAX_SEED for s in self.seeds):
            raise UsageError(f"--seeds {' '.join(map(str, self.seeds))}: give distinct seeds, each in 0..{MAX_SEED} "
                             f"(a repeated seed would count twice in the average)")

    def _check_one_sided(self):
        if self.method:
            raise UsageError(f"--task {self.task} runs no matching method: drop --m {self.method}")
        self._check_seeds()
        TASKS[self.task].check(self)
