"""OneRec-Think on a Qwen3 backbone: itemic alignment and reasoning activation (docs/method.md §7).

One LightningModule, ``OneRecThink``, trained in stages chained with ``RunSpec.then``
(each stage starts from the previous stage's checkpoint):

- ``base``    sequential preference only (history SIDs -> next SID): the paper's "Base";
- ``warmup``  token warm-up: only the rows of the new tokens (SID codes, ``<|sid_begin|>``,
  ``<|sid_end|>``) in the embedding and output matrices train, on persona grounding only (the
  paper's Token Warm-up); every other parameter stays exactly as it was (tested);
- ``align``   multi-task integration: every parameter, on the task mix (``minirec.reasoning.itemic``);
- ``reason``  reasoning activation: SFT on ``<think> rationale </think>`` + target SID, loss on
  both, with the rationales of ``minirec.reasoning.rationales``, mixed with plain sequential
  windows (``reason_sequential``) so the model keeps its SID supervision; after each epoch the
  official code's filtering keeps the model's own rationales that lead to the target.

Every stage after ``base`` starts from its parent's checkpoint and trains under a fine-tuning
recipe (the profile's ``finetune`` family: warm-up and a lower peak rate); ``training.fit``
validates the starting weights as epoch 0 and keeps them when no epoch beats them.

Recommending: ``base`` / ``warmup`` / ``align`` prompt with the history and ``<|sid_begin|>`` and
run the trie-constrained beam search over the whole catalogue. ``reason`` first writes
``n_rationales`` rationales after ``<think>`` (greedy, or sampled at ``rationale_temperature``),
beam-searches after each, and merges the candidates by their best score.

Words: ``caption`` writes what an item is from its SID ("explain this item token"),
``find_items`` goes from text to catalogue items (a text that names no catalogue item is
flagged, never turned into an invented item: every answer comes out of the trie).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from minirec.models.backbone import SPECIAL_TOKENS, is_pretrained, train_last_layers
from minirec.profiles import data_size
from minirec.models.beam_search import constrained_beam_search
from minirec.data.dataset import (EmptyHistoryError, LeaveOneOutSplit, SequenceDataset, UnknownItemError, pad_left,
                   training_windows)
from minirec.models.generative import GenerativeRecommender, GenRecConfig
from minirec.sids.embeddings import DEFAULT_ENCODER
from minirec.reasoning.itemic import (IGNORE, PAPER_MIX, TASKS, ExampleSet, ItemWriter, TaskMix, caption_examples, caption_holdout,
                     TaskBatches, collate_examples, language_examples, left_pad, persona_examples, sequential_examples,
                     text_corpus)
from minirec.models.sampling import generate_text
from minirec.reasoning.rationales import rationale_genres, rationale_text, reasoning_positions, similarity_matrix
from minirec.training import SequenceDataModule

@dataclass
class ReasonerConfig(GenRecConfig):
    """What a model that reads and writes words and SIDs needs to recommend, think and caption: the architecture of
    TIGER-mini, its stage, and how it writes rationales and captions. Every OneRec-Think model has these fields."""
    stage: str = "base"                         # base | warmup | align | reason
    n_rationales: int = 1                       # rationales written per user at inference
    rationale_temperature: float = 0.0          # 0: greedy (one rationale); > 0: sampled
    rationale_tokens: int = 24                  # longest rationale written (beyond the longest template: checked)
    caption_tokens: int = 32                    # longest caption written
    caption_holdout: float = 0.1                # share of items whose words are never shown next to their SID
    train_layers: int | None = None             # a pretrained backbone: fine-tune only its last n transformer layers
                                                # (and the token embeddings); None: every weight


@dataclass
class OneRecConfig(ReasonerConfig):
    """A OneRec-Think stage: a ``ReasonerConfig`` plus what each supervised stage trains on."""
    task_mix: tuple = PAPER_MIX                 # align: shares of persona, sequential, caption, language (itemic.TASKS)
    warmup_mix: tuple = (1.0, 0.0, 0.0, 0.0)    # warmup: the same, persona grounding only as the paper trains it
    epoch_size: int | None = data_size(None)    # examples per alignment epoch; None: each sequential window once
    persona_items: int = 10                     # history items interleaved with their titles in task 1
    language_corpus: str = ""                   # a UTF-8 file, one document per line; "" = the item captions
    rationale_similarity: str = "text"          # text (sentence-encoder cosine, the paper's) | sid (shared prefix)
    rationale_encoder: str = DEFAULT_ENCODER
    rationale_k: int = 3                        # most similar history items whose genres the rationale names
    rationale_genres: int = 2                   # genres named in a rationale
    reason_examples: int | None = data_size(None)  # examples per reasoning epoch; None: one per training window
    reason_sequential: float = 0.5              # share of a reasoning epoch that is plain sequential windows (history
                                                # SIDs -> next SID, Base's task); 0: rationales only (an ablation)
    refine_rationales: bool = True              # the official code's filtering: after each reasoning epoch, keep the
                                                # model's own rationales that lead to the target (in the beams) and
                                                # drop the examples whose rationale does not (False: an ablation)


class _Reasoning(Dataset):
    """Reasoning-activation examples: history SIDs, then ``<think>`` rationale ``</think>``, then the target SID;
    after them (indices from ``n_reasoning`` on), the plain sequential windows mixed in (``sequential``).

    With the refinement loop, ``own`` holds rationales the model wrote itself that led to the
    target (they replace the template) and ``dropped`` the examples whose rationale did not.
    """

    def __init__(self, writer: ItemWriter, train: Sequence[np.ndarray], genres, similarity: np.ndarray,
                 config: OneRecConfig, sequential: Sequence = ()):
        self.writer, self.train, self.genres, self.similarity, self.config = writer, train, genres, similarity, config
        self.positions = reasoning_positions(train, min_history=1)
        self.sequential = list(sequential)
        self.own: dict[int, list[int]] = {}
        self.dropped: set[int] = set()

    @property
    def n_reasoning(self) -> int:
        return len(self.positions)

    def __len__(self) -> int:
        return len(self.positions) + len(self.sequential)

    def history(self, i: int) -> np.ndarray:
        user, t = self.positions[i]
        return self.train[user][max(0, t - self.config.max_items):t]

    def target(self, i: int) -> int:
        user, t = self.positions[i]
        return int(self.train[user][t])

    def rationale(self, i: int) -> str:
        """The template rationale of example ``i`` (the genres of its history items nearest the target)."""
        return rationale_text(rationale_genres(self.history(i), self.target(i), self.genres, self.similarity,
                                               self.config.rationale_k, self.config.rationale_genres))

    def active(self) -> np.ndarray:
        """The reasoning examples the filtering has not dropped."""
        return np.array([i for i in range(self.n_reasoning) if i not in self.dropped], dtype=np.int64)

    def task(self, i: int) -> int:
        return 0 if i < self.n_reasoning else 1

    def length(self, i: int) -> int:
        if i >= self.n_reasoning:
            return len(self.sequential[i - self.n_reasoning][0])
        return len(self.history(i))                           # history items: what sets the length (batches hold
                                                              # one task, so lengths are compared within a task)

    def __getitem__(self, i):
        if i >= self.n_reasoning:
            ids, labels = self.sequential[i - self.n_reasoning]
            return ids, labels, 1
        w, v = self.writer, self.writer.vocab
        thought = self.own[i] if i in self.own else w.text(self.rationale(i))
        parts = [(w.item(h), False) for h in self.history(i)] + [([v.think_token], False),
                                                                 (thought + [v.think_end_token], True),
                                                                 (w.item(self.target(i)), True)]
        ids, labels = w.example(parts)
        return ids, labels, 0


class _Subsample(Sampler):
    """Each epoch, ``n`` examples (all reasoning examples when ``n`` is None): a ``sequential`` share of them drawn
    from the sequential windows, the rest a fresh random subset of the reasoning examples the filtering kept.
    ``last`` holds the epoch's reasoning examples (what the filtering revisits)."""

    def __init__(self, data: _Reasoning, n: int | None, seed: int, sequential: float = 0.0):
        if not 0.0 <= sequential < 1.0:
            raise ValueError(f"the sequential share of a reasoning epoch must be in [0, 1), got {sequential}")
        if sequential > 0 and not data.sequential:
            raise ValueError("a sequential share needs sequential windows in the reasoning data")
        self.data, self.n, self.share, self.rng = data, n, sequential, np.random.default_rng(seed)
        self.last: list[int] = []

    def _counts(self) -> tuple[int, int]:
        total = self.n or self.data.n_reasoning
        n_seq = int(round(total * self.share))
        return min(total - n_seq, self.data.n_reasoning - len(self.data.dropped)), n_seq

    @property
    def counts(self) -> dict[str, int]:
        """Examples of each task per epoch (what ``itemic.TaskBatches`` cuts into batches of one task)."""
        n_reason, n_seq = self._counts()
        return {"reason": n_reason, "sequential": n_seq}

    def __len__(self) -> int:
        return sum(self._counts())

    def __iter__(self):
        n_reason, n_seq = self._counts()
        self.last = self.rng.permutation(self.data.active())[:n_reason].tolist()
        picks = list(self.last)
        if n_seq:
            pool, lo = len(self.data.sequential), self.data.n_reasoning
            reps = -(-n_seq // pool)
            picks += (np.concatenate([self.rng.permutation(pool) for _ in range(reps)])[:n_seq] + lo).tolist()
        return iter(self.rng.permutation(np.asarray(picks, dtype=np.int64)).tolist())


class StageData(NamedTuple):
    """What a stage trains on: the examples, the sampler that draws an epoch of them, and the task of each example
    (its per-task loss is logged under ``loss_<task>``)."""
    dataset: Dataset
    sampler: Sampler
    task_names: tuple[str, ...]


class Stage:
    """One training stage of OneRec-Think: the examples it trains on, the recipe family it trains under, the weights
    it moves and its hooks, and how the model recommends after it. A stage is an object, never a string compared in
    the model: a new stage is a subclass listed in the module's ``stages``."""
    name = ""
    family = "finetune"         # the profile's recipe (``Profile.recipe``) it trains under: a stage after the first
                                # starts from a trained checkpoint
    thinks = False              # after it, the model writes a rationale before its beam search
    start_thinks = False        # its starting weights (its parent's) recommended thinking first: how epoch 0 validates
    taught_words = True         # it trains on words next to SIDs (what the study measures with captions)

    def recipe_family(self, config: OneRecConfig) -> str:
        """The profile's recipe this stage trains under, for a model with ``config`` (by default ``family``)."""
        return self.family

    def prepare(self, module: "OneRecThink") -> None:
        """Once the module is built: which weights may train (default: all)."""

    def examples(self, module: "OneRecThink", split: LeaveOneOutSplit, seed: int) -> StageData:
        raise NotImplementedError

    def on_train_start(self, module: "OneRecThink") -> None:
        pass

    def on_train_batch_end(self, module: "OneRecThink") -> None:
        pass

    def on_train_epoch_end(self, module: "OneRecThink") -> None:
        pass


class SequentialPreference(Stage):
    """``base``: history SIDs -> next SID, every training window once per epoch (the paper's Base): from scratch on a
    preset (Base's recipe), fine-tuning on a pretrained backbone (the ``finetune`` recipe: its weights already know
    language, and the from-scratch peak would overwrite them)."""
    name, family, taught_words = "base", "onerec", False

    def recipe_family(self, config):
        return "finetune" if is_pretrained(config.backbone) else self.family

    def examples(self, module, split, seed):
        windows = training_windows(split.train, module.config.max_items)
        data = ExampleSet({"sequential": sequential_examples(module.writer(split.dataset), windows)})
        return StageData(data, TaskMix(data, {"sequential": 1.0}, module.config.epoch_size, seed), tuple(data.names))


class ItemicAlignment(Stage):
    """``align``: every parameter trains on the four tasks, drawn by ``task_mix`` (``minirec.reasoning.itemic``).

    It starts from the token warm-up, which trained only the new tokens' rows: on a pretrained backbone it fine-tunes
    (the ``finetune`` recipe), but on a randomly initialised one (a preset) the backbone learns here for the first
    time, so it trains under Base's from-scratch recipe."""
    name = "align"

    def recipe_family(self, config):
        return "finetune" if is_pretrained(config.backbone) else "onerec"

    def mix(self, config: OneRecConfig) -> tuple:
        """The stage's task shares, in the order of ``itemic.TASKS``."""
        return config.task_mix

    def examples(self, module, split, seed):
        c, ds = module.config, split.dataset
        mix = self.mix(c)
        if len(mix) != len(TASKS):
            raise ValueError(f"task_mix needs {len(TASKS)} shares, in the order {TASKS}; got {mix}")
        shares = dict(zip(TASKS, mix))
        writer = module.writer(ds)
        hidden = set(module.held_out_items(ds.n_items).tolist())
        shown = [i for i in range(ds.n_items) if i not in hidden]
        makers = {"persona": lambda: persona_examples(writer, split, c.persona_items, hidden),
                  "sequential": lambda: sequential_examples(writer, training_windows(split.train, c.max_items)),
                  "caption": lambda: caption_examples(writer, shown),
                  "language": lambda: language_examples(writer, text_corpus(c.language_corpus) if c.language_corpus
                                                        else [writer.caption(i) for i in shown])}
        data = ExampleSet({name: make() for name, make in makers.items() if shares[name] > 0})
        return StageData(data, TaskMix(data, shares, c.epoch_size, seed), tuple(data.names))


class TokenWarmUp(ItemicAlignment):
    """``warmup``: interleaved persona grounding only (``warmup_mix``, as the paper's Token Warm-up), and only the new
    tokens' rows of the embedding and output matrices train; every other weight stays exactly as it was (restored
    after each batch: no optimiser state or decay may move a frozen row)."""
    name, family, taught_words = "warmup", "warmup", False

    def mix(self, config):
        return config.warmup_mix

    def recipe_family(self, config):
        return self.family

    def prepare(self, module):
        module.freeze_all_but_new_tokens()

    def on_train_start(self, module):
        module._frozen_copy = [w.detach().clone() for w in module._warm]

    def on_train_batch_end(self, module):
        with torch.no_grad():
            for w, saved in zip(module._warm, module._frozen_copy):
                w[~module._keep_rows] = saved[~module._keep_rows].to(w.device)


class ReasoningActivation(Stage):
    """``reason``: SFT on ``<think> rationale </think>`` + the target SID (loss on both), a fresh subset of
    (user, target) pairs each epoch, mixed with plain sequential windows (``reason_sequential``); with
    ``refine_rationales`` (the default), the official code's per-epoch filtering. Its starting weights (the aligned
    model) recommend without thinking, so epoch 0 validates them that way."""
    name, thinks = "reason", True

    def examples(self, module, split, seed):
        c, ds = module.config, split.dataset
        if c.rationale_similarity == "text":
            from minirec.sids.embeddings import item_embeddings
            sim = similarity_matrix("text", embeddings=item_embeddings(ds, c.rationale_encoder, verbose=False))
        else:
            sim = similarity_matrix(c.rationale_similarity, codes=module.sid_table.codes)
        windows = training_windows(split.train, c.max_items)
        writer = module.writer(ds)
        longest = longest_rationale(writer, ds.genre_vocabulary, c.rationale_genres)
        if longest >= c.rationale_tokens:
            raise ValueError(f"rationale_tokens={c.rationale_tokens} cannot hold the longest template rationale "
                             f"({longest} tokens and </think>): the model could never finish one. Raise it.")
        sequential = sequential_examples(writer, windows) if c.reason_sequential > 0 else ()
        data = _Reasoning(writer, split.train, list(ds.items["genres"]), sim, c, sequential)
        sampler = _Subsample(data, c.reason_examples or len(windows), seed, c.reason_sequential)
        return StageData(data, sampler, ("reason", "sequential"))

    def on_train_epoch_end(self, module):
        if module.config.refine_rationales:
            counts = module.refine_rationales(module.stage_data.sampler.last)
            total = max(1, sum(counts.values()))
            module.log("refine_kept", counts["kept"] / total)          # the model's own rationale replaced the template
            module.log("refine_dropped", counts["dropped"] / total)    # its rationale missed the target: dropped


def longest_rationale(writer: ItemWriter, vocabulary: Sequence[str], n_genres: int) -> int:
    """Tokens of the longest template rationale: the one naming the ``n_genres`` genres with the longest spellings."""
    longest = sorted(vocabulary, key=lambda g: len(writer.text(" " + g)), reverse=True)[:n_genres]
    return max(len(writer.text(rationale_text(longest[:n]))) for n in range(len(longest) + 1))


STAGES = {stage.name: stage for stage in (SequentialPreference(), TokenWarmUp(), ItemicAlignment(),
                                          ReasoningActivation())}


class ItemicDataModule(SequenceDataModule):
    """Training examples of a OneRec-Think stage; validation and test stages as for every other model."""

    def __init__(self, module: "OneRecThink", split: LeaveOneOutSplit, seed: int = 0):
        super().__init__(split, max_len=module.config.max_items, seed=seed)
        self.module, self.train_set, self.sampler = module, None, None

    def setup(self, stage=None):
        if self.train_set is None:
            data = self.module.training_examples(self.split, self.seed)
            self.train_set, self.sampler = data.dataset, data.sampler

    def train_dataloader(self) -> DataLoader:
        self.setup()
        pad = self.module.vocab.pad_token
        batches = TaskBatches(self.sampler, self.train_set, self.batch_size, seed=self.seed)
        return DataLoader(self.train_set, batch_sampler=batches, collate_fn=lambda rows: collate_examples(rows, pad))


class OneRecThink(GenerativeRecommender):
    """A Qwen3 that reads and writes both words and SIDs; ``config.stage`` names the ``Stage`` it trains in."""

    config_class = OneRecConfig
    stages: dict[str, Stage] = STAGES             # the stages this class trains (a subclass may add its own)

    def __init__(self, config: OneRecConfig, sid_table, texts: Sequence[str] = (), model=None, tokenizer=None):
        if config.stage not in self.stages:
            raise ValueError(f"unknown stage {config.stage!r}; choose one of {tuple(self.stages)}")
        self.training_stage = self.stages[config.stage]
        self.thinks = self.training_stage.thinks      # it writes a rationale before its beam search
        self.stage_data: StageData | None = None      # what the stage trains on, once ``training_examples`` ran
        super().__init__(config, sid_table, texts, model, tokenizer)
        v = self.vocab
        n = len(self.item_tokens)
        wrapped = torch.cat([torch.full((n, 1), v.item_token), self.item_tokens, torch.full((n, 1), v.item_end_token)], 1)
        self.register_buffer("wrapped_tokens", wrapped, persistent=False)
        self.register_buffer("text_tokens", self._text_mask(), persistent=False)
        if config.train_layers is not None:
            train_last_layers(self.model, config.train_layers)
        self.training_stage.prepare(self)

    @classmethod
    def recipe_family(cls, config: OneRecConfig) -> str:
        return cls.stages[config.stage].recipe_family(config)

    @property
    def history_tokens(self) -> torch.Tensor:
        return self.wrapped_tokens

    def _text_mask(self) -> torch.Tensor:
        size = self.model.get_input_embeddings().weight.shape[0]
        allowed = torch.ones(size, dtype=torch.bool)
        v = self.vocab
        allowed[v.sid_ids] = False
        specials = {*self.tokenizer.all_special_ids, *self.tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)}
        allowed[[i for i in specials if 0 <= i < size]] = False
        allowed[len(self.tokenizer):] = False                    # padding rows of a resized matrix
        return allowed

    # ------------------------------------------------------------------ token warm-up
    def freeze_all_but_new_tokens(self) -> None:
        """Only the new tokens' rows of the input and output embedding matrices stay trainable."""
        keep = torch.zeros(self.model.get_input_embeddings().weight.shape[0], dtype=torch.bool)
        keep[self.vocab.new_token_ids()] = True
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._warm = []
        for layer in (self.model.get_input_embeddings(), self.model.get_output_embeddings()):
            w = layer.weight
            if any(w is other for other in self._warm):
                continue                                          # tied: one matrix
            w.requires_grad_(True)
            w.register_hook(lambda g, keep=keep: g * keep[:, None].to(g.dtype))
            self._warm.append(w)
        self._keep_rows = keep

    @contextlib.contextmanager
    def starting_protocol(self):
        """Epoch 0 validates the starting weights as the parent recommended (thinking first or not)."""
        self.thinks = self.training_stage.start_thinks
        try:
            yield
        finally:
            self.thinks = self.training_stage.thinks

    def keep_start(self) -> None:
        """No epoch beat the parent's weights: the stage keeps them and recommends as the parent did."""
        self.thinks = self.training_stage.start_thinks

    def starting_weights(self, parent):
        """A stage that starts from a thinking model (GRPO) starts from the parent's best *thinking* weights, even
        when the parent kept its own start (which does not think)."""
        if self.training_stage.start_thinks and not getattr(parent.module, "thinks", True):
            return torch.load(parent.trained_checkpoint, map_location="cpu", weights_only=False)["state_dict"]
        return parent.module.state_dict()

    def on_train_start(self) -> None:
        self.training_stage.on_train_start(self)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.training_stage.on_train_batch_end(self)

    def on_train_epoch_end(self) -> None:
        self.training_stage.on_train_epoch_end(self)

    @torch.no_grad()
    def refine_rationales(self, indices: Sequence[int], batch_size: int = 128) -> dict[str, int]:
        """The official code's refinement loop: for each reasoning example, write a rationale (greedy) and beam-search
        after it; if the target is in the beams, the model's rationale replaces the template, otherwise the example is
        dropped. A text the model did not finish (no ``</think>`` within ``rationale_tokens``) or that names no genre
        is no rationale: the example keeps its template (counted as ``template``), so a model early in training cannot
        teach itself its own noise."""
        from minirec.reasoning.rationales import genres_in
        data = self.stage_data.dataset
        indices = [i for i in indices if i < data.n_reasoning]          # sequential windows have no rationale
        vocabulary = sorted({g for gs in data.genres for g in gs})
        was_training = self.training
        self.eval()
        kept = dropped = template = 0
        for lo in range(0, len(indices), batch_size):
            chunk = list(indices[lo:lo + batch_size])
            rows = self.prompts(torch.as_tensor(pad_left([data.history(i) for i in chunk])))
            thoughts = self.write_rationales(rows)
            items = self.search_after(rows, thoughts, [data.history(i) for i in chunk], self.config.beam_width,
                                      self.config.beam_width)
            for i, thought, beams in zip(chunk, thoughts, items.tolist()):
                if len(thought) >= self.config.rationale_tokens or not genres_in(self.tokenizer.decode(thought),
                                                                                 vocabulary):
                    data.own.pop(i, None)
                    data.dropped.discard(i)
                    template += 1
                elif data.target(i) in beams:
                    data.own[i] = thought
                    data.dropped.discard(i)
                    kept += 1
                else:
                    data.own.pop(i, None)
                    data.dropped.add(i)
                    dropped += 1
        self.train(was_training)
        return {"kept": kept, "dropped": dropped, "template": template}

    # ------------------------------------------------------------------ training data
    def writer(self, dataset: SequenceDataset) -> ItemWriter:
        return ItemWriter(self.tokenizer, self.vocab, self.sid_table.codes, dataset)

    def make_datamodule(self, split: LeaveOneOutSplit, seed: int = 0) -> ItemicDataModule:
        return ItemicDataModule(self, split, seed)

    def held_out_items(self, n_items: int) -> np.ndarray:
        """Items never captioned in training (the same for every stage and seed of one SID table)."""
        return caption_holdout(n_items, self.config.caption_holdout, seed=0)

    def training_examples(self, split: LeaveOneOutSplit, seed: int = 0) -> StageData:
        """What this stage trains on (``Stage.examples``); kept as ``stage_data`` for the stage's hooks."""
        self.stage_data = self.training_stage.examples(self, split, seed)
        return self.stage_data

    def loss_terms(self, batch) -> dict[str, torch.Tensor]:
        """Token-mean cross-entropy over every labelled token, and the same per task (for the per-task curves)."""
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"][:, 1:]
        per_token = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE,
                                    reduction="none").view_as(labels)
        counted = (labels != IGNORE).float()
        terms = {"loss": (per_token * counted).sum() / counted.sum().clamp(min=1)}
        for t, name in enumerate(self.stage_data.task_names if self.stage_data else ()):
            rows = batch["task"] == t
            if rows.any():
                terms[f"loss_{name}"] = (per_token[rows] * counted[rows]).sum() / counted[rows].sum().clamp(min=1)
        return terms

    # ------------------------------------------------------------------ recommending
    def prompts(self, inputs: torch.Tensor) -> list[list[int]]:
        """Per row of (B, T) item indices (-1 padded): ``<bos>`` and the real items, written with boundaries."""
        inputs = inputs[:, -self.config.max_items:]
        rows = []
        for row in inputs.tolist():
            items = [i for i in row if i >= 0]
            if not items:
                raise EmptyHistoryError("a history with no items: there is nothing to recommend from")
            rows.append([self.vocab.bos_token] + [t for i in items for t in self.wrapped_tokens[i].tolist()])
        return rows

    def write_rationales(self, rows: list[list[int]], n: int = 1, temperature: float = 0.0,
                         generator: torch.Generator | None = None) -> list[list[int]]:
        """``n`` rationales per prompt row (row-major: the n of row 0 first), as token lists without the tags."""
        device = self.wrapped_tokens.device
        prompts = [r + [self.vocab.think_token] for r in rows for _ in range(n)]
        ids, mask = left_pad(prompts, self.vocab.pad_token)
        return generate_text(self.model, ids.to(device), mask.to(device), self.text_tokens, self.vocab.think_end_token,
                             self.config.rationale_tokens, temperature, generator)

    def with_thoughts(self, rows: list[list[int]], thoughts: list[list[int]]) -> list[list[int]]:
        """Each prompt row followed by ``<think>``, its rationale and ``</think>``."""
        v = self.vocab
        return [r + [v.think_token] + t + [v.think_end_token] for r, t in zip(rows, thoughts)]

    def search_after(self, rows: list[list[int]], thoughts: list[list[int]], exclude: Sequence[np.ndarray], width: int,
                     k: int) -> torch.Tensor:
        """(len(rows), k) items of the constrained beam search after each prompt row and the rationale given for it,
        ``exclude[i]`` (item indices) kept out of row i's items."""
        v, device = self.vocab, self.wrapped_tokens.device
        ids, mask = left_pad([r + [v.item_token] for r in self.with_thoughts(rows, thoughts)], v.pad_token)
        excluded = left_pad([np.asarray(e).tolist() for e in exclude], -1)[0].to(device)
        self.trie.to(device)
        return constrained_beam_search(self.model, v, self.trie, ids.to(device), mask.to(device), width, k,
                                       excluded)[0]

    def beam_search(self, inputs: torch.Tensor, exclude: torch.Tensor | None, k: int, beam_width: int | None = None,
                    trace: list | None = None, rationales: list | None = None, levels: int | None = None):
        """Top-k items and scores for (B, T) histories; the reasoning stage thinks first.

        ``rationales``, if a list, receives the rationales written (``n_rationales`` per user, as text).
        ``levels``, if given, decodes only the first ``levels`` SID codes and returns top-k prefix ids.
        """
        c, v, device = self.config, self.vocab, self.wrapped_tokens.device
        width = beam_width or max(c.beam_width, k)
        rows = self.prompts(inputs)
        thinks = self.thinks
        n = c.n_rationales if thinks else 1
        if thinks:
            temperature = c.rationale_temperature if n > 1 else 0.0
            thoughts = self.write_rationales(rows, n, temperature)
            if rationales is not None:
                rationales += [self.tokenizer.decode(t) for t in thoughts]
            rows = self.with_thoughts([r for r in rows for _ in range(n)], thoughts)
        ids, mask = left_pad([r + [v.item_token] for r in rows], v.pad_token)
        self.trie.to(device)
        if exclude is not None:
            exclude = exclude.to(device).repeat_interleave(n, dim=0)
        items, scores = constrained_beam_search(self.model, v, self.trie, ids.to(device), mask.to(device), width,
                                                width if n > 1 else k, exclude, trace=trace, levels=levels)
        if n == 1:
            return items, scores
        n_out = len(self.item_tokens) if levels in (None, self.trie.depth) else self.trie.child[levels].shape[0]
        return merge_candidates(items.view(len(inputs), -1), scores.view(len(inputs), -1), n_out, k)

    def decode_with(self, **changes) -> "OneRecThink":
        """Change how this model decodes (``n_rationales``, ``rationale_temperature``, ``beam_width``, ...), in place."""
        allowed = {"n_rationales", "rationale_temperature", "rationale_tokens", "beam_width", "caption_tokens"}
        if set(changes) - allowed:
            raise ValueError(f"only decoding settings may change after training: {sorted(allowed)}")
        self.config = replace(self.config, **changes)
        self.val_beam = max(self.config.beam_width, self.val_k)
        return self

    # ------------------------------------------------------------------ words
    @torch.no_grad()
    def caption(self, items: Sequence[int], batch_size: int = 256) -> list[str]:
        """What the model writes after an item's SID and "is" (greedy): its "explain this item token" answer."""
        writer = self.writer(None)                     # items and words only: no captions are looked up
        is_ = writer.text(" is")
        out, device = [], self.wrapped_tokens.device
        for lo in range(0, len(items), batch_size):
            rows = [[self.vocab.bos_token] + writer.item(i) + is_ for i in items[lo:lo + batch_size]]
            ids, mask = left_pad(rows, self.vocab.pad_token)
            written = generate_text(self.model, ids.to(device), mask.to(device), self.text_tokens, self.vocab.eos_token,
                                    self.config.caption_tokens)
            out += [self.tokenizer.decode(t).strip() for t in written]
        return out

    def caption_sid(self, sid: Sequence[int]) -> str:
        """The caption of the item with this SID; a clear error for a SID no catalogue item has."""
        sid = tuple(int(c) for c in sid)
        if len(sid) != self.vocab.depth:
            raise UnknownItemError(f"SID {sid} has {len(sid)} codes; this SID table writes {self.vocab.depth}")
        try:
            item = self.sid_table.item_of(sid)
        except KeyError as err:
            raise UnknownItemError(str(err.args[0])) from None
        return self.caption([item])[0]

    @torch.no_grad()
    def find_items(self, texts: Sequence[str], dataset: SequenceDataset, k: int = 5) -> list["TextMatch"]:
        """Text -> catalogue items by constrained beam search after ``<text> is <|sid_begin|>``.

        Every answer is a catalogue item. A text that is no catalogue caption or title is
        flagged (``known=False``): the items are then the model's nearest guesses, not a lookup.
        """
        writer = self.writer(dataset)
        known = {str(t).strip().lower() for t in dataset.items["text"]}
        known |= {writer.title(i).lower() for i in range(dataset.n_items)}
        known |= {str(t).strip().lower() for t in dataset.items["title"]}
        rows = []
        for t in texts:
            if not str(t).strip():
                raise ValueError("an empty text names no item: give a title or a caption")
            rows.append([self.vocab.bos_token] + writer.text(" " + str(t).strip()) + writer.text(" is")
                        + [self.vocab.item_token])
        ids, mask = left_pad(rows, self.vocab.pad_token)
        device = self.wrapped_tokens.device
        self.trie.to(device)
        width = max(self.config.beam_width, k)
        items, scores = constrained_beam_search(self.model, self.vocab, self.trie, ids.to(device), mask.to(device),
                                                width, k)
        return [TextMatch(str(t), items[r].tolist(), scores[r].tolist(), str(t).strip().lower() in known)
                for r, t in enumerate(texts)]


