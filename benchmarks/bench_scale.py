"""Cost as the work grows: every method of run.py from 500 to 5,000 queries, against the machine's own limit.

Each method of ``src.methods.METHODS`` with run.py's default options (qap: 500 restarts, patience 10,
randomized starts, the fast solver) runs as run.py runs it for one seed: its graph, retrieval top-1/5/10 from
the graph, and its matching (Hungarian on the graph, or qap's seeded graph matching). Inputs, 320 anchors:

- ``real``: the bundled flickr1k rows, all-mpnet-base-v2 captions (d = 768) against EfficientNet-Lite0
  photos (d = 1,280), shuffled (seed 0). There are 1,000 real pairs: the anchors and the first 680 queries
  are real; further queries are paired mixtures w x_a + (1 - w) x_b of two real pairs (the same a, b and
  w ~ U(0, 1) on both sides), so that every pair stays as related across the sides as real pairs are.
- ``synthetic``: d = 1,024 on both sides, x = z A + e and y = tanh(z B) + e' with a shared 64-dimensional
  latent z (Gaussian A, B, e, e'; seed 0).

Every point runs in a fresh subprocess: seconds (graph, matching, total), peak memory (the process's resident
high-water mark from the start of the method to its end: Python, torch and the inputs included, making the
inputs left out; on a GPU torch.cuda.max_memory_allocated), and
for the graph methods the arithmetic rate (the FLOP count of the graph's products / its seconds) next to a
dense 2,048 x 2,048 matmul's rate measured in the same run on the same device and dtype, and their ratio
(the figure that holds across machines). kernel_local_CKA's expansion computes in float64 whatever the
inputs: its ratio is to the float64 matmul. Sizes of a series run in order; a size whose estimate (the last
measured time scaled by the exponent fitted to the measured sizes; before two sizes, the method's own
``estimate_seconds`` or Q^3) passes ``--limit`` is printed with its estimate instead of run. qap's row says
where its time goes (the Hungarian assignments against the products, src/faq.py's timers) and its own
estimate (``Method.estimate_seconds``) next to the measured time.

Then kernel local CKA at ``--exact-q`` queries (d = 1,024 synthetic, float32): the fast path, the exact
path (``exact=True``) in the inputs' dtype and the exact float64 graph, with seconds, rates and the max
|difference| of each to the exact float64 graph, in one run. Writes the figure (seconds against Q, log-log,
one line a method, the fitted exponent in the legend).

With ``--assignment`` it first prints the assignment table: the Hungarian step of linear_local_CKA (its
graph on the real inputs, as matching.hungarian solves it) by scipy's ``linear_sum_assignment`` and by
src/assignment.py's ``linear_assignment``, both in one fresh process a size: seconds, their ratio, the
relative objective difference, the fraction of rows given the same column and the peak memory of each.

    python benchmarks/bench_scale.py                                  # everything (about an hour on 2 cores)
    python benchmarks/bench_scale.py --assignment --methods qap --inputs real --dtypes float32 --exact-q 0 \
        --threads 1 --limit 1200 --figure ''                          # docs/speed.md's assignment and qap rows
    python benchmarks/bench_scale.py --smoke                          # seconds: tiny sizes (what CI runs)
    python benchmarks/bench_scale.py --sizes 500 1000 --dtypes float32 --inputs synthetic --exact-q 0
    python benchmarks/bench_scale.py --methods kernel_local_CKA --sizes 20000 --graph-only --exact-q 0
    python benchmarks/bench_scale.py --device cuda                    # on a GPU
"""
import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from src.assignment import linear_assignment
from src.files import load_embeddings, side_file
from src.local_cka import RBFExpansion, kernel_local_CKA
from src.matching import graph_matching, query_shuffle
from src.methods import METHODS
from src.retrieval import get_retrieval

ROOT = Path(__file__).resolve().parents[1]
INPUTS = {"real": "mpnet (768) vs Lite0 (1280)", "synthetic": "d = 1,024 synthetic"}
N_REAL = 1000


# ----------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------

