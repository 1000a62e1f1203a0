"""A planted world: a shop whose shoppers follow a known rule, so the best any model could do is known too.

Why: on MovieLens nobody knows what the next item "should" be, so a method that gains nothing there may be in the
wrong regime or may be broken. Here the generator knows every shopper's true next-item distribution, and its knobs
move the world into and out of each method's regime (docs/method.md §9).

The catalogue: ``n_categories`` categories (kitchen, garden, ...) x ``n_subcategories`` subcategories (knives, pans,
...) x ``items_per_subcategory`` items. An item has an invented title ("Corvid 220") and a short description drawn
from attribute words (a colour and a material); on a share ``text_carries`` of the items the text also names the
category and subcategory ("Genres: kitchen, pans."), the attribute that drives the transitions. The course's real
pipeline (sentence encoder, quantiser) turns that text into SIDs.

A shopper: a taste (one category), a colour, a history of ``min_length``..``max_length`` distinct items (no item
twice, as in MovieLens, so every target is one the protocol can rank). The first ``max(depth, 1)`` items are free:
a subcategory of the taste, an item as below. Every later step is, with probability ``noise``, a random unseen item
of the whole catalogue; otherwise a *planted step*:

- ``depth == 0``: the next subcategory is the last item's with probability ``STAY``, else a uniform subcategory of
  the shopper's taste. It depends on the last item and the taste only.
- ``depth == k >= 1``: the next category is a planted function (a balanced random table) of the categories of the
  k previous items, and the next subcategory-within-its-category a second table of their subcategory positions.
  Neither can be read off fewer than k positions: each level of the code needs inference over the history.

Inside the chosen subcategory the item is drawn by popularity among the items the shopper has not seen: weight
``(rank + 1) ** -tail`` (rank in a fixed random order), so ``tail = 0`` is uniform and larger values send most
steps to a few items and leave a long tail of rare ones. With probability ``style`` the draw is among the items of
the shopper's colour only (named in every item's text): a rarely bought item of the right colour is then a
predictable next item, which a model knows best through what the item says, since its few purchases say little.

The knobs are single numbers with defaults (``WorldConfig``); out-of-range values raise ``WorldConfigError``. A world
is named by its non-default knobs (``world_name``: ``world-depth3-tail0.5``), and ``load_dataset`` builds it from
that name, so a notebook or a study piece opens a world like any other dataset.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from functools import cached_property

import numpy as np
import pandas as pd

from minirec.data.dataset import DataError, EvalStage, SequenceDataset, item_text

CATEGORIES = {
    "kitchen": ("knives", "pans", "kettles", "blenders"),
    "garden": ("seeds", "hoses", "planters", "shears"),
    "camping": ("tents", "stoves", "lanterns", "hammocks"),
    "music": ("guitars", "drums", "keyboards", "violins"),
    "painting": ("brushes", "easels", "canvases", "watercolours"),
    "cycling": ("helmets", "saddles", "pumps", "bells"),
    "baking": ("moulds", "mixers", "flours", "whisks"),
    "fishing": ("rods", "reels", "lures", "nets"),
}
BRANDS = ("Corvid", "Tamsin", "Orrel", "Vantor", "Keswick", "Brambe", "Alder", "Juniper", "Mistral", "Quill",
          "Halden", "Sorrel", "Ferro", "Lumen", "Pike", "Rowan", "Cinder", "Wren", "Ostra", "Talla")
COLOURS = ("red", "blue", "green", "black", "white", "grey", "yellow", "orange", "teal", "brown")
MATERIALS = ("steel", "oak", "bamboo", "cotton", "copper", "plastic", "ceramic", "linen", "glass", "wool")

STAY = 0.5          # depth 0: share of planted steps that stay in the last item's subcategory
MAX_DEPTH = 4       # a table over 8**4 histories of categories already needs ~100k steps to be seen
MAX_TAIL = 3.0


class WorldConfigError(DataError):
    """A world knob outside its documented range."""


@dataclass(frozen=True)
class WorldConfig:
    """The planted world's knobs (docs/method.md §9); each is one number with a default."""
    depth: int = 2                  # previous positions the next item's category depends on (0: last item + taste)
    tail: float = 1.5               # popularity skew inside a subcategory: weight (rank + 1) ** -tail
    text_carries: float = 1.0       # share of items whose text names their category and subcategory
    noise: float = 0.1              # share of random steps (a uniform unseen item)
    style: float = 0.8              # share of non-random steps whose item has the shopper's colour
    n_categories: int = 8           # at most len(CATEGORIES)
    n_subcategories: int = 4        # per category, at most 4
    items_per_subcategory: int = 64
    n_users: int = 5000
    min_length: int = 6             # items per shopper, validation and test targets included
    max_length: int = 10
    seed: int = 0                   # the generator's seed: tables, popularity, titles, shoppers

    def __post_init__(self):
        def need(ok: bool, what: str):
            if not ok:
                raise WorldConfigError(f"world knob {what}")
        need(isinstance(self.depth, (int, np.integer)) and 0 <= self.depth <= MAX_DEPTH,
             f"depth={self.depth!r} must be an integer in 0..{MAX_DEPTH}")
        need(0.0 <= self.tail <= MAX_TAIL, f"tail={self.tail!r} must be in [0, {MAX_TAIL}]")
        need(0.0 <= self.text_carries <= 1.0, f"text_carries={self.text_carries!r} must be in [0, 1]")
        need(0.0 <= self.noise < 1.0, f"noise={self.noise!r} must be in [0, 1)")
        need(0.0 <= self.style <= 1.0, f"style={self.style!r} must be in [0, 1]")
        need(2 <= self.n_categories <= len(CATEGORIES), f"n_categories={self.n_categories!r} must be in "
             f"2..{len(CATEGORIES)}")
        need(2 <= self.n_subcategories <= 4, f"n_subcategories={self.n_subcategories!r} must be in 2..4")
        need(self.items_per_subcategory >= self.max_length + 1,
             f"items_per_subcategory={self.items_per_subcategory!r} must exceed max_length={self.max_length} "
             "(a shopper never sees an item twice, so a subcategory must never run out)")
        need(self.min_length >= max(self.depth, 1) + 3,
             f"min_length={self.min_length!r} must be at least depth + 3 = {max(self.depth, 1) + 3} (the free "
             "start, one planted training step, the validation and the test targets)")
        need(self.max_length >= self.min_length, f"max_length={self.max_length!r} must be >= min_length")
        need(self.n_users >= 10, f"n_users={self.n_users!r} must be at least 10")

    @property
    def n_items(self) -> int:
        return self.n_categories * self.n_subcategories * self.items_per_subcategory

    @property
    def name(self) -> str:
        return world_name(self)


