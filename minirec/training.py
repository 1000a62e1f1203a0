"""Lightning plumbing shared by every trained recommender in minirec.

- ``SequenceDataModule``: training windows (every position predicts the next item) and
  the validation / test stages of a leave-one-out split, as padded LongTensors.
- ``RankingModule``: a LightningModule base whose validation step runs the *same*
  protocol as the final evaluation (full ranking, history excluded) and logs
  ``val_ndcg10``, the quantity early stopping and checkpointing watch (``monitor``: an agent
  watches its own validation task). A subclass only writes ``training_step`` and ``rank_topk``.
- ``fit``: Trainer with early stopping on the module's ``monitor``, best-checkpoint reload and
  learning curves, with accelerator / devices / precision taken from the profile. A stage that
  starts from a trained checkpoint validates its starting weights first (epoch 0) and keeps them
  when no epoch beats them, so it never ends below where it started.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from minirec.artifacts import REUSE_LOG_ENV, write_json
from minirec.data.dataset import EvalStage, LeaveOneOutSplit, MAX_HISTORY, pad_left, training_windows
from minirec.metrics import topk_metrics
from minirec.profiles import Profile, Recipe


def quiet_lightning() -> None:
    """No GPU/TPU banner and tips per fit; notebooks stay readable."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")          # Lightning 2.6 / torch 2.13 chatter
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*exists and is not empty.*")   # a resumed fit's own folder


class _Windows(Dataset):
    def __init__(self, windows: np.ndarray):
        x, y = windows[:, :-1].copy(), windows[:, 1:].copy()
        y[x < 0] = -1                      # no target without context
        self.x, self.y = torch.as_tensor(x), torch.as_tensor(y)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


class _Stage(Dataset):
    def __init__(self, stage: EvalStage, max_len: int):
        self.inputs, self.histories, self.targets = stage.inputs(max_len), stage.histories, stage.targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        return self.inputs[i], self.histories[i], self.targets[i]


def collate_stage(rows) -> dict[str, torch.Tensor]:
    """Rows of (input, full history, target) -> left-padded tensors."""
    inputs, histories, targets = zip(*rows)
    return {"inputs": torch.as_tensor(pad_left(inputs)), "exclude": torch.as_tensor(pad_left(histories)),
            "targets": torch.as_tensor(np.array(targets))}


class SequenceDataModule(L.LightningDataModule):
    """Batches of a leave-one-out split for next-item models over item indices."""

    def __init__(self, split: LeaveOneOutSplit, max_len: int = MAX_HISTORY, batch_size: int = 128,
                 eval_batch_size: int = 256, seed: int = 0):
        super().__init__()
        self.split, self.max_len, self.batch_size = split, max_len, batch_size
        self.eval_batch_size, self.seed = eval_batch_size, seed
        self.windows = _Windows(training_windows(split.train, max_len))

    def train_dataloader(self) -> DataLoader:
        gen = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.windows, batch_size=self.batch_size, shuffle=True, generator=gen)

    def _stage_loader(self, name: str) -> DataLoader:
        return DataLoader(_Stage(self.split.stage(name), self.max_len), batch_size=self.eval_batch_size,
                          shuffle=False, collate_fn=collate_stage)

    def val_dataloader(self) -> DataLoader:
        return self._stage_loader("valid")

    def test_dataloader(self) -> DataLoader:
        return self._stage_loader("test")


def optimizer_and_schedule(parameters, recipe: Recipe, run_steps: int | None = None,
                           scale=lambda: 1.0) -> dict:
    """AdamW at the recipe's peak learning rate, linear warm-up, then constant, cosine or plateau.

    The cosine horizon is ``recipe.horizon_steps``, or this run's own step budget
    (``run_steps``, max_epochs x batches per epoch) when that is None. ``plateau`` holds the
    peak after warm-up and multiplies it by ``scale()``, which ``PlateauDecay`` cuts by
    ``recipe.decay_factor`` whenever validation has not improved for ``recipe.decay_patience``
    epochs: the decay follows the steps a run really takes, whatever early stopping decides.
    """
    if recipe is None:
        raise ValueError("this module has no training recipe: train it with training.fit(module, dm, profile, ...)")
    opt = torch.optim.AdamW(parameters, lr=recipe.lr, weight_decay=recipe.weight_decay)
    warm = recipe.warmup_steps
    horizon = recipe.horizon_steps or run_steps or 1

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if recipe.schedule == "constant":
            return 1.0
        if recipe.schedule == "plateau":
            return scale()
        progress = min(1.0, (step - warm) / max(1, horizon - warm))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    if recipe.schedule not in ("constant", "cosine", "plateau"):
        raise ValueError(f"unknown schedule {recipe.schedule!r}; use 'constant', 'cosine' or 'plateau'")
    return {"optimizer": opt, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.LambdaLR(opt, factor),
                                               "interval": "step"}}


