"""What get_embeds.py does for one model over one dataset, as a function of plain values.

``EmbedOptions`` holds get_embeds.py's flags (one dataset); ``output_files`` names the files a model writes;
``check_model`` refuses a model name before anything is loaded; ``extract_model`` is plan -> extract -> save:
``plan_model`` checks the request, reads the dataset and loads the encoder, ``extract_rows`` runs every
requested layer of a modality in one forward pass a batch, ``save_rows`` writes each file with its sidecar
(``make_sidecar``, the one constructor). The in-process path (one model after another, or torchrun ranks) and
each job of ``--launcher`` call it alike.
"""
import contextlib
import json
import os
import platform
from dataclasses import dataclass, fields, replace
from datetime import datetime, timezone
from typing import Optional

import torch

from .cli import quiet_output
from .datasets import (
    KNOWN,
    ClassesDataset,
    class_folders,
    class_text_source,
    load_dataset,
    read_class_names,
    read_templates,
    resolve_locations,
)
from .encoders import check_model_name, get_spec, load_encoder
from .errors import DataError, UsageError
from .extraction import (
    extract_class_texts,
    extract_layers,
    output_lock,
    raise_image_error,
    remove_partial,
    resolve_batch_size,
)
from .files import (
    Sidecar,
    check_pair,
    file_digest,
    load_tensor,
    nonfinite_rows,
    read_sidecar,
    same_path,
    save_embeddings,
    side_file,
    sidecar_path,
    stat_digest,
)
from .names import FINAL, ModelName, Side, check_path_part, parse_model
from .perturb import Perturbation, image_perturbation, parse_input_perturbation, perturb_captions
from .tvdatasets import ROOT_VAR as TV_ROOT_VAR
from .tvdatasets import is_tv, load_tv_dataset, parse_tv_name


@dataclass(frozen=True)
class EmbedOptions:
    """get_embeds.py's flags for one dataset (``--d``); the model is extract_model's argument."""
    dataset: str = "coco"
    images: Optional[str] = None
    captions: Optional[str] = None
    classes: Optional[str] = None
    templates: Optional[str] = None
    descriptions: Optional[str] = None
    split: Optional[str] = None
    download: bool = False
    layers: Optional[tuple] = None
    list_layers: bool = False
    batch_size: object = "auto"
    num_workers: object = "auto"
    device: str = "auto"
    gpu: Optional[int] = None
    precision: str = "fp32"
    fold_bn: bool = True    # fold BatchNorm into convolutions for image rows (src/fold.py)
    data_dir: str = "data"
    weights: Optional[str] = None
    chunk_size: int = 512
    skip_missing: bool = False
    overwrite: bool = False
    quiet: bool = False
    perturb: Optional[Perturbation] = None  # an input perturbation (src/perturb.py), written to its own file
    perturb_seed: int = 0

    def __post_init__(self):
        # --perturb is parsed once, here (its modality is checked against each model by _perturbation)
        if isinstance(self.perturb, str):
            object.__setattr__(self, "perturb", parse_input_perturbation(self.perturb))

    @classmethod
    def from_args(cls, args, dataset):
        values = {f.name: getattr(args, f.name) for f in fields(cls) if f.name != "dataset"}
        values["layers"] = tuple(values["layers"]) if values["layers"] else None
        return cls(dataset=dataset, **values)

    @property
    def name(self):
        """The name files, sidecars and run.py use: --d as given, or a tv: name with --split folded in."""
        return parse_tv_name(self.dataset, self.split).text if is_tv(self.dataset) else self.dataset


def _plan(opts: EmbedOptions, model):
    """(base model, layers in order, spec) of a request; UsageError for a name or layers that cannot work."""
    name = parse_model(model)
    check_path_part(opts.name, "--d (the dataset name)")  # the dataset name becomes part of file names
    if os.path.exists(opts.data_dir) and not os.path.isdir(opts.data_dir):
        raise UsageError(f"--data-dir {opts.data_dir} is a file, not a folder: pass the folder the embeddings go in")
    if opts.layers and name.layer:
        raise UsageError(f"--m {model} --layers: give the layer in the name or with --layers, not both")
    layers = list(dict.fromkeys(opts.layers or [name.layer or FINAL]))
    base = name.at(None)
    return base, layers, get_spec(base.base)


