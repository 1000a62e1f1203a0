"""Sequential-recommendation datasets and the leave-one-out protocol (docs/method.md §0).

What lives here (the file readers are in ``minirec.data.loaders``):
- ``SequenceDataset``: users' chronological item sequences with contiguous item ids,
  item text (title, year, genres) and, where known, user profiles.
- ``leave_one_out``: last item = test, second-to-last = validation, the rest = training.
- ``training_windows``: training sequences cut into fixed-length windows for
  next-item training (every position is a target).

Ordering rule: interactions are sorted by timestamp with a *stable* sort, so ratings
given in the same second keep the order of the data file (RecBole does the same).
Every rating counts as an interaction (no rating threshold).
"""
from __future__ import annotations

import hashlib

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import pandas as pd


MAX_HISTORY = 50  # the protocol's history cap (docs/method.md §0)


# ----------------------------------------------------------------------------- errors
class DataError(ValueError):
    """Base class of every data problem minirec reports."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """No source could provide the dataset; the message lists every source tried."""


class DataFormatError(DataError):
    """A data file is malformed; the message names the file and the line."""


class UnknownItemError(DataError, KeyError):
    """An item id that is not in the catalogue."""

    def __str__(self) -> str:  # KeyError would otherwise quote the whole message
        return str(self.args[0])


class EmptyHistoryError(DataError):
    """A user history with no items: there is nothing to condition a recommendation on."""


# ----------------------------------------------------------------------------- dataset
@dataclass
class SequenceDataset:
    """Users' chronological item sequences over a contiguous item index ``0..n_items-1``."""

    name: str                         # e.g. "ml-100k"
    sequences: list[np.ndarray]       # per user index: item indices in time order
    user_ids: np.ndarray              # raw user id (str) per user index
    item_ids: np.ndarray              # raw item id (str) per item index
    items: pd.DataFrame               # per item index: title, year, genres (list), text
    users: pd.DataFrame | None = None  # per user index: profile (age, gender, occupation)
    source: str = ""                  # where the files came from
    timestamps: list[np.ndarray] | None = None  # per user: unix seconds, aligned with sequences
    _item_lookup: dict = field(default=None, init=False, repr=False)

    @property
    def n_users(self) -> int:
        return len(self.sequences)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))

    @property
    def genre_vocabulary(self) -> list[str]:
        """Every genre some item has, sorted."""
        return sorted({g for gs in self.items["genres"] for g in gs})

    def item_index(self, raw_id) -> int:
        """Contiguous index of a raw item id; a clear error when it is not in the catalogue."""
        if self._item_lookup is None:
            self._item_lookup = {str(r): i for i, r in enumerate(self.item_ids)}
        try:
            return self._item_lookup[str(raw_id)]
        except KeyError:
            raise UnknownItemError(
                f"item id {raw_id!r} is not in the {self.name} catalogue "
                f"({self.n_items} items, e.g. {[str(i) for i in self.item_ids[:3]]})") from None

    def encode_history(self, raw_ids: Iterable) -> np.ndarray:
        """Raw item ids -> item indices, refusing an empty history and unknown items."""
        raw_ids = list(raw_ids)
        if not raw_ids:
            raise EmptyHistoryError("the history is empty: give at least one item the user interacted with")
        return np.array([self.item_index(r) for r in raw_ids], dtype=np.int64)

    def subset_users(self, n_users: int | None) -> "SequenceDataset":
        """The first ``n_users`` users (all items kept): for smoke runs. ``None`` = all."""
        if n_users is None or n_users >= self.n_users:
            return self
        users = None if self.users is None else self.users.iloc[:n_users].reset_index(drop=True)
        times = None if self.timestamps is None else self.timestamps[:n_users]
        return SequenceDataset(self.name, self.sequences[:n_users], self.user_ids[:n_users], self.item_ids,
                               self.items, users, self.source + f" (first {n_users} users)", times)

    def stats(self) -> dict:
        """Size, density and length statistics of the dataset."""
        lengths = np.array([len(s) for s in self.sequences])
        counts = np.bincount(np.concatenate(self.sequences), minlength=self.n_items)
        top = np.sort(counts)[::-1]
        top20 = int(np.ceil(0.2 * self.n_items))
        return {
            "dataset": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": self.n_interactions,
            "density": self.n_interactions / (self.n_users * self.n_items),
            "history_len_min": int(lengths.min()),
            "history_len_median": float(np.median(lengths)),
            "history_len_mean": float(lengths.mean()),
            "history_len_max": int(lengths.max()),
            "item_count_median": float(np.median(counts)),
            "share_of_top20pct_items": float(top[:top20].sum() / counts.sum()),
            "cold_items(<5 interactions)": int((counts < 5).sum()),
        }


