"""Perturbations of a side, by level: what each kind does, its level's range, and the functions that apply it.

A side names one with a suffix, ``MODEL:MODALITY[:LANG]~KIND:LEVEL`` (``src/names.py``); ``~KIND:0`` is its own
configuration with the unperturbed numbers. Two stages:

- **row** kinds (``swap``, ``noise``, ``mix``), applied by run.py to the side's paired rows after loading, before
  each seed's draw (``perturb_rows``: the whole paired pool, so anchors and queries alike; when anchors and
  queries come from two datasets, each pool on its own), seeded by the run's seed; the truth pairing (row i of
  one side with row i of the other) is unchanged:

  - ``swap:p``: m = round(p n) rows, chosen uniformly (the first m of a seeded permutation of the n rows, so a
    higher level swaps a superset), get the row of another chosen row: a uniformly random derangement among
    them. m = 1 is raised to 2 (one row cannot swap with itself).
  - ``noise:s``: plus Gaussian noise of standard deviation s x the pool's entry standard deviation
    (``rows.std()`` over all n x d entries); one seeded N(0, 1) matrix, scaled by s.
  - ``mix:u``: row i becomes (1 - u) x row i + u x row pi(i), pi a seeded uniformly random derangement of the
    n rows (the same for every level): information the other side does not share, added at level u.

- **input** kinds, applied by get_embeds.py to the inputs (``--perturb KIND:LEVEL [--perturb-seed N]``), which
  writes them to their own file (``files.side_file``), its sidecar recording kind, level and seed:

  - ``drop:p`` (captions): each whitespace-separated word dropped with probability p, at least one kept (a
    uniformly chosen one when all would go); the kept words joined by single spaces.
  - ``shuffle:p`` (captions): m = round(p x words) positions of each caption (m = 1 raised to 2) chosen
    uniformly, their words permuted by a uniformly random derangement.
  - ``blur:sigma`` (images): Gaussian blur of the model's input tensor (after its resize, crop and
    normalisation; blur is linear and keeps constants, so it commutes with the per-channel normalisation),
    sigma in pixels of that input, kernel 2 ceil(3 sigma) + 1 wide (at most the input's size), reflected
    edges (torchvision's ``gaussian_blur``).
  - ``patches:k`` (images): the model's input cut into a k x k grid of (H // k) x (W // k) patches, shuffled
    by a uniformly random permutation (the last H mod k rows and W mod k columns stay in place).

  Level 0 (``patches:1``) leaves every input as it is. A caption's randomness is seeded by (seed, row, caption),
  an image's by (seed, row): a row's perturbation does not depend on batching, chunks or ranks.

The kinds are the rows of ``KINDS`` (at the end of this module), each with its apply function and its one-line
definition (``Kind.meaning``: --help, messages and docs/usage.md's table). Adding a kind: its function (rows,
captions or images, as ``Kind`` states) and one row; its plain definition goes into tests/test_perturb.py's ``PLAIN``.

Seeds: NumPy ``default_rng`` of a tuple of non-negative integers (the run's seed, then which side and which
pool, so two perturbed sides of one configuration never share their draws).
"""
import math
import re
from dataclasses import dataclass
from typing import Callable, Optional, Union

import numpy as np
import torch

from .errors import UsageError

ROWS, INPUT = "rows", "input"


@dataclass(frozen=True)
class Kind:
    """One perturbation kind: a registry row. ``apply`` takes what the kind perturbs and its level:

    - a row kind (stage ROWS): ``apply(rows, level, gen)``, rows an N x D tensor of one pool, gen a NumPy
      generator -> N x D tensor;
    - a caption kind (stage INPUT, modality "text"): ``apply(caption, level, gen)`` -> caption (str), gen
      seeded by (seed, row, caption);
    - an image kind (stage INPUT, modality "img"): ``apply(x, level, rows, seed)``, x a batch of model inputs
      (B x C x H x W float), rows their dataset rows -> batch (draw per row from ``rng(seed, row)``).

    Level ``low`` is the identity: the callers return their input unchanged without calling ``apply``."""

    name: str
    stage: str                 # ROWS (run.py) or INPUT (get_embeds.py)
    modality: Optional[str]    # the only modality it applies to; None: any
    level: str                 # the level's symbol, for messages
    low: float                 # the level's range [low, high] (high None: unbounded)
    high: Optional[float]
    whole: bool                # the level is a whole number
    meaning: str               # one line for --help, messages and the docs table
    apply: Callable = None     # see above

    @property
    def applies_to(self):
        """What ``apply`` takes: "rows", "captions" or "images"."""
        return "rows" if self.stage == ROWS else {"text": "captions", "img": "images"}[self.modality]


