"""The local launcher's overhead against the in-process run, on the configurations of ``run.py --demo``.

The demo's configurations written out as flags (6 pairs x 5 methods x 3 seeds for figure1), run from the
command line, each into a fresh folder:
  - in-process: ``python run.py <flags>`` (every group in one process, as always);
  - local:      ``python run.py <flags> --launcher local --local-parallelism P`` (a submitit job per pair:
    its own process, imports, loading; then table.csv and the figure rebuilt from results/);
and prints the seconds of each, the ratio local / in-process and the overhead per job, all measured in
this one run, and whether the two table.csv files are equal byte for byte.

    python benchmarks/bench_launch.py                               # the whole figure1 demo
    python benchmarks/bench_launch.py --parallelism 1 2             # two local runs: 1 and 2 jobs at a time
    python benchmarks/bench_launch.py --methods relative --seeds 0  # a quick look
    python benchmarks/bench_launch.py --smoke                         # seconds: two pairs (what CI runs)
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import run  # noqa: E402


def demo_flags(d, methods=None, seeds=None):
    """The flags of a demo (d: its entry of run.DEMOS) as a command line."""
    data = run.DEMO_DATA
    return (["--m", *(methods or d["methods"]), "--vid_model", *d["vid_models"], "--text_model", *d["text_models"],
             "--base_data", data["base_data"], "--query_data", data["query_data"], "--b", str(data["base_samples"]),
             "--q", str(data["query_samples"]), "--c", str(data["clustering_mode"]),
             "--seeds", *map(str, seeds or data["seeds"]), "-q"])


def timed(argv, out):
    """Seconds of ``python run.py argv`` with its outputs in out/ (from the repository root: the bundled data)."""
    argv = argv + ["--results-dir", str(out / "results"), "--seedwise-dir", str(out / "seedwise")]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), *argv], cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"run.py {' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--demo", default="figure1", choices=tuple(run.DEMOS))
    p.add_argument("--methods", nargs="+", default=None, help="default: the demo's")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="default: the demo's (0 1 2)")
    p.add_argument("--parallelism", nargs="+", type=int, default=[1], help="--local-parallelism of each local run")
    p.add_argument("--smoke", action="store_true",
                   help="seconds: two pairs of the demo, the linear method, seed 0 (CI runs it)")
    args = p.parse_args(argv)
    d = dict(run.DEMOS[args.demo])
    if args.smoke:
        args.methods, args.seeds, args.parallelism = ["linear"], [0], [1]
        d["vid_models"], d["text_models"] = d["vid_models"][:1], d["text_models"][:2]   # table.csv needs 2 pairs
    flags = demo_flags(d, args.methods, args.seeds)
    pairs = len(d["vid_models"]) * len(d["text_models"])
    methods = args.methods or d["methods"]
    seeds = args.seeds or run.DEMO_DATA["seeds"]
    print(f"demo {args.demo}: {pairs} pairs x {len(methods)} methods x {len(seeds)} seeds = "
          f"{pairs * len(methods)} configurations; --launcher local: {pairs} jobs (one per pair)")
    print(f"{os.cpu_count()} CPU(s); load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = timed(flags, tmp / "inproc")
        print(f"in-process:                          {base:8.1f} s")
        for k in args.parallelism:
            out = tmp / f"local{k}"
            local = timed(flags + ["--launcher", "local", "--local-parallelism", str(k), "--jobs-dir",
                                   str(out / "jobs")], out)
            same = (out / "results" / "table.csv").read_bytes() == (tmp / "inproc" / "results" /
                                                                     "table.csv").read_bytes()
            print(f"--launcher local, {k} job(s) at a time: {local:8.1f} s   ratio {local / base:.2f}   "
                  f"overhead {(local - base) / pairs:+.1f} s per job   table.csv equal to in-process: "
                  f"{'yes' if same else 'NO'}")
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
