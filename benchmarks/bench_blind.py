"""Blind matching on the bundled captions: accuracy, objective ratio and seconds of every solver, one CPU thread.

    python benchmarks/bench_blind.py                 # the table of docs/blind.md (minutes)
    python benchmarks/bench_blind.py --figure docs/blind_accuracy.png
    python benchmarks/bench_blind.py --smoke         # a planted pair, every solver, seconds
    python benchmarks/bench_blind.py --classes       # Caltech-101 class names vs class prototypes (minutes)

Each row runs what ``run.py --task blind --b 0 --q N --m METHOD --seeds 0 1 2`` runs (the task's draw, the
method's match, the task's scorer), so its numbers are run.py's. The load average is printed with the table.
The solvers run under step budgets, not wall-clock limits (``--blind-seconds`` 0), so accuracies and ratios do
not depend on the machine's load; only the seconds do.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")       # before numpy / torch start their thread pools
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.config import Config  # noqa: E402
from src.experiment import SideCache  # noqa: E402
from src.files import save_embeddings  # noqa: E402
from src.methods import METHODS  # noqa: E402
from src.tasks import TASKS  # noqa: E402

# (source, target, N, [(method, options)]): the table, then the large-N route
QAP = ("qap", {"restarts": 50, "qap_patience": None})
FULL = [("use:text", "use:text:de", n, [QAP, ("blind", {}), ("gw", {}), ("rosetta", {})]) for n in (20, 50, 100, 200)]
FULL += [("mpnet:text", "use:text:de", 200, [QAP, ("blind", {}), ("gw", {}), ("rosetta", {})]),
         ("use:text", "use:text:zh", 100, [QAP, ("blind", {}), ("gw", {}), ("rosetta", {})]),
         ("use:text", "use:text:de", 8, [("exact", {}), QAP, ("blind", {}), ("gw", {}), ("rosetta", {})]),
         ("use:text", "use:text:de", 937, [("qap", {"restarts": 2, "qap_patience": None}), ("rosetta", {})])]


# the class experiment (itsamatch's protocol): minilm class-name rows vs efficientnet_lite0 prototypes, each the
# mean of a seeded random half of a class's photos; the embeddings are made by the commands of docs/blind.md
CLASSES = [("minilm:text", "efficientnet_lite0:img", 8, [("exact", {}), QAP, ("blind", {}), ("gw", {})])]
CLASSES += [("minilm:text", "efficientnet_lite0:img", n, [QAP, ("blind", {}), ("gw", {})]) for n in (20, 50, 100)]


def planted(root, n=12, d=16, noise=0.05):
    """A toy dataset whose target rows are a rotation of the source rows plus a little noise."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, d, generator=g)
    R = torch.linalg.qr(torch.randn(d, d, generator=g)).Q
    ids = list(range(n))
    save_embeddings(X, root / "toy_a_text.pt", {"model": "a", "image_ids": ids})
    save_embeddings(X @ R + noise * torch.randn(n, d, generator=g), root / "toy_b_text.pt",
                    {"model": "b", "image_ids": ids})


def run_row(source, target, n, method, options, seeds, data_dir, dataset, cache):
    """Per seed: (matching_acc, objective_ratio, beats_truth, oracle_acc, seconds, cpu seconds, assignment), as
    run.py computes them (the CPU seconds of this one-thread process: what a seed costs whatever the load)."""
    cfg = Config(method, source, target, base_samples=0, query_samples=n, base_data=dataset, query_data=dataset,
                 seeds=seeds, task="blind", options=tuple(options.items()), data_dir=data_dir)
    cfg.check()
    task = TASKS["blind"]
    state = task.prepare(cfg, cache)
    m = cfg.method_instance()
    out = []
    for seed in seeds:
        draw = task.draw(state, cfg, seed, "cpu")
        t0, c0 = time.perf_counter(), time.process_time()
        acc, info = m.match(draw, None, "cpu", seed, False)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        s = draw.score(info["assignment"])
        out.append((acc, s["objective_ratio"], s["beats_truth"], s["oracle_acc"], seconds, cpu, info["assignment"]))
    return out


