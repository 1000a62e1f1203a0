"""Speed and validity benchmarks that the notebooks run and record (never timed tests).

- ``beam_search_benchmark``: users/s of the batched, cached, vectorised-trie search against
  the per-user, per-beam loop (``naive_beam_search``) on the same users, whether both return
  the same items, and how much of the batched search's wall time is spent in model forwards.
- ``training_throughput``: tokens/s of the Lightning training loop against a bare
  forward/backward/step loop over the very same batches.
- ``invalid_rate``: share of returned recommendations that are not catalogue items.
- ``train_step_cost`` / ``inference_cost``: seconds per training step and per recommended
  user of several models on the same batches and users, measured in alternating rounds so
  that a busy machine slows them alike (S²GR against TIGER-mini).
"""
from __future__ import annotations

import copy
import time
import warnings
from dataclasses import replace

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from minirec.data.dataset import EvalStage, pad_left
from minirec.models.beam_search import constrained_beam_search, naive_beam_search
from minirec.profiles import Profile
from minirec.training import quiet_lightning


def invalid_rate(items: torch.Tensor, n_items: int) -> float:
    """Share of recommended entries that are not a catalogue item (-1 = no item, also invalid)."""
    items = torch.as_tensor(items)
    return float(((items < 0) | (items >= n_items)).float().mean())


class ForwardClock:
    """Seconds a module spends inside its forward calls while the ``with`` block runs (forward hooks)."""

    def __init__(self, module: torch.nn.Module):
        self.module, self.seconds, self._start = module, 0.0, 0.0

    def __enter__(self) -> "ForwardClock":
        self._hooks = [self.module.register_forward_pre_hook(self._begin),
                       self.module.register_forward_hook(self._end)]
        return self

    def _begin(self, *_):
        self._start = time.perf_counter()

    def _end(self, *_):
        self.seconds += time.perf_counter() - self._start

    def __exit__(self, *_):
        for hook in self._hooks:
            hook.remove()


@torch.no_grad()
def beam_search_benchmark(module, stage: EvalStage, n_users: int = 256, n_naive: int = 8, k: int = 10,
                          batch_size: int = 128) -> dict:
    """Batched search vs the per-user loop; forward share of the batched search's time."""
    module.eval()
    histories = stage.inputs(module.config.max_items)[:n_users]
    start = time.perf_counter()
    batched = []
    with ForwardClock(module.model) as forwards:
        for lo in range(0, len(histories), batch_size):
            x = torch.as_tensor(pad_left(histories[lo:lo + batch_size]))
            input_ids, mask, _ = module.encode_histories(x)
            items, _ = constrained_beam_search(module.model, module.vocab, module.trie, input_ids, mask,
                                               module.config.beam_width, k)
            batched.append(items)
    batched_seconds = time.perf_counter() - start
    batched = torch.cat(batched)
    start = time.perf_counter()
    same = 0
    for u in range(n_naive):
        input_ids, mask, _ = module.encode_histories(torch.as_tensor(histories[u])[None])
        items, _ = naive_beam_search(module.model, module.vocab, module.sid_table.codes, input_ids[0][mask[0] > 0],
                                     module.config.beam_width, k)
        same += items == batched[u].tolist()
    naive_seconds = time.perf_counter() - start
    batched_rate, naive_rate = len(histories) / batched_seconds, n_naive / naive_seconds
    return {"batched_users_per_s": batched_rate, "naive_users_per_s": naive_rate,
            "speedup": batched_rate / naive_rate, "identical_results": same / n_naive,
            "wall_over_forward": batched_seconds / forwards.seconds,
            "invalid_rate": invalid_rate(batched, module.sid_table.n_items)}


def _tokens(module, batch) -> int:
    return int((module.window_of(batch) >= 0).sum()) * module.tokens_per_item


