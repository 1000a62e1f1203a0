"""The main job: execute the numbered notebooks in order with papermill.

    python -m minirec.experiments.pipeline                          # what `make main` runs (course profile)
    python -m minirec.experiments.pipeline --profile study          # the numbers that hold up (hours on a CPU)
    python -m minirec.experiments.pipeline --profile smoke --only 01 02 --figures-dir /tmp/figs

Executed copies go to ``runs/executed/<profile>/`` (git-ignored), figures and the results
table to ``figures/`` (or ``--figures-dir``); a run into ``figures/`` also refreshes the
README's results block in the same step. A course run into ``figures/`` (what ``make main``
does) also writes each executed notebook back into ``notebooks/``, outputs included and
cleaned of run metadata (``publishable``), so the course reads on GitHub without running it.
A failing notebook stops the job with its name.

The sequence is ``notebooks/NN_topic.ipynb`` in order, with bonus notebooks ``NNb_topic.ipynb``
(the diagnostic "why" studies) right after the notebook they extend.

Each notebook's cost goes to the results table under ``runtime``: its wall time, the
training seconds of the checkpoints it reused instead of training (as recorded when they
were made), and their sum, what the notebook costs on a machine without checkpoints. A
run of every notebook adds a ``main job`` row, counting each reused checkpoint once and none that
the job trained itself (``job_saved_seconds``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
import time
import uuid
from pathlib import Path

from jupyter_client.manager import KernelManager
from traitlets import CaselessStrEnum, default

from minirec.artifacts import FIGURES_DIR, FIGURES_DIR_ENV, REPO_ROOT, REUSE_LOG_ENV, RUNS_DIR, write_text
from minirec.profiles import DEFAULT_PROFILE, PROFILES

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
PUBLISHED_PROFILE = "course"       # the run whose outputs the committed notebooks carry


def notebook_key(notebook: Path) -> str:
    """What ``--only`` calls a notebook: ``05`` for ``05_generative_retrieval.ipynb``, ``05b`` for a bonus one."""
    return Path(notebook).name.split("_", 1)[0]


def notebooks(only: list[str] | None = None) -> list[Path]:
    """The course notebooks in order (``05`` before ``05b`` before ``06``); ``only`` picks some by key (an unknown one is an error)."""
    found = sorted(p for p in NOTEBOOKS_DIR.glob("[0-9][0-9]*_*.ipynb") if re.fullmatch(r"\d\d[a-z]?", notebook_key(p)))
    if only is None:
        return found
    numbers = {notebook_key(nb): nb for nb in found}
    unknown = [n for n in only if n not in numbers]
    if not only or unknown:
        raise ValueError(f"unknown notebook {', '.join(map(repr, unknown)) or '(none given)'}; "
                         f"choose from {', '.join(numbers)} (e.g. --only 01 05 05b)")
    return [numbers[n] for n in only]


class LocalKernelManager(KernelManager):
    """Talks to the notebook's kernel over local IPC sockets instead of loopback TCP: nothing listens on a port,
    and the kernel has no reason to warn that its traffic is unencrypted. The sockets live in the temporary
    folder (never in ``notebooks/``) and are removed when the kernel shuts down."""
    transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

    @default("ip")
    def _socket_prefix(self) -> str:
        return os.path.join(tempfile.gettempdir(), f"minirec-kernel-{uuid.uuid4().hex[:12]}")


def parameter_names(notebook: Path) -> set[str]:
    """Names assigned in a notebook's ``parameters`` cell (the only ones papermill may set)."""
    nb = json.loads(Path(notebook).read_text())
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{notebook.name} must have exactly one cell tagged 'parameters'")
    return set(re.findall(r"^([A-Za-z_]\w*)\s*=", "".join(cells[0]["source"]), flags=re.M))


def execute(notebook: Path, profile: str, figures_dir: Path, out_dir: Path, **parameters) -> Path:
    """Run one notebook with papermill; returns the executed copy. Unknown parameter names are an error."""
    import papermill as pm

    parameters = dict(profile=profile, **parameters)
    unknown = sorted(set(parameters) - parameter_names(notebook))
    if unknown:
        raise ValueError(f"{notebook.name} has no parameter {', '.join(map(repr, unknown))}; "
                         f"its parameters: {sorted(parameter_names(notebook))}")
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / notebook.name
    previous = os.environ.get(FIGURES_DIR_ENV)
    os.environ[FIGURES_DIR_ENV] = str(figures_dir)          # the kernel inherits it
    try:
        pm.execute_notebook(str(notebook), str(output), cwd=str(notebook.parent), kernel_name="python3",
                            parameters=parameters, progress_bar=False, log_output=False,
                            kernel_manager_class=LocalKernelManager)
    finally:
        if previous is None:
            del os.environ[FIGURES_DIR_ENV]
        else:
            os.environ[FIGURES_DIR_ENV] = previous
    return output


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def publishable(nb: dict) -> dict:
    """An executed notebook as it is committed: outputs kept, run noise dropped.

    Drops papermill's injected-parameters cell (the source stays the committed one), papermill's
    and the kernel's timing metadata, the saved widget state (a large blob that GitHub cannot
    render) and widget views in outputs (their plain-text fallback stays).
    """
    nb = dict(nb, metadata={k: v for k, v in nb["metadata"].items() if k not in ("papermill", "widgets")})
    cells = []
    for cell in nb["cells"]:
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            continue
        cell = dict(cell, metadata={k: v for k, v in cell.get("metadata", {}).items()
                                    if k not in ("papermill", "execution")})
        if cell["cell_type"] == "code":
            outputs = []
            for out in cell.get("outputs", []):
                if WIDGET_VIEW in out.get("data", {}):
                    out = dict(out, data={k: v for k, v in out["data"].items() if k != WIDGET_VIEW})
                outputs.append(out)
            cell["outputs"] = outputs
        cells.append(cell)
    nb["cells"] = cells
    return nb


