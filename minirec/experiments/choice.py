"""One rule for choosing a setting on validation, used by every grid: a notebook's (one seed, every candidate
trained) and the study's (seeds trained in rounds, some candidates behind the others).

A grid is a method and the settings it is tried in (``Grid``: candidate label -> variant). ``choose`` reads only
validation scores. A candidate is *complete* when it has every seed of the profile; the chosen setting is the
complete candidate with the best mean validation NDCG@10 over those seeds. A candidate with fewer seeds is
*screened out* when, on the seeds it has, it trails the leader on the same seeds by more than the seed-to-seed
standard deviation of the complete candidates (the noise one seed carries: successive halving); otherwise it is
*pending*, and the choice stays provisional until it has every seed. A candidate never trained keeps the choice
provisional too. Nothing here sees a test score: the chosen setting's test score is recorded after the choice,
once (``study.record_choice``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Iterable

import numpy as np

CHOSEN, CANDIDATE = "chosen", "a candidate"
PENDING, SCREENED = "pending: needs every seed", "screened out (trails the leader beyond seed noise)"
MISSING = "not trained yet"


@dataclass(frozen=True)
class Grid:
    """A method's settings, one chosen on validation.

    ``method``: the name the chosen setting's test rows are recorded under (its ``variant`` the setting's);
    ``variants``: candidate label -> what sets it apart (the text a results row shows); ``table``: where every
    candidate's validation score is recorded; ``against``: the label the chosen setting is compared with on test;
    ``signal``: training-curve keys recorded beside the validation score (their mean over the epochs);
    ``headline``: the candidate that is also reported as the method's own form, chosen or not;
    ``breakdown``: whether the chosen setting joins the popularity and history breakdowns."""
    method: str
    variants: dict[str, str]
    table: str
    against: str
    signal: tuple[str, ...] = ()
    headline: str | None = None
    breakdown: bool = False

    @property
    def candidates(self) -> list[str]:
        return list(self.variants)

    def set_aside(self, chosen: str | None) -> set[str]:
        """The candidates that stay out of the breakdowns: all but the headline and (if the grid says so) the
        chosen one."""
        kept = {self.headline} | ({chosen} if self.breakdown else set())
        return set(self.variants) - kept


@dataclass(frozen=True)
class Choice:
    """What ``choose`` decided: the chosen candidate (None while no candidate is complete), each candidate's status,
    its mean validation score (over the profile's seeds when complete, else over its own), the seed noise, and
    whether the choice can still change."""
    chosen: Hashable | None
    status: dict
    val: dict
    sd: float
    provisional: bool
    seeds: list[int] = field(default_factory=list)


def seed_noise(val: dict[Hashable, dict[int, float]], complete: Iterable[Hashable]) -> float:
    """The pooled seed-to-seed standard deviation of the complete candidates' validation scores (0 with one seed)."""
    variances = [np.var(list(val[n].values()), ddof=1) for n in complete if len(val[n]) > 1]
    return float(np.sqrt(np.mean(variances))) if variances else 0.0


def choose(val: dict[Hashable, dict[int, float]], seeds: Iterable[int] | None = None,
           candidates: Iterable[Hashable] | None = None) -> Choice:
    """Choose among ``val`` (candidate -> seed -> validation NDCG@10). ``seeds``: the seeds a candidate needs
    (default: every seed any candidate has); ``candidates``: the whole grid, when some were never trained (they keep
    the choice provisional). Ties go to the first candidate."""
    seeds = sorted(set(seeds) if seeds is not None else {s for v in val.values() for s in v})
    complete = [n for n in val if set(seeds) <= set(val[n])]
    sd = seed_noise(val, complete)
    mean = {n: float(np.mean([val[n][s] for s in (seeds if n in complete else sorted(val[n]))])) for n in val}
    missing = [n for n in (candidates or ()) if n not in val]
    if not complete:
        status = {**{n: "too few seeds to be chosen" for n in val}, **{n: MISSING for n in missing}}
        return Choice(None, status, mean, sd, True, seeds)
    chosen = max(complete, key=mean.get)
    status = {n: CHOSEN if n == chosen else CANDIDATE for n in complete}
    for n in val:
        if n not in complete:
            shared = [v - val[chosen][s] for s, v in val[n].items() if s in val[chosen]]
            status[n] = SCREENED if shared and np.mean(shared) < -sd else PENDING
    status.update({n: MISSING for n in missing})
    provisional = any(s in (PENDING, MISSING) for s in status.values())
    return Choice(chosen, status, mean, sd, provisional, seeds)
