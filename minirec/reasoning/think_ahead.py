"""Think-Ahead serving: the reasoning model thinks offline, a fast model finishes the item online (docs/method.md §7).

A reasoning model is too slow for a request: it writes a rationale token by token before it
can decode an item. OneRec-Think's serving splits the work in two:

- **offline** (``ThinkAhead.offline``), for every user ahead of the request: the reasoning
  model writes its rationale and beam-searches only the first ``levels`` SID codes (the
  paper: 2), keeping the ``n_prefixes`` best prefixes. They are cached.
- **online** (``ThinkAhead.online``), per request: the fast model (a SID model without
  reasoning, TIGER-mini here) runs its batched constrained beam search over the catalogue
  *restricted to items under the cached prefixes*, so it completes the remaining codes and
  ranks the finished items by its own scores.

Both models must write the same SIDs: a fast model trained on another SID table is refused.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from minirec.data.dataset import EvalStage, pad_left
from minirec.metrics import ranker_device, stage_batches, topk_metrics


class ThinkAhead:
    """Offline prefixes from ``reasoner`` (a reasoning ``OneRecThink``), online completion by ``fast``."""

    def __init__(self, reasoner, fast, levels: int = 2, n_prefixes: int = 20):
        if not np.array_equal(np.asarray(reasoner.sid_table.codes), np.asarray(fast.sid_table.codes)):
            raise ValueError("the fast model writes other SIDs than the reasoning model: Think-Ahead needs one SID table")
        depth = reasoner.trie.depth
        if not 1 <= levels < depth:
            raise ValueError(f"levels must be between 1 and {depth - 1} (the online model decodes the rest), got {levels}")
        if n_prefixes < 1:
            raise ValueError("n_prefixes must be at least 1")
        self.reasoner, self.fast, self.levels, self.n_prefixes = reasoner, fast, levels, n_prefixes
        self.item_prefix = reasoner.trie.item_prefix[levels].cpu()          # (N,) each item's prefix id at `levels`

    @property
    def max_len(self) -> int:
        return max(self.reasoner.config.max_items, self.fast.config.max_items)

    @torch.no_grad()
    def offline(self, inputs: torch.Tensor, exclude: torch.Tensor | None) -> torch.Tensor:
        """(B, n_prefixes) prefix ids of the first ``levels`` codes, best first (-1: fewer exist)."""
        width = max(self.reasoner.config.beam_width, self.n_prefixes)
        prefixes, _ = self.reasoner.beam_search(inputs, exclude, self.n_prefixes, width, levels=self.levels)
        return prefixes.cpu()

    def allowed_items(self, prefixes: torch.Tensor) -> torch.Tensor:
        """(B, N) True for items whose first ``levels`` codes are one of the row's cached prefixes."""
        prefixes = torch.as_tensor(prefixes)
        return (self.item_prefix[None, :, None] == prefixes[:, None, :]).any(2)

    @torch.no_grad()
    def online(self, inputs: torch.Tensor, exclude: torch.Tensor | None, prefixes: torch.Tensor, k: int) -> torch.Tensor:
        """(B, k) items: the fast model's beam search over the items under each row's cached prefixes."""
        blocked = ~self.allowed_items(prefixes).to(inputs.device)
        ids = torch.arange(blocked.shape[1], device=inputs.device).expand_as(blocked)
        outside = torch.where(blocked, ids, torch.full_like(ids, -1))          # the exclusion format: -1 = keep
        exclude = outside if exclude is None else torch.cat([exclude.to(inputs.device), outside], dim=1)
        width = max(self.fast.config.beam_width, k)
        return self.fast.beam_search(inputs, exclude, k, width)[0]

    def rank_topk(self, inputs: torch.Tensor, exclude: torch.Tensor, k: int) -> torch.Tensor:
        """Both halves in one call (offline then online), for ``metrics.evaluate``."""
        return self.online(inputs, exclude, self.offline(inputs, exclude), k)

    def prefix_cache(self, stage: EvalStage, batch_size: int = 256) -> np.ndarray:
        """The offline half for every user of a stage: (users, n_prefixes) prefix ids."""
        self.reasoner.eval()
        device = ranker_device(self.reasoner)
        rows = [self.offline(x, ex) for x, ex, _ in stage_batches(stage, self.max_len, batch_size, device)]
        return torch.cat(rows).numpy()

    def evaluate_cached(self, stage: EvalStage, cache: np.ndarray, ks: tuple[int, ...] = (5, 10, 20),
                        batch_size: int = 256) -> dict[str, np.ndarray]:
        """Per-user metrics of the online half, reading the prefixes from ``cache`` (rows in stage order)."""
        if len(cache) != len(stage):
            raise ValueError(f"the prefix cache holds {len(cache)} users, the stage {len(stage)}")
        self.fast.eval()
        out: dict[str, list] = {}
        lo = 0
        for x, ex, targets in stage_batches(stage, self.max_len, batch_size, ranker_device(self.fast)):
            top = self.online(x, ex, torch.as_tensor(cache[lo:lo + len(x)]), max(ks))
            lo += len(x)
            for name, v in topk_metrics(top, targets, ks).items():
                out.setdefault(name, []).append(v)
        return {name: np.concatenate(v) for name, v in out.items()}


