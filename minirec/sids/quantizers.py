"""Residual quantisers that turn item embeddings into semantic IDs (docs/method.md §2).

Three quantisers behind one interface, ``quantizer.fit(x, train_sequences) -> codes``
with ``codes`` of shape (n_items, levels):

- ``RQKMeans``: residual k-means, the no-training baseline: k-means on the embeddings,
  then k-means on what is left after subtracting each item's centroid, and so on.
- ``RQVAE`` (TIGER, Rajput et al. 2023): an encoder MLP maps x to a latent z, L residual
  codebooks quantise z (r_1 = z, c_l = argmin_j ||r_l - e_{l,j}||², r_{l+1} = r_l - e_{l,c_l}),
  a decoder MLP reconstructs x from Σ_l e_{l,c_l}. Straight-through gradients;
  codebooks initialised by k-means on the first latents. Loss:
      L = ||x - x̂||² + Σ_l ( ||sg(r_l) - e_{l,c_l}||² + β ||r_l - sg(e_{l,c_l})||² )
- ``CoBa`` (S²GR's Collaborative and Balanced RQ-VAE): the same network, plus
  * collaborative input: x is replaced by H_align, the text embeddings propagated over
    the training co-occurrence graph (``minirec.sids.graph``);
  * auxiliary-loss-free load balancing: selection uses d'(r, e_j) = ||r - e_j||² + b_j s,
    where s is the level's mean quantisation error min_j ||r - e_j||² (so b is unit-free);
    after each step b_j moves up if code j was used more than average and down if less,
    by ``bias_step`` x (load_j / mean load - 1) clipped to ±1 (a bounded step), and b is
    clipped to ±``bias_bound`` (a bounded magnitude);
  * uniformity: Σ_{j≠k} max(0, δ - ||e_j - e_k||)² over codewords of a level, with δ a
    fraction ``uniformity_margin`` of the level's mean codeword distance.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import lightning as L
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.cluster import KMeans
from torch.utils.data import DataLoader, TensorDataset

from minirec.profiles import DEFAULT_PROFILE, Profile, Recipe, SIDConfig, get_profile
from minirec.sids.graph import collaborative_embeddings
from minirec.training import quiet_lightning


@dataclass
class GraphConfig:
    """How CoBa smooths its input over the co-occurrence graph (docs/method.md §1)."""
    alpha: float = 0.5          # restart probability α: weight kept on the text embedding
    k_g: int = 2                # propagation steps K_g
    window: int = 3             # co-occurrence window (positions)
    weighting: str = "count"    # "count" or "inverse" (1 / distance)


@dataclass
class QuantizerConfig:
    levels: int = 3                   # L: semantic code levels
    codebook_size: int = 32           # K: codes per level (32 suits ~1.7K items; 256 for big catalogues)
    seed: int = 0
    # RQ-VAE network and training
    latent_dim: int = 32              # width of z and of every codeword
    hidden: tuple = (256, 128)        # encoder widths (the decoder mirrors them)
    beta: float = 0.25                # commitment weight β
    # CoBa
    balance: bool = False             # selection bias b_j for load balancing
    bias_step: float = 0.01           # how far b_j moves per step
    bias_bound: float = 1.0           # |b_j| <= bias_bound (in units of the level's mean distance)
    uniformity_weight: float = 0.0    # λ_u of the codeword repulsion
    uniformity_margin: float = 0.5    # δ as a fraction of the mean codeword distance of the level
    graph: GraphConfig | None = None  # collaborative input (None = text only)
    kmeans_n_init: int = 3            # restarts for k-means (RQ-KMeans and codebook init)

    def settings(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d


def coba_config(**overrides) -> QuantizerConfig:
    """CoBa's defaults: graph input, balancing bias and uniformity on."""
    base = dict(balance=True, uniformity_weight=0.5, graph=GraphConfig())
    base.update(overrides)
    return QuantizerConfig(**base)


def _prepare(x: np.ndarray, config: QuantizerConfig, train_sequences) -> np.ndarray:
    if config.graph is None:
        return np.asarray(x, dtype=np.float32)
    if train_sequences is None:
        raise ValueError("a collaborative quantiser needs the training sequences for its co-occurrence graph")
    g = config.graph
    return collaborative_embeddings(x, train_sequences, g.alpha, g.k_g, g.window, g.weighting)


