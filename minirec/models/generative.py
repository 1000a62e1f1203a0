"""Generative retrieval on a Qwen3 backbone: TIGER-mini (docs/method.md §4).

A user's history becomes a token sequence ``<bos> sid(i_1) sid(i_2) ... sid(i_T)`` where
``sid(i)`` is the item's L+1 SID tokens. The model learns next-token prediction on every
SID token (the first item of a window, which has no context, is not a target), and
recommends by trie-constrained beam search over the next item's SID (``beam_search``).

``GenerativeRecommender`` is a ``RankingModule``: its validation step runs the full
protocol through beam search, so early stopping watches validation NDCG@10 exactly as for
SASRec, and ``training.fit`` / ``train_seeds`` work unchanged. ``save_pretrained`` /
``from_pretrained`` keep the backbone, the tokeniser and the SID table together; loading
with a different SID table is an error.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from minirec.artifacts import atomic_path, write_json
from minirec.metrics import stage_batches
from minirec.models.backbone import SIDVocabulary, SIDVocabularyError, load_backbone
from minirec.models.beam_search import SIDTrie, constrained_beam_search, positions_from_mask
from minirec.sids.semantic_ids import SIDTable
from minirec.training import RankingModule


@dataclass
class GenRecConfig:
    """The architecture (and decoding width) of a generative recommender; how it trains is a profile's recipe."""
    backbone: str = "tiny"              # preset name (tiny | small) or a Qwen3 checkpoint folder / hub id
    max_items: int = 20                 # history items in a prompt and in a training window
    beam_width: int = 20                # beams kept per user (>= the largest K evaluated)
    attention_dropout: float = 0.2      # Qwen3's only dropout; 0 in the pretrained configs
    text_vocab_size: int = 1000         # BPE merges of the compact tokeniser (from-scratch presets)
    backbone_overrides: dict = field(default_factory=dict)   # Qwen3Config fields to change in a preset


def set_attention_dropout(model, p: float) -> None:
    """Set Qwen3's attention dropout on the config and on every attention layer already built."""
    model.config.attention_dropout = p
    for module in model.modules():
        if hasattr(module, "attention_dropout"):
            module.attention_dropout = p


