"""Image and caption embeddings of one model over one captions dataset (or one classification dataset).

The paper's command works as written (with the dataset's location in a flag or COCO_ROOT / NOCAPS_ROOT):
    python get_embeds.py --m dinov2 --d coco --gpu 0
Any COCO-format captions file:  python get_embeds.py --m minilm --d NAME --images DIR --captions FILE
Several GPUs:                   torchrun --nproc_per_node 4 get_embeds.py --m dinov2 --d coco
Classification (ImageFolder):   python get_embeds.py --m minilm --d NAME --images ROOT [--classes FILE]
(one image row per image, one text row per class: the mean over the templates of the normalised prompts)
"""
import json
import os
import platform
import sys
from datetime import datetime, timezone

import torch
import torch.distributed as dist

from src.cli import ArgumentParser, UsageError, add_device_args, resolve_device, run_main
from src.datasets import ClassesDataset, load_dataset
from src.embeddings import embedding_path, save_embeddings
from src.encoders import REGISTRY, get_spec, load_encoder
from src.extraction import PRECISIONS, extract, extract_class_texts, remove_partial


def build_parser():
    names = "\n".join(f"  {n}: {s.pooling}" for n, s in REGISTRY.items())
    p = ArgumentParser(prog="get_embeds.py", description=__doc__.split("\n")[0],
                       epilog=f"models:\n{names}\n  hf:<repo>, timm:<name>, st:<name>, clip:<repo>: any hub model")
    p.add_argument("--m", "--model", "--model_name", dest="model", default="dinov2", metavar="MODEL",
                   help="a registry name (listed below) or hf:<repo>, timm:<name>, st:<name>, clip:<repo>")
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
    p.add_argument("-b", "--batch-size", type=int, default=32, help="images per batch")
    p.add_argument("-j", "--num-workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="DataLoader workers decoding images")
    add_device_args(p)
    p.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32",
                   help="fp32 (faithful) or autocast bf16 / fp16; rows are always saved as float32")
    p.add_argument("--data-dir", default="data", help="where the .pt files and their sidecars go")
    p.add_argument("--weights", default=None,
                   help="load the model from this local folder (save_pretrained) or file instead of the hub")
    p.add_argument("--chunk-size", type=int, default=512, help="images per saved chunk (resume granularity)")
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


def main(argv=None):
    def body(args):
        spec = get_spec(args.model)
        if args.batch_size < 1 or args.chunk_size < 1:
            raise UsageError("--batch-size and --chunk-size must be at least 1")
        outputs = {m: embedding_path(args.data_dir, args.dataset, args.model, m) for m in spec.modalities}
        if outputs and all(p.exists() for p in outputs.values()) and not args.overwrite:
            print("\n".join(f"{p} exists, skipped (--overwrite to recompute)" for p in outputs.values()))
            return 0
        rank, world, device = _distributed(args.device, args.gpu)
        try:
            dataset = load_dataset(args.dataset, args.images, args.captions, args.skip_missing,
                                   classes=args.classes, templates=args.templates)
            encoder = load_encoder(args.model, device, args.weights)
            written = []
            for modality in encoder.modalities:
                path = embedding_path(args.data_dir, args.dataset, args.model, modality)
                if path.exists() and not args.overwrite:
                    print(f"{path} exists, skipped (--overwrite to recompute)")
                    continue
                if isinstance(dataset, ClassesDataset) and modality == "text":  # one row per class
                    rows = extract_class_texts(encoder, dataset, args.batch_size, args.precision,
                                               progress=not args.quiet and rank == 0)
                else:
                    rows = extract(encoder, dataset, modality, path, args.batch_size, args.num_workers,
                                   args.precision, args.chunk_size, rank, world, progress=not args.quiet)
                if rank != 0:
                    continue
                meta = {"model": args.model, "family": spec.family, "hub_id": spec.hub_id,
                        "revision": spec.revision, "weights": str(encoder.source), "pooling": spec.pooling,
                        "modality": modality, "dataset": args.dataset, "images": str(dataset.image_dir),
                        "captions": str(dataset.captions_file), "image_ids": dataset.ids,
                        "dropped": {str(k): v for k, v in dataset.dropped.items()},
                        "precision": args.precision, "versions": _versions(),
                        "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
                if isinstance(dataset, ClassesDataset):
                    meta.update(dataset.sidecar(modality))
                save_embeddings(rows, path, meta)
                remove_partial(path)
                written.append(f"wrote {path} ({rows.shape[0]} x {rows.shape[1]})")
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
