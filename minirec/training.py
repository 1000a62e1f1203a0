"""Lightning plumbing shared by every trained recommender in minirec.

- ``SequenceDataModule``: training windows (every position predicts the next item) and
  the validation / test stages of a leave-one-out split, as padded LongTensors.
- ``RankingModule``: a LightningModule base whose validation step runs the *same*
  protocol as the final evaluation (full ranking, history excluded) and logs
  ``val_ndcg10``, the quantity early stopping and checkpointing watch. A subclass only
  writes ``training_step`` and ``rank_topk``.
- ``fit``: Trainer with early stopping on validation NDCG@10, best-checkpoint reload and
  learning curves, with accelerator / devices / precision taken from the profile.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .artifacts import REUSE_LOG_ENV, RUNS_DIR, write_json
from .data import EvalStage, LeaveOneOutSplit, MAX_HISTORY, pad_left, training_windows
from .metrics import topk_metrics
from .profiles import Profile


def quiet_lightning() -> None:
    """No GPU/TPU banner and tips per fit; notebooks stay readable."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")          # Lightning 2.6 / torch 2.13 chatter
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


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


class RankingModule(L.LightningModule):
    """Base class: validation = the evaluation protocol on the validation stage."""

    val_k = 10

    def rank_topk(self, inputs: torch.Tensor, exclude: torch.Tensor, k: int) -> torch.Tensor:
        raise NotImplementedError

    def on_validation_epoch_start(self) -> None:
        self._val_scores: list[dict[str, np.ndarray]] = []

    def validation_step(self, batch, batch_idx):
        topk = self.rank_topk(batch["inputs"], batch["exclude"], self.val_k)
        self._val_scores.append(topk_metrics(topk, batch["targets"], ks=(self.val_k,)))

    def on_validation_epoch_end(self) -> None:
        for name in (f"ndcg@{self.val_k}", f"recall@{self.val_k}"):
            value = float(np.concatenate([s[name] for s in self._val_scores]).mean())
            self.log("val_" + name.replace("@", ""), value, prog_bar=True)


class CurveRecorder(L.Callback):
    """Keeps one row per epoch (train loss, validation metrics) for learning-curve plots."""

    def __init__(self):
        self.rows: list[dict] = []

    def on_train_epoch_end(self, trainer, pl_module):
        row = {"epoch": trainer.current_epoch}
        row.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        self.rows.append(row)


@dataclass
class FitResult:
    module: RankingModule                      # the trained module, with the best checkpoint's weights
    curves: list[dict] = field(default_factory=list)
    best_val_ndcg10: float = float("nan")
    epochs: int = 0
    seconds: float = 0.0
    checkpoint: str = ""


def fit(module: RankingModule, datamodule: L.LightningDataModule, profile: Profile, run_name: str,
        monitor: str = "val_ndcg10", runs_dir: str | Path | None = None, **trainer_overrides) -> FitResult:
    """Train with early stopping on validation NDCG@10 and reload the best checkpoint."""
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    ckpt_dir = Path(runs_dir or RUNS_DIR) / "checkpoints" / run_name
    shutil.rmtree(ckpt_dir, ignore_errors=True)         # a re-run starts clean, never mixes checkpoints
    quiet_lightning()
    curves = CurveRecorder()
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=monitor, mode="max",
                                 save_top_k=1, enable_version_counter=False)
    stopper = EarlyStopping(monitor=monitor, mode="max", patience=profile.patience)
    options = dict(profile.trainer_kwargs(), max_epochs=profile.max_epochs, logger=False,
                   callbacks=[curves, checkpoint, stopper], num_sanity_val_steps=0,
                   enable_model_summary=False, log_every_n_steps=10)
    options.update(trainer_overrides)
    trainer = L.Trainer(**options)
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    seconds = time.perf_counter() - start
    state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=False)["state_dict"]
    module.load_state_dict(state)             # back to the best epoch, in place
    module.eval()
    result = FitResult(module, curves.rows, float(checkpoint.best_model_score), trainer.current_epoch,
                       seconds, checkpoint.best_model_path)
    write_json(ckpt_dir / "fit.json", {"curves": result.curves, "best_val_ndcg10": result.best_val_ndcg10,
                                       "epochs": result.epochs, "seconds": seconds, "settings": settings_of(module)})
    return result


def settings_of(module) -> dict | None:
    """The module's class and config as plain JSON values (what a checkpoint was trained with)."""
    config = getattr(module, "config", None)
    if not is_dataclass(config):
        return None
    return json.loads(json.dumps({"class": type(module).__name__, **asdict(config)}))