@dataclass
class TextMatch:
    text: str
    items: list[int]                 # catalogue items, best first
    scores: list[float]              # their log-probabilities
    known: bool                      # the text is a catalogue caption or title (else: a flagged miss)


def merge_candidates(items: torch.Tensor, scores: torch.Tensor, n_items: int, k: int):
    """(B, M) candidates from several beam searches -> the top-k distinct items by their best score."""
    best = torch.full((items.shape[0], n_items + 1), -torch.inf, device=items.device)
    slot = torch.where(items >= 0, items, torch.full_like(items, n_items))
    best.scatter_reduce_(1, slot, torch.where(items >= 0, scores, torch.full_like(scores, -torch.inf)), reduce="amax")
    top, idx = best[:, :n_items].topk(k, dim=1)
    return torch.where(torch.isfinite(top), idx, torch.full_like(idx, -1)), top


@torch.no_grad()
def recommend(module: OneRecThink, stage, k: int = 20, batch_size: int = 256) -> tuple[np.ndarray, list[str]]:
    """Top-k items (users, k) for every user of an evaluation stage, and the rationales written on the way."""
    from minirec.metrics import stage_batches
    module.eval()
    items, rationales = [], []
    for x, exclude, _ in stage_batches(stage, module.config.max_items, batch_size, module.wrapped_tokens.device):
        items.append(module.beam_search(x, exclude, k, max(module.config.beam_width, k), rationales=rationales)[0])
    return torch.cat(items).cpu().numpy(), rationales


