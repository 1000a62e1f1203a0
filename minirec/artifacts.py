"""Where minirec keeps things, and how it writes them safely.

Every artifact (a cached split, a checkpoint, results.json, a figure) is written to a
temporary file in the same folder and then moved into place with ``os.replace``, which
is atomic on POSIX and Windows: an interrupted run leaves the old file or the new one,
never half of one. Re-running a notebook is therefore always safe.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"            # user-provided raw data and caches (git-ignored)
FIGURES_DIR = REPO_ROOT / "figures"      # committed figures and the results table
RUNS_DIR = REPO_ROOT / "runs"            # executed notebooks, checkpoints (git-ignored)
REUSE_LOG_ENV = "MINIREC_REUSE_LOG"      # set by the main job: the file where notebooks list reused checkpoints
RUNS_DIR_ENV = "MINIREC_RUNS_DIR"        # overrides RUNS_DIR (the tests point it at a temporary folder)
CACHE_DIR_ENV = "MINIREC_CACHE_DIR"      # overrides data/cache (SID tables, embeddings)


FIGURES_DIR_ENV = "MINIREC_FIGURES_DIR"  # overrides figures/ (the main job's --figures-dir, the tests' temporary folder)


def figures_dir() -> Path:
    """Where figures and the results table go: ``$MINIREC_FIGURES_DIR`` if set, else ``figures/``."""
    return Path(os.environ.get(FIGURES_DIR_ENV) or FIGURES_DIR)


def runs_dir() -> Path:
    """Where checkpoints go: ``$MINIREC_RUNS_DIR`` if set, else ``runs/``."""
    return Path(os.environ.get(RUNS_DIR_ENV) or RUNS_DIR)


def cache_dir(kind: str) -> Path:
    """The cache folder of one kind (``sids``, ``embeddings``): ``$MINIREC_CACHE_DIR/<kind>`` or ``data/cache/<kind>``."""
    return Path(os.environ.get(CACHE_DIR_ENV) or DATA_DIR / "cache") / kind


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` on success.

    >>> with atomic_path("out.png") as tmp:      # doctest: +SKIP
    ...     fig.savefig(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)                 # mkstemp makes 0600; artifacts are for everyone to read
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write ``text`` to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_figure(fig, name: str, folder: str | os.PathLike | None = None, dpi: int = 110) -> None:
    """Save a matplotlib figure as ``<folder>/<name>.png`` atomically (default folder: ``figures_dir()``).

    Returns nothing, so a notebook cell that ends with it shows the figure and no path echo.
    """
    out = Path(folder or figures_dir()) / f"{name}.png"
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")


def git_commit(short: bool = True) -> str:
    """The commit the code runs from (``+dirty`` when the tree has changes), or 'unknown'."""
    try:
        args = ["git", "rev-parse", "--short" if short else "--verify", "HEAD"]
        sha = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
