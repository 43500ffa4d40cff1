"""Image and caption embeddings of one model over one captions dataset (or one classification dataset).

The paper's command works as written (with the dataset's location in a flag or COCO_ROOT / NOCAPS_ROOT):
    python get_embeds.py --m dinov2 --d coco --gpu 0
Any COCO-format captions file:  python get_embeds.py --m minilm --d NAME --images DIR --captions FILE
Several GPUs:                   torchrun --nproc_per_node 4 get_embeds.py --m dinov2 --d coco
Classification (ImageFolder):   python get_embeds.py --m minilm --d NAME --images ROOT [--classes FILE]
(one image row per image, one text row per class: the mean over the templates of the normalised prompts)
torchvision's datasets:         python get_embeds.py --m minilm --d tv:CIFAR100 --split test --images ROOT
Class descriptions (EX2):       python get_embeds.py --m minilm --d NAME-informative --images ROOT --descriptions FILE
(a class row is the mean of its normalised description embeddings; run.py reads it as minilm:text:informative)
open_clip models:               python get_embeds.py --m openclip:ViT-B-32/laion2b_s34b_b79k --d coco
Layer taps, one forward pass:   python get_embeds.py --m efficientnet_lite0 --layers _blocks.4 _blocks.8 final
Which layers there are:         python get_embeds.py --m efficientnet_lite0 --list-layers
"""
import json
import os
import platform
import sys
from datetime import datetime, timezone

import torch
import torch.distributed as dist

from src.cli import (ArgumentParser, DataError, UsageError, add_device_args, batch_size_arg, positive_int, workers_arg,
                     quiet_output, resolve_device, run_main)
from src.datasets import ClassesDataset, class_text_source, load_dataset, read_templates
from src.encoders import REGISTRY, get_spec, load_encoder
from src.files import Sidecar, file_digest, read_sidecar, save_embeddings, side_file
from src.extraction import (AUTO_BATCH_DEFAULT, PRECISIONS, extract_class_texts, extract_layers, remove_partial,
                            resolve_batch_size)
from src.names import FINAL, Side, parse_model
from src.openclip import POOLING as OPENCLIP_POOLING
from src.tvdatasets import ROOT_VAR as TV_ROOT_VAR
from src.tvdatasets import is_tv, load_tv_dataset, parse_tv_name


