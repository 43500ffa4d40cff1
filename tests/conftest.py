import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The real photos and captions (Flickr8k: 1,000 photos with captions in English, Chinese and German;
# Caltech-101: 100 classes x 20 photos) are found through one environment variable, which .ci/run sets.
DATA_ROOT_VAR = "VLSIM_DATA_ROOT"
DATA_ROOT = Path(os.environ[DATA_ROOT_VAR]) if os.environ.get(DATA_ROOT_VAR) else None
FLICKR = (DATA_ROOT or Path("/nonexistent")) / "flickr8k-1k"
CALTECH = (DATA_ROOT or Path("/nonexistent")) / "caltech101-2k"
NO_DATA = (f"the real data is not here: set {DATA_ROOT_VAR} to the folder that holds flickr8k-1k/ and "
           f"caltech101-2k/ (README, Tests)")

# Tests never download: any hub access must fail fast instead of hanging on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def flickr():
    if not (FLICKR / "captions.json").is_file():
        pytest.skip(NO_DATA)
    return FLICKR


def make_pair(n, seed, d_text=12, d_img=20):
    g = torch.Generator().manual_seed(seed)
    Z = torch.randn(n, 5, generator=g)
    text = Z @ torch.randn(5, d_text, generator=g) + 0.3 * torch.randn(n, d_text, generator=g)
    img = torch.tanh(Z @ torch.randn(5, d_img, generator=g)) + 0.3 * torch.randn(n, d_img, generator=g)
    return text, img


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """data/ with a base set (sidecars, 150 rows) and a query set (plain tensors like the paper's, 90 rows)."""
    from src.files import save_embeddings
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    text, img = make_pair(150, 0)
    ids = list(range(1, 151))
    save_embeddings(text, data / "base_txt_text.pt", {"model": "txt", "image_ids": ids})
    save_embeddings(img, data / "base_vis_img.pt", {"model": "vis", "image_ids": ids})
    qtext, qimg = make_pair(90, 1)
    torch.save(qtext, data / "query_txt_text.pt")
    torch.save(qimg, data / "query_vis_img.pt")
    for name, n, seed in (("base", 150, 2), ("query", 90, 3)):  # a shared space, as CLIP's two towers
        t, i = make_pair(n, seed, d_text=16, d_img=16)
        torch.save(t, data / f"{name}_clipx_text.pt")
        torch.save(i + t, data / f"{name}_clipx_img.pt")
    torch.save(torch.arange(0, 60, 2), data / "base_txt_text_cluster.pt")
    torch.save(torch.arange(1, 61, 2), data / "base_vis_img_cluster.pt")
    return tmp_path
