"""OneRec-Think's reasoning enhancement: GRPO with a beam reward (docs/method.md §7).

The reasoning model (stage ``reason``) writes ``<think> rationale </think>`` and then
beam-searches an item. Reinforcement treats the rationale as the action and the beam
search as part of the environment:

1. rollout: for each prompt (a history whose next item is known), sample ``group_size``
   rationales from the current model; after each, run the trie-constrained beam search
   (``rl_beam`` beams, the same search as at inference) and score the beams against the
   target with a reward function;
2. advantages: rewards are normalised within each prompt's group,
   ``A_i = (r_i - mean(r)) / (std(r) + eps)``; a group whose rewards are all equal carries no
   signal (``A = 0``) and is counted;
3. update: the clipped surrogate of PPO with a KL penalty towards the frozen SFT model,
   averaged over each rationale's tokens, then over rationales (``grpo_loss``).

Rewards (one function each, all in [0, 1]):
- ``beam``: 1 if the target is among the beams (the paper's Rollout-Beam reward);
- ``rank``: a hit, plus a bonus that decays with the target's rank among the beams;
- ``partial``: the best beam's share of semantic SID levels equal to the target's, level by
  level (the partial-credit form of the method notes; a hit, or an item colliding with the
  target on every semantic level, scores 1).

Dropout is off during reinforcement, so the first update's ratio is exactly 1.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from minirec.data.dataset import LeaveOneOutSplit, pad_left
from minirec.models.beam_search import constrained_beam_search, positions_from_mask
from minirec.profiles import data_size
from minirec.reasoning.itemic import left_pad
from minirec.reasoning.onerec import (ItemicDataModule, OneRecThink, ReasonerConfig, ReasoningActivation, StageData,
                                      _Reasoning, _Subsample)


# ----------------------------------------------------------------------------- rewards
def beam_reward(beams: torch.Tensor, targets: torch.Tensor, codes: torch.Tensor | None = None) -> torch.Tensor:
    """1 where the target is among a rollout's beams (B, W), else 0."""
    return (beams == targets[:, None]).any(1).float()


def rank_reward(beams: torch.Tensor, targets: torch.Tensor, codes: torch.Tensor | None = None) -> torch.Tensor:
    """A hit at 0-based rank r scores (1 + 1 / log2(r + 2)) / 2: 1 at the top, falling towards 1/2; a miss 0."""
    hit = beams == targets[:, None]
    rank = torch.where(hit, torch.arange(beams.shape[1], device=beams.device), beams.shape[1]).min(1).values
    bonus = 1.0 / torch.log2(rank.float() + 2)
    return torch.where(hit.any(1), (1 + bonus) / 2, torch.zeros_like(bonus))


def partial_reward(beams: torch.Tensor, targets: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """max over beams of the share of levels l with beam code_l == target code_l; ``codes`` (items, levels) holds
    the semantic levels only. Dead beams (-1) score 0."""
    same = codes[beams.clamp(min=0)] == codes[targets][:, None, :]                   # (B, W, levels)
    share = same.float().mean(2) * (beams >= 0)
    return share.max(1).values


REWARDS = {"beam": beam_reward, "rank": rank_reward, "partial": partial_reward}


# ----------------------------------------------------------------------------- the objective
def group_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, G) rewards -> (P, G) advantages normalised within each row, and (P,) rows whose rewards are all equal.

    Such a row gets advantage 0 exactly (no division by a zero spread).
    """
    mean = rewards.mean(1, keepdim=True)
    std = rewards.std(1, unbiased=False, keepdim=True)
    flat = (rewards == rewards[:, :1]).all(1)
    advantages = torch.where(flat[:, None], torch.zeros_like(rewards), (rewards - mean) / (std + eps))
    return advantages, flat


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor, advantages: torch.Tensor,
              mask: torch.Tensor, clip: float = 0.2, beta: float = 1e-3) -> dict[str, torch.Tensor]:
    """GRPO's objective for (N, T) token log-probabilities of N rationales (``mask``: their real tokens).

        ratio_t     = exp(logp_t - old_logp_t)
        surrogate_t = min(ratio_t * A, clip(ratio_t, 1 - clip, 1 + clip) * A)
        kl_t        = exp(ref_t - logp_t) - (ref_t - logp_t) - 1            (k3 estimator of KL(pi || ref), >= 0)
        loss        = - mean_i [ sum_t mask_t (surrogate_t - beta * kl_t) / sum_t mask_t ]
    """
    mask = mask.float()
    ratio = torch.exp(logp - old_logp)
    a = advantages[:, None]
    surrogate = torch.minimum(ratio * a, ratio.clamp(1 - clip, 1 + clip) * a)
    log_ref_ratio = ref_logp - logp
    kl = torch.exp(log_ref_ratio) - log_ref_ratio - 1
    per_token = surrogate - beta * kl
    lengths = mask.sum(1).clamp(min=1)
    loss = -((per_token * mask).sum(1) / lengths).mean()
    clipped = ((ratio - 1).abs() > clip).float()
    return {"loss": loss, "kl": ((kl * mask).sum(1) / lengths).mean(),
            "clipped": (clipped * mask).sum() / mask.sum().clamp(min=1)}


def completion_logprobs(model, ids: torch.Tensor, mask: torch.Tensor, n_last: int,
                        allowed: torch.Tensor) -> torch.Tensor:
    """(B, n_last) log-probabilities of each row's last ``n_last`` tokens, from the distribution the rationale
    was sampled from: softmax over the ``allowed`` vocabulary only (text tokens and ``</think>``)."""
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask), logits_to_keep=n_last + 1)
    logits = out.logits[:, :-1].float().masked_fill(~allowed, -torch.inf)
    return F.log_softmax(logits, dim=-1).gather(2, ids[:, -n_last:, None]).squeeze(2)


# ----------------------------------------------------------------------------- the module
@dataclass
class GRPOConfig(ReasonerConfig):
    """The reasoning model's architecture and how it thinks and captions (``ReasonerConfig``'s fields, carried over
    from the reasoning stage by ``RunSpec.then``), plus how reinforcement samples, rewards and regularises (paper
    values in comments). None of the supervised stages' data fields: GRPO trains on its own rollouts."""
    stage: str = "reason"               # it recommends as the reasoning model does
    group_size: int = data_size(16)     # rationales sampled per prompt (paper 16; the course profile halves it)
    rl_beam: int = data_size(32)        # beams after each rationale, the reward's candidates (paper 32; course 16)
    reward: str = "beam"                # beam | rank | partial (REWARDS)
    kl_beta: float = 1e-3               # KL penalty towards the SFT model (paper 0.001)
    clip: float = 0.2                   # ratio clipping (paper 0.2)
    rl_temperature: float = 1.0         # sampling temperature of the rollouts
    rl_updates: int = 1                 # optimiser steps per batch of rollouts (> 1: the ratio leaves 1, clipping acts)
    rl_prompts: int = data_size(64)     # prompts per epoch (each epoch ends with a validation)


