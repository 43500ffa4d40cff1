"""Retrieval on a Q x Q graph: top-1/5/10, ties toward the lower column index (a stable sort on -row, as
the paper's Python sort), vectorised."""
import torch


def _topk_hits(graph, target_cols):
    """Rank (0-based) of column target_cols[i] in row i when the row is sorted by descending value with
    ties broken toward the lower column index, as Python's stable sort on -row does."""
    idx = torch.arange(graph.shape[1], device=graph.device)
    own = graph.gather(1, target_cols[:, None])
    above = (graph > own).sum(dim=1)
    tied_before = ((graph == own) & (idx[None, :] < target_cols[:, None])).sum(dim=1)
    return above + tied_before


def _recall_at(ranks):
    n = ranks.shape[0]
    return tuple(float((ranks < k).sum().item()) / n for k in (1, 5, 10))


def get_retrieval(graph):
    """(top1, top5, top10): fraction of rows i whose own column i is among the k largest entries of the
    row (ties toward the lower index). Returns (None, None, None) for graph None, as the paper."""
    if graph is None:
        return None, None, None
    graph = torch.as_tensor(graph)
    cols = torch.arange(graph.shape[0], device=graph.device)
    return _recall_at(_topk_hits(graph, cols))


def get_classes(graph, classes, target_query):
    """Class retrieval: row i is a hit at k when the column of target_query[i]'s class (its row in
    ``classes``, the last one for duplicate rows, as the paper's dict) is among the k largest."""
    graph = torch.as_tensor(graph)
    class_to_ind = {tuple(row): i for i, row in enumerate(classes.cpu().numpy().tolist())}
    cols = torch.tensor([class_to_ind[tuple(row)] for row in target_query.cpu().numpy().tolist()],
                        device=graph.device)
    return _recall_at(_topk_hits(graph, cols))
