"""Loading a side (one embeddings file) with what its sidecar knows, and pairing two sides by image id.

A side is ``MODEL:MODALITY[:LANG]`` (``src/names.py``); ``load_side(data_dir, dataset, side)`` reads its file
(``files.side_file``) and checks it against its sidecar.
Two caption sides are paired by image id: when they hold different images both are restricted to the
ids they share, in ascending id order; files without sidecars pair by position and must have equal rows.
"""
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from .errors import DataError
from .files import (
    Sidecar,
    check_pair,
    load_cluster,
    load_embeddings,
    read_sidecar,
    same_path,
    side_file,
    sidecar_path,
    tensor_digest,
)
from .hints import cluster_command, get_embeds_command, make_hint
from .names import Side, parse_side

_logger = logging.getLogger(__name__)


@dataclass
class LoadedSide:
    side: Side
    dataset: str                   # the dataset name the file belongs to (language appended)
    path: Path
    rows: torch.Tensor             # N x D on the CPU, float32 or float64
    sidecar: Optional[Sidecar]     # None for plain tensors such as the paper's files
    fix: str = ""                  # how to make the file again (for messages)

    @property
    def ids(self):
        """Image ids in row order (captions data), or None when unknown."""
        return None if self.sidecar is None else self.sidecar.image_ids

    @property
    def classes(self):
        return None if self.sidecar is None else self.sidecar.classes

    @property
    def labels(self):
        return None if self.sidecar is None else self.sidecar.labels


def load_side(data_dir, dataset, side) -> LoadedSide:
    """Rows and sidecar of one side, checked: a readable finite N x D tensor whose row count agrees with
    what its sidecar lists; an input perturbation's file must name that perturbation in its sidecar. A row
    perturbation's rows are the unperturbed file's (run.py perturbs them per seed)."""
    side = parse_side(side)
    name = side.dataset(dataset)
    path = side_file(data_dir, dataset, side)
    pert = side.file_side.perturbation
    fix = make_hint(name, side.model, path, perturbation=pert,
                    kind_from=side_file(data_dir, dataset, side.unperturbed) if pert else None)
    rows = load_embeddings(path, fix)
    sidecar = read_sidecar(path)
    if pert is not None:
        recorded = None if sidecar is None else sidecar.perturbation
        if not recorded or (recorded.get("kind"), recorded.get("level")) != (pert.kind, pert.level):
            what = (f"{recorded.get('kind')}:{recorded.get('level')}" if recorded else "no perturbation")
            raise DataError(f"{path} should hold the rows of {side.file_side}, but its sidecar records {what}; "
                            f"re-make it: {get_embeds_command(name, side.model, path, perturbation=pert)}")
    if sidecar is not None:
        n = sidecar.row_count()
        if n is not None and n != rows.shape[0]:
            raise DataError(f"{path} has {rows.shape[0]} rows but its sidecar {sidecar_path(path)} lists {n}: "
                            f"the file was cut or replaced; {fix}")
    check_pair(path, rows, sidecar, fix)
    return LoadedSide(side, name, path, rows, sidecar, fix)


def require_distinct(rows, what, fix):
    """A DataError unless ``rows`` (N x D, N >= 2) holds at least two different rows: with all rows equal
    (e.g. all zero) every distance is 0, the RBF bandwidth is 0, and matching can only break ties."""
    if rows.shape[0] >= 2 and not (rows != rows[:1]).any():
        raise DataError(f"{what}: all {rows.shape[0]} rows are the same vector"
                        f"{' (all zero)' if not rows.any() else ''}, so no method or metric can tell them apart; "
                        f"{fix}")


def _id_key(i):
    """Ids compare as strings (one sidecar may hold 7, the other "7"); numeric ids sort as numbers."""
    s = str(i)
    return (0, int(s), "") if s.lstrip("-").isdigit() else (1, 0, s)


