"""Notebook 12's measurements (minirec.experiments.regimes): the ceiling shares, what codes and probes recover,
attention on the driving positions, and verdicts generated only from recorded rows."""
import numpy as np
import pytest

from minirec.data.dataset import leave_one_out
from minirec.data.world import WorldConfig, make_world
from minirec.experiments import regimes
from minirec.experiments.results import ResultsTable
from minirec.metrics import BootstrapResult
from minirec.profiles import get_profile

TINY = dict(n_categories=4, n_subcategories=2, items_per_subcategory=24, n_users=300, min_length=8, max_length=12)


@pytest.fixture(scope="module")
def deep():
    world = make_world(depth=2, seed=3, **TINY)
    split = leave_one_out(world.dataset)
    return regimes.WorldRun("depth 2", world, split, None, world.ceiling(split.test), regimes.tail_targets(split))


def test_the_grid_is_fixed_and_the_course_contrast_is_its_extremes():
    assert [w.depth for w in regimes.study_worlds()] == list(regimes.STUDY_DEPTHS) * len(regimes.STUDY_TAILS)
    assert {w.seed for w in regimes.study_worlds()} == {0} and regimes.DEVELOPMENT_SEED != 0
    course = regimes.notebook_worlds(get_profile("course"))
    assert regimes.notebook_worlds(get_profile("study"))["depth 3"].n_users == WorldConfig().n_users
    assert [w.depth for w in course.values()] == [0, max(regimes.STUDY_DEPTHS)]
    assert all(w.n_users == regimes.COURSE_USERS for w in course.values())
    assert [h.key for h in regimes.HYPOTHESES] == ["H1", "H2", "H3", "H4", "H5"]


def test_tail_targets_are_targets_rarely_bought_in_training(deep):
    counts = deep.split.train_item_counts()
    np.testing.assert_array_equal(deep.tail, counts[deep.split.test.targets] < regimes.TAIL_BELOW)


def test_ceiling_shares_are_one_for_the_ceiling_and_recorded(deep, tmp_path):
    table = ResultsTable(tmp_path)
    half = {"ndcg@10": deep.ceiling["ndcg@10"] * 0.5}
    rows = regimes.ceiling_shares(table, deep, {"ceiling itself": {"ndcg@10": deep.ceiling["ndcg@10"]},
                                                "half": half}, get_profile("smoke"), [0])
    shares = {(r["model"], r["users"]): r["share of ceiling"] for r in rows}
    assert shares[("ceiling itself", "all users")] == pytest.approx(1.0)
    assert shares[("half", "tail targets")] == pytest.approx(0.5)
    recorded = table.get(deep.name, "half", "share of ceiling ndcg@10", table=regimes.CEILING_TABLE)
    assert recorded is not None


def test_code_alignment_is_one_for_planted_codes_and_low_for_random(deep):
    w = deep.world
    planted = np.stack([w.category, w.position, np.arange(w.config.n_items) % 7], axis=1)
    perfect = regimes.code_alignment(planted, w)
    assert perfect["nmi level 1 / category"] == pytest.approx(1.0)
    assert perfect["nmi levels 1-2 / subcategory"] == pytest.approx(1.0)
    assert perfect["level-1 purity"] == pytest.approx(1.0)
    shuffled = planted[np.random.default_rng(0).permutation(len(planted))]
    assert regimes.code_alignment(shuffled, w)["nmi level 1 / category"] < 0.1


def test_planted_latents_follow_the_rule(deep):
    latents = regimes.planted_latents(deep.world, deep.split.test)
    w = deep.world
    for i in range(20):
        history = deep.split.test.histories[i]
        cat = w.category_table[w.category[history[-2]] * w.config.n_categories + w.category[history[-1]]]
        pos = w.position_table[w.position[history[-2]] * w.config.n_subcategories + w.position[history[-1]]]
        assert tuple(latents[i]) == (cat, cat * w.config.n_subcategories + pos)
    # noise aside, the target lands in the planted subcategory
    hits = w.subcategory[deep.split.test.targets] == latents[:, 1]
    assert hits.mean() > 1 - 2 * w.config.noise


