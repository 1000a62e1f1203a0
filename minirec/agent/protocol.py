"""The action protocol of ShopX-mini: what a model may emit, and the one validator.

A model acts by writing one JSON object per step. Items are named by their SID, written as
the model's own SID tokens, e.g. ``"<a_3><b_17><c_5><d_0>"``. The actions:

================  =====================================================================  ===========================
action            arguments                                                              result the model reads next
================  =====================================================================  ===========================
``retrieve``      ``constraints`` (object, below), ``intent`` (text; default: the       up to k items: SID + facts
                  shopper's last words), ``k`` (1..50), ``new_only`` (true: skip
                  items already shown)
``rank``          ``candidates`` (list of SIDs, 1..50), ``intent`` (text)                 the candidates, best first
``bundle``        ``slots`` (1..5 objects, each ``{"constraints": {...}}``)                one distinct item per slot
``ask``           ``question`` (text)                                                    the question, sent to the shopper
``answer``        ``items`` (list of SIDs, 1..50), ``message`` (text)                     the final answer of the turn
================  =====================================================================  ===========================

``constraints`` = ``{"genres": [...], "not_genres": [...], "decades": [1990, ...], "title_words": [...]}``,
every key optional: an item must have every genre in ``genres``, none in ``not_genres``, a release year in one
of ``decades`` (if given) and every word of ``title_words`` in its title.

``parse_action`` checks the structure and the types only (``ActionError`` with a ``code`` otherwise);
whether genres, SIDs and items exist is the catalogue's check, in the harness.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

ACTIONS = ("retrieve", "rank", "bundle", "ask", "answer")
MAX_ITEMS = 50                 # the largest k, candidate list or answer
MAX_SLOTS = 5
MAX_TEXT = 500                 # characters of an intent, question or message
ERROR_CODES = ("malformed", "unknown_action", "bad_argument", "unknown_genre", "unknown_sid",
               "outside_constraints", "contradictory", "empty_result")


class ActionError(ValueError):
    """An invalid action: ``code`` is one of ``ERROR_CODES``; the message says what to fix."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Constraints:
    genres: tuple[str, ...] = ()          # every one of these
    not_genres: tuple[str, ...] = ()      # none of these
    decades: tuple[int, ...] = ()         # a release year in one of these decades (1990 = the 1990s); () = any
    title_words: tuple[str, ...] = ()     # every word in the title (case-insensitive)

    def merged(self, later: "Constraints") -> "Constraints":
        """A later turn refines this one: wishes add up, a later negation cancels an earlier wish (and a later wish
        an earlier negation), later decades replace earlier ones."""
        genres = tuple(dict.fromkeys(g for g in self.genres + later.genres if g not in later.not_genres))
        not_genres = tuple(dict.fromkeys(g for g in self.not_genres + later.not_genres if g not in later.genres))
        return Constraints(genres, not_genres, later.decades or self.decades,
                           tuple(dict.fromkeys(self.title_words + later.title_words)))

    def is_empty(self) -> bool:
        return not (self.genres or self.not_genres or self.decades or self.title_words)

    def to_json(self) -> dict:
        return {k: list(v) for k, v in self.__dict__.items() if v}


@dataclass(frozen=True)
class Retrieve:
    intent: str = ""                      # "": the harness uses what the shopper said last
    constraints: Constraints = field(default_factory=Constraints)
    k: int = 10
    new_only: bool = False
    name = "retrieve"


@dataclass(frozen=True)
class Rank:
    candidates: tuple[str, ...]
    intent: str = ""
    name = "rank"


@dataclass(frozen=True)
class Bundle:
    slots: tuple[Constraints, ...]
    name = "bundle"


@dataclass(frozen=True)
class Ask:
    question: str
    name = "ask"


@dataclass(frozen=True)
class Answer:
    items: tuple[str, ...]
    message: str = ""
    name = "answer"


Action = Retrieve | Rank | Bundle | Ask | Answer