def _perturbation(opts: EmbedOptions, modalities):
    """The input perturbation of opts (None without --perturb), checked against the modalities the model has
    (hf: ids know theirs only once loaded: then both, and checked again after loading)."""
    perturb = opts.perturb
    if perturb is None:
        return None
    modalities = tuple(modalities) or ("img", "text")
    if perturb.spec.modality not in modalities:
        parse_input_perturbation(perturb.text, modalities)  # its message
    if not 0 <= opts.perturb_seed <= 2**32 - 1:
        raise UsageError(f"--perturb-seed {opts.perturb_seed}: use a seed in 0..{2**32 - 1}")
    return perturb


def _wanted(perturb, modality):
    """--perturb writes the files of the modality it perturbs only."""
    return perturb is None or modality == perturb.spec.modality


def check_model(opts: EmbedOptions, model):
    """Every check of a model request that loads nothing (the name, its layers flag, random:, --weights, the
    class texts of a class text file that exists)."""
    _plan(opts, model)
    check_model_name(model, opts.weights)
    for path in output_files(opts, model):
        if path.exists() and not path.is_file():
            raise DataError(f"{path}: a folder of that name is in the way (it is not an embeddings file); move "
                            f"it away, or pass another --data-dir")
        if path.exists() and path.name.endswith("_text.pt"):
            check_class_text_file(path, opts)
        if path.exists() and not opts.overwrite:
            check_existing(path, opts)


def _real(path):
    return None if path is None else os.path.realpath(path)


def _weights_flag(weights):
    """--weights as a sidecar records it: its real path, "" without it (None: a sidecar older than this)."""
    return _real(weights) or ""


def check_existing(path, opts: EmbedOptions):
    """A file that exists is skipped only when it is what this command would write: made with the same
    options that change rows (--weights, --precision, --no-fold-bn, --perturb-seed; the class texts:
    ``check_class_text_file``) and whole (its sidecar agrees with its rows). Otherwise one message that says
    what differs and to pass --overwrite."""
    sidecar = read_sidecar(path)
    if sidecar is None:    # nothing says what it was made from, so nothing can say it is what this would make
        raise UsageError(f"{path} exists without its sidecar {sidecar_path(path)}, so it cannot be checked "
                         f"against this command: add --overwrite to make it again (or put its sidecar back)")
    check_pair(path, load_tensor(path, "pass --overwrite to make it again"), sidecar,
               "pass --overwrite to make it again")
    differ = []
    recorded = sidecar.perturbation
    if opts.perturb is not None and recorded and recorded.get("seed") != opts.perturb_seed:
        differ.append(f"--perturb-seed {recorded.get('seed')} (this command: {opts.perturb_seed})")
    if sidecar.weights_flag is not None:
        if sidecar.weights_flag != _weights_flag(opts.weights):
            differ.append(f"--weights {sidecar.weights_flag or '(none: the published weights)'} (this command: "
                          f"{_weights_flag(opts.weights) or 'none'})")
    elif opts.weights is not None and sidecar.weights not in (opts.weights, _weights_flag(opts.weights)):
        differ.append(f"weights {sidecar.weights} (this command: --weights {opts.weights})")
    if sidecar.precision is not None and sidecar.precision != opts.precision:
        differ.append(f"--precision {sidecar.precision} (this command: {opts.precision})")
    if sidecar.modality == "img":
        folded = sidecar.fold_bn if sidecar.fold_bn is not None else (
            True if sidecar.folded_batchnorm else None)   # older sidecars: 0 folded layers says nothing
        if folded is not None and folded != opts.fold_bn:
            differ.append(("BatchNorm folded" if folded else "--no-fold-bn")
                          + f" (this command: {'folded' if opts.fold_bn else '--no-fold-bn'})")
    differ += _other_data(sidecar, opts)
    if differ:
        raise UsageError(f"{path} exists, made with {'; '.join(differ)}: add --overwrite to replace it, or pass "
                         f"another --data-dir (or --d name) to keep both")


def _locations(opts: EmbedOptions):
    """(images folder, captions file) this command reads, as far as they are known without reading the dataset
    (None where not: a flag or a variable missing is said when the dataset is read)."""
    if is_tv(opts.dataset):
        return opts.images or os.environ.get(TV_ROOT_VAR), None
    if opts.captions or opts.dataset in KNOWN:
        try:
            return tuple(str(p) for p in resolve_locations(opts.dataset, opts.images, opts.captions))
        except (UsageError, DataError):
            return opts.images, opts.captions
    return opts.images, None


def _recorded(path):
    """A sidecar's path, when it can be compared: real paths, and relative ones (older sidecars: relative to
    the folder get_embeds.py ran in) only where they exist from here."""
    return path if path and (os.path.isabs(path) or os.path.exists(path)) else None


