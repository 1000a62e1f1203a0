"""A synthetic catalogue with a planted category hierarchy and sequential structure.

Used by the tests (and by anyone who wants a dataset where the right answer is known):
- items sit in ``n_top`` categories x ``n_sub`` subcategories;
- ``planted_embeddings`` gives item vectors whose geometry follows that hierarchy, so a
  good quantiser's first-level codes should recover the top categories;
- users prefer one or two top categories and move through a subcategory in order
  (item k is usually followed by item k+1 of the same subcategory), so a sequential
  model can beat popularity by a wide margin.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from minirec.data.dataset import SequenceDataset, from_interactions


def make_synthetic(n_top: int = 4, n_sub: int = 4, items_per_sub: int = 8, n_users: int = 300,
                   min_len: int = 12, max_len: int = 30, p_successor: float = 0.7,
                   p_same_top: float = 0.9, seed: int = 0) -> SequenceDataset:
    """Build the dataset; item attributes ``top`` and ``sub`` hold the planted labels."""
    rng = np.random.default_rng(seed)
    n_items = n_top * n_sub * items_per_sub
    top = np.arange(n_items) // (n_sub * items_per_sub)
    sub = np.arange(n_items) // items_per_sub          # global subcategory id
    rank = np.arange(n_items) % items_per_sub           # position inside the subcategory
    users, items, times = [], [], []
    for u in range(n_users):
        favourite = rng.integers(n_top)
        length = rng.integers(min_len, max_len + 1)
        item = rng.choice(np.flatnonzero(top == favourite))
        for t in range(length):
            users.append(f"u{u}")
            items.append(f"i{item}")
            times.append(t)
            if rng.random() < p_successor:   # walk along the subcategory
                item = sub[item] * items_per_sub + (rank[item] + 1) % items_per_sub
            else:                            # jump, usually within the favourite category
                cat = favourite if rng.random() < p_same_top else rng.integers(n_top)
                item = rng.choice(np.flatnonzero(top == cat))
    table = pd.DataFrame({
        "title": [f"Item {i}" for i in range(n_items)],
        "year": "",
        "genres": [[f"cat{top[i]}", f"cat{top[i]}.{sub[i] % n_sub}"] for i in range(n_items)],
        "top": top, "sub": sub,
    }, index=[f"i{i}" for i in range(n_items)])
    return from_interactions("synthetic", users, items, times, table, source=f"make_synthetic(seed={seed})")


def planted_embeddings(dataset: SequenceDataset, dim: int = 32, top_scale: float = 4.0,
                       sub_scale: float = 1.5, noise: float = 0.3, seed: int = 0) -> np.ndarray:
    """Item vectors = top-category centre + subcategory offset + noise, shape (n_items, dim)."""
    rng = np.random.default_rng(seed)
    top = dataset.items["top"].to_numpy()
    sub = dataset.items["sub"].to_numpy()
    top_centres = rng.normal(size=(top.max() + 1, dim)) * top_scale
    sub_offsets = rng.normal(size=(sub.max() + 1, dim)) * sub_scale
    x = top_centres[top] + sub_offsets[sub] + rng.normal(size=(len(top), dim)) * noise
    return x.astype(np.float32)
