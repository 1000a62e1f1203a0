"""ShopX's study piece: for one seed, ShopX-mini, the learned tool-caller and SASRec trained (or reused) under the
study recipe, then the three agents of notebook 11 played on the same held-out shoppers' test tasks in held-out
sentence forms; their per-task scores saved as a piece, and read back over seeds into the ``agent`` table with the
two-level bootstrap (seeds, then tasks)::

    python -m minirec.experiments.study --model ShopX --seed 0
"""
from __future__ import annotations

import numpy as np

from minirec.artifacts import git_commit
from minirec.experiments.runner import digest, fingerprint, run
from minirec.experiments.specs import SpecCatalogue
from minirec.experiments.study.pieces import Piece, save_piece
from minirec.experiments.study.plan import SHOPX_AGENTS
from minirec.metrics import paired_bootstrap
from minirec.profiles import Profile

SCORES = ("hit", "satisfied", "invalid", "crashed")
TASK_SEED = 1                                            # the evaluation's tasks: the same for every seed and agent


def agent_specs(specs: SpecCatalogue, split) -> dict:
    """What the agents piece trains: ShopX-mini, the learned tool-caller and SASRec (the study's tuned bar)."""
    return {"shopx": specs.shopx(), "tool": specs.tool_caller(), "ranker": specs.sasrec_first(split)}


def agents_digest(specs: SpecCatalogue, split, profile: Profile) -> str:
    """What an agents piece depends on: the three models' fingerprints and the tasks played."""
    made = {name: fingerprint(spec, split, profile) for name, spec in agent_specs(specs, split).items()}
    return digest({**made, "tasks": {"per_kind": profile.agent_tasks, "seed": TASK_SEED, "phrasing": "held_out"}})


def agents_piece(specs: SpecCatalogue, split, profile: Profile, seed: int, figures_dir=None, runs_dir=None) -> Piece:
    """One seed of notebook 11's comparison, under ``profile``: each model trained first if its checkpoint is
    missing, then ``profile.agent_tasks`` tasks of every kind played by every agent; per task and agent, the hit (as
    its kind names it), constraint satisfaction, invalid actions and crashes."""
    from minirec.agent import Catalogue
    from minirec.agent.episodes import episode_scores, play_agents
    from minirec.agent.intents import make_tasks, user_split

    made = agent_specs(specs, split)
    runs = {name: run(spec.variant(spec.label, seeds=(seed,)), split, profile, runs_dir=runs_dir)
            for name, spec in made.items()}
    shop = runs["shopx"].module
    catalogue = Catalogue(split.dataset, specs.sids)
    _, held = user_split(split.dataset.n_users, shop.config.held_out, shop.config.task_seed)
    tasks = make_tasks(catalogue, split, held, per_kind=profile.agent_tasks, seed=TASK_SEED, phrasing="held_out")
    with profile.autocast():
        episodes = play_agents(tasks, [shop], [runs["tool"].module], [runs["ranker"].module], catalogue,
                               split.test.histories)
    per_task = {f"{agent}|{score}": values for agent, played in episodes.items()
                for score, values in episode_scores(played).items() if score in SCORES}
    per_task.update({f"{agent}|actions": np.array([e.actions for e in played], dtype=float)
                     for agent, played in episodes.items()})
    meta = {"label": SHOPX_AGENTS, "seed": int(seed), "profile": profile.name, "dataset": split.dataset.name,
            "epochs": int(sum(r.fits[0].epochs for r in runs.values())),
            "seconds": float(sum(r.fits[0].seconds for r in runs.values())),
            "best_val_ndcg10": float(runs["ranker"].fits[0].best_val_ndcg10),
            "models": {name: {"label": made[name].label, "epochs": int(r.fits[0].epochs),
                              "seconds": float(r.fits[0].seconds), "best_val": float(r.fits[0].best_val_ndcg10)}
                       for name, r in runs.items()},
            "agents": list(episodes), "kinds": [t.kind for t in tasks], "commit": git_commit(), "tasks": len(tasks)}
    piece = Piece(SHOPX_AGENTS, int(seed), agents_digest(specs, split, profile), per_task, meta,
                  np.arange(len(tasks)))
    return save_piece(piece, split.dataset.name, figures_dir)


def report_agents(pieces: dict[int, Piece], table, profile: Profile, n_boot: int = 2000) -> list[dict]:
    """The agents pieces of every seed into the ``agent`` table: each agent's scores per kind (and over all tasks),
    and ShopX-mini against each other agent per kind, by the two-level bootstrap over seeds and tasks. Returns the
    comparisons as rows. Every piece must have played the same tasks."""
    from minirec.agent.episodes import SHOPX_AGENT
    from minirec.agent.intents import hit_name

    seeds = sorted(pieces)
    if not seeds:
        return []
    first = pieces[seeds[0]]
    kinds = np.array(first.meta["kinds"])
    if any(pieces[s].meta["kinds"] != first.meta["kinds"] for s in seeds):
        raise ValueError("the agents pieces played different tasks: train them again with today's settings")
    dataset = first.meta["dataset"]
    stacked = {key: np.stack([pieces[s].per_user[key] for s in seeds]) for key in first.per_user}
    rows = []
    with table.writing_once():
        for kind in [*dict.fromkeys(kinds.tolist()), "all"]:
            cols = np.ones(len(kinds), dtype=bool) if kind == "all" else kinds == kind
            hit = hit_name(kind) if kind != "all" else "hit (each kind's own)"
            for agent in first.meta["agents"]:
                values = {hit: stacked[f"{agent}|hit"][:, cols].mean(1),
                          "satisfied": stacked[f"{agent}|satisfied"][:, cols].mean(1),
                          "invalid actions (share)": stacked[f"{agent}|invalid"][:, cols].sum(1)
                          / np.maximum(1, stacked[f"{agent}|actions"][:, cols].sum(1)),
                          "crashes": stacked[f"{agent}|crashed"][:, cols].sum(1)}
                table.record(dataset, f"{agent} · {kind} · held-out phrasings", values, profile.name, seeds=seeds,
                             table="agent", notes=f"{int(cols.sum())} tasks per seed")
            for other in first.meta["agents"]:
                if other == SHOPX_AGENT:
                    continue
                res = paired_bootstrap(stacked[f"{SHOPX_AGENT}|hit"][:, cols], stacked[f"{other}|hit"][:, cols], hit,
                                       n_boot)
                table.compare(dataset, f"{SHOPX_AGENT} · {kind} · held-out phrasings",
                              f"{other} · {kind} · held-out phrasings", res, profile.name)
                rows.append({"against": other, "kind": kind, "score": hit, "seeds": len(seeds), "ShopX-mini": res.mean_a,
                             "other": res.mean_b, "difference": res.diff, "low": res.low, "high": res.high,
                             "beyond noise": res.significant})
    return rows
