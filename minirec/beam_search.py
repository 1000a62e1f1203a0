"""Trie-constrained beam search over semantic IDs, batched and cached (METHOD.md §5).

The catalogue's SIDs form a prefix trie. Instead of walking it in Python for every beam,
``SIDTrie`` numbers the distinct prefixes of each depth and stores a dense transition
table ``child[d][prefix, code] -> prefix id at depth d+1 (or -1)``, so one gather gives
the allowed codes of every beam at once (the "vectorised trie" idea).

``constrained_beam_search`` decodes the L+1 SID tokens of the next item for a batch of
users: one forward of the prompts, then one cached forward per decoding step for all
users x beams. Guarantees:
- every returned item is a catalogue item (the trie is built from the *whole* catalogue);
- items in the user's history are excluded *inside* the trie (a prefix stays open only
  while it still leads to a non-excluded item), so no beam is spent on a dead end;
- a beam never ends up with no allowed token: dead beams are scored -inf and never
  returned; if fewer items than ``k`` exist, the tail of the result is -1.

Scores are sums of the model's full-vocabulary log-probabilities of the SID tokens, so
they equal a brute-force scoring of every item (tested) when the beam is wide enough.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .backbone import SIDVocabulary


class SIDTrie:
    """Prefix trie over all catalogue SIDs as dense tensors."""

    def __init__(self, codes: np.ndarray, level_sizes: list[int]):
        codes = np.asarray(codes, dtype=np.int64)                 # (N, P)
        if len(np.unique(codes, axis=0)) != len(codes):
            raise ValueError("SIDs must be unique (de-duplicate them first)")
        self.codes = torch.as_tensor(codes)
        self.level_sizes = list(level_sizes)
        self.depth = codes.shape[1]
        self.n_items = len(codes)
        # prefix ids per depth d = 0..P (depth 0: the empty prefix, id 0)
        self.item_prefix = [torch.zeros(self.n_items, dtype=torch.long)]     # (N,) prefix id at depth d
        self.child = []                                                         # d: (n_prefix_d, size_d)
        for d in range(self.depth):
            _, ids = np.unique(codes[:, :d + 1], axis=0, return_inverse=True)
            ids = torch.as_tensor(ids.ravel())
            table = torch.full((int(self.item_prefix[d].max()) + 1, self.level_sizes[d]), -1, dtype=torch.long)
            table[self.item_prefix[d], self.codes[:, d]] = ids
            self.child.append(table)
            self.item_prefix.append(ids)
        self.leaf_item = torch.full((int(self.item_prefix[-1].max()) + 1,), -1, dtype=torch.long)
        self.leaf_item[self.item_prefix[-1]] = torch.arange(self.n_items)

    def to(self, device) -> "SIDTrie":
        self.item_prefix = [t.to(device) for t in self.item_prefix]
        self.child = [t.to(device) for t in self.child]
        self.leaf_item = self.leaf_item.to(device)
        self.codes = self.codes.to(device)
        return self

    def open_counts(self, exclude: torch.Tensor | None, batch: int) -> list[torch.Tensor]:
        """Per depth d = 1..P: (B, n_prefix_d) number of non-excluded items below each prefix."""
        device = self.leaf_item.device
        keep = torch.ones(batch, self.n_items, device=device)
        if exclude is not None:
            rows, cols = torch.nonzero(exclude >= 0, as_tuple=True)
            keep[rows, exclude[rows, cols]] = 0.0
        counts = []
        for d in range(1, self.depth + 1):
            n_prefix = len(self.leaf_item) if d == self.depth else self.child[d].shape[0]
            c = torch.zeros(batch, n_prefix, device=device)
            c.index_add_(1, self.item_prefix[d], keep)
            counts.append(c)
        return counts


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count only real tokens, so left padding does not shift them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


@torch.no_grad()
def constrained_beam_search(model, vocab: SIDVocabulary, trie: SIDTrie, input_ids: torch.Tensor,
                            attention_mask: torch.Tensor, beam_width: int, k: int,
                            exclude: torch.Tensor | None = None, step_fn: Callable | None = None,
                            trace: list | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` items (B, k) and their log-probabilities (B, k) for left-padded prompts (B, T).

    ``step_fn(model, input_ids, attention_mask, position_ids, cache, depth) -> (logits, cache)``
    replaces the plain forward where a model inserts its own steps (S²GR's thinking steps):
    it may append extra positions to the cache (the search extends the mask and positions
    by however many it added) and returns the logits that choose the code at ``depth``.
    ``trace``, if a list, receives per depth the first user's beams: (parent beam, code, score).
    """
    if beam_width < k:
        raise ValueError(f"beam width {beam_width} must be at least k={k}")
    step_fn = step_fn or _plain_step
    B, device = input_ids.shape[0], input_ids.device
    W = beam_width
    open_counts = trie.open_counts(exclude, B)
    positions = positions_from_mask(attention_mask)
    logits, cache = step_fn(model, input_ids, attention_mask, positions, None, 0)
    logp = F.log_softmax(logits[:, -1].float(), dim=-1)[:, vocab.level_slice(0)]      # (B, S0)
    child = trie.child[0][0].expand(B, -1)                                            # (B, S0)
    valid = (child >= 0) & (open_counts[0].gather(1, child.clamp(min=0)) > 0)
    cand = torch.where(valid, logp, torch.full_like(logp, -torch.inf))
    n_first = min(W, cand.shape[1])
    scores, codes = cand.topk(n_first, dim=1)                                           # (B, w0)
    prefix = child.gather(1, codes)
    if n_first < W:                                                                     # pad to W dead beams
        scores = F.pad(scores, (0, W - n_first), value=-torch.inf)
        prefix = F.pad(prefix, (0, W - n_first), value=0)
        codes = F.pad(codes, (0, W - n_first), value=0)
    prefix = torch.where(torch.isfinite(scores), prefix, torch.zeros_like(prefix))
    if trace is not None:
        trace.append([(0, int(c), float(s)) for c, s in zip(codes[0], scores[0])])
    cache.batch_repeat_interleave(W)
    mask, last_pos = _catch_up(cache, attention_mask, positions[:, -1])
    mask = mask.repeat_interleave(W, dim=0)                                              # (B*W, T)
    last_pos = last_pos.repeat_interleave(W)                                              # (B*W,)
    for d in range(1, trie.depth):
        token = codes.reshape(-1, 1) + vocab.offsets[d - 1]                              # (B*W, 1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        last_pos = last_pos + 1
        logits, cache = step_fn(model, token, mask, last_pos[:, None], cache, d)
        mask, last_pos = _catch_up(cache, mask, last_pos)
        logp = F.log_softmax(logits[:, -1].float(), dim=-1)[:, vocab.level_slice(d)]   # (B*W, S)
        S = logp.shape[1]
        child = trie.child[d][prefix.reshape(-1)]                                       # (B*W, S)
        alive = open_counts[d].repeat_interleave(W, dim=0).gather(1, child.clamp(min=0)) > 0
        valid = (child >= 0) & alive & torch.isfinite(scores.reshape(-1, 1))
        total = scores.reshape(-1, 1) + torch.where(valid, logp, torch.full_like(logp, -torch.inf))
        scores, flat = total.reshape(B, W * S).topk(W, dim=1)                            # (B, W)
        origin, codes = flat // S, flat % S
        prefix = child.reshape(B, W * S).gather(1, flat)                                 # (B, W)
        prefix = torch.where(torch.isfinite(scores), prefix, torch.zeros_like(prefix))
        if trace is not None:
            trace.append([(int(o), int(c), float(s)) for o, c, s in zip(origin[0], codes[0], scores[0])])
        beam_index = (origin + torch.arange(B, device=device)[:, None] * W).reshape(-1)
        cache.reorder_cache(beam_index)
        mask = mask[beam_index]
        last_pos = last_pos[beam_index]
    items = trie.leaf_item[prefix]                                                      # (B, W)
    items = torch.where(torch.isfinite(scores), items, torch.full_like(items, -1))
    return items[:, :k], scores[:, :k]


