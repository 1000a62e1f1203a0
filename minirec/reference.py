"""The reference numbers later notebooks compare against: popularity and SASRec.

``reference_per_user`` returns a baseline's per-user test metrics as saved by notebook 02
for the same profile and users, and builds them through minirec when they are missing
(popularity at once; SASRec by training it with the profile's seeds and the first
setting of its grid), so every notebook also runs alone.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .data import LeaveOneOutSplit
from .metrics import evaluate
from .profiles import Profile
from .results import load_per_user, save_per_user


def reference_per_user(method: str, split: LeaveOneOutSplit, profile: Profile,
                       figures_dir: str | Path | None = None) -> dict[str, np.ndarray]:
    """Per-user test metrics of ``Popularity`` or ``SASRec`` (loaded, or built and saved)."""
    dataset = split.dataset.name
    found = load_per_user(figures_dir, dataset, method, profile.name, len(split.test))
    if found is not None:
        return found
    print(f"No saved {method} results for {dataset}/{profile.name}: building them (notebook 02 does this in full)")
    if method == "Popularity":
        from .baselines import Popularity
        per_user = evaluate(Popularity(split), split.test)
    elif method == "SASRec":
        from .sasrec import SASRec, SASRecConfig
        from .training import SequenceDataModule, train_seeds
        setting = profile.sasrec_grid[0]
        dm = SequenceDataModule(split, max_len=split.max_history, batch_size=profile.batch_size)
        make = lambda: SASRec(SASRecConfig(n_items=split.dataset.n_items, max_len=split.max_history, **setting))  # noqa: E731
        per_user = train_seeds(make, dm, split, profile, f"{dataset}/sasrec-{profile.name}-reference").per_user
    else:
        raise ValueError(f"unknown reference method {method!r}; use 'Popularity' or 'SASRec'")
    save_per_user(figures_dir, dataset, method, per_user, profile.name)
    return per_user