def fits_from_checkpoints(make_module, run_name: str, seeds, runs_dir: str | Path | None = None) -> dict[int, FitResult]:
    """Fits an earlier notebook already made (``runs/checkpoints/<run_name>/seed<s>``), by seed.

    Seeds without a checkpoint, or whose ``fit.json`` does not record the very settings of
    ``make_module()`` (another config, or none recorded), are left out with a note, so
    ``train_seeds(..., reuse=found)`` trains only those. Curves and times come back too.
    """
    found = {}
    for seed in seeds:
        ckpt = Path(runs_dir or RUNS_DIR) / "checkpoints" / run_name / f"seed{seed}" / "best.ckpt"
        if not ckpt.exists():
            continue
        meta_path = ckpt.parent / "fit.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        module = make_module()
        wanted = settings_of(module)
        saved = meta.get("settings")
        if saved != wanted:
            why = ("it records no settings" if saved is None else "made with other settings: "
                   + ", ".join(sorted(k for k in wanted or {} if saved.get(k) != wanted[k])))
            print(f"{run_name}/seed{seed}: checkpoint not reused ({why}); training anew")
            continue
        module.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"])
        module.eval()
        found[seed] = FitResult(module, meta.get("curves", []), meta.get("best_val_ndcg10", float("nan")),
                                meta.get("epochs", 0), meta.get("seconds", float("nan")), str(ckpt))
        _log_reuse(run_name, seed, found[seed].seconds)
    return found


def _log_reuse(run_name: str, seed: int, seconds: float) -> None:
    """Tell the main job (``MINIREC_REUSE_LOG``) which training a reused checkpoint saved."""
    path = os.environ.get(REUSE_LOG_ENV)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"run": run_name, "seed": int(seed), "seconds": float(seconds)}) + "\n")


@dataclass
class SeedRuns:
    """Several seeds of one model: fits, and test metrics per seed and per user."""

    fits: list[FitResult]
    per_seed: dict[str, list[float]]         # metric -> one mean per seed
    per_user: dict[str, np.ndarray]          # metric -> per-user value averaged over seeds
    per_user_by_seed: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)

    def per_user_of(self, seeds) -> dict[str, np.ndarray]:
        """Per-user metrics averaged over the given seeds only (for like-for-like comparisons)."""
        return {m: np.mean([self.per_user_by_seed[s][m] for s in seeds], axis=0) for m in self.per_user}


def train_seeds(make_module, datamodule: L.LightningDataModule, split: LeaveOneOutSplit, profile: Profile,
                run_name: str, seeds: tuple[int, ...] | None = None, reuse: dict[int, FitResult] | None = None,
                **fit_kwargs) -> SeedRuns:
    """Train ``make_module()`` once per seed and evaluate each best checkpoint on the test stage.

    ``reuse`` maps a seed to a fit already made with the same setting and seed (e.g. the
    tuning run of the chosen setting), which is then evaluated instead of retrained.
    """
    from .metrics import evaluate
    from .profiles import seed_everything

    fits, per_seed, per_user, by_seed = [], {}, {}, {}
    for seed in seeds if seeds is not None else profile.seeds:
        if reuse and seed in reuse:
            result = reuse[seed]
        else:
            seed_everything(seed)
            datamodule.seed = seed
            result = fit(make_module(), datamodule, profile, f"{run_name}/seed{seed}", **fit_kwargs)
        scores = evaluate(result.module, split.test)
        by_seed[seed] = scores
        for name, values in scores.items():
            per_seed.setdefault(name, []).append(float(values.mean()))
            per_user.setdefault(name, []).append(values)
        fits.append(result)
    return SeedRuns(fits, per_seed, {k: np.mean(v, axis=0) for k, v in per_user.items()}, by_seed)


def select_on_validation(grid: tuple[dict, ...], make_module, datamodule: L.LightningDataModule,
                         profile: Profile, run_name: str, seed: int = 0) -> tuple[dict, list[dict], FitResult]:
    """Fit each setting once with ``seed``; keep the best validation NDCG@10 (never the test).

    Returns the chosen setting, one row per setting, and the chosen setting's fit.
    """
    from .profiles import seed_everything

    rows, fits = [], []
    for i, setting in enumerate(grid):
        seed_everything(seed)
        datamodule.seed = seed
        result = fit(make_module(**setting), datamodule, profile, f"{run_name}/grid{i}")
        fits.append(result)
        rows.append(dict(setting, val_ndcg10=result.best_val_ndcg10, epochs=result.epochs,
                         seconds=round(result.seconds, 1)))
    best = max(range(len(grid)), key=lambda i: rows[i]["val_ndcg10"])
    return dict(grid[best]), rows, fits[best]
