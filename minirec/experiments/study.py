"""The study profile in pieces: one model and one seed at a time, its results kept in the repository.

Three seeds of every headline model take hours on 2 CPU cores, longer than one working session,
and checkpoints (``runs/``) are not part of the repository. A *piece* trains one seed of one
headline spec with the profile's recipe (through ``runner.run``, so a checkpoint made with
the same settings is reused), evaluates it once on the test stage and writes
``figures/study/<dataset>/<label>__seed<s>.npz``: the per-user test metrics, the epochs, the
training seconds, the validation curve, the learning-rate cuts, the commit and the digest of
the fingerprint that made it. ``assemble`` reads every piece back, sets aside stale pieces
(made with other settings), and writes records, paired bootstraps against TIGER-mini, the
validation -> test gap and the per-epoch training cost into the results table::

    python -m minirec.experiments.study --model S2GR-mini --seed 1     # one piece
    python -m minirec.experiments.study --model OneRec-base --model OneRec-align --model OneRec-reason --seed 0
    python -m minirec.experiments.study --model OneRec-RL --seed 0      # every GRPO setting of notebook 09's study grid
    python -m minirec.experiments.study --model Think-Ahead --seed 0    # notebook 10's serving, measured on one seed
    python -m minirec.experiments.study --model OneRec-align-cosine --seed 0   # a diagnostic: alignment without plateau cuts
    python -m minirec.experiments.study --assemble                      # the table from the pieces there are

Settings are chosen on validation among the pieces, by one rule for every grid the catalogue lists (``specs.grids``:
S²GR-mini's method-form settings, GRPO's reward and learning rate; ``choice.choose``, recorded by ``record_choice``);
OneRec-Think's stages are compared each with the one before it and with
the tuned SASRec (``STEPS``), and a Think-Ahead piece records its latency and the share of the reasoning model's
gain it keeps (``record_serving``).

Every spec comes from the catalogue the notebooks use (``minirec.experiments.specs``), so a piece and a notebook's
run of the same label train the same thing (the same fingerprint, the same checkpoint folder).
"""
from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from minirec.artifacts import atomic_path, figures_dir as default_figures_dir, git_commit, save_figure
from minirec.experiments.choice import CANDIDATE, CHOSEN, Grid, choose, seed_noise
from minirec.experiments.results import HELD_OUT_USERS, RANKING_METRICS, ResultsTable, display_name
from minirec.experiments.runner import RunSpec, digest, fingerprint, run
from minirec.experiments.specs import (ALIGN, ALIGN_COSINE, BASE, ITEM_ID_TIGER_PIECE, REASON, RECIPE_CHANGES,
                                      RL, S2GR, S2GR_SETTINGS, SASREC_FIRST as SASREC, TIGER as REFERENCE,
                                      SpecCatalogue, grids, grpo_candidates as rl_candidates)
from minirec.metrics import direction, paired_bootstrap
from minirec.profiles import Profile, get_profile

THINK_AHEAD = "Think-Ahead (chosen on validation)"     # TIGER-mini online after the reasoning model offline
# OneRec-Think's ablation: each stage against the one before it, and against the tuned SASRec; the alignment
# diagnostic against the headline alignment (never chosen by its test score)
STEPS = ((ALIGN, BASE), (REASON, ALIGN), (REASON, BASE), (BASE, SASREC), (ALIGN, SASREC), (REASON, SASREC),
         (THINK_AHEAD, REASON), (ALIGN_COSINE, ALIGN))
CACHED_LEVELS, PREFIX_COUNTS = (1, 2), (5, 10, 20)     # Think-Ahead's settings chosen among (notebook 10's)


def headline_specs(ds, split, profile: Profile, sid_table=None) -> dict[str, RunSpec]:
    """Every spec the study trains, from the catalogue the notebooks use (``specs.SpecCatalogue``): SASRec at the
    grid's first setting, TIGER-mini, item-ID TIGER, S²GR-mini and its settings, OneRec-Think's ranking stages, the
    alignment diagnostic and every GRPO candidate (each carrying its own recipe changes). ``sid_table``: another SID
    table than the profile's."""
    specs = SpecCatalogue(ds, profile, sid_table)
    chain = specs.onerec()
    out = [specs.sasrec_first(split), specs.tiger(), specs.item_id_tiger(ITEM_ID_TIGER_PIECE),
           *(specs.s2gr(name) for name in (S2GR, *S2GR_SETTINGS)), chain.base, chain.align, chain.reason,
           specs.align_cosine(), *(specs.grpo(label) for label in specs.grpo_candidates())]
    return {spec.label: spec for spec in out}


