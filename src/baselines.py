"""The baseline graphs (Q x Q, rows source queries, columns target queries): linear regression, cosine,
relative representations. Graphs keep the dtype and device of their inputs; least squares runs in float64
on the CPU (MPS has no float64)."""
import torch

from .cka import to_device


def _l2n(x):
    return x / torch.linalg.norm(x, dim=1, keepdim=True)


def _cosine(x, y):
    return _l2n(x) @ _l2n(y).T


def linear_baseline(source_base, target_base, source_query, target_query, device=None):
    """Least squares (no intercept) from source to target on the anchors; cosine of projected source
    queries to the true target queries."""
    sb, tb, sq, tq = (to_device(t, device) for t in (source_base, target_base, source_query, target_query))
    W = torch.linalg.lstsq(sb.cpu().double(), tb.cpu().double(), driver="gelsd").solution
    projected = (sq.cpu().double() @ W).to(dtype=sq.dtype, device=sq.device)
    return _cosine(projected, tq)


def cos_baseline(source_base, target_base, source_query, target_query, device=None):
    """Plain cosine between source and target queries (meaningful only for a shared space, e.g. CLIP)."""
    return _cosine(to_device(source_query, device), to_device(target_query, device))


def get_relative_representation(q, prior):
    """Cosine of each row of q to each anchor in prior (relative representations)."""
    return _cosine(q, prior)


def relative_baseline(source_base, target_base, source_query, target_query, device=None):
    """Relative representations: cosine to the anchors on each side, rows normalised, then cosine."""
    sb, tb, sq, tq = (to_device(t, device) for t in (source_base, target_base, source_query, target_query))
    return _cosine(get_relative_representation(sq, sb), get_relative_representation(tq, tb))
