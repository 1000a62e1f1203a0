"""Semantic-ID tables and codebook health (docs/method.md §2).

A ``SIDTable`` maps every catalogue item to L semantic codes plus one de-duplication
code: items that share all L codes get 0, 1, 2, ... (in item order), so every SID is
unique. The table carries the settings that made it (quantiser, sizes, encoder, graph,
seed) and a fingerprint of the catalogue; loading it against other settings or another
catalogue is an error, never a silent mismatch.

Health, per level: utilisation (codes used / K), perplexity exp(H(p)) of code usage
(K when usage is uniform), dead codes, plus the collision rate before de-duplication
and the largest bucket of items sharing all L codes. Two semantic checks: genre purity
of first-level codes and how much more often co-occurring items share a first-level
code than random pairs.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from minirec.artifacts import atomic_path
from minirec.data.dataset import SequenceDataset
from minirec.sids.graph import cooccurrence_graph


class SIDMismatchError(ValueError):
    """A saved SID table does not match the requested settings or catalogue."""


def catalogue_fingerprint(dataset: SequenceDataset) -> str:
    """A short hash of the catalogue's raw item ids, in index order."""
    return hashlib.sha256("\n".join(map(str, dataset.item_ids)).encode()).hexdigest()[:16]


def deduplicate(codes: np.ndarray) -> np.ndarray:
    """(N, L) codes -> (N, L+1): the extra code numbers items sharing all L codes 0, 1, 2, ..."""
    codes = np.asarray(codes, dtype=np.int64)
    _, inverse = np.unique(codes, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    order = np.argsort(inverse, kind="stable")
    dedup = np.empty(len(codes), dtype=np.int64)
    sorted_groups = inverse[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_groups)) + 1]
    rank = np.arange(len(codes)) - np.repeat(starts, np.diff(np.r_[starts, len(codes)]))
    dedup[order] = rank
    return np.concatenate([codes, dedup[:, None]], axis=1)


@dataclass
class SIDTable:
    codes: np.ndarray       # (n_items, L + 1): L semantic codes, then the de-duplication code
    codebook_size: int      # K, codes per semantic level
    settings: dict          # everything that made the table (quantiser config, encoder, catalogue)
    codebooks: np.ndarray | None = None   # (L, K, D) codeword vectors, where the quantiser has them

    @property
    def levels(self) -> int:
        """Semantic levels L (the de-duplication code not counted)."""
        return self.codes.shape[1] - 1

    @property
    def n_items(self) -> int:
        return len(self.codes)

    @property
    def dedup_size(self) -> int:
        """Codes needed at the de-duplication position (1 when there is no collision)."""
        return int(self.codes[:, -1].max()) + 1

    def level_sizes(self) -> list[int]:
        """Vocabulary size of each SID position: K per level, then the de-dup size."""
        return [self.codebook_size] * self.levels + [self.dedup_size]

    def sid(self, item: int) -> tuple[int, ...]:
        return tuple(int(c) for c in self.codes[item])

    def fingerprint(self) -> str:
        """A hash of the codes (and codeword vectors): two tables with the same fingerprint are the same table."""
        digest = hashlib.sha256(np.ascontiguousarray(self.codes, dtype=np.int64).tobytes())
        digest.update(str(self.codebook_size).encode())
        if self.codebooks is not None:
            digest.update(np.ascontiguousarray(self.codebooks, dtype=np.float32).tobytes())
        return digest.hexdigest()[:16]

    def item_of(self, sid: Sequence[int]) -> int:
        """The item with this SID; a clear error for a SID no item has."""
        hit = np.flatnonzero((self.codes == np.asarray(sid)[None, :]).all(axis=1))
        if len(hit) != 1:
            raise KeyError(f"SID {tuple(sid)} belongs to no catalogue item")
        return int(hit[0])

    @classmethod
    def from_codes(cls, codes: np.ndarray, codebook_size: int, settings: dict,
                   dataset: SequenceDataset, codebooks: np.ndarray | None = None) -> "SIDTable":
        if len(codes) != dataset.n_items:
            raise ValueError(f"{len(codes)} code rows for a catalogue of {dataset.n_items} items")
        if codes.min() < 0 or codes.max() >= codebook_size:
            raise ValueError(f"codes must lie in [0, {codebook_size})")
        settings = dict(settings, catalogue=catalogue_fingerprint(dataset), n_items=dataset.n_items,
                        dataset=dataset.name)
        return cls(deduplicate(codes), codebook_size, settings, codebooks)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Atomically write codes and settings to one ``.npz`` file."""
        path = Path(path)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                extra = {} if self.codebooks is None else {"codebooks": self.codebooks}
                np.savez(f, codes=self.codes, codebook_size=self.codebook_size,
                         settings=np.array(json.dumps(self.settings, sort_keys=True)), **extra)
        return path

    @classmethod
    def load(cls, path: str | Path, expected: dict | None = None,
             dataset: SequenceDataset | None = None) -> "SIDTable":
        """Load a table; ``expected`` settings and ``dataset`` must match what made it."""
        with np.load(Path(path)) as data:
            table = cls(data["codes"], int(data["codebook_size"]), json.loads(str(data["settings"])),
                        data["codebooks"] if "codebooks" in data else None)
        if dataset is not None:
            expected = dict(expected or {}, catalogue=catalogue_fingerprint(dataset), n_items=dataset.n_items)
        diffs = {k: (table.settings.get(k), v) for k, v in (expected or {}).items()
                 if _normal(table.settings.get(k)) != _normal(v)}
        if diffs:
            lines = ", ".join(f"{k}: saved {a!r} vs requested {b!r}" for k, (a, b) in sorted(diffs.items()))
            raise SIDMismatchError(f"SID table {path} was made with other settings ({lines}); "
                                   "delete it or rebuild with the saved settings")
        return table


def _normal(value):
    return json.loads(json.dumps(value, sort_keys=True))


# ---------------------------------------------------------------------- health
def level_health(codes: np.ndarray, codebook_size: int) -> list[dict]:
    """Per level: utilisation, perplexity, dead codes, largest code's share."""
    out = []
    for level in range(codes.shape[1]):
        counts = np.bincount(codes[:, level], minlength=codebook_size)
        p = counts / counts.sum()
        nz = p[p > 0]
        out.append({"level": level + 1, "utilisation": float((counts > 0).mean()),
                    "perplexity": float(np.exp(-(nz * np.log(nz)).sum())),
                    "dead_codes": int((counts == 0).sum()), "max_share": float(p.max())})
    return out