def _keys(obj: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise ActionError("bad_argument", f"{where}: unknown field(s) {unknown}; allowed: {sorted(allowed)}")


def _text(obj: dict, key: str, required: bool = True) -> str:
    value = obj.get(key, None if required else "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise ActionError("bad_argument", f"{key!r} must be a non-empty string" if required else f"{key!r} must be a string")
    if len(value) > MAX_TEXT:
        raise ActionError("bad_argument", f"{key!r} is longer than {MAX_TEXT} characters")
    return value.strip()


def _strings(value, key: str, at_least: int = 0, at_most: int = MAX_ITEMS) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ActionError("bad_argument", f"{key!r} must be a list of non-empty strings")
    if not at_least <= len(value) <= at_most:
        raise ActionError("bad_argument", f"{key!r} needs {at_least} to {at_most} entries, got {len(value)}")
    return tuple(v.strip() for v in value)


def parse_constraints(value) -> Constraints:
    """A ``constraints`` object -> ``Constraints`` (types only; genre names are checked against the catalogue)."""
    if value is None:
        return Constraints()
    if not isinstance(value, dict):
        raise ActionError("bad_argument", "'constraints' must be an object")
    _keys(value, {"genres", "not_genres", "decades", "title_words"}, "constraints")
    decades = value.get("decades", [])
    if (not isinstance(decades, list) or len(decades) > 20
            or not all(isinstance(d, int) and not isinstance(d, bool) and 1800 <= d <= 2100 and d % 10 == 0
                       for d in decades)):
        raise ActionError("bad_argument", "'decades' must be a list of decades such as 1990 (the 1990s)")
    return Constraints(_strings(value.get("genres", []), "genres", at_most=20),
                       _strings(value.get("not_genres", []), "not_genres", at_most=20), tuple(decades),
                       tuple(w.lower() for w in _strings(value.get("title_words", []), "title_words", at_most=10)))


def parse_action(text: str) -> Action:
    """One action from the model's text: a JSON object with an ``action`` field (see the module docstring)."""
    if not isinstance(text, str):
        raise ActionError("malformed", f"an action is JSON text, got {type(text).__name__}")
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise ActionError("malformed", f"not valid JSON ({str(err)[:80]})") from None
    if not isinstance(obj, dict):
        raise ActionError("malformed", "an action is a JSON object with an 'action' field")
    name = obj.get("action")
    if name not in ACTIONS:
        raise ActionError("unknown_action", f"'action' must be one of {list(ACTIONS)}, got {str(name)[:40]!r}")
    if name == "retrieve":
        _keys(obj, {"action", "intent", "constraints", "k", "new_only"}, name)
        k = obj.get("k", 10)
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_ITEMS:
            raise ActionError("bad_argument", f"'k' must be an integer from 1 to {MAX_ITEMS}")
        new_only = obj.get("new_only", False)
        if not isinstance(new_only, bool):
            raise ActionError("bad_argument", "'new_only' must be true or false")
        return Retrieve(_text(obj, "intent", required=False), parse_constraints(obj.get("constraints")), k, new_only)
    if name == "rank":
        _keys(obj, {"action", "candidates", "intent"}, name)
        return Rank(_strings(obj.get("candidates"), "candidates", at_least=1), _text(obj, "intent", required=False))
    if name == "bundle":
        _keys(obj, {"action", "slots"}, name)
        slots = obj.get("slots")
        if not isinstance(slots, list) or not 1 <= len(slots) <= MAX_SLOTS:
            raise ActionError("bad_argument", f"'slots' must be a list of 1 to {MAX_SLOTS} objects")
        parsed = []
        for s in slots:
            if not isinstance(s, dict):
                raise ActionError("bad_argument", "each slot is an object {\"constraints\": {...}}")
            _keys(s, {"constraints"}, "slot")
            parsed.append(parse_constraints(s.get("constraints")))
        return Bundle(tuple(parsed))
    if name == "ask":
        _keys(obj, {"action", "question"}, name)
        return Ask(_text(obj, "question"))
    _keys(obj, {"action", "items", "message"}, name)
    return Answer(_strings(obj.get("items"), "items", at_least=1), _text(obj, "message", required=False))


def action_json(action: Action) -> str:
    """The JSON a model writes for ``action`` (the inverse of ``parse_action``)."""
    body = {"action": action.name}
    for key, value in action.__dict__.items():
        if isinstance(value, Constraints):
            value = value.to_json()
        elif key == "slots":
            value = [{"constraints": c.to_json()} for c in value]
        elif isinstance(value, tuple):
            value = list(value)
        body[key] = value
    return json.dumps(body)
