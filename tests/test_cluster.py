"""cluster.py: the paper's k-means anchor choice, saved as a weights_only-loadable int64 tensor."""
import json

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.metrics.pairwise import cosine_similarity

import cluster
from src.clustering import cluster_anchors


def paper_picks(X, n_clusters):
    """The paper's cluster.py with n_init pinned to 10 (scikit-learn's default when it was run)."""
    kmeans = KMeans(n_clusters=n_clusters, random_state=0, n_init=10).fit(X)
    cos = cosine_similarity(kmeans.cluster_centers_, X)
    return sorted(set(np.argsort(cos, axis=1)[:, -1:].reshape(-1).tolist()))


@pytest.fixture
def emb(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(120, 8, generator=g)
    X[60:] = X[:60] + 1e-4 * torch.randn(60, 8, generator=g)  # near-duplicates: centres share nearest rows
    (tmp_path / "data").mkdir()
    torch.save(X, tmp_path / "data" / "toy_enc_img.pt")
    torch.save(X[:, :5].contiguous(), tmp_path / "data" / "toy_enc_text.pt")
    return X


def test_cluster_py_matches_the_papers_procedure(emb, tmp_path):
    assert cluster.main(["--m", "enc", "--d", "toy", "--nc", "40"]) == 0
    picks = torch.load(tmp_path / "data" / "toy_enc_img_cluster.pt", weights_only=True)
    assert picks.dtype == torch.int64 and picks.ndim == 1
    assert picks.tolist() == paper_picks(emb.numpy(), 40)
    side = json.loads((tmp_path / "data" / "toy_enc_img_cluster.json").read_text())
    assert side["embeddings"] == "toy_enc_img.pt" and side["anchors"] == picks.numel()
    assert cluster.main(["--model", "enc", "--dataset", "toy", "--text", "--n-clusters", "30", "-q"]) == 0
    picks = torch.load(tmp_path / "data" / "toy_enc_text_cluster.pt", weights_only=True)
    assert picks.tolist() == paper_picks(emb[:, :5].numpy(), 30)


def test_exact_count_tops_up_to_n_distinct_anchors(emb):
    plain = cluster_anchors(emb, 100)
    exact = cluster_anchors(emb, 100, exact_count=True)
    assert plain.numel() < 100  # centres that share a nearest row collapse, as in the paper
    assert exact.numel() == 100 and len(set(exact.tolist())) == 100
    assert set(plain.tolist()) <= set(exact.tolist())
    assert exact.tolist() == sorted(exact.tolist())


def test_cluster_errors(emb, tmp_path, capsys):
    assert cluster.main(["--m", "other", "--d", "toy"]) == 1
    err = capsys.readouterr().err
    assert "data/toy_other_img.pt does not exist" in err and "other is not a model get_embeds.py knows" in err
    assert cluster.main(["--m", "enc", "--d", "toy", "--nc", "500"]) == 1
    assert "only 120 rows" in capsys.readouterr().err
    assert not list((tmp_path / "data").glob("*_cluster.*"))
