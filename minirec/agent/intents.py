"""Shopping tasks synthesised from MovieLens-100K, and the rule parser of the tool-mediated baseline.

A *task* is a shopper (a real user) whose next item is known (the leave-one-out test item, so
a hit means what it means in every other notebook), and what they say, turn by turn. Every
utterance comes from a template over the target's own attributes, so the target satisfies
what the shopper asks for (tested); what else satisfies it is up to the catalogue. Kinds:

- ``simple``      one genre of the target, or "something like <a history item sharing a genre>" (the genre unsaid);
- ``compound``    a genre, the decade and a genre the target does not have, negated, in one sentence;
- ``ambiguous``   no constraint at first (the agent should ask), then a genre once asked;
- ``multi_turn``  a genre, then the decade, then a negation, one per turn;
- ``bundle``      two slots in one sentence, the first one the target's genre.

Tasks are drawn with a fixed seed, and users are split into a training and a held-out part
(``user_split``), so a model trained on tasks is evaluated on shoppers it never saw.

``parse_intent`` is the tool-mediated baseline's front end: keyword rules that turn an
utterance into ``Constraints`` (genres named, "no X" / "nothing X" / "without X" negations,
decades such as "90s" or "1990s"), the kind of parser that hands filters to a search box.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from minirec.agent.catalogue import Catalogue
from minirec.agent.protocol import Constraints
from minirec.data.dataset import EvalStage, LeaveOneOutSplit

KINDS = ("simple", "compound", "ambiguous", "multi_turn", "bundle")
_DECADE_WORDS = {1920: "1920s", 1930: "1930s", 1940: "1940s", 1950: "50s", 1960: "60s", 1970: "70s", 1980: "80s",
                 1990: "90s"}


@dataclass(frozen=True)
class Turn:
    text: str                    # what the shopper says
    wants: Constraints           # what it means, as a delta on the turns before (``Constraints.merged``)
    expects_question: bool = False


@dataclass(frozen=True)
class Task:
    kind: str
    user: int
    target: int                  # the user's held-out next item
    turns: tuple[Turn, ...]
    slots: tuple[Constraints, ...] = ()      # bundle tasks: what each slot asks for
    like: int | None = None                  # "something like <item>": the item named (no hard constraint)

    def wants(self) -> Constraints:
        """Everything the shopper asked for by the last turn."""
        out = Constraints()
        for t in self.turns:
            out = out.merged(t.wants)
        return out


def user_split(n_users: int, held_out: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(training users, held-out users), disjoint, fixed by ``seed``."""
    order = np.random.default_rng(seed).permutation(n_users)
    n = int(round(held_out * n_users))
    return np.sort(order[n:]), np.sort(order[:n])


def _genre(name: str) -> str:
    return {"Children's": "children's", "Film-Noir": "film-noir", "Sci-Fi": "sci-fi"}.get(name, name.lower())


def training_stage(split: LeaveOneOutSplit) -> EvalStage:
    """Per user, the last *training* item as the target and the items before it as the history: where a model learns
    to act, so that neither the validation nor the test item of anyone is ever a training target."""
    users = np.array([u for u, s in enumerate(split.train) if len(s) >= 2], dtype=np.int64)
    return EvalStage("train", users, [split.train[u][:-1] for u in users], np.array([split.train[u][-1] for u in users]))