def from_interactions(name: str, users: Sequence, items: Sequence, timestamps: Sequence,
                      item_table: pd.DataFrame | None = None, user_table: pd.DataFrame | None = None,
                      source: str = "") -> SequenceDataset:
    """Build a ``SequenceDataset`` from interaction columns given in file order.

    ``item_table`` / ``user_table`` are indexed by raw id (str). Items are numbered in
    ascending raw-id order (numerically when all ids are numbers); only items with at
    least one interaction enter the catalogue.
    """
    users = np.asarray(users, dtype=str)
    items = np.asarray(items, dtype=str)
    ts = np.asarray(timestamps, dtype=np.float64)
    if not (len(users) == len(items) == len(ts)) or len(users) == 0:
        raise DataError(f"{name}: interaction columns are empty or of different lengths")
    item_ids = _sorted_ids(np.unique(items))
    user_ids = _sorted_ids(np.unique(users))
    item_code = pd.Index(item_ids).get_indexer(items)
    user_code = pd.Index(user_ids).get_indexer(users)
    # Primary key user, then timestamp, then the position in the file (stable ties).
    order = np.lexsort((np.arange(len(ts)), ts, user_code))
    item_code, user_code, ts = item_code[order], user_code[order], ts[order]
    bounds = np.searchsorted(user_code, np.arange(len(user_ids) + 1))
    sequences = [item_code[bounds[u]:bounds[u + 1]].astype(np.int64) for u in range(len(user_ids))]
    times = [ts[bounds[u]:bounds[u + 1]] for u in range(len(user_ids))]

    table = pd.DataFrame(index=pd.Index(item_ids, name="item_id"))
    if item_table is not None:
        item_table = item_table.copy()
        item_table.index = item_table.index.astype(str)
        table = table.join(item_table, how="left")
    table["title"] = table.get("title", pd.Series(index=table.index, dtype=object)).fillna("").astype(str)
    table["year"] = table.get("year", pd.Series(index=table.index, dtype=object)).fillna("").astype(str)
    genres = table.get("genres", pd.Series(index=table.index, dtype=object))
    table["genres"] = [g if isinstance(g, list) else [] for g in genres]
    table["text"] = [item_text(t or f"item {i}", y, g) for i, t, y, g in
                     zip(table.index, table["title"], table["year"], table["genres"])]
    table = table.reset_index()
    profiles = None
    if user_table is not None:
        user_table = user_table.copy()
        user_table.index = user_table.index.astype(str)
        profiles = user_table.reindex(user_ids).reset_index(names="user_id")
    return SequenceDataset(name, sequences, user_ids, item_ids, table, profiles, source, times)


def item_text(title: str, year: str = "", genres: Sequence[str] = ()) -> str:
    """The text a sentence encoder reads for an item: 'Title (year). Genres: a, b.'"""
    text = title + (f" ({year})" if year else "")
    return text + (f". Genres: {', '.join(genres)}." if genres else ".")


def _sorted_ids(ids: np.ndarray) -> np.ndarray:
    try:
        return ids[np.argsort(ids.astype(np.int64), kind="stable")]
    except ValueError:
        return np.sort(ids)


# ----------------------------------------------------------------------------- the split
@dataclass
class EvalStage:
    """Validation or test: per user, the full history before the target, and the target."""

    name: str                    # "valid" or "test"
    users: np.ndarray            # user indices
    histories: list[np.ndarray]  # all items before the target, chronological
    targets: np.ndarray          # the held-out item per user

    def __len__(self) -> int:
        return len(self.targets)

    def inputs(self, max_len: int = MAX_HISTORY) -> list[np.ndarray]:
        """The model's input: the last ``max_len`` items of each history."""
        return [h[-max_len:] for h in self.histories]


