"""Itemic alignment data: items and words in one token sequence, four tasks, one task mix (docs/method.md §7).

OneRec-Think teaches a language model that an item's SID tokens *mean* something in text.
An item is written ``<|sid_begin|> <a_3> <b_17> <c_5> <d_0> <|sid_end|>`` wherever it
appears, and four tasks put those items next to words:

1. ``persona_examples``: interleaved user persona grounding: the user's profile in words,
   then their history as SIDs, each followed by its title;
2. ``sequential_examples``: sequential preference: a window of history SIDs, every item
   after the first a target (TIGER's objective with boundary tokens);
3. ``caption_examples``: itemic dense captioning: an item's SID, then "is" and its caption
   ("Toy Story (1995). Genres: Animation, Children's, Comedy."), and the inverse, text then SID;
4. ``language_examples``: general language. A randomly initialised backbone has no text
   corpus here: by default this is the item captions themselves, plain text without SIDs.
   ``text_corpus`` reads a real corpus (one document per line) for users who have one.

Every example is a ``(token ids, labels)`` pair, labels -100 where no loss is taken.
``TaskMix`` draws each epoch's examples with the task shares of a config (the paper's
mix: 24.3 / 65.7 / 4.9 / 5.0 %). Items held out of captioning (``caption_holdout``) are
kept away from every task that puts their words next to their SID, so captioning them
afterwards measures what the model inferred from the codes, not what it memorised.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from minirec.data.dataset import DataFormatError, LeaveOneOutSplit, SequenceDataset, UnknownItemError
from minirec.models.backbone import SIDVocabulary

TASKS = ("persona", "sequential", "caption", "language")
PAPER_MIX = (0.243, 0.657, 0.049, 0.050)        # OneRec-Think's reported shares, in the order of TASKS
IGNORE = -100

Example = tuple[list[int], list[int]]            # token ids, labels (-100: no loss)


class ItemWriter:
    """Writes items, words and whole examples as token ids for one tokeniser and SID table."""

    def __init__(self, tokenizer, vocab: SIDVocabulary, codes: np.ndarray, dataset: SequenceDataset):
        self.tokenizer, self.vocab, self.dataset = tokenizer, vocab, dataset
        sid = vocab.encode_items(torch.as_tensor(np.asarray(codes))).tolist()
        self.item_tokens = [[vocab.item_token, *s, vocab.item_end_token] for s in sid]
        self._text_cache: dict[str, list[int]] = {}

    def item(self, index: int) -> list[int]:
        if not 0 <= int(index) < len(self.item_tokens):
            raise UnknownItemError(f"item index {index} is not in the catalogue of {len(self.item_tokens)} items")
        return self.item_tokens[int(index)]

    def text(self, words: str) -> list[int]:
        if words not in self._text_cache:
            self._text_cache[words] = self.tokenizer.encode(words, add_special_tokens=False)
        return self._text_cache[words]

    def caption(self, index: int) -> str:
        return str(self.dataset.items["text"].iloc[int(index)])

    def title(self, index: int) -> str:
        row = self.dataset.items.iloc[int(index)]
        return f"{row['title']} ({row['year']})" if row["year"] else str(row["title"])

    def example(self, parts: Sequence[tuple[list[int], bool]], eos: bool = False) -> Example:
        """``<bos>`` + the parts; a part's tokens carry a loss when its flag is True (and the final <eos>)."""
        ids, labels = [self.vocab.bos_token], [IGNORE]
        for tokens, train in parts:
            ids += tokens
            labels += tokens if train else [IGNORE] * len(tokens)
        if eos:
            ids.append(self.vocab.eos_token)
            labels.append(self.vocab.eos_token)
        return ids, labels


def describe_example(tokenizer, ids: Sequence[int], labels: Sequence[int]) -> str:
    """An example as text, the tokens that carry a loss inside [[ ]]: what the notebooks print."""
    out, inside = [], False
    for token, label in zip(ids, labels):
        if (label != IGNORE) != inside:
            out.append(" [[" if not inside else "]] ")
            inside = not inside
        out.append(tokenizer.decode([token]))
    return "".join(out + (["]]"] if inside else [])).strip()


def persona_words(dataset: SequenceDataset, user: int) -> str:
    """"A 24 year old man (occupation: technician) watched" from ML-100K's user file (a neutral opening without one)."""
    if dataset.users is None or "age" not in dataset.users:
        return "The user watched"
    row = dataset.users.iloc[user]
    who = {"M": "man", "F": "woman"}.get(str(row.get("gender", "")), "person")
    return f"A {row['age']} year old {who} (occupation: {row['occupation']}) watched"