def label(method, options):
    return method + ("[" + ",".join(f"{k}={v}" for k, v in options.items()) + "]" if options else "")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="a planted toy pair, every solver, seconds")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--data-dir", default="data")
    p.add_argument("--classes", action="store_true", help="the Caltech-101 class experiment instead of the captions")
    p.add_argument("--figure", default=None, help="also draw accuracy and objective ratio against N here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    tmp = None
    if args.smoke:
        tmp = tempfile.TemporaryDirectory()
        planted(Path(tmp.name))
        quick = {"blind": {"blind_iterations": 50}, "gw": {"gw_iterations": 5}, "rosetta": {"rosetta_centres": 6},
                 "qap": {"restarts": 4}, "exact": {}}
        plan = [("a:text", "b:text", 8, [(m, quick[m]) for m in ("exact", "qap", "blind", "gw", "rosetta")])]
        data_dir, dataset, seeds = tmp.name, "toy", [0]
    elif args.classes:
        plan, data_dir, dataset, seeds = CLASSES, args.data_dir, "caltech101", args.seeds
    else:
        plan, data_dir, dataset, seeds = FULL, args.data_dir, "flickr1k", args.seeds
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; threads: torch "
          f"{torch.get_num_threads()}, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
    print(f"{'pair':34s} {'N':>4s}  {'method':34s} {'acc':>6s} {'ratio':>7s} {'ratio>=1':>8s} {'oracle':>6s} "
          f"{'s mean':>7s} {'s max':>6s} {'cpu s':>6s} {'cpu max':>7s} {'optimum':>7s}")
    cache = SideCache(data_dir)
    rows = []
    for source, target, n, methods in plan:
        optimum = None
        for method, options in methods:
            assert method in METHODS
            r = run_row(source, target, n, method, options, seeds, data_dir, dataset, cache)
            acc, ratio, _, oracle, sec, cpu, assignments = zip(*r)
            if method == "exact":
                optimum = assignments
            hits = 0 if optimum is None else sum(np.array_equal(a, o) for a, o in zip(assignments, optimum))
            reached = "" if optimum is None else f"{hits}/{len(seeds)}"
            rows.append((source, target, n, method, float(np.mean(acc)), float(np.mean(ratio)),
                         float(np.mean(oracle))))
            print(f"{source + ' vs ' + target:34s} {n:4d}  {label(method, options):34s} {np.mean(acc):6.3f} "
                  f"{np.mean(ratio):7.4f} {sum(x >= 1 for x in ratio):5d}/{len(seeds)} {np.mean(oracle):6.3f} "
                  f"{np.mean(sec):7.2f} {max(sec):6.2f} {np.mean(cpu):6.2f} {max(cpu):7.2f} {reached:>7s}", flush=True)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.figure:
        figure(rows, args.figure)
    if tmp is not None:
        tmp.cleanup()
    return 0


def figure(rows, path):
    """Accuracy and objective ratio against N (use vs use:de, N = 20..200), the oracle as a dashed line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    sel = [r for r in rows if r[0] == "use:text" and r[1] == "use:text:de" and 20 <= r[2] <= 200]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for method in dict.fromkeys(r[3] for r in sel):
        pts = sorted((r[2], r[4], r[5]) for r in sel if r[3] == method)
        axes[0].plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=method)
        axes[1].plot([p[0] for p in pts], [p[2] for p in pts], "o-", label=method)
    oracle = sorted({(r[2], r[6]) for r in sel})
    axes[0].plot([o[0] for o in oracle], [o[1] for o in oracle], "k--", label="oracle (2-swap optimum at the truth)")
    axes[1].axhline(1.0, color="k", ls="--", lw=1)
    axes[0].set(xscale="log", xlabel="N", ylabel="matching accuracy", ylim=(0, 1.02))
    axes[1].set(xscale="log", xlabel="N", ylabel="objective / truth's objective")
    sizes = sorted({r[2] for r in sel})
    for ax in axes:   # the sizes run, as plain numbers (a log axis labels its minor ticks 2x10^1, 3x10^1, ...)
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    axes[0].legend(fontsize=7)
    fig.suptitle("Blind matching, use:text vs use:text:de (flickr1k, 3 seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
