"""Image and caption embeddings of one model over one captions dataset (or one classification dataset).

The paper's command works as written (with the dataset's location in a flag or COCO_ROOT / NOCAPS_ROOT):
    python get_embeds.py --m dinov2 --d coco --gpu 0
Any COCO-format captions file:  python get_embeds.py --m minilm --d NAME --images DIR --captions FILE
Several GPUs:                   torchrun --nproc_per_node 4 get_embeds.py --m dinov2 --d coco
Classification (ImageFolder):   python get_embeds.py --m minilm --d NAME --images ROOT [--classes FILE]
(one image row per image, one text row per class: the mean over the templates of the normalised prompts)
Layer taps, one forward pass:   python get_embeds.py --m efficientnet_lite0 --layers _blocks.4 _blocks.8 final
Which layers there are:         python get_embeds.py --m efficientnet_lite0 --list-layers
Perturbed inputs, a file each:  python get_embeds.py --m mpnet --d NAME --images DIR --captions FILE --perturb drop:0.25
(run.py reads them as the side mpnet:text~drop:0.25; src/perturb.py defines every kind)
"""
import json
import os
import platform
import sys
from dataclasses import replace
from datetime import datetime, timezone

import torch
import torch.distributed as dist

from src.cli import (
    ArgumentParser,
    UsageError,
    add_device_args,
    batch_size_arg,
    positive_int,
    quiet_output,
    resolve_device,
    run_main,
    workers_arg,
)
from src.datasets import ClassesDataset, load_dataset, open_rgb
from src.encoders import REGISTRY, get_spec, load_encoder
from src.extraction import (
    AUTO_BATCH_DEFAULT,
    PRECISIONS,
    extract_class_texts,
    extract_layers,
    remove_partial,
    resolve_batch_size,
)
from src.files import Sidecar, read_sidecar, save_embeddings, side_file
from src.names import FINAL, Side, parse_model
from src.perturb import INPUT, KINDS, image_perturbation, parse_input_perturbation, perturb_captions


