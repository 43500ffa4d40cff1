"""COCO-format captions datasets: where they are, their row order, their images.

Row order is the contract between the _img and _text files: images sorted by id, each image's captions in
annotation order (torchvision's CocoCaptions order, which the paper used). Every model sees the same rows.

Locations come from flags or environment variables, never from constants:
- coco:   --images DIR --captions FILE, or COCO_ROOT with $COCO_ROOT/val2017/*.jpg and
          $COCO_ROOT/annotations/captions_val2017.json
- nocaps: --images DIR --captions FILE, or NOCAPS_ROOT with $NOCAPS_ROOT/validation/*.jpg and
          $NOCAPS_ROOT/nocaps_val_4500_captions.json
- any other name: --images DIR --captions FILE (a COCO captions json: images[] and annotations[]).
"""
import contextlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from .errors import DataError, UsageError

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

    def __len__(self):
        return len(self.ids)


def _check_image(path, full):
    """None if the image can be used, else why not. full=True decodes it completely."""
    if not path.is_file():
        return "missing"
    try:
        with Image.open(path) as im:
            if full:
                im.load()
            else:
                im.size
    except Exception as e:  # PIL raises many types for bad files
        return f"undecodable ({type(e).__name__})"
    return None


def load_dataset(name, images=None, captions=None, skip_missing=False):
    """Read a COCO-format captions file and check its images.

    Without skip_missing, a missing or undecodable image, or an image without captions, is a DataError
    naming it. With skip_missing such images are dropped (the same rows for every model, since the check
    does not depend on the model) and listed in ``dropped``; images are then fully decoded to check.
    """
    image_dir, captions_file = resolve_locations(name, images, captions)
    try:
        from pycocotools.coco import COCO
        with contextlib.redirect_stdout(sys.stderr):  # COCO() prints progress to stdout
            coco = COCO(str(captions_file))
    except Exception as e:
        raise DataError(f"{captions_file} is not a readable COCO captions file ({type(e).__name__}: {e})")
    ids, paths, caps, dropped = [], [], [], {}
    for img_id in sorted(coco.imgs):
        info = coco.imgs[img_id]
        path = image_dir / info["file_name"]
        texts = [a["caption"] for a in coco.imgToAnns.get(img_id, [])]
        problem = None if texts else "no captions"
        problem = problem or _check_image(path, full=skip_missing)
        if problem:
            if not skip_missing:
                raise DataError(f"image id {img_id} ({path}): {problem}. Fix the file or the captions json, "
                                f"or pass --skip-missing to drop such images from both modalities alike")
            dropped[img_id] = f"{info['file_name']}: {problem}"
            continue
        ids.append(img_id)
        paths.append(path)
        caps.append(texts)
    if not ids:
        raise DataError(f"{captions_file} lists no usable images under {image_dir}")
    return CaptionsDataset(name, image_dir, captions_file, ids, paths, caps, dropped)


def open_rgb(path):
    with Image.open(path) as im:
        return im.convert("RGB")
