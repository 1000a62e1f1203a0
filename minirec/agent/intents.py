"""Shopping tasks synthesised from MovieLens-100K, in varied words, with a held-out set of phrasings.

A *task* is a shopper (a real user) whose next item is known (the leave-one-out test item, so
a hit means what it means in every other notebook), and what they say, turn by turn. Every
utterance comes from a template over the target's own attributes, so the target satisfies
what the shopper asks for (tested); what else satisfies it is up to the catalogue. Kinds:

- ``simple``      one genre of the target, or "something like <a history item sharing a genre>" (the genre unsaid);
- ``compound``    a genre, the decade and a genre the target does not have, negated, in one sentence;
- ``ambiguous``   no constraint at first (the agent should ask), then a genre once asked;
- ``multi_turn``  a genre, then the decade, then a negation, one per turn;
- ``bundle``      two slots in one sentence, the first one the target's genre;
- ``choice``      the shopper names four films by title, the target among them, and asks which one to watch: a
  listwise choice (the agent should ``rank`` the films named; the score is whether the target comes first).

The words vary: each genre has synonyms ("funny" for Comedy, "scary" for Horror), decades are
said three ways ("90s", "1990s", "nineties"), each kind has several sentence forms in different
word orders, and a share of utterances (``typo_rate``) has one typo (two letters swapped) outside
the titles. Sentence forms come in two disjoint sets (``PHRASINGS``): ``"seen"`` for training and
for choosing settings, ``"held_out"`` for an evaluation in words no agent trained on. Tasks are
drawn with a fixed seed, and users are split into a training and a held-out part
(``user_split``), so a model trained on tasks is evaluated on shoppers it never saw.

Titles are grounded by the catalogue (``Catalogue.mentions``): a task keeps the items its words
name (``Turn.named``), and a task whose words would name anything else is not drawn.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from minirec.agent.catalogue import Catalogue
from minirec.agent.protocol import Constraints
from minirec.data.dataset import EvalStage, LeaveOneOutSplit

KINDS = ("simple", "compound", "ambiguous", "multi_turn", "bundle", "choice")
PHRASINGS = ("seen", "held_out")
CHOICES = 4                                   # films named in a choice task
# what each kind's hit means (a choice is listwise: the target first; a bundle has one item per slot)
HIT_NAMES = {"choice": f"hit@1 of {CHOICES} named", "bundle": "hit in 2 slots"}
HIT_AT_10 = "hit@10"

# every genre's words (the first is its name); every one of them is seen in training
GENRE_WORDS = {"Action": ("action", "action-packed"), "Adventure": ("adventure", "adventurous"),
               "Animation": ("animated", "cartoon"), "Children's": ("children's", "family"),
               "Comedy": ("comedy", "funny", "comic"), "Crime": ("crime", "gangster"),
               "Documentary": ("documentary", "non-fiction"), "Drama": ("drama", "dramatic"),
               "Fantasy": ("fantasy", "magical"), "Film-Noir": ("film-noir", "noir"), "Horror": ("horror", "scary"),
               "Musical": ("musical", "song-and-dance"), "Mystery": ("mystery", "whodunit"),
               "Romance": ("romance", "romantic"), "Sci-Fi": ("sci-fi", "science-fiction"),
               "Thriller": ("thriller", "suspense"), "War": ("war", "wartime"), "Western": ("western", "cowboy")}
DECADE_WORDS = {1920: ("1920s", "twenties"), 1930: ("1930s", "thirties"), 1940: ("1940s", "forties"),
                1950: ("50s", "1950s", "fifties"), 1960: ("60s", "1960s", "sixties"), 1970: ("70s", "1970s", "seventies"),
                1980: ("80s", "1980s", "eighties"), 1990: ("90s", "1990s", "nineties")}

# sentence forms by kind (and turn), seen in training or held out; {g} a genre word, {G} the same capitalised,
# {d} a decade word, {n} a negated genre word, {s} the second slot's genre word, {t} a title, {list} the titles named
PHRASINGS_BY_KIND = {
    "seen": {
        "simple": ("I'd like a {g} film.", "Got any {g} movies?", "Show me something {g}."),
        "like": ("Something like {t}.", "I loved {t}, more like that?"),
        "compound": ("A {d} {g} film, but nothing {n}.", "{G} from the {d}, no {n} please.",
                     "I want {g} from the {d} and not {n}."),
        "ask": ("Something to watch tonight?", "What should I watch?"),
        "answer": ("A {g} one, please.", "{G}, I think."),
        "turn1": ("I'm in the mood for {g}.", "Show me {g} films."),
        "turn2": ("Preferably from the {d}.", "Only the {d}."),
        "turn3": ("And no {n}, please.", "Skip anything {n}."),
        "bundle": ("One {g} film and one {s} film for the weekend.", "One {g} and one {s}, please."),
        "choice": ("Which should I watch: {list}?", "Help me pick one of {list}."),
    },
    "held_out": {
        "simple": ("Looking for a good {g} picture tonight.", "{G} is what I feel like."),
        "like": ("Anything similar to {t}?",),
        "compound": ("No {n}, but a {g} movie from the {d}.", "Something {g} made in the {d} without any {n}."),
        "ask": ("I'm bored, any ideas?",),
        "answer": ("Make it {g}.",),
        "turn1": ("Got a craving for {g} today.",),
        "turn2": ("Make it the {d}.",),
        "turn3": ("Leave out {n}.",),
        "bundle": ("I need two films: something {g} and something {s}.",),
        "choice": ("{list}: which one is for me?",),
    },
}

@dataclass(frozen=True)
class Turn:
    text: str                    # what the shopper says
    wants: Constraints           # what it means, as a delta on the turns before (``Constraints.merged``)
    expects_question: bool = False
    named: tuple[int, ...] = ()  # the items the words name by title (what the catalogue's grounding finds)


@dataclass(frozen=True)
class Task:
    kind: str
    user: int
    target: int                  # the user's held-out next item
    turns: tuple[Turn, ...]
    slots: tuple[Constraints, ...] = ()      # bundle tasks: what each slot asks for
    like: int | None = None                  # "something like <item>": the item named (no hard constraint)
    phrasing: str = "seen"                   # which set of sentence forms the words come from (``PHRASINGS``)

    def wants(self) -> Constraints:
        """Everything the shopper asked for by the last turn."""
        out = Constraints()
        for t in self.turns:
            out = out.merged(t.wants)
        return out

    @property
    def candidates(self) -> tuple[int, ...]:
        """A choice task's films, in the order named (empty for every other kind)."""
        return self.turns[0].named if self.kind == "choice" else ()

    def hit(self, answer) -> bool:
        """Whether an answer fulfils the task (``HIT_NAMES``): the target first for a choice, the target in the
        answer (at most 10 items; for a bundle, its slots) otherwise."""
        answer = list(answer)
        return bool(answer) and answer[0] == self.target if self.kind == "choice" else self.target in answer


