"""ShopX-mini's protocol and harness, without any language model: validation, grounding, state, and no crashes."""
import json
import re

import numpy as np
import pytest

from minirec.agent import (ERROR_CODES, ActionError, Answer, Ask, Bundle, Constraints, Harness,
                           PopularityBackend, Rank, RankerBackend, Retrieve, action_json, parse_action)
from minirec.agent.episodes import OracleAgent, run_episode
from minirec.agent.fuzz import fuzz_actions
from minirec.agent.intents import KINDS, PHRASINGS_BY_KIND, make_tasks, user_split
from minirec.models.baselines import Popularity


def _session(shop, user=0):
    catalogue, split = shop
    return Harness(catalogue, PopularityBackend(split.train_item_counts()), split.train[user], "a 24 year old technician")


def test_every_action_round_trips_through_its_json():
    actions = [Retrieve("a 90s comedy", Constraints(("Comedy",), ("Romance",), (1990,), ("love",)), 5, True),
               Rank(("<a_1><b_2><c_0>",), "funniest first"), Bundle((Constraints(("Comedy",)), Constraints(("Thriller",)))),
               Ask("Do you prefer old or new films?"), Answer(("<a_1><b_2><c_0>",), "Here you go")]
    for action in actions:
        assert parse_action(action_json(action)) == action


@pytest.mark.parametrize("text, code", [
    ("not json", "malformed"), ("[1, 2]", "malformed"), ('{"intent": "x"}', "unknown_action"),
    ('{"action": "buy"}', "unknown_action"), ('{"action": "retrieve", "intent": "x", "k": 0}', "bad_argument"),
    ('{"action": "retrieve", "intent": "x", "k": true}', "bad_argument"),
    ('{"action": "retrieve", "intent": "x", "k": "10"}', "bad_argument"),
    ('{"action": "retrieve", "intent": 5}', "bad_argument"),
    ('{"action": "retrieve", "intent": "x", "colour": "red"}', "bad_argument"),
    ('{"action": "retrieve", "intent": "x", "constraints": {"decades": [1995]}}', "bad_argument"),
    ('{"action": "bundle", "slots": []}', "bad_argument"), ('{"action": "answer", "items": []}', "bad_argument"),
    ('{"action": "ask"}', "bad_argument"), ('{"action": "retrieve", "intent": "x", "new_only": 1}', "bad_argument"),
    ("[" * 100_000, "malformed")])
def test_malformed_actions_raise_a_coded_error(text, code):
    with pytest.raises(ActionError) as err:
        parse_action(text)
    assert err.value.code == code and str(err.value)


def test_later_turns_refine_negate_and_replace_constraints():
    first = Constraints(genres=("Comedy", "Romance"), decades=(1990,), title_words=("love",))
    later = first.merged(Constraints(not_genres=("Romance",), decades=(1980,)))
    assert later == Constraints(("Comedy",), ("Romance",), (1980,), ("love",))
    assert later.merged(Constraints(genres=("Romance",))).not_genres == ()          # wished for again


def test_catalogue_grounds_sids_and_filters_like_the_item_table(shop, ml100k):
    catalogue, _ = shop
    assert [catalogue.item_of(s) for s in catalogue.sids] == list(range(ml100k.n_items))
    assert catalogue.item_of(" ".join([catalogue.sids[7][:5], catalogue.sids[7][5:]])) == 7     # spaces are allowed
    taken = set(catalogue.sids)
    free = next(f"<a_{a}><b_{b}><c_0>" for a in range(16) for b in range(16) if f"<a_{a}><b_{b}><c_0>" not in taken)
    for bad in (free, "Toy Story", "<a_1>junk", ""):
        with pytest.raises(ActionError) as err:
            catalogue.item_of(bad)
        assert err.value.code == "unknown_sid"
    c = Constraints(genres=("Comedy",), not_genres=("Romance",), decades=(1990,))
    items = ml100k.items
    expected = np.array([("Comedy" in g) and ("Romance" not in g) and str(y).isdigit() and 1990 <= int(y) < 2000
                         for g, y in zip(items["genres"], items["year"])])
    np.testing.assert_array_equal(catalogue.mask(c), expected)
    assert catalogue.mask(Constraints(title_words=("star", "wars"))).sum() >= 1
    for bad, code in ((Constraints(genres=("Comedy",), not_genres=("Comedy",)), "contradictory"),
                      (Constraints(genres=("Comedie",)), "unknown_genre")):
        with pytest.raises(ActionError) as err:
            catalogue.mask(bad)
        assert err.value.code == code


