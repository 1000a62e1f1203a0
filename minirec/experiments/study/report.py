"""From pieces to the results table: every model's test rows with two-level paired bootstraps against TIGER-mini,
OneRec-Think's steps, the grids' choices on validation (``record_choice``), Think-Ahead's serving, the stages'
captions and rationales, the validation -> test gaps, training cost and the popularity and history breakdowns."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from minirec.data.world import is_world_name
from minirec.experiments import breakdown
from minirec.experiments.choice import CANDIDATE, CHOSEN, Grid, choose, seed_noise
from minirec.experiments.results import RANKING_METRICS, ResultsTable, display_name
from minirec.experiments.specs import (ALIGN, ALIGN_COSINE, BASE, RANDOM_ALIGN, RANDOM_BASE, REASON, RECIPE_CHANGES,
                                      TIGER as REFERENCE, grids)
from minirec.experiments.study.pieces import Piece
from minirec.experiments.study.plan import BY_POPULARITY, STEPS
from minirec.metrics import direction, paired_bootstrap
from minirec.profiles import Profile

def assemble(fresh: dict[str, dict[int, Piece]], table: ResultsTable, split, profile: Profile,
             n_boot: int | None = None, held: dict[str, dict[int, Piece]] | None = None) -> dict:
    """Records, bootstraps against TIGER-mini (on the seeds both have), validation -> test gaps, cost ratios, and
    NDCG@10 by the target's training popularity and by history length (``breakdown``, Popularity included). The
    results files are written once, when every row is in. ``held``: pieces whose checkpoint was chosen on held-out
    users (``HELD_OUT_USERS``), recorded under that protocol and compared with the same model chosen the usual way
    (``summary["held_out"]``)."""
    n_boot = n_boot or profile.n_boot
    with table.writing_once():
        summary = _assemble(fresh, table, split, profile, n_boot)
        summary["held_out"] = {label: _record_model(label, by_seed, held, table, split.dataset.name, profile, n_boot,
                                                    usual=fresh.get(label))
                               for label, by_seed in (held or {}).items()}
        return summary


def _record_model(label: str, by_seed: dict[int, Piece], pieces: dict[str, dict[int, Piece]], table: ResultsTable,
                  dataset: str, profile: Profile, n_boot: int, usual: dict[int, Piece] | None = None) -> dict:
    """One model's test rows, validation -> test gap, paired bootstrap against TIGER-mini under the same protocol
    (``pieces`` holds that protocol's pieces) and training cost; with ``usual``, the same model under the usual
    protocol, compared with it."""
    protocol = next(iter(by_seed.values())).protocol
    seeds = sorted(by_seed)
    chosen = [by_seed[s] for s in seeds]
    test = [float(p.per_user["ndcg@10"].mean()) for p in chosen]
    val = [p.meta["best_val_ndcg10"] for p in chosen]
    table.record(dataset, label, {m: [float(p.per_user[m].mean()) for p in chosen] for m in RANKING_METRICS},
                 profile.name, seeds=seeds, protocol=protocol,
                 notes=f"study pieces; epochs {[p.meta['epochs'] for p in chosen]}; "
                       f"seconds {[round(p.meta['seconds']) for p in chosen]}")
    table.record(dataset, label,
                 {"val_ndcg10": val, "test_ndcg10": test,
                  "test_over_val": [t / v if v > 0 else float("nan") for t, v in zip(test, val)]},
                 profile.name, seeds=seeds, table="val_test", protocol=protocol)
    out = {"seeds": seeds, "val": val, "test": test, "epochs": [p.meta["epochs"] for p in chosen],
           "seconds_per_epoch": [p.seconds_per_epoch for p in chosen]}
    if usual:                                   # the same model, its checkpoint chosen the usual way
        out["vs_usual_validation"] = compare_pieces(by_seed, usual, table, dataset, profile, n_boot)
    reference = pieces.get(REFERENCE, {})
    common = sorted(set(by_seed) & set(reference))
    if label == REFERENCE or not common:
        return out
    out["vs_reference"] = compare_pieces(by_seed, reference, table, dataset, profile, n_boot)
    if any("serving" in p.meta for p in chosen):   # served, not trained: its cost is latency, not epochs
        return out
    ratio = [by_seed[s].seconds_per_epoch / reference[s].seconds_per_epoch for s in common]
    table.record(dataset, f"{label} training cost vs {REFERENCE} (study pieces)", {"epoch_seconds_ratio": ratio},
                 profile.name, seeds=common, table="speed", protocol=protocol)
    out.update(epoch_seconds_ratio=ratio, common_seeds=common)
    return out


def _assemble(fresh: dict[str, dict[int, Piece]], table: ResultsTable, split, profile: Profile,
              n_boot: int) -> dict:
    dataset = split.dataset.name
    summary = {label: _record_model(label, by_seed, fresh, table, dataset, profile, n_boot)
               for label, by_seed in fresh.items()}
    for a, b in STEPS:
        if a in fresh and b in fresh and set(fresh[a]) & set(fresh[b]):
            summary[a].setdefault("vs_steps", {})[b] = compare_pieces(fresh[a], fresh[b], table, dataset, profile,
                                                                      n_boot)
    popularity = breakdown.popularity_groups(split, split.test)
    for a, b in BY_POPULARITY:                    # a step whose question is the tail: compared inside each group
        if a in fresh and b in fresh and set(fresh[a]) & set(fresh[b]):
            summary[a]["vs_by_popularity"] = {
                group: compare_pieces(fresh[a], fresh[b], table, dataset, profile, n_boot, group=group,
                                      users=np.asarray(split.test.users)[popularity == group])
                for group in dict.fromkeys(popularity.tolist())}
    for label, by_seed in fresh.items():
        record_stage_diagnostics(label, by_seed, table, dataset, profile)
    if any("captions" in p.meta for by_seed in fresh.values() for p in by_seed.values()):
        record_caption_floor(split.dataset, table, profile)
    for label, by_seed in fresh.items():          # a served piece (Think-Ahead): its latency and the gain it keeps
        if any("serving" in p.meta for p in by_seed.values()):
            summary[label]["serving"] = record_serving(label, fresh, table, dataset, profile)
    if is_world_name(dataset):
        summary["world"] = record_world(fresh, table, split, profile, n_boot)
    summary["choices"] = {grid.method: record_choice(grid, fresh, table, dataset, profile, n_boot)
                          for grid in grids(profile)}
    # the breakdowns: every model but the grids' candidates set aside (those neither the headline nor, where the
    # grid says so, the chosen one) and the diagnostics trained under another recipe
    aside = set(RECIPE_CHANGES).union(*(grid.set_aside(summary["choices"][grid.method]["chosen"])
                                        for grid in grids(profile)))
    forget_groups(table, dataset, profile, RECIPE_CHANGES)
    summary["breakdown"] = breakdowns({k: v for k, v in fresh.items() if k not in aside}, table, split, profile,
                                      n_boot)
    return summary


def record_world(fresh: dict[str, dict[int, Piece]], table: ResultsTable, split, profile: Profile,
                 n_boot: int) -> dict:
    """A planted world's rows (notebook 12's, over the study's seeds): every model's NDCG@10 as a share of the
    Bayes-optimal ranking's on every test user and on the tail targets; on the tail targets, S²GR-mini against
    TIGER-mini (H1; on every user it is ``vs_reference``) and itemic alignment against its Base, on the profile's
    codes and on random codes (H4)."""
    from minirec.data.world import world_of
    from minirec.experiments import regimes
    from minirec.experiments.specs import S2GR

    world = world_of(split.dataset)
    run = regimes.WorldRun("study", world, split, None, world.ceiling(split.test), regimes.tail_targets(split))
    everyone = [label for label, by_seed in fresh.items()
                if all(p.users is None and "serving" not in p.meta for p in by_seed.values())]
    stacked = {label: {"ndcg@10": np.stack([fresh[label][s].per_user["ndcg@10"] for s in sorted(fresh[label])])}
               for label in everyone}
    seeds = {label: sorted(fresh[label]) for label in everyone}
    shares = [row for label in everyone
              for row in regimes.ceiling_shares(table, run, {label: stacked[label]}, profile, seeds[label])]
    out = {"shares": shares, "tail": {}}
    for a, b in ((S2GR, REFERENCE), (ALIGN, BASE), (RANDOM_ALIGN, RANDOM_BASE)):
        if a in fresh and b in fresh and set(fresh[a]) & set(fresh[b]):
            out["tail"][a] = compare_pieces(fresh[a], fresh[b], table, split.dataset.name, profile, n_boot,
                                            metrics=("ndcg@10",), group="tail targets",
                                            users=np.asarray(split.test.users)[run.tail])
    return out


GRPO_SIGNAL = ("val_ndcg10", "reward", "flat_groups", "kl")   # what the GRPO grid's curves show


def stage_curves(fresh: dict[str, dict[int, Piece]], labels: tuple[str, ...] = (BASE, ALIGN, ALIGN_COSINE, REASON),
                 metrics: tuple[str, ...] = ("val_ndcg10", "lr")):
    """Per-epoch curves of trained pieces, every seed. By default the validation NDCG@10 and learning rate of
    OneRec-Think's stages (and the alignment diagnostic): the evidence on validation of where each stage gains or
    loses; with the GRPO grid's labels and ``GRPO_SIGNAL``, its reward, share of all-equal groups and KL too.
    None without curves."""
    from minirec.viz.plots import seed_curves

    curves = {label: {s: p.meta["curve"] for s, p in fresh[label].items() if p.meta.get("curve")}
              for label in labels if label in fresh}
    curves = {label: by_seed for label, by_seed in curves.items() if by_seed}
    return seed_curves(curves, metrics) if curves else None


def record_serving(label: str, fresh: dict[str, dict[int, Piece]], table: ResultsTable, dataset: str,
                   profile: Profile) -> dict:
    """Think-Ahead's two serving targets, seed by seed: the online half's latency over the fast model's, and the
    share of the reasoning model's NDCG@10 gain over the fast model that Think-Ahead keeps (NaN without a gain).
    ``label``: the served piece's; its two models are TIGER-mini (fast) and the reasoning model."""
    served = fresh[label]
    seeds = sorted(served)
    paths = list(served[seeds[0]].meta["serving"])
    ratios = {path: [served[s].meta["serving"][path] / served[s].meta["serving"]["fast model alone"] for s in seeds]
              for path in paths}
    table.record(dataset, "Think-Ahead serving per user (× fast model), study pieces", ratios, profile.name,
                 seeds=seeds, table="speed",
                 notes=f"cached levels {[served[s].meta['levels'] for s in seeds]}, "
                       f"prefixes {[served[s].meta['prefixes'] for s in seeds]}, chosen on validation")
    out = {"latency_ratio": ratios["Think-Ahead online"]}
    common = [s for s in seeds if s in fresh.get(REFERENCE, {}) and s in fresh.get(REASON, {})]
    if common:
        mean = {name: [float(fresh[name][s].per_user["ndcg@10"].mean()) for s in common]
                for name in (REFERENCE, REASON, label)}
        gains = [r - f for r, f in zip(mean[REASON], mean[REFERENCE])]
        ahead = [t - f for t, f in zip(mean[label], mean[REFERENCE])]
        table.record(dataset, "Think-Ahead vs its two models (study pieces)",
                     {"reasoning_gain_ndcg10": gains, "think_ahead_gain_ndcg10": ahead,
                      "share_of_gain_kept": [a / g if g > 0 else float("nan") for a, g in zip(ahead, gains)]},
                     profile.name, seeds=common, table="think_ahead",
                     notes="gains in NDCG@10 over the fast model (TIGER-mini), seed by seed")
        gain = float(np.mean(gains))
        out.update(gain=gain, kept=float(np.mean(ahead)) / gain if gain > 0 else float("nan"), seeds=common)
    return out


def epoch_mean(piece: Piece, key: str) -> float:
    """The mean of ``key`` over the epochs of a piece's curve that have it (NaN where none has)."""
    values = [row[key] for row in piece.meta.get("curve", []) if key in row]
    return float(np.mean(values)) if values else float("nan")


def record_captions(table: ResultsTable, dataset: str, scores: dict[tuple[str, str], list[dict]], profile: str,
                    seeds: list[int], notes: str = "") -> None:
    """One ``stage_diagnostics`` row per (model, item group): each caption score over ``seeds`` (``scores``: (model,
    group) -> one dict of scores per seed). The notebooks and the study record captions through it."""
    for (name, group), per_seed in scores.items():
        table.record(dataset, f"{name}: captions of {group}", {k: [row[k] for row in per_seed] for k in per_seed[0]},
                     profile, seeds=seeds, table="stage_diagnostics", notes=notes)


def record_stage_diagnostics(label: str, by_seed: dict[int, Piece], table: ResultsTable, dataset: str,
                             profile: Profile) -> None:
    """The captions and rationales ``stage_diagnostics`` measured, one row per (stage, item group), over seeds."""
    seeds = [s for s in sorted(by_seed) if "captions" in by_seed[s].meta]
    if not seeds:
        return
    record_captions(table, dataset, {(label, group): [by_seed[s].meta["captions"][group] for s in seeds]
                                     for group in by_seed[seeds[0]].meta["captions"]}, profile.name, seeds)
    gaps = [s for s in seeds if "caption_floor_gap" in by_seed[s].meta]
    if gaps:
        meta = [by_seed[s].meta["caption_floor_gap"] for s in gaps]
        table.record(dataset, f"{label}: held-out captions against the floor",
                     {f"{meta[0]['score']} minus the floor's": [m["diff"] for m in meta],
                      "beyond noise": [float(m["beyond noise"]) for m in meta]}, profile.name, seeds=gaps,
                     table="stage_diagnostics",
                     notes="95% intervals over the held-out items, per seed: "
                           + "; ".join(f"[{m['low']:+.3f}, {m['high']:+.3f}]" for m in meta))
    seeds = [s for s in seeds if "rationales" in by_seed[s].meta]
    if seeds:
        found = [by_seed[s].meta["rationales"] for s in seeds]
        values = {"names_target_genre": [r["names a target genre"] for r in found],
                  "names_every_target_genre": [r["names every target genre"] for r in found]}
        if all(SWAPPED in r for r in found):     # pieces made since the swap check exists
            values.update({"distinct_rationales": [float(r["distinct"]) for r in found],
                           "top10_changed_by_swap": [r[SWAPPED] for r in found]})
        table.record(dataset, f"{label}: test rationales", values, profile.name, seeds=seeds,
                     table="stage_diagnostics")


SWAPPED = "top-10 changed when two users' rationales are swapped"    # stage_diagnostics' key


def record_caption_floor(ds, table: ResultsTable, profile: Profile) -> None:
    """Beside the stages' captions, the floor they must beat: always writing the most common genre (no model), on
    the same item groups (the study's stages keep OneRecConfig's default share of held-out items)."""
    from minirec.reasoning.itemic import caption_floor, caption_groups
    from minirec.reasoning.onerec import OneRecConfig

    common, floor = caption_floor(ds, caption_groups(ds.n_items, OneRecConfig.caption_holdout))
    record_captions(table, ds.name, {(f"always '{common}' (no model)", group): [scores]
                                     for group, scores in floor.items()}, profile.name, [0],
                    notes="the same for every seed")


def record_choice(grid: Grid, fresh: dict[str, dict[int, Piece]], table: ResultsTable, dataset: str,
                  profile: Profile, n_boot: int) -> dict:
    """Choose ``grid``'s setting on validation (``choice.choose``) among its candidates' pieces and record it: every
    candidate's validation score, status and training signal in ``grid.table``; then, for the chosen setting only,
    its test rows under ``grid.method`` with its variant and ``chosen="validation"``, its test score beside its
    validation score, and a paired bootstrap against ``grid.against``. What an earlier choice recorded leaves the
    table first (its test rows, comparisons and breakdown groups)."""
    names = [n for n in grid.candidates if n in fresh]
    val = {n: {s: p.meta["best_val_ndcg10"] for s, p in fresh[n].items()} for n in names}
    decided = choose(val, profile.seeds, grid.candidates)
    table.forget(dataset, profile.name, [grid.method], chosen=True)
    table.forget(dataset, profile.name, grid.candidates, table=grid.table)
    forget_groups(table, dataset, profile, grid.set_aside(decided.chosen))
    for n in names:               # over the seeds the choice read: the profile's where a candidate has them all
        seeds = decided.seeds if set(decided.seeds) <= set(val[n]) else sorted(val[n])
        # beside the validation score, the training signal averaged over the epochs each seed trained (GRPO: the
        # mean reward of a rollout and the share of groups whose rewards were all equal: no advantage, no gradient)
        signal = {key: [epoch_mean(fresh[n][s], key) for s in seeds] for key in grid.signal}
        table.record(dataset, n, {"val_ndcg10": [val[n][s] for s in seeds], **signal}, profile.name, seeds=seeds,
                     table=grid.table, notes=decided.status[n])
    out = {"candidates": {n: {"seeds": sorted(val[n]), "val": decided.val[n], "status": decided.status[n]}
                          for n in names},
           "chosen": decided.chosen, "provisional": decided.provisional, "margin": decided.sd,
           "seeds": decided.seeds, "vs_against": {}}
    if decided.chosen is None:
        return out
    chosen = decided.chosen
    by_seed = {s: fresh[chosen][s] for s in decided.seeds}
    typed = {"variant": grid.variants[chosen], "chosen": "validation"}
    candidates = [n for n in names if decided.status[n] in (CHOSEN, CANDIDATE)]
    table.record(dataset, grid.method, {m: [float(p.per_user[m].mean()) for p in by_seed.values()]
                                        for m in RANKING_METRICS}, profile.name, seeds=list(by_seed), **typed,
                 notes=f"{chosen}: chosen among {candidates} on mean validation NDCG@10 over seeds {decided.seeds}"
                       + ("; provisional: a setting lacks seeds" if decided.provisional else ""))
    table.record(dataset, chosen, {"test_ndcg10": [float(p.per_user["ndcg@10"].mean()) for p in by_seed.values()]},
                 profile.name, seeds=list(by_seed), table=grid.table, notes=CHOSEN)
    if grid.against in fresh:
        out["vs_against"] = compare_pieces(by_seed, fresh[grid.against], table, dataset, profile, n_boot,
                                           name_a=grid.method, **{f"{k}_a": v for k, v in typed.items()})
    out["name"] = display_name({"method": grid.method, **typed})
    return out


def forget_groups(table: ResultsTable, dataset: str, profile: Profile, names) -> None:
    """Drop the popularity and history breakdown rows (and their intervals) of ``names``."""
    for name in ("by_popularity", "by_history"):
        table.forget(dataset, profile.name, names, table=name)


def recorded_choice(table: ResultsTable, dataset: str, profile: str = "study",
                    grid_table: str = "s2gr_choice") -> RecordedChoice:
    """What ``record_choice`` recorded for one grid (by default S²GR-mini's), for a notebook to show: one row per
    setting (its mean validation NDCG@10, its seeds, its mean gap to the chosen setting on the seeds both have, its
    status: chosen, a candidate, pending or screened out) and, for the chosen one only, its test NDCG@10;
    TIGER-mini's test NDCG@10 for scale; and the seed noise the screen used. An empty frame where no study pieces
    were assembled."""
    import pandas as pd

    rows, val = {}, {}
    for r in table.records:
        if (r["table"], r["dataset"], r["profile"]) == (grid_table, dataset, profile) \
                and r["metric"] in ("val_ndcg10", "test_ndcg10"):
            row = rows.setdefault(r["method"], {"val NDCG@10": None, "seeds": len(r["seeds"]), "vs chosen": None,
                                                "status": r.get("notes"), "test NDCG@10": None})
            row[{"val_ndcg10": "val NDCG@10", "test_ndcg10": "test NDCG@10"}[r["metric"]]] = r["mean"]
            if r["metric"] == "val_ndcg10":
                val[r["method"]] = dict(zip(r["seeds"], r["values"]))
    chosen = [n for n, row in rows.items() if row["test NDCG@10"] is not None]
    seed_sd = None
    if chosen:
        leader = val[chosen[0]]
        seed_sd = seed_noise(val, [n for n, row in rows.items() if row["status"] in (CHOSEN, CANDIDATE)])
        for n, row in rows.items():
            shared = sorted(set(val[n]) & set(leader))
            row["vs chosen"] = float(np.mean([val[n][s] - leader[s] for s in shared])) if shared else None
    tiger = table.get(dataset, REFERENCE, "ndcg@10", profile=profile)
    frame = pd.DataFrame(rows).T
    for column in ("val NDCG@10", "seeds", "vs chosen", "test NDCG@10"):
        if column in frame:
            frame[column] = pd.to_numeric(frame[column])           # None becomes NaN
    return RecordedChoice(frame, tiger["mean"] if tiger else None, seed_sd)


class RecordedChoice(NamedTuple):
    frame: object                   # a pandas DataFrame, one row per setting
    tiger_test: float | None        # TIGER-mini's test NDCG@10, for scale
    seed_sd: float | None           # the pooled seed-to-seed sd of the candidates' validation scores
                                    # (``choice.seed_noise``)


def recorded_breakdown(table: ResultsTable, dataset: str, profile: str = "study"):
    """What ``breakdowns`` recorded, for a notebook to show: one row per (model, group) with the paired difference to
    TIGER-mini inside the group, its 95% interval and the verdict (groups in the order they were recorded)."""
    import pandas as pd

    rows = []
    for c in table.comparisons:
        if (c["dataset"], c["profile"], c["b"]) == (dataset, profile, REFERENCE) and c.get("group"):
            rows.append({"model": c["a"], "group": c["group"], "users": c["n_users"], "diff": c["diff"],
                         "low": c["ci95"][0], "high": c["ci95"][1],
                         "verdict": direction(c["diff"], c["significant"])})
    return pd.DataFrame(rows, columns=["model", "group", "users", "diff", "low", "high", "verdict"])


def compare_pieces(a: dict[int, Piece], b: dict[int, Piece], table: ResultsTable, dataset: str, profile: Profile,
                   n_boot: int, metrics: tuple[str, ...] = ("ndcg@10", "recall@10"), name_a: str | None = None,
                   variant_a: str | None = None, chosen_a: str | None = None, users: np.ndarray | None = None,
                   group: str | None = None) -> dict:
    """Paired bootstraps of ``a`` against ``b`` over the seeds both have (two levels: seeds, then users within each
    seed), on the test users both were evaluated on (a held-out-user validation leaves its validation users out of
    the test), or only those of them in ``users`` (a ``group`` of users, recorded as such); recorded under ``name_a``
    (default: ``a``'s label, with ``variant_a`` and ``chosen_a``) and each side's protocol."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return {}
    users_a, users_b = a[seeds[0]].user_index(), b[seeds[0]].user_index()
    keep = np.ones(len(users_a), dtype=bool) if users is None else np.isin(users_a, users)
    _, in_a, in_b = np.intersect1d(users_a[keep], users_b, return_indices=True)
    in_a = np.flatnonzero(keep)[in_a]
    out = {}
    for m in metrics:
        mine = np.stack([a[s].per_user[m][in_a] for s in seeds])            # (seeds, users)
        theirs = np.stack([b[s].per_user[m][in_b] for s in seeds])
        res = paired_bootstrap(mine, theirs, m, n_boot=n_boot)
        first_a, first_b = a[seeds[0]], b[seeds[0]]
        table.compare(dataset, name_a or first_a.label, first_b.label, res, profile.name, group=group,
                      protocol_a=first_a.protocol, protocol_b=first_b.protocol, variant_a=variant_a, chosen_a=chosen_a)
        out[m] = res
    return out


def breakdowns(fresh: dict[str, dict[int, Piece]], table: ResultsTable, split, profile: Profile,
               n_boot: int) -> dict:
    """NDCG@10 by popularity group and by history-length group for Popularity and every model with pieces, each
    model averaged over its own seeds, with paired intervals against TIGER-mini inside each group."""
    from minirec.models.baselines import Popularity
    from minirec.metrics import evaluate

    if REFERENCE not in fresh:
        return {}
    popularity = evaluate(Popularity(split), split.test)["ndcg@10"]
    per_user = {"Popularity": popularity}
    per_user.update({label: np.mean([by_seed[s].per_user["ndcg@10"] for s in sorted(by_seed)], axis=0)
                     for label, by_seed in fresh.items()})
    seeds = {label: sorted(by_seed) for label, by_seed in fresh.items()}
    # the intervals: two levels over the seeds a model shares with TIGER-mini (Popularity is the same every seed)
    per_seed = {label: {s: p.per_user["ndcg@10"] for s, p in by_seed.items()} for label, by_seed in fresh.items()}
    per_seed["Popularity"] = {s: popularity for s in seeds[REFERENCE]}
    groupings = {"by_popularity": (breakdown.popularity_groups(split, split.test),
                                   [f"cold (<{breakdown.COLD})", "tail", "torso", "head"]),
                 "by_history": (breakdown.history_groups(split.test), ["short", "medium", "long"])}
    frames = {}
    for name, (groups, order) in groupings.items():
        frame = breakdown.by_group({k: np.asarray(v) for k, v in per_user.items()}, groups, reference=REFERENCE,
                                   n_boot=n_boot, order=order, per_seed=per_seed)
        for row in frame.itertuples(index=False):          # one value per seed: the group's mean under that seed
            keep = groups == row.group
            if row.model in fresh:
                own = seeds[row.model]
                values = [float(fresh[row.model][s].per_user["ndcg@10"][keep].mean()) for s in own]
            else:
                own, values = [0], [row.mean]
            table.record(split.dataset.name, row.model, {"ndcg@10": values}, profile.name, seeds=own, table=name,
                         notes=f"{row.users} users", group=row.group)
            if (row.group, row.model) in frame.attrs["bootstrap"]:     # the paired interval inside the group
                table.compare(split.dataset.name, row.model, REFERENCE,
                              frame.attrs["bootstrap"][row.group, row.model], profile.name, group=row.group)
        frames[name] = frame
    return {"seeds": seeds, **frames}