def persona_examples(writer: ItemWriter, split: LeaveOneOutSplit, n_items: int = 10,
                     hidden_titles: set[int] = frozenset()) -> list[Example]:
    """Task 1: the profile in words (no loss), then the last ``n_items`` training items, each SID then its title."""
    out = []
    for user, seq in enumerate(split.train):
        parts = [(writer.text(persona_words(split.dataset, user)), False)]
        for item in seq[-n_items:]:
            parts.append((writer.item(item), True))
            if int(item) not in hidden_titles:
                parts.append((writer.text(" " + writer.title(item) + ";"), True))
        out.append(writer.example(parts, eos=True))
    return out


def sequential_examples(writer: ItemWriter, windows: np.ndarray) -> list[Example]:
    """Task 2: a window of items, every item after the first a target (its boundary tokens included)."""
    out = []
    for window in windows:
        items = [int(i) for i in window if i >= 0]
        out.append(writer.example([(writer.item(i), k > 0) for k, i in enumerate(items)]))
    return out


def caption_examples(writer: ItemWriter, items: Iterable[int]) -> list[Example]:
    """Task 3: ``SID is <caption>`` (loss on the caption) and ``<caption> is SID`` (loss on the SID)."""
    out = []
    for i in items:
        caption = writer.text(" " + writer.caption(i))
        out.append(writer.example([(writer.item(i), False), (writer.text(" is"), False), (caption, True)], eos=True))
        out.append(writer.example([(caption, False), (writer.text(" is"), False), (writer.item(i), True)], eos=True))
    return out


def language_examples(writer: ItemWriter, documents: Iterable[str], max_tokens: int = 128) -> list[Example]:
    """Task 4: plain text, loss on every token (documents cut at ``max_tokens``)."""
    return [writer.example([(writer.text(" " + d)[:max_tokens], True)], eos=True) for d in documents if d.strip()]


def text_corpus(path: str | Path) -> list[str]:
    """A general-language corpus: one document per non-empty line of a UTF-8 text file."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise DataFormatError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    docs = [line.strip() for line in lines if line.strip()]
    if not docs:
        raise DataFormatError(f"{path}: contains no text")
    return docs


def caption_holdout(n_items: int, share: float, seed: int = 0) -> np.ndarray:
    """Items kept out of captioning training (sorted), to caption afterwards."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(n_items)[:int(round(share * n_items))])


def caption_groups(n_items: int, share: float) -> dict[str, np.ndarray]:
    """The two item groups captions are scored on: items held out of captioning training, and as many items that
    were captioned in training (the first ones not held out)."""
    held_out = caption_holdout(n_items, share, seed=0)
    return {"held-out items": held_out,
            "captioned in training": np.setdiff1d(np.arange(n_items), held_out)[:len(held_out)]}


def _floor_genre(dataset: SequenceDataset, groups: dict[str, np.ndarray]) -> str:
    """The genre most common among the taught items: what the floor always writes."""
    return str(dataset.items["genres"].iloc[groups["captioned in training"]].explode().value_counts().index[0])


def _floor_scores(dataset: SequenceDataset, common: str, items: np.ndarray) -> dict[str, np.ndarray]:
    """Per item of ``items``: the caption scores of always writing the genre ``common`` (the floor)."""
    return caption_scores([f"? Genres: {common}."] * len(items), dataset, items)


def caption_floor(dataset: SequenceDataset, groups: dict[str, np.ndarray]) -> tuple[str, dict[str, dict[str, float]]]:
    """The score a model must beat to have read anything from the codes: always writing the genre most common among
    the taught items, scored like a model's captions. Returns (that genre, {group: mean scores})."""
    common = _floor_genre(dataset, groups)
    return common, {group: {k: float(v.mean()) for k, v in _floor_scores(dataset, common, items).items()}
                    for group, items in groups.items()}


def caption_report(models: dict, dataset: SequenceDataset, groups: dict[str, np.ndarray], floor: bool = True) -> dict:
    """Mean caption scores (``caption_scores``) of each model (name -> a module with ``caption``) on each item group,
    then (``floor``) of the floor (``caption_floor``), as {(name, group): {score: mean}}: one table of notebook 07's,
    and what the study keeps of each stage piece."""
    rows = {}
    for name, model in models.items():
        for group, items in groups.items():
            scores = caption_scores(model.caption(items.tolist()), dataset, items)
            rows[name, group] = {k: float(v.mean()) for k, v in scores.items()}
    if floor:
        common, floors = caption_floor(dataset, groups)
        rows.update({(f"always '{common}' (no model)", group): scores for group, scores in floors.items()})
    return rows


