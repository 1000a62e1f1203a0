"""ShopX-mini: one Qwen3 that reads a shopping session and acts in SID space (docs/method.md §8).

The model is the OneRec-Think backbone after itemic alignment (it reads and writes both words
and SIDs), fine-tuned on three kinds of examples built from shopping tasks of *training* users
(``intents.training_stage``: their last training item is the target, so no validation or test
item is ever a training target):

- ``action``      the session so far (history SIDs, the constraints gathered, what the shopper just said and the
  SIDs of the films it names, which the harness grounds) -> the action JSON, written token by token (loss on the
  action; a ``rank`` copies the named films' SIDs);
- ``retrieve``    history SIDs and an intent in words -> the target's SID: the retrieval that ``retrieve``
  runs *inside the model*, a constrained beam search restricted to the items the constraints allow;
- ``sequential``  history SIDs -> the next SID (the Base task), so the model keeps recommending without words.

The action protocol's fixed pieces (``{"action":"retrieve"``, ``"genres":[``, every genre name,
every decade, ...) are added to the tokeniser as *protocol tokens*, new rows in the embedding
matrix, as OneRec-Think adds the itemic tokens: an action is a few dozen tokens, not a hundred
bytes. The rows of the checkpoint it starts from keep their values; the new rows start from the
mean of the old ones, plus a little noise so that they differ.

``ShopXAgent`` plays the agent in ``episodes.run_episode``: after the shopper speaks, the model
writes one action (greedy, text, protocol and SID code tokens only); after a retrieval, a ranking or a bundle, the
agent answers the items shown (the same scripted step as the baseline's, so the two agents
differ in how they understand the intent and in what they retrieve, not in how they answer);
after an error, the model reads the error message and writes once more.

``ToolCaller`` is the learned tool-calling baseline: the same backbone from the same aligned
checkpoint, fine-tuned on the same tasks to write the same actions (``action`` examples only),
whose calls a separate ranker (SASRec) serves. It never retrieves in item space, so its epochs
are chosen on the share of validation turns whose action it writes exactly.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from minirec.agent.catalogue import Catalogue, sid_strings
from minirec.agent.episodes import answer_shown, play
from minirec.agent.harness import Harness, Result
from minirec.agent.intents import Task, make_tasks, training_stage, user_split
from minirec.agent.protocol import Constraints
from minirec.data.dataset import EmptyHistoryError, EvalStage, LeaveOneOutSplit, training_windows
from minirec.models.beam_search import constrained_beam_search
from minirec.models.generative import GenRecConfig
from minirec.models.sampling import generate_text
from minirec.profiles import data_size
from minirec.reasoning.itemic import ExampleSet, TaskMix, left_pad, sequential_examples
from minirec.reasoning.onerec import OneRecThink, Stage, StageData

SHOP_TASKS = ("action", "retrieve", "sequential")
QUESTION = "What kind of film would you like?"
DECADES = tuple(range(1920, 2000, 10))


def protocol_tokens(genres: Sequence[str]) -> list[str]:
    """The action protocol's fixed pieces, as whole tokens (compact JSON, as ``action_text`` writes it)."""
    pieces = ['{"action":"retrieve"', '{"action":"ask"', '{"action":"bundle"', '{"action":"answer"', '{"action":"rank"',
              ',"question":"', ',"constraints":{', ',"slots":[', '{"constraints":{', '"genres":[',
              '"not_genres":[', '"decades":[', '"}', ']}', '}}', ',"candidates":["', '","', '"]}']
    return pieces + [json.dumps(g) for g in genres] + [str(d) for d in DECADES]


def action_text(action: str, **fields) -> str:
    """An action as the model writes it: compact JSON, fields in the protocol's order."""
    return json.dumps({"action": action, **fields}, separators=(",", ":"))


