"""Every test runs away from the user's files: checkpoints and caches go to temporary folders.

``MINIREC_RUNS_DIR`` and ``MINIREC_CACHE_DIR`` are set before minirec is imported, so the
package and every notebook kernel the tests start (which inherit the environment) write
there, never to ``runs/`` or ``data/cache/``. Figures and results go to ``tmp_path`` folders.
"""
import os
import tempfile
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
_SESSION = tempfile.mkdtemp(prefix="minirec-tests-")
os.environ["MINIREC_RUNS_DIR"] = os.path.join(_SESSION, "runs")
os.environ["MINIREC_CACHE_DIR"] = os.path.join(_SESSION, "cache")      # shared by the session's tests
torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parent.parent
PRODUCTS = ("figures", "notebooks", "runs", "data", "README.md")     # what only the main job and the study may write


def snapshot(root: Path, names=PRODUCTS) -> dict[str, tuple[int, int]]:
    """Every file under ``root``'s product folders: relative path -> (size, modification time in ns)."""
    out = {}
    for name in names:
        top = root / name
        paths = [top] if top.is_file() else (p for p in top.rglob("*") if p.is_file()) if top.is_dir() else []
        for p in paths:
            st = p.stat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def writes_between(before: dict, after: dict) -> list[str]:
    """Files created, changed or deleted between two snapshots."""
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


_BEFORE = snapshot(REPO)


def pytest_sessionfinish(session, exitstatus):
    """The session fails when any test wrote into the repository's figures, notebooks, runs, data or README."""
    writes = writes_between(_BEFORE, snapshot(REPO))
    if writes:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"FAILED: the tests wrote into the repository: {writes[:20]}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def ml100k():
    from minirec.data.loaders import load_movielens_100k
    return load_movielens_100k(download=False)


@pytest.fixture(scope="session")
def synthetic():
    from minirec.data.synthetic import make_synthetic
    return make_synthetic(seed=0)


@pytest.fixture(scope="session")
def ml100k_text(ml100k):
    """Real all-MiniLM-L6-v2 embeddings of the MovieLens catalogue (cached in the session's folder)."""
    from minirec.sids.embeddings import item_embeddings
    return item_embeddings(ml100k, verbose=False)


@pytest.fixture(scope="session")
def synthetic_sids(synthetic):
    """RQ-KMeans SIDs (2 levels of 4 codes) of the synthetic catalogue's planted embeddings, shared by the tests."""
    from minirec.sids.quantizers import QuantizerConfig, RQKMeans
    from minirec.sids.semantic_ids import build_sid_table
    from minirec.data.synthetic import planted_embeddings
    return build_sid_table(RQKMeans(QuantizerConfig(levels=2, codebook_size=4)), planted_embeddings(synthetic),
                           synthetic)


# ----------------------------------------------------------------------------- OneRec-Think on the synthetic catalogue
ONEREC_SMALL = dict(hidden_size=64, intermediate_size=128, head_dim=16)


@pytest.fixture(scope="session")
def onerec_setup(synthetic, synthetic_sids):
    from minirec.reasoning import itemic
    from minirec.data.dataset import leave_one_out
    from minirec.experiments.runner import RunSpec
    from minirec.reasoning.onerec import OneRecConfig, OneRecThink
    split = leave_one_out(synthetic)
    table = synthetic_sids
    config = OneRecConfig(max_items=10, beam_width=20, text_vocab_size=300, rationale_similarity="sid", caption_holdout=0.25,
                          rationale_tokens=32,
                          backbone_overrides=ONEREC_SMALL)
    spec = RunSpec("Base", OneRecThink, config, table, itemic.tokenizer_corpus(synthetic))
    return split, table, spec


@pytest.fixture(scope="session")
def onerec_trained(onerec_setup, tmp_path_factory):
    """Base, warm-up -> alignment, and reasoning on the synthetic catalogue, through the experiment runner
    (shared by the OneRec-Think and GRPO tests)."""
    from minirec.experiments.runner import run
    from minirec.profiles import get_profile, with_recipe
    split, table, spec = onerec_setup
    profile = with_recipe(get_profile("smoke"), "onerec", max_epochs=6, patience=6, batch_size=32, lr=3e-3,
                          warmup_steps=20)          # Base, and alignment on this from-scratch backbone
    profile = with_recipe(profile, "finetune", max_epochs=6, patience=6, batch_size=32, lr=1e-3, warmup_steps=20)
    profile = with_recipe(profile, "warmup", max_epochs=1, batch_size=32)
    runs_dir = tmp_path_factory.mktemp("runs")
    # more captioning than the paper's mix, so that a few epochs on 128 items teach it
    align = spec.variant("warm-up", stage="warmup", task_mix=(0.2, 0.4, 0.3, 0.1)).then("aligned", stage="align")
    reason = align.then("reasoning", stage="reason")
    return {name: run(s, split, profile, runs_dir=runs_dir, verbose=False)
            for name, s in (("base", spec), ("align", align), ("reason", reason))}


@pytest.fixture(scope="session")
def shop_sids(ml100k, ml100k_text):
    """RQ-KMeans SIDs (2 levels of 16) of the real MovieLens items: the agent tests' SID table."""
    from minirec.sids.quantizers import QuantizerConfig, RQKMeans
    from minirec.sids.semantic_ids import build_sid_table
    return build_sid_table(RQKMeans(QuantizerConfig(levels=2, codebook_size=16)), ml100k_text, ml100k)


@pytest.fixture(scope="session")
def shop(ml100k, shop_sids):
    """ShopX-mini's catalogue over the real MovieLens items, and the full split."""
    from minirec.agent import Catalogue
    from minirec.data.dataset import leave_one_out
    return Catalogue(ml100k, shop_sids), leave_one_out(ml100k)
