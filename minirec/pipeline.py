"""The main job: execute the numbered notebooks in order with papermill.

    python -m minirec.pipeline --profile cpu            # what `make main` runs
    python -m minirec.pipeline --profile smoke --only 01 02 --figures-dir /tmp/figs

Executed copies go to ``runs/executed/`` (git-ignored), figures and the results table to
``figures/`` (or ``--figures-dir``). Each notebook's wall time is recorded in the
results table under ``runtime``. A failing notebook stops the job with its name.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .artifacts import FIGURES_DIR, REPO_ROOT, RUNS_DIR
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu", choices=sorted(PROFILES))
    parser.add_argument("--only", nargs="*", help="notebook numbers to run, e.g. 01 02")
    parser.add_argument("--figures-dir", type=Path, default=FIGURES_DIR)
    parser.add_argument("--out-dir", type=Path, default=RUNS_DIR / "executed")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from .results import ResultsTable

    total = time.perf_counter()
    for nb in notebooks(args.only):
        start = time.perf_counter()
        print(f"[minirec] {nb.name} ({args.profile}) ...", flush=True)
        execute(nb, args.profile, args.figures_dir, args.out_dir)
        seconds = time.perf_counter() - start
        print(f"[minirec] {nb.name} done in {seconds:.0f} s", flush=True)
        ResultsTable(args.figures_dir).record("-", nb.stem, {"wall_seconds": [seconds]}, args.profile,
                                              seeds=[0], table="runtime")
    if args.profile == "cpu" and args.figures_dir.resolve() == FIGURES_DIR.resolve() and not args.only:
        from .results import update_readme
        update_readme(REPO_ROOT / "README.md", args.figures_dir)
    print(f"[minirec] main job finished in {time.perf_counter() - total:.0f} s; "
          f"results in {args.figures_dir / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
