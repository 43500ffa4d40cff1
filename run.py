r"""Match captions to images (or any two sides) with no training: anchors, methods, matching and retrieval.

The paper's command works as written:
    python run.py --m linear --b 320 --q 500 --c 0 --vid_model dinov2 --text_model allroberta \
        --base_data coco --query_data nocaps --gpu 0
Several methods and models in one process (their cross product, each with its own CSVs):
    python run.py --m relative qap --vid_model efficientnet_lite0 efficientnet_lite1 --text_model minilm mpnet ...
Any two sides, e.g. cross-lingual:  python run.py --source mpnet:text --target use:text:de --base_data flickr1k ...
Class names against images:  python run.py --task classes --b 20 --base_data caltech101 --query_data caltech101 ...
A sweep as cluster jobs, one per pair (resumable):  python run.py ... --launcher slurm --slurm-gpus 1
Perturbed sides, a configuration a level:  python run.py --source mpnet:text~swap:0 mpnet:text~swap:0.5 ...
A linear probe of each side (downstream performance):  python run.py --task probe --target pixels:img ...
Which metric predicts what:  python run.py --report [--performance FILE.csv]
``python run.py --demo`` draws Figure 1 in small from the bundled embeddings; ``--demo depth`` across depth.
"""
import sys

from src.cli import ArgumentParser, add_device_args, run_main
from src.demo import DEMO_DATA, DEMOS  # noqa: F401  (run.DEMOS, run.DEMO_DATA: the demos, for tests and docs)
from src.launch import add_launch_args
from src.methods import METHODS
from src.metrics import METRICS
from src.run_cli import (  # noqa: F401  (configs_from_args: run.configs_from_args, for tests)
    applies,
    body,
    configs_from_args,
    methods_help,
    one_sided,
    perturbations_help,
    tasks_help,
)
from src.tasks import TASKS


def build_parser():
    p = ArgumentParser(prog="run.py", description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--m", "--method", dest="method", nargs="+", default=["linear"], choices=sorted(METHODS),
                   metavar="METHOD", help=methods_help())
    p.add_argument("--b", "--base-samples", dest="base_samples", type=int, default=320,
                   help=f"number of anchors (--task classes/classify: anchor classes; --task {one_sided()}: "
                        f"accepted and not used)")
    p.add_argument("--q", "--query-samples", dest="query_samples", type=int, default=500,
                   help="number of queries" + applies("query_samples"))
    p.add_argument("--c", "--clustering-mode", dest="clustering_mode", type=int, default=0, choices=(0, 1, 2),
                   help="0: random anchors; 1: anchors from the source side's k-means clusters; 2: the target's"
                        + applies("clustering_mode"))
    p.add_argument("--vid_model", "--vision-model", dest="vid_model", nargs="+", default=["dinov2"],
                   metavar="MODEL", help="vision model(s) of the _img files ([random:]NAME[@LAYER])")
    p.add_argument("--text_model", "--text-model", dest="text_model", nargs="+", default=["allroberta"],
                   metavar="MODEL", help="text model(s) of the _text files")
    p.add_argument("--source", nargs="+", default=None, metavar="SIDE",
                   help="source side(s) MODEL:img|text[:LANG][~KIND:LEVEL] (with --target; replaces the paper's "
                        "model flags). ~KIND:LEVEL perturbs the side, each level its own configuration: "
                        + perturbations_help())
    p.add_argument("--target", nargs="+", default=None, metavar="SIDE",
                   help=f"target side(s), as --source (--task {one_sided()}: the sides, each its own "
                        f"configuration)")
    p.add_argument("--task", default="captions", choices=tuple(TASKS),
                   help=tasks_help())
    p.add_argument("--base_data", "--base-data", dest="base_data", default="coco", help="dataset of the anchors")
    p.add_argument("--query_data", "--query-data", dest="query_data", default="nocaps",
                   help=f"dataset of the queries (--task {one_sided()}: not used)")
    p.add_argument("-str", "--stretch", dest="stretch", action="store_true",
                   help="divide every dimension by its standard deviation first" + applies("stretch"))
    p.add_argument("-vtl", "--vision-to-language", dest="vtl", action="store_true",
                   help="images are the source side, captions the target")
    add_device_args(p)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="query seeds (the paper's seed2; the class tasks: anchor-class seeds; --task probe: fold "
                        "seeds); they also seed row perturbations")
    p.add_argument("--base-seed", type=int, default=0,
                   help="anchor seed (the paper's fixed seed1)" + applies("base_seed"))
    p.add_argument("--permutations", type=int, default=0,
                   help="also report each alignment metric's mean over N shuffled pairings and a z-score")
    p.add_argument("--data-dir", default="data", help="where the embeddings and cluster files are")
    p.add_argument("--results-dir", default="results", help="averaged CSVs, summary.csv, table.csv, figures")
    p.add_argument("--seedwise-dir", default="seedwise", help="per-seed CSVs")
    p.add_argument("--report", action="store_true",
                   help="only make results/table.csv, results/figure1.png and results/correlations.csv (every "
                        "alignment metric against every method's accuracy and --performance: Pearson, Spearman, "
                        "n, 95%% bootstrap intervals), perturbation.png (when sides are perturbed) and "
                        "performance.png (with --performance) from the CSVs in --results-dir")
    p.add_argument("--performance", default=None, metavar="FILE.csv",
                   help="--report: a per-model performance table joined to the table's rows by the model of "
                        "either side (the target's first), e.g. the probe's table.csv")
    p.add_argument("--performance-model", default="model", metavar="COLUMN",
                   help="--performance: the column of model names (as the sides write them; a side is read as "
                        "its model)")
    p.add_argument("--performance-score", default="score", metavar="COLUMN",
                   help="--performance: the column of scores")
    p.add_argument("--x", default="kernel_cka", choices=tuple(METRICS), help="the figure's x-axis metric")
    p.add_argument("--figure", default=None,
                   help="file name of the figure in --results-dir (default: figure1.png; --demo depth: "
                        "figure1_depth.png)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or logs")
    p.add_argument("--demo", nargs="?", const="figure1", choices=tuple(DEMOS), default=None,
                   help="the bundled flickr1k demo: figure1 (6 model pairs) or depth (Lite0 across depth)")
    add_launch_args(p)
    p.add_argument("--overwrite", action="store_true",
                   help="--launcher: also run the configurations whose results exist (without --launcher every "
                        "configuration is computed, as always)")
    seen = set()
    for name, method in METHODS.items():  # each method adds its own options' flags
        method.add_arguments(p, name, seen)
    return p



def main(argv=None):
    parser = build_parser()
    return run_main(parser, argv, lambda args: body(args, parser))


if __name__ == "__main__":
    sys.exit(main())
