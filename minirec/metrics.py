"""The evaluation protocol shared by every method (docs/method.md §0).

- Full ranking over the whole catalogue: no sampled negatives.
- Items in the user's own history (everything before the target) are excluded from the
  ranking, for every method.
- Recall@K and NDCG@K for K in 5, 10, 20, averaged over users. With one held-out item
  per user, Recall@K is the hit rate and NDCG@K = 1 / log2(rank + 1) when the target
  sits at 1-based ``rank`` <= K, else 0.
- Comparisons between two methods use a paired bootstrap over users: resample users
  with replacement, recompute the difference of the means, read off the 2.5% and 97.5%
  quantiles. With ~900 users, differences of ~10% NDCG@10 are often inside the noise.
  With several seeds of both methods (the study) the bootstrap has two levels: resample
  seeds with replacement, then users within each drawn seed, so the interval carries the
  seed-to-seed noise as well as the users'. One seed (the course) is the user bootstrap.

A *ranker* is anything with ``rank_topk(inputs, exclude, k) -> (B, k) item indices``,
where ``inputs`` and ``exclude`` are (B, T) and (B, E) LongTensors left-padded with -1.
Score-based models get that from ``topk_from_scores``; generative models from beam search.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from minirec.data.dataset import EvalStage, MAX_HISTORY, pad_left

KS = (5, 10, 20)


class Ranker(Protocol):
    def rank_topk(self, inputs: torch.Tensor, exclude: torch.Tensor, k: int) -> torch.Tensor: ...


def exclusion_mask(exclude: torch.Tensor, n_items: int) -> torch.Tensor:
    """(B, E) item indices padded with -1 -> (B, n_items) boolean mask of excluded items."""
    mask = torch.zeros(exclude.shape[0], n_items + 1, dtype=torch.bool, device=exclude.device)
    mask.scatter_(1, torch.where(exclude < 0, n_items, exclude), True)  # pads land in a spare column
    return mask[:, :n_items]


def topk_from_scores(scores: torch.Tensor, exclude: torch.Tensor | None, k: int) -> torch.Tensor:
    """Top-k items per row after removing excluded items.

    Ties are broken towards the lower item index (a stable sort), so a method with many
    equal scores (popularity) gets a deterministic ranking rather than an arbitrary one.
    """
    scores = scores.float().clone()
    if exclude is not None:
        scores[exclusion_mask(exclude, scores.shape[1])] = -torch.inf
    return torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]


def topk_metrics(topk: torch.Tensor | np.ndarray, targets: torch.Tensor | np.ndarray,
                 ks: tuple[int, ...] = KS) -> dict[str, np.ndarray]:
    """Per-user Recall@K and NDCG@K from ranked lists (B, >= max K) and targets (B,)."""
    topk = torch.as_tensor(topk)
    targets = torch.as_tensor(targets).to(topk.device)
    if topk.shape[1] < max(ks):
        raise ValueError(f"ranked lists have {topk.shape[1]} items, need at least {max(ks)}")
    hits = topk[:, :max(ks)] == targets[:, None]                     # (B, K)
    found = hits.any(dim=1)
    rank = torch.where(found, hits.float().argmax(dim=1), torch.full_like(targets, max(ks)))  # 0-based
    out = {}
    for k in ks:
        inside = (rank < k).float()
        out[f"recall@{k}"] = inside.cpu().numpy()
        out[f"ndcg@{k}"] = (inside / torch.log2(rank.float() + 2.0)).cpu().numpy()
    return out


def summarize(per_user: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean of each per-user metric."""
    return {name: float(np.mean(v)) for name, v in per_user.items()}


@torch.no_grad()
def evaluate(ranker: Ranker, stage: EvalStage, ks: tuple[int, ...] = KS, batch_size: int = 256,
             max_len: int = MAX_HISTORY, device: str | torch.device | None = None) -> dict[str, np.ndarray]:
    """Run the protocol on one stage: per-user metrics for every K. Batches go to ``device`` (default: where the
    ranker's weights are; the CPU for a ranker without weights)."""
    device = device if device is not None else ranker_device(ranker)
    results: dict[str, list[np.ndarray]] = {}
    for x, ex, targets in stage_batches(stage, max_len, batch_size, device):
        topk = ranker.rank_topk(x, ex, max(ks))
        for name, v in topk_metrics(topk, targets, ks).items():
            results.setdefault(name, []).append(v)
    return {name: np.concatenate(v) for name, v in results.items()}


def ranker_device(ranker) -> torch.device:
    """Where a ranker's weights are (the CPU for one without parameters, such as popularity)."""
    parameters = getattr(ranker, "parameters", None)
    first = next(iter(parameters()), None) if callable(parameters) else None
    return first.device if first is not None else torch.device("cpu")


