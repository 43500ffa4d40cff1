"""Choose anchors by k-means: the rows nearest to the cluster centres of one embeddings file.

The paper's command works as written:  python cluster.py --m dinov2 --d coco --nc 320  (-t for text)
"""
import os
import sys

from src.cli import ArgumentParser, DataError, UsageError, run_main
from src.clustering import cluster_anchors
from src.encoders import REGISTRY
from src.files import save_cluster, side_file
from src.names import Side, check_path_part, parse_model
from src.perturb import parse_input_perturbation
from src.sides import load_side, require_distinct


def build_parser():
    p = ArgumentParser(prog="cluster.py", description=__doc__.split("\n")[0])
    p.add_argument("--m", "--model", "--model_name", dest="model", default="dinov2",
                   help="model name of the embeddings ([random:]NAME[@LAYER], as get_embeds.py)")
    p.add_argument("--d", "--dataset", dest="dataset", default="coco", help="dataset of the embeddings")
    p.add_argument("-t", "--text", dest="text", action="store_true", help="cluster the _text file (default: _img)")
    p.add_argument("--nc", "--n-clusters", "--n_clusters", dest="n_clusters", type=int, default=320,
                   help="number of k-means clusters (= anchors)")
    p.add_argument("--exact-count", action="store_true",
                   help="top up to exactly --nc distinct anchors with next-nearest rows (off: the paper's)")
    p.add_argument("--perturb", default=None, metavar="KIND:LEVEL",
                   help="cluster the file of an input perturbation (get_embeds.py --perturb KIND:LEVEL)")
    p.add_argument("--data-dir", default="data", help="where the embeddings are and the picks go")
    p.add_argument("-q", "--quiet", action="store_true", help="no logs")
    return p


def _modality_hint(model, modality):
    """A registry model that has no file of this modality: say which flag is missing."""
    spec = REGISTRY.get(parse_model(model).base)
    if spec is not None and modality not in spec.modalities:
        flag = "add -t" if modality == "img" else "drop -t"
        return f"{spec.name} is a {'text' if modality == 'img' else 'vision'}-only model: {flag}"
    return None


def main(argv=None):
    def body(args):
        if args.n_clusters < 1:
            raise UsageError(f"--nc {args.n_clusters}: must be at least 1")
        check_path_part(args.dataset, "--d (the dataset name)")  # the dataset name becomes part of file names
        if os.path.exists(args.data_dir) and not os.path.isdir(args.data_dir):
            raise UsageError(f"--data-dir {args.data_dir} is a file, not a folder: pass the folder get_embeds.py "
                             f"wrote the embeddings into (its --data-dir, default data)")
        modality = "text" if args.text else "img"
        perturb = None if args.perturb is None else parse_input_perturbation(args.perturb, (modality,))
        side = Side(args.model, modality, perturbation=perturb)
        src = side_file(args.data_dir, args.dataset, side)
        if not src.exists() and _modality_hint(args.model, modality):
            raise UsageError(f"{src} does not exist: {_modality_hint(args.model, modality)}")
        # as run.py reads a side: rows and sidecar checked to agree (a cut write, a file replaced by hand)
        X = load_side(args.data_dir, args.dataset, side).rows
        require_distinct(X, str(src), "k-means on one repeated vector picks arbitrary anchors; re-extract it")
        if args.n_clusters > X.shape[0]:
            raise DataError(f"--nc {args.n_clusters} clusters, but {src} has only {X.shape[0]} rows; lower --nc")
        picks = cluster_anchors(X, args.n_clusters, exact_count=args.exact_count)
        out = side_file(args.data_dir, args.dataset, side, cluster=True)
        # the digest ties the picks to these exact rows: run.py refuses them for re-extracted embeddings
        save_cluster(picks, out, src, X, args.n_clusters, args.exact_count, "KMeans(random_state=0, n_init=10)")
        print(f"wrote {out} ({picks.numel()} distinct anchors from {args.n_clusters} clusters)")
        return 0

    return run_main(build_parser(), argv, body)


if __name__ == "__main__":
    sys.exit(main())
