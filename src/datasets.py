"""COCO-format captions datasets: where they are, their row order, their images.

Row order is the contract between the _img and _text files: images sorted by id, each image's captions in
annotation order (torchvision's CocoCaptions order, which the paper used). Every model sees the same rows.

Locations come from flags or environment variables, never from constants:
- coco:   --images DIR --captions FILE, or COCO_ROOT with $COCO_ROOT/val2017/*.jpg and
          $COCO_ROOT/annotations/captions_val2017.json
- nocaps: --images DIR --captions FILE, or NOCAPS_ROOT with $NOCAPS_ROOT/validation/*.jpg and
          $NOCAPS_ROOT/nocaps_val_4500_captions.json
- any other name: --images DIR --captions FILE (a COCO captions json: images[] and annotations[]).

Classification datasets (``ClassesDataset``, at the end): any name, --images ROOT of an ImageFolder tree
and no --captions; optionally --classes FILE (json folder -> class name) and --templates FILE, or
--descriptions FILE (json class name -> sentences); torchvision's datasets by name (``tv:NAME``) are
read by ``src/tvdatasets.py`` into the same type.

Every dataset type opens row i's image with ``open_image(i)`` (8-bit RGB PIL) and names it in messages
with ``describe_image(i)``.
"""
import contextlib
import json
import logging
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from .errors import DataError, UsageError, reason

KNOWN = {
    "coco": ("COCO_ROOT", "val2017", "annotations/captions_val2017.json"),
    "nocaps": ("NOCAPS_ROOT", "validation", "nocaps_val_4500_captions.json"),
}


def resolve_locations(dataset, images=None, captions=None):
    """(images dir, captions file) from the flags, else from the dataset's environment variable."""
    if dataset in KNOWN:
        var, img_sub, cap_sub = KNOWN[dataset]
        root = os.environ.get(var)
        if root:
            images = images or os.path.join(root, img_sub)
            captions = captions or os.path.join(root, cap_sub)
        if images is None or captions is None:
            raise UsageError(f"dataset {dataset!r}: pass --images DIR and --captions FILE, or set {var} "
                             f"(layout: ${var}/{img_sub}/ and ${var}/{cap_sub})")
    elif images is None or captions is None:
        raise UsageError(f"dataset {dataset!r} is not coco or nocaps: pass --images DIR and --captions FILE "
                         f"(a COCO-format captions json)")
    images, captions = Path(images), Path(captions)
    if images.is_file():
        raise DataError(f"--images {images} is a file: pass the folder that holds the images")
    if captions.is_dir():
        raise DataError(f"--captions {captions} is a folder: pass the COCO-format captions json file")
    if not images.is_dir():
        raise DataError(f"images folder {images} does not exist (--images"
                        + (f" or {KNOWN[dataset][0]})" if dataset in KNOWN else ")"))
    if not captions.is_file():
        raise DataError(f"captions file {captions} does not exist (--captions"
                        + (f" or {KNOWN[dataset][0]})" if dataset in KNOWN else ")"))
    return images, captions


@dataclass
class CaptionsDataset:
    """One row per image: ids sorted ascending, file paths, captions in annotation order."""
    name: str
    image_dir: Path
    captions_file: Path
    ids: list
    paths: list
    captions: list
    dropped: dict = field(default_factory=dict)   # image id -> reason, with --skip-missing
    dropped_files: tuple = ()                      # their image files, relative to image_dir

    def __len__(self):
        return len(self.ids)

    def open_image(self, i):
        return open_rgb(self.paths[i])

    def describe_image(self, i):
        return str(self.paths[i])


def _check_image(path, full):
    """None if the image can be used, else why not. full=True decodes it completely."""
    if not path.is_file():
        return "missing"
    try:
        with Image.open(path) as im:
            if full:
                im.load()
    except Exception as e:  # PIL raises many types for bad files
        return f"undecodable ({type(e).__name__})"
    return None


