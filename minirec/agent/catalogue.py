"""Catalogue grounding for ShopX-mini: SID <-> item facts, and the filters that constraints select with.

Every item the harness shows comes out of this table, so an item that does not exist can
never be shown: a SID no item has is an ``ActionError("unknown_sid")``, a genre the catalogue
does not know an ``ActionError("unknown_genre")``, and constraints that exclude themselves
("a comedy that is not a comedy") an ``ActionError("contradictory")``.
"""
from __future__ import annotations

import re

import numpy as np

from minirec.agent.protocol import ActionError, Constraints
from minirec.data.dataset import SequenceDataset
from minirec.models.backbone import sid_token

_SID = re.compile(r"<([a-z])_(\d+)>")


class Catalogue:
    """Items of a dataset with their SIDs (``sid_table.codes``), titles, years and genres."""

    def __init__(self, dataset: SequenceDataset, sid_table):
        codes = np.asarray(sid_table.codes)
        if len(codes) != dataset.n_items:
            raise ValueError(f"the SID table has {len(codes)} items, the dataset {dataset.n_items}")
        items = dataset.items
        self.n_items = dataset.n_items
        self.titles = [str(t) for t in items["title"]]
        self.years = np.array([int(y) if str(y).isdigit() else -1 for y in items["year"]])
        self.genres = [frozenset(g) for g in items["genres"]]
        self.vocabulary = dataset.genre_vocabulary
        self.sids = ["".join(sid_token(level, int(c)) for level, c in enumerate(row)) for row in codes]
        self._item_of = {s: i for i, s in enumerate(self.sids)}
        self._words = [set(re.findall(r"\w+", t.lower())) for t in self.titles]
        self._has = {g: np.array([g in gs for gs in self.genres]) for g in self.vocabulary}

    def item_of(self, sid: str) -> int:
        """The item whose SID is ``sid`` (the model's token spelling)."""
        text = "".join(sid.split())
        if text in self._item_of:
            return self._item_of[text]
        if not text or _SID.sub("", text):
            raise ActionError("unknown_sid", f"{sid[:60]!r} is not written as SID tokens such as '<a_3><b_17><c_5><d_0>'")
        raise ActionError("unknown_sid", f"no catalogue item has the SID {sid[:60]!r}")

    def facts(self, item: int) -> dict:
        """What the model may read about an item (catalogue grounding)."""
        year = int(self.years[item])
        return {"sid": self.sids[item], "title": self.titles[item], "year": year if year > 0 else None,
                "genres": sorted(self.genres[item])}

    def describe(self, item: int) -> str:
        f = self.facts(item)
        return f"{f['sid']} {f['title']}" + (f" ({f['year']})" if f["year"] else "") + f" [{', '.join(f['genres'])}]"

    def check(self, c: Constraints) -> None:
        """Unknown genres and self-contradicting constraints are errors."""
        unknown = [g for g in c.genres + c.not_genres if g not in self._has]
        if unknown:
            raise ActionError("unknown_genre", f"unknown genre(s) {unknown}; the catalogue has {self.vocabulary}")
        both = sorted(set(c.genres) & set(c.not_genres))
        if both:
            raise ActionError("contradictory", f"asked for and against the same genre(s) {both}")

    def mask(self, c: Constraints) -> np.ndarray:
        """(N,) True for the items that satisfy ``c``."""
        self.check(c)
        keep = np.ones(self.n_items, dtype=bool)
        for g in c.genres:
            keep &= self._has[g]
        for g in c.not_genres:
            keep &= ~self._has[g]
        if c.decades:
            keep &= np.isin(self.years // 10 * 10, np.array(c.decades)) & (self.years > 0)
        for w in c.title_words:
            keep &= np.array([w in words for words in self._words])
        return keep

    def satisfies(self, item: int, c: Constraints) -> bool:
        return bool(self.mask(c)[item])
