"""The reference numbers later notebooks compare against: popularity and SASRec.

``reference_per_user`` returns a baseline's per-user test metrics as saved by notebook 02
for the same profile and users, and builds them through minirec when they are missing
(popularity at once; SASRec through the experiment runner with the profile's seeds and the
first setting of its grid), so every notebook also runs alone.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from minirec.data.dataset import LeaveOneOutSplit
from minirec.experiments.results import load_per_user, save_per_user
from minirec.metrics import evaluate
from minirec.profiles import Profile


def sasrec_spec(split: LeaveOneOutSplit, profile: Profile, label: str = "SASRec", seeds: tuple[int, ...] | None = None,
                **overrides):
    """SASRec over the split's catalogue and history cap, with the profile's architecture overrides (and ``overrides``)."""
    from minirec.experiments.runner import RunSpec
    from minirec.models.sasrec import SASRec, SASRecConfig
    config = SASRecConfig(n_items=split.dataset.n_items, max_len=split.max_history,
                          **dict(profile.arch("sasrec"), **overrides))
    return RunSpec(label, SASRec, config, seeds=tuple(profile.seeds if seeds is None else seeds))


def reference_per_user(method: str, split: LeaveOneOutSplit, profile: Profile,
                       figures_dir: str | Path | None = None) -> dict[str, np.ndarray]:
    """Per-user test metrics of ``Popularity`` or ``SASRec`` (loaded, or built and saved)."""
    dataset = split.dataset.name
    found = load_per_user(figures_dir, dataset, method, profile.name, len(split.test))
    if found is not None:
        return found
    print(f"No saved {method} results for {dataset}/{profile.name}: building them (notebook 02 does this in full)")
    if method == "Popularity":
        from minirec.models.baselines import Popularity
        per_user = evaluate(Popularity(split), split.test)
    elif method == "SASRec":
        from minirec.experiments.runner import run
        per_user = run(sasrec_spec(split, profile, **profile.sasrec_grid[0]), split, profile).per_user
    else:
        raise ValueError(f"unknown reference method {method!r}; use 'Popularity' or 'SASRec'")
    save_per_user(figures_dir, dataset, method, per_user, profile.name)
    return per_user
