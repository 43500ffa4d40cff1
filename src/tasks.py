"""Tasks: how loaded sides become paired pools, how each seed draws anchors and queries from them, and what a
task scores beyond the paper's columns. After the draw every method runs unchanged.

| task       | pairs                                               | anchors / queries per seed          |
| captions   | rows of the same image id                           | the paper's get_data_sep            |
| classes    | class prototype (mean image row) <-> class text     | legacy draw of b classes / the rest |
| classify   | k-means centre of query images <-> class text       | as classes; centres for the queries |
| probe      | one side: its rows and their class labels           | 5 stratified folds a seed           |
| blind      | as captions, or class text <-> half-class prototype | no anchors / N = --q items a seed   |

The contract of a task (the rest of the code only iterates ``TASKS``):

- ``sides``: 2 (a source and a target, matched by every method) or 1 (the probe: a configuration names only
  a target and no method; ``score`` gives a seed's columns, and there is no draw, alignment or matching);
- ``uses``: which of the run flags ``--q``, ``--base-seed``, ``--c``, ``-str`` apply (Config field names);
  the others are not part of the run's file name, and ``--c`` / ``-str`` are refused where they do not apply;
- ``columns``: the score columns it adds to each row (``ScoreColumn``: name, the report block's title, how
  seeds average), the only ones its ``score`` may fill;
- ``check(cfg)``: its limits on a configuration, before any file is read;
- ``prepare(cfg, load) -> state``: its typed per-group state, from the sides (``load(dataset, side)``), checked
  before any computation; ``state.dims`` is (source dimension, target dimension);
- ``draw(state, cfg, seed, device) -> Draw``: one seed's anchors and queries, and the scorer of an assignment
  (two-sided tasks); ``score(state, cfg, seed, device) -> {column: value}`` (one-sided tasks).

Row perturbations of a side (``~swap:0.5``, ``src/perturb.py``) are applied in ``draw`` (or ``score``) to the
side's paired pools before the seed's draw; a task that cannot take them refuses them in ``check``.
"""
import logging
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from .assignment import linear_assignment
from .blind import linear_kernel, local_search, objective
from .draws import get_data_sep, legacy_class_draw
from .errors import DataError, UsageError
from .methods import METHODS, get_method
from .perturb import ROWS, perturb_pool
from .probe import FOLDS, probe_accuracy
from .sides import load_side_cluster, pair_rows, require_distinct

_logger = logging.getLogger(__name__)

# The run flags a task may use, as Config fields, with the flag a user writes.
TASK_FLAGS = {"query_samples": "--q", "base_seed": "--base-seed", "clustering_mode": "--c", "stretch": "-str"}


@dataclass
class Draw:
    """One seed's paired anchors (sb, tb) and queries (sq, tq): row i of sq pairs with row i of tq."""
    sb: torch.Tensor
    tb: torch.Tensor
    sq: torch.Tensor
    tq: torch.Tensor
    score: Optional[Callable] = None   # assignment (source query i -> target query j) -> {column: value}


@dataclass(frozen=True)
class ScoreColumn:
    name: str                          # the CSV column
    title: str                         # the report's block title
    average: Callable = staticmethod(lambda values: sum(values) / len(values))


class Task:
    """Base of every task. A subclass sets name, description, uses and columns, and implements the rest."""

    name = ""
    description = ""
    sides = 2                          # 1: one side, no method (the probe)
    uses = frozenset()                 # subset of TASK_FLAGS
    columns = ()                       # ScoreColumn, ...
    refuses = ("clustering_mode", "stretch")  # flags refused (not just ignored) where they do not apply
    anchors = True                     # False: draws no anchors, and --b 0 is the only value it takes

    def check(self, cfg):
        """UsageError for a configuration this task cannot run (no file read)."""

    def prepare(self, cfg, load):
        raise NotImplementedError

    def draw(self, state, cfg, seed, device) -> Draw:
        raise NotImplementedError

    def score(self, state, cfg, seed, device) -> dict:
        raise NotImplementedError


def _refuse_row_perturbations(cfg, why):
    for side in (cfg.source, cfg.target):
        if side is not None and side.perturbation is not None and side.perturbation.stage == ROWS:
            raise UsageError(f"--task {cfg.task}: {side} names a row perturbation, which {why}; perturb the "
                             f"inputs instead (an input kind, get_embeds.py --perturb) or use --task captions")


# ----------------------------------------------------------------------------------------------------------
# captions: the paper's task
# ----------------------------------------------------------------------------------------------------------

