import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def ml100k():
    from minirec.data import load_movielens_100k
    return load_movielens_100k(download=False)


@pytest.fixture(scope="session")
def synthetic():
    from minirec.synthetic import make_synthetic
    return make_synthetic(seed=0)


@pytest.fixture(scope="session")
def ml100k_text(ml100k):
    """Real all-MiniLM-L6-v2 embeddings of the MovieLens catalogue (cached under data/cache)."""
    from minirec.embeddings import item_embeddings
    return item_embeddings(ml100k, verbose=False)