# The name grammar: "world" then "-<knob><value>" for every knob that differs from its default.
_SHORT = {"depth": "depth", "tail": "tail", "text_carries": "text", "noise": "noise", "style": "style",
          "n_categories": "cats",
          "n_subcategories": "subs", "items_per_subcategory": "items", "n_users": "users", "min_length": "min",
          "max_length": "max", "seed": "seed"}
_LONG = {v: k for k, v in _SHORT.items()}
_INTS = {f.name for f in fields(WorldConfig) if f.type == "int"}


def world_name(config: WorldConfig) -> str:
    """``world`` plus each non-default knob, e.g. ``world-depth0-tail1.5``: a folder-safe dataset name that
    ``parse_world_name`` reads back."""
    default = WorldConfig()
    parts = [f"{_SHORT[f.name]}{getattr(config, f.name):g}" for f in fields(WorldConfig)
             if getattr(config, f.name) != getattr(default, f.name)]
    return "-".join(["world", *parts])


def is_world_name(name: str) -> bool:
    """Does a dataset name describe a planted world (``world`` or ``world-<knob><value>-...``)?"""
    return name == "world" or name.startswith("world-")


def parse_world_name(name: str) -> WorldConfig:
    """``world-depth3-tail1.5`` -> its ``WorldConfig``; a clear error for an unknown knob or a malformed value."""
    if not is_world_name(name):
        raise WorldConfigError(f"{name!r} is not a world name (world, or world-<knob><value>-..., e.g. "
                               "world-depth3-tail1.5)")
    knobs = {}
    for part in name.split("-")[1:]:
        m = re.fullmatch(r"([a-z]+)([0-9]+(?:\.[0-9]+)?)", part)
        if m is None or m.group(1) not in _LONG:
            raise WorldConfigError(f"world name {name!r}: cannot read {part!r}; knobs are "
                                   f"{', '.join(sorted(_LONG))}, each followed by its value (e.g. depth3)")
        key, value = _LONG[m.group(1)], m.group(2)
        if key in _INTS and "." in value:
            raise WorldConfigError(f"world name {name!r}: {key} must be an integer, got {value}")
        knobs[key] = int(value) if key in _INTS else float(value)
    return WorldConfig(**knobs)