def load_dataset(name, images=None, captions=None, skip_missing=False, classes=None, templates=None,
                 descriptions=None):
    """Read a COCO-format captions file and check its images (or, without captions, an ImageFolder tree:
    see ``load_classes_dataset``).

    Without skip_missing, a missing or undecodable image, or an image without captions, is a DataError
    naming it. With skip_missing such images are dropped (the same rows for every model, since the check
    does not depend on the model) and listed in ``dropped``; images are then fully decoded to check.
    An empty caption ("" or only spaces) would be embedded as if it were one: without skip_missing it is a
    DataError listing the image ids, with skip_missing it is left out (an image left with no caption is
    dropped). A caption that is not text (null, a number) is always a DataError.
    """
    if is_classification(name, images, captions, classes, templates, descriptions):
        return load_classes_dataset(name, images, classes, templates, skip_missing, descriptions)
    image_dir, captions_file = resolve_locations(name, images, captions)
    # read once, here (``load_json`` sees repeated keys, which pycocotools' json.load would drop), then indexed
    # by pycocotools as its constructor indexes a file it reads
    try:
        data, repeated = load_json(Path(captions_file).read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}, not an object with images[] and annotations[]")
    except (OSError, ValueError) as e:
        raise DataError(f"{captions_file} is not a readable COCO captions file ({reason(e)})")
    if repeated:
        raise DataError(f"{captions_file} lists the key(s) {_examples(sorted(set(map(str, repeated))))} more than "
                        f"once in one object (JSON keeps only the last, so e.g. a second \"annotations\" would "
                        f"replace the first); merge them into one")
    try:
        from pycocotools.coco import COCO
        coco = COCO()
        coco.dataset = data
        with contextlib.redirect_stdout(sys.stderr):  # createIndex() prints progress to stdout
            coco.createIndex()
    except Exception as e:
        raise DataError(f"{captions_file} is not a readable COCO captions file ({reason(e)})")
    _check_caption_types(coco, captions_file)
    listed = [i.get("id") if isinstance(i, dict) else None for i in coco.dataset.get("images", [])]
    if len(listed) != len(coco.imgs):  # pycocotools keeps the last entry of a repeated id, silently
        repeated = [i for i, n in Counter(map(str, listed)).items() if n > 1]
        raise DataError(f"{captions_file}: images[] lists image id(s) {_examples(repeated, key=str)} more than "
                        f"once; give each image one entry (its captions refer to it by id)")
    ids, paths, caps, dropped, empty, dropped_files = [], [], [], {}, {}, []
    for img_id in sorted(coco.imgs, key=_id_order):
        info = coco.imgs[img_id]
        if not isinstance(info, dict) or not isinstance(info.get("file_name"), str):
            raise DataError(f"{captions_file}: image id {img_id} has no file_name (a string); fix the captions "
                            f"json (COCO format: images[] of {{id, file_name}})")
        path = image_dir / info["file_name"]
        texts = [a["caption"] for a in coco.imgToAnns.get(img_id, [])]
        blank = [t for t in texts if not t.strip()]
        if blank:
            empty[img_id] = len(blank)
            texts = [t for t in texts if t.strip()] if skip_missing else texts
        problem = None if texts else ("no captions" if not blank else "only empty captions")
        problem = problem or _check_image(path, full=skip_missing)
        if problem:
            if not skip_missing:
                raise DataError(f"image id {img_id} ({path}): {problem}. Fix the file or the captions json, "
                                f"or pass --skip-missing to drop such images from both modalities alike")
            dropped[img_id] = f"{info['file_name']}: {problem}"
            dropped_files.append(info["file_name"])
            continue
        ids.append(img_id)
        paths.append(path)
        caps.append(texts)
    if empty and not skip_missing:
        raise DataError(f"{captions_file}: {sum(empty.values())} empty caption(s) (\"\" or spaces) of "
                        f"{len(empty)} image(s), image ids {_examples(empty)}; they would be embedded as captions. "
                        f"Fix the captions json, or pass --skip-missing to leave them out (an image left with "
                        f"no caption is dropped from both modalities)")
    if empty:
        logging.getLogger(__name__).warning("left out %d empty caption(s) of %d image(s) (--skip-missing)",
                                            sum(empty.values()), len(empty))
    if not ids:
        raise DataError(f"{captions_file} lists no usable images under {image_dir}")
    return CaptionsDataset(name, image_dir, captions_file, ids, paths, caps, dropped, tuple(dropped_files))