def training_throughput(module, datamodule, profile: Profile, steps: int = 30, warmup: int = 3) -> dict:
    """Tokens/s of Lightning's loop and of a bare loop on the same batches (copies of the module).

    Both use the profile's recipe for the module's family and Lightning the profile's
    accelerator, devices and precision; the bare loop runs where the module's weights are.
    """
    quiet_lightning()
    module.recipe = profile.recipe(module.family)
    loader = datamodule.train_dataloader()
    batches = [b for _, b in zip(range(steps + warmup), loader)]
    tokens = sum(_tokens(module, b) for b in batches[warmup:])

    bare = copy.deepcopy(module).train()
    optimizer = bare.configure_optimizers()["optimizer"]
    for i, batch in enumerate(batches):
        if i == warmup:
            start = time.perf_counter()
        loss = bare.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    bare_seconds = time.perf_counter() - start

    lit = copy.deepcopy(module).train()
    timer = _StepTimer(warmup)
    options = dict(profile.trainer_kwargs(), enable_progress_bar=False)
    trainer = L.Trainer(max_steps=len(batches), logger=False, enable_checkpointing=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, callbacks=[timer], **options)
    with warnings.catch_warnings():     # training speed only: the module's validation_step is meant to be idle here
        warnings.filterwarnings("ignore", message="You defined a `validation_step` but have no `val_dataloader`")
        trainer.fit(lit, train_dataloaders=DataLoader(batches, batch_size=None))   # the same batches, in order
    lightning_seconds = timer.seconds
    return {"bare_tokens_per_s": tokens / bare_seconds, "lightning_tokens_per_s": tokens / lightning_seconds,
            "lightning_over_bare": (tokens / lightning_seconds) / (tokens / bare_seconds)}


class _StepTimer(L.Callback):
    """Wall time from the start of batch ``warmup`` to the end of the last batch."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.seconds = warmup, None, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.start is not None:
            self.seconds = time.perf_counter() - self.start


def train_step_cost(models: dict, datamodule, steps: int = 10, rounds: int = 3) -> dict[str, float]:
    """Median seconds per training step (loss, backward, AdamW) of each model on the same batches.

    ``datamodule`` may also be a dict, one per model (models that train on other examples,
    such as OneRec-Think's stages). Copies of the models are timed in alternating rounds, so a
    busy machine slows them alike.
    """
    modules = datamodule if isinstance(datamodule, dict) else {name: datamodule for name in models}
    loaded = {}
    for name, dm in modules.items():
        if id(dm) not in loaded:
            loaded[id(dm)] = [b for _, b in zip(range(steps + 1), dm.train_dataloader())]
    batches_of = {name: loaded[id(modules[name])] for name in models}
    copies = {name: copy.deepcopy(m).train() for name, m in models.items()}
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-4) for name, m in copies.items()}
    times = {name: [] for name in models}
    for _ in range(rounds):
        for name, module in copies.items():
            for i, batch in enumerate(batches_of[name]):
                if i == 1:                                   # the first step warms up
                    start = time.perf_counter()
                loss = module.loss(batch)
                optimizers[name].zero_grad(set_to_none=True)
                loss.backward()
                optimizers[name].step()
            times[name].append((time.perf_counter() - start) / steps)
    return {name: float(np.median(t)) for name, t in times.items()}


@torch.no_grad()
def inference_cost(models: dict, stage: EvalStage, n_users: int = 256, rounds: int = 3, k: int = 20,
                   max_items: int | None = None) -> dict[str, float]:
    """Median seconds per recommended user (top-``k`` beam search) of each model, alternating rounds.

    ``max_items`` times prompts of another length than the models were trained on (a copy of
    each model reads that many history items): only the cost is meaningful then.
    """
    copies = {}
    for name, m in models.items():
        copies[name] = c = copy.deepcopy(m).eval()
        if max_items is not None:
            c.config = replace(c.config, max_items=max_items)
    n_items = max_items or next(iter(copies.values())).config.max_items
    x = torch.as_tensor(pad_left(stage.inputs(n_items)[:n_users]))
    ex = torch.as_tensor(pad_left(stage.histories[:n_users]))
    times = {name: [] for name in models}
    for _ in range(rounds):
        for name, module in copies.items():
            start = time.perf_counter()
            for lo in range(0, len(x), 128):
                module.rank_topk(x[lo:lo + 128], ex[lo:lo + 128], k)
            times[name].append((time.perf_counter() - start) / len(x))
    return {name: float(np.median(t)) for name, t in times.items()}