def hit_name(kind: str) -> str:
    """What a kind's hit means (``HIT_NAMES``; hit@10 for the rest)."""
    return HIT_NAMES.get(kind, HIT_AT_10)


def user_split(n_users: int, held_out: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(training users, held-out users), disjoint, fixed by ``seed``."""
    order = np.random.default_rng(seed).permutation(n_users)
    n = int(round(held_out * n_users))
    return np.sort(order[n:]), np.sort(order[:n])


def training_stage(split: LeaveOneOutSplit) -> EvalStage:
    """Per user, the last *training* item as the target and the items before it as the history: where a model learns
    to act, so that neither the validation nor the test item of anyone is ever a training target."""
    users = np.array([u for u, s in enumerate(split.train) if len(s) >= 2], dtype=np.int64)
    return EvalStage("train", users, [split.train[u][:-1] for u in users], np.array([split.train[u][-1] for u in users]))


def make_tasks(catalogue: Catalogue, split: LeaveOneOutSplit, users, per_kind: int = 50, seed: int = 0,
               stage: EvalStage | None = None, phrasing: str = "seen", typo_rate: float = 0.1,
               kinds: tuple[str, ...] = KINDS) -> list[Task]:
    """``per_kind`` tasks of every kind for shoppers drawn from ``users``, whose target is their item of ``stage``
    (default: the test item; ``split.valid`` for choosing settings, ``training_stage(split)`` for training data), in
    the ``phrasing`` set of sentence forms, a ``typo_rate`` share of utterances with one typo."""
    if phrasing not in PHRASINGS:
        raise ValueError(f"phrasing must be one of {PHRASINGS}, got {phrasing!r}")
    if not 0 <= typo_rate <= 1:
        raise ValueError(f"typo_rate is a share from 0 to 1, got {typo_rate}")
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown task kind(s) {unknown}; the kinds are {KINDS}")
    stage = split.test if stage is None else stage
    row = {int(u): r for r, u in enumerate(stage.users)}
    users = np.array([u for u in np.asarray(users) if int(u) in row], dtype=np.int64)
    if not len(users):
        raise ValueError(f"none of the users has an item in the {stage.name} stage")
    rng = np.random.default_rng(seed)
    words = _Words(catalogue, PHRASINGS_BY_KIND[phrasing], typo_rate, rng)
    genres = [g for g in catalogue.vocabulary if g in GENRE_WORDS]
    tasks: list[Task] = []
    for kind in kinds:
        made, tries = 0, 0
        while made < per_kind and tries < 50 * per_kind:
            tries += 1
            user = int(rng.choice(users))
            target = int(stage.targets[row[user]])
            own = sorted(g for g in catalogue.genres[target] if g in GENRE_WORDS)
            decade = int(catalogue.years[target]) // 10 * 10
            others = [g for g in genres if g not in own]
            if not own or not others or (kind in ("compound", "multi_turn") and decade not in DECADE_WORDS):
                continue
            g, neg = own[int(rng.integers(len(own)))], others[int(rng.integers(len(others)))]
            task = _task(kind, user, target, g, neg, decade, others, catalogue, stage.histories[row[user]], rng, words)
            if task is not None and all(catalogue.mentions(t.text) == list(t.named) for t in task.turns):
                tasks.append(Task(task.kind, task.user, task.target, task.turns, task.slots, task.like, phrasing))
                made += 1
    return tasks


class _Words:
    """Fills a kind's sentence forms with the task's words (synonyms, decade forms), with the typos."""

    def __init__(self, catalogue, forms, typo_rate, rng):
        self.catalogue, self.forms, self.typo_rate, self.rng = catalogue, forms, typo_rate, rng

    def pick(self, options):
        return options[int(self.rng.integers(len(options)))]

    def say(self, form: str, g: str = "", n: str = "", s: str = "", decade: int = 0, titles=()) -> str:
        g_word = self.pick(GENRE_WORDS[g]) if g else ""
        fields = {"g": g_word, "G": g_word[:1].upper() + g_word[1:], "n": self.pick(GENRE_WORDS[n]) if n else "",
                  "s": self.pick(GENRE_WORDS[s]) if s else "", "d": self.pick(DECADE_WORDS[decade]) if decade else ""}
        marks = [f"\x00{j}\x00" for j in range(len(titles))]
        names = ", ".join(marks[:-1]) + f" or {marks[-1]}" if len(marks) > 1 else "".join(marks)
        text = self.pick(self.forms[form]).format(t=names, list=names, **fields)
        if self.rng.random() < self.typo_rate:
            text = self.typo(text)
        for mark, item in zip(marks, titles):
            text = text.replace(mark, self.catalogue.spoken[item])
        return text

    def typo(self, text: str) -> str:
        """Two neighbouring letters of one word of four or more letters swapped (never inside a title's mark)."""
        spans = [m.span() for m in re.finditer(r"[A-Za-z]{4,}", text)]
        spans = [(a, b) for a, b in spans if "\x00" not in text[max(a - 1, 0):b + 1]]
        if not spans:
            return text
        a, b = spans[int(self.rng.integers(len(spans)))]
        j = int(self.rng.integers(a, b - 1))
        if text[j] == text[j + 1]:
            return text
        return text[:j] + text[j + 1] + text[j] + text[j + 2:]


def _task(kind, user, target, g, neg, decade, others, catalogue, history, rng, words: _Words) -> Task | None:
    if kind == "simple":
        history = [int(i) for i in history if g in catalogue.genres[int(i)] and catalogue.nameable[int(i)]]
        if history and rng.random() < 0.5:          # the genre is left unsaid: the title has to carry it
            like = history[int(rng.integers(len(history)))]
            return Task(kind, user, target, (Turn(words.say("like", titles=(like,)), Constraints(), named=(like,)),),
                        like=like)
        return Task(kind, user, target, (Turn(words.say("simple", g), Constraints((g,))),))
    if kind == "compound":
        return Task(kind, user, target, (Turn(words.say("compound", g, neg, decade=decade),
                                              Constraints((g,), (neg,), (decade,))),))
    if kind == "ambiguous":
        return Task(kind, user, target, (Turn(words.say("ask"), Constraints(), expects_question=True),
                                         Turn(words.say("answer", g), Constraints((g,)))))
    if kind == "multi_turn":
        return Task(kind, user, target, (Turn(words.say("turn1", g), Constraints((g,))),
                                         Turn(words.say("turn2", decade=decade), Constraints(decades=(decade,))),
                                         Turn(words.say("turn3", n=neg), Constraints(not_genres=(neg,)))))
    if kind == "choice":
        seen = set(int(i) for i in history)
        pool = np.flatnonzero(catalogue.nameable & catalogue.mask(Constraints((g,))))
        pool = [int(i) for i in pool if int(i) != target and int(i) not in seen]
        if len(pool) < CHOICES - 1 or not catalogue.nameable[target]:
            return None
        named = [target, *(int(i) for i in rng.choice(pool, CHOICES - 1, replace=False))]
        named = tuple(named[j] for j in rng.permutation(CHOICES))
        return Task(kind, user, target, (Turn(words.say("choice", titles=named), Constraints(), named=named),))
    second = others[int(rng.integers(len(others)))]
    slots = (Constraints((g,)), Constraints((second,)))
    return Task(kind, user, target, (Turn(words.say("bundle", g, s=second), Constraints()),), slots)