def build_parser():
    names = "\n".join(f"  {n}: {s.pooling}" for n, s in REGISTRY.items())
    p = ArgumentParser(prog="get_embeds.py", description=__doc__.split("\n")[0],
                       epilog=f"models:\n{names}\n  hf:<repo>, timm:<name>, st:<name>, clip:<repo>: any hub model\n"
                              f"  openclip:ARCH/TAG (open_clip.list_pretrained()), openclip:ARCH/FILE (a local "
                              f"checkpoint; an absolute path is ARCH//path), openclip:ARCH with --weights FILE, "
                              f"openclip:hf-hub:ORG/NAME: {OPENCLIP_POOLING}\n"
                              f"  random:MODEL: MODEL's architecture and preprocessing, weights initialised after "
                              f"torch.manual_seed(0)\n"
                              f"  MODEL@LAYER: the spatial / token mean of a module's output (see --list-layers)\n"
                              f"datasets:\n"
                              f"  coco, nocaps, NAME --images DIR --captions FILE: captions (COCO format)\n"
                              f"  NAME --images ROOT: an ImageFolder tree, a class a sub-folder\n"
                              f"  tv:NAME[:SPLIT]: a torchvision.datasets class (tv:CIFAR100, tv:Caltech101, "
                              f"tv:Food101, ...) under --images ROOT or ${TV_ROOT_VAR}; files and run.py name it "
                              f"tv:NAME:SPLIT when --split is given\n"
                              f"  DATA-VARIANT: DATA with other class texts (--descriptions), read by run.py as "
                              f"the side MODEL:text:VARIANT against --base_data DATA")
    p.add_argument("--m", "--model", "--model_name", dest="model", default="dinov2", metavar="MODEL",
                   help="[random:]NAME[@LAYER]: NAME a registry name (listed below) or hf:<repo>, timm:<name>, "
                        "st:<name>, clip:<repo>, openclip:ARCH/TAG, openclip:hf-hub:ORG/NAME; LAYER a module path "
                        "as --list-layers prints it")
    p.add_argument("--layers", nargs="+", default=None, metavar="LAYER",
                   help="several layers from one forward pass, one file each ('final': the model's usual row, "
                        "the plain MODEL file)")
    p.add_argument("--list-layers", action="store_true",
                   help="print every module path with its output shape for one input of the dataset, then exit")
    p.add_argument("--d", "--dataset", dest="dataset", default="coco",
                   help="coco, nocaps, or any name with --images and --captions (captions dataset) or with "
                        "--images ROOT alone (classification dataset: an ImageFolder root, a class a sub-folder), "
                        "or tv:NAME (a torchvision classification dataset)")
    p.add_argument("--images", default=None, help="images folder (coco: $COCO_ROOT/val2017), an ImageFolder root, "
                                                  f"or a tv: dataset's root (default: ${TV_ROOT_VAR})")
    p.add_argument("--captions", default=None, help="COCO-format captions json (coco: $COCO_ROOT/annotations/"
                                                    "captions_val2017.json)")
    p.add_argument("--classes", default=None,
                   help="classification: json mapping each class folder to the class name to prompt with "
                        "(None: the folder name with _ -> space)")
    p.add_argument("--templates", default=None,
                   help="classification: prompt templates with {} for the class name, a json list or a text file "
                        "one a line (None: CLIP's 7-template ensemble, DEFAULT_TEMPLATES in src/datasets.py)")
    p.add_argument("--descriptions", default=None, metavar="FILE.json",
                   help="classification: class texts from a json {class name: [sentence, ...]} keyed by the class "
                        "names the sidecar records; a class row is the mean of its L2-normalised description "
                        "embeddings, each embedded as written (not with --templates). Give the rows their own "
                        "dataset name (--d DATA-VARIANT)")
    p.add_argument("--split", default=None,
                   help="tv: datasets: the split (torchvision's split argument, or train / test for its train "
                        "argument; None: the class's default, recorded in the sidecar)")
    p.add_argument("--download", action="store_true",
                   help="tv: datasets: let torchvision download the dataset into the root when it is not there")
    p.add_argument("-b", "--batch-size", type=batch_size_arg, default="auto",
                   help=f"images a batch (for text: the captions of that many images, or that many class "
                        f"prompts); auto: images 1 a batch on the CPU (faster there than batches), "
                        f"{AUTO_BATCH_DEFAULT} on a GPU; text {AUTO_BATCH_DEFAULT} everywhere")
    p.add_argument("-j", "--num-workers", type=workers_arg, default="auto",
                   help="DataLoader workers decoding images (0: decode in the main process); auto: on the CPU "
                        "the cores beyond 2 (up to 4; 0 on a 2-core machine, where workers slow the forward "
                        "pass down), on a GPU up to 4")
    add_device_args(p)
    p.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32",
                   help="fp32 (faithful) or autocast bf16 / fp16; rows are always saved as float32")
    p.add_argument("--data-dir", default="data", help="where the .pt files and their sidecars go")
    p.add_argument("--weights", default=None,
                   help="load the model from this local folder (save_pretrained) or file instead of the hub")
    p.add_argument("--chunk-size", type=positive_int, default=512, help="images per saved chunk (resume granularity)")
    p.add_argument("--skip-missing", action="store_true",
                   help="drop images that are missing, undecodable or without captions (from both modalities)")
    p.add_argument("--overwrite", action="store_true", help="recompute outputs that exist")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or logs")
    return p


