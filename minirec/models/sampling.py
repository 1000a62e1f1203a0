"""Writing text with the backbone: batched, KV-cached greedy or temperature sampling (docs/method.md §7).

OneRec-Think's model writes words as well as items: a caption after an item's SID, a
rationale after ``<think>``. ``generate_text`` continues a batch of left-padded prompts one
token per step, from a chosen subset of the vocabulary (``allowed``: text tokens only, so a
rationale never contains an item), until each row has written ``stop`` or ``max_new_tokens``.
It is the loop ``transformers``' ``generate`` runs, written out so that positions follow the
padding exactly as in minirec's beam search and so that the allowed set is a plain mask.
"""
from __future__ import annotations

import torch

from minirec.models.beam_search import positions_from_mask


@torch.no_grad()
def generate_text(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, allowed: torch.Tensor,
                  stop: int, max_new_tokens: int = 24, temperature: float = 0.0,
                  generator: torch.Generator | None = None) -> list[list[int]]:
    """Per row, the tokens written after the prompt (without ``stop``).

    ``allowed`` is a boolean mask over the vocabulary (``stop`` is always allowed);
    ``temperature`` 0 is greedy decoding, above 0 samples from softmax(logits / temperature).
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    B = input_ids.shape[0]
    allowed = allowed.clone().to(input_ids.device)
    allowed[stop] = True
    blocked = torch.where(allowed, 0.0, -torch.inf)
    mask = attention_mask.long()
    positions = positions_from_mask(mask)
    out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    cache, logits = out.past_key_values, out.logits[:, -1]
    next_position = positions[:, -1:] + 1
    written = torch.zeros(B, 0, dtype=torch.long, device=input_ids.device)
    done = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
    for _ in range(max_new_tokens):
        scores = logits.float() + blocked
        if temperature == 0:
            token = scores.argmax(-1)
        else:
            probs = torch.softmax(scores / temperature, dim=-1)
            token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        token = torch.where(done, torch.full_like(token, stop), token)
        written = torch.cat([written, token[:, None]], dim=1)
        done |= token == stop
        if bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones(B, 1, dtype=mask.dtype, device=mask.device)], dim=1)
        out = model(input_ids=token[:, None], attention_mask=mask, position_ids=next_position,
                    past_key_values=cache, use_cache=True)
        cache, logits = out.past_key_values, out.logits[:, -1]
        next_position = next_position + 1
    rows = []
    for row in written.tolist():
        rows.append(row[:row.index(stop)] if stop in row else row)
    return rows
