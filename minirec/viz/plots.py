"""Plot helpers shared by the notebooks (so no notebook copies plotting code).

Every function returns a matplotlib Figure; notebooks save it with
``minirec.artifacts.save_figure`` so figures land atomically in ``figures/``.
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from minirec.data.dataset import SequenceDataset


def popularity_long_tail(dataset: SequenceDataset, train_counts: np.ndarray | None = None):
    """Interactions per item, items sorted by popularity (log scale), and cumulative share."""
    counts = np.sort(train_counts if train_counts is not None
                     else np.bincount(np.concatenate(dataset.sequences), minlength=dataset.n_items))[::-1]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    ax1.plot(np.arange(1, len(counts) + 1), np.maximum(counts, 0.8))
    ax1.set(xscale="log", yscale="log", xlabel="item rank by popularity", ylabel="interactions",
            title=f"{dataset.name}: popularity long tail")
    share = np.cumsum(counts) / counts.sum()
    ax2.plot(np.arange(1, len(counts) + 1) / len(counts), share)
    ax2.axvline(0.2, ls="--", c="grey")
    ax2.set(xlabel="fraction of items (most popular first)", ylabel="share of interactions",
            title=f"top 20% of items = {share[int(0.2 * len(counts)) - 1]:.0%} of interactions")
    fig.tight_layout()
    return fig


def history_lengths(dataset: SequenceDataset, cap: int = 50):
    """Distribution of sequence lengths per user, with the history cap marked."""
    lengths = np.array([len(s) for s in dataset.sequences])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(lengths, bins=np.logspace(np.log10(lengths.min()), np.log10(lengths.max() + 1), 30))
    ax.axvline(cap, c="red", ls="--", label=f"history cap = {cap}")
    ax.set(xscale="log", xlabel="interactions per user", ylabel="users",
           title=f"{dataset.name}: {np.mean(lengths > cap):.0%} of users have more than {cap}")
    ax.legend()
    fig.tight_layout()
    return fig


def genres_over_time(dataset: SequenceDataset, freq: str = "MS", top: int = 8):
    """Share of each genre among interactions per calendar period (stacked area)."""
    if dataset.timestamps is None:
        raise ValueError(f"{dataset.name} has no timestamps")
    items = np.concatenate(dataset.sequences)
    times = pd.to_datetime(np.concatenate(dataset.timestamps), unit="s")
    genres = dataset.items["genres"].to_numpy()
    rows = [(t, g) for t, i in zip(times, items) for g in genres[i]]
    frame = pd.DataFrame(rows, columns=["time", "genre"])
    frequent = [g for g, _ in Counter(frame["genre"]).most_common(top)]
    frame["genre"] = frame["genre"].where(frame["genre"].isin(frequent), "other")
    table = frame.groupby([pd.Grouper(key="time", freq=freq), "genre"]).size().unstack(fill_value=0)
    share = table.div(table.sum(axis=1), axis=0)[frequent + (["other"] if "other" in table else [])]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.stackplot(share.index, share.T.to_numpy(), labels=share.columns)
    ax.set(ylabel="share of interactions", title=f"{dataset.name}: genres over time", ylim=(0, 1))
    ax.legend(loc="center left", bbox_to_anchor=(1, 0.5), fontsize=8)
    fig.tight_layout()
    return fig


def learning_curves(runs: dict[str, list[dict]], metrics: tuple[str, ...] = ("train_loss", "val_ndcg10")):
    """One panel per metric, one line per run (e.g. one per seed or per setting)."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.5), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for name, rows in runs.items():
            rows = [r for r in rows if metric in r]
            ax.plot([r["epoch"] + 1 for r in rows], [r[metric] for r in rows], label=name, marker=".")
        ax.set(xlabel="epoch", ylabel=metric, title=metric)
        if metric in ("recon", "vq"):
            ax.set_yscale("log")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def metric_bars(summary: dict[str, dict[str, tuple[float, float]]], metrics: tuple[str, ...],
                ylabel: str = "value (mean ± std over seeds)"):
    """Grouped bars: ``summary[method][metric] = (mean, std)``."""
    methods = list(summary)
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(1.6 * len(metrics) + 2, 3.5))
    x = np.arange(len(metrics))
    for j, method in enumerate(methods):
        means = [summary[method][m][0] for m in metrics]
        stds = [summary[method][m][1] for m in metrics]
        ax.bar(x + j * width, means, width, yerr=stds, capsize=3, label=method)
    ax.set_xticks(x + width * (len(methods) - 1) / 2, metrics)
    ax.set(ylabel=ylabel)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def task_losses(stages: dict[str, list[dict]], tasks: Sequence[str]):
    """Training loss of each task per epoch, the stages one after another on a shared epoch axis."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    offset, colours = 0, dict(zip(tasks, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for stage, rows in stages.items():
        for task in tasks:
            key = f"train_loss_{task}"
            points = [(offset + r["epoch"] + 1, r[key]) for r in rows if key in r]
            if points:
                ax.plot(*zip(*points), marker="o", color=colours[task], label=task if offset == 0 else None)
        if offset:
            ax.axvline(offset + 0.5, color="k", lw=0.8, ls="--")
        ax.annotate(stage, (offset + 1, 1), xycoords=("data", "axes fraction"), va="top", fontsize=8)
        offset += max([r["epoch"] + 1 for r in rows] or [0])
    ax.set(xlabel="epoch (stages in order)", ylabel="training loss per token", title="loss of each alignment task")
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------- embeddings and SIDs
def primary_genres(dataset: SequenceDataset, top: int = 8) -> np.ndarray:
    """Each item's most frequent genre among the dataset's ``top`` genres ('other' otherwise)."""
    counts = Counter(g for gs in dataset.items["genres"] for g in gs)
    frequent = [g for g, _ in counts.most_common(top)]
    rank = {g: i for i, g in enumerate(frequent)}
    out = []
    for gs in dataset.items["genres"]:
        known = sorted((g for g in gs if g in rank), key=rank.get)
        out.append(known[0] if known else "other")
    return np.array(out)


def scatter_by_label(ax, coords: np.ndarray, labels: np.ndarray, title: str, legend: bool = True, s: float = 6,
                     label_centres: bool = False):
    """Points coloured by a categorical label (codes sort as numbers); ``label_centres`` writes each label at its median."""
    names = list(np.unique(labels))
    if len(names) <= 20:
        cmap = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
        colours = [cmap(i) for i in range(len(names))]
    else:  # many codes: spread them over a continuous map
        colours = plt.get_cmap("nipy_spectral")(np.linspace(0.02, 0.98, len(names)))
    for name, colour in zip(names, colours):
        keep = labels == name
        ax.scatter(coords[keep, 0], coords[keep, 1], s=s, color=colour, label=str(name), alpha=0.8)
    if label_centres:
        for name in names:
            x, y = np.median(coords[labels == name], axis=0)
            ax.text(x, y, str(name), fontsize=7, ha="center", va="center", weight="bold",
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.7))
    ax.set(title=title, xticks=[], yticks=[])
    if legend and len(names) <= 20:
        ax.legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1, 0.5))


def code_usage(tables: dict, levels: int | None = None):
    """Bar charts of items per code: one row per quantiser, one column per level (sorted)."""
    names = list(tables)
    levels = levels or next(iter(tables.values())).levels
    fig, axes = plt.subplots(len(names), levels, figsize=(3.6 * levels, 2.5 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        t = tables[name]
        for level in range(levels):
            counts = np.sort(np.bincount(t.codes[:, level], minlength=t.codebook_size))[::-1]
            ax = axes[r][level]
            ax.bar(np.arange(len(counts)), counts, width=1.0, color="tab:blue" if counts.min() > 0 else "tab:red")
            ax.axhline(t.n_items / t.codebook_size, color="k", ls="--", lw=0.8, label="perfectly even use (items / K)")
            ax.set(title=f"{name} · level {level + 1} · {int((counts > 0).sum())}/{len(counts)} used",
                   xticks=[], ylabel="items" if level == 0 else None,
                   xlabel="codes, most used first" if r == len(names) - 1 else None)
    axes[0][-1].legend(fontsize=7, loc="upper right")
    fig.suptitle("items per code (red: some code unused)", fontsize=10)
    fig.tight_layout()
    return fig


def code_heatmaps(tables: dict):
    """For each quantiser, items per (level-1 code, level-2 code) cell."""
    import seaborn as sns

    fig, axes = plt.subplots(1, len(tables), figsize=(4.2 * len(tables), 3.8), squeeze=False)
    for ax, (name, t) in zip(axes[0], tables.items()):
        grid = np.zeros((t.codebook_size, t.codebook_size))
        np.add.at(grid, (t.codes[:, 0], t.codes[:, 1]), 1)
        sns.heatmap(grid, ax=ax, cmap="viridis", cbar=True, xticklabels=False, yticklabels=False)
        ax.set(title=f"{name}: items per (L1, L2)", xlabel="level-2 code", ylabel="level-1 code")
    fig.tight_layout()
    return fig


def cluster_hierarchy(coords: np.ndarray, codes: np.ndarray, zoom: tuple[int, ...] = (), title: str = ""):
    """UMAP coloured by first-level code, then panels showing level-2 codes inside chosen level-1 codes."""
    counts = np.bincount(codes[:, 0])
    zoom = zoom or tuple(c for c in np.argsort(-counts, kind="stable")[:2] if counts[c] > 0)
    fig, axes = plt.subplots(1, 1 + len(zoom), figsize=(5 * (1 + len(zoom)), 4.5), squeeze=False)
    scatter_by_label(axes[0][0], coords, codes[:, 0], (title or "level-1 codes") + "\n(each code written at its centre)",
                     legend=False, label_centres=True)
    for ax, c1 in zip(axes[0][1:], zoom):
        ax.scatter(coords[:, 0], coords[:, 1], s=3, color="lightgrey")
        inside = codes[:, 0] == c1
        scatter_by_label(ax, coords[inside], codes[inside, 1], f"inside level-1 code {c1}: level-2 codes (zoomed)",
                         s=14, legend=False, label_centres=True)
        lo, hi = np.percentile(coords[inside], [1, 99], axis=0)
        pad = 0.15 * np.maximum(hi - lo, 1e-6)
        ax.set(xlim=(lo[0] - pad[0], hi[0] + pad[0]), ylim=(lo[1] - pad[1], hi[1] + pad[1]))
    fig.tight_layout()
    return fig


def quantizer_curves(histories: dict[str, list[dict]], metrics: tuple[str, ...] = ("recon", "vq", "uniformity")):
    """Training losses per epoch of trained quantisers."""
    return learning_curves(histories, metrics)


def beam_tree(trace: list, title: str = "", finals: list[str] | None = None, top: int = 8):
    """How the beams expand the trie, depth by depth: each dot is a kept prefix, lines join parents to children."""
    depth = len(trace)
    fig, ax = plt.subplots(figsize=(2.6 * depth + 3, 0.45 * top + 1.5))
    alive = [i for i, (_, _, s) in enumerate(trace[-1][:top]) if np.isfinite(s)]
    keep = [set(alive)]                                   # beams of the last depth worth drawing
    for d in range(depth - 1, 0, -1):
        keep.insert(0, {trace[d][i][0] for i in keep[0]})
    for d in range(depth):
        for i in sorted(keep[d]):
            parent, code, score = trace[d][i]
            ax.scatter(d, -i, color="tab:blue", zorder=3)
            ax.annotate(f"{code}  ({score:.1f})", (d, -i), textcoords="offset points", xytext=(6, 3), fontsize=7)
            if d > 0:
                ax.plot([d - 1, d], [-parent, -i], color="grey", lw=0.8, zorder=1)
    if finals:
        for i in sorted(keep[-1]):
            ax.text(depth - 0.45, -i, finals[i], fontsize=7, color="darkred", va="center")
    names = [f"level {d + 1}" for d in range(depth - 1)] + [f"level {depth}: de-dup code"]
    ax.set(xticks=range(depth), xticklabels=names, yticks=[], xlim=(-0.3, depth + 1.6),
           title=title or "constrained beam search: kept prefixes (code, cumulative log-prob)"
           + ("; the last code only tells apart items whose other codes collide" if depth > 1 else ""))
    fig.tight_layout()
    return fig


def thinking_attention(att: np.ndarray, item_labels: list[str], layer: int | None = None, head: int | None = None,
                       title: str = ""):
    """Heatmap: rows = thinking steps t_1..t_L, columns = history items (oldest left).

    ``att`` is (L, layers, heads, T) from ``S2GR.thinking_attention``; a layer/head of None
    averages over it.
    """
    a = att if layer is None else att[:, layer:layer + 1]
    a = a if head is None else a[:, :, head:head + 1]
    a = a.mean(axis=(1, 2))                                                      # (L, T)
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * a.shape[1] + 2), 0.5 * a.shape[0] + 2.2))
    im = ax.imshow(a, aspect="auto", cmap="viridis")
    ax.set_yticks(range(a.shape[0]), [f"t{l + 1}" for l in range(a.shape[0])])
    ax.set_xticks(range(a.shape[1]), item_labels, rotation=70, ha="right", fontsize=7)
    where = f"layer {layer}" if layer is not None else "mean over layers"
    where += f", head {head}" if head is not None else ", mean over heads"
    ax.set_title(title or f"attention of each thinking step over the history ({where})")
    fig.colorbar(im, ax=ax, fraction=0.02, label="attention (summed over an item's SID tokens)")
    fig.tight_layout()
    return fig


def thinking_attention_grid(att: np.ndarray, title: str = ""):
    """Every layer x head: one small heatmap (thinking steps x history items) each."""
    n_levels, n_layers, n_heads, _ = att.shape
    fig, axes = plt.subplots(n_layers, n_heads, figsize=(2.6 * n_heads, 1.1 * n_layers + 0.4 * n_levels * n_layers),
                             squeeze=False, sharex=True, sharey=True)
    vmax = float(att.max())
    for layer in range(n_layers):
        for head in range(n_heads):
            ax = axes[layer][head]
            im = ax.imshow(att[:, layer, head], aspect="auto", cmap="viridis", vmin=0, vmax=vmax)
            ax.set_yticks(range(n_levels), [f"t{l + 1}" for l in range(n_levels)])
            ax.set_title(f"layer {layer} head {head}", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("history item (oldest -> newest)")
    fig.suptitle(title or "thinking-token attention per layer and head")
    fig.tight_layout()
    fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.03, label="attention (one scale for every panel)")
    return fig


def attention_profiles(by_recency: np.ndarray, by_genre: dict[str, np.ndarray], sem: np.ndarray | None = None,
                       genre_sem: dict[str, np.ndarray] | None = None):
    """Left: mean attention of t_l by recency; right: genre-sharing vs other items (both ± one standard error)."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
    n_levels, T = by_recency.shape
    for level in range(n_levels):
        ax1.errorbar(np.arange(1, T + 1), by_recency[level], yerr=None if sem is None else sem[level], marker=".",
                     capsize=2, label=f"t{level + 1}")
    ax1.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax1.set(xlabel="items back from the newest (1 = last watched)", ylabel="mean attention per item",
            title="thinking attention by recency")
    ax1.legend()
    x = np.arange(n_levels)
    width = 0.8 / len(by_genre)
    for j, (name, values) in enumerate(by_genre.items()):
        ax2.bar(x + j * width, values, width, label=name, capsize=3,
                yerr=None if genre_sem is None else genre_sem[name])
    ax2.set_xticks(x + width * (len(by_genre) - 1) / 2, [f"t{l + 1}" for l in range(n_levels)])
    ax2.set(ylabel="mean attention per item", title="attention to items sharing a genre with the target")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig


