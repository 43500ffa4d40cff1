"""The paper's math, with the paper's API (Maniparambil et al., CVPR 2024, arXiv 2401.05224).

Every public name and signature of the paper's ``src/utils.py`` is kept, so code written against it runs
unchanged. The code lives in modules named for what it holds, and this module re-exports it:

- ``src/cka.py``: kernels (linear, RBF with the median bandwidth), biased HSIC, CKA, the QAP inputs'
  centred and scaled kernels;
- ``src/draws.py``: the paper's anchor / query split (``get_data_sep``, ``stretch_representations``);
- ``src/baselines.py``: the linear, cosine and relative-representation graphs;
- ``src/local_cka.py``: linear and kernel local CKA for all Q x Q pairs at once;
- ``src/retrieval.py``: top-1/5/10 of a graph (``get_retrieval``, ``get_classes``);
- ``src/matching.py``: the Hungarian matching and the seeded graph matching (QAP) driver over
  ``src/faq.py``, the batched FAQ solver.

Graphs are Q x Q: rows are source queries, columns are target queries. What differs from the paper's code
is speed (no per-pair loops, batched and seeded FAQ restarts); the numbers are the paper's definitions.

Device and dtype policy (MPS has no float64): what needs float64 (least squares, the QAP matrices, matching)
runs on the CPU in float64 (``.cpu().double()``, never ``.double()`` on a device); graphs follow the device.
"""
from .baselines import cos_baseline, get_relative_representation, linear_baseline, relative_baseline
from .cka import (
    KernelCKA,
    LinearCKA,
    centered_scaled_corr,
    centered_scaled_corr_rbf,
    centering,
    kernel_CKA,
    kernel_HSIC,
    linear_CKA,
    linear_HSIC,
    rbf,
)
from .draws import get_data_sep, stretch_representations
from .local_cka import kernel_local_CKA, linear_local_CKA
from .matching import graph_matching, hungarian, qap_accuracy, qap_inputs
from .methods import QAPOptions
from .retrieval import get_classes, get_retrieval

__all__ = [
    "centering", "rbf", "kernel_HSIC", "kernel_CKA", "linear_HSIC", "linear_CKA",
    "centered_scaled_corr", "centered_scaled_corr_rbf", "stretch_representations", "get_data_sep",
    "KernelCKA", "LinearCKA", "linear_baseline", "cos_baseline", "relative_baseline",
    "get_relative_representation", "linear_local_CKA", "kernel_local_CKA", "get_retrieval",
    "get_classes", "linear_matching", "qap_matching", "qap_inputs", "qap_accuracy",
]


def linear_matching(source_base, target_base, source_query, target_query, graph, device=None):
    """Hungarian assignment (maximise) on the column-shuffled graph; fraction of recovered pairs
    (``matching.hungarian``, which also returns the assignment)."""
    return hungarian(graph)[0]


def qap_matching(source_base, target_base, source_query, target_query, graph, device=None, restarts=500,
                 seed=None, progress=True, return_info=False):
    """The paper's seeded graph matching: scipy FAQ (randomized P0, maximise, tol 1e-5) with the anchors
    fixed by ``partial_match``; the best objective over ``restarts`` runs; accuracy of the query pairs
    (``matching.graph_matching`` with the scipy solver).

    ``seed`` makes the restarts reproducible (the paper's are not); ``return_info`` also returns a dict
    with the best objective and the restarts run.
    """
    QAPOptions(restarts=restarts, qap_solver="scipy").check()
    acc, info = graph_matching(source_base, target_base, source_query, target_query, device, restarts=restarts,
                               seed=seed, solver="scipy", progress=progress)
    if return_info:
        return acc, {"objective": info["objective"], "restarts": info["restarts"]}
    return acc