def check_same_source(a: LoadedSide, b: LoadedSide):
    """Two sides paired by image id must come from the same images: a DataError naming both files when their
    sidecars name different image folders, different captions files (for one dataset name: a language or a
    class-text variant has its own captions or texts), or different file names for one image id."""
    sa, sb = a.sidecar, b.sidecar
    if sa is None or sb is None:
        return
    differ = None
    if sa.images and sb.images and not same_path(sa.images, sb.images):
        differ = f"image folders ({sa.images} and {sb.images})"
    elif a.dataset == b.dataset and sa.captions and sb.captions and not same_path(sa.captions, sb.captions):
        differ = f"captions files ({sa.captions} and {sb.captions})"
    elif a.dataset == b.dataset and sa.modality == sb.modality == "text" and sa.captions_digest \
            and sb.captions_digest and sa.captions_digest != sb.captions_digest:
        # two text sides of one captions file edited between their extractions (image rows do not depend on
        # the captions' text, so an image side is not compared this way)
        differ = (f"versions of the captions file {sa.captions} (sha1 {sa.captions_digest[:12]} and "
                  f"{sb.captions_digest[:12]}: edited between the two extractions)")
    elif sa.files and sb.files and sa.image_ids and sb.image_ids:
        fb = {str(i): f for i, f in zip(sb.image_ids, sb.files)}
        other = [(i, f, fb[str(i)]) for i, f in zip(sa.image_ids, sa.files) if fb.get(str(i), f) != f]
        if other:
            i, fa, f2 = other[0]
            differ = f"files for {len(other)} image id(s) (id {i}: {fa} and {f2})"
    if differ:
        raise DataError(f"{a.path} and {b.path} were made from different {differ}, so pairing their rows by image "
                        f"id would pair other photos; extract both from the same --images and --captions "
                        f"(get_embeds.py --overwrite), or give one of them its own dataset name")


# what a warning of this module names (a file and the ids it lacks; a cluster file and its side): said once a
# run, however many configurations load it
_SAID = set()


def _say_lacking(lacking: LoadedSide, other: LoadedSide, n_shared):
    """One warning a run for a file whose sidecar says get_embeds.py dropped images another side has
    (--skip-missing, e.g. a perturbed file made while a photo was missing): how many rows of the other side are
    skipped, and why. Ids a file never had (a language whose captions cover fewer images, a subset) are the
    pairing's ordinary case: pair_rows' info line says how many images are shared."""
    have = {str(i) for i in lacking.ids}
    dropped = {str(k): v for k, v in (lacking.sidecar.dropped or {}).items()} if lacking.sidecar else {}
    known = [str(i) for i in other.ids if str(i) not in have and str(i) in dropped]
    key = (str(lacking.path), tuple(known))
    if not known or key in _SAID:
        return
    _SAID.add(key)
    _logger.warning("%s lacks %d image id(s) that %s has: get_embeds.py dropped them when it made it "
                    "(--skip-missing; e.g. id %s: %s); those %d rows of %s are skipped, and each configuration with "
                    "%s runs on the images both of its sides have (%d here); to compare the same rows, make %s "
                    "again over every image (%s)", lacking.path, len(known), other.path, known[0], dropped[known[0]],
                    len(known), other.side, lacking.side, n_shared, lacking.path.name,
                    lacking.fix or "get_embeds.py --overwrite")