def _catch_up(cache, mask: torch.Tensor, last_pos: torch.Tensor):
    """Extend the mask and last position over positions a step function added to the cache."""
    extra = cache.get_seq_length() - mask.shape[1]
    if extra > 0:
        mask = torch.cat([mask, torch.ones_like(mask[:, :1]).expand(-1, extra)], dim=1)
        last_pos = last_pos + extra
    return mask, last_pos


def _plain_step(model, input_ids, attention_mask, position_ids, cache, depth):
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                past_key_values=cache, use_cache=True)
    return out.logits, out.past_key_values


@torch.no_grad()
def brute_force_scores(model, vocab: SIDVocabulary, codes: np.ndarray, prompt: torch.Tensor,
                       batch_size: int = 256) -> torch.Tensor:
    """Log-probability of every catalogue item's SID after one prompt (T,), by teacher forcing."""
    tokens = vocab.encode_items(torch.as_tensor(codes))                                 # (N, P)
    out = []
    for lo in range(0, len(tokens), batch_size):
        t = tokens[lo:lo + batch_size]
        seq = torch.cat([prompt.expand(len(t), -1), t], dim=1)
        logits = model(input_ids=seq).logits[:, len(prompt) - 1:-1].float()            # (n, P, V)
        logp = F.log_softmax(logits, dim=-1).gather(2, t[:, :, None]).squeeze(2)       # (n, P)
        out.append(logp.sum(1))
    return torch.cat(out)