def stage_batches(stage: EvalStage, max_len: int = MAX_HISTORY, batch_size: int = 256,
                  device: str | torch.device = "cpu"):
    """Batches of a stage: inputs (B, max_len) and full histories (B, ·), left-padded, and targets (B,)."""
    inputs = stage.inputs(max_len)
    for lo in range(0, len(stage), batch_size):
        hi = min(lo + batch_size, len(stage))
        yield (torch.as_tensor(pad_left(inputs[lo:hi]), device=device),
               torch.as_tensor(pad_left(stage.histories[lo:hi]), device=device), stage.targets[lo:hi])


@dataclass
class BootstrapResult:
    """Paired bootstrap of mean(a) - mean(b): over users, or over seeds and then users (``n_seeds`` > 1)."""

    metric: str
    mean_a: float
    mean_b: float
    diff: float          # mean_a - mean_b
    low: float           # 2.5% quantile of the bootstrap differences
    high: float          # 97.5% quantile
    n_users: int
    n_boot: int
    n_seeds: int = 1     # seeds resampled at the first level (1: users only)

    @property
    def relative(self) -> float:
        """Difference relative to b (0.1 = a is 10% higher)."""
        return self.diff / self.mean_b if self.mean_b else float("nan")

    @property
    def significant(self) -> bool:
        """True when the 95% interval excludes zero."""
        return self.low > 0 or self.high < 0

    def verdict(self, name_a: str = "A", name_b: str = "B") -> str:
        """One sentence a notebook can print."""
        text = (f"{self.metric}: {name_a} {self.mean_a:.4f} vs {name_b} {self.mean_b:.4f}, "
                f"difference {self.diff:+.4f}{format_relative(self.relative)}, 95% CI [{self.low:+.4f}, {self.high:+.4f}]")
        if self.significant:
            return text + f" -> {name_a if self.diff > 0 else name_b} is better beyond bootstrap noise."
        return text + " -> within noise: the interval contains zero."


def direction(diff: float, significant: bool, better: str = "better", worse: str = "worse") -> str:
    """A short verdict for a table cell: ``better`` or ``worse`` beyond bootstrap noise, else ``within noise``."""
    return (better if diff > 0 else worse) if significant else "within noise"


def format_relative(relative: float) -> str:
    """`` (+12.3%)``, or nothing when the reference scores 0 and the ratio is undefined."""
    return f" ({relative:+.1%})" if np.isfinite(relative) else ""


def bootstrap_mean(values: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the mean of ``values`` and its 95% percentile-bootstrap interval."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"a bootstrap needs a non-empty 1-D array, got shape {values.shape}")
    means = values[np.random.default_rng(seed).integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(values.mean()), float(low), float(high)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, metric: str = "", n_boot: int = 2000,
                     seed: int = 0) -> BootstrapResult:
    """Paired bootstrap of per-user metrics ``a`` and ``b`` (same users, same order).

    1-D arrays (users,): resample users. 2-D arrays (seeds, users), row s of both from seed s: the two-level
    bootstrap (``two_level_means``): resample seeds, then users within each drawn seed. One row is the user
    bootstrap, with the same draws.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim not in (1, 2) or a.size == 0:
        raise ValueError(f"paired bootstrap needs two arrays of one shape, (users,) or (seeds, users), "
                         f"got {a.shape} and {b.shape}")
    diff = (a - b).reshape(-1, a.shape[-1])                 # (S, U)
    n_seeds, n_users = diff.shape
    rng = np.random.default_rng(seed)
    if n_seeds == 1:
        diffs = diff[0][rng.integers(0, n_users, size=(n_boot, n_users))].mean(axis=1)
    else:
        diffs = np.concatenate([two_level_means(diff, rng.integers(0, n_seeds, size=(rows, n_seeds)),
                                                rng.integers(0, n_users, size=(rows, n_seeds, n_users)))
                                for rows in _chunks(n_boot, max(1, 2_000_000 // (n_seeds * n_users)))])
    low, high = np.quantile(diffs, [0.025, 0.975])
    return BootstrapResult(metric, float(a.mean()), float(b.mean()), float(a.mean() - b.mean()),
                           float(low), float(high), n_users, n_boot, n_seeds)


def two_level_means(diff: np.ndarray, seed_draws: np.ndarray, user_draws: np.ndarray) -> np.ndarray:
    """The statistic of each two-level resample: ``diff`` (S, U) per-seed, per-user differences; ``seed_draws``
    (B, S') the seeds drawn; ``user_draws`` (B, S', U') the users drawn within each drawn seed. Returns (B,) the
    mean over the drawn (seed, user) cells."""
    picked = diff[seed_draws[:, :, None], user_draws]      # (B, S', U')
    return picked.mean(axis=(1, 2))


def _chunks(total: int, size: int):
    """Sizes of consecutive chunks that add up to ``total`` (bounded memory for many users)."""
    for lo in range(0, total, size):
        yield min(size, total - lo)
