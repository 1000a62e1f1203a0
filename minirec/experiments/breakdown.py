"""Where a model wins: ranking quality by the target item's popularity and by the user's history length.

A mean over all test users hides where two models differ. ``popularity_groups`` puts each test
user in a group by how often their target item occurs in *training* (cold items below a
threshold, then head / torso / tail thirds of the remaining users, most popular first);
``history_groups`` by the length of the user's history (short / medium / long thirds).
``by_group`` reports each model's mean in every group and, against a reference model, the
paired bootstrap interval of the difference inside the group.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from minirec.data.dataset import EvalStage, LeaveOneOutSplit
from minirec.metrics import direction, paired_bootstrap

COLD = 5   # a target item with fewer training interactions than this is "cold"


def training_counts(split: LeaveOneOutSplit) -> np.ndarray:
    """Interactions of every item in the training sequences."""
    return np.bincount(np.concatenate([np.asarray(s, dtype=np.int64) for s in split.train]),
                       minlength=split.dataset.n_items)


def _thirds(values: np.ndarray, names: tuple[str, str, str]) -> np.ndarray:
    """Label each value by the third it falls in (ties broken by order, so the thirds have equal size)."""
    order = np.argsort(values, kind="stable")
    labels = np.empty(len(values), dtype=object)
    for part, idx in zip(names, np.array_split(order, 3)):
        labels[idx] = part
    return labels


def popularity_groups(split: LeaveOneOutSplit, stage: EvalStage, cold: int = COLD) -> np.ndarray:
    """Per user of ``stage``: 'cold' (target seen < ``cold`` times in training), else 'tail' / 'torso' / 'head'."""
    counts = training_counts(split)[np.asarray(stage.targets)]
    labels = np.full(len(counts), f"cold (<{cold})", dtype=object)
    warm = counts >= cold
    if warm.sum() >= 3:
        labels[warm] = _thirds(counts[warm], ("tail", "torso", "head"))
    return labels


def history_groups(stage: EvalStage) -> np.ndarray:
    """Per user of ``stage``: 'short' / 'medium' / 'long' history, by thirds of history length."""
    return _thirds(np.array([len(h) for h in stage.histories]), ("short", "medium", "long"))


def by_group(per_user: dict[str, np.ndarray], groups: np.ndarray, reference: str, n_boot: int = 2000,
             order: list[str] | None = None, per_seed: dict[str, dict[int, np.ndarray]] | None = None) -> pd.DataFrame:
    """One row per (group, model): users, mean, and the difference to ``reference`` with its 95% interval; the
    bootstrap results themselves are in ``frame.attrs["bootstrap"]``, keyed by (group, model).

    ``per_seed`` (model -> seed -> per-user values), where a model and the reference both have it: the interval is
    the two-level bootstrap over the seeds both have, then the group's users (otherwise over the users of
    ``per_user``)."""
    if reference not in per_user:
        raise ValueError(f"reference {reference!r} is not among the models {sorted(per_user)}")
    groups = np.asarray(groups, dtype=object)
    sizes = {len(v) for v in per_user.values()} | {len(groups)}
    if len(sizes) != 1:
        raise ValueError(f"per-user arrays and groups must have one length, got {sorted(sizes)}")
    rows, results = [], {}
    for group in order or list(dict.fromkeys(groups)):
        keep = groups == group
        if not keep.any():
            continue
        for name, values in per_user.items():
            row = {"group": group, "model": name, "users": int(keep.sum()), "mean": float(values[keep].mean())}
            if name != reference:
                mine, theirs = _paired(name, reference, per_user, per_seed or {})
                res = results[group, name] = paired_bootstrap(mine[..., keep], theirs[..., keep], n_boot=n_boot)
                row.update({f"− {reference}": res.diff, "95% CI": f"[{res.low:+.4f}, {res.high:+.4f}]",
                            "verdict": direction(res.diff, res.significant)})
            rows.append(row)
    frame = pd.DataFrame(rows)
    frame.attrs["bootstrap"] = results
    return frame


def _paired(name: str, reference: str, per_user: dict[str, np.ndarray],
            per_seed: dict[str, dict[int, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """What the bootstrap pairs: (seeds, users) stacks over the seeds both models have, else per-user values."""
    common = sorted(set(per_seed.get(name, {})) & set(per_seed.get(reference, {})))
    if not common:
        return np.asarray(per_user[name]), np.asarray(per_user[reference])
    return (np.stack([per_seed[name][s] for s in common]), np.stack([per_seed[reference][s] for s in common]))