def residual_kmeans(x: np.ndarray, levels: int, k: int, seed: int = 0, n_init: int = 3):
    """Codes (N, L) and centroids (L, K, d) of residual k-means on ``x``."""
    if len(x) < k:
        raise ValueError(f"{len(x)} items cannot fill a codebook of {k} codes")
    residual = np.asarray(x, dtype=np.float64).copy()
    codes, centres = [], []
    for level in range(levels):
        km = KMeans(n_clusters=k, n_init=n_init, random_state=seed + level).fit(residual)
        codes.append(km.labels_)
        centres.append(km.cluster_centers_)
        residual -= km.cluster_centers_[km.labels_]
    return np.stack(codes, axis=1).astype(np.int64), np.stack(centres).astype(np.float32)


class RQKMeans:
    """Residual k-means: no training, the baseline quantiser."""

    name = "RQ-KMeans"

    def __init__(self, config: QuantizerConfig | None = None):
        self.config = config or QuantizerConfig()
        self.centres: np.ndarray | None = None

    def fit(self, x: np.ndarray, train_sequences: Sequence[np.ndarray] | None = None) -> np.ndarray:
        c = self.config
        codes, self.centres = residual_kmeans(_prepare(x, c, train_sequences), c.levels, c.codebook_size,
                                              c.seed, c.kmeans_n_init)
        return codes

    def settings(self) -> dict:
        return {"quantizer": self.name, **self.config.settings()}

    def codebooks(self) -> np.ndarray:
        """(L, K, D) centroids of each level's k-means."""
        return self.centres.copy()


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class RQVAEModule(L.LightningModule):
    """The RQ-VAE network; with ``balance`` / ``uniformity_weight`` it becomes CoBa."""

    def __init__(self, input_dim: int, config: QuantizerConfig, recipe: Recipe):
        super().__init__()
        self.config, self.recipe = config, recipe
        c = config
        self.encoder = _mlp([input_dim, *c.hidden, c.latent_dim])
        self.decoder = _mlp([c.latent_dim, *reversed(c.hidden), input_dim])
        self.codebooks = nn.Parameter(torch.randn(c.levels, c.codebook_size, c.latent_dim) * 0.1)  # (L, K, D)
        self.register_buffer("bias", torch.zeros(c.levels, c.codebook_size))                    # (L, K)
        self.history: list[dict] = []
        self._epoch: dict[str, list[float]] = {}

    @torch.no_grad()
    def init_codebooks(self, x: torch.Tensor) -> None:
        """k-means on the untrained encoder's latents (residually), as in TIGER."""
        z = self.encoder(x).cpu().numpy()
        _, centres = residual_kmeans(z, self.config.levels, self.config.codebook_size, self.config.seed,
                                     self.config.kmeans_n_init)
        self.codebooks.data.copy_(torch.as_tensor(centres))

    def quantize(self, z: torch.Tensor):
        """Residual quantisation of (B, D) latents -> codes (B, L), residuals and chosen codewords."""
        residual = z
        codes, residuals, chosen = [], [], []
        for level in range(self.config.levels):
            book = self.codebooks[level]                                            # (K, D)
            dist = torch.cdist(residual, book).pow(2)                               # (B, K)
            if self.config.balance:   # bias in units of the level's typical quantisation error
                dist = dist + self.bias[level] * dist.min(dim=1).values.mean().detach()
            idx = dist.argmin(dim=1)                                                # (B,)
            e = book[idx]                                                           # (B, D)
            codes.append(idx)
            residuals.append(residual)
            chosen.append(e)
            residual = residual - e
        return torch.stack(codes, 1), residuals, chosen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, input_dim) -> codes (B, L)."""
        return self.quantize(self.encoder(x))[0]

    def uniformity_loss(self) -> torch.Tensor:
        """Σ_{j≠k} max(0, δ - ||e_j - e_k||)², averaged over pairs and levels."""
        total = 0.0
        k = self.config.codebook_size
        off = ~torch.eye(k, dtype=torch.bool, device=self.device)
        for book in self.codebooks:
            dist = (torch.cdist(book, book).pow(2) + 1e-8).sqrt()[off]             # (K(K-1),)
            delta = self.config.uniformity_margin * dist.mean().detach()
            total = total + F.relu(delta - dist).pow(2).mean() / delta.pow(2)
        return total / self.config.levels

    def training_step(self, batch, batch_idx):
        (x,) = batch
        z = self.encoder(x)                                                        # (B, D)
        codes, residuals, chosen = self.quantize(z)
        quantized = torch.stack(chosen).sum(0)                                     # (B, D)
        x_hat = self.decoder(z + (quantized - z).detach())                         # straight-through
        recon = F.mse_loss(x_hat, x, reduction="none").sum(1).mean()
        vq = sum(F.mse_loss(e, r.detach(), reduction="none").sum(1).mean()
                 + self.config.beta * F.mse_loss(r, e.detach(), reduction="none").sum(1).mean()
                 for r, e in zip(residuals, chosen))
        loss = recon + vq
        uni = torch.zeros((), device=self.device)
        if self.config.uniformity_weight > 0:
            uni = self.uniformity_loss()
            loss = loss + self.config.uniformity_weight * uni
        if self.config.balance:
            self._update_bias(codes)
        for name, v in (("loss", loss), ("recon", recon), ("vq", vq), ("uniformity", uni)):
            self._epoch.setdefault(name, []).append(float(v.detach()))
        return loss

    @torch.no_grad()
    def _update_bias(self, codes: torch.Tensor) -> None:
        k = self.config.codebook_size
        for level in range(self.config.levels):
            counts = torch.bincount(codes[:, level], minlength=k).float()
            load = counts / counts.mean() - 1.0                  # > 0: used more than average
            self.bias[level] += self.config.bias_step * load.clamp(-1.0, 1.0)
        self.bias.clamp_(-self.config.bias_bound, self.config.bias_bound)

    def on_train_epoch_end(self) -> None:
        row = {name: float(np.mean(v)) for name, v in self._epoch.items()}
        row["epoch"] = self.current_epoch
        self.history.append(row)
        self._epoch = {}

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.recipe.lr)


class RQVAE:
    """TIGER's RQ-VAE, trained with Lightning; with a CoBa config it is CoBa.

    ``recipe`` (epochs, batch size, learning rate) and the Trainer options come from a
    profile (``make_quantizer``); without them, the default profile's quantizer recipe on the CPU.
    """

    name = "RQ-VAE"

    def __init__(self, config: QuantizerConfig | None = None, recipe: Recipe | None = None, **trainer_kwargs):
        self.config = config or QuantizerConfig()
        self.recipe = recipe or get_profile(DEFAULT_PROFILE).recipe("quantizer")
        self.trainer_kwargs = trainer_kwargs
        self.module: RQVAEModule | None = None
        self.inputs: np.ndarray | None = None

    def fit(self, x: np.ndarray, train_sequences: Sequence[np.ndarray] | None = None) -> np.ndarray:
        c = self.config
        torch.manual_seed(c.seed)
        self.inputs = _prepare(x, c, train_sequences)
        data = torch.as_tensor(self.inputs)
        self.module = RQVAEModule(data.shape[1], c, self.recipe)
        self.module.init_codebooks(data)
        loader = DataLoader(TensorDataset(data), batch_size=self.recipe.batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(c.seed))
        options = dict(max_epochs=self.recipe.max_epochs, logger=False, enable_checkpointing=False,
                       enable_progress_bar=False, enable_model_summary=False)
        options.update(self.trainer_kwargs)
        quiet_lightning()
        L.Trainer(**options).fit(self.module, loader)
        return self.encode(self.inputs)

    @torch.no_grad()
    def encode(self, inputs: np.ndarray) -> np.ndarray:
        """Codes (N, L) of already-prepared inputs (H_align for CoBa)."""
        self.module.eval()
        return self.module.cpu()(torch.as_tensor(inputs)).numpy().astype(np.int64)

    @property
    def history(self) -> list[dict]:
        return self.module.history if self.module is not None else []

    def settings(self) -> dict:
        r = self.recipe
        return {"quantizer": self.name, **self.config.settings(), "lr": r.lr, "epochs": r.max_epochs,
                "batch_size": r.batch_size}

    def codebooks(self) -> np.ndarray:
        """(L, K, D) codeword vectors of the trained quantiser."""
        return self.module.codebooks.detach().cpu().numpy().copy()


class CoBa(RQVAE):
    """S²GR's Collaborative and Balanced RQ-VAE (defaults from ``coba_config``)."""

    name = "CoBa"

    def __init__(self, config: QuantizerConfig | None = None, recipe: Recipe | None = None, **trainer_kwargs):
        super().__init__(config or coba_config(), recipe, **trainer_kwargs)