# short names for the command line
ALIASES = {"SASRec": SASREC, "S2GR-mini": S2GR, "item-ID-TIGER": ITEM_ID_TIGER_PIECE,
           **dict(zip(("S2GR-noalign", "S2GR-lambda0.1", "S2GR-soft", "S2GR-soft0.5", "S2GR-normed",
                       "S2GR-levelhidden"), S2GR_SETTINGS, strict=True)),
           "OneRec-base": BASE, "OneRec-align": ALIGN, "OneRec-reason": REASON, "Think-Ahead": THINK_AHEAD,
           "OneRec-align-cosine": ALIGN_COSINE}


# what a piece keeps of its training curve: every model's validation and learning rate, and GRPO's signal
CURVE_KEYS = ("epoch", "val_ndcg10", "lr", "reward", "hit_any", "flat_groups", "kl", "clipped")


def piece_path(dataset: str, label: str, seed: int, figures_dir: str | Path | None = None,
               protocol: str | None = None) -> Path:
    """``figures/study/<dataset>/<label, protocol>__seed<s>.npz``: the file of one piece."""
    name = display_name({"method": label, "protocol": protocol})
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name.replace("²", "2"))        # a file name every system accepts
    return Path(figures_dir or default_figures_dir()) / "study" / dataset / f"{safe}__seed{int(seed)}.npz"


@dataclass
class Piece:
    """One trained seed of one spec: what ``assemble`` needs, without the checkpoint."""
    label: str
    seed: int
    digest: str                          # the fingerprint digest of the settings that made it
    per_user: dict[str, np.ndarray]      # test metric -> per-user values
    meta: dict                           # epochs, seconds, best validation NDCG@10, curves, lr cuts, commit, profile
    users: np.ndarray | None = None      # the test users, in the order of per_user (None: every user, in order)
    protocol: str | None = None          # how its checkpoint was chosen, where not the usual way (HELD_OUT_USERS)

    def user_index(self) -> np.ndarray:
        return np.arange(len(self.per_user["ndcg@10"])) if self.users is None else self.users

    @property
    def seconds_per_epoch(self) -> float:
        return self.meta["seconds"] / max(1, self.meta["epochs"])


def train_piece(spec: RunSpec, split, profile: Profile, seed: int, figures_dir: str | Path | None = None,
                runs_dir: str | Path | None = None, protocol: str | None = None) -> Piece:
    """Train (or reuse) one seed of ``spec``, evaluate it on the test stage and save the piece atomically.
    ``protocol``: ``HELD_OUT_USERS`` where ``split`` chooses the checkpoint on held-out users."""
    spec = spec.variant(spec.label, seeds=(seed,))
    runs = run(spec, split, profile, runs_dir=runs_dir)
    fit = runs.fits[0]
    curve = [{k: row[k] for k in CURVE_KEYS if k in row} for row in fit.curves]
    meta = {"label": spec.label, "seed": int(seed), "profile": profile.name, "dataset": split.dataset.name,
            "epochs": int(fit.epochs), "seconds": float(fit.seconds), "best_val_ndcg10": float(fit.best_val_ndcg10),
            "curve": curve, "commit": git_commit(), "users": len(split.test),
            **({"protocol": protocol} if protocol else {})}
    meta.update(stage_diagnostics(fit.module, split))
    piece = Piece(spec.label, int(seed), digest(fingerprint(spec, split, profile)), runs.per_user_by_seed[seed], meta,
                  np.asarray(split.test.users), protocol)
    return save_piece(piece, split.dataset.name, figures_dir)


def save_piece(piece: Piece, dataset: str, figures_dir: str | Path | None = None) -> Piece:
    """Write a piece atomically to ``figures/study/<dataset>/``."""
    with atomic_path(piece_path(dataset, piece.label, piece.seed, figures_dir, piece.protocol)) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, meta=np.array(json.dumps(piece.meta)), digest=np.array(piece.digest),
                                users=np.asarray(piece.user_index()), **piece.per_user)
    return piece


def think_ahead_digest(specs: dict[str, RunSpec], split, profile: Profile) -> str:
    """What a Think-Ahead piece depends on: both models' fingerprints and the settings chosen among."""
    return digest({"fast": fingerprint(specs[REFERENCE], split, profile),
                   "reasoner": fingerprint(specs[REASON], split, profile),
                   "cached_levels": list(CACHED_LEVELS), "prefix_counts": list(PREFIX_COUNTS),
                   "bench_users": profile.bench_users})


