"""One experiment runner for every trained recommender in the notebooks.

A ``RunSpec`` says *what* is trained: a label (the method's one spelling in the results
table), a model class, its architecture config, the SID table it reads, and the seeds.
A profile says *how* (the recipe of the model's family). ``run(spec, split, profile)``
trains each seed with early stopping on validation NDCG@10, evaluates the best
checkpoint once on the test stage, and returns a ``SeedRuns``::

    tiger = RunSpec("TIGER-mini", GenerativeRecommender, GenRecConfig(), sids, texts, seeds=(0, 1, 2))
    runs = run(tiger, split, get_profile("course"))
    runs.per_seed["ndcg@10"], runs.val_ndcg10, runs.per_user["ndcg@10"]

Checkpoints are reused, never guessed at. A checkpoint lives under
``runs/checkpoints/<dataset>/<Model>-<hash>/seed<s>/``, where the hash covers everything that
made it: the model class and config, the recipe and the Trainer's precision, the SID
table's fingerprint and the data split's. Any change (a rebuilt SID table included) means
another folder, so the run trains anew and says which of these changed; ``retrain=True``
trains anew regardless. Reused runs are reported to the main job's runtime table.

Staged methods (OneRec-Think: token warm-up -> multi-task alignment -> reasoning SFT) chain
specs with ``parent``: a stage starts from its parent's checkpoint of the same seed (trained
first if missing), and its fingerprint contains the parent's, so changing an early stage
retrains every later one.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from minirec.artifacts import runs_dir as default_runs_dir
from minirec.data.dataset import LeaveOneOutSplit
from minirec.experiments.results import RANKING_METRICS, ResultsTable
from minirec.metrics import evaluate
from minirec.profiles import Profile, seed_everything, with_recipe
from minirec.training import FitResult, fit, load_fit, log_checkpoint, resumable


@dataclass(frozen=True)
class RunSpec:
    """What one experiment trains; ``run`` decides how from a profile."""

    label: str                          # the method's name in results.json, figures and printed tables
    model: type                         # a RankingModule subclass: SASRec, GenerativeRecommender, S2GR, ...
    config: Any                         # its architecture config (a dataclass)
    sid_table: Any = None               # generative models: the item -> SID table they read and write
    texts: Sequence[str] = ()           # item texts, for the from-scratch tokeniser of the Qwen3 presets
    seeds: tuple[int, ...] = (0,)
    parent: "RunSpec | None" = None     # a staged method: this stage starts from the parent's checkpoint
    recipe: dict = field(default_factory=dict)  # recipe family -> Recipe fields this run changes (a diagnostic's
                                                # schedule, a GRPO candidate's learning rate); part of the fingerprint

    def build(self):
        """A fresh, untrained module."""
        if self.sid_table is None:
            return self.model(self.config)
        return self.model(self.config, self.sid_table, list(self.texts))

    def variant(self, label: str, sid_table: Any = None, seeds: tuple[int, ...] | None = None,
                parent: "RunSpec | None" = None, recipe: dict | None = None, **config_changes) -> "RunSpec":
        """The same experiment with another label and some config fields, SID table, seeds, parent or recipe changes
        (``recipe``: family -> Recipe fields, added to the ones this spec has)."""
        changes = dict(self.recipe)
        for family, fields_ in (recipe or {}).items():
            changes[family] = {**changes.get(family, {}), **fields_}
        return replace(self, label=label, config=replace(self.config, **config_changes),
                       sid_table=self.sid_table if sid_table is None else sid_table,
                       seeds=self.seeds if seeds is None else tuple(seeds),
                       parent=self.parent if parent is None else parent, recipe=changes)

    def trained_under(self, profile: Profile) -> Profile:
        """The profile this spec trains under: ``profile``, with this spec's recipe changes."""
        for family, changes in self.recipe.items():
            profile = with_recipe(profile, family, **changes)
        return profile

    def with_seeds(self, seeds) -> "RunSpec":
        """The same experiment with other seeds (the seeds are not part of what a checkpoint is made with)."""
        return replace(self, seeds=tuple(seeds))

    def then(self, label: str, model: type | None = None, **config_changes) -> "RunSpec":
        """The next stage of a staged method, started from this spec's checkpoint.

        ``model`` switches to another class with the same weights (OneRec-Think's reinforcement stage, ShopX-mini):
        its config carries over the parent's fields that its own config class has (the architecture, the weights
        were trained with), plus ``config_changes``; the parent's other fields (another stage's data) stay behind.
        """
        model = model or self.model
        if type(self.config) is model.config_class:
            config = replace(self.config, **config_changes)
        else:
            own = {f.name for f in fields(model.config_class)}
            carried = {f.name: getattr(self.config, f.name) for f in fields(self.config) if f.name in own}
            config = model.config_class(**{**carried, **config_changes})
        return replace(self, label=label, model=model, config=config, parent=self, recipe={})

    @property
    def window(self) -> int:
        """History items per training window and prompt."""
        return getattr(self.config, "max_items", None) or self.config.max_len