def real_rows(n):
    """n paired rows (source: mpnet captions, target: Lite0 photos), float64: the 1,000 real pairs shuffled,
    then paired mixtures of them."""
    text = load_embeddings(side_file(ROOT / "data", "flickr1k", "mpnet:text")).double()
    img = load_embeddings(side_file(ROOT / "data", "flickr1k", "efficientnet_lite0:img")).double()
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(N_REAL, generator=g)
    X, Y = text[perm], img[perm]
    extra = n - N_REAL
    if extra > 0:
        a, b = torch.randint(0, N_REAL, (2, extra), generator=g)
        w = torch.rand(extra, 1, generator=g, dtype=torch.float64)
        X = torch.cat([X, w * X[a] + (1 - w) * X[b]])
        Y = torch.cat([Y, w * Y[a] + (1 - w) * Y[b]])
    return X[:n], Y[:n]


def synthetic_rows(n, d=1024):
    g = torch.Generator().manual_seed(0)
    Z = torch.randn(n, 64, generator=g, dtype=torch.float64)
    X = Z @ torch.randn(64, d, generator=g, dtype=torch.float64) + torch.randn(n, d, generator=g, dtype=torch.float64)
    Y = torch.tanh(Z @ torch.randn(64, d, generator=g, dtype=torch.float64)) + torch.randn(n, d, generator=g,
                                                                                       dtype=torch.float64)
    return X, Y


def draw(inputs, anchors, q, dtype, device):
    X, Y = (real_rows if inputs == "real" else synthetic_rows)(anchors + q)
    X, Y = X.to(device=device, dtype=dtype), Y.to(device=device, dtype=dtype)
    return SimpleNamespace(sb=X[:anchors], tb=Y[:anchors], sq=X[anchors:], tq=Y[anchors:], score=None)


def dims(inputs):
    return (768, 1280) if inputs == "real" else (1024, 1024)


# ----------------------------------------------------------------------------------------------------------
# Arithmetic
# ----------------------------------------------------------------------------------------------------------

def graph_flops(method, q, n, d1, d2, terms=None):
    """FLOPs of a graph's products (a multiply-add counts 2); the elementwise work is left out.

    linear: the projection of the queries and the cosine graph (least squares on the anchors is small);
    relative: both sides' cosines to the anchors and the graph; linear_local_CKA: the anchors' Gram
    matrices, the queries' products with the anchors and the Q x Q x n product; kernel_local_CKA: fast path
    (terms = (r, s)): the queries' and anchors' Gram products and one Q x (n + 2 + r + s) x Q product;
    exact path (terms None): the Q x Q dot products of N(N+1)/2-long upper triangles, N = n + 1.
    """
    if method == "linear":
        return 2 * q * d1 * d2 + 2 * q * q * d2
    if method == "cos":
        return 2 * q * q * d1
    if method == "relative":
        return 2 * q * n * (d1 + d2) + 2 * q * q * n
    if method == "linear_local_CKA":
        return 2 * n * n * (d1 + d2) + 2 * q * n * (d1 + d2) + 2 * q * q * n
    if method == "kernel_local_CKA":
        if terms is None:
            N = n + 1
            return 2 * n * n * (d1 + d2) + 2 * q * n * (d1 + d2) + q * q * N * (N + 1)
        return 2 * n * n * (d1 + d2) + 2 * q * n * (d1 + d2) + 2 * q * q * (n + 2 + sum(terms))
    return None