def check_bars(values: dict[str, float], reference: str | None = None, xlabel: str = "", title: str = ""):
    """Horizontal bars, one per diagnostic check, with the ``reference`` check's value as a dashed line."""
    names = list(values)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.4))
    colours = ["tab:grey" if n == reference else "tab:blue" for n in names]
    ax.barh(range(len(names)), [values[n] for n in names], color=colours)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    if reference is not None:
        ax.axvline(values[reference], color="k", ls="--", lw=0.8, label=f"reference: {reference}")
        ax.legend(fontsize=7, loc="lower right")
    ax.set(xlabel=xlabel, title=title)
    fig.tight_layout()
    return fig


def group_bars(frame: pd.DataFrame, title: str = "", ylabel: str = "test NDCG@10"):
    """Grouped bars from ``breakdown.by_group``: one group of bars per user group, one bar per model."""
    groups, models = list(dict.fromkeys(frame["group"])), list(dict.fromkeys(frame["model"]))
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(1.5 * len(groups) + 3.5, 3.6))
    for j, model in enumerate(models):
        rows = frame[frame["model"] == model].set_index("group")
        ax.bar(np.arange(len(groups)) + j * width, [rows["mean"].get(g, np.nan) for g in groups], width, label=model)
    users = frame.groupby("group", sort=False)["users"].first()
    ax.set_xticks(np.arange(len(groups)) + width * (len(models) - 1) / 2,
                  [f"{g}\n({users[g]} users)" for g in groups])
    ax.set(ylabel=ylabel, title=title)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.tight_layout()
    return fig