QUANTIZERS = {"RQ-KMeans": RQKMeans, "RQ-VAE": RQVAE, "CoBa": CoBa}


def make_quantizer(name: str, profile: Profile, levels: int = 3, codebook_size: int = 32, seed: int = 0):
    """A quantiser by name, with the profile's quantizer recipe and Trainer options (CoBa: ``coba_config``)."""
    if name not in QUANTIZERS:
        raise ValueError(f"unknown quantiser {name!r}; choose one of {sorted(QUANTIZERS)}")
    shape = dict(levels=levels, codebook_size=codebook_size, seed=seed)
    if name == "RQ-KMeans":
        return RQKMeans(QuantizerConfig(**shape))
    config = coba_config(**shape) if name == "CoBa" else QuantizerConfig(**shape)
    trainer = {k: v for k, v in profile.trainer_kwargs().items() if k != "enable_progress_bar"}
    return QUANTIZERS[name](config, profile.recipe("quantizer"), **trainer)


def sid_cache_path(dataset, quantizer, profile: Profile, encoder: str) -> Path:
    """Where a SID table is cached: ``<cache>/sids/<dataset>_<quantiser>_L<L>_K<K>_s<seed>-<digest>.npz``, the digest
    covering everything that makes the table (the quantiser's settings and recipe, the encoder, the Trainer's
    precision), so tables made under two profiles never overwrite each other."""
    import hashlib
    import json

    from minirec.artifacts import cache_dir

    made_by = dict(quantizer.settings(), encoder=encoder, precision=profile.precision)
    digest = hashlib.sha256(json.dumps(made_by, sort_keys=True, default=str).encode()).hexdigest()[:10]
    c = quantizer.config
    return cache_dir("sids") / f"{dataset.name}_{quantizer.name}_L{c.levels}_K{c.codebook_size}_s{c.seed}-{digest}.npz"