def _id_order(i):
    """Image ids in ascending order, numbers before strings (a captions file may mix 7 and "img_7")."""
    return (0, i, "") if isinstance(i, (int, float)) and not isinstance(i, bool) else (1, 0, str(i))


def _check_caption_types(coco, captions_file):
    """Every annotation's caption must be text: null or a number is a broken file, not an empty caption."""
    bad = {}
    for ann in coco.anns.values():
        if not isinstance(ann, dict) or not isinstance(ann.get("caption"), str):
            caption = ann.get("caption") if isinstance(ann, dict) else ann
            bad.setdefault(ann.get("image_id") if isinstance(ann, dict) else None, caption)
    if bad:
        img_id, caption = next(iter(bad.items()))
        raise DataError(f"{captions_file}: {len(bad)} image(s) have a caption that is not text, e.g. image id "
                        f"{img_id}: {json.dumps(caption)[:60]}; image ids {_examples(bad, key=str)}. Fix the "
                        f"captions json (each annotation's \"caption\" a string)")


def open_rgb(path):
    """The image file as 8-bit RGB (``to_rgb``)."""
    with Image.open(path) as im:
        return to_rgb(im)


def to_rgb(im):
    """A PIL image as 8-bit RGB, for any mode PIL opens. convert("RGB") is right for L, LA, P, CMYK, RGBA, ...
    but clips 16-bit and 32-bit greyscale (I;16*, I) to 0..255, which turns most pixels white: those are
    scaled to 8 bits first (I;16*: always; I: when a value exceeds 255). Palette images with transparency go
    through RGBA (the same colours, without PIL's warning)."""
    im.load()
    if im.mode.startswith("I;16") or im.mode == "I":
        import numpy as np
        a = np.asarray(im).astype(np.float64)
        if im.mode != "I" or a.max() > 255:
            a = a / 257.0
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8)).convert("RGB")
    if im.mode in ("P", "PA") and "transparency" in im.info:
        return im.convert("RGBA").convert("RGB")
    return im.convert("RGB")


# ----------------------------------------------------------------------------------------------------------
# Classification datasets: an ImageFolder tree, one row per image on the image side, one per class on the
# text side (a prompt ensemble over templates).
# ----------------------------------------------------------------------------------------------------------

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")  # compared lower-cased

# CLIP's prompt-ensembling subset: the 7 of its 80 ImageNet templates that the notebook
# "Prompt_Engineering_for_ImageNet.ipynb" (openai/CLIP, notebooks/) found by sequential forward selection
# to do about as well as all 80.
DEFAULT_TEMPLATES = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)


@dataclass
class ClassesDataset:
    """An ImageFolder tree: ROOT/<folder>/<image>, one class a folder.

    Image rows: folders in sorted order (Python string order, as torchvision's ImageFolder), within a folder
    its image files sorted by their path relative to it (sub-folders included); ``ids`` are those paths
    relative to ROOT ("folder/file"), ``labels[i]`` the class index of row i. Text rows: one per class, in
    the same order: the texts ``class_texts(c)``, class c's prompts (``class_names[c]`` fills the templates'
    ``{}``) or, with descriptions, its sentences as written.
    """
    name: str
    image_dir: Path               # ROOT
    classes_file: object          # Path, or None: folder names with "_" -> " "
    folders: list                 # sorted class folders, C
    class_names: list             # C names to prompt with
    ids: list                     # N relative paths "folder/file", row order
    paths: list                   # N absolute paths
    labels: list                  # N class indices
    templates: list               # prompt templates, each with one "{}"
    templates_file: object = None  # Path, or None: DEFAULT_TEMPLATES
    dropped: dict = field(default_factory=dict)   # id -> reason, with --skip-missing
    descriptions: object = None   # {class name: [sentence, ...]} (--descriptions), or None: templates
    descriptions_file: object = None  # Path
    descriptions_digest: object = None  # sha1 of the file's bytes
    captions_file = None          # not a captions dataset (read by code written for CaptionsDataset)

    @property
    def dropped_files(self):
        """The image files --skip-missing dropped, relative to image_dir (their ids are those paths)."""
        return tuple(self.dropped)

    def __len__(self):
        return len(self.ids)

    def open_image(self, i):
        return open_rgb(self.paths[i])

    def describe_image(self, i):
        return str(self.paths[i])

    def prompts(self, c):
        """The prompts of class c, one per template."""
        return [t.replace("{}", self.class_names[c]) for t in self.templates]

    def class_texts(self, c):
        """The texts whose normalised embeddings average to class c's text row: its descriptions as written,
        or its prompts."""
        if self.descriptions is not None:
            return list(self.descriptions[self.class_names[c]])
        return self.prompts(c)

    def sidecar_fields(self, modality):
        """What the embeddings sidecar (``files.Sidecar``) records beyond the model: classes in row / label
        order, and for image rows their labels and ids, for text rows the templates or the descriptions
        file and its digest (text rows are classes: no ids)."""
        out = {"task_data": "classes", "classes": list(self.class_names),
               "folders": None if self.folders is None else list(self.folders),
               "classes_file": str(self.classes_file) if self.classes_file else None}
        if modality == "img":
            out.update(labels=list(self.labels), image_ids=list(self.ids))
        else:
            out.update(class_text_source(self.templates, self.templates_file, self.descriptions_file,
                                         self.descriptions_digest), image_ids=None)
        return out


