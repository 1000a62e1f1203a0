"""The experiment runner: checkpoints are reused only when everything that made them is the same."""
import json

import numpy as np
import torch
import pytest

from minirec.data.dataset import hold_out_users, leave_one_out
from minirec.experiments import runner as experiments
from minirec.experiments.pipeline import job_saved_seconds, reused_checkpoints, trained_checkpoints
from minirec.experiments.results import HELD_OUT_USERS
from minirec.experiments.runner import RunSpec, choose_on_validation, run
from minirec.models.generative import GenerativeRecommender, GenRecConfig
from minirec.profiles import FAMILIES, PROFILES, get_profile, with_recipe
from minirec.sids.semantic_ids import shuffled_sid_table

TINY = dict(hidden_size=32, intermediate_size=64, head_dim=8)


@pytest.fixture(scope="module")
def setup(synthetic, synthetic_sids):
    split = leave_one_out(synthetic)
    table = synthetic_sids
    spec = RunSpec("TIGER-mini", GenerativeRecommender, GenRecConfig(max_items=6, text_vocab_size=50,
                                                                     backbone_overrides=TINY),
                   table, synthetic.items["text"].tolist())
    return split, table, spec, with_recipe(get_profile("smoke"), "generative", max_epochs=1)


def test_same_settings_reuse_the_checkpoint_and_log_it(setup, tmp_path, monkeypatch, capsys):
    split, _, spec, profile = setup
    first = run(spec, split, profile, runs_dir=tmp_path)
    log = tmp_path / "reused.jsonl"
    monkeypatch.setenv("MINIREC_REUSE_LOG", str(log))
    again = run(spec, split, profile, runs_dir=tmp_path)
    assert "reusing the checkpoint" in capsys.readouterr().out
    assert again.per_seed == first.per_seed and again.fits[0].epochs == first.fits[0].epochs
    (key, seconds), = reused_checkpoints(str(log)).items()
    assert key[1] == 0 and seconds == pytest.approx(first.fits[0].seconds) and seconds > 0


def test_reusing_a_later_stage_logs_the_training_of_every_earlier_stage(setup, tmp_path, monkeypatch):
    """A notebook that reuses stage 2 would, from scratch, have trained stage 1 first: both count as saved."""
    split, _, spec, profile = setup
    second = spec.then("TIGER-mini, stage 2")
    first_run, second_run = run(spec, split, profile, runs_dir=tmp_path), run(second, split, profile, runs_dir=tmp_path)
    log = tmp_path / "reused.jsonl"
    monkeypatch.setenv("MINIREC_REUSE_LOG", str(log))
    run(second, split, profile, runs_dir=tmp_path)
    saved = reused_checkpoints(str(log))
    assert len(saved) == 2
    assert sorted(saved.values()) == pytest.approx(sorted([first_run.fits[0].seconds, second_run.fits[0].seconds]))


def test_a_rebuilt_sid_table_retrains_and_says_why(setup, synthetic, tmp_path, capsys):
    split, table, spec, profile = setup
    run(spec, split, profile, runs_dir=tmp_path)
    capsys.readouterr()
    other = spec.variant("TIGER-mini", sid_table=shuffled_sid_table(table, synthetic, seed=1))
    run(other, split, profile, runs_dir=tmp_path)
    out = capsys.readouterr().out
    assert "training (the checkpoint under this label was made with another sid_table)" in out
    assert len(list(tmp_path.glob("checkpoints/synthetic/GenerativeRecommender-*"))) == 2


def test_another_recipe_or_config_retrains(setup, tmp_path, capsys):
    split, _, spec, profile = setup
    run(spec, split, profile, runs_dir=tmp_path)
    capsys.readouterr()
    run(spec, split, with_recipe(profile, "generative", lr=1e-4), runs_dir=tmp_path)
    assert "another recipe.lr" in capsys.readouterr().out
    run(spec.variant("TIGER-mini", attention_dropout=0.0), split, profile, runs_dir=tmp_path)
    assert "another config.attention_dropout" in capsys.readouterr().out


def test_retrain_ignores_a_matching_checkpoint(setup, tmp_path, capsys):
    split, _, spec, profile = setup
    run(spec, split, profile, runs_dir=tmp_path)
    run(spec, split, profile, runs_dir=tmp_path, retrain=True)
    assert "training (retrain=True)" in capsys.readouterr().out
    fit_json = next(tmp_path.glob("checkpoints/synthetic/*/seed0/fit.json"))
    assert json.loads(fit_json.read_text())["label"] == "TIGER-mini"


def test_choose_on_validation_never_reads_the_test(setup, tmp_path):
    split, _, spec, profile = setup
    a = run(spec, split, profile, runs_dir=tmp_path)
    b = run(spec.variant("TIGER-mini, no dropout", attention_dropout=0.0), split, profile, runs_dir=tmp_path)
    a.fits[0].best_val_ndcg10, b.fits[0].best_val_ndcg10 = 0.1, 0.2
    a.per_seed["ndcg@10"], b.per_seed["ndcg@10"] = [0.9], [0.0]      # the test would choose a
    assert choose_on_validation({"a": a, "b": b}) == "b"


