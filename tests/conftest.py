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
