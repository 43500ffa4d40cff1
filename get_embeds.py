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
Several models, a cluster job each: python get_embeds.py --m dinov2 clip allroberta --d coco nocaps --launcher slurm
Perturbed inputs, a file each:  python get_embeds.py --m mpnet --d NAME --images DIR --captions FILE --perturb drop:0.25
(run.py reads them as the side mpnet:text~drop:0.25; src/perturb.py defines every kind)
"""
import os
import sys

import torch
import torch.distributed as dist

from src.cli import (
    ArgumentParser,
    UsageError,
    add_device_args,
    batch_size_arg,
    check_device_name,
    positive_int,
    resolve_device,
    run_main,
    workers_arg,
)
from src.embed import (
    EmbedOptions,
    check_model,
    check_with_dataset,
    extract_model,
    open_dataset,
    output_files,
)
from src.encoders import REGISTRY
from src.extraction import AUTO_BATCH_DEFAULT, PRECISIONS
from src.launch import add_launch_args, launch_options
from src.openclip import POOLING as OPENCLIP_POOLING
from src.perturb import INPUT, KINDS
from src.tvdatasets import ROOT_VAR as TV_ROOT_VAR


class DefaultDatasets(list):
    """--d's default (coco), told apart from a --d that was given: --list-layers needs no dataset unless asked."""


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
    p.add_argument("--m", "--model", "--model_name", dest="model", nargs="+", default=["dinov2"], metavar="MODEL",
                   help="[random:]NAME[@LAYER], one or more (one after another; with --launcher a job each): NAME a "
                        "registry name (listed below) or hf:<repo>, timm:<name>, st:<name>, clip:<repo>, "
                        "openclip:ARCH/TAG, openclip:hf-hub:ORG/NAME; LAYER a module path as --list-layers prints it")
    p.add_argument("--layers", nargs="+", default=None, metavar="LAYER",
                   help="several layers from one forward pass, one file each ('final': the model's usual row, "
                        "the plain MODEL file)")
    p.add_argument("--list-layers", action="store_true",
                   help="print every module path with its output shape, then exit: for one blank image and one "
                        "caption (needs only --m), or with --d for the dataset's first input")
    p.add_argument("--d", "--dataset", dest="dataset", nargs="+", default=DefaultDatasets(["coco"]), metavar="DATASET",
                   help="coco, nocaps, or any name with --images and --captions (captions dataset) or with "
                        "--images ROOT alone (classification dataset: an ImageFolder root, a class a sub-folder), "
                        "or tv:NAME (a torchvision classification dataset); several: coco nocaps (found through "
                        "COCO_ROOT, NOCAPS_ROOT)")
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
    p.add_argument("--no-fold-bn", dest="fold_bn", action="store_false",
                   help="run BatchNorm layers apart from the convolutions before them (rows exactly the unfolded "
                        "model's; by default they are folded for image rows, checked on the first image: rows "
                        "move by float32 rounding, the forward pass runs faster; see docs/speed.md)")
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
    add_launch_args(p)
    return p


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
    parser = build_parser()

    def body(args):
        launch = launch_options(args, parser)
        if args.list_layers and not launch and isinstance(args.dataset, DefaultDatasets) and not _dataset_flags(args):
            return _list_layers(args)
        models, datasets = list(dict.fromkeys(args.model)), list(dict.fromkeys(args.dataset))
        if len(datasets) > 1 and (args.images or args.captions or args.classes or args.templates
                                  or args.descriptions or args.split):
            raise UsageError("--images / --captions / --classes / --templates / --descriptions / --split locate one "
                             "dataset: give one --d per command (several --d find coco and nocaps through "
                             "COCO_ROOT and NOCAPS_ROOT)")
        if len(models) > 1 and args.weights:
            raise UsageError("--weights holds one model's weights: give one --m with it")
        requests = [(EmbedOptions.from_args(args, d), m) for d in datasets for m in models]
        for opts, model in requests:  # every name and flag before anything is loaded
            check_model(opts, model)
        todo = []
        for opts, model in requests:
            outputs = output_files(opts, model)
            if not args.list_layers and outputs and all(p.exists() for p in outputs) and not args.overwrite:
                print("\n".join(f"{p} exists, skipped (--overwrite to recompute)" for p in outputs))
            else:
                todo.append((opts, model))
        if launch:
            return _launch(todo, launch, args)
        if not todo:
            return 0
        rank, world, device = _distributed(args.device, args.gpu)
        try:
            opened = {}  # one read of a dataset's captions and image list for all its models
            for opts, model in todo:
                if opts not in opened:
                    opened[opts] = open_dataset(opts)
                lines = extract_model(opts, model, device, rank, world, dataset=opened[opts])
                if rank == 0 and lines:
                    print("\n".join(lines), flush=True)
        finally:
            if world > 1 and dist.is_initialized():
                dist.destroy_process_group()
        return 0

    return run_main(parser, argv, body)


def _dataset_flags(args):
    """The flags that locate or change a dataset's inputs, as given."""
    return [f for f, v in (("--images", args.images), ("--captions", args.captions), ("--classes", args.classes),
                           ("--templates", args.templates), ("--descriptions", args.descriptions),
                           ("--split", args.split)) if v]


def _list_layers(args):
    """--list-layers with --m alone: each model's modules traced on one blank image and one caption."""
    from src.cli import quiet_output
    from src.encoders import check_model_name, list_layers
    models = list(dict.fromkeys(args.model))
    for model in models:  # every name before anything is loaded
        check_model_name(model, args.weights)
    device = resolve_device(args.device, args.gpu)
    for model in models:
        with quiet_output(args.quiet):
            lines = list_layers(model, device, args.weights)
        print("\n".join(lines), flush=True)
    return 0


def _launch(todo, launch_opts, args):
    """--launcher: one job per model and dataset whose files are missing, after every dataset was read and
    checked here; then what each job wrote, and one line per failed job."""
    from src import launch
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("--launcher submits jobs: start it with python, not torchrun")
    if args.list_layers:
        raise UsageError("--list-layers prints here: drop --launcher")
    if launch_opts.launcher == "slurm":
        if args.device != "auto":
            check_device_name(args.device)
    else:
        resolve_device(args.device, args.gpu)
    if not todo:
        print("nothing to run: every file exists")
        return 0
    for opts in dict.fromkeys(opts for opts, _ in todo):
        dataset = open_dataset(opts)  # images listed, captions read: a wrong path fails here, not in a job
        for model in [m for o, m in todo if o == opts]:
            check_with_dataset(opts, model, dataset)

    def writes(opts, model):
        files = output_files(opts, model)
        return ", ".join(map(str, files)) if files else f"{opts.data_dir}/ (the modalities the model has)"
    specs = [launch.JobSpec(f"{model} on {opts.name}", writes(opts, model), launch.embed_job, (opts, model))
             for opts, model in todo]
    outcome = launch.launch(specs, launch_opts, "get_embeds", "the same command again skips the files written "
                                                              "and runs only what is missing")
    for _, lines in outcome.results:
        if lines:
            print("\n".join(lines))
    return launch.print_failures(outcome, len(specs))


if __name__ == "__main__":
    sys.exit(main())