def test_a_probe_reads_a_linear_latent_and_not_noise():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=400)
    readable = np.eye(4)[labels] * 3 + rng.normal(size=(400, 4)) * 0.3
    assert regimes.probe_accuracy(np.c_[readable, rng.normal(size=(400, 8))], labels).mean() > 0.95
    assert regimes.probe_accuracy(rng.normal(size=(400, 12)), labels).mean() < 0.4
    fit, held = regimes.probe_halves(400)
    assert not set(fit) & set(held) and len(fit) + len(held) == 400


def test_probe_levels_records_thinking_against_before(deep, tmp_path):
    rng = np.random.default_rng(1)
    latents = regimes.planted_latents(deep.world, deep.split.test)
    n = len(latents)
    knows = np.stack([np.eye(4)[latents[:, 0]], np.eye(8)[latents[:, 1]][:, :4]], axis=1) * 3
    features = {"S²GR-mini": {"thinking": knows + rng.normal(size=(n, 2, 4)) * 0.2,
                              "before": rng.normal(size=(n, 2, 4))}}
    table = ResultsTable(tmp_path)
    rows = regimes.probe_levels(table, deep, features, get_profile("smoke"))
    thinking = [r for r in rows if r["state"] == "thinking"]
    assert all(r["thinking − before"] > 0.3 for r in thinking)
    measured, verdict = regimes._h3(table, "smoke")
    assert verdict == "holds" and "thinking" in measured


def test_driving_attention_splits_recent_from_older_positions():
    by_recency = np.array([[0.5, 0.3, 0.1, 0.1], [0.4, 0.2, 0.2, 0.2]])
    depth2 = regimes.driving_attention(by_recency, 2)
    np.testing.assert_allclose(depth2["driving positions"], [0.4, 0.3])
    np.testing.assert_allclose(depth2["older positions"], [0.1, 0.2])
    np.testing.assert_allclose(regimes.driving_attention(by_recency, 0)["driving positions"], [0.5, 0.4])


def _result(diff, low, high):
    return BootstrapResult("ndcg@10", 0.1 + diff, 0.1, diff, low, high, 100, 200)


def test_verdicts_come_from_recorded_rows_only(tmp_path):
    table = ResultsTable(tmp_path)
    assert {v["verdict"] for v in regimes.verdicts(table, "course")[:3]} == {"not measured in this profile"}
    # H1 holds: nothing at depth 0, a gain at depth 3, larger on tail targets
    table.compare("world-depth0", "S²GR-mini", "TIGER-mini", _result(0.001, -0.004, 0.006), "course")
    table.compare("world-depth3", "S²GR-mini", "TIGER-mini", _result(0.02, 0.01, 0.03), "course")
    table.compare("world-depth3", "S²GR-mini", "TIGER-mini", _result(0.04, 0.02, 0.06), "course", group="tail targets")
    table.record("world-depth3", "RQ-KMeans", {"nmi level 1 / category": [0.8]}, "course", [0],
                 table=regimes.CODES_TABLE)
    table.record("world-depth3", "CoBa", {"nmi level 1 / category": [0.3]}, "course", [0], table=regimes.CODES_TABLE)
    by_key = {v["hypothesis"][:2]: v for v in regimes.verdicts(table, "course")}
    assert by_key["H1"]["verdict"] == "holds" and "depth 3: +0.0200" in by_key["H1"]["measured"]
    assert by_key["H2"]["verdict"] == "fails"          # CoBa below the stated NMI
    assert by_key["H4"]["verdict"].startswith("not measured")
    # a gain at depth 0 too: H1 fails; and another profile's rows do not count
    table.compare("world-depth0", "S²GR-mini", "TIGER-mini", _result(0.01, 0.005, 0.015), "course")
    assert regimes._h1(table, "course")[1] == "fails"
    assert regimes._h1(table, "study")[1] == "not measured in this profile"
    # every tail setting must hold: a second tail where the deep gain is noise makes it fail
    table.compare("world-depth0", "S²GR-mini", "TIGER-mini", _result(0.001, -0.004, 0.006), "course")
    table.compare("world-depth0-tail0.5", "S²GR-mini", "TIGER-mini", _result(0.0, -0.01, 0.01), "course")
    table.compare("world-depth3-tail0.5", "S²GR-mini", "TIGER-mini", _result(0.003, -0.002, 0.008), "course")
    assert regimes._h1(table, "course")[1] == "fails"