def caption_floor_gap(model, dataset: SequenceDataset, groups: dict[str, np.ndarray], score: str = "genre_accuracy",
                      n_boot: int = 2000, written: Sequence[str] | None = None):
    """Does ``model`` caption held-out items better than the floor (``caption_floor``) beyond noise? The paired
    bootstrap over the held-out items of (model's ``score`` - the floor's), as ``metrics.paired_bootstrap`` reports
    it (the floor is the "b" side). ``written``: the model's captions of the held-out items, if already made."""
    from minirec.metrics import paired_bootstrap
    items = groups["held-out items"]
    written = model.caption(items.tolist()) if written is None else list(written)
    written = caption_scores(written, dataset, items)[score]
    floor = _floor_scores(dataset, _floor_genre(dataset, groups), items)[score]
    return paired_bootstrap(written, floor, score, n_boot)


def task_shares(examples: "ExampleSet", sampler) -> dict[str, dict[str, float]]:
    """Per task of a stage: its examples, how many an epoch draws (``sampler.counts``), and its share of the epoch in
    examples and in labelled tokens (the tokens the loss is taken on): a task of short examples weighs less in the
    loss than its share of examples says."""
    counts = {name: int(n) for name, n in sampler.counts.items() if name in examples.ranges}
    tokens = {}
    for name, n in counts.items():
        lo, hi = examples.ranges[name]
        labelled = [sum(1 for t in examples.examples[i][1] if t != IGNORE) for i in range(lo, hi)]
        tokens[name] = n * float(np.mean(labelled)) if labelled else 0.0
    drawn, total = max(1, sum(counts.values())), max(1.0, sum(tokens.values()))
    return {name: {"examples": examples.ranges[name][1] - examples.ranges[name][0], "drawn per epoch": counts[name],
                   "share of examples": counts[name] / drawn, "share of labelled tokens": tokens[name] / total}
            for name in counts}


def tokenizer_corpus(dataset: SequenceDataset) -> list[str]:
    """Every text the tasks and rationales write, for training a from-scratch BPE tokeniser."""
    from minirec.reasoning.rationales import rationale_text
    texts = [str(t) for t in dataset.items["text"]]
    texts += [" " + str(t) for t in dataset.items["title"]]
    texts += [persona_words(dataset, u) for u in range(dataset.n_users)] if dataset.users is not None else []
    genres = dataset.genre_vocabulary
    texts += [rationale_text(genres[i:i + 2]) for i in range(len(genres))] + [" is", " The user watched"]
    return texts


# ----------------------------------------------------------------------------- batching
class ExampleSet(Dataset):
    """Examples of several tasks side by side; item ``i`` is (ids, labels, task index)."""

    def __init__(self, tasks: dict[str, list[Example]]):
        self.names = [name for name in TASKS if name in tasks] + [n for n in tasks if n not in TASKS]
        self.examples, self.task_of, self.ranges = [], [], {}
        for t, name in enumerate(self.names):
            start = len(self.examples)
            self.examples += tasks[name]
            self.task_of += [t] * len(tasks[name])
            self.ranges[name] = (start, len(self.examples))

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i):
        ids, labels = self.examples[i]
        return ids, labels, self.task_of[i]

    def task(self, i: int) -> int:
        return self.task_of[i]

    def length(self, i: int) -> int:
        return len(self.examples[i][0])