def kc_sweep(frame: pd.DataFrame):
    """NDCG@10 on validation and test against the number of codeword clusters Kc."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for column in ("val_ndcg10", "test_ndcg10"):
        ax.plot(frame["Kc"], frame[column], marker="o", label=column)
    ax.set_xscale("log", base=2)
    ax.set_xticks(frame["Kc"], [str(k) for k in frame["Kc"]])
    ax.set(xlabel="Kc (codeword clusters per level)", ylabel="NDCG@10", title="S²GR-mini: cluster count")
    ax.legend()
    fig.tight_layout()
    return fig


def rl_curves(runs: dict[str, list[dict]], steps_per_epoch: int, start: float | None = None,
              metrics: tuple[str, ...] = ("reward", "kl", "flat_groups", "val_ndcg10")):
    """Reinforcement curves against optimiser steps: one panel per metric, one line per run.

    Each row of a run is one epoch (its mean over the epoch's steps, or the validation at its end);
    ``start`` draws the starting model's validation NDCG@10 at step 0.
    """
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for name, rows in runs.items():
            rows = [r for r in rows if metric in r]
            steps = [(r["epoch"] + 1) * steps_per_epoch for r in rows]
            values = [r[metric] for r in rows]
            if metric == "val_ndcg10" and start is not None:
                steps, values = [0] + steps, [start] + values
            ax.plot(steps, values, marker=".", label=name)
        ax.set(xlabel="GRPO steps", title=metric)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def latency_quality(points: dict[str, tuple[float, float]], xlabel: str = "ms per user (online)",
                    ylabel: str = "test NDCG@10"):
    """One labelled point per serving option: (latency, quality)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, (x, y) in points.items():
        ax.scatter([x], [y], s=40)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title="latency against quality")
    fig.tight_layout()
    return fig