def fingerprint(spec: RunSpec, split: LeaveOneOutSplit, profile: Profile) -> dict:
    """Everything that determines a trained checkpoint, as plain JSON values."""
    family = spec.model.recipe_family(spec.config)
    return json.loads(json.dumps({
        "dataset": split.dataset.name,
        "model": spec.model.__name__,
        "config": asdict(spec.config),
        "recipe": asdict(spec.trained_under(profile).recipe(family)),
        "precision": profile.precision,
        "sid_table": spec.sid_table.fingerprint() if spec.sid_table is not None else None,
        "texts": _text_digest(spec.texts),        # what a from-scratch tokeniser learns its vocabulary from
        "data": split.fingerprint(),
        # a later stage validates its starting weights as epoch 0 and keeps them when no epoch beats them
        **({"parent": fingerprint(spec.parent, split, profile), "start": "validated as epoch 0"}
           if spec.parent is not None else {}),
    }, sort_keys=True))


def _text_digest(texts) -> str | None:
    if not texts:
        return None
    return hashlib.sha256("\x1e".join(map(str, texts)).encode()).hexdigest()[:16]


def digest(fp: dict) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:12]


def checkpoint_dir(spec: RunSpec, fp: dict, seed: int, runs_dir: str | Path | None = None) -> Path:
    """``<runs>/checkpoints/<dataset>/<Model>-<hash of the fingerprint>/seed<s>``."""
    root = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    return root / "checkpoints" / fp["dataset"] / f"{spec.model.__name__}-{digest(fp)}" / f"seed{seed}"


def _differences(saved: dict, wanted: dict, prefix: str = "") -> list[str]:
    """Names of the fields in which two fingerprints differ (nested configs spelled out)."""
    out = []
    for key in sorted(set(saved) | set(wanted)):
        a, b = saved.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out


def why_not_reused(spec: RunSpec, fp: dict, seed: int, runs_dir: str | Path | None = None) -> str:
    """Why no checkpoint fits: none made under this label, or one made with other settings (which)."""
    here = checkpoint_dir(spec, fp, seed, runs_dir)
    for other in sorted(here.parent.parent.glob(f"{spec.model.__name__}-*/seed{seed}/fit.json")):
        meta = json.loads(other.read_text())
        if meta.get("label") == spec.label and "fingerprint" in meta:
            changed = _differences(meta["fingerprint"], fp)
            return f"the checkpoint under this label was made with another {', '.join(changed)}"
    return "no checkpoint made with these settings"


@dataclass(frozen=True)
class CheckpointEvent:
    """What ``run`` did with one checkpoint: trained it now, or reused one made with these very settings."""
    label: str          # the spec (or earlier stage) it belongs to
    seed: int
    trained: bool       # False: reused
    seconds: float      # the training it took, now or when it was made
    folder: str


@dataclass
class SeedRuns:
    """Several seeds of one experiment: fits, validation and test metrics per seed and per user."""

    spec: RunSpec
    fits: list[FitResult]
    per_seed: dict[str, list[float]]                   # test metric -> one mean per seed
    per_user: dict[str, np.ndarray]                    # test metric -> per-user value averaged over seeds
    per_user_by_seed: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    report: list[CheckpointEvent] = field(default_factory=list)   # what each seed's checkpoints cost: trained or reused

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(self.per_user_by_seed)

    @property
    def val_ndcg10(self) -> list[float]:
        """The validation NDCG@10 each seed's checkpoint was chosen on."""
        return [f.best_val_ndcg10 for f in self.fits]

    @property
    def module(self):
        """The first seed's trained module (figures and diagnostics look at one model)."""
        return self.fits[0].module

    @property
    def trained_module(self):
        """The first seed's module at its best *trained* epoch: ``module``, unless that seed's stage kept its starting
        weights (no epoch beat them on validation); then what the stage learnt, to show why it lost."""
        return self.fits[0].trained_module(self.spec.build)

    @property
    def kept_start(self) -> list[bool]:
        """Per seed: no trained epoch beat the starting weights on validation, so the stage kept them."""
        return [f.kept_start for f in self.fits]

    def of_seeds(self, seeds) -> "SeedRuns":
        """The same runs restricted to ``seeds`` (those it has, in its own order): its fits, per-seed and per-user
        metrics over them only."""
        wanted = set(seeds)
        keep = [i for i, s in enumerate(self.seeds) if s in wanted]
        chosen = [self.seeds[i] for i in keep]
        if not chosen:
            raise ValueError(f"{self.label} has none of the seeds {sorted(wanted)} (it has {list(self.seeds)})")
        return SeedRuns(self.spec, [self.fits[i] for i in keep],
                        {m: [v[i] for i in keep] for m, v in self.per_seed.items()}, self.per_user_of(chosen),
                        {s: self.per_user_by_seed[s] for s in chosen},
                        [e for e in self.report if e.seed in wanted])

    def per_user_of(self, seeds) -> dict[str, np.ndarray]:
        """Per-user metrics averaged over the given seeds only (for like-for-like comparisons)."""
        return {m: np.mean([self.per_user_by_seed[s][m] for s in seeds], axis=0) for m in self.per_user}

    def summary(self) -> str:
        """One line: epochs and training seconds per seed."""
        return (f"{self.label}: epochs {[f.epochs for f in self.fits]}, training seconds "
                f"{[round(f.seconds) if np.isfinite(f.seconds) else None for f in self.fits]}")