def test_the_study_records_a_worlds_shares_and_tail_comparison(tmp_path):
    from minirec.experiments.specs import S2GR, TIGER
    from minirec.experiments.study.pieces import Piece
    from minirec.experiments.study.report import record_world
    from minirec.data.world import WorldConfig

    config = WorldConfig(depth=1, n_users=120, **{k: v for k, v in TINY.items() if k != "n_users"})
    split = leave_one_out(make_world(config).dataset)
    rng = np.random.default_rng(0)
    fresh = {label: {s: Piece(label, s, "d", {"ndcg@10": rng.random(len(split.test)) * scale}, {"epochs": 1})
                     for s in (0, 1)} for label, scale in ((TIGER, 0.2), (S2GR, 0.4))}
    table = ResultsTable(tmp_path)
    out = record_world(fresh, table, split, get_profile("smoke"), n_boot=100)
    assert {r["model"] for r in out["shares"]} == {TIGER, S2GR}
    tail = [c for c in table.comparisons if c.get("group") == "tail targets"]
    assert len(tail) == 1 and (tail[0]["a"], tail[0]["b"], tail[0]["n_seeds"]) == (S2GR, TIGER, 2)
    assert tail[0]["n_users"] == int(regimes.tail_targets(split).sum())
    share = table.get(config.name, S2GR, "share of ceiling ndcg@10", table=regimes.CEILING_TABLE)
    assert share is not None


def test_h4_and_h5_verdicts_read_the_studys_rows(tmp_path):
    from minirec.experiments.specs import ALIGN, BASE, RANDOM_ALIGN, RANDOM_BASE, REASON
    table = ResultsTable(tmp_path)
    assert regimes._h4(table, "study")[1] == regimes._h5(table, "study")[1] == "not measured in this profile"
    tail = "tail targets"
    table.compare("world-depth3", RANDOM_ALIGN, RANDOM_BASE, _result(0.02, 0.01, 0.03), "study", group=tail)
    table.compare("world-depth3", ALIGN, BASE, _result(0.001, -0.004, 0.006), "study", group=tail)
    measured, verdict = regimes._h4(table, "study")
    assert verdict == "holds" and "random codes +0.0200" in measured
    table.compare("world-depth3", ALIGN, BASE, _result(0.01, 0.004, 0.016), "study", group=tail)
    assert regimes._h4(table, "study")[1] == "fails"
    # H5: the deep gain beyond noise and above depth 0's, and the swap changes most top-10 lists
    table.compare("world-depth0", REASON, ALIGN, _result(0.0, -0.005, 0.005), "study")
    table.compare("world-depth3", REASON, ALIGN, _result(0.02, 0.01, 0.03), "study")
    assert "not recorded" in regimes._h5(table, "study")[0] and regimes._h5(table, "study")[1] == "fails"
    table.record("world-depth3", f"{REASON}: test rationales", {"top10_changed_by_swap": [0.8]}, "study", [0],
                 table="stage_diagnostics")
    assert regimes._h5(table, "study")[1] == "holds"
    table.record("world-depth3", f"{REASON}: test rationales", {"top10_changed_by_swap": [0.2]}, "study", [0],
                 table="stage_diagnostics")
    assert regimes._h5(table, "study")[1] == "fails"


def test_the_readme_quotes_the_verdicts_generated_from_the_table(tmp_path):
    from minirec.experiments.results import update_readme
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:start -->\n<!-- results:end -->\n"
                      "<!-- verdicts:start -->\nstale text\n<!-- verdicts:end -->\nend\n")
    table = ResultsTable(tmp_path)
    table.save()
    assert update_readme(readme, tmp_path)
    assert "No hypothesis measured yet" in readme.read_text() and "stale text" not in readme.read_text()
    table.record("world-depth3", "CoBa", {"nmi level 1 / category": [0.9]}, "course", [0], table=regimes.CODES_TABLE)
    assert update_readme(readme, tmp_path)
    text = readme.read_text()
    assert "| `course` | H2: level-1 codes recover the planted categories | CoBa NMI 0.900" in text
    assert "| holds |" in text and text.endswith("end\n")
