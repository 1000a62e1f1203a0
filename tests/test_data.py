"""Data loading, ordering, split and bad-input behaviour."""
import gzip
import json

import numpy as np
import pytest

from minirec.data import dataset as mdata
from minirec.data import loaders


def write_grouplens(folder, rows, items=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows))
    items = items or sorted({i for _, i, _, _ in rows})
    flags = "|".join(["0"] * 18)
    (folder / "u.item").write_text("".join(f"{i}|Movie {i} (1995)|01-Jan-1995||http://x|1|{flags}\n" for i in items),
                                   encoding="latin-1")
    (folder / "u.user").write_text("1|30|F|writer|12345\n2|40|M|other|54321\n")


def test_ml100k_shape_and_ordering(ml100k):
    assert (ml100k.n_users, ml100k.n_items, ml100k.n_interactions) == (943, 1682, 100000)
    assert all(np.all(np.diff(t) >= 0) for t in ml100k.timestamps)
    assert set(ml100k.items.columns) >= {"title", "year", "genres", "text"}
    assert ml100k.items.loc[0, "title"] == "Toy Story" and "Comedy" in ml100k.items.loc[0, "genres"]
    assert list(ml100k.users.columns[:4]) == ["user_id", "age", "gender", "occupation"]


def test_ties_keep_file_order(tmp_path):
    # user 1 rates 30, 10, 20 in the same second; file order must decide, not item id
    rows = [(1, 30, 5, 100), (1, 10, 3, 100), (1, 20, 4, 100), (1, 5, 4, 50), (2, 10, 1, 7), (2, 20, 1, 8),
            (2, 5, 1, 9)]
    write_grouplens(tmp_path, rows)
    ds = loaders.load_movielens_100k(tmp_path, download=False)
    raw = [ds.item_ids[i] for i in ds.sequences[0]]
    assert raw == ["5", "30", "10", "20"]
    assert list(ds.item_ids) == ["5", "10", "20", "30"]  # contiguous ids in numeric order


def test_source_order_and_missing_dataset_message(tmp_path, monkeypatch):
    monkeypatch.setattr(loaders, "recbole_ml100k_folder", lambda: None)
    monkeypatch.setattr(loaders, "DATA_DIR", tmp_path / "nowhere")
    with pytest.raises(mdata.DatasetNotFoundError) as err:
        loaders.load_movielens_100k(None, download=False)
    text = str(err.value)
    assert "local folder" in text and "recbole wheel" in text and "download" in text


def test_explicit_data_dir_without_data_is_an_error(tmp_path):
    # the packaged copy exists, but a folder the user names must hold the data: no silent fallback
    assert loaders.recbole_ml100k_folder() is not None
    with pytest.raises(mdata.DatasetNotFoundError, match="holds no MovieLens-100K files"):
        loaders.load_movielens_100k(tmp_path, download=False)


def test_missing_item_file_is_an_error(tmp_path):
    wheel = loaders.recbole_ml100k_folder()
    (tmp_path / "ml-100k.inter").write_bytes((wheel / "ml-100k.inter").read_bytes())
    with pytest.raises(mdata.DatasetNotFoundError, match=r"ml-100k\.item is missing"):
        loaders.load_movielens_100k(tmp_path, download=False)


def test_an_interaction_whose_item_has_no_row_in_the_item_file_is_an_error(tmp_path):
    """Appended to the real RecBole files, one interaction with an unknown item must not load as a textless item."""
    wheel = loaders.recbole_ml100k_folder()
    for suffix in ("inter", "item"):
        (tmp_path / f"ml-100k.{suffix}").write_bytes((wheel / f"ml-100k.{suffix}").read_bytes())
    lines = (tmp_path / "ml-100k.inter").read_text().count("\n")
    with open(tmp_path / "ml-100k.inter", "a") as f:
        f.write("12\t99999\t5\t888888888\n")
    with pytest.raises(mdata.DataFormatError, match=rf"ml-100k\.inter:{lines + 1}: item '99999' has no row in the "
                                                    rf"item file .*ml-100k\.item"):
        loaders.load_movielens_100k(tmp_path, download=False)
    # the GroupLens files: the same rule, naming u.data's line
    write_grouplens(tmp_path / "gl", [(1, 1, 5, 1), (1, 2, 5, 2), (2, 7, 5, 3)], items=[1, 2])
    with pytest.raises(mdata.DataFormatError, match=r"u\.data:3: item '7' has no row in the item file .*u\.item"):
        loaders.load_movielens_100k(tmp_path / "gl", download=False)


def test_recbole_wheel_found_without_import():
    import sys
    folder = loaders.recbole_ml100k_folder()
    assert folder is not None and (folder / "ml-100k.item").exists()
    assert "recbole" not in sys.modules


def test_malformed_file_names_file_and_line(tmp_path):
    write_grouplens(tmp_path, [(1, 1, 5, 1), (1, 2, 5, 2), (1, 3, 5, 3)])
    with open(tmp_path / "u.data", "a") as f:
        f.write("2\t1\t5\n")
    with pytest.raises(mdata.DataFormatError, match=r"u\.data:4: expected 4 fields"):
        loaders.load_movielens_100k(tmp_path, download=False)
    with open(tmp_path / "u.data", "w") as f:
        f.write("1\t1\t5\t1\n1\t2\t5\tyesterday\n")
    with pytest.raises(mdata.DataFormatError, match=r"u\.data:2: column 'timestamp'"):
        loaders.load_movielens_100k(tmp_path, download=False)