def intended_action(task: Task, turn: int, sids: Sequence[str] | None = None) -> str:
    """The action that fulfils turn ``turn`` of ``task``: what the model is trained to write. ``sids``: every item's
    SID (``Catalogue.sids``), which a choice task's ``rank`` names its candidates by."""
    t = task.turns[turn]
    if task.kind == "choice":
        if sids is None:
            raise ValueError("a choice task's action names its candidates by SID: pass the catalogue's sids")
        return action_text("rank", candidates=[sids[i] for i in task.candidates])
    if t.expects_question:
        return action_text("ask", question=QUESTION)
    if task.slots:
        return action_text("bundle", slots=[{"constraints": c.to_json()} for c in task.slots])
    return action_text("retrieve", constraints=t.wants.to_json())     # the intent: the shopper's words (the harness's)


@dataclass
class ShopXConfig(GenRecConfig):
    """ShopX-mini: the architecture of the OneRec-Think model it starts from (``GenRecConfig``'s fields, carried over
    by ``RunSpec.then``), plus the shopping data it fine-tunes on and how it acts. None of OneRec-Think's stage
    fields (task mix, rationales, captions): it trains in its own stage, ``ShoppingSessions``."""
    stage: str = "shop"
    train_layers: int | None = None             # a pretrained backbone: its last n layers train (OneRecConfig's)
    held_out: float = 0.2                       # share of users whose sessions are never trained on (the evaluation's)
    task_seed: int = 0                          # the user split and the training tasks
    train_per_kind: int = data_size(400)        # training tasks of each kind (intents.KINDS)
    shop_mix: tuple = (0.7, 0.2, 0.1)           # shares of action, retrieve, sequential examples (SHOP_TASKS)
    examples_per_epoch: int = data_size(5000)   # drawn by the mix each epoch
    context_items: int = 3                      # history items the model reads before it acts (its retrieval reads
                                                # the last max_items, as every other model's prompt does)
    action_tokens: int = 48                     # longest action written
    val_per_kind: int = data_size(20)           # held-out shoppers' validation tasks of each kind played after every
                                                # epoch: their hit@10 is what early stopping watches


class ShoppingSessions(Stage):
    """ShopX-mini's stage: the training shoppers' sessions (the action to write at each turn, the SID to retrieve
    for an intent) mixed with next-item prediction by ``shop_mix``, under the ``agent`` recipe."""
    name, family, taught_words = "shop", "agent", False

    def examples(self, module, split, seed):
        return module.session_examples(split, seed)