def agent_scores(rows: list[dict], scores: Sequence[str] = ("hit", "satisfied"),
                 names: dict[str, str] | None = None):
    """Grouped bars per task kind, one bar per agent, with 95% bootstrap intervals (rows of ``episodes.episode_table``).
    Each kind's tick names what its hit is (its rows' ``hit is``: hit@10, a bundle's slots, a choice's first place)."""
    names = names or {"hit": "hit of the held-out target", "satisfied": "constraint satisfaction"}
    agents = list(dict.fromkeys(r["agent"] for r in rows))
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    fig, axes = plt.subplots(1, len(scores), figsize=(5.5 * len(scores), 3.6), squeeze=False)
    width = 0.8 / len(agents)
    for ax, score in zip(axes[0], scores):
        for a, agent in enumerate(agents):
            cells = [next(r[score] for r in rows if r["agent"] == agent and r["kind"] == k) for k in kinds]
            mean = np.array([c[0] for c in cells])
            err = np.array([[c[0] - c[1] for c in cells], [c[2] - c[0] for c in cells]])
            ax.bar(np.arange(len(kinds)) + (a - (len(agents) - 1) / 2) * width, mean, width, yerr=err, capsize=2,
                   label=agent)
        ticks = [k.replace("_", "-") for k in kinds]
        if score == "hit":
            ticks = [t + "\n" + next(r.get("hit is", "") for r in rows if r["kind"] == k) for t, k in zip(ticks, kinds)]
        ax.set_xticks(np.arange(len(kinds)), ticks, fontsize=7)
        ax.set(ylabel=names.get(score, score), ylim=(0, 1.05))
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def seed_curves(curves: dict[str, dict[int, list[dict]]], metrics: tuple[str, ...] = ("val_ndcg10", "lr"),
                log: tuple[str, ...] = ("lr",)):
    """Per-epoch curves of several models over seeds: one panel per metric, one colour per model, one line per seed.

    ``curves`` maps a model to {seed: rows}, each row one epoch (``epoch`` and the metrics); panels whose metric is in
    ``log`` use a log scale (a learning rate cut by halves reads as even steps)."""
    ncol = 2 if len(metrics) < 4 else 3
    legend_rows = -(-sum(len(by_seed) for by_seed in curves.values()) // ncol)
    height = 3.6 + 0.16 * legend_rows  # the legend sits below the panels, never over the curves
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), height), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes[0], metrics):
        for colour, (name, by_seed) in zip(colours * 2, curves.items()):
            for i, (seed, rows) in enumerate(sorted(by_seed.items())):
                rows = [r for r in rows if metric in r]
                ax.plot([r["epoch"] + 1 for r in rows], [r[metric] for r in rows], color=colour, marker=".",
                        alpha=0.85, linestyle=("-", "--", ":")[i % 3], label=f"{name}, seed {seed}")
        ax.set(xlabel="epoch", title=metric, yscale="log" if metric in log else "linear")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, (0.16 * legend_rows + 0.1) / height, 1, 1))
    return fig