def test_a_multi_turn_session_keeps_state_and_reports_errors(shop):
    catalogue, split = shop
    h = _session(shop)
    assert "recently watched" in h.context() and catalogue.titles[int(split.train[0][-1])] in h.context()
    h.user("a comedy please")
    first = h.act(json.dumps({"action": "retrieve", "intent": "a comedy", "constraints": {"genres": ["Comedy"]}, "k": 5}))
    assert first.ok and len(first.items) == 5
    assert all("Comedy" in catalogue.genres[i] for i in first.items)
    assert not set(first.items) & set(split.train[0].tolist())
    h.user("no romance, and from the nineties")
    second = h.act(json.dumps({"action": "retrieve", "intent": "refined", "new_only": True,
                               "constraints": {"not_genres": ["Romance"], "decades": [1990]}, "k": 5}))
    assert second.ok and not set(second.items) & set(first.items)                  # items already shown are skipped
    assert all(catalogue.satisfies(i, Constraints(("Comedy",), ("Romance",), (1990,))) for i in second.items)
    romance = next(i for i in range(catalogue.n_items) if "Romance" in catalogue.genres[i])
    bad = h.act(json.dumps({"action": "rank", "candidates": [catalogue.sids[romance]]}))
    assert not bad.ok and bad.error == "outside_constraints" and h.state.invalid == 1
    ranked = h.act(json.dumps({"action": "rank", "candidates": [catalogue.sids[i] for i in second.items[::-1]]}))
    assert ranked.ok and ranked.items == second.items                             # popularity order restored
    done = h.act(json.dumps({"action": "answer", "items": [catalogue.sids[second.items[0]]], "message": "enjoy"}))
    assert done.ok and done.final and h.state.answer == [second.items[0]] and h.state.turns == 2
    empty = h.act(json.dumps({"action": "retrieve", "intent": "x", "constraints": {"title_words": ["zzqx"]}}))
    assert empty.error == "empty_result" and h.state.constraints.title_words == ()  # a failed action changes nothing


def test_one_action_asking_for_and_against_a_genre_is_contradictory_not_a_refinement(shop):
    """Across turns a negation cancels an earlier wish; inside one action it is a contradiction."""
    h = _session(shop)
    h.user("A romance, please.")
    assert h.act(json.dumps({"action": "retrieve", "constraints": {"genres": ["Romance"]}})).ok
    h.user("Nothing romantic.")
    both = h.act(json.dumps({"action": "retrieve", "constraints": {"genres": ["Romance"], "not_genres": ["Romance"]}}))
    assert not both.ok and both.error == "contradictory" and h.state.constraints.genres == ("Romance",)
    slot = {"constraints": {"genres": ["Drama"], "not_genres": ["Drama"]}}
    assert h.act(json.dumps({"action": "bundle", "slots": [slot]})).error == "contradictory"
    refined = h.act(json.dumps({"action": "retrieve", "constraints": {"not_genres": ["Romance"]}}))
    assert refined.ok and h.state.constraints.not_genres == ("Romance",) and not h.state.constraints.genres
    assert h.last_words() == "Nothing romantic."