class TaskMix(Sampler):
    """Each epoch: ``epoch_size`` examples, each task's share of them drawn from that task's examples.

    A task with more slots than examples cycles through fresh permutations of them. By default
    the epoch holds every example of the ``lead`` task once (every sequential window once, the
    other tasks in proportion; the largest-share task when the lead has no share).
    """

    def __init__(self, examples: ExampleSet, shares: dict[str, float], epoch_size: int | None = None, seed: int = 0,
                 lead: str = "sequential"):
        shares = {n: float(s) for n, s in shares.items() if s > 0 and n in examples.ranges}
        if not shares:
            raise ValueError(f"the task mix gives no share to any task present ({examples.names})")
        total = sum(shares.values())
        self.shares = {n: s / total for n, s in shares.items()}
        self.examples = examples
        if epoch_size is None:
            lead = lead if lead in self.shares else max(self.shares, key=self.shares.get)
            lo, hi = examples.ranges[lead]
            epoch_size = int(round((hi - lo) / self.shares[lead]))
        self.counts = {n: int(round(s * epoch_size)) for n, s in self.shares.items()}
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return sum(self.counts.values())

    def __iter__(self):
        picks = []
        for name, count in self.counts.items():
            lo, hi = self.examples.ranges[name]
            reps = -(-count // (hi - lo))
            picks.append(np.concatenate([self.rng.permutation(hi - lo) for _ in range(reps)])[:count] + lo)
        order = np.concatenate(picks)
        return iter(self.rng.permutation(order).tolist())


class TaskBatches(Sampler):
    """Batches of one task each, of similar lengths: padding to the longest example of a batch stays cheap.

    Each epoch takes the indices ``sampler`` draws, groups them by task, sorts pools of
    ``pool`` batches by example length, cuts batches and shuffles the batches. Every drawn
    example is used once per epoch, so the task shares stay those of the sampler.
    """

    def __init__(self, sampler: Sampler, examples, batch_size: int, pool: int = 20, seed: int = 0):
        self.sampler, self.examples, self.batch_size, self.pool = sampler, examples, batch_size, pool
        self.rng = np.random.default_rng(seed + 7919)

    def _batches(self) -> list[list[int]]:
        by_task: dict[int, list[int]] = {}
        for i in self.sampler:
            by_task.setdefault(self.examples.task(i), []).append(i)
        batches, span = [], self.batch_size * self.pool
        for indices in by_task.values():
            for lo in range(0, len(indices), span):
                chunk = sorted(indices[lo:lo + span], key=self.examples.length)
                batches += [chunk[j:j + self.batch_size] for j in range(0, len(chunk), self.batch_size)]
        return [batches[j] for j in self.rng.permutation(len(batches))]

    def __len__(self) -> int:
        return sum(-(-n // self.batch_size) for n in self._task_counts().values())

    def _task_counts(self) -> dict[str, int]:
        counts = getattr(self.sampler, "counts", None)
        return counts if counts is not None else {"all": len(self.sampler)}

    def __iter__(self):
        return iter(self._batches())


def collate_examples(rows, pad: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask``, ``labels`` and each row's ``task``."""
    width = max(len(ids) for ids, _, _ in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (x, y, _) in enumerate(rows):
        ids[r, :len(x)] = torch.as_tensor(x)
        labels[r, :len(y)] = torch.as_tensor(y)
        mask[r, :len(x)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels,
            "task": torch.as_tensor([t for _, _, t in rows])}


def left_pad(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> left-padded (B, T) ids and attention mask, so every prompt ends at the last column."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if len(r):
            ids[i, width - len(r):] = torch.as_tensor(list(r))
            mask[i, width - len(r):] = 1
    return ids, mask


# ----------------------------------------------------------------------------- caption quality
_CAPTION = re.compile(r"^\s*(?P<title>.*?)\s*(\((?P<year>\d{4})\))?\.?\s*(Genres:\s*(?P<genres>.*?))?\.?\s*$")


@dataclass
class Caption:
    title: str
    year: str
    genres: list[str]


def parse_caption(text: str) -> Caption:
    """"Toy Story (1995). Genres: Animation, Comedy." -> its title, year and genres (empty parts when absent)."""
    m = _CAPTION.match(text.replace("\n", " "))
    genres = [g.strip() for g in (m.group("genres") or "").split(",") if g.strip()]
    return Caption((m.group("title") or "").strip(), m.group("year") or "", genres)


def token_f1(predicted: str, truth: str) -> float:
    """F1 of the lower-cased word multisets of two strings (SQuAD-style)."""
    p, t = predicted.lower().split(), truth.lower().split()
    if not p or not t:
        return float(p == t)
    common = sum(min(p.count(w), t.count(w)) for w in set(p))
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(t)
    return 2 * precision * recall / (precision + recall)


def caption_scores(generated: Sequence[str], dataset: SequenceDataset, items: Sequence[int]) -> dict[str, np.ndarray]:
    """Per caption: title exact match and token F1, genre accuracy (the first genre written is one of the
    item's), genre F1 (sets), and whether the year is right."""
    out = {k: [] for k in ("title_exact", "title_f1", "genre_accuracy", "genre_f1", "year_exact")}
    for text, i in zip(generated, items):
        row, cap = dataset.items.iloc[int(i)], parse_caption(text)
        truth = set(row["genres"])
        out["title_exact"].append(float(cap.title.lower() == str(row["title"]).lower()))
        out["title_f1"].append(token_f1(cap.title, str(row["title"])))
        out["genre_accuracy"].append(float(bool(cap.genres) and cap.genres[0] in truth))
        hit = len(set(cap.genres) & truth)
        out["genre_f1"].append(0.0 if not hit else 2 * hit / (len(set(cap.genres)) + len(truth)))
        out["year_exact"].append(float(cap.year == str(row["year"])))
    return {k: np.array(v) for k, v in out.items()}
