"""Run profiles: everything that sizes a run, chosen by one notebook parameter.

Architecture vs recipe (as nanoGPT keeps ``GPTConfig`` apart from ``config/train_*.py``):
a model's config (``SASRecConfig``, ``GenRecConfig``, ``S2GRConfig``) holds its architecture,
each field with one default. A profile holds *how* things train: one ``Recipe`` per model
family (epochs, patience, batch size, optimiser, schedule), the seeds, which ablations and
diagnostics run, and the Lightning ``accelerator`` / ``devices`` / ``precision`` that reach
every fit. Where a profile needs another architecture (the gpu profile's bigger backbone),
it says so in ``architecture``, as overrides of the config's defaults; where it needs other
amounts of data (fewer training tasks in the smoke profile), in ``data_sizes``. A config marks
the fields that size its data with ``data_size`` (``data_size_fields`` lists them), so the two
kinds of override never mix (tested).

- ``smoke``  the tests: every notebook end to end in a minute, on a subset of users; numbers mean nothing.
- ``course`` the default: every notebook from scratch in at most 10 minutes on 2 CPU cores, one seed.
- ``study``  the numbers that hold up: 3 seeds, every ablation and diagnostic (hours on a CPU).
- ``gpu``    the study on one GPU, bf16.

A notebook reads ``run = get_profile(profile)`` and nothing else needs editing.
"""
from __future__ import annotations

import os
import platform
import random
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from minirec.sids.embeddings import DEFAULT_ENCODER

FAMILIES = ("sasrec", "generative", "onerec", "finetune", "warmup", "rl", "agent", "quantizer")

# the peak learning rates a fine-tuning stage (OneRec-Think's alignment and reasoning) is chosen among on validation;
# the profiles' ``finetune`` recipe holds the one chosen
FINETUNE_RATES = (1e-4, 3e-4, 1e-3)


@dataclass(frozen=True)
class Recipe:
    """How one model family trains: nothing here changes the model's architecture."""
    max_epochs: int                     # upper bound; early stopping on validation NDCG@10 usually ends sooner
    patience: int                       # epochs without a validation gain before stopping
    batch_size: int                     # training windows (or items, for quantisers) per step
    lr: float                           # peak learning rate
    weight_decay: float = 0.0           # AdamW weight decay
    warmup_steps: int = 0               # linear warm-up steps
    schedule: str = "constant"          # constant | cosine (decay to 10% of lr after warm-up) | plateau
    horizon_steps: int | None = None    # cosine horizon; None = this run's own budget (max_epochs x batches)
    decay_patience: int = 2             # plateau: epochs without a validation gain before the lr is cut
    decay_factor: float = 0.5           # plateau: what each cut multiplies the lr by


@dataclass(frozen=True)
class SIDConfig:
    """Which semantic-ID table the generative models read (notebook 04's), written once: every notebook from 05 on
    and the study take it from the profile."""
    quantizer: str = "CoBa"             # RQ-KMeans | RQ-VAE | CoBa (quantizers.QUANTIZERS)
    encoder: str = DEFAULT_ENCODER      # the sentence encoder whose item embeddings are quantised
    levels: int = 3                     # L semantic levels
    codebook_size: int = 32             # K codes per level (K^L prefixes: far more than items)
    seed: int = 0                       # the quantiser's seed