def gain_by_world(rows: list[dict], title: str = "", ylabel: str = "S²GR-mini − TIGER-mini, NDCG@10"):
    """A method's gain over the model it extends in each world, with its 95% interval: one point per world and group
    of users (rows: ``world``, ``users``, ``diff``, ``low``, ``high``), worlds in the order given."""
    worlds = list(dict.fromkeys(r["world"] for r in rows))
    groups = list(dict.fromkeys(r["users"] for r in rows))
    fig, ax = plt.subplots(figsize=(1.6 * len(worlds) + 3, 3.4))
    for j, group in enumerate(groups):
        mine = {r["world"]: r for r in rows if r["users"] == group}
        x = np.arange(len(worlds)) + (j - (len(groups) - 1) / 2) * 0.15
        y = np.array([mine[w]["diff"] if w in mine else np.nan for w in worlds])
        low = np.array([mine[w]["low"] if w in mine else np.nan for w in worlds])
        high = np.array([mine[w]["high"] if w in mine else np.nan for w in worlds])
        ax.errorbar(x, y, yerr=[y - low, high - y], fmt="o", capsize=4, label=group)
    ax.axhline(0.0, color="k", lw=0.8, ls="--")
    ax.set_xticks(range(len(worlds)), worlds)
    ax.set(ylabel=ylabel, title=title)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.tight_layout()
    return fig