def cached_sid_table(dataset, split, profile: Profile, sids: SIDConfig | None = None):
    """The SID table notebook 04 builds, as ``sids`` (default: the profile's ``SIDConfig``) describes it: loaded
    from its cache (``sid_cache_path``) when it was made with these very settings, else built the same way."""
    from minirec.sids.embeddings import item_embeddings
    from minirec.sids.semantic_ids import build_sid_table

    sids = sids or profile.sids
    x = item_embeddings(dataset, sids.encoder, device=str(profile.device()))
    quantizer = make_quantizer(sids.quantizer, profile, sids.levels, sids.codebook_size, sids.seed)
    return build_sid_table(quantizer, x, dataset, split.train, cache=sid_cache_path(dataset, quantizer, profile,
                                                                                    sids.encoder),
                           encoder=sids.encoder)


def build_every_quantizer(dataset, embeddings: np.ndarray, split, profile: Profile, seeds, levels: int = 3,
                          codebook_size: int = 32, encoder: str | None = None) -> tuple[dict, dict]:
    """Notebook 04's comparison: every quantiser of ``QUANTIZERS`` trained anew for each seed on the item
    ``embeddings`` (each table cached under its settings, ``sid_cache_path``). Returns seed -> name -> quantiser
    and seed -> name -> SID table; a table without one distinct SID per item is an error."""
    from minirec.sids.semantic_ids import build_sid_table

    quantizers, tables = {}, {}
    for seed in seeds:
        quantizers[seed] = {name: make_quantizer(name, profile, levels, codebook_size, seed=seed) for name in QUANTIZERS}
        tables[seed] = {name: build_sid_table(q, embeddings, dataset, split.train, refit=True, encoder=encoder,
                                              cache=sid_cache_path(dataset, q, profile, encoder))
                        for name, q in quantizers[seed].items()}
        for name, table in tables[seed].items():
            if table.codes.shape != (dataset.n_items, levels + 1) or len(np.unique(table.codes, axis=0)) < dataset.n_items:
                raise ValueError(f"{name} (seed {seed}): the SID table does not give every item one distinct SID")
    return quantizers, tables

