"""Match captions to images with no training: anchors, a method, matching and retrieval accuracy.

The paper's command works as written:
    python run.py --m linear --b 320 --q 500 --c 0 --vid_model dinov2 --text_model allroberta \
        --base_data coco --query_data nocaps --gpu 0
and ``python run.py --demo`` runs every method on the bundled flickr1k embeddings.
"""
import sys

from src.cli import ArgumentParser, UsageError, add_device_args, resolve_device, run_main
from src.experiment import METHODS, QAP_INITS, Config, load_inputs, run, write_outputs
from src.qap import SOLVERS

DEMO = dict(base_data="flickr1k", query_data="flickr1k", vid_model="efficientnet_lite0", text_model="minilm",
            base_samples=320, query_samples=500, clustering_mode=0, seeds=(0, 1, 2))
DEMO_NOTE = """\
What these numbers mean: {q} flickr8k captions are matched to their {q} photos (chance: 1/{q} = {chance:.1%})
using {b} known image-caption pairs as anchors, with no training. The two encoders are small real models,
EfficientNet-Lite0 (ImageNet classifier) and all-MiniLM-L6-v2, far weaker than the paper's DINOv2 x
all-roberta-large-v1, so expect far lower accuracy than the paper's COCO/NoCaps tables. matching_acc:
fraction of captions assigned their own photo; top_k: fraction whose photo is among the k best-scored
(-1: qap only matches); cka: linear / RBF CKA of the paired anchors + queries; averages over 3 seeds."""


def build_parser():
    p = ArgumentParser(prog="run.py", description=__doc__.split("\n")[0])
    p.add_argument("--m", "--method", dest="method", default="linear", choices=sorted(METHODS),
                   help="how captions and images are scored and matched")
    p.add_argument("--b", "--base-samples", dest="base_samples", type=int, default=320, help="number of anchors")
    p.add_argument("--q", "--query-samples", dest="query_samples", type=int, default=500, help="number of queries")
    p.add_argument("--c", "--clustering-mode", dest="clustering_mode", type=int, default=0, choices=(0, 1, 2),
                   help="0: random anchors; 1: anchors from the source side's k-means clusters; 2: the target's")
    p.add_argument("--vid_model", "--vision-model", dest="vid_model", default="dinov2", help="vision model name")
    p.add_argument("--text_model", "--text-model", dest="text_model", default="allroberta", help="text model name")
    p.add_argument("--base_data", "--base-data", dest="base_data", default="coco", help="dataset of the anchors")
    p.add_argument("--query_data", "--query-data", dest="query_data", default="nocaps",
                   help="dataset of the queries")
    p.add_argument("-str", "--stretch", dest="stretch", action="store_true",
                   help="divide every dimension by its standard deviation first")
    p.add_argument("-vtl", "--vision-to-language", dest="vtl", action="store_true",
                   help="images are the source side, captions the target")
    add_device_args(p)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="query seeds (the paper's seed2)")
    p.add_argument("--base-seed", type=int, default=0, help="anchor seed (the paper's fixed seed1)")
    p.add_argument("--restarts", type=int, default=500, help="qap: most FAQ restarts")
    p.add_argument("--qap-solver", choices=SOLVERS, default="fast",
                   help="qap: fast (batched, src/qap.py) or scipy (the paper's loop)")
    p.add_argument("--qap-init", choices=QAP_INITS, default="randomized",
                   help="qap starts: randomized (the paper's), barycenter, or a warm start from that graph")
    p.add_argument("--qap-patience", type=int, default=10,
                   help="qap, fast solver: stop after this many restarts without a better objective (0: never)")
    p.add_argument("--qap-polish", action="store_true",
                   help="qap, fast solver: pair-swap local search on the best permutation (a higher objective)")
    p.add_argument("--data-dir", default="data", help="where the embeddings and cluster files are")
    p.add_argument("--results-dir", default="results", help="averaged CSVs and summary.csv")
    p.add_argument("--seedwise-dir", default="seedwise", help="per-seed CSVs")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or logs")
    p.add_argument("--demo", action="store_true",
                   help="every method on the bundled flickr1k demo embeddings (overrides the data flags)")
    return p


def config_from_args(args, **overrides):
    if args.restarts < 1:
        raise UsageError(f"--restarts {args.restarts}: must be at least 1")
    values = dict(method=args.method, base_samples=args.base_samples, query_samples=args.query_samples,
                  clustering_mode=args.clustering_mode, vid_model=args.vid_model, text_model=args.text_model,
                  base_data=args.base_data, query_data=args.query_data, stretch=args.stretch, vtl=args.vtl,
                  seeds=tuple(args.seeds), base_seed=args.base_seed, restarts=args.restarts,
                  qap_solver=args.qap_solver, qap_init=args.qap_init,
                  qap_patience=args.qap_patience or None, qap_polish=args.qap_polish, data_dir=args.data_dir,
                  results_dir=args.results_dir, seedwise_dir=args.seedwise_dir)
    values.update(overrides)
    return Config(**values)


def _fmt(v):
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def print_table(avgs, paths):
    cols = ["method", "linear_cka", "kernel_cka", "matching_acc", "top_1", "top_5", "top_10", "seconds"]
    table = [cols] + [[_fmt(a[c]) for c in cols] for a in avgs]
    widths = [max(len(r[i]) for r in table) for i in range(len(cols))]
    for r in table:
        print("  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths))))
    print()
    for p in paths:
        print(f"wrote {p['seedwise']}\nwrote {p['results']}")
    if paths:
        print(f"appended to {paths[-1]['summary']}")


def main(argv=None):
    def body(args):
        device = resolve_device(args.device, args.gpu)
        if args.demo:
            # cos needs one shared space; the demo's two encoders have 1280 and 384 dimensions
            configs = [config_from_args(args, method=m, **DEMO) for m, spec in METHODS.items()
                       if not spec.same_space]
        else:
            configs = [config_from_args(args)]
        inputs = load_inputs(configs[0])  # every check before any computation or writing
        avgs, paths = [], []
        for cfg in configs:
            rows, avg = run(cfg, inputs, device, progress=not args.quiet)
            paths.append(write_outputs(cfg, rows, avg))
            avgs.append(avg)
        print_table(avgs, paths)
        if args.demo:
            q = configs[0].query_samples
            print("\n" + DEMO_NOTE.format(q=q, b=configs[0].base_samples, chance=1 / q))
        return 0

    return run_main(build_parser(), argv, body)


if __name__ == "__main__":
    sys.exit(main())
