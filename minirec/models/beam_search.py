"""Trie-constrained beam search over semantic IDs, batched and cached (docs/method.md §5).

The catalogue's SIDs form a prefix trie. Instead of walking it in Python for every beam,
``SIDTrie`` numbers the distinct prefixes of each depth and stores a dense transition
table ``child[d][prefix, code] -> prefix id at depth d+1 (or -1)``, so one gather gives
the allowed codes of every beam at once (the "vectorised trie" idea).

``constrained_beam_search`` decodes the L+1 SID tokens of the next item for a batch of
users: one forward of the prompts, then one cached forward per decoding step for all
users x beams. The beams of a user share its cache row (``BeamTree``: beams are
side-by-side tokens behind a tree-shaped attention mask), so the prompt's keys and values
are never copied per beam or re-ordered. Guarantees:
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

from minirec.models.backbone import SIDVocabulary


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


class BeamTree:
    """Which cache positions each beam may attend to, when all beams of a user share one cache row.

    The prompt is encoded once per user. Every later forward feeds one token per beam (a
    *round*); the round's tokens are appended to the user's cache row side by side, and a
    4-D attention mask lets each beam see the prompt, the tokens of its own ancestors and
    itself, never a sibling's. Choosing the next beams only re-indexes ``visible`` (no KV
    copies), which is what makes this cheaper than the usual one-cache-row-per-beam layout.
    """

    def __init__(self, attention_mask: torch.Tensor, dtype: torch.dtype):
        self.prompt_mask = attention_mask
        self.positions = positions_from_mask(attention_mask)
        B = attention_mask.shape[0]
        self.visible = torch.zeros(B, 1, 0, dtype=torch.bool, device=attention_mask.device)  # (B, beams, generated)
        self.dtype, self.rounds = dtype, 0

    @property
    def width(self) -> int:
        return self.visible.shape[1]

    def prompt(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask (B, T) and positions (B, T) of the prompt forward."""
        return self.prompt_mask, self.positions

    def round(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Additive mask (B, 1, w, keys) and positions (B, w) for one new token per beam."""
        B, w, _ = self.visible.shape
        own = torch.eye(w, dtype=torch.bool, device=self.visible.device).expand(B, w, w)
        self.visible = torch.cat([self.visible, own], dim=2)
        prompt = self.prompt_mask.bool()[:, None, :].expand(B, w, -1)
        keys = torch.cat([prompt, self.visible], dim=2)[:, None]
        bias = torch.zeros(keys.shape, dtype=self.dtype, device=keys.device)
        self.rounds += 1
        return bias.masked_fill(~keys, torch.finfo(self.dtype).min), (self.positions[:, -1:] + self.rounds).expand(B, w)

    def select(self, origin: torch.Tensor) -> None:
        """The new beams (B, W) continue beams ``origin`` of the previous width."""
        self.visible = self.visible.gather(1, origin[:, :, None].expand(-1, -1, self.visible.shape[2]))


@torch.no_grad()
def constrained_beam_search(model, vocab: SIDVocabulary, trie: SIDTrie, input_ids: torch.Tensor,
                            attention_mask: torch.Tensor, beam_width: int, k: int,
                            exclude: torch.Tensor | None = None, step_fn: Callable | None = None,
                            trace: list | None = None, levels: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` items (B, k) and their log-probabilities (B, k) for left-padded prompts (B, T).

    ``levels``, if given, stops after that many SID codes and returns the top-``k`` *prefixes*
    instead (their ids at that depth of the trie, -1 for none): Think-Ahead's offline half.

    ``step_fn(model, input_ids, tree, cache, depth) -> (logits, cache)`` runs the forwards of
    one decoding step: at depth 0 ``input_ids`` is the prompt (masks from ``tree.prompt()``),
    later one code token per beam (B, w) (masks from ``tree.round()``). It returns the logits
    (B, w, V) that choose the code at ``depth``. A model that inserts its own steps (S²GR's
    thinking) runs extra rounds inside it. ``trace``, if a list, receives per depth the first
    user's beams: (parent beam, code, score).
    """
    if beam_width < k:
        raise ValueError(f"beam width {beam_width} must be at least k={k}")
    step_fn = step_fn or plain_step
    B, W = input_ids.shape[0], beam_width
    open_counts = trie.open_counts(exclude, B)
    tree = BeamTree(attention_mask, model.get_input_embeddings().weight.dtype)
    scores = torch.zeros(B, 1, device=input_ids.device)              # one empty beam per user
    prefix = torch.zeros(B, 1, dtype=torch.long, device=input_ids.device)
    tokens, cache = input_ids, None
    depth = trie.depth if levels is None else levels
    if not 1 <= depth <= trie.depth:
        raise ValueError(f"levels must be between 1 and the SID length {trie.depth}, got {levels}")
    for d in range(depth):
        logits, cache = step_fn(model, tokens, tree, cache, d)
        logp = F.log_softmax(logits.float(), dim=-1)[..., vocab.level_slice(d)]        # (B, w, S)
        w, S = logp.shape[1:]
        child = trie.child[d][prefix]                                                  # (B, w, S)
        alive = open_counts[d].gather(1, child.clamp(min=0).reshape(B, -1)).reshape(B, w, S) > 0
        valid = (child >= 0) & alive & torch.isfinite(scores)[:, :, None]
        total = torch.where(valid, scores[:, :, None] + logp, torch.full_like(logp, -torch.inf))
        scores, flat = total.reshape(B, w * S).topk(min(W, w * S), dim=1)
        if scores.shape[1] < W:                                                        # pad with dead beams
            scores = F.pad(scores, (0, W - scores.shape[1]), value=-torch.inf)
            flat = F.pad(flat, (0, W - flat.shape[1]), value=0)
        origin, codes = flat // S, flat % S
        prefix = child.reshape(B, w * S).gather(1, flat)
        prefix = torch.where(torch.isfinite(scores), prefix, torch.zeros_like(prefix))
        if trace is not None:
            trace.append([(int(o), int(c), float(s)) for o, c, s in zip(origin[0], codes[0], scores[0])])
        tree.select(origin)
        tokens = codes + vocab.offsets[d]
    if depth < trie.depth:
        return torch.where(torch.isfinite(scores), prefix, torch.full_like(prefix, -1))[:, :k], scores[:, :k]
    items = trie.leaf_item[prefix]                                                      # (B, W)
    items = torch.where(torch.isfinite(scores), items, torch.full_like(items, -1))
    return items[:, :k], scores[:, :k]


def plain_step(model, input_ids, tree: BeamTree, cache, depth):
    """The decoding step of a plain SID model: one forward of the prompt or of every beam's last code."""
    mask, positions = tree.prompt() if depth == 0 else tree.round()
    out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                use_cache=True, logits_to_keep=1 if depth == 0 else 0)
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