def test_bundles_fill_every_slot_with_distinct_items(shop):
    catalogue, _ = shop
    h = _session(shop)
    slots = [{"constraints": {"genres": ["Comedy"], "decades": [1990]}}, {"constraints": {"genres": ["Comedy"]}},
             {"constraints": {"genres": ["Thriller"]}}]
    result = h.act(json.dumps({"action": "bundle", "slots": slots}))
    assert result.ok and len(set(result.items)) == 3
    for item, slot in zip(result.items, slots):
        assert catalogue.satisfies(item, Constraints(**{k: tuple(v) for k, v in slot["constraints"].items()}))
    unique = next(words for i in range(catalogue.n_items) if i not in set(h.history.tolist())
                  for words in [re.findall(r"\w+", catalogue.titles[i].lower())]
                  if catalogue.mask(Constraints(title_words=tuple(words))).sum() == 1)
    twice = h.act(json.dumps({"action": "bundle", "slots": [{"constraints": {"title_words": unique}}] * 2}))
    assert twice.error == "empty_result"


def test_the_generic_ranker_backend_equals_popularity_computed_directly(shop):
    catalogue, split = shop
    history = split.train[3]
    allowed = catalogue.mask(Constraints(genres=("Drama",)))
    allowed[history] = False
    direct = PopularityBackend(split.train_item_counts())
    generic = RankerBackend(Popularity(split), catalogue.n_items)
    assert generic.retrieve(history, allowed, 10) == direct.retrieve(history, allowed, 10)
    candidates = [int(i) for i in np.flatnonzero(allowed)[:7]]
    assert generic.rank(history, candidates) == direct.rank(history, candidates)


def test_fuzz_no_action_string_crashes_a_session_or_shows_an_unknown_item(shop):
    catalogue, _ = shop
    h = _session(shop)
    errors = 0
    for text in fuzz_actions(catalogue, 1500, seed=0):
        result = h.act(text)
        assert all(isinstance(i, int) and 0 <= i < catalogue.n_items for i in result.items)
        if not result.ok:
            errors += 1
            assert result.error in ERROR_CODES and result.message
    assert h.state.invalid == errors > 1000 and h.state.actions == 1500


# ----------------------------------------------------------------------------- tasks and the baseline's parser
def test_user_split_is_disjoint_complete_and_fixed():
    train, held = user_split(100, 0.2, seed=3)
    assert len(held) == 20 and not set(train) & set(held) and sorted(set(train) | set(held)) == list(range(100))
    assert np.array_equal(user_split(100, 0.2, seed=3)[1], held)


def test_tasks_are_real_users_whose_target_satisfies_what_they_ask(shop):
    catalogue, split = shop
    _, held = user_split(len(split.test), seed=0)
    tasks = make_tasks(catalogue, split, held, per_kind=30, seed=0)
    assert [t.kind for t in tasks] == [k for k in KINDS for _ in range(30)]
    assert tasks == make_tasks(catalogue, split, held, per_kind=30, seed=0)
    for t in tasks:
        assert t.user in set(held.tolist()) and t.target == int(split.test.targets[t.user])
        assert catalogue.satisfies(t.target, t.wants())
        if t.kind == "bundle":
            assert catalogue.satisfies(t.target, t.slots[0]) and len(t.slots) == 2
        assert t.turns[0].expects_question == (t.kind == "ambiguous")
        if t.like is not None:
            assert catalogue.genres[t.like] & catalogue.genres[t.target] and t.wants().is_empty()
            assert t.turns[0].named == (t.like,)
        if t.kind == "choice":       # four distinct films named by title, the target among them, none already seen
            assert len(set(t.candidates)) == 4 and t.target in t.candidates and t.hit([t.target]) and not t.hit([])
            assert not set(t.candidates) & set(int(i) for i in split.test.histories[t.user])
        for turn in t.turns:         # what the catalogue's grounding finds is exactly what the task names
            assert catalogue.mentions(turn.text) == list(turn.named), turn.text


def _form_pattern(form: str) -> re.Pattern:
    return re.compile(re.sub(r"\\\{\w+\\\}", ".+", re.escape(form)) + "$")      # every {field} stands for any words


