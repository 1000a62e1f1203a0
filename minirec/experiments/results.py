"""The results table: ``figures/results.json`` and its rendering ``figures/results.md``.

One record per dataset x method x metric: mean, std over seeds, the seeds, the profile
and the commit that produced it. Records are upserted (a re-run replaces its own rows),
written atomically, and the Markdown table is regenerated on every write. Paired
bootstrap comparisons are kept beside the records.
"""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Iterable

import numpy as np

from minirec.artifacts import figures_dir as default_figures_dir, git_commit, write_json, write_text
from minirec.metrics import BootstrapResult, direction, format_relative

PROFILE_ORDER = ("study", "gpu", "course", "smoke")
RANKING_METRICS = ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20")


class ResultsTable:
    """Read, update and render ``results.json`` in a figures folder."""

    def __init__(self, figures_dir: str | Path | None = None):
        self.dir = Path(figures_dir or default_figures_dir())
        self.path = self.dir / "results.json"
        if self.path.exists():
            data = json.loads(self.path.read_text())
        else:
            data = {}
        self.records: list[dict] = data.get("records", [])
        self.comparisons: list[dict] = data.get("comparisons", [])
        self._held = 0          # open ``writing_once`` blocks: while any is open, changes wait to be written

    @contextlib.contextmanager
    def writing_once(self):
        """A step that records, compares and forgets many rows writes the files once, when it ends; a step that
        fails writes nothing, and the files keep what they held before it."""
        self._held += 1
        try:
            yield self
        finally:
            self._held -= 1
        if not self._held:
            self.save()

    def _changed(self) -> None:
        if not self._held:
            self.save()

    # ------------------------------------------------------------------ writing
    def record(self, dataset: str, method: str, per_seed: dict[str, Iterable[float]], profile: str,
               seeds: Iterable[int], table: str = "ranking", notes: str = "", *, group: str | None = None,
               protocol: str | None = None, variant: str | None = None, chosen: str | None = None) -> None:
        """Upsert one record per metric from its per-seed values. ``group``: the users the values are over (a
        breakdown's group; None: every test user); ``protocol``: how the checkpoint was chosen, where it is not the
        usual validation (e.g. ``HELD_OUT_USERS``); ``variant``: the setting of ``method`` measured, and ``chosen``:
        what it was chosen on among the method's settings (``"validation"``). All are fields of the record, never
        parts of ``method``."""
        seeds = [int(s) for s in seeds]
        for metric, values in per_seed.items():
            values = np.asarray(list(values), dtype=np.float64)
            if len(values) != len(seeds):
                raise ValueError(f"{method}/{metric}: {len(values)} values for {len(seeds)} seeds")
            mean, std = mean_sd(values)
            row = {"table": table, "dataset": dataset, "method": method,
                   **_typed(variant=variant, chosen=chosen, group=group, protocol=protocol),
                   "metric": metric, "mean": mean, "std": std,
                   "values": [float(v) for v in values], "seeds": seeds, "profile": profile,
                   "commit": git_commit(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
            if notes:
                row["notes"] = notes
            self.records = _upsert(self.records, row, RECORD_KEY)
        self._changed()

    def record_many(self, dataset: str, rows: dict[str, dict[str, Iterable[float]]], profile: str,
                    seeds: Iterable[int], table: str = "ranking", notes: str = "") -> None:
        """``record`` for several methods over the same seeds (method -> metric -> per-seed values), written once."""
        seeds = list(seeds)
        with self.writing_once():
            for method, per_seed in rows.items():
                self.record(dataset, method, per_seed, profile, seeds, table=table, notes=notes)

    def compare(self, dataset: str, a: str, b: str, result: BootstrapResult, profile: str, *,
                group: str | None = None, protocol_a: str | None = None, protocol_b: str | None = None,
                variant_a: str | None = None, chosen_a: str | None = None, variant_b: str | None = None,
                chosen_b: str | None = None) -> None:
        """Upsert a paired bootstrap comparison of method ``a`` against ``b`` (inside ``group``, when both are over
        one group of users; each side with its protocol, variant and how it was chosen, as in ``record``)."""
        row = {"dataset": dataset, "a": a, "b": b,
               **_typed(variant_a=variant_a, chosen_a=chosen_a, variant_b=variant_b, chosen_b=chosen_b, group=group,
                        protocol_a=protocol_a, protocol_b=protocol_b),
               "metric": result.metric, "mean_a": result.mean_a,
               "mean_b": result.mean_b, "diff": result.diff, "relative": result.relative,
               "ci95": [result.low, result.high], "significant": result.significant,
               "n_users": result.n_users, "n_seeds": result.n_seeds, "n_boot": result.n_boot, "profile": profile,
               "commit": git_commit()}
        self.comparisons = _upsert(self.comparisons, row, COMPARISON_KEY)
        self._changed()

    def forget(self, dataset: str, profile: str, methods: Iterable[str], table: str = "ranking",
               metric: str | None = None, *, chosen: bool | None = None) -> None:
        """Drop the rows of ``methods`` (of one metric, if given; every group, protocol and variant) from one table,
        and the comparisons they are side A of in the same groups (unless one metric is named): what a re-run no
        longer makes (an earlier choice) leaves the table. ``chosen``: only the rows of a setting chosen among the
        method's (True) or only the others (False)."""
        methods = set(methods)

        def mine(r: dict, method: str, was_chosen) -> bool:
            return (r["dataset"], r["profile"]) == (dataset, profile) and method in methods \
                and chosen in (None, bool(was_chosen))

        def gone(r: dict) -> bool:
            return mine(r, r["method"], r.get("chosen")) and r["table"] == table and metric in (None, r["metric"])

        kept, dropped = [], []
        for r in self.records:
            (dropped if gone(r) else kept).append(r)
        self.records = kept
        if metric is None:
            # the comparisons of a ranking row are over every user (no group), those of a breakdown row inside its group
            groups = {r["group"] for r in dropped if r.get("group")} | ({None} if table == "ranking" else set())
            self.comparisons = [c for c in self.comparisons
                                if not (mine(c, c["a"], c.get("chosen_a")) and c.get("group") in groups)]
        self._changed()

    def save(self) -> None:
        write_json(self.path, {"records": self.records, "comparisons": self.comparisons})
        write_text(self.dir / "results.md", self.markdown())

    # ------------------------------------------------------------------ reading
    def get(self, dataset: str, method: str, metric: str, table: str = "ranking", profile: str | None = None, *,
            group: str | None = None, protocol: str | None = None, variant: str | None = None,
            chosen: str | None = None) -> dict | None:
        wanted = (group, protocol, variant, chosen)
        for r in self.records:
            if (r["table"], r["dataset"], r["method"], r["metric"]) == (table, dataset, method, metric) \
                    and profile in (None, r["profile"]) \
                    and (r.get("group"), r.get("protocol"), r.get("variant"), r.get("chosen")) == wanted:
                return r
        return None

    def profiles(self) -> list[str]:
        """Profiles with records, in a fixed order (study first: the numbers that hold up)."""
        found = {r["profile"] for r in self.records} | {c["profile"] for c in self.comparisons}
        return sorted(found, key=lambda p: (PROFILE_ORDER.index(p) if p in PROFILE_ORDER else len(PROFILE_ORDER), p))

    def markdown(self, profiles: list[str] | None = None) -> str:
        """Per profile: one Markdown table per ``table`` (rows dataset/method, columns metrics), then comparisons."""
        out = ["# minirec results", "",
               "Written by the main job (`make main`); mean ± std over seeds (sample std, ddof = 1). Full ranking "
               "over the catalogue, history items excluded, leave-one-out. Do not edit by hand.", ""]
        for profile in profiles or self.profiles():
            out += self._profile_markdown(profile)
        return "\n".join(out)

    def _profile_markdown(self, profile: str) -> list[str]:
        out = [f"## profile: {profile}", ""]
        records = [r for r in self.records if r["profile"] == profile]
        comparisons = [c for c in self.comparisons if c["profile"] == profile]
        for table in dict.fromkeys(r["table"] for r in records):
            rows = [r for r in records if r["table"] == table]
            metrics = list(dict.fromkeys(r["metric"] for r in rows))
            if table == "ranking":
                metrics = [m for m in RANKING_METRICS if m in metrics] + [m for m in metrics if m not in RANKING_METRICS]
            out += [f"### {table}", "", "| dataset | method | seeds | " + " | ".join(metrics) + " |",
                    "|---|---|---|" + "---|" * len(metrics)]
            for key in dict.fromkeys((r["dataset"], display_name(r)) for r in rows):
                cells = {r["metric"]: r for r in rows if (r["dataset"], display_name(r)) == key}
                first = next(iter(cells.values()))
                values = [_cell(cells[m]) if m in cells else "" for m in metrics]
                out.append(f"| {key[0]} | {_escape(key[1])} | {len(first['seeds'])} | " + " | ".join(values) + " |")
            out.append("")
        if comparisons:
            out += ["### paired bootstrap comparisons", "",
                    "95% CI of A − B. Resampled: *users* (one seed), or *seeds, users*: the two-level bootstrap over "
                    "the seeds both have, then users within each seed.", "",
                    "| dataset | A | B | metric | A | B | A − B | 95% CI | resampled | verdict |",
                    "|---|---|---|---|---|---|---|---|---|---|"]
            for c in comparisons:
                verdict = direction(c["diff"], c["significant"], "A better", "B better")
                seeds = c.get("n_seeds", 1)
                over = f"{seeds} seeds, users" if seeds > 1 else "users"
                a, b = display_name(side(c, "a")), display_name(side(c, "b"))
                out.append(f"| {c['dataset']} | {_escape(a)} | {_escape(b)} | {c['metric']} | {c['mean_a']:.4f} | "
                           f"{c['mean_b']:.4f} | {c['diff']:+.4f}{format_relative(c['relative'])} | "
                           f"[{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}] | {over} | {verdict} |")
            out.append("")
        return out


RECORD_KEY = ("profile", "table", "dataset", "method", "variant", "chosen", "group", "protocol", "metric")
COMPARISON_KEY = ("profile", "dataset", "a", "variant_a", "chosen_a", "b", "variant_b", "chosen_b", "group",
                  "protocol_a", "protocol_b", "metric")
HELD_OUT_USERS = "held-out-user validation"   # the protocol of a checkpoint chosen on users left out of training


def _typed(**fields) -> dict:
    """The typed fields that are set (a record without a group is over every user, without a protocol the usual)."""
    return {k: v for k, v in fields.items() if v is not None}


def side(comparison: dict, which: str) -> dict:
    """One side (``"a"`` or ``"b"``) of a comparison as the fields of a record, for ``display_name``."""
    return {"method": comparison[which], "group": comparison.get("group"),
            **{k: comparison.get(f"{k}_{which}") for k in ("variant", "chosen", "protocol")}}


def display_name(row: dict) -> str:
    """How a record is named in a rendered table: its method with its variant and how that was chosen, then its
    protocol and group, rendered from the fields (``method (variant, chosen on validation) | protocol [group]``);
    nothing ever reads them back out of this name."""
    name = row["method"]
    inside = [part for part in (row.get("variant"), row.get("chosen") and f"chosen on {row['chosen']}") if part]
    if inside:
        name += f" ({', '.join(inside)})"
    if row.get("protocol"):
        name += f" | {row['protocol']}"
    if row.get("group"):
        name += f" [{row['group']}]"
    return name


def _escape(name: str) -> str:
    """A method name as one Markdown table cell (a ``|`` in it would start a new column)."""
    return name.replace("|", "\\|")


def _upsert(rows: list[dict], row: dict, key: tuple[str, ...]) -> list[dict]:
    """Replace the row with the same key in place (the order of the table never changes), or append it."""
    for i, r in enumerate(rows):
        if all(r.get(k) == row.get(k) for k in key):
            return rows[:i] + [row] + rows[i + 1:]
    return rows + [row]


def mean_sd(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single value) of per-seed numbers."""
    values = np.asarray(list(values), dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def format_mean_sd(values, digits: int = 4) -> str:
    """``mean ± sd`` over seeds (``mean_sd``); a single seed prints its value alone."""
    values = list(values)
    mean, sd = mean_sd(values)
    return f"{mean:.{digits}f} ± {sd:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def _cell(r: dict) -> str:
    if all(float(v).is_integer() for v in r["values"]) and len(r["seeds"]) == 1:
        return f"{int(r['mean'])}"
    if abs(r["mean"]) >= 100:
        return f"{r['mean']:.1f} ± {r['std']:.1f}" if len(r["seeds"]) > 1 else f"{r['mean']:.1f}"
    return f"{r['mean']:.4f} ± {r['std']:.4f}" if len(r["seeds"]) > 1 else f"{r['mean']:.4f}"


def save_per_user(figures_dir: str | Path | None, dataset: str, method: str, per_user: dict[str, np.ndarray],
                  profile: str) -> Path:
    """Keep a method's per-user test metrics so later notebooks can bootstrap against it."""
    from minirec.artifacts import atomic_path

    path = Path(figures_dir or default_figures_dir()) / "per_user" / f"{dataset}__{method}.npz"
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, profile=np.array(profile), **per_user)
    return path


def load_per_user(figures_dir: str | Path | None, dataset: str, method: str, profile: str,
                  n_users: int) -> dict[str, np.ndarray] | None:
    """Per-user metrics saved by ``save_per_user`` for this profile and user count, else None."""
    path = Path(figures_dir or default_figures_dir()) / "per_user" / f"{dataset}__{method}.npz"
    if not path.exists():
        return None
    with np.load(path) as data:
        if str(data["profile"]) != profile:
            return None
        out = {k: data[k] for k in data.files if k != "profile"}
    return out if all(len(v) == n_users for v in out.values()) else None


README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"
RUNTIME_START, RUNTIME_END = "<!-- runtime:start -->", "<!-- runtime:end -->"
VERDICTS_START, VERDICTS_END = "<!-- verdicts:start -->", "<!-- verdicts:end -->"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds < 2 * 3600 else f"{seconds / 3600:.1f} h"


def runtime_markdown(results: "ResultsTable", profiles: list[str]) -> str:
    """How long each profile's main job took, from its runtime records: the quickstart's time table."""
    rows = ["| profile | whole sequence, as last run | from scratch (no checkpoints) | slowest notebook from scratch |",
            "|---|---|---|---|"]
    for profile in profiles:
        seconds = {(r["method"], r["metric"]): r["mean"] for r in results.records
                   if r["profile"] == profile and r["table"] == "runtime"}
        if ("main job", "wall_seconds") not in seconds:
            continue
        scratch = {m: v for (m, metric), v in seconds.items() if metric == "without_checkpoints_seconds" and m != "main job"}
        slowest = max(scratch, key=scratch.get)
        rows.append(f"| `{profile}` | {_duration(seconds['main job', 'wall_seconds'])} | "
                    f"{_duration(seconds['main job', 'without_checkpoints_seconds'])} | "
                    f"`{slowest}`, {_duration(scratch[slowest])} |")
    return "\n".join(rows)


def verdicts_markdown(results: "ResultsTable", profiles: list[str]) -> str:
    """Notebook 12's verdict table (``regimes.verdicts``) for each profile that measured a hypothesis."""
    from minirec.experiments.regimes import verdicts
    rows = ["| profile | hypothesis | measured | verdict |", "|---|---|---|---|"]
    for profile in profiles:
        found = verdicts(results, profile)
        if all(v["verdict"].startswith("not measured") for v in found):
            continue
        rows += [f"| `{profile}` | {_escape(v['hypothesis'])} | {_escape(v['measured'])} | {v['verdict']} |"
                 for v in found]
    return "\n".join(rows) if len(rows) > 2 else "No hypothesis measured yet: run notebook 12."


def _replace_block(text: str, start: str, end: str, body: str) -> str:
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def update_readme(readme: str | Path, figures_dir: str | Path | None = None) -> bool:
    """Copy the rendered results tables (every profile but smoke) between the README's results markers, the main
    job's time per profile between its runtime markers, and notebook 12's verdicts between its verdict markers."""
    readme = Path(readme)
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        return False
    results = ResultsTable(figures_dir)
    profiles = [p for p in results.profiles() if p != "smoke"]
    body = results.markdown(profiles).split("\n", 3)[3].strip()
    body = body.replace("### ", "#### ").replace("## profile: ", "### profile: ")     # nest under the README's ##
    text = _replace_block(text, README_START, README_END, body)
    if RUNTIME_START in text and RUNTIME_END in text:
        text = _replace_block(text, RUNTIME_START, RUNTIME_END, runtime_markdown(results, profiles))
    if VERDICTS_START in text and VERDICTS_END in text:
        text = _replace_block(text, VERDICTS_START, VERDICTS_END, verdicts_markdown(results, profiles))
    write_text(readme, text)
    return True