class RankingModule(L.LightningModule):
    """Base class: validation = the evaluation protocol on the validation stage.

    ``family`` names the profile recipe that trains a subclass; ``training.fit`` sets
    ``recipe`` from the profile before training, and the optimiser follows it.
    """

    val_k = 10
    monitor = "val_ndcg10"             # what early stopping and checkpointing watch (a subclass may watch its own task)
    family = ""                        # sasrec | generative: which Recipe of a profile trains it
    recipe: Recipe | None = None
    lr_scale = 1.0                     # the plateau schedule's current cut of the peak learning rate

    @classmethod
    def recipe_family(cls, config) -> str:
        """Which recipe of a profile trains a module with this config (a staged model may pick one per stage)."""
        return cls.family

    def make_datamodule(self, split: LeaveOneOutSplit, seed: int = 0) -> L.LightningDataModule:
        """The training windows and evaluation stages this module trains on (a subclass may build other data)."""
        window = getattr(self.config, "max_items", None) or self.config.max_len
        return SequenceDataModule(split, max_len=window, seed=seed)

    def configure_optimizers(self):
        run_steps = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else None
        return optimizer_and_schedule([p for p in self.parameters() if p.requires_grad], self.recipe, run_steps,
                                      scale=lambda: self.lr_scale)

    def rank_topk(self, inputs: torch.Tensor, exclude: torch.Tensor, k: int) -> torch.Tensor:
        raise NotImplementedError

    def starting_protocol(self):
        """How the starting weights of a fine-tuning fit are validated (epoch 0): by default as every epoch is. A
        stage that changes how the model recommends (OneRec-Think's reasoning) validates its start as its parent
        recommended."""
        return contextlib.nullcontext()

    def keep_start(self) -> None:
        """The starting weights won on validation: recommend as they were validated (``starting_protocol``)."""

    def starting_weights(self, parent: "FitResult") -> dict:
        """The weights a later stage starts from, given its parent's fit: by default the parent's best (the weights
        it kept). A stage whose start must recommend as the parent's *trained* epochs did (GRPO reinforces the
        rationales a reasoning stage learnt) may take those instead."""
        return parent.module.state_dict()

    def on_validation_epoch_start(self) -> None:
        self._val_scores: list[dict[str, np.ndarray]] = []

    def validation_step(self, batch, batch_idx):
        topk = self.rank_topk(batch["inputs"], batch["exclude"], self.val_k)
        self._val_scores.append(topk_metrics(topk, batch["targets"], ks=(self.val_k,)))

    def on_validation_epoch_end(self) -> None:
        for name in (f"ndcg@{self.val_k}", f"recall@{self.val_k}"):
            value = float(np.concatenate([s[name] for s in self._val_scores]).mean())
            self.log("val_" + name.replace("@", ""), value, prog_bar=True)


class PlateauDecay(L.Callback):
    """The ``plateau`` schedule's trigger: cut ``module.lr_scale`` by ``decay_factor`` after
    ``decay_patience`` validation epochs without a new best of ``monitor``."""

    def __init__(self, monitor: str, decay_patience: int, decay_factor: float):
        if decay_patience < 1 or not 0.0 < decay_factor < 1.0:
            raise ValueError(f"plateau schedule: decay_patience must be >= 1 and 0 < decay_factor < 1, "
                             f"got {decay_patience} and {decay_factor}")
        self.monitor, self.decay_patience, self.decay_factor = monitor, decay_patience, decay_factor
        self.best, self.stale, self.cuts, self.scale = -math.inf, 0, [], 1.0

    def state_dict(self) -> dict:            # saved in every checkpoint: a resumed fit cuts where this one would have
        return {"best": self.best, "stale": self.stale, "cuts": list(self.cuts), "scale": self.scale}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.stale, self.cuts, self.scale = state["best"], state["stale"], list(state["cuts"]), state["scale"]

    def on_train_start(self, trainer, pl_module):
        pl_module.lr_scale = self.scale

    def on_validation_end(self, trainer, pl_module):
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        value = float(value)
        if value > self.best:
            self.best, self.stale = value, 0
            return
        self.stale += 1
        if self.stale >= self.decay_patience:
            self.scale *= self.decay_factor
            pl_module.lr_scale = self.scale
            self.stale = 0
            self.cuts.append(trainer.current_epoch)


