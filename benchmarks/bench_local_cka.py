"""Local CKA: the paper's per-pair loop against the all-pairs computation of src/utils.py.

Default problem: 320 anchors, 500 queries, d = 1024 on both sides, float32, CPU (the paper's default run).
The plain per-pair definition (the paper's KernelCKA / LinearCKA: H K H with an explicit centering matrix)
is timed on ``--plain-rows`` rows of the graph and extrapolated to all Q x Q pairs; the fast path is timed
on the full graph. Prints both, the ratio, and the largest |difference| over the rows computed both ways.

    python benchmarks/bench_local_cka.py                       # the paper's default sizes
    python benchmarks/bench_local_cka.py --q 5000 --plain-rows 0 --dtype float64   # memory at Q = 5,000
    python benchmarks/bench_local_cka.py --smoke                # seconds: tiny sizes (what CI runs)
"""
import argparse
import os
import resource
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402

from src import utils  # noqa: E402


class PaperCKA:
    """The paper's per-pair CKA objects: explicit H, H @ K @ H, three HSICs per pair."""

    def __init__(self, n, kernel, dtype, device):
        self.H = torch.eye(n, dtype=dtype, device=device) - torch.ones(n, n, dtype=dtype, device=device) / n
        self.kernel = kernel

    def gram(self, X):
        if not self.kernel:
            return X @ X.T
        G = X @ X.T
        D = torch.diag(G) - G + (torch.diag(G) - G).T
        sigma = torch.sqrt(torch.median(D[D != 0]))
        return torch.exp(D * (-0.5 / (sigma * sigma)))

    def hsic(self, X, Y):
        return torch.sum((self.H @ self.gram(X) @ self.H) * (self.H @ self.gram(Y) @ self.H))

    def calculate(self, X, Y):
        return self.hsic(X, Y) / (torch.sqrt(self.hsic(X, X)) * torch.sqrt(self.hsic(Y, Y)))


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--b", type=int, default=320, help="anchors")
    p.add_argument("--q", type=int, default=500, help="queries")
    p.add_argument("--d", type=int, default=1024, help="dimensions on both sides")
    p.add_argument("--plain-rows", type=float, default=1, help="graph rows timed with the per-pair loop")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3, help="fast path: best of this many runs")
    p.add_argument("--smoke", action="store_true", help="a few seconds: 16 anchors, 40 queries, d = 32 (CI runs it)")
    args = p.parse_args(argv)
    if args.smoke:
        args.b, args.q, args.d, args.plain_rows, args.repeats = 16, 40, 32, 1, 1
    dev, dtype = torch.device(args.device), getattr(torch, args.dtype)
    g = torch.Generator().manual_seed(0)
    Z = torch.randn(args.b + args.q, 64, generator=g)
    X = (Z @ torch.randn(64, args.d, generator=g) + torch.randn(args.b + args.q, args.d, generator=g))
    Y = (torch.tanh(Z @ torch.randn(64, args.d, generator=g)) + torch.randn(args.b + args.q, args.d, generator=g))
    X, Y = X.to(dev, dtype), Y.to(dev, dtype)
    sb, sq, tb, tq = X[:args.b], X[args.b:], Y[:args.b], Y[args.b:]
    print(f"local CKA: {args.b} anchors, {args.q} queries, d = {args.d}, {args.dtype}, {dev}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'kernel':<8} {'plain s/pair':>12} {'plain full (extrapolated)':>26} {'fast full':>10} "
          f"{'speedup':>10} {'max |diff|':>11}")
    for name, fast, kernel in (("linear", utils.linear_local_CKA, False),
                               ("kernel", utils.kernel_local_CKA, True)):
        fast(sb[:16], tb[:16], sq[:8], tq[:8])  # warm-up
        best = float("inf")
        for _ in range(args.repeats):
            sync(dev)
            t = time.perf_counter()
            graph = fast(sb, tb, sq, tq)
            sync(dev)
            best = min(best, time.perf_counter() - t)
        pairs = int(args.plain_rows * args.q)
        if pairs == 0:
            print(f"{name:<8} {'-':>12} {'-':>26} {best:9.3f}s {'-':>10} {'-':>11}")
            continue
        cka = PaperCKA(args.b + 1, kernel, dtype, dev)
        diff = 0.0
        sync(dev)
        t = time.perf_counter()
        for k in range(pairs):
            i, j = divmod(k, args.q)
            v = cka.calculate(torch.cat([sq[i:i + 1], sb]), torch.cat([tq[j:j + 1], tb]))
            diff = max(diff, abs(float(v) - float(graph[i, j])))
        sync(dev)
        per_pair = (time.perf_counter() - t) / pairs
        full = per_pair * args.q * args.q
        print(f"{name:<8} {per_pair:12.5f} {full:20.0f} s ({full / 3600:.2f} h) {best:9.3f}s "
              f"{full / best:9.0f}x {diff:11.2e}")
    print(f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