@torch.no_grad()
def naive_beam_search(model, vocab: SIDVocabulary, codes: np.ndarray, prompt: torch.Tensor, beam_width: int,
                      k: int, exclude: set[int] = frozenset()) -> tuple[list[int], list[float]]:
    """The reference a student writes first: one user, one beam at a time, a Python trie, no cache."""
    allowed: dict[tuple, set] = {}
    item_of = {}
    for item, sid in enumerate(map(tuple, np.asarray(codes))):
        if item in exclude:
            continue
        item_of[sid] = item
        for d in range(len(sid)):
            allowed.setdefault(sid[:d], set()).add(sid[d])
    beams = [((), 0.0)]
    for d in range(len(vocab.level_sizes)):
        candidates = []
        for prefix, score in beams:
            tokens = torch.tensor([vocab.offsets[i] + c for i, c in enumerate(prefix)], dtype=torch.long)
            seq = torch.cat([prompt, tokens])
            logp = F.log_softmax(model(input_ids=seq[None]).logits[0, -1].float(), dim=-1)
            for code in allowed.get(prefix, ()):
                candidates.append((prefix + (code,), score + float(logp[vocab.offsets[d] + code])))
        beams = sorted(candidates, key=lambda b: -b[1])[:beam_width]
    beams = beams[:k]
    return [item_of[p] for p, _ in beams], [s for _, s in beams]


@torch.no_grad()
def transformers_beam_search(model, vocab: SIDVocabulary, codes: np.ndarray, prompt: torch.Tensor,
                             beam_width: int, k: int) -> tuple[list[int], list[float]]:
    """The same search through ``transformers``' ``generate`` with ``prefix_allowed_tokens_fn``.

    It cannot exclude history items or run extra latent steps inside decoding, which is why
    minirec has its own search; it is kept to check that search against the library.
    """
    allowed: dict[tuple, list[int]] = {}
    item_of = {}
    for item, sid in enumerate(map(tuple, np.asarray(codes))):
        item_of[sid] = item
        for d in range(len(sid)):
            allowed.setdefault(sid[:d], [])
            token = vocab.offsets[d] + sid[d]
            if token not in allowed[sid[:d]]:
                allowed[sid[:d]].append(token)
    n = len(prompt)

    def allowed_tokens(batch_id, input_ids):
        generated = input_ids[n:].tolist()
        prefix = tuple(t - vocab.offsets[d] for d, t in enumerate(generated))
        return allowed.get(prefix, [vocab.pad_token])

    out = model.generate(prompt[None], attention_mask=torch.ones(1, n, dtype=torch.long), num_beams=beam_width,
                         num_return_sequences=k, max_new_tokens=vocab.depth, min_new_tokens=vocab.depth,
                         prefix_allowed_tokens_fn=allowed_tokens, do_sample=False, length_penalty=0.0,
                         early_stopping=True, output_scores=True, return_dict_in_generate=True,
                         pad_token_id=vocab.pad_token, eos_token_id=None, bos_token_id=vocab.bos_token)
    items = [item_of[tuple(t - vocab.offsets[d] for d, t in enumerate(seq[n:].tolist()))] for seq in out.sequences]
    return items, out.sequences_scores.tolist()