def fit_or_load(spec: RunSpec, split: LeaveOneOutSplit, profile: Profile, seed: int, retrain: bool = False,
                runs_dir: str | Path | None = None, verbose: bool = True,
                events: list[CheckpointEvent] | None = None) -> FitResult:
    """One seed of ``spec``: its checkpoint made with these very settings, or a new fit (parents first). What
    happened to each checkpoint is appended to ``events``."""
    events = [] if events is None else events
    fp = fingerprint(spec, split, profile)
    folder = checkpoint_dir(spec, fp, seed, runs_dir)
    log_name = f"{fp['dataset']}/{folder.parent.name}"       # how the main job's log names this checkpoint
    unreadable = None
    if not retrain and (folder / "best.ckpt").exists() and (folder / "fit.json").exists():
        try:
            result = load_fit(spec.build(), folder, profile.device())
        except ModuleNotFoundError as err:   # pickled by an older layout of the package: its config cannot be read
            unreadable = f"its checkpoint was saved by an older minirec (module {err.name!r} has moved)"
        else:
            _log_reuse(spec, fp, seed, result.seconds, runs_dir)
            events.append(CheckpointEvent(spec.label, seed, False, result.seconds, str(folder)))
            if verbose:
                print(f"{spec.label}, seed {seed}: reusing the checkpoint made with these very settings "
                      f"({folder.parent.name})")
            return result
    start = None
    if spec.parent is not None:                          # a later stage starts where its parent ended
        start = fit_or_load(spec.parent, split, profile, seed, False, runs_dir, verbose, events)
    if verbose:
        why = "retrain=True" if retrain else unreadable or why_not_reused(spec, fp, seed, runs_dir)
        resumes = not retrain and resumable(folder)
        print(f"{spec.label}, seed {seed}: " + ("resuming its interrupted training" if resumes else f"training ({why})")
              + (f", from {spec.parent.label}" if start is not None else ""))
    seed_everything(seed)
    module = spec.build()
    if start is not None:
        module.load_state_dict(module.starting_weights(start))
    datamodule = module.make_datamodule(split, seed)
    result = fit(module, datamodule, spec.trained_under(profile), folder, meta={"label": spec.label, "fingerprint": fp},
                 from_checkpoint=start is not None, resume=not retrain)      # an interrupted fit continues
    log_checkpoint(log_name, seed, result.seconds, trained=True)
    events.append(CheckpointEvent(spec.label, seed, True, result.seconds, str(folder)))
    return result


def _log_reuse(spec: RunSpec, fp: dict, seed: int, seconds: float, runs_dir: str | Path | None) -> None:
    """Report a reused checkpoint, and each earlier stage it was trained from, to the main job's runtime table:
    without them, the notebook would have trained the whole chain."""
    while True:
        folder = checkpoint_dir(spec, fp, seed, runs_dir)
        log_checkpoint(f"{fp['dataset']}/{folder.parent.name}", seed, seconds)
        if spec.parent is None:
            return
        spec, fp = spec.parent, fp["parent"]
        saved = checkpoint_dir(spec, fp, seed, runs_dir) / "fit.json"
        if not saved.exists():
            return
        seconds = json.loads(saved.read_text()).get("seconds", float("nan"))


def run(spec: RunSpec, split: LeaveOneOutSplit, profile: Profile, retrain: bool = False,
        runs_dir: str | Path | None = None, verbose: bool = True) -> SeedRuns:
    """Train (or reuse) ``spec`` once per seed, then evaluate each best checkpoint on the test stage.

    ``retrain`` applies to this spec, not to its parents (their checkpoints are reused when they fit).
    """
    fits, per_seed, per_user, by_seed, events = [], {}, {}, {}, []
    for seed in spec.seeds:
        result = fit_or_load(spec, split, profile, seed, retrain, runs_dir, verbose, events)
        with profile.autocast():                 # the test stage on the profile's device, at its precision
            scores = evaluate(result.module, split.test, device=profile.device())
        by_seed[seed] = scores
        for name, values in scores.items():
            per_seed.setdefault(name, []).append(float(values.mean()))
            per_user.setdefault(name, []).append(values)
        fits.append(result)
    return SeedRuns(spec, fits, per_seed, {k: np.mean(v, axis=0) for k, v in per_user.items()}, by_seed, events)