@dataclass
class CaptionsState:
    pools: tuple                       # (source base, target base, source query, target query) rows, paired
    clusters: dict                     # clustering mode (1, 2) -> anchor rows into the base pools, or None
    same: bool                         # anchors and queries from one dataset

    @property
    def dims(self):
        return self.pools[0].shape[1], self.pools[1].shape[1]


class Captions(Task):
    """The paper's task: captions and images (or any two sides) paired by image id."""
    name = "captions"
    description = "pairs by image id"
    uses = frozenset(TASK_FLAGS)

    def prepare(self, cfg, load):
        base_s, base_t = load(cfg.base_data, cfg.source), load(cfg.base_data, cfg.target)
        same = cfg.base_data == cfg.query_data
        sb, tb, keep_s, keep_t = pair_rows(base_s, base_t)
        if same:
            sq, tq = sb, tb
        else:
            sq, tq, _, _ = pair_rows(load(cfg.query_data, cfg.source), load(cfg.query_data, cfg.target))
        n_base, n_query = sb.shape[0], sq.shape[0]
        b, q = cfg.base_samples, cfg.query_samples
        pools = [(sb, base_s), (tb, base_t)]
        if not same:
            pools += [(sq, load(cfg.query_data, cfg.source)), (tq, load(cfg.query_data, cfg.target))]
        for rows, loaded in pools:  # before any computation: a constant side gives meaningless numbers
            require_distinct(rows, f"{loaded.path} (the rows paired with the other side)", loaded.fix)
        if same and b + q > n_base:
            raise DataError(f"{b} anchors + {q} queries = {b + q} rows, but {cfg.base_data} has only {n_base} "
                            f"(paired) rows; lower --b or --q")
        if not same and b > n_base:
            raise DataError(f"{b} anchors, but {cfg.base_data} has only {n_base} rows; lower --b")
        if not same and q > n_query:
            raise DataError(f"{q} queries, but {cfg.query_data} has only {n_query} rows; lower --q")
        clusters = {1: None, 2: None}
        if cfg.clustering_mode in (1, 2):
            # the paper's code read both cluster files always; only the one used is needed
            loaded, keep = (base_s, keep_s) if cfg.clustering_mode == 1 else (base_t, keep_t)
            picks = load_side_cluster(cfg.data_dir, cfg.base_data, loaded, b, keep)
            if picks.numel() > b:
                raise DataError(f"the cluster file of {loaded.side} holds {picks.numel()} anchors, more than "
                                f"--b {b}; re-run cluster.py with --nc {b}")
            if picks.numel() != b:
                _logger.warning("the cluster file of %s holds %d distinct anchors (k-means centres that share "
                                "a nearest row are merged, as in the paper); --b %d is kept in the CSV",
                                loaded.side, picks.numel(), b)
            clusters[cfg.clustering_mode] = picks
        return CaptionsState((sb, tb, sq, tq), clusters, same)

    def draw(self, state: CaptionsState, cfg, seed, device):
        sb, tb, sq, tq = state.pools
        # row perturbations: each side's paired pool (anchors and queries alike), seeded by the seed
        sb_p, tb_p = perturb_pool(sb, cfg.source, seed, 0, 0), perturb_pool(tb, cfg.target, seed, 1, 0)
        if state.same:
            sq_p, tq_p = sb_p, tb_p
        else:
            sq_p, tq_p = perturb_pool(sq, cfg.source, seed, 0, 1), perturb_pool(tq, cfg.target, seed, 1, 1)
        pools = [t.to(device) for t in (sb_p, tb_p, sq_p, tq_p)]
        sb, tb, sq, tq = get_data_sep(cfg.base_seed, seed, cfg.base_samples, cfg.query_samples, *pools,
                                      state.clusters[1], state.clusters[2], cfg.clustering_mode, state.same,
                                      cfg.stretch)
        return Draw(sb, tb, sq, tq)


# ----------------------------------------------------------------------------------------------------------
# classes and classify: class names against images
# ----------------------------------------------------------------------------------------------------------

@dataclass
class ClassesState:
    img_rows: torch.Tensor             # N x D image rows
    labels: torch.Tensor               # N class indices
    counts: torch.Tensor               # C images a class
    protos: torch.Tensor               # C x D mean image row a class
    text: torch.Tensor                 # C x D' class text rows
    image_is_source: bool

    @property
    def n_classes(self):
        return self.protos.shape[0]

    @property
    def dims(self):
        d_img, d_txt = self.protos.shape[1], self.text.shape[1]
        return (d_img, d_txt) if self.image_is_source else (d_txt, d_img)


