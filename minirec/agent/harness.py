"""The serving harness of ShopX-mini: context access, catalogue grounding, session state, and safe execution.

A session is one shopper and their history. Each turn the shopper says something
(``Harness.user``) and the agent acts, one JSON action at a time (``Harness.act``), until it
asks a question or answers. ``act`` never raises on what the model writes: an invalid action
comes back as an error ``Result`` (with a code and a message the model reads in its context)
and is counted; nothing in a result is an item the catalogue does not have.

The item-space work (retrieving and ranking) is done by a *backend*: ``RankerBackend`` wraps
any minirec ranker (a SID model's constrained beam search, SASRec, popularity) and restricts it
to the items the constraints allow, by the same exclusion mask the evaluation uses.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np
import torch

from minirec.agent.catalogue import Catalogue
from minirec.agent.protocol import ActionError, Answer, Ask, Bundle, Constraints, Rank, Retrieve, parse_action
from minirec.data.dataset import pad_left


class Backend(Protocol):
    def retrieve(self, history: np.ndarray, allowed: np.ndarray, k: int, intent: str) -> list[int]: ...

    def rank(self, history: np.ndarray, candidates: list[int], intent: str) -> list[int]: ...


class RankerBackend:
    """Retrieval and ranking by a minirec ranker (``rank_topk(inputs, exclude, k)``), restricted to allowed items.

    Ranking ``m`` candidates asks for the top ``m`` with every other item excluded; a beam search
    at least ``m`` wide keeps every candidate's path, so the order is the model's exact order.
    """

    def __init__(self, ranker, n_items: int, max_len: int = 50):
        self.ranker, self.n_items, self.max_len = ranker, n_items, max_len

    def _top(self, history: np.ndarray, allowed: np.ndarray, k: int) -> list[int]:
        x = torch.as_tensor(pad_left([np.asarray(history)[-self.max_len:]]))
        outside = np.flatnonzero(~allowed)
        exclude = torch.as_tensor(pad_left([np.concatenate([np.asarray(history), outside])]))
        with torch.no_grad():
            top = self.ranker.rank_topk(x, exclude, k)
        return [int(i) for i in torch.as_tensor(top)[0].tolist() if i >= 0]

    def retrieve(self, history, allowed, k, intent=""):
        return self._top(history, allowed, k)

    def rank(self, history, candidates, intent=""):
        allowed = np.zeros(self.n_items, dtype=bool)
        allowed[candidates] = True
        history = np.asarray(history, dtype=np.int64)
        ranked = self._top(history[~allowed[history]], allowed, len(candidates))   # a candidate seen before stays
        returned = set(ranked)
        return ranked + [c for c in candidates if c not in returned]


class PopularityBackend:
    """Most-watched first (training counts): the simplest real backend, and the harness's test backend."""

    def __init__(self, counts: np.ndarray):
        self.order = np.argsort(-np.asarray(counts), kind="stable")

    def retrieve(self, history, allowed, k, intent=""):
        return [int(i) for i in self.order[allowed[self.order]][:k]]

    def rank(self, history, candidates, intent=""):
        position = np.empty(len(self.order), dtype=np.int64)
        position[self.order] = np.arange(len(self.order))
        return sorted(candidates, key=lambda i: position[i])


@dataclass
class Result:
    ok: bool
    action: str                          # the action's name, or "invalid" when none could be read
    items: list[int] = field(default_factory=list)
    message: str = ""                    # what the model reads next
    error: str | None = None             # an ActionError code
    final: bool = False                  # the turn ends (ask or answer)


@dataclass
class SessionState:
    constraints: Constraints = field(default_factory=Constraints)   # what the shopper wants so far
    shown: set[int] = field(default_factory=set)                   # items already shown in this session
    turns: int = 0
    actions: int = 0
    invalid: int = 0
    questions: int = 0
    answer: list[int] | None = None
    transcript: list[tuple[str, str]] = field(default_factory=list)   # (speaker, text)