def build_parser():
    names = "\n".join(f"  {n}: {s.pooling}" for n, s in REGISTRY.items())
    p = ArgumentParser(prog="get_embeds.py", description=__doc__.split("\n")[0],
                       epilog=f"models:\n{names}\n  hf:<repo>, timm:<name>, st:<name>, clip:<repo>: any hub model\n"
                              f"  random:MODEL: MODEL's architecture and preprocessing, weights initialised after "
                              f"torch.manual_seed(0)\n"
                              f"  MODEL@LAYER: the spatial / token mean of a module's output (see --list-layers)")
    p.add_argument("--m", "--model", "--model_name", dest="model", default="dinov2", metavar="MODEL",
                   help="[random:]NAME[@LAYER]: NAME a registry name (listed below) or hf:<repo>, timm:<name>, "
                        "st:<name>, clip:<repo>; LAYER a module path as --list-layers prints it")
    p.add_argument("--layers", nargs="+", default=None, metavar="LAYER",
                   help="several layers from one forward pass, one file each ('final': the model's usual row, "
                        "the plain MODEL file)")
    p.add_argument("--list-layers", action="store_true",
                   help="print every module path with its output shape for one input of the dataset, then exit")
    p.add_argument("--d", "--dataset", dest="dataset", default="coco",
                   help="coco, nocaps, or any name with --images and --captions (captions dataset) or with "
                        "--images ROOT alone (classification dataset: an ImageFolder root, a class a sub-folder)")
    p.add_argument("--images", default=None, help="images folder (coco: $COCO_ROOT/val2017), or an ImageFolder root")
    p.add_argument("--captions", default=None, help="COCO-format captions json (coco: $COCO_ROOT/annotations/"
                                                    "captions_val2017.json)")
    p.add_argument("--classes", default=None,
                   help="classification: json mapping each class folder to the class name to prompt with "
                        "(None: the folder name with _ -> space)")
    p.add_argument("--templates", default=None,
                   help="classification: prompt templates with {} for the class name, a json list or a text file "
                        "one a line (None: CLIP's 7-template ensemble, DEFAULT_TEMPLATES in src/datasets.py)")
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
    p.add_argument("--perturb", default=None, metavar="KIND:LEVEL",
                   help="perturb the inputs, written to their own file (run.py's side MODEL:MODALITY~KIND:LEVEL): "
                        + "; ".join(f"{k.name}:{k.level}: {k.meaning}" for k in KINDS.values() if k.stage == INPUT))
    p.add_argument("--perturb-seed", type=int, default=0,
                   help="--perturb: seed of its random choices (recorded in the sidecar)")
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
    """One image (preprocessed, on the device) or one caption (or class prompt) of the dataset, as a batch
    of one."""
    if modality == "img":
        return encoder.prepare(encoder.transform(open_rgb(dataset.paths[0]))[None])
    if isinstance(dataset, ClassesDataset):
        return [dataset.prompts(0)[:1]]
    return [dataset.captions[0][:1]]


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
        # hf: ids know their modality only once loaded (spec.modalities is empty); checked again then
        perturb = None if args.perturb is None else parse_input_perturbation(args.perturb,
                                                                             spec.modalities or ("img", "text"))
        if perturb is not None and not 0 <= args.perturb_seed <= 2**32 - 1:
            raise UsageError(f"--perturb-seed {args.perturb_seed}: use a seed in 0..{2**32 - 1}")

        def wanted(modality):  # --perturb writes the files of the modality it perturbs only
            return perturb is None or modality == perturb.spec.modality
        modalities = [m for m in spec.modalities if wanted(m)]

        def path(layer, modality):
            return side_file(args.data_dir, args.dataset, Side(base.at(layer).text, modality, perturbation=perturb))

        outputs = [path(l, m) for l in layers for m in modalities]
        for p in outputs if perturb is not None and not args.overwrite else ():
            sidecar = read_sidecar(p) if p.exists() else None
            recorded = sidecar.perturbation if sidecar is not None else None
            if recorded and recorded.get("seed") != args.perturb_seed:
                raise UsageError(f"{p} exists, made with --perturb-seed {recorded.get('seed')}: add --overwrite to "
                                 f"replace it with seed {args.perturb_seed}")
        if not args.list_layers and outputs and all(p.exists() for p in outputs) and not args.overwrite:
            print("\n".join(f"{p} exists, skipped (--overwrite to recompute)" for p in outputs))
            return 0
        rank, world, device = _distributed(args.device, args.gpu)
        try:
            with quiet_output(args.quiet):  # pycocotools prints while it reads the captions
                dataset = load_dataset(args.dataset, args.images, args.captions, args.skip_missing,
                                       classes=args.classes, templates=args.templates)
            classes = isinstance(dataset, ClassesDataset)
            if perturb is not None and perturb.spec.modality == "text":
                if classes:
                    raise UsageError(f"--perturb {perturb}: caption perturbations need a captions dataset "
                                     f"(--captions FILE); a classification dataset's text rows are class prompts")
                dataset = replace(dataset, captions=perturb_captions(dataset.captions, perturb, args.perturb_seed))
            if classes and taps_of(layers) and "text" in spec.modalities:
                raise UsageError("layer taps of a text model on a classification dataset are not supported: "
                                 "its rows are prompt ensembles of the final embeddings")
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
            if perturb is not None:
                parse_input_perturbation(args.perturb, encoder.modalities)
            runs = {m: [l for l in layers if l == FINAL or isinstance(traces[m].get(l), tuple)]
                    for m in encoder.modalities if wanted(m)}
            unrun = [l for l in taps if not any(l in v for v in runs.values())]
            if unrun:
                raise UsageError(f"{base}: layer(s) {', '.join(unrun)} give no tensor when it computes its rows "
                                 f"(see --list-layers)")
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
                if classes and modality == "text":  # one row per class: the mean over the prompt templates
                    rows = {FINAL: extract_class_texts(encoder, dataset, batch_size, args.precision,
                                                       progress=not args.quiet and rank == 0)}
                else:
                    image_perturb = (image_perturbation(perturb, args.perturb_seed)
                                     if perturb is not None and modality == "img" else None)
                    rows = extract_layers(encoder, dataset, modality, todo, batch_size, args.num_workers,
                                          args.precision, args.chunk_size, rank, world, progress=not args.quiet,
                                          perturb=image_perturb,
                                          perturbation=perturb.record(args.perturb_seed) if perturb else None)
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
                        modality=modality, dataset=args.dataset, images=str(dataset.image_dir),
                        captions=None if dataset.captions_file is None else str(dataset.captions_file),
                        image_ids=list(dataset.ids), dropped={str(k): v for k, v in dataset.dropped.items()},
                        precision=args.precision, batch_size=batch_size, versions=_versions(),
                        created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
                    if classes:
                        fields.update(dataset.sidecar_fields(modality))
                    if perturb is not None:
                        fields["perturbation"] = perturb.record(args.perturb_seed)
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
