"""Every numbered notebook runs end to end under papermill (smoke profile), in temporary folders.

The kernels inherit ``MINIREC_RUNS_DIR`` / ``MINIREC_CACHE_DIR`` from conftest (temporary) and
each test points ``MINIREC_RUNS_DIR`` at its own folder, so every notebook trains from scratch
and nothing touches the user's runs/, caches, figures/ or notebooks/.
"""
import json
import re
from pathlib import Path

import pytest

from minirec.artifacts import FIGURES_DIR, REPO_ROOT
from minirec.pipeline import NOTEBOOKS_DIR, execute, main, notebooks, parameter_names

ALL = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
README = (REPO_ROOT / "README.md").read_text()


def figures_in_readme_map(notebook: Path) -> list[str]:
    """The figure names the README's notebook map lists for a notebook."""
    row = next(line for line in README.splitlines() if line.startswith(f"| `{notebook.name}`"))
    return re.findall(r"`(\d\d_[a-z0-9_-]+)`", row.split("|")[4])


def test_notebooks_found():
    assert [nb.name[:2] for nb in notebooks()][:2] == ["01", "02"]


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


def test_tests_never_write_into_the_repository():
    assert str(FIGURES_DIR) not in str(Path(__import__("os").environ["MINIREC_RUNS_DIR"]))
