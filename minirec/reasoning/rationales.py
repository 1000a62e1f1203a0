"""Rationales for reasoning activation, built as OneRec-Think does on public data (docs/method.md §7).

Public datasets have no written reasons, so the paper builds a category-based rationale for
each training target: take the ``k`` history items most similar to the target, count their
categories, and write the most frequent ones into a template inside ``<think> ... </think>``::

    <think> The user is likely to watch Comedy and Drama movies </think> <|sid_begin|> ... <|sid_end|>

The model is then fine-tuned on rationale + target SID (loss on both), and at inference it
writes its own rationale before the constrained beam search (``minirec.reasoning.onerec``).

- ``similarity_matrix``: item-item similarity, ``"text"`` (cosine of sentence-encoder item
  embeddings, the paper's choice) or ``"sid"`` (shared SID prefix length, no encoder needed);
- ``rationale_genres`` / ``rationale_text``: the template;
- ``reasoning_positions``: the (user, target position) pairs a reasoning epoch draws from;
- ``genres_in`` / ``genre_agreement``: which genres a written rationale names, and how often
  they contain the target's.
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np


def rationale_text(genres: Sequence[str]) -> str:
    """The template: " The user is likely to watch Comedy and Drama movies"."""
    genres = list(genres)
    if not genres:
        return " The user is likely to watch movies like these"
    named = genres[0] if len(genres) == 1 else ", ".join(genres[:-1]) + " and " + genres[-1]
    return f" The user is likely to watch {named} movies"


def similarity_matrix(kind: str, embeddings: np.ndarray | None = None, codes: np.ndarray | None = None) -> np.ndarray:
    """(N, N) item-item similarity: ``text`` = cosine of embeddings, ``sid`` = length of the shared SID prefix."""
    if kind == "text":
        if embeddings is None:
            raise ValueError("similarity 'text' needs item embeddings (minirec.sids.embeddings.item_embeddings)")
        x = np.asarray(embeddings, dtype=np.float32)
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return x @ x.T
    if kind == "sid":
        if codes is None:
            raise ValueError("similarity 'sid' needs the SID codes")
        codes = np.asarray(codes)[:, :-1]                      # semantic levels only, not the de-dup code
        same = np.ones((len(codes), len(codes)), dtype=np.float32)
        shared = np.zeros_like(same)
        for level in range(codes.shape[1]):
            same *= codes[:, None, level] == codes[None, :, level]
            shared += same
        return shared
    raise ValueError(f"unknown similarity {kind!r}; use 'text' or 'sid'")


def nearest_history(history: Sequence[int], target: int, similarity: np.ndarray, k: int = 3) -> np.ndarray:
    """The ``k`` history items most similar to ``target``, most similar first (ties: the earlier item)."""
    history = np.asarray(history, dtype=np.int64)
    return history[np.argsort(-similarity[int(target), history], kind="stable")[:k]]


def rationale_genres(history: Sequence[int], target: int, genres: Sequence[Sequence[str]], similarity: np.ndarray,
                     k: int = 3, n_genres: int = 2) -> list[str]:
    """The ``n_genres`` most frequent genres among the ``k`` history items most similar to ``target``.

    Ties between genres go to the genre of the more similar item (a stable order), so the
    rationale of a (history, target) pair is deterministic.
    """
    nearest = nearest_history(history, target, similarity, k)
    counts = Counter()
    first_seen = {}
    for rank, item in enumerate(nearest):
        for g in genres[int(item)]:
            counts[g] += 1
            first_seen.setdefault(g, rank)
    ranked = sorted(counts, key=lambda g: (-counts[g], first_seen[g]))
    return ranked[:n_genres]


def reasoning_positions(train: Sequence[np.ndarray], min_history: int = 1) -> np.ndarray:
    """(n, 2) every (user, position) of the training sequences with at least ``min_history`` items before it."""
    rows = [(u, t) for u, seq in enumerate(train) for t in range(min_history, len(seq))]
    return np.array(rows, dtype=np.int64).reshape(-1, 2)


def genres_in(text: str, vocabulary: Sequence[str]) -> list[str]:
    """The genres of ``vocabulary`` that a written rationale names, in the order it names them."""
    found = [(text.find(g), g) for g in vocabulary if g in text]
    return [g for _, g in sorted(found)]


def genre_agreement(rationales: Sequence[str], targets: Sequence[int], genres: Sequence[Sequence[str]],
                    vocabulary: Sequence[str]) -> dict[str, np.ndarray]:
    """Per rationale: does it name any of the target's genres (``any``), all of them (``all``), how many it names."""
    out = {"any": [], "all": [], "named": []}
    for text, target in zip(rationales, targets):
        named, truth = set(genres_in(text, vocabulary)), set(genres[int(target)])
        out["any"].append(float(bool(named & truth)))
        out["all"].append(float(bool(truth) and truth <= named))
        out["named"].append(float(len(named)))
    return {k: np.array(v) for k, v in out.items()}