def test_unknown_item_and_empty_history(ml100k):
    assert ml100k.encode_history(["1", "2"]).tolist() == [0, 1]
    with pytest.raises(mdata.UnknownItemError, match="not in the ml-100k catalogue"):
        ml100k.encode_history(["1", "99999"])
    with pytest.raises(mdata.EmptyHistoryError):
        ml100k.encode_history([])
    with pytest.raises(mdata.DataError, match="unknown dataset"):
        loaders.load_dataset("ml-1b")


def test_leave_one_out(ml100k):
    split = mdata.leave_one_out(ml100k)
    for u in (0, 100, 942):
        s = ml100k.sequences[u]
        assert np.array_equal(split.train[u], s[:-2])
        assert split.valid.targets[u] == s[-2] and split.test.targets[u] == s[-1]
        assert np.array_equal(split.test.histories[u], s[:-1])
    assert max(len(x) for x in split.test.inputs()) == 50
    # popularity counts come from training only
    counts = split.train_item_counts()
    assert counts.sum() == ml100k.n_interactions - 2 * ml100k.n_users


def test_too_short_users_rejected():
    ds = mdata.from_interactions("tiny", ["a", "a", "b", "b", "b"], [1, 2, 1, 2, 3], [1, 2, 1, 2, 3])
    with pytest.raises(mdata.DataError, match="fewer than 3 interactions"):
        mdata.leave_one_out(ds)


def test_training_windows_cover_every_target_once():
    seqs = [np.arange(7), np.arange(100, 103)]
    w = mdata.training_windows(seqs, max_len=3)
    x, y = w[:, :-1], w[:, 1:]
    targets = sorted(y[x >= 0].tolist())
    assert targets == sorted(list(range(1, 7)) + [101, 102])
    assert w.shape[1] == 4


def test_amazon_fixture(tmp_path):
    reviews = [{"reviewerID": f"U{u}", "asin": f"B{i}", "unixReviewTime": 1000 + 10 * k, "overall": 5.0}
               for u in range(3) for k, i in enumerate(range(u, u + 5))]
    with gzip.open(tmp_path / "reviews_Beauty_5.json.gz", "wt") as f:
        f.write("\n".join(json.dumps(r) for r in reviews))
    meta = [str({"asin": f"B{i}", "title": f"Lipstick {i}", "categories": [["Beauty", "Makeup", "Lips"]]})
            for i in range(8)]
    (tmp_path / "meta_Beauty.json").write_text("\n".join(meta))
    ds = loaders.load_dataset("amazon-beauty", tmp_path)
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (3, 7, 15)
    assert ds.items.loc[0, "title"] == "Lipstick 0" and ds.items.loc[0, "genres"] == ["Makeup", "Lips"]
    split = mdata.leave_one_out(ds)
    assert [ds.item_ids[i] for i in ds.sequences[1]] == ["B1", "B2", "B3", "B4", "B5"]
    assert ds.item_ids[split.test.targets[2]] == "B6"
    (tmp_path / "meta_Beauty.json").write_text("{'asin': 'B1', 'title': \n")
    with pytest.raises(mdata.DataFormatError, match=r"meta_Beauty\.json:1"):
        loaders.load_dataset("amazon-beauty", tmp_path)


def test_amazon_missing_files(tmp_path):
    with pytest.raises(mdata.DatasetNotFoundError, match="reviews_Toys_and_Games_5"):
        loaders.load_dataset("amazon-toys", tmp_path)


def test_synthetic_has_planted_structure(synthetic):
    tops = synthetic.items["top"].to_numpy()
    same = [tops[s[t]] == tops[s[t + 1]] for s in synthetic.sequences for t in range(len(s) - 1)]
    assert np.mean(same) > 0.8  # far above the 1/4 of random pairs


def test_held_out_user_validation_never_trains_on_its_users(ml100k):
    split = mdata.leave_one_out(ml100k)
    held = mdata.hold_out_users(split, share=0.1, seed=0)
    users = held.valid.users
    assert len(users) == round(0.1 * ml100k.n_users) and not set(users) & set(held.test.users)
    assert len(held.test) + len(held.valid) == ml100k.n_users
    assert all(len(held.train[u]) == 0 for u in users)                     # never a training window
    other = held.test.users[0]
    np.testing.assert_array_equal(held.train[other], split.train[other])   # everyone else trains as before
    u = users[0]
    assert held.valid.targets[0] == split.valid.targets[u]
    np.testing.assert_array_equal(held.valid.histories[0], split.valid.histories[u])
    np.testing.assert_array_equal(held.test.targets, split.test.targets[held.test.users])
    assert held.fingerprint() != split.fingerprint()
    assert mdata.hold_out_users(split, 0.1, seed=0).valid.users.tolist() == users.tolist()
    with pytest.raises(ValueError, match="at least one user on each side"):
        mdata.hold_out_users(split, share=1.0)


def test_genre_vocabulary_is_every_item_genre_once_sorted(ml100k):
    vocabulary = ml100k.genre_vocabulary
    assert vocabulary == sorted(set(vocabulary))
    assert set(vocabulary) == set().union(*map(set, ml100k.items["genres"]))
    assert len(vocabulary) == 19 and vocabulary[:2] == ["Action", "Adventure"]     # ML-100K's genre columns