def _versions():
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for mod in ("transformers", "timm", "sentence_transformers", "torchvision"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return out


def _distributed(device_arg, gpu):
    """(rank, world_size, device): torchrun sets WORLD_SIZE; each rank takes its own GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, resolve_device(device_arg, gpu)
    device = resolve_device(device_arg, gpu)
    if device.type == "cuda":
        device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world, device


def taps_of(layers):
    return [layer for layer in layers if layer != FINAL]


def _one_input(encoder, dataset, modality):
    """One image (preprocessed, on the device) or one caption (or class text) of the dataset, as a batch
    of one."""
    if modality == "img":
        return encoder.prepare(encoder.transform(dataset.open_image(0))[None])
    if isinstance(dataset, ClassesDataset):
        return [dataset.class_texts(0)[:1]]
    return [dataset.captions[0][:1]]


def dataset_name(args):
    """The name files, sidecars and run.py use: --d as given, or a tv: name with --split folded in."""
    return parse_tv_name(args.dataset, args.split).text if is_tv(args.dataset) else args.dataset


def open_dataset(args, name):
    """The dataset the flags name: a tv: dataset (root from --images or $TORCHVISION_ROOT), else a captions
    dataset or an ImageFolder tree (src/datasets.load_dataset)."""
    if is_tv(args.dataset):
        given = [f for f, v in (("--captions", args.captions), ("--skip-missing", args.skip_missing)) if v]
        if given:
            raise UsageError(f"--d {args.dataset}: {' and '.join(given)} do not apply to a torchvision dataset")
        root = args.images or os.environ.get(TV_ROOT_VAR)
        if not root:
            raise UsageError(f"--d {args.dataset}: give its root, --images ROOT or ${TV_ROOT_VAR} (the folder "
                             f"torchvision reads it from, or downloads it into with --download)")
        return load_tv_dataset(name, root, args.split, args.download, args.classes, args.templates,
                               args.descriptions)
    given = [f for f, v in (("--split", args.split), ("--download", args.download)) if v]
    if given:
        raise UsageError(f"{' and '.join(given)}: only for a torchvision dataset (--d tv:NAME)")
    with quiet_output(args.quiet):  # pycocotools prints while it reads the captions
        return load_dataset(args.dataset, args.images, args.captions, args.skip_missing, classes=args.classes,
                            templates=args.templates, descriptions=args.descriptions)


def _describe_class_texts(source):
    if source.get("descriptions_digest"):
        return f"descriptions {source['descriptions_file']} (sha1 {source['descriptions_digest'][:12]})"
    return f"templates {source['templates']}"


def check_class_text_file(path, args, name):
    """A class text file that exists must hold rows from the class texts these flags ask for: otherwise
    "exists, skipped" would pair templates rows with a descriptions run (or two description files)."""
    side = read_sidecar(path)
    if side is None or side.task_data != "classes" or args.overwrite:
        return
    if args.descriptions and not os.path.isfile(args.descriptions):
        return  # reading the dataset says so
    want = class_text_source(None if args.descriptions else read_templates(args.templates), args.templates,
                             args.descriptions, file_digest(args.descriptions) if args.descriptions else None)
    have = {"templates": side.templates, "descriptions_file": side.descriptions_file,
            "descriptions_digest": side.descriptions_digest}
    if (have["descriptions_digest"], have["templates"]) != (want["descriptions_digest"], want["templates"]):
        raise DataError(f"{path} holds class text rows from {_describe_class_texts(have)}, not from "
                        f"{_describe_class_texts(want)}; pass --overwrite to replace them, or give these rows "
                        f"their own dataset name (--d {name}-VARIANT, which run.py reads as the side "
                        f"MODEL:text:VARIANT against --base_data {name})")


def main(argv=None):
    def body(args):
        name = parse_model(args.model)
        if not args.dataset or any(c in args.dataset for c in "/\\") or args.dataset in (".", ".."):
            raise UsageError(f"--d {args.dataset!r}: a dataset name becomes part of a file name, so it cannot be "
                             f"empty or hold / or \\ (the folders go in --images and --captions)")
        if args.layers and name.layer:
            raise UsageError(f"--m {args.model} --layers: give the layer in the name or with --layers, not both")
        layers = list(dict.fromkeys(args.layers or [name.layer or FINAL]))
        base = name.at(None)
        spec = get_spec(base.base)
        data_name = dataset_name(args)

        def path(layer, modality):
            return side_file(args.data_dir, data_name, Side(base.at(layer).text, modality))

        outputs = [path(l, m) for l in layers for m in spec.modalities]
        for p in outputs:
            if p.exists() and p.name.endswith("_text.pt"):
                check_class_text_file(p, args, data_name)
        if not args.list_layers and outputs and all(p.exists() for p in outputs) and not args.overwrite:
            print("\n".join(f"{p} exists, skipped (--overwrite to recompute)" for p in outputs))
            return 0
        rank, world, device = _distributed(args.device, args.gpu)
        try:
            dataset = open_dataset(args, data_name)
            classes = isinstance(dataset, ClassesDataset)
            no_text_taps = UsageError("layer taps of a text model on a classification dataset are not supported: "
                                      "its rows are means over class texts of the final embeddings")
            if classes and taps_of(layers) and spec.modalities == ("text",):
                raise no_text_taps
            with quiet_output(args.quiet):  # weights loading prints and draws progress bars
                encoder = load_encoder(base, device, args.weights)
            taps = taps_of(layers)
            encoder.check_layers(taps)  # before any extraction: a typo costs nothing
            if args.list_layers or taps:
                with torch.inference_mode():
                    traces = {m: encoder.trace(m, _one_input(encoder, dataset, m)) for m in encoder.modalities}
            if args.list_layers:
                for modality, shapes in traces.items():
                    print(f"# {base} {modality}: module path, output shape for one input")
                    for p, shape in shapes.items():
                        print(f"{p}\t{'not run' if shape is None else shape}")
                return 0
            # which layers each modality runs (CLIP's vision layers are not run for text)
            runs = {m: [l for l in layers if l == FINAL or isinstance(traces[m].get(l), tuple)]
                    for m in encoder.modalities}
            unrun = [l for l in taps if not any(l in v for v in runs.values())]
            if unrun:
                raise UsageError(f"{base}: layer(s) {', '.join(unrun)} give no tensor when it computes its rows "
                                 f"(see --list-layers)")
            if classes and taps_of(runs.get("text", [])):
                raise no_text_taps
            written = []
            for modality, its_layers in runs.items():
                todo = {}
                for layer in its_layers:
                    if path(layer, modality).exists() and not args.overwrite:
                        print(f"{path(layer, modality)} exists, skipped (--overwrite to recompute)")
                    else:
                        todo[layer] = path(layer, modality)
                if not todo:
                    continue
                batch_size = resolve_batch_size(args.batch_size, device, modality)
                if classes and modality == "text":  # one row per class: the mean over its texts
                    rows = {FINAL: extract_class_texts(encoder, dataset, batch_size, args.precision,
                                                       progress=not args.quiet and rank == 0)}
                else:
                    rows = extract_layers(encoder, dataset, modality, todo, batch_size, args.num_workers,
                                          args.precision, args.chunk_size, rank, world, progress=not args.quiet)
                if rank != 0:
                    continue
                for layer, out in todo.items():
                    fields = dict(
                        model=base.at(layer).text, base=base.base, layer=layer,
                        init="random (torch.manual_seed(0))" if base.random else "pretrained",
                        family=spec.family, hub_id=spec.hub_id, revision=spec.revision,
                        weights=None if base.random and args.weights is None else str(encoder.source),
                        pooling=spec.pooling if layer == FINAL else
                        f"output of module {layer}: mean over spatial positions or (non-padding) tokens"
                        + (", then over an image's captions" if modality == "text" else ""),
                        modality=modality, dataset=data_name, images=str(dataset.image_dir),
                        captions=None if dataset.captions_file is None else str(dataset.captions_file),
                        image_ids=list(dataset.ids), dropped={str(k): v for k, v in dataset.dropped.items()},
                        precision=args.precision, batch_size=batch_size, versions=_versions(),
                        created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
                    if classes:
                        fields.update(dataset.sidecar_fields(modality))
                    save_embeddings(rows[layer], out, Sidecar(**fields))
                    remove_partial(out)
                    written.append(f"wrote {out} ({rows[layer].shape[0]} x {rows[layer].shape[1]})")
            if rank == 0:
                print("\n".join(written))
                if dataset.dropped:
                    print(f"dropped {len(dataset.dropped)} image(s), listed in the sidecar: "
                          + json.dumps(dict(list(dataset.dropped.items())[:3]), default=str))
        finally:
            if world > 1 and dist.is_initialized():
                dist.destroy_process_group()
        return 0

    return run_main(build_parser(), argv, body)


if __name__ == "__main__":
    sys.exit(main())