class ShopXMini(OneRecThink):
    """The ShopX-mini model: reads a session, writes actions, and retrieves by its own SID beam search."""

    config_class = ShopXConfig
    stages = {"shop": ShoppingSessions()}
    monitor = "val_agent_hit10"          # an agent is chosen on its task: validation episodes of held-out shoppers

    def __init__(self, config: ShopXConfig, sid_table, texts: Sequence[str] = (), model=None, tokenizer=None):
        super().__init__(config, sid_table, texts, model, tokenizer)
        before = self.model.get_input_embeddings().weight.shape[0]
        self.tokenizer.add_tokens([t for t in protocol_tokens(self.genre_names()) if t not in self.tokenizer.get_vocab()])
        if len(self.tokenizer) > before:
            self.model.resize_token_embeddings(len(self.tokenizer), mean_resizing=False)
            with torch.no_grad():                         # new rows: the old rows' mean, plus a little noise
                w = self.model.get_input_embeddings().weight
                w[before:] = w[:before].mean(0) + 0.02 * torch.randn_like(w[before:])
        self.n_parent_rows = before
        self.item_sids = sid_strings(sid_table.codes)
        writable = self._text_mask()
        writable[self.vocab.sid_ids] = True                    # a rank names its candidates by their SID codes
        self.register_buffer("text_tokens", writable, persistent=False)
        if len(config.shop_mix) != len(SHOP_TASKS):
            raise ValueError(f"shop_mix needs {len(SHOP_TASKS)} shares, in the order {SHOP_TASKS}; got {config.shop_mix}")

    @staticmethod
    def genre_names() -> list[str]:
        """ML-100K's genres: the protocol tokens are fixed before any data is read, so a checkpoint's size is too."""
        return ["Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
                "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """A checkpoint of the OneRec-Think stage it starts from has the rows without the protocol tokens: those
        rows are copied and the protocol rows keep their initial values. Any other size is an error."""
        key = "model.model.embed_tokens.weight"
        mine = self.model.get_input_embeddings().weight
        theirs = state_dict.get(key)
        if theirs is not None and theirs.shape[0] != mine.shape[0]:
            if theirs.shape[0] != self.n_parent_rows or theirs.shape[1] != mine.shape[1]:
                raise ValueError(f"the checkpoint's vocabulary has {theirs.shape[0]} rows; ShopX-mini has "
                                 f"{mine.shape[0]} ({self.n_parent_rows} before its protocol tokens)")
            state_dict = dict(state_dict)
            for name in (key, "model.lm_head.weight"):
                if name in state_dict:
                    grown = self.state_dict()[name].clone()
                    grown[:theirs.shape[0]] = state_dict[name]
                    state_dict[name] = grown
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # ------------------------------------------------------------------ prompts
    def _items(self, history: Sequence[int], n: int) -> list[int]:
        items = [int(i) for i in np.asarray(history)[-n:]]
        if not items:
            raise EmptyHistoryError("a session needs a shopper with at least one item in their history")
        return [t for i in items for t in self.wrapped_tokens[i].tolist()]

    def _words(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def session_prompt(self, history: Sequence[int], wanted: Constraints, utterance: str, error: str = "",
                       named: Sequence[int] = ()) -> list[int]:
        """What the model reads before it acts: the history's SIDs, the constraints so far, the shopper's words, the
        SIDs of the films they name (``Catalogue.mentions``), and the harness's last error if any."""
        text = f" wanted: {json.dumps(wanted.to_json(), separators=(',', ':'))} shopper: {utterance}"
        out = [self.vocab.bos_token] + self._items(history, self.config.context_items) + self._words(text)
        if len(named):
            out += self._words(" named:") + [t for i in named for t in self.wrapped_tokens[int(i)].tolist()]
        if error:
            out += self._words(f" harness: {error[:200]}")
        return out + self._words(" action:")

    def intent_prompt(self, history: Sequence[int], intent: str) -> list[int]:
        """What the model's retrieval reads: the history's SIDs, the intent in words (if any), then ``<|sid_begin|>``."""
        words = self._words(f" intent: {intent}") if intent.strip() else []
        return [self.vocab.bos_token] + self._items(history, self.config.max_items) + words + [self.vocab.item_token]

    # ------------------------------------------------------------------ training data (``make_datamodule``: OneRec-Think's)
    def training_tasks(self, split: LeaveOneOutSplit,
                       catalogue: Catalogue | None = None) -> tuple[list[Task], EvalStage]:
        """The training users' tasks (targets: their last training item) and that stage."""
        c = self.config
        train_users, _ = user_split(split.dataset.n_users, c.held_out, c.task_seed)
        catalogue = catalogue or Catalogue(split.dataset, self.sid_table)
        stage = training_stage(split)
        return make_tasks(catalogue, split, train_users, c.train_per_kind, c.task_seed, stage=stage), stage

    def validation_tasks(self, split: LeaveOneOutSplit, catalogue: Catalogue | None = None) -> list[Task]:
        """Held-out shoppers' tasks whose target is their validation item (the epochs and settings are chosen on them)."""
        c = self.config
        _, held = user_split(split.dataset.n_users, c.held_out, c.task_seed)
        return make_tasks(catalogue or Catalogue(split.dataset, self.sid_table), split, held, c.val_per_kind,
                          c.task_seed + 1, stage=split.valid)

    def validation_step(self, batch, batch_idx):
        """Nothing per batch: an agent is validated on its episodes (the next-item test NDCG@10 is still reported)."""

    def on_validation_epoch_end(self) -> None:
        if getattr(self, "_valid", None) is not None:
            catalogue, tasks, stage = self._valid
            was_training = self.training
            self.eval()
            episodes = play(tasks, ShopXAgent(self), catalogue, ModelBackend(self), stage.histories)
            self.train(was_training)
            self.log("val_agent_hit10", float(np.mean([e.hit for e in episodes])))
            self.log("val_agent_satisfied", float(np.mean([e.satisfied for e in episodes])))

    def session_examples(self, split: LeaveOneOutSplit, seed: int = 0) -> StageData:
        """The shopping stage's examples (``ShoppingSessions``); also keeps the validation episodes to play."""
        catalogue = Catalogue(split.dataset, self.sid_table)                 # one catalogue for both task sets
        self._valid = (catalogue, self.validation_tasks(split, catalogue), split.valid)
        tasks, stage = self.training_tasks(split, catalogue)
        row = {int(u): r for r, u in enumerate(stage.users)}
        pad_label = -100
        actions, retrievals = [], []
        for task in tasks:
            history = stage.histories[row[task.user]]
            wanted = Constraints()
            for turn, t in enumerate(task.turns):
                prompt = self.session_prompt(history, wanted, t.text, named=t.named)
                target = self._words(intended_action(task, turn, self.item_sids)) + [self.vocab.eos_token]
                actions.append((prompt + target, [pad_label] * len(prompt) + target))
                if not t.expects_question and not task.slots:
                    prompt = self.intent_prompt(history, t.text)
                    sid = self.wrapped_tokens[task.target].tolist()[1:]            # the codes and <|sid_end|>
                    retrievals.append((prompt + sid, [pad_label] * len(prompt) + sid))
                wanted = wanted.merged(t.wants)
        writer = self.writer(split.dataset)
        windows = training_windows(split.train, self.config.max_items)
        data = ExampleSet({"action": actions, "retrieve": retrievals, "sequential": sequential_examples(writer, windows)})
        mix = TaskMix(data, dict(zip(SHOP_TASKS, self.config.shop_mix)), self.config.examples_per_epoch, seed)
        return StageData(data, mix, tuple(data.names))

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def write_action(self, history: Sequence[int], wanted: Constraints, utterance: str, error: str = "",
                     named: Sequence[int] = ()) -> str:
        """The action the model writes for this session (greedy), as text: the harness validates it."""
        ids, mask = left_pad([self.session_prompt(history, wanted, utterance, error, named)], self.vocab.pad_token)
        device = self.wrapped_tokens.device
        written = generate_text(self.model, ids.to(device), mask.to(device), self.text_tokens, self.vocab.eos_token,
                                self.config.action_tokens)[0]
        return self.tokenizer.decode(written)

    @torch.no_grad()
    def retrieve_items(self, history: Sequence[int], allowed: np.ndarray, k: int, intent: str = "") -> list[int]:
        """Top-k allowed items by the model's constrained beam search after the history and the intent."""
        self.eval()
        ids, mask = left_pad([self.intent_prompt(history, intent)], self.vocab.pad_token)
        device = self.wrapped_tokens.device
        blocked = np.flatnonzero(~np.asarray(allowed, dtype=bool))
        exclude = torch.as_tensor(blocked[None] if len(blocked) else np.full((1, 1), -1), dtype=torch.long)
        k = int(min(k, np.asarray(allowed).sum()))
        if k == 0:
            return []
        self.trie.to(device)
        items, _ = constrained_beam_search(self.model, self.vocab, self.trie, ids.to(device), mask.to(device),
                                           max(self.config.beam_width, k), k, exclude.to(device))
        return [int(i) for i in items[0].tolist() if i >= 0]


class ModelBackend:
    """The harness backend of ShopX-mini: retrieval and ranking are the model's own SID beam search."""

    def __init__(self, module: ShopXMini):
        self.module = module

    def retrieve(self, history, allowed, k, intent=""):
        return self.module.retrieve_items(history, allowed, k, intent)

    def rank(self, history, candidates, intent=""):
        allowed = np.zeros(self.module.sid_table.codes.shape[0], dtype=bool)
        allowed[list(candidates)] = True
        ranked = self.module.retrieve_items(history, allowed, len(candidates), intent)
        returned = set(ranked)
        return ranked + [c for c in candidates if c not in returned]


class ShopXAgent:
    """ShopX-mini as an ``episodes`` agent: the model writes each turn's action; shown items are then answered."""

    def __init__(self, module: ShopXMini, k: int = 10):
        self.module, self.k = module, k
        self.utterance = ""

    def act(self, harness: Harness, utterance: str | None, last: Result | None) -> str:
        if last is None:                                   # the shopper just spoke
            self.utterance, self.retried = utterance or "", False
            self.named = harness.catalogue.mentions(self.utterance)       # the harness grounds the titles named
            return self.module.write_action(harness.history, harness.state.constraints, self.utterance,
                                            named=self.named)
        if not last.ok and not self.retried:               # the model reads the error and writes once more
            self.retried = True
            return self.module.write_action(harness.history, harness.state.constraints, self.utterance, last.message,
                                            self.named)
        return answer_shown(harness, last, self.k)


def action_agreement(modules: Sequence[ShopXMini], tasks: Sequence[Task], stage: EvalStage) -> list[dict]:
    """For every model and every turn of every task: does the action it writes parse, is it exactly the intended
    action, and is it the same kind of action? (Each turn starts from the state the intended action would have left,
    so one wrong turn does not spoil the next.) ``stage``: where the shoppers' histories are (validation)."""
    from minirec.agent.protocol import parse_action

    row_of = {int(u): r for r, u in enumerate(stage.users)}
    rows = []
    for module in modules:
        for task in tasks:
            wanted = Constraints()
            for turn, t in enumerate(task.turns):
                text = module.write_action(stage.histories[row_of[task.user]], wanted, t.text, named=t.named)
                intended = parse_action(intended_action(task, turn, module.item_sids))
                try:
                    written = parse_action(text)
                except ValueError:
                    written = None
                rows.append({"kind": task.kind, "phrasing": task.phrasing, "parses": written is not None,
                             "exact": _same(written, intended),
                             "same action": written is not None and written.name == intended.name})
                wanted = wanted.merged(t.wants)
    return rows


def _same(written, intended) -> bool:
    """The same action, SIDs compared without the spaces a tokeniser may write between SID tokens."""
    from minirec.agent.catalogue import sid_key
    from minirec.agent.protocol import Rank
    if isinstance(written, Rank) and isinstance(intended, Rank):
        return [sid_key(c) for c in written.candidates] == [sid_key(c) for c in intended.candidates]
    return written == intended


class ToolCaller(ShopXMini):
    """The learned tool-calling baseline: ShopX-mini's architecture and starting checkpoint, trained on the ``action``
    examples only (``shop_mix`` (1, 0, 0), set by its spec); a separate ranker serves its calls (``ShopXAgent`` over a
    ``RankerBackend``). Its epochs are chosen on the validation turns' exact actions (``val_action_exact``), since its
    retrieval is not its own."""

    monitor = "val_action_exact"

    def on_validation_epoch_end(self) -> None:
        if getattr(self, "_valid", None) is not None:
            _, tasks, stage = self._valid
            was_training = self.training
            self.eval()
            rows = action_agreement([self], tasks, stage)
            self.train(was_training)
            self.log("val_action_exact", float(np.mean([r["exact"] for r in rows])))
            self.log("val_action_parses", float(np.mean([r["parses"] for r in rows])))