def think_ahead_piece(specs: dict[str, RunSpec], split, profile: Profile, seed: int,
                      figures_dir: str | Path | None = None, runs_dir: str | Path | None = None) -> Piece:
    """Think-Ahead for one seed, as notebook 10 serves it: the reasoning model (``REASON``) offline, TIGER-mini
    online (each trained first if its checkpoint is missing), the cached levels and prefixes chosen on validation,
    then the test metrics and the serving cost of the fast model, the reasoning model and both halves."""
    from minirec.reasoning.think_ahead import choose_and_serve

    fast = run(specs[REFERENCE].variant(REFERENCE, seeds=(seed,)), split, profile, runs_dir=runs_dir)
    reasoner = run(specs[REASON].variant(REASON, seeds=(seed,)), split, profile, runs_dir=runs_dir)
    with profile.autocast():
        served = choose_and_serve(reasoner.module, fast.module, split, CACHED_LEVELS, PREFIX_COUNTS,
                                  profile.bench_users, profile.bench_rounds)
    meta = {"label": THINK_AHEAD, "seed": int(seed), "profile": profile.name, "dataset": split.dataset.name,
            "epochs": 0, "seconds": 0.0, "best_val_ndcg10": served["val_ndcg10"], "serving": served["seconds"],
            "levels": served["levels"], "prefixes": served["prefixes"], "sweep": served["sweep"],
            "commit": git_commit(), "users": len(split.test)}
    piece = Piece(THINK_AHEAD, int(seed), think_ahead_digest(specs, split, profile), served["per_user"], meta,
                  np.asarray(split.test.users))
    return save_piece(piece, split.dataset.name, figures_dir)


def stage_diagnostics(module, split) -> dict:
    """What a OneRec-Think piece measures besides ranking (notebooks 07-08): after alignment,
    the captions it writes for items never captioned in training and for items it was taught ("explain this item
    token"); after reasoning, how often its test rationale names a genre of the item watched next. Nothing for
    other models."""
    from minirec.reasoning import itemic
    from minirec.reasoning.rationales import genre_agreement
    from minirec.reasoning.onerec import OneRecThink, recommend

    if not isinstance(module, OneRecThink) or not module.training_stage.taught_words:
        return {}
    ds = split.dataset
    module.eval()
    groups = itemic.caption_groups(ds.n_items, module.config.caption_holdout)
    out = {"captions": {group: scores for (_, group), scores in
                        itemic.caption_report({"stage": module}, ds, groups, floor=False).items()}}
    if module.training_stage.thinks:
        _, rationales = recommend(module, split.test, k=10)
        agree = genre_agreement(rationales, split.test.targets, list(ds.items["genres"]), ds.genre_vocabulary)
        out["rationales"] = {"names a target genre": float(agree["any"].mean()),
                             "names every target genre": float(agree["all"].mean()),
                             "distinct": len(set(rationales)), "users": len(rationales)}
    return out


def load_pieces(dataset: str, figures_dir: str | Path | None = None) -> list[Piece]:
    """Every saved piece of ``dataset`` (an unreadable file raises, naming it)."""
    folder = Path(figures_dir or default_figures_dir()) / "study" / dataset
    pieces = []
    for path in sorted(folder.glob("*__seed*.npz")):
        try:
            with np.load(path) as data:
                meta = json.loads(str(data["meta"]))
                per_user = {k: data[k] for k in data.files if k not in ("meta", "digest", "users")}
                users = data["users"] if "users" in data.files else None
                pieces.append(Piece(meta["label"], int(meta["seed"]), str(data["digest"]), per_user, meta, users,
                                    meta.get("protocol")))
        except (OSError, KeyError, ValueError) as err:
            raise ValueError(f"study piece {path} is unreadable ({err}); delete it and train the piece again") from err
    return pieces