def prototypes(rows, labels, n_classes):
    """Mean image row of each class (C x D), in the rows' dtype."""
    out = torch.zeros(n_classes, rows.shape[1], dtype=rows.dtype)
    out.index_add_(0, labels, rows)
    return out / torch.bincount(labels, minlength=n_classes).to(rows.dtype)[:, None]


IMAGE_ACC = ScoreColumn("image_acc", "image accuracy")


class Classes(Task):
    """Class prototypes (mean image row per class) matched to class-name texts."""
    name = "classes"
    description = "class prototypes vs class names"
    columns = (IMAGE_ACC,)

    def check(self, cfg):
        _refuse_row_perturbations(cfg, "applies to paired rows (the captions task's), not to class prototypes")
        if {cfg.source.modality, cfg.target.modality} != {"img", "text"}:
            raise UsageError(f"--task {cfg.task} matches images to class names: one side must be MODEL:img and "
                             f"the other MODEL:text (got {cfg.source} and {cfg.target})")
        if cfg.base_data != cfg.query_data:
            raise UsageError(f"--task {cfg.task} uses one dataset: give the same --base_data and --query_data "
                             f"(got {cfg.base_data} and {cfg.query_data})")

    def prepare(self, cfg, load):
        img, txt = _class_sides(cfg, load)
        labels = torch.as_tensor(img.labels, dtype=torch.int64)
        C = len(img.classes)
        if labels.numel() != img.rows.shape[0]:
            raise DataError(f"{img.path} has {img.rows.shape[0]} rows but its sidecar lists {labels.numel()} "
                            f"labels; {img.fix}")
        require_distinct(img.rows, str(img.path), img.fix)
        require_distinct(txt.rows, str(txt.path), txt.fix)
        counts = torch.bincount(labels, minlength=C)
        if (counts == 0).any():
            missing = [img.classes[i] for i in torch.nonzero(counts == 0).flatten().tolist()][:3]
            raise DataError(f"{img.path}: classes {missing} have no image rows; re-extract the dataset")
        if cfg.base_samples >= C:
            raise DataError(f"--b {cfg.base_samples} anchor classes leave no class to match: {cfg.base_data} "
                            f"has {C} classes; lower --b")
        protos = prototypes(img.rows, labels, C)
        require_distinct(protos, f"{img.path} (its class means)", img.fix)
        return ClassesState(img.rows, labels, counts, protos, txt.rows, image_is_source=cfg.source == img.side)

    @staticmethod
    def _orient(state, img_b, img_q, txt_b, txt_q, device):
        parts = (img_b, txt_b, img_q, txt_q) if state.image_is_source else (txt_b, img_b, txt_q, img_q)
        return [p.to(device) for p in parts]

    def draw(self, state: ClassesState, cfg, seed, device):
        anchors, queries = legacy_class_draw(seed, state.n_classes, cfg.base_samples)
        a, q = torch.as_tensor(anchors), torch.as_tensor(queries)
        sb, tb, sq, tq = self._orient(state, state.protos[a], state.protos[q], state.text[a], state.text[q],
                                      device)
        weights = state.counts[q].double()

        def score(assignment):
            correct = torch.as_tensor(np.asarray(assignment) == np.arange(len(q)))
            return {"image_acc": float((weights * correct).sum() / weights.sum())}

        return Draw(sb, tb, sq, tq, score)