@torch.no_grad()
def rationale_swap(module: OneRecThink, stage, n_users: int = 200, k: int = 10, seed: int = 0,
                   batch_size: int = 128) -> dict[str, float]:
    """Does the beam search read the rationale? For ``n_users`` users of an evaluation stage (a seeded subset), the
    top-k after each user's own greedy rationale and after another user's (a random derangement of the subset).

    Returns the users, their distinct rationales, the share of swaps that put a different rationale in (two users
    may write the same one), the share of users whose top-k changes and the mean overlap of the two top-k lists (both
    over swaps with a different rationale; NaN when there is none)."""
    if not module.thinks:
        raise ValueError("this model does not think before recommending: there is no rationale to swap")
    rng = np.random.default_rng(seed)
    users = np.sort(rng.permutation(len(stage))[:n_users])
    if len(users) < 2:
        raise ValueError("swapping rationales needs at least two users")
    shift = rng.integers(1, len(users))
    other = (np.arange(len(users)) + shift) % len(users)              # a derangement: nobody keeps their own
    inputs, histories = stage.inputs(module.config.max_items), stage.histories
    module.eval()
    rows = module.prompts(torch.as_tensor(pad_left([inputs[u] for u in users])))
    thoughts = []
    for lo in range(0, len(rows), batch_size):
        thoughts += module.write_rationales(rows[lo:lo + batch_size])
    width = max(module.config.beam_width, k)
    own, swapped = [], []
    for lo in range(0, len(rows), batch_size):
        chunk, seen = slice(lo, lo + batch_size), [histories[u] for u in users[lo:lo + batch_size]]
        own += module.search_after(rows[chunk], thoughts[chunk], seen, width, k).tolist()
        swapped += module.search_after(rows[chunk], [thoughts[j] for j in other[chunk]], seen, width, k).tolist()
    differs = np.array([thoughts[i] != thoughts[j] for i, j in enumerate(other)])
    changed = np.array([a != b for a, b in zip(own, swapped)])
    overlap = np.array([len(set(a) & set(b)) / k for a, b in zip(own, swapped)])
    return {"users": int(len(users)), "distinct rationales": len({tuple(t) for t in thoughts}),
            "swaps with a different rationale": float(differs.mean()),
            "top-k changed": float(changed[differs].mean()) if differs.any() else float("nan"),
            "mean top-k overlap": float(overlap[differs].mean()) if differs.any() else float("nan")}


def evaluate_sampled(fits, stage, n_rationales: int, temperature: float) -> dict[int, dict[str, np.ndarray]]:
    """Each seed's reasoning model (``fits``: seed -> a module) evaluated on ``stage`` with ``n_rationales`` sampled
    rationales at ``temperature`` (torch seeded with the seed), then put back to one greedy rationale. Returns seed
    -> the per-user test metrics (``metrics.evaluate``)."""
    from minirec.metrics import evaluate

    out = {}
    for seed, module in fits.items():
        torch.manual_seed(seed)
        module.decode_with(n_rationales=n_rationales, rationale_temperature=temperature)
        try:
            out[seed] = evaluate(module, stage)
        finally:
            module.decode_with(n_rationales=1, rationale_temperature=0.0)
    return out

