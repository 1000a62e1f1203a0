"""Plot helpers shared by the notebooks (so no notebook copies plotting code).

Every function returns a matplotlib Figure; notebooks save it with
``minirec.artifacts.save_figure`` so figures land atomically in ``figures/``.
"""
from __future__ import annotations

from collections import Counter

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .data import SequenceDataset


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
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def metric_bars(summary: dict[str, dict[str, tuple[float, float]]], metrics: tuple[str, ...]):
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
    ax.set(ylabel="value (mean ± std over seeds)")
    ax.legend()
    fig.tight_layout()
    return fig
