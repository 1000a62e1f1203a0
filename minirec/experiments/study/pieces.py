"""A study piece: one seed of one headline spec, trained (or reused) with the profile's recipe, evaluated once on
the test stage and kept in ``figures/study/<dataset>/`` (per-user test metrics, epochs, seconds, validation curve,
commit and the digest of the settings that made it); Think-Ahead's served pieces; reading pieces back and setting
aside the stale ones."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minirec.artifacts import atomic_path, figures_dir as default_figures_dir, git_commit
from minirec.experiments.results import HELD_OUT_USERS, display_name
from minirec.experiments.runner import RunSpec, digest, fingerprint, run
from minirec.experiments.specs import REASON, TIGER as REFERENCE
from minirec.experiments.study.plan import CACHED_LEVELS, PREFIX_COUNTS, THINK_AHEAD
from minirec.profiles import Profile

# what a piece keeps of its training curve: every model's validation and learning rate, and GRPO's signal
CURVE_KEYS = ("epoch", "val_ndcg10", "lr", "reward", "hit_any", "flat_groups", "kl", "clipped", "refine_kept",
              "refine_dropped")


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
            **({"protocol": protocol} if protocol else {}),
            **({"start_val": float(fit.start_val), "kept_start": bool(fit.kept_start)} if fit.start_val is not None
               else {})}
    # what the stage learnt: its best trained epoch, also where it kept its starting weights (the evidence of why)
    meta.update(stage_diagnostics(fit.trained_module(spec.build), split))
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
    token"), and the held-out items' genre accuracy against the always-the-most-common-genre floor (a paired bootstrap
    over those items); after reasoning, how often its test rationale names a genre of the item watched next. Nothing for
    other models."""
    from minirec.reasoning import itemic
    from minirec.reasoning.rationales import genre_agreement
    from minirec.reasoning.onerec import OneRecThink, rationale_swap, recommend

    if not isinstance(module, OneRecThink) or not module.training_stage.taught_words:
        return {}
    ds = split.dataset
    module.eval()
    groups = itemic.caption_groups(ds.n_items, module.config.caption_holdout)
    written = {group: module.caption(items.tolist()) for group, items in groups.items()}
    out = {"captions": {group: {k: float(v.mean()) for k, v in itemic.caption_scores(written[group], ds, items).items()}
                        for group, items in groups.items()}}
    gap = itemic.caption_floor_gap(module, ds, groups, written=written["held-out items"])
    out["caption_floor_gap"] = {"score": gap.metric, "model": gap.mean_a, "floor": gap.mean_b, "diff": gap.diff,
                                "low": gap.low, "high": gap.high, "beyond noise": bool(gap.significant)}
    if module.thinks:
        _, rationales = recommend(module, split.test, k=10)
        agree = genre_agreement(rationales, split.test.targets, list(ds.items["genres"]), ds.genre_vocabulary)
        swap = rationale_swap(module, split.test)
        out["rationales"] = {"names a target genre": float(agree["any"].mean()),
                             "names every target genre": float(agree["all"].mean()),
                             "distinct": len(set(rationales)), "users": len(rationales),
                             "top-10 changed when two users' rationales are swapped": swap["top-k changed"],
                             "top-10 overlap when swapped": swap["mean top-k overlap"]}
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