class Harness:
    """One shopping session over ``catalogue`` for a shopper with ``history`` (item indices, oldest first)."""

    def __init__(self, catalogue: Catalogue, backend: Backend, history: Sequence[int], profile: str = "",
                 context_items: int = 10):
        history = np.asarray(history, dtype=np.int64)
        if history.size and (history.min() < 0 or history.max() >= catalogue.n_items):
            raise ValueError("the history holds item indices outside the catalogue")
        self.catalogue, self.backend, self.history, self.profile = catalogue, backend, history, profile
        self.context_items = context_items
        self.state = SessionState()

    # ------------------------------------------------------------------ context access
    def context(self) -> str:
        """What the model may read about the shopper: the profile and the last items of the history."""
        last = [self.catalogue.describe(int(i)) for i in self.history[-self.context_items:]]
        return (f"shopper: {self.profile or 'unknown'}\nrecently watched:\n" + "\n".join(last)
                + f"\nwanted so far: {self.state.constraints.to_json() or 'nothing yet'}")

    def last_words(self) -> str:
        """What the shopper said last (a retrieval without an intent of its own reads it)."""
        return next((text for speaker, text in reversed(self.state.transcript) if speaker == "shopper"), "")

    def user(self, text: str) -> None:
        """The shopper's next utterance starts a turn."""
        self.state.turns += 1
        self.state.transcript.append(("shopper", str(text)))

    # ------------------------------------------------------------------ acting
    def act(self, text: str) -> Result:
        """Validate and execute one action; never raises on model output."""
        self.state.actions += 1
        name = "invalid"
        try:
            action = parse_action(text)
            name = action.name
            result = self._execute(action)
        except ActionError as err:
            self.state.invalid += 1
            result = Result(False, name, error=err.code, message=f"error ({err.code}): {err}")
        self.state.transcript.append(("agent", str(text)[:2000]))
        self.state.transcript.append(("harness", result.message))
        return result

    def _items(self, sids: Sequence[str]) -> list[int]:
        items = [self.catalogue.item_of(s) for s in sids]
        if len(set(items)) != len(items):
            raise ActionError("bad_argument", "the same item is listed twice")
        return items

    def _inside(self, items: list[int], c: Constraints) -> None:
        allowed = self.catalogue.mask(c)
        outside = [self.catalogue.sids[i] for i in items if not allowed[i]]
        if outside:
            raise ActionError("outside_constraints", f"{outside[:3]} do not satisfy {c.to_json()}")

    def _shown(self, action: str, items: list[int], final: bool = False) -> Result:
        self.state.shown |= set(items)
        lines = "\n".join(self.catalogue.describe(i) for i in items)
        return Result(True, action, items, f"{action}: {len(items)} item(s)\n{lines}", final=final)

    def _execute(self, action) -> Result:
        cat, state = self.catalogue, self.state
        if isinstance(action, Retrieve):
            cat.check(action.constraints)            # "Romance and not Romance" in one action is an error, not a refinement
            wanted = state.constraints.merged(action.constraints)
            allowed = cat.mask(wanted)
            allowed[self.history] = False
            if action.new_only:
                allowed[list(state.shown)] = False
            if not allowed.any():
                raise ActionError("empty_result", f"no {'new ' if action.new_only else ''}item outside the history "
                                                  f"satisfies {wanted.to_json()}; relax a constraint")
            intent = action.intent or self.last_words()
            items = [i for i in self.backend.retrieve(self.history, allowed, action.k, intent)
                     if 0 <= i < cat.n_items and allowed[i]][:action.k]          # never outside the allowed set
            state.constraints = wanted
            return self._shown("retrieve", items)
        if isinstance(action, Rank):
            items = self._items(action.candidates)
            self._inside(items, state.constraints)
            ranked = self.backend.rank(self.history, items, action.intent)
            listed, returned = set(items), set(ranked)
            ranked = [i for i in ranked if i in listed] + [i for i in items if i not in returned]
            return self._shown("rank", ranked)
        if isinstance(action, Bundle):
            return self._bundle(action)
        if isinstance(action, Ask):
            state.questions += 1
            return Result(True, "ask", message=action.question, final=True)
        if isinstance(action, Answer):
            items = self._items(action.items)
            self._inside(items, state.constraints)
            state.answer = items
            return self._shown("answer", items, final=True)
        raise ActionError("unknown_action", f"no executor for {action!r}")

    def _bundle(self, action: Bundle) -> Result:
        """One distinct item per slot. A slot keeps the session's negations; the most constrained slot chooses first."""
        cat = self.catalogue
        base = Constraints(not_genres=self.state.constraints.not_genres)
        masks = []
        for slot in action.slots:
            cat.check(slot)
            m = cat.mask(base.merged(slot))
            m[self.history] = False
            masks.append(m)
        chosen: dict[int, int] = {}
        for s in sorted(range(len(masks)), key=lambda s: masks[s].sum()):
            allowed = masks[s].copy()
            allowed[list(chosen.values())] = False
            if not allowed.any():
                raise ActionError("empty_result", f"slot {s + 1} ({action.slots[s].to_json()}) has no item left to fill it")
            picks = [i for i in self.backend.retrieve(self.history, allowed, 1, "") if 0 <= i < cat.n_items and allowed[i]]
            chosen[s] = picks[0] if picks else int(np.flatnonzero(allowed)[0])
        return self._shown("bundle", [chosen[s] for s in range(len(masks))])