@pytest.mark.parametrize("phrasing", ["seen", "held_out"])
def test_every_utterance_comes_from_its_own_set_of_sentence_forms_and_the_two_sets_are_disjoint(shop, phrasing):
    catalogue, split = shop
    seen, held = PHRASINGS_BY_KIND["seen"], PHRASINGS_BY_KIND["held_out"]
    assert seen.keys() == held.keys() and all(not set(seen[k]) & set(held[k]) for k in seen)
    own = [_form_pattern(f) for forms in PHRASINGS_BY_KIND[phrasing].values() for f in forms]
    other = [_form_pattern(f) for forms in PHRASINGS_BY_KIND[
        "held_out" if phrasing == "seen" else "seen"].values() for f in forms]
    tasks = make_tasks(catalogue, split, np.arange(len(split.test)), per_kind=40, seed=1, phrasing=phrasing,
                       typo_rate=0.0)
    for t in tasks:
        assert t.phrasing == phrasing
        for turn in t.turns:
            assert any(p.match(turn.text) for p in own), turn.text
            assert not any(p.match(turn.text) for p in other), turn.text
    with pytest.raises(ValueError, match="phrasing must be one of"):
        make_tasks(catalogue, split, np.arange(10), per_kind=1, phrasing="novel")


def test_typos_swap_two_letters_outside_the_titles_and_keep_the_tasks_valid(shop):
    catalogue, split = shop
    clean = make_tasks(catalogue, split, np.arange(len(split.test)), per_kind=20, seed=2, typo_rate=0.0)
    typed = make_tasks(catalogue, split, np.arange(len(split.test)), per_kind=20, seed=2, typo_rate=1.0)
    forms = [_form_pattern(f) for forms in PHRASINGS_BY_KIND["seen"].values() for f in forms]
    assert sum(not any(p.match(turn.text) for p in forms) for t in typed for turn in t.turns) > len(typed) // 2
    assert all(any(p.match(turn.text) for p in forms) for t in clean for turn in t.turns)
    for t in typed:                  # every title still grounds, every target still satisfies what is asked
        assert catalogue.satisfies(t.target, t.wants())
        assert all(catalogue.mentions(turn.text) == list(turn.named) for turn in t.turns)


def test_catalogue_grounds_titles_as_shoppers_say_them(shop):
    catalogue, _ = shop
    usual = next(i for i, t in enumerate(catalogue.titles) if t.startswith("Usual Suspects, The"))
    toy = next(i for i, t in enumerate(catalogue.titles) if t.startswith("Toy Story"))
    assert catalogue.spoken[usual] == "The Usual Suspects"
    assert catalogue.mentions("Should I watch The Usual Suspects or Toy Story?") == [usual, toy]
    assert catalogue.mentions("A comedy, I think.") == [] and catalogue.mentions("toy story") == []
    first_contact = next(i for i, t in enumerate(catalogue.spoken) if t == "Star Trek: First Contact")
    assert catalogue.mentions("Something like Star Trek: First Contact.") == [first_contact]


# ----------------------------------------------------------------------------- episodes
def test_the_oracle_parser_plays_every_kind_of_task_without_a_crash(shop):
    catalogue, split = shop
    tasks = make_tasks(catalogue, split, np.arange(len(split.test)), per_kind=15, seed=2)
    agent = OracleAgent(tasks, catalogue.sids)
    backend = PopularityBackend(split.train_item_counts())
    for t in tasks:
        h = Harness(catalogue, backend, split.test.histories[t.user])
        e = run_episode(t, h, agent)
        assert not e.crashed and e.invalid == 0 and 0 < len(e.answer) <= 10, (t, h.state.transcript)
        assert e.hit == t.hit(e.answer) and e.hit <= (e.turns_to_hit is not None)
        assert e.satisfied == 1.0, (t, h.state.transcript)       # the intended actions keep every constraint
        if t.kind == "ambiguous":
            assert e.questions >= 1 and h.state.transcript[1][0] == "agent" and '"ask"' in h.state.transcript[1][1]
        if t.kind == "multi_turn":
            assert e.turns == 3 and catalogue.satisfies(e.answer[0], t.wants())
        if t.kind == "bundle":
            assert len(set(e.answer)) == 2
        if t.kind == "choice":       # the films named, most popular first; the hit is the target in first place
            assert sorted(e.answer) == sorted(t.candidates) and '"rank"' in h.state.transcript[1][1]
            assert e.answer == backend.rank(None, list(t.candidates)) and e.hit == (e.answer[0] == t.target)