class Classify(Classes):
    """An unsupervised classifier: k-means clusters of the query images take the place of prototypes."""
    name = "classify"
    description = "k-means clusters of the query images vs class names"

    def draw(self, state: ClassesState, cfg, seed, device):
        from sklearn.cluster import KMeans
        anchors, queries = legacy_class_draw(seed, state.n_classes, cfg.base_samples)
        a, q = torch.as_tensor(anchors), torch.as_tensor(queries)
        in_query = torch.isin(state.labels, q)
        rows, lab = state.img_rows[in_query], state.labels[in_query]
        k = len(queries)
        km = KMeans(n_clusters=k, random_state=seed, n_init=10).fit(rows.cpu().numpy())
        # the best one-to-one assignment of clusters to query classes (most shared images) defines the
        # "true" partner of each cluster; clusters are reordered so that position i pairs with class i
        pos = {int(c): i for i, c in enumerate(queries)}
        contingency = np.zeros((k, k))
        np.add.at(contingency, (km.labels_, [pos[int(c)] for c in lab]), 1)
        cl, cls = linear_assignment(contingency, maximize=True)
        cluster_at = np.empty(k, dtype=np.int64)
        cluster_at[cls] = cl
        centres = torch.as_tensor(km.cluster_centers_[cluster_at], dtype=rows.dtype)
        sb, tb, sq, tq = self._orient(state, state.protos[a], centres, state.text[a], state.text[q], device)
        position_of_cluster = np.argsort(cluster_at)        # cluster id -> its query position
        image_pos = position_of_cluster[km.labels_]        # each query image's cluster position
        true_pos = np.array([pos[int(c)] for c in lab])
        image_is_source = state.image_is_source

        def score(assignment):
            assignment = np.asarray(assignment)
            if image_is_source:   # cluster position p is matched to class position assignment[p]
                predicted = assignment[image_pos]
            else:                 # class position i is matched to cluster position assignment[i]
                predicted = np.argsort(assignment)[image_pos]
            return {"image_acc": float(np.mean(predicted == true_pos))}

        return Draw(sb, tb, sq, tq, score)


def _class_sides(cfg, load):
    """(image side, text side) of a classification dataset, checked to share classes."""
    sides = [load(cfg.base_data, s) for s in (cfg.source, cfg.target)]
    by_mod = {s.side.modality: s for s in sides}
    img, txt = by_mod["img"], by_mod["text"]
    for s in (img, txt):
        if s.classes is None:
            raise DataError(f"{s.path} has no class list in its sidecar: it is not a classification dataset. "
                            f"Extract it with get_embeds.py --d {s.dataset} --images ROOT (an ImageFolder tree)")
    if img.labels is None:
        raise DataError(f"{img.path}: its sidecar has no per-image labels; re-extract it with get_embeds.py")
    if list(img.classes) != list(txt.classes):
        diff = [c for c in img.classes if c not in txt.classes][:3] or [c for c in txt.classes
                                                                         if c not in img.classes][:3]
        raise DataError(f"{img.path} and {txt.path} hold different class lists ({len(img.classes)} vs "
                        f"{len(txt.classes)} classes{', e.g. ' + repr(diff) if diff else ', other order'}); "
                        f"extract both from the same ImageFolder root and classes file")
    if txt.rows.shape[0] != len(txt.classes):
        raise DataError(f"{txt.path} has {txt.rows.shape[0]} rows for {len(txt.classes)} classes; re-extract it")
    return img, txt


# ----------------------------------------------------------------------------------------------------------
# probe: one side's rows against their class labels
# ----------------------------------------------------------------------------------------------------------

@dataclass
class ProbeState:
    rows: torch.Tensor                 # N x D, the file's rows (row perturbations are applied per seed)
    labels: np.ndarray                 # N class indices


PROBE_ACC = ScoreColumn("probe_acc", "probe accuracy")


class Probe(Task):
    """A linear probe of one side on a classification dataset (``src/probe.py``): downstream performance."""
    name = "probe"
    description = (f"linear probe of each --target on --base_data's class labels ({FOLDS} stratified folds a "
                   f"seed; no --source, no --m)")
    sides = 1
    columns = (PROBE_ACC,)
    refuses = ()

    def check(self, cfg):
        if cfg.source is not None:
            raise UsageError(f"--task probe takes one side: name it with --target (got --source {cfg.source})")
        if cfg.stretch:
            raise UsageError("--task probe standardises every dimension on each fold's training rows already: "
                             "drop -str")
        if cfg.permutations:
            raise UsageError("--task probe has no alignment metrics to shuffle: drop --permutations")

    def prepare(self, cfg, load):
        side = load(cfg.base_data, cfg.target)
        if side.labels is None:
            raise DataError(f"{side.path} has no per-row class labels in its sidecar, so it cannot be probed: "
                            f"give --base_data a classification dataset's image side (get_embeds.py --d NAME "
                            f"--images ROOT, an ImageFolder tree)")
        labels = np.asarray(side.labels)
        counts = np.bincount(labels)
        counts = counts[counts > 0]
        if len(counts) < 2:
            raise DataError(f"{side.path}: every row has one class label, so a probe has nothing to tell apart; "
                            f"probe a dataset of at least two classes")
        if counts.min() < FOLDS:
            raise DataError(f"{side.path}: a class has only {counts.min()} row(s), fewer than the probe's {FOLDS} "
                            f"folds; use a dataset with at least {FOLDS} images a class")
        return ProbeState(side.rows, labels)

    def score(self, state: ProbeState, cfg, seed, device):
        rows = perturb_pool(state.rows, cfg.target, seed, 1, 0)
        return {"probe_acc": probe_accuracy(rows, state.labels, seed)}


