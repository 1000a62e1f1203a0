"""Every numbered notebook runs end to end under papermill (smoke profile), in temporary folders.

The kernels inherit ``MINIREC_RUNS_DIR`` / ``MINIREC_CACHE_DIR`` from conftest (temporary) and
each test points ``MINIREC_RUNS_DIR`` at its own folder, so every notebook trains from scratch
and nothing touches the user's runs/, caches, figures/ or notebooks/.
"""
import json
import re
import tempfile
from pathlib import Path

import pytest

from minirec.artifacts import FIGURES_DIR, REPO_ROOT
from minirec.experiments.pipeline import NOTEBOOKS_DIR, WIDGET_VIEW, LocalKernelManager, execute, main, notebooks, parameter_names, publishable, writes_back

ALL = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
README = (REPO_ROOT / "README.md").read_text()


def figures_in_readme_map(notebook: Path) -> list[str]:
    """The figure names the README's notebook map lists for a notebook."""
    row = next(line for line in README.splitlines() if line.startswith(f"| `{notebook.name}`"))
    return re.findall(r"`(\d\d[a-z]?_[a-z0-9_-]+)`", row.split("|")[4])


def test_every_notebook_in_the_folder_is_in_the_course_and_in_the_readme_map_in_order():
    course = [nb.name for nb in notebooks()]
    assert course == [p.name for p in ALL], "a notebook in notebooks/ that the main job would never run"
    mapped = re.findall(r"^\| `(\d\d[a-z]?_[^`]+\.ipynb)`", README, re.M)
    assert mapped == course, "the README's notebook map and the course disagree"


def test_bonus_notebooks_follow_the_notebook_they_extend():
    keys = [nb.name.split("_")[0] for nb in notebooks()]
    assert keys.index("05") < keys.index("05b") < keys.index("06") < keys.index("06b")
    assert [p.name for p in notebooks(["06b"])] == [p.name for p in ALL if p.name.startswith("06b_")]


def _outputs(nb: dict):
    return [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.name)
def test_committed_notebook_carries_its_course_outputs(path):
    """A reader on GitHub sees the course run: every code cell executed, figures, no errors or warnings, no widget blobs."""
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c.get("execution_count") for c in code), "run `make main` (course) to refresh the committed outputs"
    outputs = _outputs(nb)
    assert any("image/png" in o.get("data", {}) for o in outputs), "no figure in the committed outputs"
    assert not [o for o in outputs if o.get("output_type") == "error"]
    warnings = [o["text"] for o in outputs if o.get("name") == "stderr" and "warn" in "".join(o["text"]).lower()]
    assert not warnings, warnings
    assert "widgets" not in nb["metadata"] and not [o for o in outputs if WIDGET_VIEW in o.get("data", {})]
    assert "papermill" not in nb["metadata"]
    assert not [c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]


def test_publishable_keeps_outputs_and_drops_run_noise():
    view = {"output_type": "display_data", "data": {WIDGET_VIEW: {"model_id": "x"}, "text/plain": ["VBox()"]},
            "metadata": {}}
    nb = {"metadata": {"kernelspec": {"name": "python3"}, "papermill": {"duration": 1.0}, "widgets": {"state": {}}},
          "cells": [{"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "profile = 'course'",
                     "outputs": [], "execution_count": 1},
                    {"cell_type": "code", "metadata": {"tags": ["injected-parameters"]}, "source": "profile = 'x'",
                     "outputs": [], "execution_count": 2},
                    {"cell_type": "code", "metadata": {"papermill": {"duration": 2.0}, "execution": {}},
                     "source": "w", "outputs": [view], "execution_count": 3}]}
    out = publishable(nb)
    assert out["metadata"] == {"kernelspec": {"name": "python3"}}
    assert [c["source"] for c in out["cells"]] == ["profile = 'course'", "w"]
    assert out["cells"][1]["metadata"] == {} and out["cells"][1]["outputs"][0]["data"] == {"text/plain": ["VBox()"]}
    assert WIDGET_VIEW in nb["cells"][2]["outputs"][0]["data"], "the input is not modified"


def test_kernels_talk_over_local_sockets_outside_the_repository():
    km = LocalKernelManager()
    assert km.transport == "ipc" and km.ip.startswith(tempfile.gettempdir()) and str(REPO_ROOT) not in km.ip


