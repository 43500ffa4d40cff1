"""Model names and sides, parsed once, and the file tag every script builds file names from.

A model name is ``[random:]BASE[@LAYER]``: BASE is a registry name (``efficientnet_lite0``) or a hub id
(``hf:org/x``, ``timm:name``, ``st:name``, ``clip:org/x``, ``openclip:ARCH/PRETRAINED``,
``openclip:hf-hub:org/x``); ``@LAYER`` taps a module of the loaded model
by its ``named_modules()`` path (``@final``, or no ``@``, is the model's usual row); ``random:`` keeps the
architecture and preprocessing with weights freshly initialised after ``torch.manual_seed(0)``.

A side is what one embedding file holds, perhaps perturbed: ``MODEL:MODALITY[:LANG][~KIND:LEVEL]``, parsed from
the right: the ``~`` suffix first (``src/perturb.py``: its kinds and levels), then the language and the modality
(``img`` or ``text``), so ``hf:org/x@blocks.3:img`` stays whole. ``~`` in a side always starts the perturbation.
LANG names a variant of the dataset's text: the side reads the dataset ``{data}-{LANG}`` (a language,
``flickr1k-de``, or a set of class descriptions, ``caltech101-informative``), whose rows pair with ``{data}``'s
images by id or class.

Every name that becomes part of a path (dataset names, languages, run names, the figure's file name) goes
through ``check_path_part``: one rule, so no name can reach outside its folder. Model names go through
``file_tag``, which escapes every character that could.
"""
import re
from dataclasses import dataclass, replace
from typing import Optional

from .errors import UsageError
from .perturb import INPUT, Perturbation, parse_perturbation

FINAL = "final"
RANDOM = "random:"
MODALITIES = ("img", "text")


def check_path_part(value, what="name"):
    """``value`` if it can be one part of a file name, else a UsageError naming ``what`` (e.g. "--base_data").

    The rule: not empty, not ``.`` or ``..``, no ``/``, ``\\``, control characters or surrounding spaces (so it
    cannot name another folder), and not starting with ``-`` (the fix-it commands pass it after a flag).
    """
    text = str(value)
    if (not text or text in (".", "..") or any(c in text for c in "/\\") or text != text.strip()
            or any(ord(c) < 32 or ord(c) == 127 for c in text) or text.startswith("-")):
        raise UsageError(f"{what} {value!r}: a name that becomes part of a file name cannot be empty, . or .., "
                         f"hold / or \\ or control characters, start with - or begin or end with a space; folders "
                         f"go in --data-dir / --results-dir (or --images / --captions)")
    return text


_LANG = re.compile(r"[A-Za-z0-9]+(-[A-Za-z0-9]+)*")  # BCP 47-like tags: de, zh, pt-BR, zh-Hans


@dataclass(frozen=True)
class ModelName:
    base: str                    # registry name or prefixed hub id
    layer: Optional[str] = None  # module path; None is the model's usual row ("final")
    random: bool = False         # weights freshly initialised, not loaded

    @property
    def text(self):
        """The canonical spelling: ``MODEL@final`` and ``MODEL`` are one name."""
        return (RANDOM if self.random else "") + self.base + (f"@{self.layer}" if self.layer else "")

    def at(self, layer):
        """The same model tapped at another layer (``final`` or None: the usual row)."""
        return ModelName(self.base, None if layer in (None, FINAL) else layer, self.random)

    def __str__(self):
        return self.text


def parse_model(name) -> ModelName:
    """``[random:]BASE[@LAYER]`` -> ModelName. Only the syntax is checked here; whether BASE is known
    and LAYER exists is the encoder registry's business."""
    if isinstance(name, ModelName):
        return name
    text = str(name).strip()
    random = text.startswith(RANDOM)
    if random:
        text = text[len(RANDOM):]
    base, at, layer = text.partition("@")
    if not base or (at and not layer) or "@" in layer:
        raise UsageError(f"model {name!r}: write [random:]MODEL[@LAYER], e.g. efficientnet_lite0@_blocks.8 "
                         f"or random:efficientnet_lite0")
    return ModelName(base, None if layer in ("", FINAL) else layer, random)


# Characters kept as they are in file names; ':' and '/' get readable stand-ins; everything else,
# and the stand-ins themselves when they occur in a name, is %-escaped, so distinct names never share
# a file name.
_SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@")
_STAND_INS = {":": "~", "/": "+"}


def _escape(text):
    out = []
    for ch in text:
        if ch in _SAFE:
            out.append(ch)
        elif ch in _STAND_INS:
            out.append(_STAND_INS[ch])
        else:
            out.append("".join(f"%{b:02X}" for b in ch.encode("utf-8")))
    return "".join(out)


