"""torchvision's classification datasets by name: ``--d tv:NAME`` (tv:CIFAR100, tv:Caltech101, tv:Food101, ...).

Name: ``tv:NAME[:SPLIT][-VARIANT]``. NAME is a class of ``torchvision.datasets``; SPLIT is what ``--split``
gives (``--d tv:CIFAR100 --split test`` and ``--d tv:CIFAR100:test`` are one name, and files and run.py use
the second); VARIANT (after the first ``-``, which no torchvision class or split name holds) is another set
of class texts over the same images (``--d tv:Caltech101-informative --descriptions FILE``), read by run.py
as the side ``MODEL:text:informative`` against ``--base_data tv:Caltech101``.

What one dataset gives (the same ``ClassesDataset`` as an ImageFolder tree, so the class tasks work unchanged):
- rows in the dataset's own index order: row i is ``dataset[i]``, its id is i;
- labels from the dataset's own label list (``targets``, ``y``, ``_labels``, ``labels``, or the labels of
  ``_samples`` / ``samples``), read without decoding images; only a class without any such list is
  iterated (every image decoded once);
- class names from its ``classes`` (or ``categories``) list, a tuple's first name (ImageNet), ``_`` -> space
  as for ImageFolder folders; ``--classes FILE`` maps torchvision's names (or, when it gives none, the label
  indices "0", "1", ...) to other names. Names that are ids rather than words (no letter, WordNet ids such
  as n01440764, two- or three-letter upper-case codes such as Country211's "AD", a numbered prefix such as
  Caltech256's "001.ak47") are refused without --classes.

The root is a plain argument (get_embeds.py takes it from --images or TORCHVISION_ROOT); ``download`` is
torchvision's own (off unless asked for). A failed construction leaves no empty folder behind.
"""
import inspect
import logging
import re
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .datasets import (
    ClassesDataset,
    read_class_names,
    read_descriptions,
    read_templates,
    to_rgb,
)
from .errors import DataError, UsageError

PREFIX = "tv:"
ROOT_VAR = "TORCHVISION_ROOT"
_logger = logging.getLogger(__name__)


# torchvision datasets whose targets are not one class per image, and what they hold instead: refused by name
# before anything is read or downloaded (a download of VOC or Cityscapes is gigabytes of masks never used)
NOT_CLASSES = {
    **dict.fromkeys(("VOCSegmentation", "SBDataset", "Cityscapes"), "segmentation masks"),
    **dict.fromkeys(("VOCDetection", "CocoDetection", "WIDERFace", "Kitti"), "object boxes (detection)"),
    **dict.fromkeys(("CocoCaptions", "Flickr8k", "Flickr30k", "SBU"), "captions in torchvision's own reader"),
    **dict.fromkeys(("Kinetics", "HMDB51", "UCF101", "MovingMNIST"), "video clips"),
    **dict.fromkeys(("KittiFlow", "Sintel", "FlyingChairs", "FlyingThings3D", "HD1K"), "optical flow"),
    **dict.fromkeys(("Kitti2012Stereo", "Kitti2015Stereo", "CarlaStereo", "Middlebury2014Stereo", "CREStereo",
                     "FallingThingsStereo", "SceneFlowStereo", "SintelStereo", "InStereo2k", "ETH3DStereo"),
                    "stereo disparities"),
    **dict.fromkeys(("PhotoTour", "LFWPairs"), "pairs of images (same or not)"),
    "CelebA": "face attributes",
    **dict.fromkeys(("VisionDataset", "DatasetFolder", "ImageFolder"), "whatever a subclass gives (a base class)"),
}
SUPPORTED = ("what is supported: a torchvision classification dataset (tv:CIFAR100, tv:Caltech101, tv:Food101, "
             "...), an ImageFolder tree (--d NAME --images ROOT, a class a sub-folder) or a COCO-format captions "
             "file (--d NAME --images DIR --captions FILE)")


