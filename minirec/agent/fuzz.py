"""Random and adversarial action strings: what the harness must survive (the tests' and notebook 11's fuzzing).

Four kinds, in turn: random Unicode; random sequences of the protocol's own pieces (keys, action
names, brackets, edge-case numbers, a real SID, an unknown SID, control characters, an over-long
string); valid actions cut at a random point; valid actions with one field replaced by a value of
the wrong type, range or meaning (contradictory constraints, an unknown genre, a huge k).
"""
from __future__ import annotations

import json
import random

from minirec.agent.catalogue import Catalogue
from minirec.agent.protocol import Answer, Ask, Bundle, Constraints, Retrieve, action_json


def fuzz_actions(catalogue: Catalogue, n: int = 1000, seed: int = 0) -> list[str]:
    """``n`` action strings, fixed by ``seed``; almost all of them invalid."""
    rng = random.Random(seed)
    good = [action_json(Retrieve("x", Constraints(("Comedy",)), 3)), action_json(Ask("which decade?")),
            action_json(Answer((catalogue.sids[5],))), action_json(Bundle((Constraints(("Drama",)),)))]
    pieces = ['"action"', '"retrieve"', '"rank"', '"bundle"', '"answer"', '"ask"', '"k"', '"constraints"', '"genres"',
              '"not_genres"', '"decades"', '"slots"', '"items"', '"candidates"', "{", "}", "[", "]", ":", ",", "null",
              "true", "-1", "0", "1e999", "51", "1990", '"Comedy"', '"<a_1><b_1><c_0>"', '"<a_99><b_0>"',
              f'"{catalogue.sids[0]}"', '"\\u0000"', '"ü🎬"', '""', '"' + "x" * 600 + '"']
    wrong = [None, 3, -7, "", [], {}, ["<a_0>"], {"genres": ["Comedy"], "not_genres": ["Comedy"]},
             [{"constraints": {"genres": ["Nope"]}}], "retrieve", 10 ** 30, [1990, 1995]]
    out = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            text = "".join(chr(rng.randrange(0, 0x2FFF)) for _ in range(rng.randrange(0, 40)))
        elif kind == 1:
            text = "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 25)))
        elif kind == 2:
            g = rng.choice(good)
            text = g[:rng.randrange(len(g) + 1)]
        else:
            obj = json.loads(rng.choice(good))
            obj[rng.choice(list(obj))] = rng.choice(wrong)
            text = json.dumps(obj)
        out.append(text)
    return out


def fuzz_harness(harness, strings, n_items: int) -> dict:
    """Every string acted on by ``harness``: how many raised (a crash: must be none), how many results showed an
    item outside the catalogue (must be none), and each error code's count ("ok" for accepted actions)."""
    from collections import Counter

    codes, crashes, bad_items = Counter(), 0, 0
    for text in strings:
        try:
            result = harness.act(text)
        except Exception:
            crashes += 1
            continue
        codes[result.error or "ok"] += 1
        bad_items += sum(not 0 <= i < n_items for i in result.items)
    return {"strings": len(strings), "crashes": crashes, "unknown_items": bad_items, "codes": dict(codes.most_common())}