def into_repository(figures_dir: Path) -> bool:
    """Whether a run writes into the repository's own ``figures/`` (and so refreshes the README)."""
    return Path(figures_dir).resolve() == FIGURES_DIR.resolve()


def writes_back(profile: str, figures_dir: Path) -> bool:
    """Whether a run's executed notebooks replace ``notebooks/``: only a course run into ``figures/``."""
    return profile == PUBLISHED_PROFILE and into_repository(figures_dir)


def publish(executed: Path, notebook: Path) -> None:
    """Write an executed notebook back over its source, ``publishable`` and atomically."""
    nb = publishable(json.loads(Path(executed).read_text()))
    write_text(notebook, json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n")   # as nbformat writes


def _log_entries(log: str) -> list[dict]:
    if not os.path.exists(log):
        return []
    with open(log) as f:
        return [json.loads(line) for line in f]


def reused_checkpoints(log: str) -> dict[tuple[str, int], float]:
    """(run, seed) -> training seconds, for every checkpoint a notebook reused (from its reuse log); a checkpoint the
    notebook trained earlier in the same log saved it nothing and is left out."""
    out, trained = {}, set()
    for entry in _log_entries(log):
        if entry.get("trained"):
            trained.add((entry["run"], entry["seed"]))
        elif (entry["run"], entry["seed"]) not in trained:
            seconds = entry["seconds"]
            out[(entry["run"], entry["seed"])] = seconds if math.isfinite(seconds) else 0.0   # nan: not recorded
    return out


def trained_checkpoints(log: str) -> set[tuple[str, int]]:
    """(run, seed) of every checkpoint a notebook trained (a later notebook's reuse of it saves the job nothing)."""
    return {(e["run"], e["seed"]) for e in _log_entries(log) if e.get("trained")}


def job_saved_seconds(notebook_logs: list[tuple[dict, set]]) -> float:
    """Training a whole job was spared by checkpoints made *before* it: per notebook in order, its
    (reused run -> seconds, trained runs); each checkpoint counts once, and one the job trained counts never."""
    saved, seen = 0.0, set()
    for reused, trained in notebook_logs:
        saved += sum(s for key, s in reused.items() if key not in seen)
        seen |= set(reused) | set(trained)
    return saved


def runtime_row(wall: float, reused: float) -> dict[str, list[float]]:
    """The runtime table's columns: wall time, training the reused checkpoints saved, and their sum."""
    return {"wall_seconds": [wall], "reused_training_seconds": [reused], "without_checkpoints_seconds": [wall + reused]}


def _parameter(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default=DEFAULT_PROFILE, choices=sorted(PROFILES))
    parser.add_argument("--only", nargs="*", help="notebook numbers to run, e.g. 01 02 (default: all)")
    parser.add_argument("-p", "--parameter", type=_parameter, action="append", default=[],
                        help="NAME=VALUE for every notebook's parameters cell (e.g. retrain=True)")
    parser.add_argument("--figures-dir", type=Path, default=FIGURES_DIR)
    parser.add_argument("--out-dir", type=Path, default=None, help="default: runs/executed/<profile>")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        selected = notebooks(args.only)
    except ValueError as err:
        parser.error(str(err))
    extra = {name: _literal(value) for name, value in args.parameter}
    out_dir = args.out_dir or RUNS_DIR / "executed" / args.profile

    from minirec.experiments.results import ResultsTable, update_readme

    into_repo = into_repository(args.figures_dir)
    write_back = writes_back(args.profile, args.figures_dir)
    total, job_wall, job_logs = time.perf_counter(), 0.0, []
    for nb in selected:
        start = time.perf_counter()
        print(f"[minirec] {nb.name} ({args.profile}) ...", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            os.environ[REUSE_LOG_ENV] = log = os.path.join(tmp, "reused.jsonl")   # the kernel inherits it
            try:
                executed = execute(nb, args.profile, args.figures_dir, out_dir, **extra)
            finally:
                del os.environ[REUSE_LOG_ENV]       # never left pointing at a deleted folder
            reused, trained = reused_checkpoints(log), trained_checkpoints(log)
        seconds = time.perf_counter() - start
        saved = sum(reused.values())
        job_wall += seconds
        job_logs.append((reused, trained))
        print(f"[minirec] {nb.name} done in {seconds:.0f} s (reused checkpoints that took {saved:.0f} s to train)",
              flush=True)
        ResultsTable(args.figures_dir).record("-", nb.stem, runtime_row(seconds, saved), args.profile,
                                              seeds=[0], table="runtime")
        if into_repo and args.profile != "smoke":
            update_readme(REPO_ROOT / "README.md", args.figures_dir)
        if write_back:
            publish(executed, nb)
    if args.only is None:
        ResultsTable(args.figures_dir).record("-", "main job", runtime_row(job_wall, job_saved_seconds(job_logs)), args.profile,
                                              seeds=[0], table="runtime")
        if into_repo and args.profile != "smoke":
            update_readme(REPO_ROOT / "README.md", args.figures_dir)
    print(f"[minirec] main job finished in {time.perf_counter() - total:.0f} s; "
          f"results in {args.figures_dir / 'results.md'}")
    return 0


def _literal(value: str):
    """A parameter value as Python reads it (True, 3, 0.5), else the string itself."""
    import ast
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


if __name__ == "__main__":
    sys.exit(main())