def _balanced_table(rng: np.random.Generator, n_values: int, depth: int) -> np.ndarray:
    """A random function from ``depth`` previous values (a mixed-radix index) to a value, every value equally often."""
    size = n_values ** depth
    return rng.permutation(np.arange(size) % n_values)


@dataclass
class World:
    """A generated world: its catalogue, planted tables, shoppers and the dataset the course trains on.

    Items are indexed ``0..n_items-1`` in catalogue order (category, then subcategory, then position), and the
    dataset numbers them the same way."""
    config: WorldConfig
    category: np.ndarray            # (n_items,) category of each item
    position: np.ndarray            # (n_items,) subcategory position inside its category, 0..S-1
    popularity: np.ndarray          # (n_items,) weight inside its subcategory, (rank + 1) ** -tail
    colour: np.ndarray              # (n_items,) index into COLOURS, named in every item's text
    carries: np.ndarray             # (n_items,) bool: the text names category and subcategory
    category_table: np.ndarray      # depth >= 1: C**depth -> category
    position_table: np.ndarray      # depth >= 1: S**depth -> position
    taste: np.ndarray               # (n_users,) each shopper's category
    style: np.ndarray               # (n_users,) each shopper's colour
    sequences: list[np.ndarray]     # per shopper: item indices in order
    items: pd.DataFrame             # title, year, genres, text, category and subcategory names

    @cached_property
    def subcategory(self) -> np.ndarray:
        """(n_items,) global subcategory index: category * S + position (derived once: every distribution reads it)."""
        return self.category * self.config.n_subcategories + self.position

    @cached_property
    def dataset(self) -> SequenceDataset:
        """The shoppers' histories as a dataset over the whole catalogue (an item nobody bought stays in it, cold),
        numbered as the world numbers them; shopper ``u`` is user ``u``, whose profile holds the taste."""
        c = self.config
        items = self.items.reset_index(names="item_id")
        users = pd.DataFrame({"user_id": [str(u) for u in range(len(self.sequences))],
                              "taste": [list(CATEGORIES)[t] for t in self.taste],
                              "colour": [COLOURS[c] for c in self.style]})
        return SequenceDataset(c.name, [np.array(s, dtype=np.int64) for s in self.sequences],
                               users["user_id"].to_numpy(), items["item_id"].to_numpy(),
                               items[["item_id", "title", "year", "genres", "text", "category_name",
                                      "subcategory_name", "colour_name", "description"]],
                               users, source=f"minirec.data.world.make_world({c})",
                               timestamps=[np.arange(len(s), dtype=np.float64) for s in self.sequences])

    # ------------------------------------------------------------------ the rule
    def planted_subcategories(self, history: np.ndarray, taste: int) -> np.ndarray:
        """(C*S,) the distribution of a planted step's subcategory after ``history`` (item indices, oldest first)."""
        c = self.config
        n_sub = c.n_categories * c.n_subcategories
        out = np.zeros(n_sub)
        if c.depth == 0:
            out[taste * c.n_subcategories:(taste + 1) * c.n_subcategories] = (1.0 - STAY) / c.n_subcategories
            out[self.subcategory[history[-1]]] += STAY
            return out
        last = np.asarray(history[-c.depth:])
        if len(last) < c.depth:
            raise ValueError(f"a depth-{c.depth} step needs {c.depth} previous items, got {len(last)}")
        cat = self.category_table[_mixed_radix(self.category[last], c.n_categories)]
        pos = self.position_table[_mixed_radix(self.position[last], c.n_subcategories)]
        out[cat * c.n_subcategories + pos] = 1.0
        return out

    def next_distribution(self, history: np.ndarray, taste: int, seen: np.ndarray | None = None,
                          colour: int | None = None) -> np.ndarray:
        """(n_items,) the true probability of each item being next after ``history`` for a shopper of this
        ``taste`` and ``colour`` (None: the colour rule left out); ``seen`` (default: the history) are the items that
        can no longer come. A noise step is a uniform unseen item; a
        planted step a subcategory (``planted_subcategories``), then an unseen item of it by popularity, among the
        shopper's colour with probability ``style`` (all of the subcategory when none of that colour is left)."""
        c = self.config
        seen = np.asarray(history if seen is None else seen, dtype=np.int64)
        free = np.ones(c.n_items, dtype=bool)
        free[seen] = False
        noise = free / free.sum()
        sub_p = self.planted_subcategories(np.asarray(history, dtype=np.int64), taste)
        return c.noise * noise + (1.0 - c.noise) * self._item_in_subcategory(sub_p, free, colour)

    def _item_in_subcategory(self, sub_p: np.ndarray, free: np.ndarray, colour: int | None) -> np.ndarray:
        """(n_items,) P(item) when the subcategory is drawn from ``sub_p`` and the item inside it as a planted step
        draws it."""
        c = self.config
        n_sub = c.n_categories * c.n_subcategories
        weights = self.popularity * free
        per_sub = np.bincount(self.subcategory, weights=weights, minlength=n_sub)
        anyone = weights / np.where(per_sub > 0, per_sub, 1.0)[self.subcategory]
        if colour is None or c.style == 0.0:
            return sub_p[self.subcategory] * anyone
        mine = weights * (self.colour == colour)
        per_mine = np.bincount(self.subcategory, weights=mine, minlength=n_sub)
        styled = np.where(per_mine[self.subcategory] > 0, mine / np.where(per_mine > 0, per_mine, 1.0)[self.subcategory],
                          anyone)
        return sub_p[self.subcategory] * (c.style * styled + (1.0 - c.style) * anyone)

    def shopper_distribution(self, user: int, history: np.ndarray, seen: np.ndarray | None = None) -> np.ndarray:
        """``next_distribution`` for shopper ``user`` (their taste and colour)."""
        return self.next_distribution(history, int(self.taste[user]), seen, int(self.style[user]))

    def rule_holds(self) -> tuple[np.ndarray, np.ndarray]:
        """Per planted position of every shopper (after the free start): does the item's subcategory have
        probability > 0 under the planted rule, and how likely was that (``1 - noise`` plus the noise steps that land
        there by chance, about one subcategory in C*S at depth >= 1)? The measured share should match the mean
        probability within sampling error."""
        start = max(self.config.depth, 1)
        holds, chance = [], []
        for u, seq in enumerate(self.sequences):
            taste = int(self.taste[u])
            for t in range(start, len(seq)):
                allowed = self.planted_subcategories(seq[:t], taste)[self.subcategory] > 0
                holds.append(allowed[seq[t]])
                chance.append(self.shopper_distribution(u, seq[:t])[allowed].sum())
        return np.array(holds), np.array(chance)

    # ------------------------------------------------------------------ the ceiling
    def ceiling(self, stage: EvalStage, k: int = 10) -> dict[str, np.ndarray]:
        """The Bayes-optimal ranking on ``stage``'s users: every unseen item by its true probability. Per user:
        realised NDCG@k and Recall@k against the real target (comparable with any model's per-user metrics on the
        same users) and their expectations under the true distribution (``expected_ndcg@k``, ``expected_recall@k``:
        the same ceiling without the draw's luck)."""
        discounts = 1.0 / np.log2(np.arange(k) + 2.0)
        tops, expected_ndcg, expected_recall = [], [], []
        for user, history in zip(stage.users, stage.histories):
            p = self.shopper_distribution(int(user), history)
            top = np.argsort(-p, kind="stable")[:k]
            tops.append(top)
            expected_ndcg.append(float(p[top] @ discounts[:len(top)]))
            expected_recall.append(float(p[top].sum()))
        return {**_realised(tops, stage.targets, k), f"expected_ndcg@{k}": np.array(expected_ndcg),
                f"expected_recall@{k}": np.array(expected_recall)}

    def plug_in(self, stage: EvalStage, k: int = 10) -> dict[str, np.ndarray]:
        """A history-only reference: the rule known, the shopper's taste and colour read off the history (its most
        frequent category and colour), every unseen item ranked by the resulting distribution. Per user NDCG@k and
        Recall@k against the real targets: how much of the ceiling a model that sees only the history, and has
        learnt the rule, can reach (the rest of the gap to the ceiling is the latents' uncertainty)."""
        c = self.config
        tops = []
        for history in stage.histories:
            taste = int(np.bincount(self.category[history], minlength=c.n_categories).argmax())
            colour = int(np.bincount(self.colour[history], minlength=len(COLOURS)).argmax())
            tops.append(np.argsort(-self.next_distribution(history, taste, colour=colour), kind="stable")[:k])
        return _realised(tops, stage.targets, k)

    def rare_share(self, train: list[np.ndarray], below: int = 5) -> float:
        """Share of items with fewer than ``below`` training interactions (``tail`` moves it)."""
        counts = np.bincount(np.concatenate(train), minlength=self.config.n_items)
        return float((counts < below).mean())