def check_classification(cls_name):
    """UsageError for a torchvision class whose targets are not one class per image (``NOT_CLASSES``)."""
    what = NOT_CLASSES.get(cls_name)
    if what is None:
        return
    if cls_name in ("ImageFolder", "DatasetFolder"):
        raise UsageError(f"tv:{cls_name}: an ImageFolder tree needs no tv: prefix; use --d NAME --images ROOT "
                         f"(a class a sub-folder)")
    hint = (" (its images and captions as a COCO-format file: --d NAME --images DIR --captions FILE)"
            if "captions" in what else "")
    raise UsageError(f"tv:{cls_name} is not supported: it gives {what}, not one class per image nor captions "
                     f"that get_embeds.py reads{hint}; {SUPPORTED}")


def is_tv(name):
    return str(name).startswith(PREFIX)


@dataclass(frozen=True)
class TvName:
    cls: str                 # torchvision.datasets class name
    split: object = None     # str, or None: the class's default
    variant: object = None   # str, or None

    @property
    def text(self):
        """The canonical name (files, sidecars, run.py): ``tv:NAME[:SPLIT][-VARIANT]``."""
        return PREFIX + self.cls + (f":{self.split}" if self.split else "") + \
            (f"-{self.variant}" if self.variant else "")


def parse_tv_name(name, split=None):
    """``tv:NAME[:SPLIT][-VARIANT]`` (and --split) -> TvName. Only the syntax is checked here."""
    body = str(name)[len(PREFIX):]
    head, dash, variant = body.partition("-")
    cls, colon, in_name = head.partition(":")
    if not cls or (colon and not in_name) or (dash and not variant) or ":" in in_name:
        raise UsageError(f"--d {name}: write tv:NAME[:SPLIT][-VARIANT], NAME a torchvision.datasets class "
                         f"(e.g. tv:CIFAR100, tv:Food101:test, tv:Caltech101-informative)")
    if split is not None and in_name and split != in_name:
        raise UsageError(f"--d {name} --split {split}: two splits; give it once")
    return TvName(cls, split or in_name or None, variant or None)


def dataset_class(cls_name):
    """The torchvision.datasets class of that name (UsageError with close names otherwise)."""
    import difflib

    import torchvision.datasets as tvd
    names = [n for n in getattr(tvd, "__all__", dir(tvd)) if isinstance(getattr(tvd, n, None), type)]
    if cls_name not in names:
        close = difflib.get_close_matches(cls_name, names, n=5)
        raise UsageError(f"tv:{cls_name} is not a torchvision.datasets class"
                         + (f"; closest: {', '.join(close)}" if close else "")
                         + " (classification ones: CIFAR10, CIFAR100, Caltech101, Food101, Flowers102, DTD, "
                           "OxfordIIITPet, STL10, EuroSAT, SUN397, ...)")
    return getattr(tvd, cls_name)


def _split_kwargs(cls, name, split):
    """(constructor kwargs for the split, the split recorded in the sidecar)."""
    params = inspect.signature(cls.__init__).parameters
    if "split" in params:
        default = params["split"].default
        chosen = split if split is not None else default
        return ({"split": split} if split is not None else {}), (None if chosen is inspect.Parameter.empty
                                                                 else chosen)
    if "train" in params:
        if split not in (None, "train", "test"):
            raise UsageError(f"tv:{name} takes --split train or test (torchvision's train=True / False)")
        train = params["train"].default if split is None else split == "train"
        return ({"train": train} if split is not None else {}), "train" if train else "test"
    if split is not None:
        raise UsageError(f"tv:{name} has no splits (torchvision's {name} takes no split or train argument); "
                         f"drop --split")
    return {}, None


def _new_entries(root, before):
    return [p for p in Path(root).iterdir() if p.name not in before] if Path(root).is_dir() else []


def _remove_empty_dirs(paths):
    """rmdir the empty folders (bottom up) among paths that a failed construction created."""
    for top in paths:
        if not top.is_dir():
            continue
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            try:
                d.rmdir()
            except OSError:
                pass
        try:
            top.rmdir()
        except OSError:
            pass


