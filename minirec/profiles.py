"""Run profiles: everything that sizes a run, chosen by one notebook parameter.

``smoke`` runs every notebook end to end in seconds on a subset of users (the tests),
``cpu`` is the real run on a laptop CPU (the main job), ``gpu`` the same on one small GPU.
A notebook reads ``profile = get_profile(name)`` and nothing else needs editing.
"""
from __future__ import annotations

import os
import platform
import random
from dataclasses import dataclass, field, replace

import numpy as np
import torch


@dataclass(frozen=True)
class Profile:
    name: str
    max_users: int | None          # None = every user; smoke runs take the first few
    max_epochs: int                # upper bound; early stopping usually ends sooner
    patience: int                  # epochs without validation NDCG@10 gain before stopping
    seeds: tuple[int, ...]         # independent training runs reported as mean ± std
    batch_size: int                # training windows per step
    sasrec_grid: tuple[dict, ...]  # SASRec settings tried on validation (one seed each)
    n_boot: int                    # bootstrap resamples for paired confidence intervals
    quantizer_epochs: int = 300    # RQ-VAE / CoBa training epochs over the catalogue
    umap_epochs: int | None = None  # UMAP optimisation epochs (None = UMAP's default)
    backbone: str = "tiny"         # Qwen3 preset (tiny | small) or a checkpoint folder / hub id
    gen_max_items: int = 20        # items per prompt / training window of the generative models
    gen_beam_width: int = 20       # beams per user (>= 20, the largest K)
    gen_batch_size: int = 64       # training windows per step of the generative models
    gen_lr: float = 2e-3           # peak learning rate of the generative models
    gen_max_epochs: int = 25       # upper bound; early stopping on validation NDCG@10
    gen_patience: int = 5
    bench_users: int = 256         # users timed by the beam-search benchmark
    ablation_seeds: tuple[int, ...] = (0,)  # seeds of ablation runs (cheaper than the headline's seeds)
    kc_sweep: tuple[int, ...] = (4, 16)     # S²GR cluster counts tried besides the default (ablation seeds)
    attention_users: int = 200              # test users in the aggregate thinking-attention views
    accelerator: str = "cpu"       # Lightning Trainer pass-through
    devices: int | str = 1
    precision: str = "32-true"
    progress_bar: bool = False
    extra: dict = field(default_factory=dict)  # later notebooks' settings

    def trainer_kwargs(self) -> dict:
        """The Lightning Trainer options this profile fixes."""
        return dict(accelerator=self.accelerator, devices=self.devices, precision=self.precision,
                    enable_progress_bar=self.progress_bar)


_SASREC_GRID = (
    dict(hidden=64, n_layers=2, dropout=0.2, lr=1e-3),
    dict(hidden=64, n_layers=2, dropout=0.5, lr=1e-3),
)

PROFILES = {
    "smoke": Profile("smoke", max_users=80, max_epochs=2, patience=1, seeds=(0,), batch_size=64,
                     sasrec_grid=(dict(hidden=32, n_layers=1, dropout=0.2, lr=1e-3),), n_boot=200,
                     quantizer_epochs=3, umap_epochs=10, gen_max_items=5, gen_batch_size=64, gen_max_epochs=1,
                     gen_patience=1, bench_users=16, kc_sweep=(4,), attention_users=16),
    "cpu": Profile("cpu", max_users=None, max_epochs=200, patience=10, seeds=(0, 1, 2), batch_size=128,
                   sasrec_grid=_SASREC_GRID, n_boot=2000, progress_bar=False),
    "gpu": Profile("gpu", max_users=None, max_epochs=300, patience=20, seeds=(0, 1, 2), batch_size=256,
                   sasrec_grid=_SASREC_GRID, n_boot=2000, accelerator="gpu", precision="bf16-mixed",
                   progress_bar=True, backbone="small", gen_max_items=50, gen_batch_size=128, gen_max_epochs=100,
                   gen_patience=10, ablation_seeds=(0, 1, 2), kc_sweep=(2, 4, 16, 32)),
}


def get_profile(name: str, **overrides) -> Profile:
    """The named profile, optionally with fields overridden."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    return replace(PROFILES[name], **overrides) if overrides else PROFILES[name]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def environment_report(profile: Profile, seed: int | None = None) -> str:
    """Library versions, device and profile: the first thing a notebook prints."""
    import lightning
    import transformers
    device = "cuda: " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    lines = [f"python {platform.python_version()}, torch {torch.__version__}, lightning {lightning.__version__}, "
             f"transformers {transformers.__version__}, numpy {np.__version__}",
             f"device: {device}; torch threads: {torch.get_num_threads()}; cores: {os.cpu_count()}",
             f"profile: {profile.name}" + (f"; seed: {seed}" if seed is not None else "")]
    return "\n".join(lines)