def choose_on_validation(candidates: dict[Any, SeedRuns]) -> Any:
    """The key of the candidate with the best mean validation NDCG@10 over the seeds every candidate has (never the
    test): the rule every grid follows, the study's included (``choice.choose``)."""
    from minirec.experiments.choice import choose

    decided = choose({key: dict(zip(runs.seeds, runs.val_ndcg10)) for key, runs in candidates.items()},
                     seeds=set.intersection(*(set(runs.seeds) for runs in candidates.values())))
    return decided.chosen


def run_many(specs, split: LeaveOneOutSplit, profile: Profile, retrain: bool = False, *,
             enabled: bool = True, table: ResultsTable | None = None, dataset: str | None = None,
             notes: str = "", unrecorded: tuple[str, ...] = ()) -> dict[str, SeedRuns]:
    """Train (or reuse) each spec and print its summary; with ``table``, record each under its label (but the
    ``unrecorded`` labels: runs recorded elsewhere, e.g. a headline trained again on other seeds). ``enabled``
    False (a profile without these runs): train nothing, and say which runs the study profile would train.
    Returns label -> runs."""
    specs = list(specs.values()) if isinstance(specs, dict) else list(specs)
    if not enabled:
        print(f"profile {profile.name!r} skips these runs; profile = 'study' trains: {[s.label for s in specs]}")
        return {}
    out = {}
    for spec in specs:
        out[spec.label] = runs = run(spec, split, profile, retrain)
        if table is not None and spec.label not in unrecorded:
            record(table, dataset, runs, profile, notes=notes)
        print(runs.summary())
    return out


def record(table: ResultsTable, dataset: str, runs: SeedRuns, profile: Profile, notes: str = "", *,
           method: str | None = None, variant: str | None = None, chosen: str | None = None) -> None:
    """Upsert a run's test ranking metrics (mean ± std over its seeds) under its label (or under ``method``, with
    the ``variant`` measured and what it was ``chosen`` on: fields of the record, see ``ResultsTable.record``)."""
    note = f"epochs {[f.epochs for f in runs.fits]}" + (f"; {notes}" if notes else "")
    table.record(dataset, method or runs.label, {m: runs.per_seed[m] for m in RANKING_METRICS}, profile.name,
                 seeds=runs.seeds, notes=note, variant=variant, chosen=chosen)


def compare_against(table: ResultsTable, dataset: str, name: str, per_user: dict[str, np.ndarray],
                    references: dict[str, dict[str, np.ndarray]], profile: Profile,
                    metric_names: Sequence[str] = ("ndcg@10",), *, variant: str | None = None,
                    chosen: str | None = None) -> list:
    """Paired bootstraps over users of ``name`` (its ``variant``, ``chosen`` on what) against each reference;
    recorded, printed and returned."""
    from minirec.experiments.results import display_name
    from minirec.metrics import paired_bootstrap

    results, shown = [], display_name({"method": name, "variant": variant, "chosen": chosen})
    with table.writing_once():
        for m in metric_names:
            for other, ref in references.items():
                res = paired_bootstrap(per_user[m], ref[m], m, n_boot=profile.n_boot)
                table.compare(dataset, name, other, res, profile.name, variant_a=variant, chosen_a=chosen)
                print(res.verdict(shown, other))
                results.append(res)
    return results


def record_choice_of_runs(table: ResultsTable, dataset: str, method: str, candidates: dict[str, SeedRuns],
                          references: dict[str, dict[str, np.ndarray]], profile: Profile,
                          metric_names: Sequence[str] = ("ndcg@10",)) -> tuple[str, list]:
    """A notebook's grid: choose among ``candidates`` (variant -> its runs) on validation (``choose_on_validation``,
    the study's rule), then record the chosen variant's test rows under ``method`` (``chosen="validation"``) and
    compare it with each reference. Returns the chosen variant and the comparisons."""
    chosen = choose_on_validation(candidates)
    runs = candidates[chosen]
    typed = {"variant": chosen, "chosen": "validation"}
    record(table, dataset, runs, profile, notes=f"chosen from {list(candidates)} by mean validation NDCG@10",
           method=method, **typed)
    return chosen, compare_against(table, dataset, method, runs.per_user, references, profile, metric_names, **typed)