def make_tasks(catalogue: Catalogue, split: LeaveOneOutSplit, users, per_kind: int = 50, seed: int = 0,
               stage: EvalStage | None = None) -> list[Task]:
    """``per_kind`` tasks of every kind for shoppers drawn from ``users``, whose target is their item of ``stage``
    (default: the test item; ``split.valid`` for choosing settings, ``training_stage(split)`` for training data)."""
    stage = split.test if stage is None else stage
    row = {int(u): r for r, u in enumerate(stage.users)}
    users = np.array([u for u in np.asarray(users) if int(u) in row], dtype=np.int64)
    if not len(users):
        raise ValueError(f"none of the users has an item in the {stage.name} stage")
    rng = np.random.default_rng(seed)
    genres = [g for g in catalogue.vocabulary if g != "unknown"]
    tasks: list[Task] = []
    for kind in KINDS:
        made, tries = 0, 0
        while made < per_kind and tries < 50 * per_kind:
            tries += 1
            user = int(rng.choice(users))
            target = int(stage.targets[row[user]])
            own = sorted(g for g in catalogue.genres[target] if g != "unknown")
            decade = int(catalogue.years[target]) // 10 * 10
            others = [g for g in genres if g not in own]
            if not own or not others or (kind in ("compound", "multi_turn") and decade not in _DECADE_WORDS):
                continue
            g, neg = own[int(rng.integers(len(own)))], others[int(rng.integers(len(others)))]
            task = _task(kind, user, target, g, neg, decade, others, catalogue, stage.histories[row[user]], rng)
            if task is not None:
                tasks.append(task)
                made += 1
    return tasks


def _task(kind, user, target, g, neg, decade, others, catalogue, history, rng) -> Task | None:
    if kind == "simple":
        history = [int(i) for i in history if g in catalogue.genres[int(i)]]
        if history and rng.random() < 0.5:          # the genre is left unsaid: the title has to carry it
            like = history[int(rng.integers(len(history)))]
            return Task(kind, user, target, (Turn(f"Something like {catalogue.titles[like]}.", Constraints()),),
                        like=like)
        return Task(kind, user, target, (Turn(f"I'd like a {_genre(g)} film.", Constraints((g,))),))
    if kind == "compound":
        return Task(kind, user, target, (Turn(f"A {_DECADE_WORDS[decade]} {_genre(g)} film, but nothing {_genre(neg)}.",
                                              Constraints((g,), (neg,), (decade,))),))
    if kind == "ambiguous":
        return Task(kind, user, target, (Turn("Something to watch tonight?", Constraints(), expects_question=True),
                                         Turn(f"A {_genre(g)} one, please.", Constraints((g,)))))
    if kind == "multi_turn":
        return Task(kind, user, target, (Turn(f"I'm in the mood for {_genre(g)}.", Constraints((g,))),
                                         Turn(f"Preferably from the {_DECADE_WORDS[decade]}.", Constraints(decades=(decade,))),
                                         Turn(f"And no {_genre(neg)}, please.", Constraints(not_genres=(neg,)))))
    second = others[int(rng.integers(len(others)))]
    slots = (Constraints((g,)), Constraints((second,)))
    return Task(kind, user, target, (Turn(f"A {_genre(g)} film and a {_genre(second)} film for the weekend.",
                                          Constraints()),), slots)


# ----------------------------------------------------------------------------- the baseline's rule parser
_NEGATION = r"(?:no|nothing|not|without|except)\s+(?:\w+\s+)?"
_DECADE = re.compile(r"\b(?:19)?([2-9]0)s\b")


def parse_intent(text: str, vocabulary) -> tuple[Constraints, ...]:
    """Keyword rules: an utterance -> one ``Constraints`` per requested item (several for "an X and a Y").

    Genres are matched by name (case-insensitive); a genre right after "no", "nothing", "not",
    "without" or "except" (one word may sit between) is negated; "90s" / "1990s" is a decade.
    """
    text = text.lower()
    parts = re.split(r"\band an?\b", text) if re.search(r"\ban?\s+\S+.*\band an?\b", text) else [text]
    out = []
    for part in parts:
        wants, negated = [], []
        for g in vocabulary:
            if g == "unknown":
                continue
            name = re.escape(_genre(g))
            if re.search(_NEGATION + name + r"\b", part):
                negated.append(g)
            elif re.search(r"(?<![\w-])" + name + r"(?![\w-])", part):
                wants.append(g)
        decades = tuple(sorted({1900 + int(d) for d in _DECADE.findall(part)}))
        out.append(Constraints(tuple(wants), tuple(negated), decades))
    return tuple(out)