@dataclass(frozen=True)
class Profile:
    name: str
    recipes: dict                           # family -> Recipe (FAMILIES)
    max_users: int | None = None            # None = every user; smoke runs take the first few
    seeds: tuple[int, ...] = (0,)           # independent training runs reported as mean ± std
    ablation_seeds: tuple[int, ...] = (0,)  # seeds of ablation runs (cheaper than the headline's seeds)
    sasrec_grid: tuple[dict, ...] = ({},)   # SASRecConfig overrides tried on validation (first seed)
    n_boot: int = 2000                      # bootstrap resamples for paired confidence intervals
    umap_epochs: int | None = None          # UMAP optimisation epochs (None = UMAP's default)
    architecture: dict = field(default_factory=dict)  # family -> config overrides (e.g. a bigger backbone)
    data_sizes: dict = field(default_factory=dict)    # family -> overrides of the config's data_size fields
    ablations: bool = True                  # train S²GR's ablation runs (pause tokens, no alignment)
    diagnostics: bool = False               # train the diagnostic runs of the "why" studies
    kc_sweep: tuple[int, ...] = ()          # S²GR cluster counts tried besides the default (ablation seeds)
    bench_users: int = 256                  # users timed by the beam-search and cost benchmarks
    bench_rounds: int = 3                   # alternating timing rounds of the cost benchmarks
    attention_users: int = 200              # test users in the aggregate thinking-attention views
    agent_tasks: int = 100                  # shopping tasks of each kind in notebook 11's evaluation
    accelerator: str = "cpu"                # Lightning Trainer pass-through
    devices: int | str = 1
    precision: str = "32-true"
    progress_bar: bool = False
    sids: SIDConfig = field(default_factory=SIDConfig)   # the SID table of notebooks 05 onwards and the study

    def recipe(self, family: str) -> Recipe:
        """The training recipe of a model family (``sasrec``, ``generative``, ``quantizer``)."""
        if family not in self.recipes:
            raise ValueError(f"profile {self.name!r} has no recipe for {family!r}; families: {sorted(self.recipes)}")
        return self.recipes[family]

    def arch(self, family: str) -> dict:
        """Architecture overrides this profile asks of a model family (empty: the config's defaults)."""
        return dict(self.architecture.get(family, {}))

    def sizes(self, family: str) -> dict:
        """Data-size overrides this profile asks of a model family (its config's ``data_size`` fields)."""
        return dict(self.data_sizes.get(family, {}))

    def trainer_kwargs(self) -> dict:
        """The Lightning Trainer options this profile fixes."""
        return dict(accelerator=self.accelerator, devices=self.devices, precision=self.precision,
                    enable_progress_bar=self.progress_bar)

    def device(self) -> torch.device:
        """The torch device everything after ``fit`` runs on (evaluation, beam search, serving, agent episodes, the
        sentence encoder): the one the Trainer trains on."""
        return torch_device(self.accelerator)

    def autocast(self):
        """The precision of the fits, for code that runs outside Lightning: bf16 / fp16 autocast on the profile's
        device where the precision is mixed, else nothing."""
        import contextlib
        dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(str(self.precision))
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device().type, dtype=dtype)


def torch_device(accelerator: str) -> torch.device:
    """A Lightning accelerator name as a torch device (``auto``: a GPU where there is one)."""
    if accelerator == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    names = {"cpu": "cpu", "gpu": "cuda", "cuda": "cuda", "mps": "mps"}
    if accelerator not in names:
        raise ValueError(f"unknown accelerator {accelerator!r}; choose one of {sorted(names) + ['auto']}")
    return torch.device(names[accelerator])


_SASREC_GRID = ({"dropout": 0.2}, {"dropout": 0.5})

