"""S²GR's collaborative signal: the item co-occurrence graph and propagation (docs/method.md §1).

The graph is built from the *training* part of the split only, so validation and test
items never leak into the item representations a quantiser sees.

    A[i, j]  = sum over users of w(distance) for i, j within ``window`` positions
    Â        = D^-1/2 A D^-1/2
    H_0 = X,  H_k = (1 - α) Â H_{k-1} + α X,   H_align = Σ_{k=0..K_g} β_k H_k,
    β_k = α (1 - α)^k / Σ_j α (1 - α)^j

Choice of ours (the paper is silent): an item with no co-occurrence gets a self-loop, so
propagation keeps its text embedding instead of shrinking it towards zero.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.sparse as sp


def cooccurrence_graph(sequences: Sequence[np.ndarray], n_items: int, window: int = 3,
                       weighting: str = "count") -> sp.csr_matrix:
    """Symmetric (n_items, n_items) co-occurrence counts, zero diagonal.

    ``window``: two items are linked when at most ``window`` positions apart in a sequence.
    ``weighting``: ``"count"`` adds 1 per co-occurrence, ``"inverse"`` adds 1/distance.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if weighting not in ("count", "inverse"):
        raise ValueError(f"weighting must be 'count' or 'inverse', got {weighting!r}")
    rows, cols, vals = [], [], []
    for seq in sequences:
        seq = np.asarray(seq)
        for dist in range(1, min(window, len(seq) - 1) + 1):
            a, b = seq[:-dist], seq[dist:]
            keep = a != b
            rows.append(a[keep])
            cols.append(b[keep])
            vals.append(np.full(keep.sum(), 1.0 if weighting == "count" else 1.0 / dist))
    if not rows:
        return sp.csr_matrix((n_items, n_items))
    r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    a = sp.coo_matrix((v, (r, c)), shape=(n_items, n_items)).tocsr()
    return (a + a.T).tocsr()


def normalize_symmetric(a: sp.spmatrix) -> sp.csr_matrix:
    """Â = D^-1/2 A D^-1/2, with a self-loop for isolated items."""
    a = sp.csr_matrix(a, dtype=np.float64)
    deg = np.asarray(a.sum(axis=1)).ravel()
    isolated = deg == 0
    if isolated.any():
        a = a + sp.diags(isolated.astype(np.float64))
        deg = np.where(isolated, 1.0, deg)
    d = sp.diags(1.0 / np.sqrt(deg))
    return (d @ a @ d).tocsr()


def propagation_weights(alpha: float, k_g: int) -> np.ndarray:
    """β_k = α(1-α)^k, normalised to sum to one, for k = 0..K_g."""
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    beta = alpha * (1 - alpha) ** np.arange(k_g + 1)
    return beta / beta.sum()


def propagate(x: np.ndarray, a_hat: sp.spmatrix, alpha: float = 0.5, k_g: int = 2) -> np.ndarray:
    """H_align = Σ β_k H_k with H_k = (1-α) Â H_{k-1} + α X (personalised-PageRank style)."""
    beta = propagation_weights(alpha, k_g)
    h = x.astype(np.float64)
    out = beta[0] * h
    for k in range(1, k_g + 1):
        h = (1 - alpha) * (a_hat @ h) + alpha * x
        out += beta[k] * h
    return out.astype(np.float32)


def collaborative_embeddings(x: np.ndarray, train_sequences: Sequence[np.ndarray], alpha: float = 0.5,
                             k_g: int = 2, window: int = 3, weighting: str = "count") -> np.ndarray:
    """Text embeddings smoothed over the training co-occurrence graph (CoBa's input)."""
    graph = cooccurrence_graph(train_sequences, len(x), window, weighting)
    return propagate(x, normalize_symmetric(graph), alpha, k_g)


def neighbour_cooccurrence(z: np.ndarray, graph: sp.spmatrix, k: int = 10, sample: int = 400, seed: int = 0) -> float:
    """Share of each item's ``k`` nearest neighbours in ``z`` (cosine) that co-occur with it in ``graph``.

    Averaged over ``sample`` random items: how collaborative an embedding's neighbourhoods are.
    """
    from minirec.sids.embeddings import nearest_neighbours

    graph = sp.csr_matrix(graph)
    n = z.shape[0]
    items = np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False)
    linked = [np.mean(graph[i, nearest_neighbours(z, i, k)].toarray().ravel() > 0) for i in items]
    return float(np.mean(linked))