# ----------------------------------------------------------------------------------------------------------
# blind: no anchors at all
# ----------------------------------------------------------------------------------------------------------
# --task blind: N paired items per seed, matched with no pair known (no anchors), scored against the truth.
#
# Two kinds of data:
#
# - paired rows (captions of two languages, captions and images, perturbed sides): the rows of the same image id
#   (``sides.pair_rows``); each seed draws N of them uniformly, ``np.random.default_rng(seed)``;
# - a classification dataset (both sides' sidecars list classes, one side images, the other class names): N
#   classes drawn per seed; a class's image item is the mean of a seeded random half of its images (itsamatch's
#   protocol), its text item the class-name row.
#
# The draw has no anchors (``--b 0``: the only value accepted, so no row hides a pair). The truth (row i of the
# source queries pairs with row i of the target queries) enters only the scorer, never a solver; the scorer's
# kernels, the truth's objective and the oracle are computed once per draw and shared by every method:
#
# - ``objective_ratio``: f(assignment) / f(truth) on the linear kernel (centred cosine, ``blind.linear_kernel``),
#   f(p) = trace(A P B P^T), whatever kernel the method searched on;
# - ``beats_truth``: 1 when that ratio exceeds 1 (the objective prefers a wrong matching: the signal, not the
#   solver, limits accuracy there);
# - ``oracle_acc``: accuracy of the 2-swap local optimum reached from the truth (``blind.local_search``): the
#   accuracy this objective allows near the truth.

MIN_ITEMS = 3   # two items have one matching besides the truth: nothing to search


@dataclass
class BlindState:
    source: torch.Tensor               # paired rows (N x D): row i pairs with target row i; or class text/image
    target: torch.Tensor
    labels: Optional[torch.Tensor]     # classes: the image rows' class indices (None for paired rows)
    image_is_source: bool = False
    what: str = "paired rows"

    @property
    def classes(self):
        return self.labels is not None

    @property
    def items(self):
        return int(self.labels.max()) + 1 if self.classes else self.source.shape[0]

    @property
    def dims(self):
        return self.source.shape[1], self.target.shape[1]


def blind_scorer(sq, tq):
    """The scorer of one draw: assignment (source i -> target j) -> {objective_ratio, beats_truth, oracle_acc}.
    Kernels, f(truth) and the oracle are computed at the first call and kept for every later method."""
    cache = {}

    def score(assignment):
        if not cache:
            A, B = linear_kernel(sq), linear_kernel(tq)
            n = len(A)
            truth = objective(A, B, np.arange(n))
            oracle, _ = local_search(A, B, np.arange(n))
            cache.update(A=A, B=B, truth=truth, oracle=float(np.mean(oracle == np.arange(n))))
        ratio = objective(cache["A"], cache["B"], np.asarray(assignment)) / cache["truth"]
        return {"objective_ratio": ratio, "beats_truth": int(ratio > 1), "oracle_acc": cache["oracle"]}

    return score