def test_profiles_hold_recipes_not_architecture():
    for profile in PROFILES.values():
        assert set(profile.recipes) == set(FAMILIES)
        for family, overrides in profile.architecture.items():
            assert not set(overrides) & {"lr", "weight_decay", "max_epochs", "patience", "batch_size"}
    assert get_profile("course").name == "course" and "study" in PROFILES and "gpu" in PROFILES
    with pytest.raises(ValueError, match="unknown profile 'cpu'"):
        get_profile("cpu")
    assert np.isfinite(get_profile("study").recipe("generative").lr)
    # OneRec-Think's stages get TIGER-mini's budget where numbers are compared; the warm-up has no weight decay
    assert get_profile("study").recipe("onerec") == get_profile("study").recipe("generative")
    assert all(p.recipe("warmup").weight_decay == 0 for p in PROFILES.values())
    # a stage that starts from a checkpoint fine-tunes: a warm-up to a lower peak than Base's from-scratch recipe, one
    # of the rates chosen among on validation; GRPO warms up too
    from minirec.profiles import FINETUNE_RATES
    for p in PROFILES.values():
        tune, scratch = p.recipe("finetune"), p.recipe("onerec")
        assert tune.lr < scratch.lr and tune.lr in FINETUNE_RATES and tune.warmup_steps > 0
        assert p.recipe("rl").warmup_steps > 0
    assert get_profile("gpu").arch("onerec")["backbone"] == "smollm2-135m"    # a real pretrained language model
    study = get_profile("study")
    for p in (study, get_profile("gpu")):       # GRPO's update budget, all of it run
        rl = p.recipe("rl")
        assert rl.max_epochs * -(-64 // rl.batch_size) >= 2000 and rl.patience >= rl.max_epochs


def test_a_profile_overrides_only_real_config_fields_and_never_repeats_a_default():
    """``Profile.architecture`` changes a model's config: each key must be a field of every config that reads the
    family's overrides, and a value equal to the config's own default is a second copy of that default."""
    from dataclasses import fields
    from minirec.agent.model import ShopXConfig
    from minirec.reasoning.onerec import OneRecConfig
    from minirec.reasoning.s2gr import S2GRConfig
    from minirec.models.sasrec import SASRecConfig
    from minirec.profiles import data_size_fields
    from minirec.reasoning.grpo import GRPOConfig
    readers = {"generative": (GenRecConfig, S2GRConfig, OneRecConfig), "sasrec": (SASRecConfig,),
               "agent": (ShopXConfig,), "rl": (GRPOConfig,), "onerec": (OneRecConfig,), "pretrained": (OneRecConfig,)}
    # the fields that size data, not architecture: declared once, on the configs
    assert data_size_fields(ShopXConfig) == {"train_per_kind", "examples_per_epoch", "val_per_kind"}
    assert data_size_fields(GRPOConfig) == {"rl_prompts", "group_size", "rl_beam"}    # none of the SFT stages' data
    assert not data_size_fields(GenRecConfig) and not data_size_fields(SASRecConfig)
    for profile in PROFILES.values():
        for kind, overrides_by_family in (("architecture", profile.architecture), ("data_sizes", profile.data_sizes)):
            assert set(overrides_by_family) <= set(readers), f"{profile.name}: a family no config reads"
            for family, overrides in overrides_by_family.items():
                for config in readers[family]:
                    defaults = {f.name: f.default for f in fields(config)}
                    unknown = set(overrides) - set(defaults)
                    assert not unknown, f"{profile.name}.{family}: {sorted(unknown)} are not fields of {config.__name__}"
                    repeats = [k for k, v in overrides.items() if defaults[k] == v]
                    assert not repeats, f"{profile.name}.{family} repeats {config.__name__}'s defaults {repeats}"
                    sizing = set(overrides) & data_size_fields(config)
                    assert sizing == (set(overrides) if kind == "data_sizes" else set()), \
                        f"{profile.name}.{kind}[{family}] mixes data sizes and architecture: {sorted(overrides)}"


def test_reusing_a_checkpoint_trained_in_the_same_process_is_not_logged_as_a_saving(setup, tmp_path, monkeypatch):
    split, _, spec, profile = setup
    log = tmp_path / "reused.jsonl"
    monkeypatch.setenv("MINIREC_REUSE_LOG", str(log))
    run(spec.variant("TIGER-mini, grid"), split, profile, runs_dir=tmp_path)
    run(spec, split, profile, runs_dir=tmp_path)          # same fingerprint: reused, but trained just now
    assert reused_checkpoints(str(log)) == {}
    (name, seed), = trained_checkpoints(str(log))
    assert seed == 0 and name.count("/") == 1            # <dataset>/<model>-<fingerprint>


def test_a_job_counts_no_saving_for_checkpoints_it_trained_itself():
    a, b = ("ml/A", 0), ("ml/B", 0)
    logs = [({}, {a}),                     # notebook 1 trains A
            ({a: 100.0, b: 30.0}, set()),  # notebook 2 reuses A (trained by this job) and B (made before it)
            ({b: 30.0}, set())]            # notebook 3 reuses B again: counted once
    assert job_saved_seconds(logs) == 30.0
    assert job_saved_seconds([({a: 100.0}, set())]) == 100.0


def test_plateau_schedule_halves_the_lr_after_stale_epochs_and_records_the_cuts(setup, tmp_path):
    """lr 0: validation never improves after the first epoch, so with decay_patience 1 every later epoch cuts."""
    split, _, spec, profile = setup
    flat = with_recipe(profile, "generative", lr=0.0, warmup_steps=0, max_epochs=4, patience=10,
                       schedule="plateau", decay_patience=1, decay_factor=0.5)
    result = run(spec, split, flat, runs_dir=tmp_path).fits[0]
    meta = json.loads(next(tmp_path.glob("checkpoints/synthetic/*/seed0/fit.json")).read_text())
    assert result.epochs == 4 and meta["lr_cut_epochs"] == [1, 2, 3]
    assert result.module.lr_scale == pytest.approx(0.125)


def test_plateau_decay_counts_only_epochs_without_a_new_best():
    from types import SimpleNamespace
    from minirec.training import PlateauDecay, optimizer_and_schedule
    from minirec.profiles import Recipe

    module = SimpleNamespace(lr_scale=1.0)
    decay = PlateauDecay("val_ndcg10", decay_patience=2, decay_factor=0.5)
    for epoch, value in enumerate([0.1, 0.2, 0.2, 0.15, 0.3, 0.3, 0.3, 0.1]):
        decay.on_validation_end(SimpleNamespace(callback_metrics={"val_ndcg10": value}, current_epoch=epoch), module)
    assert decay.cuts == [3, 6] and module.lr_scale == 0.25
    recipe = Recipe(max_epochs=1, patience=1, batch_size=1, lr=1.0, warmup_steps=2, schedule="plateau")
    sched = optimizer_and_schedule([torch.nn.Parameter(torch.zeros(1))], recipe,
                                   scale=lambda: module.lr_scale)["lr_scheduler"]["scheduler"]
    assert [sched.lr_lambdas[0](s) for s in (0, 1, 2, 50)] == [0.5, 1.0, 0.25, 0.25]
    with pytest.raises(ValueError, match="decay_factor"):
        PlateauDecay("val_ndcg10", decay_patience=2, decay_factor=1.5)


def test_study_pieces_round_trip_and_assemble_against_tiger(setup, tmp_path):
    from minirec.experiments import breakdown
    from minirec.experiments import study
    from minirec.experiments.runner import digest, fingerprint
    from minirec.experiments.results import ResultsTable

    split, _, spec, profile = setup
    other = spec.variant("Other", attention_dropout=0.0)
    runs_dir, figs = tmp_path / "runs", tmp_path / "figs"
    made = {(s.label, seed): study.train_piece(s, split, profile, seed, figs, runs_dir)
            for s in (spec, other) for seed in (0, 1)}
    again = study.train_piece(spec, split, profile, 0, figs, runs_dir)          # reuses the checkpoint
    np.testing.assert_array_equal(again.per_user["ndcg@10"], made["TIGER-mini", 0].per_user["ndcg@10"])
    pieces = study.load_pieces("synthetic", figs)
    assert len(pieces) == 4
    digests = {(s.label, None): digest(fingerprint(s, split, profile)) for s in (spec, other)}
    fresh, held_out, stale = study.current_pieces(pieces, {**digests, ("Other", None): "made-with-other-settings"})
    assert set(fresh) == {"TIGER-mini"} and {p.label for p in stale} == {"Other"} and not held_out
    fresh, _, stale = study.current_pieces(pieces, digests)
    assert not stale and sorted(fresh["Other"]) == [0, 1]
    table = ResultsTable(figs)
    summary = study.assemble(fresh, table, split, profile, n_boot=50)
    record = table.get("synthetic", "Other", "ndcg@10", profile=profile.name)
    expected = np.mean([made["Other", s].per_user["ndcg@10"].mean() for s in (0, 1)])
    assert record["seeds"] == [0, 1] and record["mean"] == pytest.approx(expected)
    (comparison,) = [c for c in table.comparisons if c["a"] == "Other" and c["metric"] == "ndcg@10"]
    assert comparison["b"] == "TIGER-mini" and comparison["n_users"] == len(split.test)
    assert comparison["n_seeds"] == 2, "a study comparison resamples the seeds both have, then users"
    assert summary["Other"]["common_seeds"] == [0, 1] and len(summary["Other"]["epoch_seconds_ratio"]) == 2
    assert table.get("synthetic", "Other", "test_over_val", "val_test", profile.name)
    by_history = summary["breakdown"]["by_history"]
    assert set(by_history["model"]) == {"Popularity", "TIGER-mini", "Other"} and summary["breakdown"]["seeds"]["Other"] == [0, 1]
    long = by_history[(by_history["group"] == "long") & (by_history["model"] == "Other")]
    keep = breakdown.history_groups(split.test) == "long"
    assert long["mean"].item() == pytest.approx(np.mean([made["Other", s].per_user["ndcg@10"][keep].mean()
                                                         for s in (0, 1)]))
    kept = table.get("synthetic", "Other", "ndcg@10", "by_history", profile.name, group="long")
    (interval,) = [c for c in table.comparisons if (c["a"], c.get("group")) == ("Other", "long")]   # inside the group
    assert interval["b"] == "TIGER-mini" and interval["n_users"] == keep.sum() and interval["n_seeds"] == 2
    assert "| synthetic | Other [long] | TIGER-mini [long] |" in table.markdown()     # names rendered from the fields
    assert interval["diff"] == pytest.approx(long["− TIGER-mini"].item())
    shown = study.recorded_breakdown(table, "synthetic", profile.name).set_index(["model", "group"])
    assert shown.loc[("Other", "long"), "diff"] == pytest.approx(interval["diff"]) and ("TIGER-mini", "long") not in shown.index
    assert shown.loc[("Other", "long"), "verdict"] == long["verdict"].item()
    assert kept["seeds"] == [0, 1] and kept["mean"] == pytest.approx(long["mean"].item())
    # a checkpoint chosen on held-out users: compared with the usual choice on the test users both have
    held = hold_out_users(split, share=0.2)
    made_held = study.train_piece(other, held, profile, 0, figs, runs_dir, protocol=HELD_OUT_USERS)
    np.testing.assert_array_equal(made_held.users, held.test.users)
    (loaded,) = [p for p in study.load_pieces("synthetic", figs) if p.protocol == HELD_OUT_USERS]
    assert loaded.label == "Other" and loaded.meta["protocol"] == HELD_OUT_USERS
    np.testing.assert_array_equal(loaded.user_index(), held.test.users)
    both = {**digests, ("Other", HELD_OUT_USERS): loaded.digest}
    fresh, held_out, _ = study.current_pieces(study.load_pieces("synthetic", figs), both)
    assert set(held_out) == {"Other"} and set(fresh) == {"TIGER-mini", "Other"}
    summary = study.assemble(fresh, table, split, profile, n_boot=50, held=held_out)
    vs_usual = summary["held_out"]["Other"]["vs_usual_validation"]["ndcg@10"]
    assert vs_usual.n_users == len(held.test) and "vs_reference" not in summary["held_out"]["Other"]
    row = table.get("synthetic", "Other", "ndcg@10", profile=profile.name, protocol=HELD_OUT_USERS)
    assert row["values"] == [pytest.approx(made_held.per_user["ndcg@10"].mean())]
    (versus,) = [c for c in table.comparisons if c.get("protocol_a") == HELD_OUT_USERS and c["metric"] == "ndcg@10"]
    assert (versus["a"], versus["b"], versus.get("protocol_b")) == ("Other", "Other", None)
    expected = made_held.per_user["ndcg@10"].mean() - made["Other", 0].per_user["ndcg@10"][held.test.users].mean()
    assert vs_usual.diff == pytest.approx(expected)
    broken = study.piece_path("synthetic", "Broken", 0, figs)
    broken.write_bytes(b"not a piece")
    with pytest.raises(ValueError, match="Broken__seed0.npz is unreadable"):
        study.load_pieces("synthetic", figs)


def test_study_chooses_the_s2gr_setting_on_validation_and_screens_one_seed_settings(tmp_path):
    from dataclasses import replace as dc_replace
    from minirec.experiments import study
    from minirec.experiments.specs import grids
    from minirec.metrics import paired_bootstrap
    from minirec.experiments.results import RANKING_METRICS, ResultsTable

    profile = dc_replace(get_profile("smoke"), seeds=(0, 1))
    grid = grids(profile)[0]
    assert grid.method == "S²GR-mini" and grid.against == "TIGER-mini" and len(grid.candidates) == 7
    rng = np.random.default_rng(0)

    def pieces(label, vals, test_level, seeds=(0, 1)):
        return {s: study.Piece(label, s, "d", {m: np.clip(rng.normal(test_level, 0.05, 40), 0, 1)
                                               for m in RANKING_METRICS},
                               {"best_val_ndcg10": v, "epochs": 3, "seconds": 6.0}) for s, v in zip(seeds, vals)}

    fresh = {"TIGER-mini": pieces("TIGER-mini", [0.1, 0.1], 0.2),
             "S²GR-mini": pieces("S²GR-mini", [0.10, 0.12], 0.9),            # the best test, not the best val
             "S²GR-mini (no alignment)": pieces("S²GR-mini (no alignment)", [0.13, 0.13], 0.1),
             "S²GR-mini (soft targets, τ = 0.5)": pieces("S²GR-mini (soft targets, τ = 0.5)", [0.02, 0.02], 0.1),
             "S²GR-mini, normed feedback": pieces("S²GR-mini, normed feedback", [0.5], 0.1, seeds=(0,)),
             "S²GR-mini (λ = 0.1)": pieces("S²GR-mini (λ = 0.1)", [0.05], 0.1, seeds=(0,)),
             "S²GR-mini (soft targets, τ = 0.1)": pieces("S²GR-mini (soft targets, τ = 0.1)", [0.125], 0.1, seeds=(1,))}
    table = ResultsTable(tmp_path)
    # the headline's own rows (recorded as a model of its own) must outlive every choice
    table.record("synthetic", "S²GR-mini", {"ndcg@10": [0.3, 0.3]}, profile.name, seeds=[0, 1])
    table.compare("synthetic", "S²GR-mini", "TIGER-mini", paired_bootstrap(np.ones(5), np.zeros(5), n_boot=20),
                  profile.name)
    choice = study.record_choice(grid, fresh, table, "synthetic", profile, n_boot=50)
    assert choice["chosen"] == "S²GR-mini (no alignment)"                     # normed feedback has one seed only
    # the seed noise pools (0.10, 0.12), (0.13, 0.13) and (0.02, 0.02); each one-seed setting against the leader
    assert choice["margin"] == pytest.approx(np.sqrt(np.var([0.10, 0.12], ddof=1) / 3)) and choice["provisional"]
    status = {n: row["status"] for n, row in choice["candidates"].items()}
    assert status["S²GR-mini, normed feedback"].startswith("pending")         # far ahead on its seed: needs the rest
    assert status["S²GR-mini (λ = 0.1)"].startswith("screened out")           # 0.08 behind on seed 0
    assert status["S²GR-mini (soft targets, τ = 0.1)"].startswith("pending")  # 0.005 behind on seed 1: within noise
    assert status["S²GR-mini"] == "a candidate" and status["S²GR-mini (no alignment)"] == "chosen"
    typed = dict(variant="no alignment", chosen="validation")
    assert choice["name"] == "S²GR-mini (no alignment, chosen on validation)"
    assert choice["vs_against"]["ndcg@10"].diff < 0
    expected = np.mean([p.per_user["ndcg@10"].mean() for p in fresh["S²GR-mini (no alignment)"].values()])
    assert table.get("synthetic", "S²GR-mini", "ndcg@10", profile=profile.name, **typed)["mean"] == \
        pytest.approx(expected)
    assert "| synthetic | S²GR-mini (no alignment, chosen on validation) | 2 |" in table.markdown()
    assert table.get("synthetic", "S²GR-mini", "ndcg@10", profile=profile.name)["mean"] == 0.3   # untouched
    assert table.get("synthetic", "S²GR-mini", "val_ndcg10", "s2gr_choice", profile.name)["mean"] == pytest.approx(0.11)
    frame, tiger, seed_sd = study.recorded_choice(table, "synthetic", profile.name)
    assert seed_sd == pytest.approx(choice["margin"]) and frame.loc["S²GR-mini (no alignment)", "vs chosen"] == 0
    assert frame.loc["S²GR-mini", "vs chosen"] == pytest.approx(-0.02)            # (0.10 - 0.13 + 0.12 - 0.13) / 2
    assert frame.loc["S²GR-mini (λ = 0.1)", "vs chosen"] == pytest.approx(-0.08)  # on the one seed it has
    assert tiger is None and frame.loc["S²GR-mini (no alignment)", "test NDCG@10"] == pytest.approx(expected)
    assert frame["test NDCG@10"].notna().sum() == 1 and frame.loc["S²GR-mini (λ = 0.1)", "status"].startswith("screened")
    assert frame.loc["S²GR-mini", "val NDCG@10"] == pytest.approx(0.11)
    assert study.recorded_choice(ResultsTable(tmp_path / "empty"), "synthetic")[0].empty
    for name in ("S²GR-mini, normed feedback", "S²GR-mini (soft targets, τ = 0.1)"):   # no setting left pending
        del fresh[name]
    later = study.record_choice(grid, fresh, ResultsTable(tmp_path / "c"), "synthetic", profile, 50)
    assert later["provisional"] and later["candidates"].keys() < set(grid.candidates)   # two were never trained
    for name in set(grid.candidates) - set(fresh):
        fresh[name] = pieces(name, [0.01, 0.01], 0.1)
    assert not study.record_choice(grid, fresh, ResultsTable(tmp_path / "d"), "synthetic", profile, 50)["provisional"]
    one_seed = {"S²GR-mini (λ = 0.1)": fresh["S²GR-mini (λ = 0.1)"]}                  # nothing complete: no choice
    assert study.record_choice(grid, one_seed, ResultsTable(tmp_path / "b"), "synthetic", profile, 50)["chosen"] is None

    # a later round changes the choice: what the earlier choice wrote leaves the table, and only the new one has rows
    table.record("synthetic", "S²GR-mini (no alignment)", {"ndcg@10": [0.1]}, profile.name, seeds=[0],
                 table="by_popularity", group="tail")
    table.compare("synthetic", "S²GR-mini (no alignment)", "TIGER-mini",
                  paired_bootstrap(np.ones(5), np.zeros(5), n_boot=20), profile.name, group="tail")
    fresh["S²GR-mini (λ = 0.1)"] = pieces("S²GR-mini (λ = 0.1)", [0.2, 0.2], 0.1)
    assert study.record_choice(grid, fresh, table, "synthetic", profile, n_boot=50)["chosen"] == "S²GR-mini (λ = 0.1)"
    assert table.get("synthetic", "S²GR-mini", "ndcg@10", profile=profile.name, **typed) is None
    assert not [c for c in table.comparisons if c.get("variant_a") == "no alignment"]
    assert table.get("synthetic", "S²GR-mini (no alignment)", "ndcg@10", "by_popularity", profile.name,
                     group="tail") is None
    assert not [c for c in table.comparisons if c["a"] == "S²GR-mini (no alignment)"]
    frame = study.recorded_choice(table, "synthetic", profile.name).frame
    assert frame.index[frame["test NDCG@10"].notna()].tolist() == ["S²GR-mini (λ = 0.1)"]
    assert table.get("synthetic", "S²GR-mini", "ndcg@10", profile=profile.name, variant="λ = 0.1", chosen="validation")
    headline = [c for c in table.comparisons if c["a"] == "S²GR-mini" and not c.get("chosen_a")]
    assert len(headline) == 1 and table.get("synthetic", "S²GR-mini", "ndcg@10", profile=profile.name)["mean"] == 0.3


def test_one_choice_rule_serves_notebooks_and_the_study():
    from minirec.experiments.choice import MISSING, choose

    val = {"a": {0: 0.2, 1: 0.4}, "b": {0: 0.3, 1: 0.2}, "c": {0: 0.9}}
    decided = choose(val, seeds=(0, 1), candidates=["a", "b", "c", "d"])
    assert decided.chosen == "a" and decided.val == {"a": pytest.approx(0.3), "b": pytest.approx(0.25),
                                                     "c": pytest.approx(0.9)}
    assert decided.status["c"].startswith("pending") and decided.status["d"] == MISSING and decided.provisional
    assert choose(val, seeds=(0,)).chosen == "c"                    # on seed 0 alone every candidate is complete
    assert choose({"x": {0: 0.1}, "y": {0: 0.1}}).chosen == "x"     # ties go to the first


def test_study_compares_each_onerec_stage_with_the_one_before_and_records_its_diagnostics(setup, tmp_path):
    from minirec.experiments import study
    from minirec.experiments.results import RANKING_METRICS, ResultsTable

    split, *_ = setup
    rng = np.random.default_rng(0)
    n = len(split.test)

    def pieces(label, level, seeds=(0, 1), **meta):
        return {s: study.Piece(label, s, "d", {m: np.clip(rng.normal(level, 0.05, n), 0, 1) for m in RANKING_METRICS},
                               {"best_val_ndcg10": level, "epochs": 2, "seconds": 4.0, **meta}) for s in seeds}

    captions = {"held-out items": {"genre_accuracy": 0.5, "title_exact": 0.0},
                "captioned in training": {"genre_accuracy": 0.9, "title_exact": 0.25}}
    fresh = {study.BASE: pieces(study.BASE, 0.2), study.SASREC: pieces(study.SASREC, 0.5),
             study.ALIGN: pieces(study.ALIGN, 0.3, captions=captions),
             study.REASON: pieces(study.REASON, 0.4, seeds=(0,), captions=captions,
                                  rationales={"names a target genre": 0.75, "names every target genre": 0.5})}
    table = ResultsTable(tmp_path)
    summary = study.assemble(fresh, table, split, get_profile("smoke"), n_boot=50)
    assert set(summary[study.ALIGN]["vs_steps"]) == {study.BASE, study.SASREC}
    assert set(summary[study.REASON]["vs_steps"]) == {study.ALIGN, study.BASE, study.SASREC}
    step = summary[study.REASON]["vs_steps"][study.ALIGN]["ndcg@10"]        # on the one seed both have
    assert step.diff == pytest.approx(fresh[study.REASON][0].per_user["ndcg@10"].mean()
                                      - fresh[study.ALIGN][0].per_user["ndcg@10"].mean())
    assert {(c["a"], c["b"]) for c in table.comparisons} >= {(a, b) for a, b in study.STEPS if a in fresh and b in fresh}
    row = table.get("synthetic", f"{study.ALIGN}: captions of held-out items", "genre_accuracy", "stage_diagnostics",
                    "smoke")
    assert row["seeds"] == [0, 1] and row["mean"] == pytest.approx(0.5)
    row = table.get("synthetic", f"{study.REASON}: test rationales", "names_target_genre", "stage_diagnostics", "smoke")
    assert row["seeds"] == [0] and row["mean"] == pytest.approx(0.75)
    assert table.get("synthetic", f"{study.BASE}: test rationales", "names_target_genre", "stage_diagnostics",
                     "smoke") is None
    # beside the captions, the floor they must beat: always the genre most common among the taught items
    from collections import Counter
    from minirec.reasoning.itemic import caption_groups
    from minirec.reasoning.onerec import OneRecConfig
    genres = split.dataset.items["genres"]
    groups = caption_groups(split.dataset.n_items, OneRecConfig.caption_holdout)
    counts = Counter(g for i in groups["captioned in training"] for g in genres.iloc[i])
    common = next(r["method"] for r in table.records if r["method"].startswith("always '")).split("'")[1]
    assert counts[common] == max(counts.values())
    row = table.get("synthetic", f"always '{common}' (no model): captions of held-out items", "genre_accuracy",
                    "stage_diagnostics", "smoke")
    assert row["mean"] == pytest.approx(np.mean([common in genres.iloc[i] for i in groups["held-out items"]]))
    # Think-Ahead: its latency over the fast model's, and the share of the reasoning model's gain it keeps
    serving = {"fast model alone": 0.01, "reasoning model alone": 0.08, "Think-Ahead offline": 0.07,
               "Think-Ahead online": 0.011}
    fresh[study.REFERENCE] = pieces(study.REFERENCE, 0.1)
    fresh[study.THINK_AHEAD] = pieces(study.THINK_AHEAD, 0.35, seeds=(0,), serving=serving, levels=2, prefixes=10,
                                      epochs=0, seconds=0.0)
    summary = study.assemble(fresh, table, split, get_profile("smoke"), n_boot=50)
    assert summary[study.THINK_AHEAD]["serving"]["latency_ratio"] == [pytest.approx(1.1)]
    assert "epoch_seconds_ratio" not in summary[study.THINK_AHEAD]
    mean = {k: fresh[k][0].per_user["ndcg@10"].mean() for k in (study.REFERENCE, study.REASON, study.THINK_AHEAD)}
    kept = table.get("synthetic", "Think-Ahead vs its two models (study pieces)", "share_of_gain_kept", "think_ahead",
                     "smoke")
    assert kept["mean"] == pytest.approx((mean[study.THINK_AHEAD] - mean[study.REFERENCE])
                                         / (mean[study.REASON] - mean[study.REFERENCE]))
    assert (study.THINK_AHEAD, study.REASON) in {(c["a"], c["b"]) for c in table.comparisons}


def test_study_compares_alignment_on_the_pretrained_model_inside_each_popularity_group(setup, tmp_path):
    """The pretrained model's question: alignment against its Base on every test user and inside each popularity
    group of the targets (the tail's interval is the two-level bootstrap on that group's users only), and the held-out
    captions against the floor, per seed."""
    from minirec.experiments import breakdown, study
    from minirec.experiments.results import RANKING_METRICS, ResultsTable
    from minirec.experiments.specs import PRETRAINED_ALIGN, PRETRAINED_BASE
    from minirec.metrics import paired_bootstrap

    split, *_ = setup
    rng = np.random.default_rng(1)
    n = len(split.test)

    def pieces(label, level, **meta):
        return {s: study.Piece(label, s, "d", {m: np.clip(rng.normal(level, 0.05, n), 0, 1) for m in RANKING_METRICS},
                               {"best_val_ndcg10": level, "epochs": 2, "seconds": 4.0, **meta},
                               np.asarray(split.test.users)) for s in (0, 1)}

    gap = {"score": "genre_accuracy", "model": 0.4, "floor": 0.3, "diff": 0.1, "low": 0.02, "high": 0.18,
           "beyond noise": True}
    captions = {"held-out items": {"genre_accuracy": 0.4}, "captioned in training": {"genre_accuracy": 0.6}}
    fresh = {PRETRAINED_BASE: pieces(PRETRAINED_BASE, 0.2),
             PRETRAINED_ALIGN: pieces(PRETRAINED_ALIGN, 0.25, captions=captions, caption_floor_gap=gap)}
    table = ResultsTable(tmp_path)
    summary = study.assemble(fresh, table, split, get_profile("smoke"), n_boot=50)
    groups = breakdown.popularity_groups(split, split.test)
    by_group = summary[PRETRAINED_ALIGN]["vs_by_popularity"]
    assert set(by_group) == set(groups.tolist()) and set(summary[PRETRAINED_ALIGN]["vs_steps"]) == {PRETRAINED_BASE}
    for group, results in by_group.items():
        keep = groups == group
        direct = paired_bootstrap(np.stack([fresh[PRETRAINED_ALIGN][s].per_user["ndcg@10"][keep] for s in (0, 1)]),
                                  np.stack([fresh[PRETRAINED_BASE][s].per_user["ndcg@10"][keep] for s in (0, 1)]),
                                  "ndcg@10", n_boot=50)
        assert results["ndcg@10"].n_users == keep.sum()
        assert (results["ndcg@10"].low, results["ndcg@10"].high) == pytest.approx((direct.low, direct.high))
    recorded = {c["group"] for c in table.comparisons if c["a"] == PRETRAINED_ALIGN and c.get("group")}
    assert recorded == set(groups.tolist())
    row = table.get("synthetic", f"{PRETRAINED_ALIGN}: held-out captions against the floor",
                    "genre_accuracy minus the floor's", "stage_diagnostics", "smoke")
    assert row["seeds"] == [0, 1] and row["mean"] == pytest.approx(0.1) and "[+0.020, +0.180]" in row["notes"]


def test_study_chooses_the_grpo_setting_on_validation_over_the_seeds_every_candidate_has(setup, tmp_path, synthetic,
                                                                                         synthetic_sids):
    from minirec.experiments import study
    from minirec.experiments.results import RANKING_METRICS, ResultsTable

    split, *_ = setup
    profile = get_profile("smoke")
    rng = np.random.default_rng(1)
    n = len(split.test)

    def pieces(label, vals, level):
        return {s: study.Piece(label, s, "d", {m: np.clip(rng.normal(level, 0.05, n), 0, 1) for m in RANKING_METRICS},
                               {"best_val_ndcg10": v, "epochs": 2, "seconds": 4.0}) for s, v in vals.items()}

    (beam, beam_slow, rank, *_) = study.rl_candidates(profile)
    assert study.rl_candidates(profile)[beam_slow] == ("beam", 1e-5) and len(study.rl_candidates(profile)) == 6
    from minirec.experiments.specs import SpecCatalogue
    book = SpecCatalogue(synthetic, profile, synthetic_sids)
    assert book.grpo(beam_slow).trained_under(profile).recipe("rl").lr == 1e-5
    assert book.grpo(beam_slow).recipe == {"rl": {"lr": 1e-5}} and book.onerec().reason.trained_under(profile) is profile
    full = get_profile("study")                  # its alignment stage cuts the lr on plateaus; the diagnostic does not
    cosine = SpecCatalogue(synthetic, full, synthetic_sids).align_cosine().trained_under(full)
    assert full.recipe("onerec").schedule == "plateau" and cosine.recipe("onerec").schedule == "cosine"
    assert cosine.recipe("warmup") == full.recipe("warmup")     # the warm-up it starts from is the headline's
    # a later stage starts with no recipe change of its own; a variant keeps its spec's and adds to them
    assert SpecCatalogue(synthetic, full, synthetic_sids).align_cosine().then("after", stage="reason").recipe == {}
    both = book.grpo(beam_slow).variant("x", recipe={"rl": {"batch_size": 2}})
    assert both.recipe == {"rl": {"lr": 1e-5, "batch_size": 2}}
    labels = list(study.rl_candidates(profile))
    assert study.expand_models(["OneRec-RL-rank", "SASRec"], profile) == [labels[2], labels[3], "SASRec"]
    assert study.expand_models(["OneRec-RL"], profile) == labels
    fresh = {study.REASON: pieces(study.REASON, {0: 0.2, 1: 0.2}, 0.2),
             beam: pieces(beam, {0: 0.1, 1: 0.9}, 0.3),          # best on seed 1, which the others lack
             beam_slow: pieces(beam_slow, {0: 0.3}, 0.25), rank: pieces(rank, {0: 0.2, 1: 0.2}, 0.1)}
    fresh[beam_slow][0].meta["curve"] = [{"epoch": 0, "val_ndcg10": 0.2, "reward": 0.1, "flat_groups": 0.75},
                                         {"epoch": 1, "val_ndcg10": 0.3, "reward": 0.3, "flat_groups": 0.25}]
    table = ResultsTable(tmp_path)
    from minirec.experiments.specs import grids
    grid = next(g for g in grids(profile) if g.method == study.RL)
    choice = study.record_choice(grid, fresh, table, "synthetic", profile, n_boot=50)
    assert choice["chosen"] == beam_slow and choice["seeds"] == [0] and choice["provisional"]   # 3 never trained
    assert choice["name"] == "OneRec-Think + RL (GRPO, beam reward, lr 1e-05, chosen on validation)"
    typed = dict(variant="GRPO, beam reward, lr 1e-05", chosen="validation")
    row = table.get("synthetic", study.RL, "ndcg@10", profile=profile.name, **typed)
    assert row["seeds"] == [0] and row["mean"] == pytest.approx(fresh[beam_slow][0].per_user["ndcg@10"].mean())
    assert choice["vs_against"]["ndcg@10"].diff == pytest.approx(
        fresh[beam_slow][0].per_user["ndcg@10"].mean() - fresh[study.REASON][0].per_user["ndcg@10"].mean())
    assert [c["b"] for c in table.comparisons if c["a"] == study.RL] == [study.REASON] * 2
    assert table.get("synthetic", beam, "val_ndcg10", "rl_choice", profile.name)["mean"] == pytest.approx(0.1)
    # GRPO's training signal beside the choice: epoch means of the reward and of the all-equal groups' share
    assert table.get("synthetic", beam_slow, "flat_groups", "rl_choice", profile.name)["mean"] == pytest.approx(0.5)
    assert table.get("synthetic", beam_slow, "reward", "rl_choice", profile.name)["mean"] == pytest.approx(0.2)
    assert np.isnan(table.get("synthetic", rank, "reward", "rl_choice", profile.name)["mean"])   # no curve kept
    assert study.record_choice(grid, {study.REASON: fresh[study.REASON]}, table, "synthetic", profile, 50)["chosen"] \
        is None
    assert table.get("synthetic", study.RL, "ndcg@10", profile=profile.name, **typed) is None


def test_grpo_candidates_and_diagnostics_stay_out_of_the_breakdown(setup, tmp_path):
    from minirec.experiments import study
    from minirec.experiments.results import RANKING_METRICS, ResultsTable

    split, *_ = setup
    profile = get_profile("smoke")
    rng = np.random.default_rng(2)
    candidate = next(iter(study.rl_candidates(profile)))
    fresh = {label: {0: study.Piece(label, 0, "d", {m: rng.uniform(0, 1, len(split.test)) for m in RANKING_METRICS},
                                    {"best_val_ndcg10": 0.1, "epochs": 1, "seconds": 1.0})}
             for label in (study.REFERENCE, study.REASON, study.ALIGN, study.ALIGN_COSINE, candidate)}
    table = ResultsTable(tmp_path)
    table.record("synthetic", candidate, {"ndcg@10": [0.1]}, profile.name, seeds=[0], table="by_history", group="long")
    summary = study.assemble(fresh, table, split, profile, n_boot=20)
    assert not {candidate, study.ALIGN_COSINE} & set(summary["breakdown"]["by_history"]["model"])
    # the diagnostic is compared with the headline alignment stage it varies
    assert [c["b"] for c in table.comparisons if c["a"] == study.ALIGN_COSINE and c["metric"] == "ndcg@10"] == [
        study.REFERENCE, study.ALIGN]
    assert study.REASON in set(summary["breakdown"]["by_history"]["model"])
    assert table.get("synthetic", candidate, "ndcg@10", "by_history", profile.name, group="long") is None


def test_stage_curves_draw_every_trained_onerec_stage_and_seed():
    from minirec.experiments import study

    def piece(label, seed, curve):
        return study.Piece(label, seed, "d", {"ndcg@10": np.zeros(3)}, {"curve": curve})

    rows = [{"epoch": 0, "val_ndcg10": 0.1, "lr": 1e-3}, {"epoch": 1, "val_ndcg10": 0.2, "lr": 5e-4}]
    fresh = {study.BASE: {0: piece(study.BASE, 0, rows), 1: piece(study.BASE, 1, rows)},
             study.ALIGN_COSINE: {0: piece(study.ALIGN_COSINE, 0, rows)},
             study.THINK_AHEAD: {0: piece(study.THINK_AHEAD, 0, [])},      # served, not trained: no curve
             study.REFERENCE: {0: piece(study.REFERENCE, 0, rows)}}         # not a OneRec-Think stage
    fig = study.stage_curves(fresh)
    assert [line.get_label() for line in fig.axes[0].lines] == [f"{study.BASE}, seed 0", f"{study.BASE}, seed 1",
                                                                 f"{study.ALIGN_COSINE}, seed 0"]
    assert study.stage_curves({study.REFERENCE: fresh[study.REFERENCE]}) is None
    grpo = next(iter(study.rl_candidates(get_profile("smoke"))))
    signal = [{"epoch": 0, "val_ndcg10": 0.1, "lr": 1e-4, "reward": 0.2, "flat_groups": 0.6, "kl": 0.01}]
    fig = study.stage_curves({grpo: {2: piece(grpo, 2, signal)}, **fresh}, (grpo,), study.GRPO_SIGNAL)
    assert [ax.get_title() for ax in fig.axes] == list(study.GRPO_SIGNAL)
    assert [line.get_label() for line in fig.axes[2].lines] == [f"{grpo}, seed 2"]
    assert list(fig.axes[2].lines[0].get_ydata()) == [0.6]


def test_the_profiles_device_reaches_evaluation_and_the_reloaded_weights(setup, tmp_path, monkeypatch):
    """Lightning hands a fitted module back on the CPU; ``run`` must put the best weights on the profile's device and
    evaluate there, for a fresh fit and for a reused checkpoint alike. On a CPU machine the check uses the 'meta'
    device (weights without storage): a device no code path reaches by default."""
    from minirec.profiles import Profile

    split, _, spec, profile = setup
    monkeypatch.setattr(Profile, "device", lambda self: torch.device("meta"))
    seen = []

    def spy(ranker, stage, *args, device=None, **kwargs):
        seen.append((device, next(ranker.parameters()).device))
        return {"ndcg@10": np.zeros(len(stage)), "recall@10": np.zeros(len(stage))}

    monkeypatch.setattr(experiments, "evaluate", spy)
    run(spec, split, profile, runs_dir=tmp_path, verbose=False)         # trains, reloads the best weights
    run(spec, split, profile, runs_dir=tmp_path, verbose=False)         # reuses the checkpoint
    meta = torch.device("meta")
    assert seen == [(meta, meta), (meta, meta)]


def test_accelerator_names_map_to_torch_devices():
    from minirec.profiles import torch_device
    assert torch_device("cpu") == torch.device("cpu") and torch_device("gpu") == torch.device("cuda")
    assert get_profile("gpu").device() == torch.device("cuda") and get_profile("course").device().type == "cpu"
    with pytest.raises(ValueError, match="unknown accelerator 'tpu9'"):
        torch_device("tpu9")
    assert get_profile("course").autocast().__class__.__name__ == "nullcontext"
    assert isinstance(get_profile("gpu", accelerator="cpu").autocast(), torch.autocast)


def test_a_checkpoint_pickled_by_an_older_package_layout_is_trained_anew(setup, tmp_path, monkeypatch, capsys):
    """Modules moved between sub-packages: a checkpoint whose pickled config names an old module path must not crash
    the notebook that finds it; it trains anew and says why."""
    split, _, spec, profile = setup
    run(spec, split, profile, runs_dir=tmp_path)

    def old_layout(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'minirec.generative'", name="minirec.generative")

    monkeypatch.setattr(experiments, "load_fit", old_layout)
    capsys.readouterr()
    again = run(spec, split, profile, runs_dir=tmp_path)
    assert "training (its checkpoint was saved by an older minirec (module 'minirec.generative' has moved))" \
        in capsys.readouterr().out
    assert again.fits[0].epochs >= 1


# ----------------------------------------------------------------------------- the catalogue of experiments
def _notebook_code(name: str) -> str:
    from minirec.experiments.pipeline import NOTEBOOKS_DIR
    (path,) = NOTEBOOKS_DIR.glob(f"{name}_*.ipynb")
    nb = json.loads(path.read_text())
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")


def test_every_study_spec_has_the_fingerprint_of_the_notebook_spec_of_the_same_label(synthetic, synthetic_sids):
    """The study and the notebooks take their specs from one catalogue; a notebook's own parameters (notebook 09's
    prompts per epoch) must leave them the study's, or the two would train different checkpoints under
    one label."""
    import re
    from minirec.experiments import specs as catalogue, study
    from minirec.experiments.runner import fingerprint

    profile = get_profile("smoke")
    split = leave_one_out(synthetic)
    book = catalogue.SpecCatalogue(synthetic, profile, synthetic_sids)
    grpo_sizes = {name: int(re.search(rf"^{name} = (\d+)", _notebook_code("09"), re.M)[1])
                  for name in ("rl_prompts",)}
    chain = book.onerec()
    notebook_specs = {spec.label: spec for spec in [
        book.sasrec_first(split), book.tiger(), book.item_id_tiger(catalogue.ITEM_ID_TIGER_PIECE),
        *(book.s2gr(name) for name in (catalogue.S2GR, *catalogue.S2GR_SETTINGS)),
        chain.base, chain.align, chain.reason, *book.reason_rate_candidates(), book.align_cosine(),
        *(book.grpo(label, **grpo_sizes) for label in book.grpo_candidates())]}
    pretrained = book.pretrained()            # the study's own question (no notebook trains it): the same catalogue
    notebook_specs.update({spec.label: spec for spec in (pretrained.base, pretrained.align)})
    assert pretrained.align.config.backbone == "smollm2-135m" and pretrained.align.parent.label == catalogue.PRETRAINED_WARMUP
    random = book.random_codes()              # notebook 12's H4: the same chain on a shuffled table
    notebook_specs.update({spec.label: spec for spec in (random.base, random.align)})
    assert random.align.parent.label == catalogue.RANDOM_WARMUP and random.reason is None
    assert random.base.sid_table is random.align.sid_table is not synthetic_sids
    assert sorted(map(tuple, random.base.sid_table.codes)) == sorted(map(tuple, synthetic_sids.codes))
    assert not np.array_equal(random.base.sid_table.codes, synthetic_sids.codes)
    studied = study.headline_specs(synthetic, split, profile, sid_table=synthetic_sids)
    assert set(studied) == set(notebook_specs)
    for label, spec in studied.items():
        assert fingerprint(spec, split, profile) == fingerprint(notebook_specs[label], split, profile), label
    # the diagnostic and the GRPO candidates carry their own recipe, and that recipe is in the fingerprint
    study_profile = get_profile("study")
    full = catalogue.SpecCatalogue(synthetic, study_profile, synthetic_sids)
    cosine, align = (fingerprint(spec, split, study_profile) for spec in (full.align_cosine(), full.onerec().align))
    assert cosine["recipe"]["schedule"] == "cosine" != align["recipe"]["schedule"]
    slow = catalogue.grpo_label("beam", 1e-5)
    assert fingerprint(full.grpo(slow), split, study_profile)["recipe"]["lr"] == 1e-5


def test_notebooks_build_no_shared_spec_themselves():
    """Shared runs come from the catalogue: no notebook constructs a RunSpec, and none re-labels a variant with a
    catalogue label (that would be a second definition of the same run)."""
    import re
    from minirec.experiments import specs as catalogue
    from minirec.experiments.pipeline import notebooks

    labels = {v for k, v in vars(catalogue).items() if k.isupper() and isinstance(v, str)}
    labels |= set(catalogue.S2GR_SETTINGS) | set(catalogue.grpo_candidates(get_profile("study")))
    for path in notebooks():
        code = _notebook_code(path.name.split("_")[0])
        assert "RunSpec(" not in code, f"{path.name} builds a RunSpec; take it from minirec.experiments.specs"
        relabelled = [m for m in re.findall(r'\.(?:variant|then)\(\s*"([^"]+)"', code) if m in labels]
        assert not relabelled, f"{path.name} defines catalogue runs again: {relabelled}"


def test_run_reports_which_checkpoints_it_trained_and_which_it_reused(setup, tmp_path):
    """A staged spec trains its parent first; a second run reuses the later stage (its parent is not even loaded)."""
    split, _, spec, profile = setup
    second = spec.then("TIGER-mini, stage 2")
    first = run(second, split, profile, runs_dir=tmp_path, verbose=False)
    assert [(e.label, e.seed, e.trained) for e in first.report] == [("TIGER-mini", 0, True),
                                                                   ("TIGER-mini, stage 2", 0, True)]
    assert first.report[1].seconds == pytest.approx(first.fits[0].seconds)
    again = run(second, split, profile, runs_dir=tmp_path, verbose=False)
    assert [(e.label, e.trained) for e in again.report] == [("TIGER-mini, stage 2", False)]
    assert again.report[0].seconds == pytest.approx(first.fits[0].seconds) and again.report[0].folder == first.report[1].folder


def test_run_many_trains_records_and_skips_as_asked(setup, tmp_path, capsys):
    from minirec.experiments.results import ResultsTable
    from minirec.experiments.runner import run_many
    split, _, spec, profile = setup
    table = ResultsTable(tmp_path / "figs")
    a, b = spec.variant("A"), spec.variant("B", max_items=4)
    assert run_many([a, b], split, profile, enabled=False, table=table, dataset="synthetic") == {}
    assert "skips these runs" in capsys.readouterr().out and not table.records
    out = run_many({"x": a, "y": b}, split, profile, table=table, dataset="synthetic", unrecorded=("B",))
    assert list(out) == ["A", "B"] and all(r.fits for r in out.values())
    assert table.get("synthetic", "A", "ndcg@10", profile=profile.name)["values"] == out["A"].per_seed["ndcg@10"]
    assert table.get("synthetic", "B", "ndcg@10", profile=profile.name) is None


def test_the_why_notebooks_diagnostics_come_from_the_catalogue(synthetic, synthetic_sids):
    from minirec.experiments.specs import ALIGN_VARIANTS, S2GR_MIXED, S2GR_PAUSE, SpecCatalogue
    profile = get_profile("study")
    book = SpecCatalogue(synthetic, profile, synthetic_sids)
    long, deep = book.tiger_diagnostics(4)
    assert long.config.max_items == max(50, 2 * book.tiger().config.max_items) and long.seeds == (0,)
    assert deep.label == "TIGER-mini (4 layers)" and deep.config.backbone_overrides["num_hidden_layers"] == 4
    assert book.s2gr_depth_checks(4)[2] == deep             # 05b's and 06b's deeper TIGER-mini: one checkpoint
    assert [s.label for s in book.s2gr_ablations()] == [S2GR_PAUSE, "S²GR-mini (no alignment)", S2GR_MIXED]
    assert book.s2gr_ablations()[1] == book.s2gr("S²GR-mini (no alignment)")
    assert all(s.seeds == (0,) for s in book.s2gr_scale_checks())
    variants = book.alignment_variants()
    assert {name: s.label for name, s in variants.items()} == ALIGN_VARIANTS
    assert all(s.seeds == tuple(profile.ablation_seeds) for s in variants.values())
    assert variants["caption-heavy mix"].config.task_mix == (0.2, 0.5, 0.2, 0.1)
    assert variants["caption-heavy mix"].parent == book.onerec().warmup        # after the headline's own warm-up
    assert variants["no warm-up"].parent is None and variants["no warm-up"].config.stage == "align"   # from scratch
    assert variants["paper's mix (headline)"].config == book.onerec().align.config


def test_seed_runs_restricted_to_some_seeds_keep_only_theirs(setup):
    from types import SimpleNamespace
    from minirec.experiments.runner import SeedRuns
    _, _, spec, _ = setup
    users = {s: {"ndcg@10": np.full(4, float(s))} for s in (0, 1, 2)}
    runs = SeedRuns(spec, [SimpleNamespace(best_val_ndcg10=0.1 * s) for s in (0, 1, 2)], {"ndcg@10": [0.0, 1.0, 2.0]},
                    {"ndcg@10": np.ones(4)}, users)
    two = runs.of_seeds((2, 0, 7))
    assert two.seeds == (0, 2) and two.val_ndcg10 == [0.0, pytest.approx(0.2)] and two.per_seed["ndcg@10"] == [0.0, 2.0]
    assert (two.per_user["ndcg@10"] == 1.0).all() and two.label == runs.label
    with pytest.raises(ValueError, match="has none of the seeds"):
        runs.of_seeds((5,))


def test_the_kc_sweep_comes_from_the_catalogue(synthetic, synthetic_sids):
    from minirec.experiments.specs import SpecCatalogue
    from minirec.reasoning.s2gr import S2GRConfig
    profile = get_profile("study")
    sweep = SpecCatalogue(synthetic, profile, synthetic_sids).s2gr_kc_sweep()
    expected = [kc for kc in profile.kc_sweep if kc != S2GRConfig.n_clusters and kc <= profile.sids.codebook_size]
    assert [s.config.n_clusters for s in sweep] == expected and expected
    assert all(s.label == f"S²GR-mini Kc={s.config.n_clusters}" and s.seeds == tuple(profile.ablation_seeds)
               for s in sweep)



def test_a_stage_of_another_class_carries_only_the_fields_its_config_has(synthetic, synthetic_sids):
    """ShopX-mini starts from the aligned model: it carries the architecture (GenRecConfig's fields) and none of
    OneRec-Think's stage fields; GRPO carries how the reasoning model recommends, thinks and captions
    (ReasonerConfig's fields) and none of the supervised stages' data fields."""
    from dataclasses import fields
    from minirec.agent.model import ShopXConfig
    from minirec.experiments.specs import SpecCatalogue
    from minirec.reasoning.grpo import GRPOConfig
    from minirec.reasoning.onerec import OneRecConfig, ReasonerConfig
    book = SpecCatalogue(synthetic, get_profile("course"), synthetic_sids)
    align, shop = book.onerec().align, book.shopx()
    # (every model on a pretrained backbone says which of its layers train: ShopX-mini carries that too)
    onerec_only = {f.name for f in fields(OneRecConfig)} - {f.name for f in fields(GenRecConfig)} - {"stage",
                                                                                                     "train_layers"}
    assert onerec_only and not onerec_only & {f.name for f in fields(ShopXConfig)}
    assert all(getattr(shop.config, f.name) == getattr(align.config, f.name) for f in fields(GenRecConfig))
    assert shop.config.stage == "shop" and shop.config.val_per_kind == 10 and shop.parent == align
    reason, grpo = book.onerec().reason, book.grpo(next(iter(book.grpo_candidates())))
    assert all(getattr(grpo.config, f.name) == getattr(reason.config, f.name) for f in fields(ReasonerConfig))
    stage_data = {f.name for f in fields(OneRecConfig)} - {f.name for f in fields(ReasonerConfig)}
    assert stage_data and not stage_data & {f.name for f in fields(GRPOConfig)}


def test_a_later_stage_validates_its_start_as_epoch_0_and_keeps_it_when_no_epoch_beats_it(setup, tmp_path):
    """A stage started from a checkpoint is validated before its first epoch. With lr 0 no epoch can beat the start,
    so the fit keeps the parent's weights (and its best trained epoch beside them); from an untrained parent, training
    beats the start and the fit keeps its best epoch."""
    from minirec.training import START_EPOCH
    split, _, spec, profile = setup
    profile = with_recipe(profile, "generative", max_epochs=2, patience=5)
    parent = run(spec, split, profile, runs_dir=tmp_path, verbose=False)
    frozen = spec.then("later, lr 0").variant("later, lr 0", recipe={"generative": {"lr": 0.0}})
    kept = run(frozen, split, profile, runs_dir=tmp_path, verbose=False).fits[0]
    assert kept.kept_start and kept.start_val == pytest.approx(parent.fits[0].best_val_ndcg10, abs=1e-6)
    assert kept.best_val_ndcg10 == kept.start_val and kept.epochs == 2
    assert [r["epoch"] for r in kept.curves] == [START_EPOCH, 0, 1] and "train_loss" not in kept.curves[0]
    start = parent.module.state_dict()
    assert all(torch.equal(v.cpu(), start[k].cpu()) for k, v in kept.module.state_dict().items())
    assert kept.trained_checkpoint.endswith("trained.ckpt") and kept.checkpoint.endswith("best.ckpt")
    again = run(frozen, split, profile, runs_dir=tmp_path, verbose=False).fits[0]       # reused: the same decision
    assert again.kept_start and again.best_val_ndcg10 == kept.best_val_ndcg10
    assert again.trained_checkpoint == kept.trained_checkpoint

    untrained = spec.variant("untrained", recipe={"generative": {"lr": 0.0}})
    learnt = run(untrained.then("learns"), split, profile, runs_dir=tmp_path, verbose=False).fits[0]
    assert not learnt.kept_start and learnt.best_val_ndcg10 > learnt.start_val
    assert learnt.trained_checkpoint == learnt.checkpoint and learnt.trained_module(None) is learnt.module
    assert run(spec, split, profile, runs_dir=tmp_path, verbose=False).fits[0].start_val is None   # Base: from scratch


def test_the_reasoning_stage_s_fine_tuning_rate_is_a_grid_chosen_on_validation(synthetic, synthetic_sids):
    """The headline reasoning stage trains at the profile's fine-tuning rate; the study also trains it at every other
    rate of FINETUNE_RATES, from the same aligned checkpoint, and chooses among them against the aligned model."""
    from minirec.experiments import study
    from minirec.experiments.specs import ALIGN, REASON, SpecCatalogue, grids, reason_rates
    from minirec.profiles import FINETUNE_RATES
    profile = get_profile("study")
    split = leave_one_out(synthetic)
    rates = reason_rates(profile)
    assert rates[REASON] == profile.recipe("finetune").lr and sorted(rates.values()) == sorted(FINETUNE_RATES)
    book = SpecCatalogue(synthetic, profile, synthetic_sids)
    candidates = book.reason_rate_candidates()
    assert [c.label for c in candidates] == [label for label in rates if label != REASON]
    for spec in candidates:
        fp = experiments.fingerprint(spec, split, profile)
        assert fp["recipe"]["lr"] == rates[spec.label] and fp["parent"] == experiments.fingerprint(
            book.onerec().align, split, profile)
    grid = next(g for g in grids(profile) if g.method == REASON)
    assert set(grid.candidates) == set(rates) and grid.against == ALIGN and grid.headline == REASON
    assert study.expand_models(["OneRec-reason-rates"], profile) == list(rates)
    assert set(rates) <= set(study.headline_specs(synthetic, split, profile, sid_table=synthetic_sids))


def test_an_interrupted_fit_resumes_from_its_last_epoch_and_ends_as_one_fit(setup, tmp_path, monkeypatch):
    """A fit killed after its second epoch leaves last.ckpt; run again, it continues with the third epoch (its curve
    rows, plateau state and time carried over) instead of starting over, and leaves no last.ckpt behind."""
    split, _, spec, profile = setup
    profile = with_recipe(profile, "generative", max_epochs=3, patience=5, schedule="plateau", decay_patience=1)
    module_class = spec.model

    def stop_after_second_epoch(self):
        if self.current_epoch == 1:
            raise RuntimeError("the session ended")
    monkeypatch.setattr(module_class, "on_train_epoch_end", stop_after_second_epoch, raising=False)
    with pytest.raises(RuntimeError, match="session ended"):
        run(spec, split, profile, runs_dir=tmp_path, verbose=False)
    folder = next(tmp_path.glob("checkpoints/synthetic/*/seed0"))
    assert (folder / "last.ckpt").is_file() and not (folder / "fit.json").exists()
    monkeypatch.undo()
    resumed = run(spec, split, profile, runs_dir=tmp_path, verbose=False).fits[0]
    meta = json.loads((folder / "fit.json").read_text())
    assert meta["resumed"] and [r["epoch"] for r in resumed.curves] == [0, 1, 2] and resumed.epochs == 3
    assert not (folder / "last.ckpt").exists() and (folder / "best.ckpt").exists()
    assert resumed.seconds > 0
    again = run(spec, split, profile, runs_dir=tmp_path, verbose=False, retrain=True).fits[0]   # retrain: clean
    assert [r["epoch"] for r in again.curves] == [0, 1, 2]
    assert "resumed" not in json.loads((folder / "fit.json").read_text())