def test_a_broken_agent_ends_its_episode_with_errors_counted_and_no_crash(shop):
    catalogue, split = shop
    task = make_tasks(catalogue, split, [0], per_kind=1, seed=0)[0]

    class Garbage:
        def __init__(self):
            self.n = 0

        def act(self, harness, utterance, last):
            self.n += 1
            return ["{", '{"action": "answer", "items": ["<z_9>"]}', "null", 42][self.n % 4]

    h = Harness(catalogue, PopularityBackend(split.train_item_counts()), split.test.histories[0])
    e = run_episode(task, h, Garbage(), max_actions=4)
    assert not e.crashed and e.invalid == e.actions == 4 and e.answer == [] and not e.hit and e.satisfied == 0


def test_fuzz_harness_counts_what_a_direct_loop_counts_and_catches_a_crash(shop, monkeypatch):
    from minirec.agent.fuzz import fuzz_harness
    catalogue, _ = shop
    strings = fuzz_actions(catalogue, 200, seed=3)
    direct = _session(shop)
    errors = [direct.act(text).error for text in strings]
    report = fuzz_harness(_session(shop), strings, catalogue.n_items)
    assert report["strings"] == 200 and report["crashes"] == 0 and report["unknown_items"] == 0
    assert report["codes"] == {code or "ok": errors.count(code) for code in set(errors)}
    broken = _session(shop)
    real_act = broken.act

    def act(text):                                   # a harness bug: one string raises
        if text == strings[0]:
            raise RuntimeError("a bug")
        return real_act(text)

    monkeypatch.setattr(broken, "act", act)
    assert fuzz_harness(broken, strings[:5], catalogue.n_items)["crashes"] == strings[:5].count(strings[0])


def test_the_three_agents_play_the_same_tasks_each_seed_and_their_records_split_by_seed(shop, tmp_path):
    """``play_agents`` over two seeds (two rankers here; the ShopX-mini slot takes any agent's module); the records
    hold one value per seed and kind, each the mean over that seed's block of episodes; the comparison is paired."""
    from minirec.agent import episodes as ep
    from minirec.experiments.results import ResultsTable
    catalogue, split = shop
    tasks = make_tasks(catalogue, split, np.arange(60), per_kind=2, seed=4)
    rankers = [Popularity(split), Popularity(split)]
    played = {ep.TOOL_AGENT: ep.play(tasks, OracleAgent(tasks, catalogue.sids), catalogue,
                                     RankerBackend(rankers[0], catalogue.n_items), split.test.histories) * 2}
    played["other"] = list(played[ep.TOOL_AGENT])                     # the same episodes: no difference
    table = ResultsTable(tmp_path)
    ep.record_episodes(table, "ml-100k", played, (0, 1), "smoke", KINDS)
    row = table.get("ml-100k", f"{ep.TOOL_AGENT} · all", "hit (each kind's own)", "agent", "smoke")
    first = played[ep.TOOL_AGENT][:len(tasks)]
    assert row["seeds"] == [0, 1] and row["values"][0] == pytest.approx(np.mean([e.hit for e in first]))
    choice = table.get("ml-100k", f"{ep.TOOL_AGENT} · choice", "hit@1 of 4 named", "agent", "smoke")
    assert choice["values"][0] == pytest.approx(np.mean([e.hit for e in first if e.task.kind == "choice"]))
    assert table.get("ml-100k", f"{ep.TOOL_AGENT} · bundle", "hit in 2 slots", "agent", "smoke")
    with pytest.raises(ValueError, match="do not split into 2 seeds"):
        ep.record_episodes(table, "ml-100k", {"odd": first[:-1]}, (0, 1), "smoke", KINDS)
    verdicts = ep.compare_agents(table, "ml-100k", played, ep.TOOL_AGENT, ["other"], "smoke", n_boot=50)
    assert {v["kind"] for v in verdicts} == {*KINDS, "all"} and all(v["difference"] == 0 for v in verdicts)
    assert len([c for c in table.comparisons if c["a"].startswith(ep.TOOL_AGENT)]) == len(verdicts)
    with pytest.raises(ValueError, match="one tool-caller and one ranker per ShopX-mini seed"):
        ep.play_agents(tasks, [None], [None], rankers, catalogue, split.test.histories)