def matmul_rate(dtype, device, n=2048, repeats=3):
    """GFLOP/s of a dense n x n matmul (best of repeats)."""
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def reset_peak(device):
    """Start the peak-memory count here (Linux: VmHWM reset through /proc/self/clear_refs; elsewhere the
    count keeps the process's whole life)."""
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_gib(device):
    """The peak since reset_peak: GPU memory allocated, or the process's resident high-water mark."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated() / 2 ** 30
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2 ** 20  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux


def cpu_seconds():
    """CPU seconds this process has used (user + system, all its threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(f, device):
    sync(device)
    t = time.perf_counter()
    out = f()
    sync(device)
    return out, time.perf_counter() - t


def kernel_terms(d):
    """The fast path's terms on each side, or None where kernel_local_CKA falls back to the exact path."""
    src = RBFExpansion.fit(d.sb.double(), d.sq.double())
    tgt = RBFExpansion.fit(d.tb.double(), d.tq.double()) if src is not None else None
    return None if tgt is None else (src.terms, tgt.terms)


# ----------------------------------------------------------------------------------------------------------
# One point, in a fresh process
# ----------------------------------------------------------------------------------------------------------

def run_point(spec):
    device, dtype = spec["device"], getattr(torch, spec["dtype"])
    d = draw(spec["inputs"], spec["anchors"], spec["q"], dtype, device)
    method = METHODS[spec["method"]].create({})
    out = {}
    # warm-up on a small problem (BLAS threads, oneDNN, thread pools), as a run pays once, not per seed
    small = SimpleNamespace(sb=d.sb[:32], tb=d.tb[:32], sq=d.sq[:32], tq=d.tq[:32], score=None)
    method.match(small, method.graph(small, device), device, 0, False)
    reset_peak(device)
    cpu0 = cpu_seconds()
    graph, out["graph_s"] = timed(lambda: method.graph(d, device), device)
    if graph is not None and not spec["graph_only"]:
        _, out["retrieval_s"] = timed(lambda: get_retrieval(graph), device)
    if spec["graph_only"]:
        out["match_s"] = None
    elif spec["method"] == "qap":
        timers = {}
        (_, info), out["match_s"] = timed(lambda: graph_matching(
            d.sb, d.tb, d.sq, d.tq, device, restarts=method.restarts, seed=0, solver=method.qap_solver,
            init=method.qap_init, patience=method.qap_patience, polish=method.qap_polish, progress=False,
            timers=timers), device)
        out.update(timers=timers, restarts=info["restarts"],
                   estimate_s=method.estimate_seconds(spec["anchors"], spec["q"], device))
    else:
        _, out["match_s"] = timed(lambda: method.match(d, graph, device, 0, False), device)
    out["cpu_s"] = cpu_seconds() - cpu0
    out["peak_gib"] = peak_gib(device)
    out["seconds"] = out["graph_s"] + out.get("retrieval_s", 0.0) + (out["match_s"] or 0.0)
    if spec["method"] == "kernel_local_CKA":
        out["terms"] = kernel_terms(d)
    out["flops"] = graph_flops(spec["method"], spec["q"], spec["anchors"], d.sb.shape[1], d.tb.shape[1],
                               out.get("terms"))
    return out


def run_exact_check(spec):
    """kernel local CKA at one size: fast path, exact path in the inputs' dtype, exact float64 graph."""
    device, dtype = spec["device"], getattr(torch, spec["dtype"])
    d = draw(spec["inputs"], spec["anchors"], spec["q"], dtype, device)
    kernel_local_CKA(d.sb[:32], d.tb[:32], d.sq[:32], d.tq[:32])  # warm-up
    reset_peak(device)
    out, cpu0 = {}, cpu_seconds()
    fast, out["fast_s"] = timed(lambda: kernel_local_CKA(d.sb, d.tb, d.sq, d.tq), device)
    out["fast_cpu_s"] = cpu_seconds() - cpu0
    out["fast_peak_gib"] = peak_gib(device)
    out["terms"] = kernel_terms(d)
    cpu0 = cpu_seconds()
    exact, out["exact_s"] = timed(lambda: kernel_local_CKA(d.sb, d.tb, d.sq, d.tq, exact=True), device)
    out["exact_cpu_s"] = cpu_seconds() - cpu0
    d64 = [t.double() for t in (d.sb, d.tb, d.sq, d.tq)]
    ref, out["reference_s"] = timed(lambda: kernel_local_CKA(*d64, exact=True), device)
    out["fast_diff"] = float((fast.double() - ref).abs().max())
    out["exact_diff"] = float((exact.double() - ref).abs().max())
    n, (d1, d2) = spec["anchors"], (d.sb.shape[1], d.tb.shape[1])
    out["fast_flops"] = graph_flops("kernel_local_CKA", spec["q"], n, d1, d2, out["terms"])
    out["exact_flops"] = graph_flops("kernel_local_CKA", spec["q"], n, d1, d2, None)
    return out


def run_assignment(spec):
    """The Hungarian step of run.py's linear_local_CKA method at one size, on the real inputs: its graph
    (float32, shuffled as matching.hungarian shuffles it, then float64), solved by scipy's
    linear_sum_assignment and by src/assignment.py's linear_assignment in the same process. Seconds, the
    process's peak resident memory during each solve (the graph included) and the objectives."""
    d = draw(spec["inputs"], spec["anchors"], spec["q"], torch.float32, "cpu")
    method = METHODS[spec["assignment_graph"]].create({})
    graph = method.graph(d, "cpu").double()[:, query_shuffle(spec["q"])].numpy()
    del d
    linear_assignment(graph[:64, :64], maximize=True)           # warm-up (imports, first calls)
    linear_sum_assignment(graph[:64, :64], maximize=True)
    # and the memory: the first matrices of this size a process touches cost about 0.5 s per 200 MB (the
    # kernel finds and zeroes fresh pages), later ones almost nothing; without this, whichever solver ran
    # first would pay it for both (as run.py pays it once, for the graph, before its Hungarian steps)
    for _ in range(2):
        np.ones_like(graph).sum()
    out, cols = {}, {}
    for name, solve in (("new", linear_assignment), ("scipy", linear_sum_assignment)):
        if name == "scipy" and spec["skip_scipy"]:
            continue
        reset_peak("cpu")
        (rows, cols[name]), out[f"{name}_s"] = timed(lambda solve=solve: solve(graph, maximize=True), "cpu")
        out[f"{name}_peak_gib"] = peak_gib("cpu")
        out[f"{name}_objective"] = float(graph[rows, cols[name]].sum())
    if "scipy" in cols:   # where optima tie, the two may differ in a few rows with the same objective
        out["same_columns"] = float(np.mean(cols["new"] == cols["scipy"]))
    return out


def run_here(spec):
    """One point in this process (--smoke: the code paths, not the measurements)."""
    kind = spec.get("kind")
    return run_exact_check(spec) if kind == "exact" else run_assignment(spec) if kind == "assignment" \
        else run_point(spec)


def assignment_table(args, device, run):
    """scipy against linear_assignment at each size, both in one fresh process a size; scipy is left out
    where its estimate (Q^3 from the last size it ran) passes --limit."""
    print(f"assignment: the Hungarian step of {args.assignment_graph} (maximise), real inputs, "
          f"{args.anchors} anchors; both solvers in one process a size"
          f"{', a fresh one' if run is in_subprocess else ' (--smoke: this one)'}\n")
    head = (f"{'Q':>6} {'scipy s':>8} {'new s':>8} {'ratio':>6} {'rel. objective diff':>20} {'same cols':>9} "
            f"{'scipy GiB':>9} {'new GiB':>8}  GPU")
    print(head)
    print("-" * len(head))
    last = None
    for q in sorted(args.assignment_sizes):
        est = last[1] * (q / last[0]) ** 3 if last else 0.0
        spec = {"kind": "assignment", "inputs": "real", "q": q, "anchors": args.anchors,
                "assignment_graph": args.assignment_graph, "skip_scipy": est > args.limit}
        r = run(spec, max(3 * args.limit, 600))
        if "error" in r:
            print(f"{q:>6} failed: {r['error']}")
            continue
        gpu = "no GPU lent" if device == "cpu" else "-"
        if "scipy_s" not in r:
            print(f"{q:>6} {'-':>8} {fmt_s(r['new_s']):>8} {'-':>6} {'-':>20} {'-':>9} {'-':>9} "
                  f"{r['new_peak_gib']:8.2f}  {gpu}  (scipy not run: estimated {est:.0f} s > --limit)", flush=True)
            continue
        last = (q, r["scipy_s"])
        diff = abs(r["new_objective"] - r["scipy_objective"]) / abs(r["scipy_objective"])
        print(f"{q:>6} {fmt_s(r['scipy_s']):>8} {fmt_s(r['new_s']):>8} {r['scipy_s'] / r['new_s']:6.1f} "
              f"{diff:20.1e} {r['same_columns']:9.4f} {r['scipy_peak_gib']:9.2f} {r['new_peak_gib']:8.2f}  {gpu}",
              flush=True)
    print("ratio: scipy s / new s; rel. objective diff: |new - scipy| / |scipy|; same cols: fraction of rows "
          "given the same column (below 1 only where optima tie); GiB: the process's peak resident memory "
          "during the solve, the graph included\n")


def in_subprocess(spec, timeout):
    """Runs one spec in a fresh interpreter; its result dict, or {"error": ...}."""
    cmd = [sys.executable, os.path.abspath(__file__), "--threads", str(torch.get_num_threads()), "--run",
           json.dumps(spec)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1][:160]}


