"""The main job: execute the numbered notebooks in order with papermill.

    python -m minirec.pipeline --profile cpu            # what `make main` runs
    python -m minirec.pipeline --profile smoke --only 01 02 --figures-dir /tmp/figs

Executed copies go to ``runs/executed/`` (git-ignored), figures and the results table to
``figures/`` (or ``--figures-dir``). A failing notebook stops the job with its name.

Each notebook's cost goes to the results table under ``runtime``: its wall time, the
training seconds of the checkpoints it reused instead of training (as recorded when they
were made), and their sum, what the notebook costs on a machine without checkpoints. A
run of every notebook adds a ``main job`` row, counting each reused checkpoint once.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

from .artifacts import FIGURES_DIR, REPO_ROOT, REUSE_LOG_ENV, RUNS_DIR
from .profiles import PROFILES

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"


def notebooks(only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks ``NN_topic.ipynb`` in order, optionally only some numbers."""
    found = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
    if only:
        found = [nb for nb in found if nb.name[:2] in only]
    return found


def execute(notebook: Path, profile: str, figures_dir: Path, out_dir: Path, **parameters) -> Path:
    """Run one notebook with papermill; returns the executed copy."""
    import papermill as pm

    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / notebook.name
    pm.execute_notebook(str(notebook), str(output), cwd=str(notebook.parent), kernel_name="python3",
                        parameters=dict(profile=profile, figures_dir=str(figures_dir), **parameters),
                        progress_bar=False, log_output=False)
    return output


def reused_checkpoints(log: str) -> dict[tuple[str, int], float]:
    """(run, seed) -> training seconds, for every checkpoint a notebook reused (from its reuse log)."""
    if not os.path.exists(log):
        return {}
    out = {}
    with open(log) as f:
        for line in f:
            entry = json.loads(line)
            seconds = entry["seconds"]
            out[(entry["run"], entry["seed"])] = seconds if math.isfinite(seconds) else 0.0   # nan: not recorded
    return out


def runtime_row(wall: float, reused: float) -> dict[str, list[float]]:
    """The runtime table's columns: wall time, training the reused checkpoints saved, and their sum."""
    return {"wall_seconds": [wall], "reused_training_seconds": [reused], "without_checkpoints_seconds": [wall + reused]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu", choices=sorted(PROFILES))
    parser.add_argument("--only", nargs="*", help="notebook numbers to run, e.g. 01 02")
    parser.add_argument("--figures-dir", type=Path, default=FIGURES_DIR)
    parser.add_argument("--out-dir", type=Path, default=RUNS_DIR / "executed")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from .results import ResultsTable

    total, job_wall, job_reused, counted = time.perf_counter(), 0.0, 0.0, set()
    for nb in notebooks(args.only):
        start = time.perf_counter()
        print(f"[minirec] {nb.name} ({args.profile}) ...", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            os.environ[REUSE_LOG_ENV] = log = os.path.join(tmp, "reused.jsonl")   # the kernel inherits it
            try:
                execute(nb, args.profile, args.figures_dir, args.out_dir)
            finally:
                del os.environ[REUSE_LOG_ENV]       # never left pointing at a deleted folder
            reused = reused_checkpoints(log)
        seconds = time.perf_counter() - start
        saved = sum(reused.values())
        job_wall += seconds
        job_reused += sum(s for key, s in reused.items() if key not in counted)
        counted |= set(reused)
        print(f"[minirec] {nb.name} done in {seconds:.0f} s (reused checkpoints that took {saved:.0f} s to train)",
              flush=True)
        ResultsTable(args.figures_dir).record("-", nb.stem, runtime_row(seconds, saved), args.profile,
                                              seeds=[0], table="runtime")
    if not args.only:
        ResultsTable(args.figures_dir).record("-", "main job", runtime_row(job_wall, job_reused), args.profile,
                                              seeds=[0], table="runtime")
    if args.profile == "cpu" and args.figures_dir.resolve() == FIGURES_DIR.resolve() and not args.only:
        from .results import update_readme
        update_readme(REPO_ROOT / "README.md", args.figures_dir)
    print(f"[minirec] main job finished in {time.perf_counter() - total:.0f} s; "
          f"results in {args.figures_dir / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