def open_tv_dataset(tv, root, download=False):
    """The torchvision dataset object (transform None: PIL images) and the split it reads."""
    check_classification(tv.cls)
    cls = dataset_class(tv.cls)
    params = inspect.signature(cls.__init__).parameters
    required = [n for n, q in params.items() if n not in ("self", "root") and q.default is inspect.Parameter.empty
                and q.kind not in (q.VAR_POSITIONAL, q.VAR_KEYWORD)]
    if "split" in required:  # EMNIST: --split gives it
        if tv.split is None:
            raise UsageError(f"tv:{tv.cls} has no default split: pass --split (torchvision's {tv.cls} split argument)")
        required.remove("split")
    if "root" in params and required:
        raise UsageError(f"tv:{tv.cls} is not supported: torchvision's {tv.cls} needs {', '.join(required)} "
                         f"besides its root, which get_embeds.py does not give; {SUPPORTED}")
    if "root" not in params:  # FakeData: its first argument is a size, not a folder
        raise UsageError(f"tv:{tv.cls} reads no files (torchvision's {tv.cls} takes no root folder), so it has no "
                         f"images to embed; use a torchvision dataset of files (tv:CIFAR100, tv:Caltech101, ...)")
    kwargs, split = _split_kwargs(cls, tv.cls, tv.split)
    # EMNIST passes download on to MNIST through **kwargs
    can_download = "download" in params or (any(q.kind == q.VAR_KEYWORD for q in params.values())
                                            and callable(getattr(cls, "download", None)))
    if download:
        if not can_download:
            raise UsageError(f"tv:{tv.cls} cannot download (torchvision's {tv.cls} has no download argument); "
                             f"place its files under the root by hand (see torchvision's documentation of "
                             f"{tv.cls}) and drop --download")
        kwargs["download"] = True
    root = Path(root)
    fetch = (f"pass --download to let torchvision fetch it from its public source into {root}, or "
             if can_download else
             f"place its files under {root} by hand (torchvision's {tv.cls} cannot download them), or ")
    how = (fetch + f"point --images (or {ROOT_VAR}) at the folder that holds it") if not download else (
        f"no network here? download it where there is one, copy it under {root} and re-run without --download")
    made_root = not root.exists()  # torchvision creates the root it downloads into
    if not root.is_dir() and not download:
        raise DataError(f"tv:{tv.cls}: the root {root} does not exist; {how}")
    before = {p.name for p in root.iterdir()} if root.is_dir() else set()
    try:
        return cls(str(root), **kwargs), split
    except ValueError as e:
        if "split" in str(e) or "train" in str(e):
            raise UsageError(f"tv:{tv.cls} --split {tv.split}: {e}")
        _cleanup(root, before, made_root)
        raise DataError(f"tv:{tv.cls}: {_cannot(download, root)} ({type(e).__name__}: {e}); {how}")
    except (RuntimeError, OSError, KeyError, IndexError, EOFError, tarfile.TarError, zipfile.BadZipFile) as e:
        _cleanup(root, before, made_root)
        raise DataError(f"tv:{tv.cls}: {_cannot(download, root)} ({type(e).__name__}: {str(e)[:200]}); {how}")


def _cannot(download, root):
    return f"torchvision could not download it into {root}" if download else \
        f"torchvision cannot read it under {root}"


def _cleanup(root, before, made_root):
    """What a failed construction created: its empty folders, and the root itself when it made it."""
    _remove_empty_dirs(_new_entries(root, before))
    if made_root:
        _remove_empty_dirs([root])


