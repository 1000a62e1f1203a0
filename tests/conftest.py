"""Every test runs away from the user's files: checkpoints and caches go to temporary folders.

``MINIREC_RUNS_DIR`` and ``MINIREC_CACHE_DIR`` are set before minirec is imported, so the
package and every notebook kernel the tests start (which inherit the environment) write
there, never to ``runs/`` or ``data/cache/``. Figures and results go to ``tmp_path`` folders.
"""
import os
import tempfile

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
_SESSION = tempfile.mkdtemp(prefix="minirec-tests-")
os.environ["MINIREC_RUNS_DIR"] = os.path.join(_SESSION, "runs")
os.environ["MINIREC_CACHE_DIR"] = os.path.join(_SESSION, "cache")      # shared by the session's tests
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def ml100k():
    from minirec.loaders import load_movielens_100k
    return load_movielens_100k(download=False)


@pytest.fixture(scope="session")
def synthetic():
    from minirec.synthetic import make_synthetic
    return make_synthetic(seed=0)


@pytest.fixture(scope="session")
def ml100k_text(ml100k):
    """Real all-MiniLM-L6-v2 embeddings of the MovieLens catalogue (cached in the session's folder)."""
    from minirec.embeddings import item_embeddings
    return item_embeddings(ml100k, verbose=False)


@pytest.fixture(scope="session")
def synthetic_sids(synthetic):
    """RQ-KMeans SIDs (2 levels of 4 codes) of the synthetic catalogue's planted embeddings, shared by the tests."""
    from minirec.quantizers import QuantizerConfig, RQKMeans
    from minirec.semantic_ids import build_sid_table
    from minirec.synthetic import planted_embeddings
    return build_sid_table(RQKMeans(QuantizerConfig(levels=2, codebook_size=4)), planted_embeddings(synthetic),
                           synthetic)