def _realised(tops: list[np.ndarray], targets: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-user NDCG@k and Recall@k of ranked lists against the real targets (in float64, where
    ``metrics.topk_metrics`` works in the models' float32: the ceiling keeps its exact values)."""
    hits = np.stack(tops)[:, :k] == np.asarray(targets)[:, None]
    found = hits.any(axis=1)
    rank = hits.argmax(axis=1)
    return {f"ndcg@{k}": np.where(found, 1.0 / np.log2(rank + 2.0), 0.0), f"recall@{k}": found.astype(np.float64)}


def _mixed_radix(values: np.ndarray, base: int) -> int:
    """The index of a tuple of digits (oldest first) in a table over ``base ** len(values)`` tuples."""
    index = 0
    for v in values:
        index = index * base + int(v)
    return index


def _catalogue(config: WorldConfig, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    c = config
    n = c.n_items
    category = np.arange(n) // (c.n_subcategories * c.items_per_subcategory)
    position = (np.arange(n) // c.items_per_subcategory) % c.n_subcategories
    rank = np.concatenate([rng.permutation(c.items_per_subcategory) for _ in range(n // c.items_per_subcategory)])
    popularity = (rank + 1.0) ** -c.tail
    carries = rng.random(n) < c.text_carries
    colour = rng.integers(len(COLOURS), size=n)
    return category, position, popularity, carries, colour


def _item_table(config: WorldConfig, category, position, carries, colour, rng: np.random.Generator) -> pd.DataFrame:
    names = list(CATEGORIES)
    numbers = rng.choice(np.arange(100, 10000), size=config.n_items, replace=False)
    brands = rng.integers(len(BRANDS), size=config.n_items)
    materials = rng.integers(len(MATERIALS), size=config.n_items)
    rows = []
    for i in range(config.n_items):
        title = f"{BRANDS[brands[i]]} {numbers[i]}"
        cat = names[category[i]]
        sub = CATEGORIES[cat][position[i]]
        description = f"{COLOURS[colour[i]]} {MATERIALS[materials[i]]}"
        genres = [cat, sub] if carries[i] else []
        rows.append(dict(title=title, year="", genres=genres, category_name=cat, subcategory_name=sub,
                         description=description, colour_name=COLOURS[colour[i]],
                         text=item_text(f"{title}, {description}", "", genres)))
    return pd.DataFrame(rows, index=[str(i) for i in range(config.n_items)])


def make_world(config: WorldConfig | None = None, **knobs) -> World:
    """Generate a world (``config`` and/or knob keywords, e.g. ``make_world(depth=3, tail=1.5)``)."""
    config = replace(config or WorldConfig(), **knobs) if knobs else (config or WorldConfig())
    c = config
    rng = np.random.default_rng(c.seed)
    category, position, popularity, carries, colour = _catalogue(c, rng)
    items = _item_table(c, category, position, carries, colour, rng)
    depth = max(c.depth, 1)
    category_table = _balanced_table(rng, c.n_categories, depth)
    position_table = _balanced_table(rng, c.n_subcategories, depth)
    taste = rng.integers(c.n_categories, size=c.n_users)
    style = rng.integers(len(COLOURS), size=c.n_users)
    world = World(c, category, position, popularity, colour, carries, category_table, position_table, taste, style,
                  [], items)
    subcategory = world.subcategory
    members = [np.flatnonzero(subcategory == s) for s in range(c.n_categories * c.n_subcategories)]
    for u in range(c.n_users):
        length = int(rng.integers(c.min_length, c.max_length + 1))
        seen = np.zeros(c.n_items, dtype=bool)
        seq = []
        for t in range(length):
            # the generator's own random choices, written out step by step (the tests check next_distribution
            # against them): the free start, a noise step or a planted step
            if t < depth:
                sub = taste[u] * c.n_subcategories + rng.integers(c.n_subcategories)
            elif rng.random() < c.noise:
                sub = None
            elif c.depth == 0:
                sub = (subcategory[seq[-1]] if rng.random() < STAY
                       else taste[u] * c.n_subcategories + rng.integers(c.n_subcategories))
            else:
                cat = category_table[_mixed_radix(category[seq[-c.depth:]], c.n_categories)]
                pos = position_table[_mixed_radix(position[seq[-c.depth:]], c.n_subcategories)]
                sub = cat * c.n_subcategories + pos
            if sub is None:
                item = int(rng.choice(np.flatnonzero(~seen)))
            else:
                pool = members[sub][~seen[members[sub]]]
                if rng.random() < c.style and (colour[pool] == style[u]).any():   # the shopper's colour
                    pool = pool[colour[pool] == style[u]]
                w = popularity[pool]
                item = int(pool[rng.choice(len(pool), p=w / w.sum())])
            seen[item] = True
            seq.append(item)
        world.sequences.append(np.array(seq, dtype=np.int64))
    return world


def load_world(name: str) -> SequenceDataset:
    """The dataset of the world a name describes (``world_name``)."""
    return make_world(parse_world_name(name)).dataset


def world_of(dataset: SequenceDataset) -> World:
    """The world a dataset was generated from (rebuilt from its name: generation is deterministic)."""
    world = make_world(parse_world_name(dataset.name))
    if world.config.n_items != dataset.n_items or len(world.sequences) != dataset.n_users or any(
            not np.array_equal(a, b) for a, b in zip(world.sequences, dataset.sequences)):
        raise DataError(f"{dataset.name}: the dataset's sequences differ from the world its name describes")
    return world

