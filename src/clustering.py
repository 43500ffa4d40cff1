"""Anchor choice by k-means, as the paper's cluster.py.

KMeans(n_clusters, random_state=0, n_init=10) on the embeddings; for each centre the row with the highest
cosine similarity; duplicates removed; indices sorted. n_init is pinned to 10, scikit-learn's default when
the paper was run (since 1.4 it is 'auto', which changes the picks).
"""
import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.metrics.pairwise import cosine_similarity


def cluster_anchors(embeddings, n_clusters, exact_count=False, random_state=0, n_init=10):
    """Row indices (sorted 1-D int64 tensor) of the rows nearest (cosine) to the k-means centres.

    Centres that share a nearest row give fewer than n_clusters anchors, as in the paper; with
    exact_count, each centre's next-nearest unused rows top the set up to exactly n_clusters.
    """
    X = embeddings.detach().cpu().numpy()  # its own dtype (float32), as the paper
    kmeans = KMeans(n_clusters=n_clusters, random_state=random_state, n_init=n_init).fit(X)
    sims = cosine_similarity(kmeans.cluster_centers_, X)
    # argsort(...)[:, -1] is the paper's pick (the last of the ascending sort on ties)
    order = np.argsort(sims, axis=1)
    picks = set(order[:, -1].tolist())
    if exact_count:
        depth = 2
        while len(picks) < n_clusters and depth <= X.shape[0]:
            for c in range(n_clusters):
                if len(picks) >= n_clusters:
                    break
                picks.add(int(order[c, -depth]))
            depth += 1
    return torch.tensor(sorted(picks), dtype=torch.int64)