def ceiling_shares(rows: list[dict], title: str = "share of the Bayes-optimal NDCG@10"):
    """Each model's NDCG@10 as a share of the ceiling: one panel per group of users, one group of bars per world."""
    groups = list(dict.fromkeys(r["users"] for r in rows))
    worlds = list(dict.fromkeys(r["world"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    width = 0.8 / len(models)
    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups) + 2.5, 3.4), sharey=True, squeeze=False)
    for ax, group in zip(axes[0], groups):
        for j, model in enumerate(models):
            share = {r["world"]: r["share of ceiling"] for r in rows if r["users"] == group and r["model"] == model}
            ax.bar(np.arange(len(worlds)) + j * width, [share.get(w, np.nan) for w in worlds], width, label=model)
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_xticks(np.arange(len(worlds)) + width * (len(models) - 1) / 2, worlds)
        ax.set(title=group)
    axes[0][0].set_ylabel(title)
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.tight_layout()
    return fig


def probe_bars(rows: list[dict], title: str = "linear probe on held-out users"):
    """Probe accuracy per level for each model's states, with the majority class as a dashed line per level."""
    levels = sorted({r["level"] for r in rows})
    states = list(dict.fromkeys(f"{r['model']} · {r['state']}" for r in rows))
    width = 0.8 / len(states)
    fig, ax = plt.subplots(figsize=(2.2 * len(levels) + 3.5, 3.4))
    for j, state in enumerate(states):
        acc = {r["level"]: r["accuracy"] for r in rows if f"{r['model']} · {r['state']}" == state}
        ax.bar(np.arange(len(levels)) + j * width, [acc.get(lv, np.nan) for lv in levels], width, label=state)
    for i, level in enumerate(levels):
        floor = next(r["majority class"] for r in rows if r["level"] == level)
        ax.hlines(floor, i - width / 2, i + 0.8 - width / 2, colors="k", linestyles="--", lw=0.8)
    names = {r["level"]: f"level {r['level']}: {r['latent']}" for r in rows}
    ax.set_xticks(np.arange(len(levels)) + width * (len(states) - 1) / 2, [names[lv] for lv in levels])
    ax.set(ylabel="accuracy (dashed: majority class)", title=title, ylim=(0, 1))
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.tight_layout()
    return fig


