"""Which rows are anchors and which are queries: the paper's draws, exactly its rows.

``get_data_sep`` is the paper's anchor / query split of the captions task (with ``stretch``);
``legacy_class_draw`` the class tasks' draw of anchor classes. Both use NumPy's legacy generator
(``np.random.seed(seed); np.random.choice(n, k, replace=False)`` in the paper's code) through one local
``RandomState``, so the draws are the paper's and the process-wide generator is left alone.
"""
import logging

import numpy as np
import torch

_logger = logging.getLogger(__name__)

_warned_constant_dims = False


def stretch_representations(repr):
    """Divide each dimension by its standard deviation (unbiased, over rows), as the paper does.

    Dimensions that are constant up to rounding (all-MiniLM-L6-v2 has three with variance ~1e-66) would
    become inf or huge noise; they are left unscaled, with one warning per process.
    """
    global _warned_constant_dims
    std = torch.sqrt(repr.var(dim=0))
    near_constant = ~torch.isfinite(1.0 / std) | (std <= torch.finfo(std.dtype).eps * std.max())
    if near_constant.any():
        if not _warned_constant_dims:
            idx = torch.nonzero(near_constant).flatten().tolist()
            _logger.warning("stretch: %d near-constant dimension(s) %s left unscaled (std <= eps * max std)",
                            len(idx), idx[:10])
            _warned_constant_dims = True
        std = torch.where(near_constant, torch.ones_like(std), std)
    return repr / std


def legacy_choice(seed, n, k):
    """The rows the paper's code draws (``np.random.seed(seed); np.random.choice(n, k, replace=False)``),
    from a local RandomState: the same legacy generator, without resetting the process-wide one."""
    return np.random.RandomState(seed).choice(n, k, replace=False)


def get_data_sep(seed1, seed2, base_samples, query_samples, source_base_large, target_base_large,
                 source_query_large, target_query_large, source_base_cluster, target_base_cluster,
                 clustering_mode=0, same=False, stretch=False):
    """Pick anchors (base) and queries, exactly the rows the paper's code picks.

    clustering_mode 0: ``base_samples`` random anchors (seed1); 1: the source side's cluster picks;
    2: the target side's. Queries: ``query_samples`` random rows of the query pool (seed2); when base and
    query come from one dataset (``same``) the anchor rows are left out of the query pool first.
    With ``stretch`` each side is stretched over base pool + query pool together.

    Returns (source_base, target_base, source_query, target_query).
    """
    n_base = source_base_large.shape[0]
    if stretch:
        source_total = stretch_representations(torch.cat([source_base_large, source_query_large], dim=0))
        target_total = stretch_representations(torch.cat([target_base_large, target_query_large], dim=0))
        source_base_large, source_query_large = source_total[:n_base], source_total[n_base:]
        target_base_large, target_query_large = target_total[:n_base], target_total[n_base:]

    if clustering_mode == 0:
        choose = legacy_choice(seed1, n_base, base_samples)
    elif clustering_mode == 1:
        choose = np.asarray(torch.as_tensor(source_base_cluster).cpu(), dtype=np.int64)
    elif clustering_mode == 2:
        choose = np.asarray(torch.as_tensor(target_base_cluster).cpu(), dtype=np.int64)
    else:
        raise ValueError(f"clustering_mode must be 0, 1 or 2, got {clustering_mode}")
    choose_t = torch.as_tensor(choose, device=source_base_large.device)
    source_base, target_base = source_base_large[choose_t], target_base_large[choose_t]

    n_query = source_query_large.shape[0]
    if not same:
        query = torch.as_tensor(legacy_choice(seed2, n_query, query_samples))
    else:
        mask = np.ones(n_query, dtype=bool)
        mask[choose] = False
        # The paper draws from n - base_samples rows of the remaining pool (not n - len(choose)).
        query_choose = legacy_choice(seed2, n_query - base_samples, query_samples)
        query = torch.as_tensor(np.nonzero(mask)[0][query_choose])
    query = query.to(source_query_large.device)
    return source_base, target_base, source_query_large[query], target_query_large[query]


def legacy_class_draw(seed, n_classes, n_anchors):
    """The class tasks' draw: ``legacy_choice(seed, C, b)`` anchor classes; the queries are all other
    classes, ascending."""
    anchors = legacy_choice(seed, n_classes, n_anchors)
    queries = np.setdiff1d(np.arange(n_classes), anchors)
    return anchors, queries