def prefix_recall(cache: np.ndarray, targets: np.ndarray, item_prefix: torch.Tensor) -> np.ndarray:
    """Per user: is the target's own prefix among the cached ones (the ceiling of the online half)?"""
    own = item_prefix.numpy()[np.asarray(targets)]
    return (np.asarray(cache) == own[:, None]).any(1).astype(float)


@torch.no_grad()
def serving_cost(ahead: ThinkAhead, stage: EvalStage, n_users: int = 256, rounds: int = 3, k: int = 10,
                 batch_size: int = 128) -> dict[str, float]:
    """Median seconds per user, in alternating rounds, of: the fast model alone, the reasoning model alone,
    Think-Ahead's offline half (rationale + first codes) and its online half (completion from the cache)."""
    ahead.reasoner.eval()
    ahead.fast.eval()
    device = ranker_device(ahead.reasoner)
    x = torch.as_tensor(pad_left(stage.inputs(ahead.max_len)[:n_users]), device=device)
    ex = torch.as_tensor(pad_left(stage.histories[:n_users]), device=device)
    chunks = [(x[lo:lo + batch_size], ex[lo:lo + batch_size]) for lo in range(0, len(x), batch_size)]
    cache = [ahead.offline(a, b) for a, b in chunks]
    width = max(ahead.reasoner.config.beam_width, k)
    jobs = {"fast model alone": lambda i: ahead.fast.rank_topk(*chunks[i], k),
            "reasoning model alone": lambda i: ahead.reasoner.beam_search(*chunks[i], k, width),
            "Think-Ahead offline": lambda i: ahead.offline(*chunks[i]),
            "Think-Ahead online": lambda i: ahead.online(*chunks[i], cache[i], k)}
    times = {name: [] for name in jobs}
    for _ in range(rounds):
        for name, job in jobs.items():
            start = time.perf_counter()
            for i in range(len(chunks)):
                job(i)
            if device.type == "cuda":
                torch.cuda.synchronize(device)      # a GPU queues its work: time it done, not queued
            times[name].append((time.perf_counter() - start) / len(x))
    return {name: float(np.median(t)) for name, t in times.items()}


def prefix_sweep(reasoner, fast, stage: EvalStage, cached_levels: tuple[int, ...] = (1, 2),
                 prefix_counts: tuple[int, ...] = (5, 10, 20)) -> list[dict]:
    """One row per (cached levels, prefixes per user) on ``stage`` (validation, to choose): NDCG@10 of the online
    half, the prefix ceiling (``prefix_recall``) and how many items lie under a user's prefixes. The offline half
    runs once per level, at the largest prefix count; fewer prefixes are the cache's first columns."""
    rows = []
    for lv in cached_levels:
        ahead = ThinkAhead(reasoner, fast, levels=lv, n_prefixes=max(prefix_counts))
        cache = ahead.prefix_cache(stage)
        for n in prefix_counts:
            rows.append({"levels": lv, "prefixes": n,
                         "prefix_ceiling": float(prefix_recall(cache[:, :n], stage.targets, ahead.item_prefix).mean()),
                         "items_allowed": float(ahead.allowed_items(cache[:, :n]).sum(1).float().mean()),
                         "val_ndcg10": float(ahead.evaluate_cached(stage, cache[:, :n])["ndcg@10"].mean())})
    return rows


def choose_and_serve(reasoner, fast, split, cached_levels: tuple[int, ...] = (1, 2),
                     prefix_counts: tuple[int, ...] = (5, 10, 20), bench_users: int = 128,
                     bench_rounds: int = 2) -> dict:
    """Notebook 10's protocol for one pair of trained models: the cached levels and prefixes per user chosen on
    validation NDCG@10 (``prefix_sweep``), the chosen setting's per-user test metrics, and the serving cost of each
    path (``serving_cost``). Nothing here reads the test stage before the choice."""
    sweep = prefix_sweep(reasoner, fast, split.valid, cached_levels, prefix_counts)
    best = max(sweep, key=lambda row: row["val_ndcg10"])
    ahead = ThinkAhead(reasoner, fast, levels=best["levels"], n_prefixes=best["prefixes"])
    per_user = ahead.evaluate_cached(split.test, ahead.prefix_cache(split.test))
    seconds = serving_cost(ahead, split.test, n_users=bench_users, rounds=bench_rounds, k=10)
    return {"sweep": sweep, "levels": best["levels"], "prefixes": best["prefixes"], "val_ndcg10": best["val_ndcg10"],
            "per_user": per_user, "seconds": seconds}