def _other_data(sidecar, opts: EmbedOptions):
    """What differs between the data a file was made from and the data this command names: the images folder,
    the captions file, or the captions file's bytes (edited in place since)."""
    images, captions = _locations(opts)
    differ = []
    if images and _recorded(sidecar.images) and not same_path(sidecar.images, images):
        differ.append(f"images {sidecar.images} (this command: {_real(images)})")
    if images and _recorded(sidecar.images) and same_path(sidecar.images, images) and os.path.isdir(images):
        differ += _other_images(sidecar, images)
        if sidecar.dropped_stat and sidecar.dropped_files \
                and stat_digest(images, sidecar.dropped_files, missing_ok=True) != sidecar.dropped_stat:
            differ.append(f"{len(sidecar.dropped_files)} image(s) left out by --skip-missing as they were (e.g. "
                          f"{sidecar.dropped_files[0]}: repaired, replaced or put back since, so the rows this "
                          f"command makes would differ)")
    if sidecar.task_data != "classes" and captions and _recorded(sidecar.captions):
        if not same_path(sidecar.captions, captions):
            differ.append(f"captions {sidecar.captions} (this command: {_real(captions)})")
        elif sidecar.captions_digest and os.path.isfile(captions) \
                and (now := file_digest(captions)) != sidecar.captions_digest:
            differ.append(f"captions {sidecar.captions} as it was before an edit (sha1 "
                          f"{sidecar.captions_digest[:12]}, now {now[:12]})")
    return differ


def _other_images(sidecar, images):
    """What changed in the images folder since the file was made: class folders added or removed (a class
    dataset), image files gone, replaced or touched (image rows: ``images_stat``)."""
    if sidecar.task_data == "classes" and sidecar.folders is not None:
        now = class_folders(images)
        if now != sidecar.folders:
            new, gone = sorted(set(now) - set(sidecar.folders)), sorted(set(sidecar.folders) - set(now))
            return [f"the class folders of {sidecar.images} as they were ("
                    + "; ".join(x for x in (new and f"{len(new)} added since, e.g. {new[0]}",
                                            gone and f"{len(gone)} gone, e.g. {gone[0]}") if x) + ")"]
    if not sidecar.images_stat:
        return []
    names = sidecar.files if sidecar.files is not None else sidecar.image_ids
    if not names:
        return []
    names = [str(n) for n in names]
    gone = [n for n in names if not os.path.isfile(os.path.join(images, n))]
    if gone:
        return [f"{len(gone)} image(s) no longer in {sidecar.images} (e.g. {gone[0]})"]
    if stat_digest(images, names) != sidecar.images_stat:
        return [f"the images of {sidecar.images} as they were (an image file replaced or touched since)"]
    return []


def _describe_class_texts(source):
    if source.get("descriptions_digest"):
        return f"descriptions {source['descriptions_file']} (sha1 {source['descriptions_digest'][:12]})"
    return f"templates {source['templates']}"


def check_class_text_file(path, opts: EmbedOptions):
    """A class text file that exists must hold rows from the class texts these flags ask for: otherwise
    "exists, skipped" would pair templates rows with a descriptions run (or two description files)."""
    side = read_sidecar(path)
    if side is None or side.task_data != "classes" or opts.overwrite:
        return
    if opts.descriptions and not os.path.isfile(opts.descriptions):
        return  # reading the dataset says so
    want = class_text_source(None if opts.descriptions else read_templates(opts.templates), opts.templates,
                             opts.descriptions, file_digest(opts.descriptions) if opts.descriptions else None)
    have = {"templates": side.templates, "descriptions_file": side.descriptions_file,
            "descriptions_digest": side.descriptions_digest}
    if side.folders is not None and side.classes is not None:
        try:
            names = read_class_names(opts.classes, side.folders)
        except DataError:
            names = None  # reading the dataset says what is wrong with the file
        if names is not None and names != side.classes:
            changed = [(f, a, b) for f, a, b in zip(side.folders, side.classes, names) if a != b]
            f, a, b = changed[0]
            raise DataError(f"{path} holds class text rows of other class names than "
                            f"{'--classes ' + opts.classes if opts.classes else 'the folder names'} gives "
                            f"({len(changed)} differ; folder {f}: {a!r} there, {b!r} now); pass --overwrite to "
                            f"replace them, or give these rows their own dataset name (--d {opts.name}-VARIANT)")
    if (have["descriptions_digest"], have["templates"]) != (want["descriptions_digest"], want["templates"]):
        raise DataError(f"{path} holds class text rows from {_describe_class_texts(have)}, not from "
                        f"{_describe_class_texts(want)}; pass --overwrite to replace them, or give these rows "
                        f"their own dataset name (--d {opts.name}-VARIANT, which run.py reads as the side "
                        f"MODEL:text:VARIANT against --base_data {opts.name})")