def collision_stats(codes: np.ndarray) -> dict:
    """Before de-duplication: share of items whose L codes another item also has; bucket sizes."""
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    sizes = counts[inverse.ravel()]
    return {"collision_rate": float((sizes > 1).mean()), "largest_bucket": int(counts.max()),
            "distinct_prefixes": int(len(counts)), "items_per_prefix": float(len(codes) / len(counts))}


def genre_purity(first_codes: np.ndarray, genres: Sequence[Sequence[str]]) -> float:
    """Size-weighted mean over first-level codes of the share of its items having its most common genre."""
    total = 0.0
    for code in np.unique(first_codes):
        members = np.flatnonzero(first_codes == code)
        counts: dict[str, int] = {}
        for i in members:
            for g in set(genres[i]):
                counts[g] = counts.get(g, 0) + 1
        total += max(counts.values(), default=0)
    return total / len(first_codes)


def cooccurrence_sharing(first_codes: np.ndarray, train_sequences: Sequence[np.ndarray], window: int = 3,
                         n_random: int = 200_000, seed: int = 0) -> dict:
    """P(same first code | pair co-occurs in training) vs P(same first code | random pair)."""
    graph = cooccurrence_graph(train_sequences, len(first_codes), window).tocoo()
    weights = graph.data
    same = first_codes[graph.row] == first_codes[graph.col]
    p_cooc = float((weights * same).sum() / weights.sum())
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, len(first_codes), (2, n_random))
    keep = a != b
    p_rand = float((first_codes[a[keep]] == first_codes[b[keep]]).mean())
    return {"p_same_cooccurring": p_cooc, "p_same_random": p_rand, "sharing_lift": p_cooc / p_rand}


def codebook_health(table: SIDTable, dataset: SequenceDataset,
                    train_sequences: Sequence[np.ndarray] | None = None) -> dict:
    """Every health number of a table, flat, for the results table."""
    semantic = table.codes[:, :-1]
    out = {}
    for row in level_health(semantic, table.codebook_size):
        for key in ("utilisation", "perplexity", "dead_codes"):
            out[f"{key}_L{row['level']}"] = row[key]
    out.update(collision_stats(semantic))
    out["dedup_size"] = table.dedup_size
    genres = dataset.items["genres"].tolist()
    if any(genres):
        out["genre_purity_L1"] = genre_purity(semantic[:, 0], genres)
        shuffled = np.random.default_rng(0).permutation(semantic[:, 0])
        out["genre_purity_L1_random"] = genre_purity(shuffled, genres)
    if train_sequences is not None:
        out.update(cooccurrence_sharing(semantic[:, 0], train_sequences))
    return out


def build_sid_table(quantizer, x: np.ndarray, dataset: SequenceDataset, train_sequences=None,
                    cache: str | Path | None = None, refit: bool = False, **settings) -> SIDTable:
    """Fit ``quantizer`` on ``x`` and return its SID table, reusing ``cache`` when it was made the same way.

    ``settings`` (e.g. ``encoder=...``) are recorded beside the quantiser's own settings;
    ``refit=True`` trains anyway and overwrites the cache. A cached table saved without the
    codebook vectors (older minirec) is rebuilt, since S²GR clusters the codewords.
    """
    wanted = dict(quantizer.settings(), **settings)
    if cache is not None and Path(cache).exists() and not refit:
        try:
            table = SIDTable.load(cache, expected=wanted, dataset=dataset)
            if table.codebooks is not None:
                print(f"Found SID table {Path(cache).name} made with the same settings, loading it")
                return table
            print(f"SID table {Path(cache).name} has no codebook vectors (saved by an older minirec) -> rebuilding")
        except SIDMismatchError as err:
            print(f"{err}\n-> rebuilding")
    codes = quantizer.fit(x, train_sequences)
    table = SIDTable.from_codes(codes, quantizer.config.codebook_size, wanted, dataset, quantizer.codebooks())
    if cache is not None:
        table.save(cache)
    return table


def shuffled_sid_table(table: SIDTable, dataset: SequenceDataset, seed: int = 0) -> SIDTable:
    """The same SIDs dealt to items at random: same shape and code usage, no meaning (an ablation)."""
    perm = np.random.default_rng(seed).permutation(table.n_items)
    settings = dict(table.settings, shuffled_seed=seed)
    return SIDTable(table.codes[perm].copy(), table.codebook_size, settings, table.codebooks)


def item_id_table(dataset: SequenceDataset) -> SIDTable:
    """One code per item, K = catalogue size: SASRec's item-ID tokenisation written as an SID table.

    No two items share a token, so nothing is learnt through shared prefixes: a diagnostic of
    what the SID tokenisation itself costs or buys, with everything else held fixed.
    """
    codes = np.arange(dataset.n_items, dtype=np.int64)[:, None]
    return SIDTable.from_codes(codes, dataset.n_items, {"quantizer": "item-ids"}, dataset)