class Blind(Task):
    """N items a seed matched with no anchors: paired rows, or class names against class prototypes."""
    name = "blind"
    description = "N = --q pairs a seed matched with no anchors (--b 0): --m blind, qap, gw, exact, rosetta"
    uses = frozenset({"query_samples"})
    columns = (ScoreColumn("objective_ratio", "objective / the truth's objective"),
               ScoreColumn("beats_truth", "share of seeds whose objective beats the truth's"),
               ScoreColumn("oracle_acc", "accuracy of the local optimum next to the truth"))
    anchors = False

    def check(self, cfg):
        if cfg.base_samples != 0:
            raise UsageError(f"--task blind matches with no anchors: give --b 0 (got --b {cfg.base_samples})")
        if cfg.query_samples < MIN_ITEMS:
            raise UsageError(f"--task blind: --q {cfg.query_samples} is too few items to match blind; give at "
                             f"least {MIN_ITEMS}")
        if cfg.base_data != cfg.query_data:
            raise UsageError(f"--task blind draws from one dataset: give the same --base_data and --query_data "
                             f"(got {cfg.base_data} and {cfg.query_data})")
        method = get_method(cfg.method)
        if not getattr(method, "anchor_free", False):
            free = [n for n, m in METHODS.items() if getattr(m, "anchor_free", False)]
            raise UsageError(f"--m {cfg.method} needs anchors, and --task blind has none; use one of "
                             f"{', '.join(free)}")
        check_size = getattr(method, "check_size", None)
        if check_size is not None:
            check_size(cfg.query_samples)

    def prepare(self, cfg, load):
        s, t = load(cfg.base_data, cfg.source), load(cfg.base_data, cfg.target)
        if s.classes is not None and t.classes is not None:
            state = self._classes(cfg, s, t)
        else:
            sp, tp, _, _ = pair_rows(s, t)
            for rows, side in ((sp, s), (tp, t)):
                require_distinct(rows, f"{side.path} (the rows paired with the other side)", side.fix)
            state = BlindState(sp, tp, None)
        if cfg.query_samples > state.items:
            raise DataError(f"--q {cfg.query_samples} items, but {cfg.base_data} has only {state.items} "
                            f"{state.what} for {cfg.source} and {cfg.target}; lower --q")
        return state

    @staticmethod
    def _classes(cfg, s, t):
        if {s.side.modality, t.side.modality} != {"img", "text"}:
            raise UsageError(f"--task blind on a classification dataset matches class names to images: one side "
                             f"must be MODEL:img and the other MODEL:text (got {cfg.source} and {cfg.target})")
        for side in (cfg.source, cfg.target):
            if side.perturbation is not None and side.perturbation.stage == ROWS:
                raise UsageError(f"--task blind: {side} names a row perturbation, which applies to paired rows, "
                                 f"not to class prototypes; perturb the inputs instead (get_embeds.py --perturb)")
        img, txt = (s, t) if s.side.modality == "img" else (t, s)
        if list(img.classes) != list(txt.classes) or img.labels is None:
            raise DataError(f"{img.path} and {txt.path} do not hold one class list with per-image labels; extract "
                            f"both from the same ImageFolder root (get_embeds.py --images ROOT)")
        labels = torch.as_tensor(img.labels, dtype=torch.int64)
        if txt.rows.shape[0] != len(txt.classes) or labels.numel() != img.rows.shape[0]:
            raise DataError(f"{img.path} / {txt.path}: rows and sidecars disagree; re-extract them")
        if (torch.bincount(labels, minlength=len(img.classes)) == 0).any():
            raise DataError(f"{img.path}: a class has no image rows; re-extract the dataset")
        require_distinct(txt.rows, str(txt.path), txt.fix)
        image_is_source = s is img
        return BlindState(img.rows if image_is_source else txt.rows, txt.rows if image_is_source else img.rows,
                          labels, image_is_source, "classes")

    def draw(self, state: BlindState, cfg, seed, device):
        rng = np.random.default_rng(seed)
        n = cfg.query_samples
        if state.classes:
            picked = np.sort(rng.choice(state.items, n, replace=False))
            img_rows = state.source if state.image_is_source else state.target
            protos = []
            for c in picked:   # itsamatch's prototype: the mean of a random half of the class's images
                rows = torch.nonzero(state.labels == int(c)).flatten().numpy()
                half = rng.permutation(rows)[:max(1, len(rows) // 2)]
                protos.append(img_rows[torch.as_tensor(half)].double().mean(dim=0))
            protos = torch.stack(protos).to(img_rows.dtype)
            text = (state.target if state.image_is_source else state.source)[torch.as_tensor(picked)]
            sq, tq = (protos, text) if state.image_is_source else (text, protos)
        else:
            sp = perturb_pool(state.source, cfg.source, seed, 0, 0)
            tp = perturb_pool(state.target, cfg.target, seed, 1, 0)
            picked = torch.as_tensor(np.sort(rng.choice(state.items, n, replace=False)))
            sq, tq = sp[picked], tp[picked]
        sq, tq = sq.to(device), tq.to(device)
        sb, tb = sq[:0], tq[:0]            # no anchors
        return Draw(sb, tb, sq, tq, blind_scorer(sq, tq))


TASKS = {t.name: t for t in (Captions(), Classes(), Classify(), Probe(), Blind())}


def score_columns(sides=2):
    """The score columns of the tasks with that many sides, once each, in registry order: sides=2, the columns
    a method's rows fill (one per method in the table); sides=1, the columns of one-sided tasks (one each)."""
    out = {}
    for task in TASKS.values():
        if task.sides != sides:
            continue
        for column in task.columns:
            out.setdefault(column.name, column)
    return list(out.values())