def pair_rows(a: LoadedSide, b: LoadedSide):
    """Rows of a and b paired by image id: (rows_a, rows_b, index_a, index_b), indices into the files.

    Same ids in the same order (the usual case, and the paper's): rows as they are. Otherwise both are
    restricted to the shared ids in ascending id order, with one log line. Without ids on both sides the
    files pair by position and must have equal rows.
    """
    check_same_source(a, b)
    na, nb = a.rows.shape[0], b.rows.shape[0]
    if a.ids is None or b.ids is None:
        if na != nb:
            raise DataError(f"{a.path} has {na} rows but {b.path} has {nb}: without sidecars (image ids) the "
                            f"two files must pair row by row; re-extract both over the same images")
        idx = torch.arange(na)
        return a.rows, b.rows, idx, idx
    ka, kb = [_id_key(i) for i in a.ids], [_id_key(i) for i in b.ids]
    if ka == kb:
        idx = torch.arange(na)
        return a.rows, b.rows, idx, idx
    pos_a, pos_b = {k: i for i, k in enumerate(ka)}, {k: i for i, k in enumerate(kb)}
    for ids, pos, side in ((ka, pos_a, a), (kb, pos_b, b)):
        if len(pos) != len(ids):
            raise DataError(f"{side.path}: its sidecar lists an image id more than once; re-extract it")
    shared = sorted(set(pos_a) & set(pos_b))
    if not shared:
        raise DataError(f"{a.path} and {b.path} share no image id: they were made from different images; "
                        f"extract both from the same dataset")
    _logger.info("pairing by image id: %d shared images; %s lost %d row(s), %s lost %d", len(shared),
                 a.side, na - len(shared), b.side, nb - len(shared))
    for lacking, other in ((a, b), (b, a)):
        _say_lacking(lacking, other, len(shared))
    ia = torch.tensor([pos_a[k] for k in shared])
    ib = torch.tensor([pos_b[k] for k in shared])
    return a.rows[ia], b.rows[ib], ia, ib


def load_side_cluster(data_dir, dataset, loaded: LoadedSide, n_clusters, keep: torch.Tensor):
    """The cluster picks of a side (row indices into its file), re-indexed into the rows kept by pairing.

    Refuses a cluster file made from other embeddings (its sidecar records their digest), repeated indices,
    and picks whose rows pairing dropped.
    """
    side = loaded.side
    path = side_file(data_dir, dataset, side, cluster=True)
    cmd = cluster_command(side.dataset(dataset), side.model, side.modality, n_clusters, data_dir,
                          side.file_side.perturbation)
    picks = load_cluster(path, loaded.rows.shape[0], f"make it with: {cmd}")
    sidecar = read_sidecar(path)
    check_pair(path, picks, sidecar, f"re-run: {cmd}")
    if sidecar is None and loaded.sidecar is not None and (path, loaded.path) not in _SAID:
        # the paper's cluster files have no sidecar, so one alone is read; beside embeddings that have one it
        # cannot be tied to them (cluster.py writes both: this one's was removed, or it came from elsewhere)
        _SAID.add((path, loaded.path))
        _logger.warning("%s has no sidecar, so nothing ties its picks to the rows of %s (if those were re-made "
                        "since, the anchors are another file's); to be sure, re-run: %s", path, loaded.path, cmd)
    if sidecar is not None and sidecar.n_clusters is not None and sidecar.n_clusters != n_clusters:
        raise DataError(f"{path} holds the anchors of {sidecar.n_clusters} clusters (cluster.py --nc "
                        f"{sidecar.n_clusters}), not of --b {n_clusters}; re-run: {cmd}")
    if sidecar is not None and sidecar.digest is not None and sidecar.digest != tensor_digest(loaded.rows):
        raise DataError(f"{path} was made from other embeddings than {loaded.path} (they were re-extracted "
                        f"since, or the file was copied from another side); re-run: {cmd}")
    if sidecar is not None and sidecar.digest is None and sidecar.embeddings not in (None, loaded.path.name):
        # an older sidecar without the digest: at least the embeddings file it names must be this side's
        raise DataError(f"{path} was made from {sidecar.embeddings}, not from {loaded.path.name} (a cluster "
                        f"file copied from another side?); re-run: {cmd}")
    where = {int(r): i for i, r in enumerate(keep.tolist())}
    lost = [int(p) for p in picks.tolist() if int(p) not in where]
    if lost:
        raise DataError(f"{path}: {len(lost)} anchor row(s) (first {lost[:5]}) are images the other side does "
                        f"not have; use --c 0, or cluster the shared images only")
    return torch.tensor([where[int(p)] for p in picks.tolist()], dtype=torch.int64)