# ----------------------------------------------------------------------------------------------------------
# The series, the table, the figure
# ----------------------------------------------------------------------------------------------------------

def fitted_exponent(points):
    """Slope of log seconds against log Q over the measured points (None below two)."""
    if len(points) < 2:
        return None
    q, s = np.log([p[0] for p in points]), np.log([max(p[1], 1e-6) for p in points])
    return float(np.polyfit(q, s, 1)[0])


def estimate(points, q, method, anchors, device):
    p = fitted_exponent(points)
    if p is not None:
        return points[-1][1] * (q / points[-1][0]) ** p, f"Q^{p:.2f} fit"
    own = METHODS[method].create({}).estimate_seconds(anchors, q, device)
    if own is not None:
        return own, "its estimate_seconds"
    if points:
        return points[-1][1] * (q / points[-1][0]) ** 3, "Q^3 from one size"
    return 0.0, ""


def fmt_s(s):
    return "-" if s is None else f"{s:.3f}" if s < 10 else f"{s:.1f}"


def note(method, r):
    if method == "qap" and "timers" in r:
        t = r["timers"]
        return (f"{r['restarts']} restarts; assignment {t.get('assignment', 0):.1f} s, products "
                f"{t.get('products', 0):.1f} s, inputs {t.get('inputs', 0):.1f} s; estimate {fmt_s(r['estimate_s'])} s")
    if method == "kernel_local_CKA":
        return "exact path (bound not met)" if r.get("terms") is None else \
            f"expansion, {r['terms'][0]} + {r['terms'][1]} terms (float64)"
    return ""


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    p.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000, 5000], help="queries Q")
    p.add_argument("--anchors", type=int, default=320)
    p.add_argument("--methods", nargs="*", default=[m for m in METHODS if not METHODS[m].blind_only],
                   choices=list(METHODS),  # the blind-only methods match with no anchors: bench_blind.py
                   help="the method series (none: the assignment table only)")
    p.add_argument("--inputs", nargs="+", default=list(INPUTS), choices=list(INPUTS))
    p.add_argument("--dtypes", nargs="+", default=["float32", "float64"], choices=["float32", "float64"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--limit", type=float, default=600, help="seconds: a point estimated past it is not run")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    p.add_argument("--graph-only", action="store_true", help="time the graphs only (no retrieval, no matching)")
    p.add_argument("--exact-q", type=int, default=5000,
                   help="queries of the fast-vs-exact kernel local CKA comparison (0: skip it)")
    p.add_argument("--exact-dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--figure", default=str(ROOT / "docs" / "speed_scale.png"), help="'' for none")
    p.add_argument("--assignment", action="store_true",
                   help="first the assignment table: scipy's linear_sum_assignment against src/assignment.py on "
                        "the real inputs' graph at --assignment-sizes")
    p.add_argument("--assignment-sizes", type=int, nargs="+", default=[500, 1000, 2000, 5000, 10000])
    p.add_argument("--assignment-graph", default="linear_local_CKA",
                   choices=[m for m in METHODS if m != "qap" and not METHODS[m].blind_only],
                   help="the method whose graph the assignments solve (as its Hungarian step)")
    p.add_argument("--smoke", action="store_true",
                   help="a few seconds: tiny sizes, every method once, the assignment table at two sizes, "
                        "points in this process, no figure (CI runs it)")
    p.add_argument("--run", default=None, help=argparse.SUPPRESS)  # internal: one point, as JSON
    args = p.parse_args(argv)
    if args.smoke:
        args.sizes, args.anchors, args.inputs, args.dtypes = [24], 16, ["real"], ["float32"]
        args.assignment, args.assignment_sizes, args.exact_q = True, [40, 300], 32
        args.figure = ""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.run:
        spec = json.loads(args.run)
        kind = spec.get("kind")
        out = run_exact_check(spec) if kind == "exact" else run_assignment(spec) if kind == "assignment" \
            else run_point(spec)
        print("RESULT " + json.dumps(out))
        return 0

    device = str(torch.device(args.device))
    rates = {dt: matmul_rate(getattr(torch, dt), device) for dt in ("float32", "float64")}
    print(f"device {device}, {torch.get_num_threads()} threads; dense 2048^2 matmul: "
          + ", ".join(f"{dt} {r:.1f} GFLOP/s" for dt, r in rates.items()))
    run = (lambda spec, timeout: run_here(spec)) if args.smoke else in_subprocess
    if args.assignment:
        assignment_table(args, device, run)
    if not args.methods:
        return 0
    print(f"{args.anchors} anchors; one seed as run.py runs it (graph, retrieval, matching); every point in a "
          f"{'fresh process' if run is in_subprocess else 'this process (--smoke)'}\n")
    head = (f"{'method':<17} {'input':<9} {'dtype':<7} {'Q':>6} {'graph s':>8} {'match s':>8} {'total s':>8} "
            f"{'cpu s':>7} {'peak GiB':>8} {'GFLOP':>8} {'GFLOP/s':>8} {'matmul':>7} {'ratio':>6}  note")
    print(head)
    print("-" * len(head))
    series = {}
    for dt in args.dtypes:
        for inputs in args.inputs:
            for method in args.methods:
                if METHODS[method].same_space and dims(inputs)[0] != dims(inputs)[1]:
                    print(f"{method:<17} {inputs:<9} {dt:<7} {'':>6} n/a: compares the two spaces directly, "
                          f"and {INPUTS[inputs]} differ")
                    continue
                points = series.setdefault((method, inputs, dt), [])
                for q in sorted(args.sizes):
                    est, how = estimate(points, q, method, args.anchors, device)
                    if est > args.limit:
                        print(f"{method:<17} {inputs:<9} {dt:<7} {q:>6} not run: estimated {est:.0f} s "
                              f"({how}) > --limit {args.limit:.0f} s")
                        continue
                    spec = {"method": method, "inputs": inputs, "dtype": dt, "q": q, "anchors": args.anchors,
                            "device": device, "graph_only": args.graph_only}
                    r = run(spec, max(3 * args.limit, 120))
                    if "error" in r:
                        print(f"{method:<17} {inputs:<9} {dt:<7} {q:>6} failed: {r['error']}")
                        continue
                    points.append((q, r["seconds"]))
                    gflop = r["flops"] / 1e9 if r["flops"] else None
                    rate_dt = "float64" if method == "kernel_local_CKA" and r.get("terms") else dt
                    rate = gflop / r["graph_s"] if gflop else None
                    cols = (f"{fmt_s(r['graph_s']):>8} {fmt_s(r['match_s']):>8} {fmt_s(r['seconds']):>8} "
                            f"{fmt_s(r['cpu_s']):>7} {r['peak_gib']:8.2f} "
                            + (f"{gflop:8.2f} {rate:8.1f} {rates[rate_dt]:7.1f} {rate / rates[rate_dt]:6.2f}"
                               if rate else f"{'-':>8} {'-':>8} {'-':>7} {'-':>6}"))
                    print(f"{method:<17} {inputs:<9} {dt:<7} {q:>6} {cols}  {note(method, r)}", flush=True)
    print("\nmatch s: Hungarian on the graph (qap: its seeded graph matching); total s: graph + retrieval + "
          "match (wall clock); cpu s: the process's CPU seconds over the same span (all threads); GFLOP: the "
          "graph's products (qap has no graph); ratio: GFLOP/s / the matmul's in the dtype the products run in")
    exponents = {k: fitted_exponent(v) for k, v in series.items()}
    listed = [f"{m} {i} {dt}: Q^{e:.2f}" for (m, i, dt), e in exponents.items() if e is not None]
    if listed:
        print("fitted exponents of total seconds: " + "; ".join(listed))

    if args.exact_q:
        spec = {"kind": "exact", "inputs": "synthetic", "dtype": args.exact_dtype, "q": args.exact_q,
                "anchors": args.anchors, "device": device}
        print(f"\nkernel local CKA at Q = {args.exact_q}, {args.anchors} anchors, d = 1,024 synthetic, "
              f"{args.exact_dtype} inputs, in one process:")
        r = in_subprocess(spec, timeout=3600)
        if "error" in r:
            print(f"failed: {r['error']}")
        else:
            terms = "exact path: bound not met" if r["terms"] is None else f"{r['terms'][0]} + {r['terms'][1]} terms"
            rows = [(f"fast ({terms})", r["fast_s"], r["fast_flops"], "float64", r["fast_diff"]),
                    (f"exact path ({args.exact_dtype})", r["exact_s"], r["exact_flops"], args.exact_dtype,
                     r["exact_diff"]),
                    ("exact path (float64): reference", r["reference_s"], r["exact_flops"], "float64", 0.0)]
            print(f"{'path':<34} {'seconds':>8} {'GFLOP':>8} {'GFLOP/s':>8} {'matmul':>7} {'ratio':>6} "
                  f"{'max |diff| to reference':>24}")
            for label, s, fl, dt, diff in rows:
                rate = fl / 1e9 / s
                print(f"{label:<34} {s:8.2f} {fl / 1e9:8.1f} {rate:8.1f} {rates[dt]:7.1f} "
                      f"{rate / rates[dt]:6.2f} {diff:24.2e}")
            print(f"fast path: {r['exact_s'] / r['fast_s']:.0f}x faster than the exact {args.exact_dtype} path "
                  f"(CPU seconds: fast {r['fast_cpu_s']:.2f}, exact {r['exact_cpu_s']:.1f}); peak memory of the "
                  f"fast path {r['fast_peak_gib']:.2f} GiB (the process, inputs included)")

    if args.figure and any(len(v) >= 2 for v in series.values()):
        write_figure(series, exponents, args.figure, args.anchors, device)
        print(f"\nwrote {args.figure}")
    return 0


def write_figure(series, exponents, path, anchors, device):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = sorted({(i, dt) for (_, i, dt) in series}, key=lambda k: (list(INPUTS).index(k[0]), k[1]))
    cols = len({dt for _, dt in panels})
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 4.2 * rows), squeeze=False, sharey=True)
    for ax, (inputs, dt) in zip(axes.flat, panels, strict=False):
        for (method, i, d), points in series.items():
            if (i, d) != (inputs, dt) or not points:
                continue
            q, s = zip(*points, strict=True)
            e = exponents[(method, i, d)]
            ax.loglog(q, s, "o-", color=f"C{list(METHODS).index(method)}",
                      label=f"{method} (Q^{e:.2f})" if e is not None else method)
        ax.set_title(f"{INPUTS[inputs]}, {dt}", fontsize=10)
        ax.set_xlabel("queries Q")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("seconds (graph + retrieval + matching)")
    fig.suptitle(f"Seconds against queries, {anchors} anchors, {device} (benchmarks/bench_scale.py)", fontsize=11)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