def dataset_labels(ds):
    """The label of every row, in index order, from the dataset's own list when it keeps one."""
    n = len(ds)
    for attr in ("targets", "y", "_labels", "labels"):
        v = getattr(ds, attr, None)
        if v is not None and not isinstance(v, (str, dict)) and len(v) == n:
            return [int(x) for x in v]
    for attr in ("_samples", "samples", "imgs"):
        v = getattr(ds, attr, None)
        if v is not None and len(v) == n and all(isinstance(s, (tuple, list)) and len(s) == 2 for s in v):
            return [int(s[1]) for s in v]
    _logger.info("%s keeps no label list: reading every item once for its label", type(ds).__name__)
    labels = []
    for i in range(n):
        target = ds[i][1]
        if not isinstance(target, int) and not (hasattr(target, "ndim") and target.ndim == 0):
            raise DataError(f"{type(ds).__name__} gives targets of type {type(target).__name__}, not class "
                            f"indices: it is not a classification dataset")
        labels.append(int(target))
    return labels


def tv_class_names(ds):
    """torchvision's class names in label order (a tuple's first name), or None when it gives none."""
    for attr in ("classes", "categories"):
        v = getattr(ds, attr, None)
        if v is not None and len(v) and not isinstance(v, (str, dict)):
            return [str(x[0]) if isinstance(x, (tuple, list)) else str(x) for x in v]
    return None


def unreadable(name):
    """A class name that is an id rather than a word (see the module docstring)."""
    name = name.strip()
    return (not re.search(r"[A-Za-z]", name) or re.fullmatch(r"n\d{8}", name) is not None
            or re.fullmatch(r"[A-Z]{2,3}", name) is not None or re.match(r"\d+\.", name) is not None)


@dataclass
class TvClassesDataset(ClassesDataset):
    """A torchvision classification dataset as a ClassesDataset: ``source`` is the torchvision object,
    ``paths`` and ``folders`` are None, ``ids`` the row indices."""
    source: object = None
    split: object = None

    def open_image(self, i):
        image = self.source[i][0]
        if not hasattr(image, "mode"):  # a tensor or an array rather than a PIL image
            import numpy as np
            from PIL import Image
            image = Image.fromarray(np.asarray(image))
        return to_rgb(image)

    def describe_image(self, i):
        return f"{self.name} index {i}"

    def sidecar_fields(self, modality):
        return dict(super().sidecar_fields(modality), split=self.split)


def load_tv_dataset(name, root, split=None, download=False, classes_file=None, templates_file=None,
                    descriptions_file=None):
    """``tv:NAME[:SPLIT][-VARIANT]`` under root -> TvClassesDataset named by its canonical name."""
    tv = parse_tv_name(name, split)
    templates = read_templates(templates_file)
    ds, split = open_tv_dataset(tv, root, download)
    labels = dataset_labels(ds)
    raw = tv_class_names(ds)
    n_classes = len(raw) if raw is not None else (max(labels) + 1 if labels else 0)
    if labels and (min(labels) < 0 or max(labels) >= n_classes):
        raise DataError(f"tv:{tv.cls}{f' split {split}' if split else ''}: labels outside 0..{n_classes - 1} "
                        f"(e.g. STL10's unlabelled split): not a split with classes")
    keys = raw if raw is not None else [str(c) for c in range(n_classes)]
    what = "torchvision class name" if raw is not None else "label index"
    if classes_file is None:
        bad = [k for k in keys if unreadable(k)] if raw is not None else keys
        if bad:
            given = (f"gives class names that are ids, not words ({', '.join(repr(b) for b in bad[:3])})"
                     if raw is not None else "gives no class names")
            raise UsageError(f"tv:{tv.cls}: torchvision {given}; pass --classes FILE, a json object mapping each "
                             f"{what} ({', '.join(repr(k) for k in keys[:3])}, ...) to the class name to "
                             f"prompt with")
    names = read_class_names(classes_file, keys, keys=what)
    descriptions, digest = read_descriptions(descriptions_file, names) if descriptions_file else (None, None)
    return TvClassesDataset(
        TvName(tv.cls, split if tv.split else None, tv.variant).text, Path(root),
        Path(classes_file) if classes_file else None, None, names, list(range(len(labels))), None, labels,
        templates, Path(templates_file) if templates_file else None, {}, descriptions,
        Path(descriptions_file) if descriptions_file else None, digest, source=ds, split=split)