# The study recipes. The study rows recorded before the study pieces (minirec/experiments/study/) trained the SID decoders with
# the first study's generative recipe: max_epochs 25, cosine with horizon_steps 20,000.
_STUDY = {
    "sasrec": Recipe(max_epochs=200, patience=10, batch_size=128, lr=1e-3),
    # TIGER-mini, S²GR-mini and the other SID decoders. A fair budget for every one of them: a cap none reaches (the
    # 25-epoch cap of the first study stopped S²GR-mini while TIGER-mini stopped early), and a decay that follows the
    # steps a run really takes (the old cosine horizon of 20,000 steps was never approached, so the lr stayed at its
    # peak): the lr is halved after 2 epochs without a validation gain, and training stops after 5
    "generative": Recipe(max_epochs=60, patience=5, batch_size=64, lr=2e-3, weight_decay=0.1, warmup_steps=200,
                         schedule="plateau", decay_patience=2, decay_factor=0.5),
    "quantizer": Recipe(max_epochs=300, patience=0, batch_size=256, lr=1e-3),
    # OneRec-Think's Base (SID SFT from scratch): TIGER-mini's recipe (a fair budget)
    "onerec": Recipe(max_epochs=60, patience=5, batch_size=64, lr=2e-3, weight_decay=0.1, warmup_steps=200,
                     schedule="plateau", decay_patience=2, decay_factor=0.5),
    # OneRec-Think's stages that start from a trained checkpoint (alignment, reasoning): a fine-tuning recipe. The
    # from-scratch peak (2e-3, weight decay 0.1) knocked a converged model's validation NDCG@10 down by a third before
    # it recovered; here a warm-up to a lower peak (one of FINETUNE_RATES, chosen on validation), light decay, and
    # epoch 0 (the starting weights) as the score every epoch must beat
    "finetune": Recipe(max_epochs=60, patience=5, batch_size=64, lr=3e-4, weight_decay=0.01, warmup_steps=100,
                       schedule="plateau", decay_patience=2, decay_factor=0.5),
    # OneRec-Think's token warm-up: only new token rows train, so no weight decay (it would move frozen rows)
    "warmup": Recipe(max_epochs=10, patience=2, batch_size=64, lr=2e-3, warmup_steps=100, schedule="cosine"),
    # OneRec-Think's GRPO: prompts per step (each with a group of rollouts); an epoch is GRPOConfig.rl_prompts prompts.
    # lr 1e-4: on course validation, 1e-3 drifted away from the SFT model within two epochs for every reward
    # (KL above 1, validation NDCG@10 falling); notebook 09's study grid adds the paper's 1e-5. A linear warm-up over
    # the first 50 updates; the study's budget: 2,000 updates (250 epochs of 64 prompts in batches of 8), every one
    # run (no early stopping: a null result must come from the paper's budget), the best validation epoch kept
    "rl": Recipe(max_epochs=250, patience=250, batch_size=8, lr=1e-4, warmup_steps=50),
    # ShopX-mini: fine-tuning the aligned OneRec-Think model on shopping sessions with OneRec-Think's optimiser (an
    # epoch is ShopXConfig.examples_per_epoch examples)
    "agent": Recipe(max_epochs=10, patience=3, batch_size=32, lr=2e-3, weight_decay=0.1, warmup_steps=50,
                    schedule="cosine"),
}