def file_tag(name):
    """The model part of a file name, one function for every script.

    ``efficientnet_lite0`` -> ``efficientnet_lite0``; ``efficientnet_lite0@final`` -> the same;
    ``hf:facebook/dinov2-small@encoder.layer.6`` -> ``hf~facebook+dinov2-small@encoder.layer.6``;
    ``random:efficientnet_lite0@_blocks.8`` -> ``random~efficientnet_lite0@_blocks.8``.
    ``openclip:ViT-B-32/laion2b_s34b_b79k`` -> ``openclip~ViT-B-32+laion2b_s34b_b79k``.
    Injective: ``~``, ``+``, ``%`` and any other character outside ``[A-Za-z0-9._-@]`` in a name are
    written as ``%XX``.
    """
    return _escape(parse_model(name).text)


# Dataset names keep every character but these three, so that the names that worked before (flickr1k,
# flickr1k-de, caltech101, a name with a space) keep their files; ':' (tv:CIFAR100) is not safe in file names.
_DATASET_ESCAPES = {"%": "%25", "~": "%7E", ":": "~"}


def dataset_tag(dataset):
    """The dataset part of a file name: ``tv:Caltech101`` -> ``tv~Caltech101``, ``flickr1k-de`` as it is.
    Injective (``%`` and ``~`` in a name are written ``%25`` and ``%7E``); ``/`` is refused by check_path_part."""
    return "".join(_DATASET_ESCAPES.get(ch, ch) for ch in str(dataset))


def perturbation_tag(perturbation):
    """The file-name part of a perturbation, escaped as model names: ``drop:0.25`` -> ``drop~0.25``."""
    return _escape(parse_perturbation(perturbation).text)


@dataclass(frozen=True)
class Side:
    """One embedding file's worth of rows: a model, a modality, (for text) an optional language, and an optional
    perturbation (a row kind: the file's rows perturbed by run.py; an input kind: a file of its own)."""
    model: str
    modality: str
    lang: Optional[str] = None
    perturbation: Optional[Perturbation] = None

    def __post_init__(self):
        object.__setattr__(self, "model", parse_model(self.model).text)
        if self.modality not in MODALITIES:
            raise UsageError(f"side {self.model}:{self.modality}: the modality must be img or text")
        if self.lang is not None and not _LANG.fullmatch(str(self.lang)):
            raise UsageError(f"side {self.model}:{self.modality}:{self.lang}: a language is letters and digits, "
                             f"parts joined by - (e.g. de, zh, pt-BR); it becomes part of a file name")
        if self.perturbation is not None:
            p = parse_perturbation(self.perturbation)
            object.__setattr__(self, "perturbation", p)
            if p.spec.modality not in (None, self.modality):
                raise UsageError(f"side {self.text}: {p.kind} perturbs "
                                 f"{'captions' if p.spec.modality == 'text' else 'images'}, so it needs a "
                                 f"MODEL:{p.spec.modality} side")

    @property
    def text(self):
        return (f"{self.model}:{self.modality}" + (f":{self.lang}" if self.lang else "")
                + (f"~{self.perturbation.text}" if self.perturbation else ""))

    @property
    def unperturbed(self):
        """The same side without its perturbation."""
        return replace(self, perturbation=None)

    @property
    def file_side(self):
        """The side whose file holds this side's rows: a row perturbation reads the unperturbed file, an input
        perturbation its own."""
        p = self.perturbation
        return self if p is None or p.stage == INPUT else self.unperturbed

    def dataset(self, dataset):
        """The dataset name this side reads: ``flickr1k`` + ``de`` -> ``flickr1k-de``."""
        return f"{dataset}-{self.lang}" if self.lang else dataset

    def __str__(self):
        return self.text


def parse_side(text) -> Side:
    """``MODEL:MODALITY[:LANG][~KIND:LEVEL]`` -> Side, parsed from the right: the perturbation first."""
    if isinstance(text, Side):
        return text
    rest, tilde, perturbation = str(text).rpartition("~")
    if not tilde:
        rest = perturbation
    try:
        perturbation = parse_perturbation(perturbation) if tilde else None
    except UsageError as e:
        raise UsageError(f"side {text!r}: {e}")
    parts = rest.split(":")
    if len(parts) >= 2 and parts[-1] in MODALITIES:
        return Side(":".join(parts[:-1]), parts[-1], perturbation=perturbation)
    if len(parts) >= 3 and parts[-2] in MODALITIES and parts[-1]:
        return Side(":".join(parts[:-2]), parts[-2], parts[-1], perturbation=perturbation)
    raise UsageError(f"side {text!r}: write MODEL:img, MODEL:text or MODEL:text:LANG, optionally ~KIND:LEVEL "
                     f"(e.g. minilm:text, efficientnet_lite2:img, use:text:de, mpnet:text~swap:0.5)")
