"""Running shopping tasks through the harness, and scoring them (the evaluation of notebook 11).

``run_episode`` plays one task: the shopper says each scripted turn, the agent acts (one JSON
action at a time, at most ``max_actions`` per turn) until it asks or answers. An agent that
asks on the last scripted turn hears "Anything is fine." once. What is scored, per episode:

- ``hit``: the target is in the final answer (at most ``k`` items, as hit@k in the other notebooks); for a
  bundle, in its slots (one item each: "hit in 2 slots"); for a choice, first among the films named
  ("hit@1 of 4 named"). ``intents.hit_name`` says which, and every table names it so;
- ``satisfied``: the share of answered items that satisfy everything the shopper asked for (for a
  bundle, item j satisfies slot j; for a choice, the items are among the films named);
- ``turns_to_hit``: shopper turns until an answer first held the target (None: never);
- ``invalid``: invalid actions; ``crashed``: an exception escaped the harness (must never happen).

The agents compared (``play_agents``): ShopX-mini (its actions, its own SID retrieval); the
learned tool-caller (the same backbone fine-tuned on the same tasks to write the same actions,
served by a separate SASRec: the paper's comparison, acting in item space against calling tools);
and ``OracleAgent``, which writes the intended action of every turn exactly (an oracle parser),
served by the same SASRec: what the tool-caller would score if it never misread a shopper.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

from minirec.agent.harness import Harness, Result
from minirec.agent.intents import KINDS, Task, Turn, hit_name
from minirec.agent.protocol import Constraints
from minirec.metrics import bootstrap_mean, paired_bootstrap


class Agent(Protocol):
    def act(self, harness: Harness, utterance: str | None, last: Result | None) -> str: ...


@dataclass
class Episode:
    task: Task
    answer: list[int] = field(default_factory=list)
    hit: bool = False
    satisfied: float = 0.0
    turns: int = 0
    turns_to_hit: int | None = None
    actions: int = 0
    invalid: int = 0
    questions: int = 0
    crashed: bool = False


class OracleAgent:
    """The oracle parser: for every utterance of ``tasks``, the intended action exactly (``model.intended_action``;
    ``sids``: the catalogue's, naming a choice's candidates);
    the retrieval and ranking are the backend's (SASRec in notebook 11). Items shown are answered, as every agent
    does; an utterance it was not given ("Anything is fine.") gets a retrieval with no new constraint."""

    def __init__(self, tasks: Sequence[Task], sids: Sequence[str], k: int = 10):
        from minirec.agent.model import intended_action
        self.k, self.intended = k, {}
        for task in tasks:
            for turn, t in enumerate(task.turns):
                action = intended_action(task, turn, sids)
                if self.intended.setdefault(t.text, action) != action:
                    raise ValueError(f"the utterance {t.text!r} means two different actions in these tasks")

    def act(self, harness: Harness, utterance: str | None, last: Result | None) -> str:
        if last is None:
            return self.intended.get(utterance or "", json.dumps({"action": "retrieve", "k": self.k}))
        return answer_shown(harness, last, self.k)


def answer_shown(harness: Harness, last: Result, k: int = 10) -> str:
    """Every agent's step after its call: answer the first ``k`` items the call showed, or ask to rephrase."""
    if last.ok and last.items:
        return json.dumps({"action": "answer", "items": [harness.catalogue.sids[i] for i in last.items[:k]],
                           "message": "Here is what I found."})
    return json.dumps({"action": "ask", "question": "Could you say that another way?"})


def run_episode(task: Task, harness: Harness, agent: Agent, k: int = 10, max_actions: int = 4) -> Episode:
    """Play ``task`` with ``agent`` in ``harness`` (a fresh session for the task's shopper) and score it."""
    episode = Episode(task)
    turns = list(task.turns)
    extra = True
    while turns:
        turn = turns.pop(0)
        harness.user(turn.text)
        episode.turns += 1
        last, utterance = None, turn.text
        for _ in range(max_actions):
            try:
                text = agent.act(harness, utterance, last)
            except Exception:                              # a broken agent ends its turn; the harness is not to blame
                break
            utterance = None
            try:
                last = harness.act(text)
            except Exception:
                episode.crashed = True
                break
            if last.ok and last.action == "answer":
                episode.answer = last.items[:k]
                if episode.turns_to_hit is None and task.hit(episode.answer):
                    episode.turns_to_hit = episode.turns
            if last.final:
                break
        if episode.crashed:
            break
        if last is not None and last.ok and last.action == "ask" and not turns and extra:
            turns.append(Turn("Anything is fine.", Constraints()))
            extra = False
    state = harness.state
    episode.actions, episode.invalid, episode.questions = state.actions, state.invalid, state.questions
    episode.hit = task.hit(episode.answer)
    episode.satisfied = _satisfied(task, episode.answer, harness)
    return episode


