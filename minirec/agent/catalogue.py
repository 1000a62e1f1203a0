"""Catalogue grounding for ShopX-mini: SID <-> item facts, and the filters that constraints select with.

Every item the harness shows comes out of this table, so an item that does not exist can
never be shown: a SID no item has is an ``ActionError("unknown_sid")``, a genre the catalogue
does not know an ``ActionError("unknown_genre")``, and constraints that exclude themselves
("a comedy that is not a comedy") an ``ActionError("contradictory")``.

Grounding also runs the other way: ``mentions`` finds the catalogue items a shopper names by
title ("Which should I watch: Heat, Fargo or Twister?"), so that the agent reads their SIDs
instead of guessing them from the words.
"""
from __future__ import annotations

import re

import numpy as np

from minirec.agent.protocol import ActionError, Constraints
from minirec.data.dataset import SequenceDataset
from minirec.models.backbone import sid_token

_SID = re.compile(r"<([a-z])_(\d+)>")
_YEAR = re.compile(r"\s*\(\d{4}\)\s*$")
_ARTICLE = re.compile(r"^(.*), (The|A|An)$")


def sid_key(text: str) -> str:
    """A written SID without the spaces a tokeniser may put between its tokens: how SIDs are compared."""
    return "".join(text.split())


def sid_strings(codes) -> list[str]:
    """Every item's SID in the model's token spelling ("<a_3><b_17><c_5><d_0>"), from a SID table's codes."""
    return ["".join(sid_token(level, int(c)) for level, c in enumerate(row)) for row in np.asarray(codes)]


def spoken_title(title: str) -> str:
    """A title as a shopper says it: no release year, the article in front ("Usual Suspects, The (1995)" ->
    "The Usual Suspects")."""
    title = _YEAR.sub("", str(title)).strip()
    moved = _ARTICLE.match(title)
    return f"{moved.group(2)} {moved.group(1)}" if moved else title


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
        self.sids = sid_strings(codes)
        self._item_of = {s: i for i, s in enumerate(self.sids)}
        self._words = [set(re.findall(r"\w+", t.lower())) for t in self.titles]
        self._has = {g: np.array([g in gs for gs in self.genres]) for g in self.vocabulary}
        spoken = [spoken_title(t) for t in self.titles]
        counts: dict[str, int] = {}
        for t in spoken:
            counts[t] = counts.get(t, 0) + 1
        # a title names an item when no other item has it, and it is long enough not to be an everyday word
        self.spoken = spoken
        self.nameable = np.array([counts[t] == 1 and len(t) >= 4 for t in spoken])
        self._by_length = sorted(np.flatnonzero(self.nameable).tolist(), key=lambda i: -len(spoken[i]))

    def item_of(self, sid: str) -> int:
        """The item whose SID is ``sid`` (the model's token spelling)."""
        text = sid_key(sid)
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

    def mentions(self, text: str) -> list[int]:
        """The items whose title (as ``spoken_title`` writes it, case and all) ``text`` names, in the order named;
        a longer title wins over one inside it ("Star Trek: First Contact" over "Star Trek")."""
        text = str(text)
        taken = np.zeros(len(text) + 1, dtype=bool)
        found = []
        for i in self._by_length:
            needle = self.spoken[i]
            at = text.find(needle)
            while at >= 0:
                end = at + len(needle)
                bounded = (at == 0 or not text[at - 1].isalnum()) and (end == len(text) or not text[end].isalnum())
                if bounded and not taken[at:end].any():
                    taken[at:end] = True
                    found.append((at, i))
                    break
                at = text.find(needle, at + 1)
        return [i for _, i in sorted(found)]

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
