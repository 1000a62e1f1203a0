"""What every notebook sets up before its first step, in one call::

    run, ds, full_split, split, table = open_session(profile, dataset, data_dir)
    specs = SpecCatalogue(ds, run)          # the experiments, on the profile's SID table (built on first use)

``run`` is the profile, ``ds`` the loaded data, ``full_split`` its leave-one-out split over every user (the SID table
is built on it), ``split`` the one the profile trains and evaluates on (a subset of users in the smoke profile) and
``table`` the results table. The environment report (versions, device, profile) is printed first.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from minirec.profiles import Profile, environment_report, get_profile


class Session(NamedTuple):
    run: Profile
    dataset: object
    full_split: object
    split: object
    table: object


def open_session(profile: str | Profile, dataset: str = "ml-100k", data_dir: str | Path | None = None,
                 verbose: bool = True) -> Session:
    """The profile, the data, both splits and the results table; prints the environment report first."""
    from minirec.data import dataset as mdata
    from minirec.data import loaders
    from minirec.experiments.results import ResultsTable

    run = get_profile(profile) if isinstance(profile, str) else profile
    if verbose:
        print(environment_report(run, seed=run.seeds))
    ds = loaders.load_dataset(dataset, data_dir)
    return Session(run, ds, mdata.leave_one_out(ds), mdata.leave_one_out(ds.subset_users(run.max_users)),
                   ResultsTable())