def class_text_source(templates, templates_file=None, descriptions_file=None, descriptions_digest=None):
    """The sidecar fields that say where class text rows came from: the templates, or (then templates is
    None) a descriptions file and its digest."""
    if descriptions_digest is not None:
        return {"templates": None, "templates_file": None, "descriptions_file": str(descriptions_file),
                "descriptions_digest": descriptions_digest}
    return {"templates": list(templates), "templates_file": str(templates_file) if templates_file else None,
            "descriptions_file": None, "descriptions_digest": None}


def _examples(items, k=3, key=None):
    items = sorted(items, key=key)
    return ", ".join(repr(i) for i in items[:k]) + (f" (+{len(items) - k} more)" if len(items) > k else "")


def load_json(text):
    """(the parsed JSON, the keys that some object of it lists more than once): ``json.loads`` keeps the last of
    a repeated key without a word, so a class name, a list of sentences or a captions file's ``annotations``
    would vanish. Raises ValueError when text is not JSON."""
    repeated = []

    def hook(pairs):
        counts = Counter(k for k, _ in pairs)
        repeated.extend(k for k, c in counts.items() if c > 1)
        return dict(pairs)
    return json.loads(text, object_pairs_hook=hook), repeated


def class_folders(root):
    """Sorted names of the sub-folders of root (hidden ones, such as .ipynb_checkpoints, left out)."""
    return sorted(p.name for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))


def read_class_names(classes_file, folders, keys="folder"):
    """Class names in folder order: from a json {folder: name}, else folder names with "_" -> " ".
    ``keys`` says in messages what the json's keys are (``folder``: ImageFolder class folders; other values
    name them as given, e.g. "torchvision class name")."""
    if classes_file is None:
        return [f.replace("_", " ") for f in folders]
    path = Path(classes_file)
    try:
        mapping, repeated = load_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"classes file {path} cannot be read ({type(e).__name__}: {e}); pass --classes a json "
                        f"object mapping each class {keys} to its class name")
    if repeated:
        raise DataError(f"classes file {path} lists the class {keys}(s) {', '.join(map(repr, repeated[:5]))} more "
                        f"than once (JSON keeps only the last name); give each class {keys} one name")
    if not isinstance(mapping, dict) or not all(isinstance(v, str) and v.strip() for v in mapping.values()):
        example = '{"n01440764": "tench"}' if keys == "folder" else f'{{"{folders[0]}": "..."}}'
        raise DataError(f"classes file {path} is not a json object mapping each class {keys} to a non-empty "
                        f"class name, e.g. {example}")
    no_entry = set(folders) - set(mapping)
    no_folder = set(mapping) - set(folders)
    if no_entry or no_folder:
        parts = []
        if no_entry:
            parts.append(f"{len(no_entry)} {keys}(s) have no entry in it: {_examples(no_entry)}")
        if no_folder:
            parts.append(f"{len(no_folder)} class(es) in it have no {keys}: {_examples(no_folder)}")
        where = "the class folders of the images root" if keys == "folder" else f"the dataset's {keys}s"
        fix = "the sub-folder names" if keys == "folder" else f"the {keys}s, e.g. {_examples(folders)}"
        raise DataError(f"classes file {path} does not match {where}: " + "; ".join(parts)
                        + f". Make the json's keys exactly {fix}")
    names = [mapping[f].strip() for f in folders]
    shared = {n: [f for f, m in zip(folders, names) if m == n] for n in names if names.count(n) > 1}
    if shared:  # e.g. ImageNet's two "crane"s: allowed, but their text rows are the same
        logging.getLogger(__name__).warning(
            "classes file %s gives different %ss the same name, so their text rows will be identical: %s",
            path, keys, "; ".join(f"{n!r}: {', '.join(fs)}" for n, fs in list(shared.items())[:3]))
    return names