_NUMBER = re.compile(r"-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


@dataclass(frozen=True)
class Perturbation:
    kind: str
    level: Union[float, int]

    @property
    def spec(self) -> Kind:
        return KINDS[self.kind]

    @property
    def stage(self):
        return self.spec.stage

    @property
    def is_identity(self):
        """Level 0 (patches: 1): every row and input as it is."""
        return self.level == self.spec.low

    @property
    def text(self):
        """``KIND:LEVEL`` with the level written one way (``swap:.50`` -> ``swap:0.5``, ``swap:1.0`` -> ``swap:1``)."""
        if self.spec.whole:
            return f"{self.kind}:{int(self.level)}"
        level = repr(float(self.level))
        return f"{self.kind}:{level[:-2] if level.endswith('.0') else level}"

    def record(self, seed=None):
        """What an embeddings sidecar records of an input perturbation."""
        return {"kind": self.kind, "level": self.level, "seed": seed, "stage": self.stage,
                "meaning": self.spec.meaning}

    def __str__(self):
        return self.text


def _kinds_text(stage=None):
    return ", ".join(f"{k.name}:{k.level}" for k in KINDS.values() if stage in (None, k.stage))


def parse_perturbation(text) -> Perturbation:
    """``KIND:LEVEL`` -> Perturbation, the kind known and the level in its range (UsageError naming both)."""
    if isinstance(text, Perturbation):
        return text
    kind, colon, level = str(text).strip().partition(":")
    if kind not in KINDS:
        raise UsageError(f"perturbation {text!r}: unknown kind {kind!r}; use one of {_kinds_text()} "
                         f"(e.g. mpnet:text~swap:0.5)")
    spec = KINDS[kind]
    if not colon or not _NUMBER.fullmatch(level):
        raise UsageError(f"perturbation {text!r}: write {kind}:{spec.level} with {spec.level} a number "
                         f"(e.g. {kind}:{2 if spec.whole else 0.5})")
    value = float(level)
    if spec.whole:
        if not value.is_integer():
            raise UsageError(f"perturbation {text!r}: {spec.level} must be a whole number >= {spec.low}")
        value = int(value)
    if not math.isfinite(value) or value < spec.low or (spec.high is not None and value > spec.high):
        where = f"in [{spec.low}, {spec.high}]" if spec.high is not None else f">= {spec.low}"
        raise UsageError(f"perturbation {text!r}: {spec.level} = {level} is out of range; {kind}:{spec.level} "
                         f"needs {spec.level} {where}")
    return Perturbation(kind, value)


def parse_input_perturbation(text, modalities=("img", "text")) -> Perturbation:
    """get_embeds.py's ``--perturb``: an input kind of one of the model's modalities."""
    p = parse_perturbation(text)
    if p.stage != INPUT:
        raise UsageError(f"--perturb {text}: {p.kind} is applied by run.py to loaded rows; name it in the side "
                         f"(e.g. run.py --source mpnet:text~{p.text}). get_embeds.py makes the input kinds: "
                         f"{_kinds_text(INPUT)}")
    if p.spec.modality not in modalities:
        raise UsageError(f"--perturb {text}: {p.kind} perturbs {'captions' if p.spec.modality == 'text' else 'images'}"
                         f", but this model makes only {' and '.join(modalities)} rows")
    return p


# ----------------------------------------------------------------------------------------------------------
# Shared draws
# ----------------------------------------------------------------------------------------------------------

def rng(*seeds):
    """A NumPy generator for one stream: (run seed, side, pool) or (seed, row[, caption])."""
    return np.random.default_rng([int(s) for s in seeds])


def derangement(m, gen):
    """A uniformly random permutation of range(m) with no fixed point (rejection: about e draws); m >= 2."""
    while True:
        perm = gen.permutation(m)
        if not (perm == np.arange(m)).any():
            return perm


def swap_draw(n, p, gen):
    """(chosen, source): position chosen[i] takes the item at source[i]. m = round(p n), 1 raised to 2; the
    chosen positions are the first m of one permutation of range(n), so they grow with p."""
    order = gen.permutation(n)
    m = int(math.floor(p * n + 0.5))
    if m == 1:
        m = 2 if n >= 2 else 0
    chosen = order[:m]
    return chosen, chosen[derangement(m, gen)] if m else chosen


# ----------------------------------------------------------------------------------------------------------
# Row kinds
# ----------------------------------------------------------------------------------------------------------

def perturb_rows(rows, perturbation, gen):
    """The rows (N x D tensor) of one pool under a row perturbation; level 0 returns ``rows`` itself."""
    p = parse_perturbation(perturbation)
    if p.stage != ROWS:
        raise ValueError(f"{p} is an input perturbation: its rows are a file of their own")
    if p.is_identity:
        return rows
    return p.spec.apply(rows, p.level, gen)


def swap_rows(rows, p, gen):
    """``swap:p`` of one pool (see the module docstring)."""
    chosen, source = swap_draw(rows.shape[0], p, gen)
    out = rows.clone()
    out[torch.as_tensor(chosen)] = rows[torch.as_tensor(source)]
    return out


def noise_rows(rows, s, gen):
    """``noise:s`` of one pool."""
    z = torch.as_tensor(gen.standard_normal(tuple(rows.shape)), dtype=rows.dtype, device=rows.device)
    return rows + (s * rows.std()) * z


def mix_rows(rows, u, gen):
    """``mix:u`` of one pool."""
    pi = torch.as_tensor(derangement(rows.shape[0], gen), device=rows.device)
    return (1 - u) * rows + u * rows[pi]


def perturb_pool(rows, side, seed, side_index, pool_index=0):
    """One paired pool (N x D) of a side under the side's row perturbation, drawn from
    ``rng(seed, side_index, pool_index)``; rows as they are when the side has none (or an input kind)."""
    p = side.perturbation
    if p is None or p.stage != ROWS:
        return rows
    return perturb_rows(rows, p, rng(seed, side_index, pool_index))


# ----------------------------------------------------------------------------------------------------------
# Input kinds: captions
# ----------------------------------------------------------------------------------------------------------

def drop_words(caption, p, gen):
    """``drop:p`` of one caption (see the module docstring)."""
    words = caption.split()
    if p == 0 or not words:
        return caption
    keep = gen.random(len(words)) >= p
    if not keep.any():
        keep[gen.integers(len(words))] = True
    return " ".join(w for w, k in zip(words, keep) if k)


def shuffle_words(caption, p, gen):
    """``shuffle:p`` of one caption (see the module docstring)."""
    words = caption.split()
    if p == 0 or len(words) < 2:
        return caption
    chosen, source = swap_draw(len(words), p, gen)
    out = list(words)
    for c, s in zip(chosen, source):
        out[c] = words[s]
    return " ".join(out)


def perturb_captions(captions, perturbation, seed):
    """Every caption of a captions dataset (a list of each image's caption list, in row order) under a text
    kind; caption j of row i drawn from ``rng(seed, i, j)``."""
    p = parse_perturbation(perturbation)
    if p.spec.applies_to != "captions":
        raise ValueError(f"{p.kind} is not a caption kind")
    if p.is_identity:
        return [list(caps) for caps in captions]
    f = p.spec.apply
    return [[f(c, p.level, rng(seed, i, j)) for j, c in enumerate(caps)] for i, caps in enumerate(captions)]


# ----------------------------------------------------------------------------------------------------------
# Input kinds: images (B x C x H x W float tensors, the model's input)
# ----------------------------------------------------------------------------------------------------------

def blur_images(x, sigma):
    """``blur:sigma`` of a batch of model inputs."""
    if sigma == 0:
        return x
    from torchvision.transforms.functional import gaussian_blur
    size = 2 * math.ceil(3 * sigma) + 1
    largest = 2 * (min(x.shape[-2:]) - 1) + 1  # reflection pads by size // 2, which must stay inside the input
    size = min(size, largest)
    out = gaussian_blur(x, kernel_size=[size, size], sigma=[float(sigma), float(sigma)])
    return out.contiguous(memory_format=torch.channels_last) if x.is_contiguous(
        memory_format=torch.channels_last) else out


def shuffle_patches(x, k, perms):
    """``patches:k`` of a batch: image b's k x k grid of patches reordered by perms[b] (a permutation of k*k:
    grid cell c takes patch perms[b][c], cells in row-major order)."""
    if k == 1:
        return x
    H, W = x.shape[-2:]
    ph, pw = H // k, W // k
    if ph == 0 or pw == 0:
        raise UsageError(f"patches:{k}: the model's input is only {H} x {W} pixels; use k <= {min(H, W)}")
    out = x.clone()
    grid = x[..., :k * ph, :k * pw]
    # B x C x (k ph) x (k pw) -> B x k*k x C x ph x pw, patches in row-major order
    patches = grid.unflatten(-2, (k, ph)).unflatten(-1, (k, pw)).permute(0, 2, 4, 1, 3, 5).flatten(1, 2)
    idx = torch.as_tensor(np.stack(perms), device=x.device)
    picked = patches[torch.arange(x.shape[0], device=x.device)[:, None], idx]
    back = picked.unflatten(1, (k, k)).permute(0, 3, 1, 4, 2, 5).flatten(2, 3).flatten(3, 4)
    out[..., :k * ph, :k * pw] = back
    return out


def patches_images(x, k, rows, seed):
    """``patches:k`` of a batch, image of dataset row r shuffled by ``rng(seed, r).permutation(k * k)``."""
    return shuffle_patches(x, k, [rng(seed, r).permutation(k ** 2) for r in rows])


def image_perturbation(perturbation, seed):
    """(batch of model inputs B x C x H x W, their dataset rows) -> perturbed batch, for an image kind."""
    p = parse_perturbation(perturbation)
    if p.spec.applies_to != "images":
        raise ValueError(f"{p.kind} is not an image kind")

    def apply(x, rows):
        if not (isinstance(x, torch.Tensor) and x.ndim == 4 and x.is_floating_point()):
            raise UsageError(f"--perturb {p}: this model's input is not a batch of float images (B x C x H x W), "
                             f"so it cannot be perturbed here")
        if p.is_identity:
            return x
        return p.spec.apply(x, p.level, rows, seed)
    return apply


# ----------------------------------------------------------------------------------------------------------
# The registry: one row a kind (adding one: its apply function above and one row here)
# ----------------------------------------------------------------------------------------------------------

KINDS = {k.name: k for k in (
    Kind("swap", ROWS, None, "p", 0, 1, False, "a fraction p of the paired rows get another chosen row's row",
         swap_rows),
    Kind("noise", ROWS, None, "s", 0, None, False, "Gaussian noise of s x the rows' entry standard deviation",
         noise_rows),
    Kind("mix", ROWS, None, "u", 0, 1, False, "(1-u) x own row + u x the row of a random other item", mix_rows),
    Kind("drop", INPUT, "text", "p", 0, 1, False, "each word of a caption dropped with probability p", drop_words),
    Kind("shuffle", INPUT, "text", "p", 0, 1, False, "a fraction p of each caption's words permuted",
         shuffle_words),
    Kind("blur", INPUT, "img", "sigma", 0, None, False, "Gaussian blur of the model's input, sigma in pixels",
         lambda x, sigma, rows, seed: blur_images(x, sigma)),
    Kind("patches", INPUT, "img", "k", 1, None, True, "the model's input cut into k x k patches, shuffled",
         patches_images),
)}


def kinds(stage=None):
    """The registry's kinds of one stage (ROWS or INPUT; None: all), in registry order."""
    return [k for k in KINDS.values() if stage in (None, k.stage)]
