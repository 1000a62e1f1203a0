"""The results table: upserts, seeds, rendering, atomic per-user store."""
import json

import numpy as np
import pytest

from minirec.experiments.results import ResultsTable, load_per_user, save_per_user, update_readme
from minirec.metrics import paired_bootstrap


def test_record_upsert_and_markdown(tmp_path):
    t = ResultsTable(tmp_path)
    t.record("ml", "A", {"ndcg@10": [0.1, 0.2, 0.3]}, "cpu", seeds=[0, 1, 2])
    t.record("ml", "A", {"ndcg@10": [0.2, 0.2, 0.2]}, "cpu", seeds=[0, 1, 2])   # replaces
    t.record("ml", "B", {"ndcg@10": [0.05]}, "cpu", seeds=[0])
    data = json.loads((tmp_path / "results.json").read_text())
    rows = [r for r in data["records"] if r["method"] == "A"]
    assert len(rows) == 1 and rows[0]["mean"] == pytest.approx(0.2) and rows[0]["std"] == pytest.approx(0.0, abs=1e-12)
    assert rows[0]["seeds"] == [0, 1, 2] and rows[0]["profile"] == "cpu" and rows[0]["commit"]
    t.compare("ml", "A", "B", paired_bootstrap(np.ones(50), np.zeros(50), "ndcg@10", n_boot=50), "cpu")
    md = (tmp_path / "results.md").read_text()
    assert "## profile: cpu" in md and "| ml | A | 3 | 0.2000 ± 0.0000 |" in md and "A better" in md
    assert ResultsTable(tmp_path).get("ml", "B", "ndcg@10")["mean"] == pytest.approx(0.05)
    t.record("ml", "A | held out", {"ndcg@10": [0.1]}, "cpu", seeds=[0])          # a pipe stays in its cell
    assert "| ml | A \\| held out | 1 | 0.1000 |" in (tmp_path / "results.md").read_text()
    with pytest.raises(ValueError, match="2 values for 3 seeds"):
        t.record("ml", "C", {"x": [1, 2]}, "cpu", seeds=[0, 1, 2])


def test_per_user_roundtrip(tmp_path):
    per_user = {"ndcg@10": np.arange(5.0)}
    save_per_user(tmp_path, "ml", "A", per_user, "cpu")
    np.testing.assert_array_equal(load_per_user(tmp_path, "ml", "A", "cpu", 5)["ndcg@10"], np.arange(5.0))
    assert load_per_user(tmp_path, "ml", "A", "smoke", 5) is None      # another profile
    assert load_per_user(tmp_path, "ml", "A", "cpu", 6) is None        # another user set
    assert not list(tmp_path.rglob(".*"))                              # no temporary files left


def test_readme_blocks_are_generated_from_the_results(tmp_path):
    t = ResultsTable(tmp_path / "figures")
    for profile, wall in (("course", 600.0), ("smoke", 5.0)):
        t.record("ml", "A", {"ndcg@10": [0.1]}, profile, seeds=[0])
        for method, seconds, reused in (("01_data", wall / 3, 0.0), ("02_model", 2 * wall / 3, 60.0),
                                        ("main job", wall, 60.0)):
            t.record("-", method, {"wall_seconds": [seconds], "reused_training_seconds": [reused],
                                   "without_checkpoints_seconds": [seconds + reused]}, profile, seeds=[0], table="runtime")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- runtime:start -->\nstale\n<!-- runtime:end -->\nmiddle\n"
                      "<!-- results:start -->\nstale\n<!-- results:end -->\nend\n")
    assert update_readme(readme, tmp_path / "figures")
    text = readme.read_text()
    assert "stale" not in text and text.startswith("intro\n") and "\nmiddle\n" in text and text.endswith("end\n")
    assert "| `course` | 10 min | 11 min | `02_model`, 8 min |" in text
    assert "### profile: course" in text and "profile: smoke" not in text and "`smoke`" not in text
    assert update_readme(readme, tmp_path / "figures") and readme.read_text() == text      # idempotent


def test_comparison_against_a_zero_baseline_has_no_nan(tmp_path):
    res = paired_bootstrap(np.full(20, 0.1), np.zeros(20), "ndcg@10", n_boot=50)
    assert "nan" not in res.verdict("A", "B")
    t = ResultsTable(tmp_path)
    t.compare("ml", "A", "B", res, "smoke")
    assert "nan" not in (tmp_path / "results.md").read_text()


def test_a_step_writes_the_results_files_once_and_a_failed_step_writes_nothing(tmp_path, monkeypatch):
    from minirec.experiments import results
    writes = []
    real = results.write_json
    monkeypatch.setattr(results, "write_json", lambda path, data: (writes.append(path), real(path, data)))
    t = ResultsTable(tmp_path)
    t.record("ml", "A", {"ndcg@10": [0.1]}, "cpu", seeds=[0])
    assert len(writes) == 1                                   # outside a step: every change is written
    with t.writing_once():
        t.record("ml", "B", {"ndcg@10": [0.2]}, "cpu", seeds=[0])
        with t.writing_once():                                # nested steps write with the outer one
            t.compare("ml", "B", "A", paired_bootstrap(np.ones(20), np.zeros(20), "ndcg@10", n_boot=20), "cpu")
        t.forget("ml", "cpu", ["A"])
        assert len(writes) == 1
    assert len(writes) == 2
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert [r["method"] for r in on_disk["records"]] == ["B"] and len(on_disk["comparisons"]) == 1
    with pytest.raises(RuntimeError):
        with t.writing_once():
            t.record("ml", "C", {"ndcg@10": [0.3]}, "cpu", seeds=[0])
            raise RuntimeError("the step fails")
    assert len(writes) == 2 and json.loads((tmp_path / "results.json").read_text()) == on_disk


def test_record_many_writes_every_row_once(tmp_path, monkeypatch):
    from minirec.experiments.results import ResultsTable
    table = ResultsTable(tmp_path)
    saves = []
    monkeypatch.setattr(table, "save", lambda: saves.append(len(table.records)))
    table.record_many("d", {"a": {"x": [1.0, 3.0]}, "b": {"x": [2.0, 2.0], "y": [0.0, 1.0]}}, "smoke", seeds=[0, 1],
                      table="t")
    assert saves == [3] and table.get("d", "a", "x", "t")["mean"] == 2.0 and table.get("d", "b", "y", "t")["seeds"] == [0, 1]
