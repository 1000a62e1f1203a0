"""Non-learned baselines in the shared protocol: most-popular items.

Popularity is counted on the training part of the split only, so the validation and
test items never inform it. Ties are broken towards the lower item index.
"""
from __future__ import annotations

import numpy as np
import torch

from minirec.data.dataset import LeaveOneOutSplit
from minirec.metrics import topk_from_scores


class Popularity:
    """Rank every item by its number of training interactions."""

    def __init__(self, split: LeaveOneOutSplit):
        self.counts = torch.as_tensor(split.train_item_counts(), dtype=torch.float32)  # (N,)

    @property
    def n_items(self) -> int:
        return len(self.counts)

    def scores(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, T) histories -> (B, N) scores; the history itself does not matter."""
        return self.counts.to(inputs.device).expand(inputs.shape[0], -1)

    def rank_topk(self, inputs: torch.Tensor, exclude: torch.Tensor, k: int) -> torch.Tensor:
        return topk_from_scores(self.scores(inputs), exclude, k)

    def top_items(self, k: int = 10) -> np.ndarray:
        return torch.sort(self.counts, descending=True, stable=True).indices[:k].numpy()
