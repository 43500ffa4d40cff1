"""Seeded graph matching: the paper's scipy FAQ (500 randomized restarts, one after another) against the
batched solver of src/faq.py, both through src/matching.py's graph_matching, on the same problem (320 anchors + 500
queries of the bundled flickr1k demo embeddings, seed 0). Prints seconds, best objective and matching
accuracy of each, and the time ratios.

    python benchmarks/bench_qap.py [--restarts 500] [--device cpu] [--seeds 0] [--skip-scipy]
    python benchmarks/bench_qap.py --smoke          # seconds: tiny sizes (what CI runs)
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402

from src import utils  # noqa: E402
from src.files import load_embeddings, side_file  # noqa: E402
from src.matching import graph_matching  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--restarts", type=int, default=500, help="scipy restarts (the paper's 500)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="query seeds (seed2), one problem each")
    p.add_argument("--data-dir", default=os.path.join(os.path.dirname(__file__), "..", "data"))
    p.add_argument("--skip-scipy", action="store_true", help="only the fast solver (e.g. on a GPU)")
    p.add_argument("--anchors", type=int, default=320)
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--smoke", action="store_true",
                   help="a few seconds: 16 anchors, 24 queries, at most 8 restarts a run (CI runs it)")
    args = p.parse_args(argv)
    args.cap = None
    if args.smoke:
        args.anchors, args.queries, args.restarts, args.cap = 16, 24, 2, 8
    dev = torch.device(args.device)
    text = load_embeddings(side_file(args.data_dir, "flickr1k", "minilm:text"))
    img = load_embeddings(side_file(args.data_dir, "flickr1k", "efficientnet_lite0:img"))
    for seed2 in args.seeds:
        rows = utils.get_data_sep(0, seed2, args.anchors, args.queries, text, img, text, img, None, None, 0, True,
                                  False)
        sb, tb, sq, tq = (t.to(dev) for t in rows)
        print(f"\nproblem: {args.anchors} anchors + {args.queries} queries, flickr1k minilm (text) -> "
              f"efficientnet_lite0 (img), seed2 {seed2}, device {dev}, {torch.get_num_threads()} threads")
        bench_one(args, dev, sb, tb, sq, tq)


def bench_one(args, dev, sb, tb, sq, tq):
    rows = []
    if not args.skip_scipy:
        t = time.perf_counter()
        acc, info = graph_matching(sb, tb, sq, tq, dev, restarts=args.restarts, seed=0, solver="scipy", progress=False)
        rows.append((f"scipy randomized x{args.restarts}", time.perf_counter() - t, info["objective"],
                     info["restarts"], acc))
    runs = [("fast randomized x500", dict(init="randomized", restarts=500, patience=None)),
            ("fast randomized, patience 10 (run.py's default)", dict(init="randomized", restarts=500, patience=10)),
            ("fast randomized, patience 20", dict(init="randomized", restarts=500, patience=20)),
            ("fast randomized, patience 10, --qap-polish",
             dict(init="randomized", restarts=500, patience=10, polish=True)),
            ("fast barycenter", dict(init="barycenter", restarts=1, patience=None)),
            ("fast warm relative x10", dict(init="relative", restarts=10, patience=None)),
            ("fast warm linear_local_CKA x10", dict(init="linear_local_CKA", restarts=10, patience=None)),
            ("fast warm kernel_local_CKA x10", dict(init="kernel_local_CKA", restarts=10, patience=None)),
            ("fast warm kernel_local_CKA, patience 10", dict(init="kernel_local_CKA", restarts=500, patience=10))]
    for label, opts in runs:
        if args.cap:
            opts = {**opts, "restarts": min(opts["restarts"], args.cap)}
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        acc, info = graph_matching(sb, tb, sq, tq, dev, solver="fast", seed=0, progress=False, **opts)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        rows.append((label, time.perf_counter() - t, info["objective"], info["restarts"], acc))
    ref = rows[0]
    w = max(len(r[0]) for r in rows)
    print(f"{'solver':<{w}}  {'seconds':>8}  {'objective':>12}  {'restarts':>8}  {'accuracy':>8}  {'speedup':>8}")
    for label, sec, obj, n, acc in rows:
        print(f"{label:<{w}}  {sec:8.2f}  {obj:12.6f}  {n:8d}  {acc:8.4f}  {ref[1] / sec:7.1f}x")
    print(f"speedup: time of '{ref[0]}' / time of the row")


if __name__ == "__main__":
    main()