def driving_attention(rows: list[dict], title: str = "thinking steps' attention per history item"):
    """Mean attention per item on the planted driving positions and on the older ones, per world and thinking step
    (rows: ``world``, ``step``, ``positions``, ``attention``)."""
    worlds = list(dict.fromkeys(r["world"] for r in rows))
    fig, axes = plt.subplots(1, len(worlds), figsize=(3.4 * len(worlds) + 2, 3.2), sharey=True, squeeze=False)
    for ax, world in zip(axes[0], worlds):
        mine = [r for r in rows if r["world"] == world]
        steps = list(dict.fromkeys(r["step"] for r in mine))
        kinds = list(dict.fromkeys(r["positions"] for r in mine))
        for j, kind in enumerate(kinds):
            value = {r["step"]: r["attention"] for r in mine if r["positions"] == kind}
            ax.bar(np.arange(len(steps)) + j * 0.4, [value.get(s, np.nan) for s in steps], 0.4, label=kind)
        ax.set_xticks(np.arange(len(steps)) + 0.2, steps)
        ax.set(title=world)
    axes[0][0].set_ylabel("mean attention per item")
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def labelled_maps(panels: list[tuple[np.ndarray, np.ndarray, str]], s: float = 5):
    """Side-by-side 2-D maps (coords, labels, title), each coloured by its own labels."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 4.4), squeeze=False)
    for ax, (coords, labels, title) in zip(axes[0], panels):
        scatter_by_label(ax, coords, labels, title, s=s)
    fig.tight_layout()
    return fig