def read_templates(templates_file):
    """Prompt templates: a json list of strings, or a text file one template a line (blank lines skipped);
    DEFAULT_TEMPLATES when templates_file is None. Each must hold "{}" where the class name goes."""
    if templates_file is None:
        return list(DEFAULT_TEMPLATES)
    path = Path(templates_file)
    try:
        text = path.read_text(encoding="utf-8")
        templates = json.loads(text) if path.suffix.lower() == ".json" else \
            [line.strip() for line in text.splitlines() if line.strip()]
    except (OSError, ValueError) as e:
        raise DataError(f"templates file {path} cannot be read ({type(e).__name__}: {e}); pass --templates a "
                        f"json list of templates or a text file with one template a line")
    if not isinstance(templates, list) or not templates or not all(isinstance(t, str) for t in templates):
        raise DataError(f"templates file {path} holds no templates: give a non-empty json list of strings "
                        f"(or a text file with one template a line), e.g. [\"a photo of a {{}}.\"]")
    bad = [t for t in templates if "{}" not in t]
    if bad:
        raise DataError(f"templates file {path}: template {bad[0]!r} has no {{}} where the class name goes"
                        + (f" ({len(bad)} such templates)" if len(bad) > 1 else "")
                        + "; write e.g. \"a photo of a {}.\"")
    return templates


def read_descriptions(descriptions_file, class_names):
    """``--descriptions FILE``: a json object {class name: [sentence, ...]} keyed by the class names (after
    --classes), every class with at least one non-blank sentence and no key that is not a class. Returns
    (the mapping, sha1 of the file's bytes). Sentences are kept as written (they are embedded that way)."""
    from .files import file_digest
    path = Path(descriptions_file)
    fix = ("pass --descriptions a json object mapping each class name to a list of sentences, e.g. "
           "{\"leopard\": [\"A leopard is a large wild cat.\", ...]}")
    try:
        mapping, repeated = load_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"descriptions file {path} cannot be read ({type(e).__name__}: {str(e)[:200]}); {fix}")
    if repeated:
        raise DataError(f"descriptions file {path} lists the key(s) {', '.join(map(repr, repeated[:5]))} more than "
                        f"once (JSON keeps only the last list); merge each class's sentences into one list")
    if not isinstance(mapping, dict) or not all(isinstance(v, list) and all(isinstance(t, str) for t in v)
                                                for v in mapping.values()):
        raise DataError(f"descriptions file {path} is not a json object of lists of strings; {fix}")
    known = set(class_names)
    unknown = set(mapping) - known
    empty = {c for c in known if not any(t.strip() for t in mapping.get(c, []))}
    blank = {c for c in known - empty if any(not t.strip() for t in mapping[c])}
    if unknown or empty or blank:
        parts = []
        if unknown:
            parts.append(f"{len(unknown)} key(s) are not classes of the dataset: {_examples(unknown)}")
        if empty:
            parts.append(f"{len(empty)} class(es) have no descriptions: {_examples(empty)}")
        if blank:
            parts.append(f"{len(blank)} class(es) have an empty sentence: {_examples(blank)}")
        raise DataError(f"descriptions file {path}: " + "; ".join(parts) + f". Its keys must be exactly the "
                        f"class names the sidecar records (after --classes), e.g. {_examples(known)}, each with "
                        f"at least one sentence")
    return {c: list(mapping[c]) for c in class_names}, file_digest(path)