def test_only_a_course_run_into_figures_writes_notebooks_back(tmp_path):
    assert writes_back("course", FIGURES_DIR)
    assert not writes_back("smoke", FIGURES_DIR) and not writes_back("study", FIGURES_DIR)
    assert not writes_back("course", tmp_path)


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_notebook_has_kernelspec_and_profile_parameter(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"].get("kernelspec", {}).get("name"), "papermill needs kernelspec metadata"
    assert parameter_names(path) <= {"profile", "retrain"} and "profile" in parameter_names(path)
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert not re.search(r"^\s*(def|class)\s", code, re.M), "notebooks call the package; they define nothing"


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.name)
def test_notebook_runs_in_smoke_profile(path, tmp_path, monkeypatch):
    monkeypatch.setenv("MINIREC_RUNS_DIR", str(tmp_path / "runs"))          # no checkpoint to reuse
    figures = tmp_path / "figures"
    out = execute(path, "smoke", figures, tmp_path / "executed")
    nb = json.loads(Path(out).read_text())
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert (figures / "results.json").exists()
    assert not list(NOTEBOOKS_DIR.glob("kernel-ipc*")), "kernel sockets belong in the temporary folder"
    missing = [f for f in figures_in_readme_map(path) if not (figures / f"{f}.png").exists()]
    assert figures_in_readme_map(path) and not missing, f"figures the README lists but the notebook did not write: {missing}"


@pytest.mark.parametrize("only", [["99"], ["1"], ["01_data"], []])
def test_unknown_notebook_is_an_error(only, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--profile", "smoke", "--only", *only, "--figures-dir", "/nonexistent"])
    assert exit_.value.code == 2 and "choose from 01, 02" in capsys.readouterr().err


def test_misspelled_parameter_is_refused(tmp_path):
    with pytest.raises(ValueError, match="has no parameter 'profil'"):
        execute(notebooks()[0], "smoke", tmp_path, tmp_path, profil="smoke")
    assert not list(tmp_path.iterdir())


def test_the_repository_guard_sees_every_kind_of_write(tmp_path):
    """conftest fails the session when a test writes into the repository; its snapshot must see each kind of write."""
    from conftest import snapshot, writes_between
    (tmp_path / "figures" / "study").mkdir(parents=True)
    (tmp_path / "figures" / "a.png").write_bytes(b"a")
    (tmp_path / "figures" / "study" / "b.npz").write_bytes(b"b")
    (tmp_path / "README.md").write_text("x")
    (tmp_path / "minirec").mkdir()
    before = snapshot(tmp_path)
    assert set(before) == {"figures/a.png", "figures/study/b.npz", "README.md"}
    (tmp_path / "figures" / "a.png").write_bytes(b"changed")
    (tmp_path / "figures" / "study" / "b.npz").unlink()
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "new.ckpt").write_bytes(b"c")
    (tmp_path / "minirec" / "code.py").write_text("not a product")
    assert writes_between(before, snapshot(tmp_path)) == ["figures/a.png", "figures/study/b.npz", "runs/new.ckpt"]
    assert writes_between(before, before) == []


def test_the_readmes_layout_names_every_module_of_the_package_and_nothing_else():
    """The Layout block draws the tree: every module at its place under its sub-package, no module that is gone."""
    block = README.split("## Layout", 1)[1].split("```")[1]
    drawn, folders = set(), []
    for line in block.splitlines():
        match = re.match(r"^(\s*)(\S+)", line)
        if not match or not line.startswith("  "):
            folders = [] if line.startswith("minirec/") else folders
            continue
        depth, name = len(match[1]) // 2, match[2]
        folders = folders[:depth - 1]
        if name.endswith("/"):
            folders.append(name.rstrip("/"))
        elif name.endswith(".py"):
            drawn.add("/".join([*folders, name]))
    package = REPO_ROOT / "minirec"
    actual = {str(p.relative_to(package)) for p in package.rglob("*.py") if p.name != "__init__.py"}
    assert drawn == actual, f"missing from the README: {sorted(actual - drawn)}; gone: {sorted(drawn - actual)}"
