import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FLICKR = ROOT.parent / "shared" / "data" / "flickr8k-1k"

# Tests never download: any hub access must fail fast instead of hanging on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def flickr():
    if not (FLICKR / "captions.json").is_file():
        pytest.skip(f"{FLICKR} is not here (it lies in ../shared beside the checkout)")
    return FLICKR