def test_the_study_reports_the_agents_over_seeds_with_the_two_level_bootstrap(shop, tmp_path):
    """Agents pieces of two seeds (episodes played here by the oracle and a popularity-served oracle): the records hold
    each seed's mean per kind, the comparison is the two-level bootstrap of the (seeds, tasks) hits, and pieces of
    different tasks are refused."""
    from minirec.agent.episodes import SHOPX_AGENT, episode_scores, play
    from minirec.experiments.results import ResultsTable
    from minirec.experiments.study import SHOPX_AGENTS, Piece, report_agents, load_pieces, save_piece
    from minirec.metrics import paired_bootstrap
    from minirec.profiles import get_profile
    catalogue, split = shop
    tasks = make_tasks(catalogue, split, np.arange(200), per_kind=4, seed=5, phrasing="held_out")
    oracle = OracleAgent(tasks, catalogue.sids)
    served = {SHOPX_AGENT: RankerBackend(Popularity(split), catalogue.n_items),
              "other": PopularityBackend(np.random.default_rng(0).random(catalogue.n_items))}
    pieces = {}
    for seed in (0, 1):
        per_task = {}
        for agent, backend in served.items():
            played = play(tasks, oracle, catalogue, backend, split.test.histories)
            scores = episode_scores(played)
            per_task.update({f"{agent}|{k}": scores[k] for k in ("hit", "satisfied", "invalid", "crashed")})
            per_task[f"{agent}|actions"] = np.array([e.actions for e in played], dtype=float)
        if seed == 1:                                 # another seed's models: other hits on the same tasks
            per_task[f"{SHOPX_AGENT}|hit"] = np.roll(per_task[f"{SHOPX_AGENT}|hit"], 1)
        meta = {"label": SHOPX_AGENTS, "seed": seed, "dataset": "ml-100k", "agents": list(served),
                "kinds": [t.kind for t in tasks], "epochs": 1, "seconds": 0.0}
        pieces[seed] = save_piece(Piece(SHOPX_AGENTS, seed, "d", per_task, meta, np.arange(len(tasks))), "ml-100k",
                                  tmp_path)
    loaded = {p.seed: p for p in load_pieces("ml-100k", tmp_path)}
    table = ResultsTable(tmp_path)
    rows = report_agents(loaded, table, get_profile("smoke"), n_boot=200)
    choice = [t.kind == "choice" for t in tasks]
    row = table.get("ml-100k", f"{SHOPX_AGENT} · choice · held-out phrasings", "hit@1 of 4 named", "agent", "smoke")
    assert row["seeds"] == [0, 1] and row["values"] == pytest.approx(
        [pieces[s].per_user[f"{SHOPX_AGENT}|hit"][choice].mean() for s in (0, 1)])
    expected = paired_bootstrap(np.stack([pieces[s].per_user[f"{SHOPX_AGENT}|hit"] for s in (0, 1)]),
                                np.stack([pieces[s].per_user["other|hit"] for s in (0, 1)]), n_boot=200)
    overall = next(r for r in rows if r["kind"] == "all")
    assert (overall["low"], overall["high"], overall["seeds"]) == pytest.approx((expected.low, expected.high, 2))
    assert {r["kind"] for r in rows} == {*KINDS, "all"} and all(r["against"] == "other" for r in rows)
    loaded[1].meta["kinds"] = list(reversed(loaded[1].meta["kinds"]))
    with pytest.raises(ValueError, match="played different tasks"):
        report_agents(loaded, ResultsTable(tmp_path / "b"), get_profile("smoke"), n_boot=10)