def output_files(opts: EmbedOptions, model):
    """The files a model writes: one per layer and modality of its spec (with --perturb: of the modality it
    perturbs)."""
    base, layers, spec = _plan(opts, model)
    perturb = _perturbation(opts, spec.modalities)
    return [side_file(opts.data_dir, opts.name, Side(base.at(layer).text, m, perturbation=perturb))
            for layer in layers for m in spec.modalities if _wanted(perturb, m)]


def _versions():
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for mod in ("transformers", "timm", "sentence_transformers", "torchvision"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return out


def taps_of(layers):
    return [layer for layer in layers if layer != FINAL]


def _one_input(encoder, dataset, modality):
    """One image (preprocessed, on the device) or one caption (or class prompt) of the dataset, as a batch
    of one."""
    if modality == "img":
        try:
            return encoder.prepare(encoder.transform(dataset.open_image(0))[None])
        except Exception as e:  # noqa: BLE001 (PIL and the preprocessing raise many types)
            raise_image_error(dataset, [0], encoder.transform, e)
    if isinstance(dataset, ClassesDataset):
        return [dataset.class_texts(0)[:1]]
    return [dataset.captions[0][:1]]


def open_dataset(opts: EmbedOptions):
    """The dataset of opts, checked (its images listed, captions read): a tv: dataset (root from --images or
    $TORCHVISION_ROOT), else a captions dataset or an ImageFolder tree (src/datasets.load_dataset)."""
    if is_tv(opts.dataset):
        given = [f for f, v in (("--captions", opts.captions), ("--skip-missing", opts.skip_missing)) if v]
        if given:
            raise UsageError(f"--d {opts.dataset}: {' and '.join(given)} do not apply to a torchvision dataset")
        root = opts.images or os.environ.get(TV_ROOT_VAR)
        if not root:
            raise UsageError(f"--d {opts.dataset}: give its root, --images ROOT or ${TV_ROOT_VAR} (the folder "
                             f"torchvision reads it from, or downloads it into with --download)")
        return load_tv_dataset(opts.name, root, opts.split, opts.download, opts.classes, opts.templates,
                               opts.descriptions)
    given = [f for f, v in (("--split", opts.split), ("--download", opts.download)) if v]
    if given:
        raise UsageError(f"{' and '.join(given)}: only for a torchvision dataset (--d tv:NAME)")
    with quiet_output(opts.quiet):  # pycocotools prints while it reads the captions
        return load_dataset(opts.dataset, opts.images, opts.captions, opts.skip_missing, classes=opts.classes,
                            templates=opts.templates, descriptions=opts.descriptions)


def check_with_dataset(opts: EmbedOptions, model, dataset):
    """The checks of a model request that need the dataset read (but not the model loaded)."""
    _, layers, spec = _plan(opts, model)
    if isinstance(dataset, ClassesDataset) and taps_of(layers) and spec.modalities == ("text",):
        raise _no_class_text_taps()


def _no_class_text_taps():
    return UsageError("layer taps of a text model on a classification dataset are not supported: its rows are "
                      "means over class texts of the final embeddings")


def make_sidecar(plan: "Plan", layer, modality, batch_size):
    """The one constructor of an embeddings sidecar: what the rows of ``layer`` / ``modality`` were made from."""
    opts, base, spec, encoder, dataset, perturb = (plan.opts, plan.base, plan.spec, plan.encoder, plan.dataset,
                                                   plan.perturb)
    classes = isinstance(dataset, ClassesDataset)
    paths = getattr(dataset, "paths", None)
    dropped_files = [str(f) for f in getattr(dataset, "dropped_files", ())]
    fields_ = dict(
        model=base.at(layer).text, base=base.base, layer=layer,
        init="random (torch.manual_seed(0))" if base.random else "pretrained",
        family=spec.family, hub_id=spec.hub_id, revision=spec.revision,
        weights=None if base.random and opts.weights is None else str(encoder.source),
        weights_flag=_weights_flag(opts.weights),
        pooling=spec.pooling if layer == FINAL else
        f"output of module {layer}: mean over spatial positions or (non-padding) tokens"
        + (", then over an image's captions" if modality == "text" else ""),
        # real paths: a relative path means another folder from another working directory (sides.check_same_source)
        modality=modality, dataset=opts.name, images=_real(dataset.image_dir),
        captions=_real(dataset.captions_file),
        captions_digest=None if dataset.captions_file is None else file_digest(dataset.captions_file),
        images_stat=None if paths is None or modality != "img" else
        stat_digest(dataset.image_dir, [os.path.relpath(p, dataset.image_dir) for p in paths]),
        image_ids=list(dataset.ids), dropped={str(k): v for k, v in dataset.dropped.items()},
        # both modalities: an image repaired or put back since would now give a row of each
        dropped_files=dropped_files or None,
        dropped_stat=stat_digest(dataset.image_dir, dropped_files, missing_ok=True) if dropped_files else None,
        files=None if classes or paths is None else [os.path.relpath(p, dataset.image_dir) for p in paths],
        precision=opts.precision, batch_size=batch_size, versions=_versions(),
        fold_bn=opts.fold_bn if modality == "img" else None,
        folded_batchnorm=encoder.folded_batchnorm if modality == "img" else None,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    if classes:
        fields_.update(dataset.sidecar_fields(modality))
    if perturb is not None:
        fields_["perturbation"] = perturb.record(opts.perturb_seed)
    return Sidecar(**fields_)


def check_finite(rows, out, model, opts: EmbedOptions):
    """NaN or inf rows are refused before anything is written (and the saved chunks, which hold them, are
    removed), naming the model and its weights."""
    bad = nonfinite_rows(rows)
    if not bad:
        return
    remove_partial(out)
    weights = f" with --weights {opts.weights}" if opts.weights else ""
    why = ("half precision can overflow: use --precision fp32" if opts.precision != "fp32" else
           "its weights hold NaN or inf, or an input makes it overflow: check the checkpoint")
    raise DataError(f"{model}{weights} gave NaN or inf in {len(bad)} of {rows.shape[0]} rows (first {bad[:5]}) "
                    f"for {out}; nothing was written ({why})")


@dataclass
class Plan:
    """One model request, checked and loaded before any row is computed: the dataset (caption perturbation
    applied), the encoder, and which layers each modality runs (``runs``; empty with --list-layers, whose
    answer is ``traces``)."""
    opts: EmbedOptions
    base: ModelName
    spec: object
    perturb: Optional[Perturbation]
    dataset: object
    encoder: object
    device: object
    taps: list
    traces: dict   # modality -> {module path: output shape for one input}; only with taps or --list-layers
    runs: dict     # modality -> the layers it runs (CLIP's vision layers are not run for text)

    def path(self, layer, modality):
        return side_file(self.opts.data_dir, self.opts.name,
                         Side(self.base.at(layer).text, modality, perturbation=self.perturb))

    @property
    def outputs(self):
        return [self.path(layer, m) for m, its_layers in self.runs.items() for layer in its_layers]

    @property
    def classes(self):
        return isinstance(self.dataset, ClassesDataset)


def plan_model(opts: EmbedOptions, model, device, dataset=None) -> Plan:
    """Every check of a request, in the order that costs least: the name and flags, the dataset (read and
    checked unless given), the caption perturbation, the encoder (loaded), its layers (traced on one input)."""
    base, layers, spec = _plan(opts, model)
    perturb = _perturbation(opts, spec.modalities)
    dataset = dataset if dataset is not None else open_dataset(opts)
    check_with_dataset(opts, model, dataset)
    classes = isinstance(dataset, ClassesDataset)
    if perturb is not None and perturb.spec.modality == "text":
        if classes:
            raise UsageError(f"--perturb {perturb}: caption perturbations need a captions dataset (--captions "
                             f"FILE); a classification dataset's text rows are class texts")
        dataset = replace(dataset, captions=perturb_captions(dataset.captions, perturb, opts.perturb_seed))
    with quiet_output(opts.quiet):  # weights loading prints and draws progress bars
        encoder = load_encoder(base, device, opts.weights)
    _perturbation(opts, encoder.modalities)  # hf: ids know their modalities only once loaded
    taps = taps_of(layers)
    encoder.check_layers(taps)  # before any extraction: a typo costs nothing
    traces = {}
    if opts.list_layers or taps:
        with torch.inference_mode():
            traces = {m: encoder.trace(m, _one_input(encoder, dataset, m)) for m in encoder.modalities}
    plan = Plan(opts, base, spec, perturb, dataset, encoder, device, taps, traces, runs={})
    if opts.list_layers:
        return plan
    plan.runs = {m: [l for l in layers if l == FINAL or isinstance(traces[m].get(l), tuple)]
                 for m in encoder.modalities if _wanted(perturb, m)}
    unrun = [l for l in taps if not any(l in v for v in plan.runs.values())]
    if unrun:
        raise UsageError(f"{base}: layer(s) {', '.join(unrun)} give no tensor when it computes its rows "
                         f"(see --list-layers)")
    if classes and taps_of(plan.runs.get("text", [])):  # a two-tower model's text taps
        raise _no_class_text_taps()
    return plan


def layer_listing(plan: Plan):
    """--list-layers: each modality's module paths with their output shapes for one input."""
    lines = []
    for modality, shapes in plan.traces.items():
        lines.append(f"# {plan.base} {modality}: module path, output shape for one input")
        lines += [f"{p}\t{'not run' if shape is None else shape}" for p, shape in shapes.items()]
    return lines


def extract_rows(plan: Plan, modality, todo, rank=0, world=1):
    """The rows of ``todo`` (layer -> output file) for one modality, in one forward pass a batch. Returns
    (layer -> rows, the batch size used); ranks other than 0 return their share's rows unsaved."""
    opts, encoder, dataset, perturb = plan.opts, plan.encoder, plan.dataset, plan.perturb
    batch_size = resolve_batch_size(opts.batch_size, plan.device, modality)
    if modality == "img" and opts.fold_bn:
        encoder.fold_batchnorm(_one_input(encoder, dataset, "img"), keep=plan.taps)
    if plan.classes and modality == "text":  # one row per class: the mean over its texts
        return {FINAL: extract_class_texts(encoder, dataset, batch_size, opts.precision,
                                           progress=not opts.quiet and rank == 0)}, batch_size
    image_perturb = (image_perturbation(perturb, opts.perturb_seed)
                     if perturb is not None and modality == "img" else None)
    rows = extract_layers(encoder, dataset, modality, todo, batch_size, opts.num_workers, opts.precision,
                          opts.chunk_size, rank, world, progress=not opts.quiet, fresh=opts.overwrite,
                          perturb=image_perturb,
                          perturbation=perturb.record(opts.perturb_seed) if perturb else None)
    return rows, batch_size


def save_rows(plan: Plan, modality, todo, rows, batch_size):
    """Each layer's rows checked (finite) and written with its sidecar, tensor first (files.save_embeddings);
    the chunks of a resumable extraction removed after. Returns the lines to print."""
    lines = []
    for layer, out in todo.items():
        check_finite(rows[layer], out, plan.base.at(layer).text, plan.opts)
        save_embeddings(rows[layer], out, make_sidecar(plan, layer, modality, batch_size))
        remove_partial(out)
        lines.append(f"wrote {out} ({rows[layer].shape[0]} x {rows[layer].shape[1]})")
    return lines


def extract_model(opts: EmbedOptions, model, device, rank=0, world=1, dataset=None):
    """Embeddings of ``model`` over ``opts.dataset``: plan (every check, the encoder loaded), then per
    modality extract and save every requested layer, files that exist skipped unless opts.overwrite. Returns
    the lines to print (what was written or skipped; --list-layers: the module paths); ranks other than 0
    write nothing and return []."""
    plan = plan_model(opts, model, device, dataset)
    if opts.list_layers:
        return layer_listing(plan)
    lines = []
    # rank 0 holds a lock beside each output: a second extraction of it is refused, so neither can discard or
    # delete the other's chunks
    with output_lock(plan.outputs) if rank == 0 else contextlib.nullcontext():
        for modality, its_layers in plan.runs.items():
            todo = {}
            for layer in its_layers:
                if plan.path(layer, modality).exists() and not opts.overwrite:
                    lines.append(f"{plan.path(layer, modality)} exists, skipped (--overwrite to recompute)")
                else:
                    todo[layer] = plan.path(layer, modality)
            if not todo:
                continue
            rows, batch_size = extract_rows(plan, modality, todo, rank, world)
            if rank == 0:
                lines += save_rows(plan, modality, todo, rows, batch_size)
    if rank != 0:
        return []
    if plan.dataset.dropped:
        lines.append(f"dropped {len(plan.dataset.dropped)} image(s), listed in the sidecar: "
                     + json.dumps(dict(list(plan.dataset.dropped.items())[:3]), default=str))
    return lines