class CurveRecorder(L.Callback):
    """Keeps one row per epoch (train loss, validation metrics) for learning-curve plots."""

    def __init__(self):
        self.rows: list[dict] = []
        self.earlier = 0.0                   # training seconds of the sessions before a resume
        self.started = time.perf_counter()

    def state_dict(self) -> dict:            # saved in every checkpoint: a resumed fit keeps its rows and its time
        return {"rows": self.rows, "seconds": self.seconds}

    def load_state_dict(self, state: dict) -> None:
        self.rows, self.earlier = list(state["rows"]), float(state["seconds"])

    def on_train_start(self, trainer, pl_module):
        self.started = time.perf_counter()

    @property
    def seconds(self) -> float:
        return self.earlier + time.perf_counter() - self.started

    def on_train_epoch_end(self, trainer, pl_module):
        row = {"epoch": trainer.current_epoch}
        row.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        if trainer.optimizers:
            row["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        self.rows.append(row)


@dataclass
class FitResult:
    module: RankingModule                      # the trained module, with the best checkpoint's weights
    curves: list[dict] = field(default_factory=list)
    best_val_ndcg10: float = float("nan")      # the best monitored validation score (NDCG@10 unless the module
                                               # watches another, as ShopX-mini does)
    epochs: int = 0
    seconds: float = 0.0
    checkpoint: str = ""
    start_val: float | None = None             # a fine-tuning fit: its starting weights' validation score (epoch 0)
    kept_start: bool = False                   # no epoch beat the starting weights, which it kept
    trained_checkpoint: str = ""               # the best *trained* epoch's weights (``checkpoint`` unless the start
                                               # was kept): what the stage learnt, for analysing why it lost
    _trained: RankingModule | None = field(default=None, repr=False, compare=False)

    def trained_module(self, build) -> RankingModule:
        """The module at its best trained epoch: ``module`` itself, or, when the fit kept its starting weights, a
        fresh ``build()`` with the best trained epoch's weights, recommending as the stage does."""
        if not self.kept_start:
            return self.module
        if self._trained is None:
            device = next(self.module.parameters()).device
            module = build().to(device)
            state = torch.load(self.trained_checkpoint, map_location=device, weights_only=False)["state_dict"]
            module.load_state_dict(state)
            self._trained = module.eval()
        return self._trained


START_EPOCH = -1        # the curve row of a fine-tuning fit's starting weights (drawn at epoch 0, before any training)


def validate_start(module: RankingModule, datamodule: L.LightningDataModule, profile: Profile) -> dict[str, float]:
    """The validation metrics of ``module``'s current weights, under its ``starting_protocol``."""
    quiet_lightning()
    trainer = L.Trainer(**profile.trainer_kwargs(), logger=False, enable_model_summary=False)
    with module.starting_protocol():
        metrics = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    return {k: float(v) for k, v in metrics.items()}


def resumable(ckpt_dir: str | Path) -> bool:
    """A fit of ``ckpt_dir`` was interrupted: it left a ``last.ckpt`` and never completed (no ``fit.json``)."""
    ckpt_dir = Path(ckpt_dir)
    return (ckpt_dir / "last.ckpt").is_file() and not (ckpt_dir / "fit.json").exists()


def fit(module: RankingModule, datamodule: L.LightningDataModule, profile: Profile, ckpt_dir: str | Path,
        monitor: str | None = None, meta: dict | None = None, from_checkpoint: bool = False, resume: bool = False,
        **trainer_overrides) -> FitResult:
    """Train with the profile's recipe for the module's family, early stopping on ``module.monitor``
    (validation NDCG@10 for every ranker) unless ``monitor`` names another logged quantity.

    The best checkpoint is reloaded into ``module``; ``ckpt_dir`` gets ``best.ckpt`` and a
    ``fit.json`` (curves, epochs, seconds, and ``meta``: what was trained, for later reuse).

    ``from_checkpoint``: the module starts from trained weights (a later stage of a staged method). They are
    validated first, as epoch 0 (the curve row with epoch ``START_EPOCH``); early stopping and the plateau
    schedule count from that score, and when no epoch beats it the starting weights are what the fit keeps.

    Every epoch also writes ``last.ckpt`` (weights, optimiser, schedule, early stopping, curves so far), removed when
    the fit completes. ``resume``: a fit of ``ckpt_dir`` that was interrupted (a ``last.ckpt`` and no ``fit.json``)
    continues from its last epoch instead of starting over: a study piece longer than a working session still ends.
    """
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    monitor = monitor or module.monitor
    recipe = profile.recipe(module.recipe_family(module.config))
    module.recipe = recipe
    datamodule.batch_size = recipe.batch_size
    ckpt_dir = Path(ckpt_dir)
    last = ckpt_dir / "last.ckpt"
    resuming = resume and resumable(ckpt_dir)
    if not resuming:
        shutil.rmtree(ckpt_dir, ignore_errors=True)     # a re-run starts clean, never mixes checkpoints
    quiet_lightning()
    start_row, start_state = None, None
    if from_checkpoint:
        start_row = {"epoch": START_EPOCH, **validate_start(module, datamodule, profile)}
        if monitor not in start_row:
            raise ValueError(f"validating the starting weights logged no {monitor!r} (logged: {sorted(start_row)})")
        start_state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    curves = CurveRecorder()
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=monitor, mode="max",
                                 save_top_k=1, save_last=True, enable_version_counter=False)
    stopper = EarlyStopping(monitor=monitor, mode="max", patience=recipe.patience)
    module.lr_scale = 1.0
    plateau = (PlateauDecay(monitor, recipe.decay_patience, recipe.decay_factor) if recipe.schedule == "plateau"
               else None)
    callbacks = [curves, checkpoint, stopper] + ([plateau] if plateau else [])
    if start_row is not None:                 # epoch 0 is the score to beat, for stopping and for the lr cuts
        stopper.best_score = torch.tensor(start_row[monitor])
        if plateau:
            plateau.best = start_row[monitor]
    options = dict(profile.trainer_kwargs(), max_epochs=recipe.max_epochs, logger=False,
                   callbacks=callbacks, num_sanity_val_steps=0,
                   enable_model_summary=False, log_every_n_steps=10)
    options.update(trainer_overrides)
    trainer = L.Trainer(**options)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resuming else None)
    seconds = curves.seconds                  # every session's training time, a resumed fit's included
    device = profile.device()                 # Lightning hands the module back on the CPU; it stays on the device
    module.to(device)
    best_path = checkpoint.best_model_path
    trained_best = float(checkpoint.best_model_score) if best_path else -math.inf
    kept_start = start_row is not None and start_row[monitor] >= trained_best
    trained_path = best_path
    if kept_start:                            # no epoch beat the starting weights: they are the best checkpoint
        best_path = str(ckpt_dir / "best.ckpt")
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        if trained_path:                      # the best trained epoch stays, for analysing what the stage learnt
            trained_path = str(ckpt_dir / "trained.ckpt")
            os.replace(best_path, trained_path)
        partial = ckpt_dir / "best.ckpt.partial"
        torch.save({"state_dict": start_state, "kept_start": True}, partial)
        os.replace(partial, best_path)
        module.load_state_dict(start_state)
        module.keep_start()
    else:
        state = torch.load(best_path, map_location=device, weights_only=False)["state_dict"]
        module.load_state_dict(state)         # back to the best epoch, in place
    module.eval()
    rows = ([start_row] if start_row is not None else []) + curves.rows
    best = start_row[monitor] if kept_start else trained_best
    result = FitResult(module, rows, best, trainer.current_epoch, seconds, best_path,
                       start_row[monitor] if start_row is not None else None, kept_start, trained_path)
    start = ({"start_val": result.start_val, "kept_start": kept_start, "trained_val": trained_best}
             if start_row is not None else {})
    write_json(ckpt_dir / "fit.json", {"curves": result.curves, "best_val_ndcg10": result.best_val_ndcg10,
                                       "epochs": result.epochs, "seconds": seconds, **start,
                                       **({"resumed": True} if resuming else {}),
                                       **({"lr_cut_epochs": plateau.cuts} if plateau else {}), **(meta or {})})
    last.unlink(missing_ok=True)              # complete: nothing left to resume
    return result