def current_pieces(pieces: list[Piece], digests: dict[tuple[str, str | None], str]) -> tuple[dict, dict, list[Piece]]:
    """Pieces made with today's settings and the stale ones (another fingerprint). ``digests``: (label, protocol)
    -> today's digest. Returns the usual protocol's pieces and the held-out-user protocol's (each label -> seed ->
    piece), then the stale ones."""
    fresh, held, stale = {}, {}, []
    for p in pieces:
        if digests.get((p.label, p.protocol)) == p.digest and p.protocol in (None, HELD_OUT_USERS):
            (held if p.protocol else fresh).setdefault(p.label, {})[p.seed] = p
        else:
            stale.append(p)
    return fresh, held, stale


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
    for label, by_seed in fresh.items():
        record_stage_diagnostics(label, by_seed, table, dataset, profile)
    if any("captions" in p.meta for by_seed in fresh.values() for p in by_seed.values()):
        record_caption_floor(split.dataset, table, profile)
    for label, by_seed in fresh.items():          # a served piece (Think-Ahead): its latency and the gain it keeps
        if any("serving" in p.meta for p in by_seed.values()):
            summary[label]["serving"] = record_serving(label, fresh, table, dataset, profile)
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
    seeds = [s for s in seeds if "rationales" in by_seed[s].meta]
    if seeds:
        table.record(dataset, f"{label}: test rationales",
                     {"names_target_genre": [by_seed[s].meta["rationales"]["names a target genre"] for s in seeds],
                      "names_every_target_genre": [by_seed[s].meta["rationales"]["names every target genre"]
                                                   for s in seeds]},
                     profile.name, seeds=seeds, table="stage_diagnostics")


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
    frame: "pd.DataFrame"
    tiger_test: float | None        # TIGER-mini's test NDCG@10, for scale
    seed_sd: float | None           # the pooled seed-to-seed sd of the candidates' validation scores (``screen``)


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
                   variant_a: str | None = None, chosen_a: str | None = None) -> dict:
    """Paired bootstraps of ``a`` against ``b`` over the seeds both have (two levels: seeds, then users within each
    seed), on the test users both were evaluated on (a held-out-user validation leaves its validation users out of
    the test); recorded under ``name_a`` (default: ``a``'s label, with ``variant_a`` and ``chosen_a``) and each
    side's protocol."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return {}
    users_a, users_b = a[seeds[0]].user_index(), b[seeds[0]].user_index()
    _, in_a, in_b = np.intersect1d(users_a, users_b, return_indices=True)
    out = {}
    for m in metrics:
        mine = np.stack([a[s].per_user[m][in_a] for s in seeds])            # (seeds, users)
        theirs = np.stack([b[s].per_user[m][in_b] for s in seeds])
        res = paired_bootstrap(mine, theirs, m, n_boot=n_boot)
        first_a, first_b = a[seeds[0]], b[seeds[0]]
        table.compare(dataset, name_a or first_a.label, first_b.label, res, profile.name,
                      protocol_a=first_a.protocol, protocol_b=first_b.protocol, variant_a=variant_a, chosen_a=chosen_a)
        out[m] = res
    return out


def breakdowns(fresh: dict[str, dict[int, Piece]], table: ResultsTable, split, profile: Profile,
               n_boot: int) -> dict:
    """NDCG@10 by popularity group and by history-length group for Popularity and every model with pieces, each
    model averaged over its own seeds, with paired intervals against TIGER-mini inside each group."""
    from minirec.experiments import breakdown
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


def expand_models(names: list[str], profile: Profile) -> list[str]:
    """Command-line model names, with ``OneRec-RL`` standing for every GRPO candidate and ``OneRec-RL-<reward>`` for
    that reward at both learning rates."""
    out, candidates = [], rl_candidates(profile)
    for name in names:
        if name == "OneRec-RL":
            out += list(candidates)
        elif name.startswith("OneRec-RL-"):
            reward = name.removeprefix("OneRec-RL-")
            out += [label for label, (r, _) in candidates.items() if r == reward] or [name]
        else:
            out.append(name)
    return out


def main(argv=None) -> None:
    from minirec.data import dataset as mdata
    from minirec.data import loaders

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="study")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--model", action="append", default=[],
                        help="a headline label or alias: SASRec, TIGER-mini, item-ID-TIGER, S2GR-mini, OneRec-base, "
                             "OneRec-align, OneRec-reason, OneRec-RL (every GRPO setting), OneRec-RL-beam (one "
                             "reward, both learning rates), Think-Ahead (serves OneRec-reason and TIGER-mini); a stage "
                             "trains its earlier stages first unless their checkpoints exist")
    parser.add_argument("--seed", type=int, action="append", default=[])
    parser.add_argument("--assemble", action="store_true", help="write the results table from the saved pieces")
    parser.add_argument("--trust-recorded-digests", action="store_true",
                        help="assemble every saved piece as made with today's settings, without recomputing the "
                             "fingerprints: for a machine that cannot rebuild an input bit-identically (a CoBa SID "
                             "table trained on another CPU differs in its last bits, and so does its fingerprint). "
                             "Check the result: the test rows must equal the committed ones")
    parser.add_argument("--held-out-users", type=float, default=0.0, metavar="SHARE",
                        help="choose the checkpoint on this share of users, left out of training (data.hold_out_users)"
                             " instead of every user's second-to-last item")
    args = parser.parse_args(argv)
    profile = get_profile(args.profile)
    ds = loaders.load_dataset(args.dataset)
    split = mdata.leave_one_out(ds.subset_users(profile.max_users))
    needs_specs = args.model or (args.assemble and not args.trust_recorded_digests)
    specs = headline_specs(ds, mdata.leave_one_out(ds), profile) if needs_specs else {}
    held = mdata.hold_out_users(split, args.held_out_users) if args.held_out_users else None
    for name in expand_models(args.model, profile):
        label = ALIASES.get(name, name)
        if label not in specs and label != THINK_AHEAD:
            names = sorted(set(specs) - set(ALIASES.values()) | set(ALIASES))
            raise SystemExit(f"unknown model {name!r}; choose from {names}")
        if label == THINK_AHEAD and held is not None:
            raise SystemExit("Think-Ahead serves the models as trained; --held-out-users does not apply to it")
        for seed in args.seed or profile.seeds:
            if label == THINK_AHEAD:
                piece = think_ahead_piece(specs, split, profile, seed)
            else:
                piece = train_piece(specs[label], held or split, profile, seed,
                                    protocol=HELD_OUT_USERS if held is not None else None)
            print(f"{label} seed {seed}: test NDCG@10 {piece.per_user['ndcg@10'].mean():.4f}, "
                  f"{piece.meta['epochs']} epochs, {piece.meta['seconds']:.0f} s", flush=True)
    if args.assemble:
        pieces = load_pieces(args.dataset)
        if args.trust_recorded_digests:
            print("assembling every piece as recorded: fingerprints not recomputed (--trust-recorded-digests)")
            digests = {(p.label, p.protocol): p.digest for p in pieces}
        else:
            digests = {(label, None): digest(fingerprint(spec, split, profile)) for label, spec in specs.items()}
            held = mdata.hold_out_users(split, args.held_out_users or 0.1)
            digests.update({(label, HELD_OUT_USERS): digest(fingerprint(spec, held, profile))
                            for label, spec in specs.items()})
            digests[THINK_AHEAD, None] = think_ahead_digest(specs, split, profile)
        fresh, held_out, stale = current_pieces(pieces, digests)
        for p in stale:
            print(f"stale piece set aside: {display_name({'method': p.label, 'protocol': p.protocol})} seed {p.seed} "
                  f"(commit {p.meta.get('commit')}): other settings")
        summary = assemble(fresh, ResultsTable(), split, profile, held=held_out)
        for name, fig in (("onerec_stage_curves", stage_curves(fresh)),
                          ("grpo_curves", stage_curves(fresh, tuple(rl_candidates(profile)), GRPO_SIGNAL))):
            if fig is not None:
                save_figure(fig, f"{args.dataset}_{name}", default_figures_dir() / "study")
        found = summary.pop("breakdown")
        choices = summary.pop("choices")
        rows = [(label, HELD_OUT_USERS, s) for label, s in summary.pop("held_out").items()]
        for label, protocol, s in [(label, None, s) for label, s in summary.items()] + rows:
            name = display_name({"method": label, "protocol": protocol})
            print(name, {k: v for k, v in s.items() if not k.startswith("vs_")})
            others = {"vs_reference": display_name({"method": REFERENCE, "protocol": protocol}),
                      "vs_usual_validation": label}
            for key, other in others.items():
                for res in s.get(key, {}).values():
                    print("  ", res.verdict(name, other))
            for other, results in s.get("vs_steps", {}).items():
                for res in results.values():
                    print("  ", res.verdict(label, other))
        for grid in grids(profile):
            decided = choices[grid.method]
            print(f"{grid.method} settings on validation: {decided['candidates']}")
            if decided["chosen"]:
                print(f"chosen on validation: {decided['chosen']}"
                      f"{' (provisional: a setting lacks seeds)' if decided['provisional'] else ''}")
                for res in decided["vs_against"].values():
                    print("  ", res.verdict(decided["name"], grid.against))
        for name in ("by_popularity", "by_history"):
            if name in found:
                print(f"{name} (seeds {found['seeds']}):\n{found[name].round(4).to_string(index=False)}")


if __name__ == "__main__":
    main()
