"""SASRec (Kang & McAuley, ICDM 2018): the sequential bar every generative model must pass.

A causal Transformer over item embeddings with learned positions; the hidden state at
position t scores every catalogue item by a dot product with the (tied) item embedding
table. Trained with full-softmax cross-entropy at every position of a training window
(as RecBole's ``loss_type='CE'``, which is markedly stronger than the original BPR with
one sampled negative), and early-stopped on validation NDCG@10 through ``training.fit``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from minirec.metrics import topk_from_scores
from minirec.training import RankingModule


@dataclass
class SASRecConfig:
    n_items: int                 # catalogue size (item indices 0..n_items-1)
    max_len: int = 50            # history cap: positions the model sees
    hidden: int = 64             # embedding and model width d
    n_layers: int = 2            # Transformer blocks
    n_heads: int = 2             # attention heads per block
    dropout: float = 0.2         # on embeddings, attention and feed-forward


class SASRec(RankingModule):
    family = "sasrec"            # trained by a profile's "sasrec" recipe

    def __init__(self, config: SASRecConfig | None = None, **kwargs):
        super().__init__()
        config = config or SASRecConfig(**kwargs)
        self.config = config
        self.save_hyperparameters(asdict(config))
        d = config.hidden
        self.item_emb = nn.Embedding(config.n_items + 1, d, padding_idx=0)  # row 0 = padding
        self.pos_emb = nn.Embedding(config.max_len, d)
        self.emb_dropout = nn.Dropout(config.dropout)
        block = nn.TransformerEncoderLayer(d, config.n_heads, dim_feedforward=4 * d, dropout=config.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, config.n_layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(d)
        nn.init.normal_(self.item_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)

    @classmethod
    def load_from_checkpoint(cls, path, map_location=None, **kwargs):
        state = torch.load(path, map_location=map_location, weights_only=False)
        model = cls(SASRecConfig(**state["hyper_parameters"]))
        model.load_state_dict(state["state_dict"])
        return model

    def hidden_states(self, items: torch.Tensor) -> torch.Tensor:
        """(B, T) item indices, -1 = padding -> (B, T, d) causal hidden states."""
        L_max = self.config.max_len
        items = F.pad(items[:, -L_max:], (L_max - min(items.shape[1], L_max), 0), value=-1)  # (B, L_max)
        T = L_max  # right-aligned: the latest item always sits at the last position
        tokens = items + 1                                              # 0 = padding
        positions = torch.arange(T, device=items.device)
        x = self.emb_dropout(self.item_emb(tokens) + self.pos_emb(positions))   # (B, T, d)
        causal = torch.ones(T, T, dtype=torch.bool, device=items.device).tril()
        allowed = causal & (tokens > 0)[:, None, :]                     # (B, T, T): past, non-pad keys
        allowed |= torch.eye(T, dtype=torch.bool, device=items.device)  # no empty row (pad queries)
        mask = (~allowed).repeat_interleave(self.config.n_heads, dim=0)  # (B*heads, T, T), True = blocked
        h = self.blocks(x, mask=mask)
        return self.final_norm(h)                                       # (B, T, d)

    def item_logits(self, h: torch.Tensor) -> torch.Tensor:
        """(..., d) -> (..., n_items) dot products with every catalogue item."""
        return h @ self.item_emb.weight[1:].T

    def scores(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, T) histories -> (B, n_items) next-item scores from the last position."""
        return self.item_logits(self.hidden_states(inputs)[:, -1])

    def rank_topk(self, inputs: torch.Tensor, exclude: torch.Tensor, k: int) -> torch.Tensor:
        return topk_from_scores(self.scores(inputs.to(self.device)), exclude.to(self.device), k)

    def training_step(self, batch, batch_idx):
        inputs, targets = batch                                         # (B, T), (B, T); -1 = none
        logits = self.item_logits(self.hidden_states(inputs))          # (B, T, N)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-1)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        return loss