@dataclass
class LeaveOneOutSplit:
    """Leave-one-out: per user the last item is test, the second-to-last validation."""

    dataset: SequenceDataset
    train: list[np.ndarray]      # per user: every item but the last two
    valid: EvalStage
    test: EvalStage
    max_history: int = MAX_HISTORY

    def stage(self, name: str) -> EvalStage:
        if name not in ("valid", "test"):
            raise ValueError(f"unknown stage {name!r}; use 'valid' or 'test'")
        return self.valid if name == "valid" else self.test

    def fingerprint(self) -> str:
        """A hash of the users' training sequences and evaluation targets (which data a model saw)."""
        digest = hashlib.sha256(self.dataset.name.encode())
        for seq in self.train:
            digest.update(np.asarray(seq, dtype=np.int64).tobytes() + b"|")
        for stage in (self.valid, self.test):
            digest.update(np.asarray(stage.targets, dtype=np.int64).tobytes())
        return digest.hexdigest()[:16]

    def train_item_counts(self) -> np.ndarray:
        """Interactions per item in the training part only (no validation/test leakage)."""
        return np.bincount(np.concatenate(self.train), minlength=self.dataset.n_items)


def leave_one_out(dataset: SequenceDataset, max_history: int = MAX_HISTORY) -> LeaveOneOutSplit:
    """Split every user's sequence; users with fewer than 3 interactions are an error."""
    short = [u for u, s in enumerate(dataset.sequences) if len(s) < 3]
    if short:
        raise DataError(f"{dataset.name}: {len(short)} users have fewer than 3 interactions (e.g. user "
                        f"{dataset.user_ids[short[0]]}); leave-one-out needs at least 3 (filter to k-core first)")
    users = np.arange(dataset.n_users)
    seqs = dataset.sequences
    valid = EvalStage("valid", users, [s[:-2] for s in seqs], np.array([s[-2] for s in seqs]))
    test = EvalStage("test", users, [s[:-1] for s in seqs], np.array([s[-1] for s in seqs]))
    return LeaveOneOutSplit(dataset, [s[:-2] for s in seqs], valid, test, max_history)


def hold_out_users(split: LeaveOneOutSplit, share: float = 0.1, seed: int = 0) -> LeaveOneOutSplit:
    """Validation on users the model never trains on: another protocol for choosing checkpoints.

    A random ``share`` of users leave training entirely; validation is their second-to-last item after
    their history (a prompt the model has never seen, as a test prompt is), and the test stage keeps
    every other user, unchanged. The usual split validates on every user's second-to-last item, whose
    prompt is a training window shifted by one item.
    """
    n = split.dataset.n_users
    if not 0.0 < share < 1.0 or not 1 <= round(share * n) < n:
        raise ValueError(f"share must leave at least one user on each side, got {share} of {n} users")
    held = np.sort(np.random.default_rng(seed).choice(n, size=round(share * n), replace=False))
    kept = np.setdiff1d(np.arange(n), held)
    is_held = np.zeros(n, dtype=bool)
    is_held[held] = True
    train = [np.zeros(0, dtype=np.int64) if is_held[u] else s for u, s in enumerate(split.train)]
    valid = EvalStage("valid", split.valid.users[held], [split.valid.histories[u] for u in held],
                      split.valid.targets[held])
    test = EvalStage("test", split.test.users[kept], [split.test.histories[u] for u in kept],
                     split.test.targets[kept])
    return LeaveOneOutSplit(split.dataset, train, valid, test, split.max_history)


def training_windows(sequences: Sequence[np.ndarray], max_len: int = MAX_HISTORY) -> np.ndarray:
    """Cut sequences into windows of ``max_len + 1`` items (left-padded with -1).

    A window's inputs are ``w[:-1]`` and its next-item targets ``w[1:]``. Windows are
    taken from the end of each sequence backwards and share one item, so each item is a
    target exactly once (except the first of a sequence, which has no context).
    """
    windows = []
    for seq in sequences:
        end = len(seq)
        while end > 1:
            start = max(0, end - max_len - 1)
            w = np.full(max_len + 1, -1, dtype=np.int64)
            w[max_len + 1 - (end - start):] = seq[start:end]
            windows.append(w)
            end = start + 1
    if not windows:
        raise DataError("no training windows: every training sequence has fewer than 2 items")
    return np.stack(windows)


def pad_left(sequences: Sequence[np.ndarray], length: int | None = None, value: int = -1) -> np.ndarray:
    """Stack sequences into a (B, length) array, right-aligned, padded with ``value``."""
    length = length or max(1, max(len(s) for s in sequences))
    out = np.full((len(sequences), length), value, dtype=np.int64)
    for i, s in enumerate(sequences):
        s = np.asarray(s)[-length:]
        if len(s):
            out[i, length - len(s):] = s
    return out