class GenerativeRecommender(RankingModule):
    """TIGER-style generative recommender on a Qwen3 causal LM."""

    config_class = GenRecConfig
    family = "generative"               # trained by a profile's "generative" recipe

    def __init__(self, config: GenRecConfig, sid_table: SIDTable, texts: Sequence[str] = (),
                 model=None, tokenizer=None):
        super().__init__()
        self.config = config
        self.sid_table = sid_table
        sizes = sid_table.level_sizes()
        if model is None:
            model, tokenizer, vocab = load_backbone(config.backbone, sizes, texts, config.text_vocab_size,
                                                    **config.backbone_overrides)
        else:
            vocab = SIDVocabulary.from_tokenizer(tokenizer, sizes)
        self.model, self.tokenizer, self.vocab = model, tokenizer, vocab
        set_attention_dropout(self.model, config.attention_dropout)
        self.register_buffer("item_tokens", vocab.encode_items(torch.as_tensor(sid_table.codes)), persistent=False)
        self.trie = SIDTrie(sid_table.codes, sizes)
        self.val_beam = max(config.beam_width, self.val_k)

    # ------------------------------------------------------------------ sequences
    @property
    def history_tokens(self) -> torch.Tensor:
        """(N, tokens per item) how each item is written in a history: its SID tokens (a subclass may wrap them)."""
        return self.item_tokens

    @property
    def tokens_per_item(self) -> int:
        return self.history_tokens.shape[1]

    def encode_histories(self, items: torch.Tensor, with_labels: bool = False):
        """(B, T) item indices left-padded with -1 -> input_ids, attention_mask, position_ids (, labels).

        Layout: ``<bos>`` then pads then the items' SID tokens, so every prompt ends with its
        last item and positions count only real tokens.
        """
        items = items.to(self.item_tokens.device)
        B, T = items.shape
        P = self.tokens_per_item
        real = items >= 0                                                          # (B, T)
        tokens = self.history_tokens[items.clamp(min=0)]                           # (B, T, P)
        tokens = torch.where(real[:, :, None], tokens, torch.full_like(tokens, self.vocab.pad_token))
        bos = torch.full((B, 1), self.vocab.bos_token, dtype=torch.long, device=items.device)
        input_ids = torch.cat([bos, tokens.reshape(B, T * P)], dim=1)              # (B, 1 + T*P)
        mask = torch.cat([torch.ones_like(bos), real.repeat_interleave(P, dim=1).long()], dim=1)
        positions = positions_from_mask(mask)
        if not with_labels:
            return input_ids, mask, positions
        first = real & (real.long().cumsum(1) == 1)                                # the context-free first item
        target = (real & ~first).repeat_interleave(P, dim=1)
        labels = torch.where(target, input_ids[:, 1:], torch.full_like(input_ids[:, 1:], -100))
        labels = torch.cat([torch.full_like(bos, -100), labels], dim=1)
        return input_ids, mask, positions, labels

    # ------------------------------------------------------------------ training
    @staticmethod
    def window_of(batch) -> torch.Tensor:
        """(B, T+1) items of a training window from a ``SequenceDataModule`` batch."""
        inputs, targets = batch
        return torch.cat([inputs, targets[:, -1:]], dim=1)

    def loss_terms(self, batch) -> dict[str, torch.Tensor]:
        """The training loss (``loss``) and its parts, for logging."""
        input_ids, mask, positions, labels = self.encode_histories(self.window_of(batch), with_labels=True)
        loss = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, labels=labels).loss
        return {"loss": loss}

    def loss(self, batch) -> torch.Tensor:
        """Next-token cross-entropy on the SID tokens of a batch of item windows."""
        return self.loss_terms(batch)["loss"]

    def training_step(self, batch, batch_idx):
        terms = self.loss_terms(batch)
        for name, value in terms.items():
            self.log(f"train_{name}", value, on_step=False, on_epoch=True, prog_bar=name == "loss")
        return terms["loss"]

    # ------------------------------------------------------------------ recommending
    decode_step = None      # a subclass's step function for the beam search (S²GR thinks inside it)

    def beam_search(self, inputs: torch.Tensor, exclude: torch.Tensor | None, k: int, beam_width: int | None = None,
                    trace: list | None = None):
        """Top-k items and scores for (B, T) histories (item indices, -1 padded)."""
        self.trie.to(self.item_tokens.device)
        input_ids, mask, _ = self.encode_histories(inputs[:, -self.config.max_items:])
        exclude = None if exclude is None else exclude.to(self.item_tokens.device)
        return constrained_beam_search(self.model, self.vocab, self.trie, input_ids, mask,
                                       beam_width or max(self.config.beam_width, k), k, exclude,
                                       step_fn=self.decode_step, trace=trace)

    def rank_topk(self, inputs: torch.Tensor, exclude: torch.Tensor, k: int) -> torch.Tensor:
        return self.beam_search(inputs, exclude, k, max(self.val_beam, k))[0]

    def target_window(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(B, max_items + 1): the prompt's items followed by one target item per row."""
        targets = torch.as_tensor(targets, device=inputs.device)
        return torch.cat([inputs[:, -self.config.max_items:], targets[:, None]], dim=1).to(self.item_tokens.device)

    @torch.no_grad()
    def level_logits(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(B, P, V) logits at the positions that predict each SID token of ``targets``, teacher-forced."""
        input_ids, mask, positions = self.encode_histories(self.target_window(inputs, targets))
        logits = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions).logits
        return logits[:, -self.tokens_per_item - 1:-1]

    @torch.no_grad()
    def code_states(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(B, P, H) the last hidden states that predict each SID token of ``targets``, teacher-forced: what a
        linear probe reads to ask what the model knows before it writes each code."""
        input_ids, mask, positions = self.encode_histories(self.target_window(inputs, targets))
        hidden = self.model.base_model(input_ids=input_ids, attention_mask=mask, position_ids=positions)
        return hidden.last_hidden_state[:, -self.tokens_per_item - 1:-1]

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, folder: str | Path) -> Path:
        """Backbone + tokeniser (transformers format), SID table and minirec config in one folder."""
        folder = Path(folder)
        self.model.save_pretrained(folder / "backbone")
        self.tokenizer.save_pretrained(folder / "backbone")
        self.sid_table.save(folder / "sid_table.npz")
        head = {k: v for k, v in self.state_dict().items() if not k.startswith("model.")}
        if head:                                   # parameters outside the backbone (S²GR's level vectors, ...)
            with atomic_path(folder / "head.pt") as tmp:
                torch.save(head, tmp)
        write_json(folder / "minirec.json", {"config": asdict(self.config), "kind": type(self).__name__})
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, sid_table: SIDTable | None = None) -> "GenerativeRecommender":
        """Load a saved recommender; ``sid_table`` (if given) must be the one it was trained with."""
        folder = Path(folder)
        saved = SIDTable.load(folder / "sid_table.npz")
        if sid_table is not None and (sid_table.codes.shape != saved.codes.shape
                                      or not np.array_equal(sid_table.codes, saved.codes)):
            raise SIDVocabularyError(f"{folder} was trained with another SID table ({saved.codes.shape[0]} items, "
                                     f"level sizes {saved.level_sizes()}) than the one given "
                                     f"({sid_table.codes.shape[0]} items, level sizes {sid_table.level_sizes()})")
        meta = json.loads((folder / "minirec.json").read_text())
        if meta["kind"] != cls.__name__:
            raise ValueError(f"{folder} holds a {meta['kind']}, not a {cls.__name__}; load it with {meta['kind']}")
        config = cls.config_class(**meta["config"])
        tokenizer = AutoTokenizer.from_pretrained(folder / "backbone")
        model = AutoModelForCausalLM.from_pretrained(folder / "backbone")
        module = cls(config, sid_table or saved, model=model, tokenizer=tokenizer)
        if (folder / "head.pt").exists():
            module.load_state_dict(torch.load(folder / "head.pt", map_location="cpu"), strict=False)
        return module


@torch.no_grad()
def level_accuracy(module: GenerativeRecommender, stage, batch_size: int = 256) -> np.ndarray:
    """Per SID position: how often the model's top code (within that level) is the target's, given the true prefix.

    Teacher-forced, so each level is judged on its own; S²GR's claim is that thinking steps
    balance these accuracies across levels.
    """
    module.eval()
    vocab, hits, total = module.vocab, np.zeros(module.tokens_per_item), 0
    device = module.item_tokens.device
    for x, _, y in stage_batches(stage, module.config.max_items, batch_size, device):
        logits = module.level_logits(x, y)                                            # (B, P, V)
        truth = module.item_tokens[torch.as_tensor(y, device=device)]                # (B, P)
        for d in range(module.tokens_per_item):
            pred = logits[:, d, vocab.level_slice(d)].argmax(-1) + vocab.offsets[d]
            hits[d] += (pred == truth[:, d]).sum().item()
        total += len(y)
    return hits / total