PROFILES = {
    "smoke": Profile(
        "smoke", max_users=80, n_boot=200, umap_epochs=10, kc_sweep=(4,), bench_users=16, bench_rounds=1,
        attention_users=16, agent_tasks=3, diagnostics=True,
        recipes={"sasrec": replace(_STUDY["sasrec"], max_epochs=2, patience=1, batch_size=64),
                 "generative": replace(_STUDY["generative"], max_epochs=1, patience=1, schedule="cosine"),
                 "onerec": replace(_STUDY["onerec"], max_epochs=1, patience=1, schedule="cosine"),
                 "finetune": replace(_STUDY["finetune"], max_epochs=1, patience=1, warmup_steps=10, schedule="cosine"),
                 "warmup": replace(_STUDY["warmup"], max_epochs=1, patience=1),
                 "rl": replace(_STUDY["rl"], max_epochs=1, patience=1, batch_size=4, warmup_steps=2),
                 "agent": replace(_STUDY["agent"], max_epochs=1, patience=1, batch_size=8),
                 "quantizer": replace(_STUDY["quantizer"], max_epochs=3)},
        architecture={"generative": dict(max_items=5), "sasrec": dict(hidden=32, n_layers=1)},
        data_sizes={"agent": dict(train_per_kind=40, examples_per_epoch=400, val_per_kind=3),
                    "rl": dict(group_size=4, rl_beam=8)}),
    "course": Profile(
        "course", ablations=False, umap_epochs=200, bench_users=128, bench_rounds=2, attention_users=100,
        agent_tasks=40,
        recipes={"sasrec": replace(_STUDY["sasrec"], max_epochs=40, patience=4),
                 # 5 epochs: S²GR-mini in the method's form (a thinking branch for every target) costs about 2.5x
                 # TIGER-mini per epoch, and notebook 06 must train both from scratch within 10 minutes
                 "generative": replace(_STUDY["generative"], max_epochs=5, patience=2, schedule="cosine"),
                 # 2 epochs a stage: notebook 09 trains four OneRec-Think stages and reinforces the last one
                 # from scratch within 10 minutes
                 "onerec": replace(_STUDY["onerec"], max_epochs=2, patience=1, schedule="cosine"),
                 "finetune": replace(_STUDY["finetune"], max_epochs=2, patience=1, schedule="cosine"),
                 "warmup": replace(_STUDY["warmup"], max_epochs=1, patience=1),
                 "rl": replace(_STUDY["rl"], max_epochs=4, patience=2, warmup_steps=8),
                 "agent": replace(_STUDY["agent"], max_epochs=4, patience=2),
                 "quantizer": replace(_STUDY["quantizer"], max_epochs=150)},
        # half the validation episodes per epoch: notebook 11 trains ShopX-mini from scratch within 10 minutes; GRPO's
        # groups and beams at half the paper's: notebook 09 reinforces from scratch within 10 minutes
        data_sizes={"agent": dict(val_per_kind=10), "rl": dict(group_size=8, rl_beam=16)}),
    "study": Profile(
        "study", seeds=(0, 1, 2), sasrec_grid=_SASREC_GRID, kc_sweep=(4, 16), diagnostics=True, recipes=_STUDY),
    "gpu": Profile(
        "gpu", seeds=(0, 1, 2), ablation_seeds=(0, 1, 2), sasrec_grid=_SASREC_GRID, kc_sweep=(2, 4, 16, 32),
        diagnostics=True, accelerator="gpu", precision="bf16-mixed", progress_bar=True,
        recipes={"sasrec": replace(_STUDY["sasrec"], max_epochs=300, patience=20, batch_size=256),
                 "generative": replace(_STUDY["generative"], max_epochs=100, patience=10, batch_size=128),
                 "onerec": replace(_STUDY["onerec"], max_epochs=100, patience=10, batch_size=128),
                 "finetune": replace(_STUDY["finetune"], max_epochs=100, patience=10, batch_size=128),
                 "warmup": replace(_STUDY["warmup"], batch_size=128),
                 "rl": replace(_STUDY["rl"], max_epochs=500, patience=500, batch_size=16),
                 "agent": replace(_STUDY["agent"], max_epochs=30, patience=5, batch_size=64),
                 "quantizer": _STUDY["quantizer"]},
        # OneRec-Think on a real pretrained language model (SmolLM2-135M-Instruct, offline); TIGER-mini and S²GR-mini on
        # the bigger from-scratch preset
        architecture={"generative": dict(backbone="small", max_items=50), "onerec": dict(backbone="smollm2-135m")}),
}
DEFAULT_PROFILE = "course"


def data_size(default):
    """A config field that sizes the data a model trains or validates on (examples per epoch, tasks drawn), not its
    architecture: a profile overrides it in ``data_sizes``. Its value is part of the config, hence of the checkpoint
    fingerprint, like every other field."""
    return field(default=default, metadata={"data_size": True})


def data_size_fields(config) -> set[str]:
    """The names of a config's (class or instance) ``data_size`` fields."""
    from dataclasses import fields
    return {f.name for f in fields(config) if f.metadata.get("data_size")}


def get_profile(name: str, **overrides) -> Profile:
    """The named profile, optionally with fields overridden."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    return replace(PROFILES[name], **overrides) if overrides else PROFILES[name]


def with_recipe(profile: Profile, family: str, **changes) -> Profile:
    """A copy of ``profile`` whose ``family`` recipe has some fields changed (tests, quick experiments)."""
    recipes = dict(profile.recipes, **{family: replace(profile.recipe(family), **changes)})
    return replace(profile, recipes=recipes)


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