def _class_images(folder):
    """Image files under a class folder (recursively, hidden entries left out), sorted by relative path."""
    out = []
    for p in folder.rglob("*"):
        rel = p.relative_to(folder)
        if p.suffix.lower() in IMAGE_EXTENSIONS and not any(s.startswith(".") for s in rel.parts) and p.is_file():
            out.append(rel.as_posix())
    return sorted(out)


def load_classes_dataset(name, root, classes_file=None, templates_file=None, skip_missing=False,
                         descriptions_file=None):
    """Read an ImageFolder tree and its class names and templates (or descriptions); check every image's
    header (with skip_missing: decode it fully, and drop undecodable ones into ``dropped``, as for captions
    datasets)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"images folder {root} does not exist (--images)")
    folders = class_folders(root)
    if not folders:
        raise DataError(_NOT_IMAGEFOLDER.format(root=root))
    names = read_class_names(classes_file, folders)
    templates = read_templates(templates_file)
    descriptions, digest = read_descriptions(descriptions_file, names) if descriptions_file else (None, None)
    ids, paths, labels, dropped = [], [], [], {}
    for c, folder in enumerate(folders):
        files = _class_images(root / folder)
        if not files:
            raise DataError(f"class folder {root / folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                            f"add images or remove the folder from {root}")
        kept = 0
        for f in files:
            rel, path = f"{folder}/{f}", root / folder / f
            problem = _check_image(path, full=skip_missing)
            if problem:
                if not skip_missing:
                    raise DataError(f"image {path}: {problem}. Fix or remove the file, or pass --skip-missing "
                                    f"to drop such images")
                dropped[rel] = problem
                continue
            ids.append(rel)
            paths.append(path)
            labels.append(c)
            kept += 1
        if not kept:
            raise DataError(f"class folder {root / folder}: none of its {len(files)} image(s) can be decoded "
                            f"(listed with --skip-missing); fix them or remove the folder")
    return ClassesDataset(name, root, Path(classes_file) if classes_file else None, folders, names, ids, paths,
                          labels, templates, Path(templates_file) if templates_file else None, dropped,
                          descriptions, Path(descriptions_file) if descriptions_file else None, digest)


def has_class_folders(images):
    """True when images is a folder with (non-hidden) sub-folders: an ImageFolder root."""
    return images is not None and Path(images).is_dir() and bool(class_folders(images))


_NOT_IMAGEFOLDER = ("images folder {root} has no sub-folders, so it is not the root of a classification "
                    "dataset: pass --captions FILE for a captions dataset, or point --images at an ImageFolder "
                    "root (ROOT/<class folder>/<images>)")


def check_class_text_flags(templates, descriptions):
    """--templates and --descriptions exclude each other: a description is a whole sentence that already
    names its class (it is embedded as written), so filling a template such as "a photo of a {}." with it
    would make an ungrammatical prompt that no model was trained on."""
    if templates is not None and descriptions is not None:
        raise UsageError("--templates and --descriptions exclude each other: descriptions are embedded as written "
                         "(whole sentences that name their class), not put into templates; drop one of them")


def is_classification(name, images, captions, classes=None, templates=None, descriptions=None):
    """Which kind of dataset the flags name: True for an ImageFolder classification tree (no captions file,
    and an images folder with sub-folders), False for a COCO-format captions dataset. Raises for
    combinations that fit neither."""
    check_class_text_flags(templates, descriptions)
    class_flags = classes is not None or templates is not None or descriptions is not None
    if captions is not None:
        if class_flags:
            raise UsageError("--classes, --templates and --descriptions are for a classification dataset (an "
                             "ImageFolder --images root without --captions); drop them, or drop --captions")
        return False
    if images is None:
        if class_flags:
            raise UsageError("--classes, --templates and --descriptions need --images ROOT, an ImageFolder root "
                             "(ROOT/<class folder>/<images>), or --d tv:NAME")
        return False  # coco / nocaps located by their environment variable (or a message saying how)
    if has_class_folders(images):
        return True
    if name in KNOWN and not class_flags:
        return False  # e.g. --images $COCO_ROOT/val2017 with the captions file from COCO_ROOT
    if not Path(images).is_dir():
        raise DataError(f"images folder {images} does not exist (--images)")
    raise DataError(_NOT_IMAGEFOLDER.format(root=images))