def load_fit(module: RankingModule, ckpt_dir: str | Path, device: str | torch.device = "cpu") -> FitResult:
    """A fit made earlier by ``fit``: its best weights loaded into ``module`` on ``device``, curves and times from
    fit.json."""
    ckpt_dir = Path(ckpt_dir)
    meta = json.loads((ckpt_dir / "fit.json").read_text())
    module.to(device)
    module.load_state_dict(torch.load(ckpt_dir / "best.ckpt", map_location=device, weights_only=False)["state_dict"])
    if meta.get("kept_start"):
        module.keep_start()
    module.eval()
    trained = ckpt_dir / ("trained.ckpt" if meta.get("kept_start") else "best.ckpt")
    return FitResult(module, meta.get("curves", []), meta.get("best_val_ndcg10", float("nan")),
                     meta.get("epochs", 0), meta.get("seconds", float("nan")), str(ckpt_dir / "best.ckpt"),
                     meta.get("start_val"), bool(meta.get("kept_start", False)), str(trained))


def log_checkpoint(run_name: str, seed: int, seconds: float, trained: bool = False) -> None:
    """Tell the main job (``MINIREC_REUSE_LOG``) which checkpoint a notebook reused (and the training it saved),
    or, with ``trained=True``, which one it trained: a later notebook's reuse of that one saves the job nothing."""
    path = os.environ.get(REUSE_LOG_ENV)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"run": run_name, "seed": int(seed), "seconds": float(seconds), "trained": trained}) + "\n")