def _satisfied(task: Task, answer: list[int], harness: Harness) -> float:
    if not answer:
        return 0.0
    cat = harness.catalogue
    if task.slots:
        return sum(cat.satisfies(i, c) for i, c in zip(answer, task.slots)) / len(task.slots)
    if task.candidates:
        return float(np.mean([i in task.candidates for i in answer]))
    allowed = cat.mask(task.wants())                       # one filter pass, not one per answered item
    return float(allowed[answer].mean())


def play(tasks: Sequence[Task], agent: Agent, catalogue, backend, histories: Sequence, k: int = 10) -> list[Episode]:
    """Every task played by ``agent``, each in a fresh session over ``backend`` for its shopper
    (``histories[task.user]``: the items before the target)."""
    return [run_episode(task, Harness(catalogue, backend, histories[task.user]), agent, k) for task in tasks]


def episode_scores(episodes: Sequence[Episode]) -> dict[str, np.ndarray]:
    """Per episode: constraint satisfaction, hit, turns to the hit (NaN: never), invalid actions, crashed."""
    return {"satisfied": np.array([e.satisfied for e in episodes], dtype=float),
            "hit": np.array([e.hit for e in episodes], dtype=float),
            "turns_to_hit": np.array([e.turns_to_hit if e.turns_to_hit is not None else np.nan for e in episodes]),
            "invalid": np.array([e.invalid for e in episodes], dtype=float),
            "crashed": np.array([e.crashed for e in episodes], dtype=float)}