@dataclass
class Rollouts:
    ids: torch.Tensor            # (N, T) prompt + <think> + rationale + </think>, left padded
    mask: torch.Tensor           # (N, T)
    completion: torch.Tensor     # (N, n) the rationale tokens and </think> among the last n columns
    rewards: torch.Tensor        # (P, G)
    ref_logp: torch.Tensor       # (N, n) under the frozen SFT model
    old_logp: torch.Tensor | None  # (N, n) under the model that sampled them (None: the same as the first update's)
    thoughts: list               # N rationales (token lists), group by group
    beams: torch.Tensor          # (N, rl_beam) the items found after each rationale
    targets: torch.Tensor        # (N,) each rollout's target item


class _Indices(Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        return i


class PromptDataModule(ItemicDataModule):
    """Batches of training prompts (indices of (user, position) pairs), a fresh random subset each epoch."""

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return DataLoader(_Indices(len(self.train_set)), batch_size=self.batch_size, sampler=self.sampler,
                          collate_fn=list)


class PolicyOptimisation(ReasoningActivation):
    """GRPO's stage: the reasoning model (it thinks, then beam-searches, as after reasoning activation) trained on
    rollouts from a fresh subset of ``rl_prompts`` training prompts each epoch, under the ``rl`` recipe. Its
    training step and reference model are the module's (``ReasoningRL``). It starts from the reasoning model, which
    thinks: epoch 0 validates the starting weights thinking."""
    family, start_thinks = "rl", True

    def examples(self, module, split, seed):
        data = _Reasoning(None, split.train, None, None, module.config)
        return StageData(data, _Subsample(data, module.config.rl_prompts, seed), ("reason",))

    def on_train_epoch_end(self, module):
        pass                                          # no rationale refinement: the rollouts are the model's own


class ReasoningRL(OneRecThink):
    """The reasoning model trained further with GRPO; it recommends exactly as ``OneRecThink(stage="reason")``."""

    config_class = GRPOConfig
    stages = {"reason": PolicyOptimisation()}

    def __init__(self, config: GRPOConfig, sid_table, texts=(), model=None, tokenizer=None):
        if config.stage != "reason":
            raise ValueError("GRPO trains the reasoning model: stage must be 'reason'")
        if config.reward not in REWARDS:
            raise ValueError(f"unknown reward {config.reward!r}; choose one of {sorted(REWARDS)}")
        if config.group_size < 2:
            raise ValueError("a GRPO group needs at least 2 rationales (advantages are relative to the group)")
        super().__init__(config, sid_table, texts, model, tokenizer)
        self.automatic_optimization = False
        self.register_buffer("codes", torch.as_tensor(np.asarray(sid_table.codes)[:, :sid_table.levels],
                                                     dtype=torch.long), persistent=False)
        allowed = self.text_tokens.clone()
        allowed[self.vocab.think_end_token] = True
        self.register_buffer("rationale_vocab", allowed, persistent=False)

    def make_datamodule(self, split: LeaveOneOutSplit, seed: int = 0) -> PromptDataModule:
        return PromptDataModule(self, split, seed)

    @property
    def reference(self):
        """The frozen copy of the starting model during training; before any training, the model itself (which is
        then the starting model)."""
        return self.__dict__.get("_reference", self.model)

    def on_train_start(self) -> None:
        """Freeze a copy of the starting (SFT) model as the KL reference; kept out of the checkpoint."""
        ref = copy.deepcopy(self.model).eval()
        for p in ref.parameters():
            p.requires_grad_(False)
        self.__dict__["_reference"] = ref

    @torch.no_grad()
    def rollout(self, histories: list[np.ndarray], targets: torch.Tensor, generator: torch.Generator | None = None,
                seen: list[np.ndarray] | None = None) -> Rollouts:
        """Sample ``group_size`` rationales per history, beam-search after each and reward the beams.

        ``seen``: per prompt, every item the user had seen before the target (kept out of the beams, as at
        evaluation); by default the history itself."""
        c, v, device = self.config, self.vocab, self.wrapped_tokens.device
        G = c.group_size
        rows = self.prompts(torch.as_tensor(pad_left(histories)))
        thoughts = self.write_rationales(rows, G, c.rl_temperature, generator)
        seqs = self.with_thoughts([r for r in rows for _ in range(G)], thoughts)
        ids, mask = left_pad([s + [v.item_token] for s in seqs], v.pad_token)
        exclude = torch.as_tensor(pad_left([h for h in (seen or histories) for _ in range(G)])).to(device)
        self.trie.to(device)
        beams, _ = constrained_beam_search(self.model, v, self.trie, ids.to(device), mask.to(device), c.rl_beam,
                                           c.rl_beam, exclude)
        targets = targets.to(device).repeat_interleave(G)
        rewards = REWARDS[c.reward](beams, targets, self.codes).view(len(rows), G)
        n = max(len(t) for t in thoughts) + 1
        ids, mask = ids[:, :-1].to(device), mask[:, :-1].to(device)            # without <|sid_begin|>
        lengths = torch.tensor([len(t) + 1 for t in thoughts], device=device)
        completion = torch.arange(n, device=device)[None, :] >= n - lengths[:, None]
        ref = completion_logprobs(self.reference, ids, mask, n, self.rationale_vocab)
        old = None if c.rl_updates == 1 else completion_logprobs(self.model, ids, mask, n, self.rationale_vocab)
        return Rollouts(ids, mask, completion, rewards, ref, old, thoughts, beams, targets)

    def rl_step(self, rollouts: Rollouts) -> dict[str, torch.Tensor]:
        """The GRPO loss of one batch of rollouts under the current weights."""
        c = self.config
        advantages, flat = group_advantages(rollouts.rewards)
        logp = completion_logprobs(self.model, rollouts.ids, rollouts.mask, rollouts.completion.shape[1],
                                   self.rationale_vocab)
        logp = torch.where(rollouts.completion, logp, torch.zeros_like(logp))   # padding columns: -inf otherwise
        ref = torch.where(rollouts.completion, rollouts.ref_logp, torch.zeros_like(logp))
        old = logp.detach() if rollouts.old_logp is None else torch.where(rollouts.completion, rollouts.old_logp,
                                                                          torch.zeros_like(logp))
        terms = grpo_loss(logp, old, ref, advantages.flatten(), rollouts.completion, c.clip, c.kl_beta)
        terms["flat_groups"] = flat.float().mean()
        return terms

    def training_step(self, batch, batch_idx):
        self.model.eval()                                   # no dropout: sampling and scoring see the same policy
        data = self.stage_data.dataset
        histories = [data.history(i) for i in batch]
        targets = torch.tensor([data.target(i) for i in batch])
        seen = [data.train[u][:t] for u, t in data.positions[batch]]
        rollouts = self.rollout(histories, targets, seen=seen)
        opt, schedule = self.optimizers(), self.lr_schedulers()
        for _ in range(self.config.rl_updates):
            terms = self.rl_step(rollouts)
            opt.zero_grad()
            self.manual_backward(terms["loss"])
            opt.step()
            schedule.step()
        B = len(batch)
        self.log("reward", rollouts.rewards.mean(), on_step=False, on_epoch=True, batch_size=B)
        self.log("hit_any", (rollouts.rewards > 0).any(1).float().mean(), on_step=False, on_epoch=True, batch_size=B)
        for name in ("loss", "kl", "clipped", "flat_groups"):
            self.log(name if name != "loss" else "rl_loss", terms[name].detach(), on_step=False, on_epoch=True,
                     batch_size=B)
        return terms["loss"].detach()