def episode_table(by_agent: dict[str, Sequence[Episode]], n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """One row per agent and task kind (and "all"): each score's mean with a 95% bootstrap interval over tasks
    (turns to success over the episodes that hit; crashes as a count); ``hit is`` names each kind's hit
    (``intents.hit_name``; "each kind's own" over all kinds)."""
    rows = []
    for agent, episodes in by_agent.items():
        kinds = list(dict.fromkeys(e.task.kind for e in episodes))
        for kind in kinds + ["all"]:
            chosen = [e for e in episodes if kind in ("all", e.task.kind)]
            scores = episode_scores(chosen)
            row = {"agent": agent, "kind": kind, "tasks": len(chosen), "crashes": int(scores["crashed"].sum()),
                   "hit is": hit_name(kind) if kind != "all" else "each kind's own"}
            for name in ("satisfied", "hit", "turns_to_hit", "invalid"):
                values = scores[name][np.isfinite(scores[name])]
                row[name] = bootstrap_mean(values, n_boot, seed) if len(values) else (np.nan, np.nan, np.nan)
            rows.append(row)
    return rows


def compare_episodes(a: Sequence[Episode], b: Sequence[Episode], score: str = "hit", n_boot: int = 2000,
                     seed: int = 0) -> dict:
    """Paired bootstraps of ``score`` (agent a minus agent b) on the same tasks, per kind and over all tasks."""
    if [e.task for e in a] != [e.task for e in b]:
        raise ValueError("a paired comparison needs both agents' episodes of the same tasks, in the same order")
    sa, sb = episode_scores(a)[score], episode_scores(b)[score]
    kinds = np.array([e.task.kind for e in a])
    out = {kind: paired_bootstrap(sa[kinds == kind], sb[kinds == kind], score, n_boot, seed)
           for kind in dict.fromkeys(kinds.tolist())}
    out["all"] = paired_bootstrap(sa, sb, score, n_boot, seed)
    return out


# ----------------------------------------------------------------------------- notebook 11's comparison
SHOPX_AGENT = "ShopX-mini"
TOOL_AGENT = "learned tool-caller + SASRec"
ORACLE_AGENT = "oracle parser + SASRec"


def play_agents(tasks: Sequence[Task], shop_modules: Sequence, tool_modules: Sequence, ranker_modules: Sequence,
                catalogue, histories: Sequence, k: int = 10) -> dict[str, list[Episode]]:
    """The three agents of notebook 11, each seed's models on the same tasks (seed 0's episodes first): ShopX-mini
    (its actions, its own SID retrieval), the learned tool-caller (its actions, served by the ranker, e.g. SASRec),
    and the oracle parser (the intended actions, served by the same ranker)."""
    from minirec.agent.harness import RankerBackend
    from minirec.agent.model import ModelBackend, ShopXAgent

    if not len(shop_modules) == len(tool_modules) == len(ranker_modules):
        raise ValueError(f"one tool-caller and one ranker per ShopX-mini seed: {len(shop_modules)} ShopX-mini, "
                         f"{len(tool_modules)} tool-callers, {len(ranker_modules)} rankers")
    out = {SHOPX_AGENT: [], TOOL_AGENT: [], ORACLE_AGENT: []}
    for shop, tool, ranker in zip(shop_modules, tool_modules, ranker_modules):
        ranked = RankerBackend(ranker, catalogue.n_items)
        out[SHOPX_AGENT] += play(tasks, ShopXAgent(shop), catalogue, ModelBackend(shop), histories, k)
        out[TOOL_AGENT] += play(tasks, ShopXAgent(tool), catalogue, ranked, histories, k)
        out[ORACLE_AGENT] += play(tasks, OracleAgent(tasks, catalogue.sids, k), catalogue, ranked, histories, k)
    return out


def record_episodes(table, dataset: str, by_agent: dict[str, Sequence[Episode]], seeds: Sequence[int],
                    profile: str, kinds: Sequence[str] = KINDS, phrasing: str = "") -> None:
    """Per agent and task kind (and "all"), one ``agent`` record of each seed's hit (named as the kind's hit is:
    ``intents.hit_name``), constraint satisfaction, invalid actions and crashes (the episodes are ``len(seeds)``
    equal blocks of tasks, in seed order); ``phrasing`` joins the label ("held-out phrasings")."""
    seeds = list(seeds)
    with table.writing_once():
        for name, played in by_agent.items():
            if len(played) % len(seeds):
                raise ValueError(f"{name}: {len(played)} episodes do not split into {len(seeds)} seeds")
            n = len(played) // len(seeds)
            for kind in [*kinds, "all"]:
                by_seed = [episode_scores([e for e in played[s * n:(s + 1) * n] if kind in ("all", e.task.kind)])
                           for s in range(len(seeds))]
                label = f"{name} · {kind}" + (f" · {phrasing}" if phrasing else "")
                hit = hit_name(kind) if kind != "all" else "hit (each kind's own)"
                table.record(dataset, label,
                             {hit: [s["hit"].mean() for s in by_seed],
                              "satisfied": [s["satisfied"].mean() for s in by_seed],
                              "invalid": [s["invalid"].mean() for s in by_seed],
                              "crashes": [s["crashed"].sum() for s in by_seed]},
                             profile, seeds=seeds, table="agent", notes=f"{len(by_seed[0]['hit'])} tasks per seed")


def compare_agents(table, dataset: str, by_agent: dict[str, Sequence[Episode]], agent: str, others: Sequence[str],
                   profile: str, score: str = "hit", n_boot: int = 2000, phrasing: str = "") -> list[dict]:
    """Paired bootstraps of ``agent`` against each of ``others`` on the same episodes, per task kind and over all;
    recorded in the results table, and returned as rows (the verdict table notebook 11 shows)."""
    rows = []
    with table.writing_once():
        for other in others:
            for kind, res in compare_episodes(by_agent[agent], by_agent[other], score, n_boot=n_boot).items():
                suffix = f" · {phrasing}" if phrasing else ""
                table.compare(dataset, f"{agent} · {kind}{suffix}", f"{other} · {kind}{suffix}", res, profile)
                rows.append({"against": other, "kind": kind, "score": hit_name(kind) if kind != "all" else score,
                             agent: res.mean_a, "other": res.mean_b,
                             "difference": res.diff, "95% interval": f"[{res.low:+.3f}, {res.high:+.3f}]",
                             "beyond noise": res.significant})
    return rows
