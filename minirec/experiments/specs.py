"""The catalogue of experiments: every run that the course notebooks and the study both train, built once.

A ``RunSpec`` says what is trained (label, model class, architecture config, SID table); a profile says how. A
notebook and the study get a spec from the same ``SpecCatalogue`` method, so they train the same thing: the same
fingerprint, hence the same checkpoint folder (``runner.checkpoint_dir``). Labels are the constants below; nothing
else spells them::

    specs = SpecCatalogue(ds, get_profile("course"))
    tiger, s2gr = specs.tiger(), specs.s2gr()
    chain = specs.onerec()                  # Base -> warm-up -> alignment -> reasoning, each from the one before
    runs = run(chain.reason, split, profile)

To add a method to both a notebook and the study, see ``docs/contributing.md``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

from minirec.experiments.choice import Grid
from minirec.experiments.runner import RunSpec
from minirec.profiles import Profile

# ----------------------------------------------------------------------------- labels
SASREC = "SASRec"                                   # notebook 02: the setting chosen on validation over the grid
SASREC_FIRST = "SASRec (first grid setting)"        # the study's tuned bar: the grid's first setting, every seed
TIGER = "TIGER-mini"
ITEM_ID_TIGER = "TIGER-mini (item-ID tokens)"       # notebooks 05b/06b: one token per item
ITEM_ID_TIGER_PIECE = "TIGER-mini (item-ID tokens), study piece"   # the same spec under the study recipe
S2GR = "S²GR-mini"
BASE, WARMUP = "OneRec-Think Base (SID SFT)", "OneRec-Think warm-up"
ALIGN, REASON = "OneRec-Think + itemic alignment", "OneRec-Think + alignment + reasoning"
ALIGN_COSINE = "OneRec-Think + itemic alignment (cosine schedule, diagnostic)"
# OneRec-Think on the packaged pretrained language model (the study's question: does alignment transfer there?)
PRETRAINED_BASE, PRETRAINED_WARMUP = "OneRec-Think Base (SmolLM2-135M)", "OneRec-Think warm-up (SmolLM2-135M)"
PRETRAINED_ALIGN = "OneRec-Think + itemic alignment (SmolLM2-135M)"
# OneRec-Think on random codes (a shuffled SID table): codes that carry nothing the text says (notebook 12's H4)
RANDOM_BASE, RANDOM_WARMUP = "OneRec-Think Base (SID SFT, random codes)", "OneRec-Think warm-up (random codes)"
RANDOM_ALIGN = "OneRec-Think + itemic alignment (random codes)"
# sized for a study piece on 2 CPU cores, where SmolLM2 fine-tunes at about 70 tokens a second (the SID rows train,
# so every layer backpropagates): 5-item windows, 500 examples an epoch, at most 3 epochs a stage, batches of 16
PRETRAINED_ARCHITECTURE = dict(backbone="smollm2-135m", train_layers=2, max_items=5)
PRETRAINED_SIZES = dict(epoch_size=500)
PRETRAINED_RECIPE = {"finetune": dict(max_epochs=3, patience=1, batch_size=16, warmup_steps=10),
                     "warmup": dict(max_epochs=1, patience=1, batch_size=16, warmup_steps=10)}
RL = "OneRec-Think + RL"                            # a GRPO setting's label is RL (its variant): ``grpo_label``
SHOPX = "ShopX-mini"
TOOL_CALLER = "learned tool-caller"                 # ShopX's baseline: the same backbone writing calls SASRec serves
S2GR_PAUSE, S2GR_MIXED = "S²GR-mini (pause tokens)", "S²GR-mixed"      # notebook 06's ablations
ALIGN_VARIANTS = {"paper's mix (headline)": ALIGN,                       # notebook 07's alignment ablations
                  "caption-heavy mix": "OneRec-Think + itemic alignment (caption-heavy mix)",
                  "no warm-up": "OneRec-Think + itemic alignment (no warm-up)"}

class Setting(NamedTuple):
    """One setting of a method tried on validation: what sets it apart (a results row's variant) and the config
    changes that make it."""
    variant: str
    changes: dict


# S²GR-mini's method-form settings chosen among on validation, each a variant of the headline (λ = 1, hard cluster
# labels, τ = 0.1, p_l at the initializer's scale): label -> its Setting (S2GRConfig changes)
S2GR_HEADLINE = "headline setting"
S2GR_SETTINGS = {
    "S²GR-mini (no alignment)": Setting("no alignment", dict(align_weight=0.0)),
    "S²GR-mini (λ = 0.1)": Setting("λ = 0.1", dict(align_weight=0.1)),
    "S²GR-mini (soft targets, τ = 0.1)": Setting("soft targets, τ = 0.1", dict(align_targets="soft", temperature=0.1)),
    "S²GR-mini (soft targets, τ = 0.5)": Setting("soft targets, τ = 0.5", dict(align_targets="soft", temperature=0.5)),
    "S²GR-mini, normed feedback": Setting("normed feedback", dict(feedback_norm=True)),
    "S²GR-mini, level vectors at hidden scale": Setting("level vectors at hidden scale", dict(level_init="hidden")),
}

# diagnostics that train under another recipe than their family's: label -> the spec's recipe changes (recipe family
# -> Recipe fields), carried by the spec (``RunSpec.recipe``) and so part of its fingerprint
# (alignment trains under Base's recipe on a from-scratch backbone, under the fine-tuning one on a pretrained backbone)
RECIPE_CHANGES = {ALIGN_COSINE: {"onerec": {"schedule": "cosine"}, "finetune": {"schedule": "cosine"}}}


def grpo_variant(reward: str, lr: float) -> str:
    return f"GRPO, {reward} reward, lr {lr:g}"


def grpo_label(reward: str, lr: float) -> str:
    return f"{RL} ({grpo_variant(reward, lr)})"


def grpo_candidates(profile: Profile) -> dict[str, tuple[str, float]]:
    """label -> (reward, learning rate) of the GRPO settings chosen among on validation: every reward at the
    profile's ``rl`` learning rate and at the paper's 1e-5."""
    from minirec.reasoning.grpo import REWARDS
    return {grpo_label(name, lr): (name, lr) for name in REWARDS for lr in (profile.recipe("rl").lr, 1e-5)}


def reason_rate_label(lr: float) -> str:
    return f"{REASON} (fine-tuning lr {lr:g})"


def reason_rates(profile: Profile) -> dict[str, float]:
    """label -> peak learning rate of the reasoning stage's settings chosen among on validation: the headline at the
    profile's ``finetune`` rate, and every other rate of ``profiles.FINETUNE_RATES``."""
    from minirec.profiles import FINETUNE_RATES
    own = profile.recipe("finetune").lr
    return {REASON: own, **{reason_rate_label(lr): lr for lr in FINETUNE_RATES if lr != own}}


def grids(profile: Profile) -> tuple[Grid, ...]:
    """Every grid of settings chosen on validation (``choice.choose``), in the order the study reports them:
    S²GR-mini's method-form settings (compared with TIGER-mini; the chosen one joins the breakdowns beside the
    headline), the reasoning stage's fine-tuning rate (compared with the aligned model it starts from) and GRPO's
    (reward, learning rate) from the reasoning model (compared with it; its reward and share of all-equal groups
    recorded beside each candidate's validation score). A new grid is one more entry here."""
    s2gr = Grid(S2GR, {S2GR: S2GR_HEADLINE, **{label: s.variant for label, s in S2GR_SETTINGS.items()}},
                "s2gr_choice", TIGER, headline=S2GR, breakdown=True)
    rl = Grid(RL, {label: grpo_variant(*setting) for label, setting in grpo_candidates(profile).items()},
              "rl_choice", REASON, signal=("reward", "flat_groups"))
    reason = Grid(REASON, {label: f"fine-tuning lr {lr:g}" for label, lr in reason_rates(profile).items()},
                  "reason_choice", ALIGN, headline=REASON)
    return s2gr, reason, rl


class OneRecChain(NamedTuple):
    """OneRec-Think's ranking stages, each started from the checkpoint of the one before it."""
    base: RunSpec       # SID SFT: sequential preference only
    warmup: RunSpec     # token warm-up (only the new SID rows train)
    align: RunSpec      # multi-task itemic alignment, from the warm-up
    reason: RunSpec     # reasoning SFT, from the aligned model


@dataclass
class SpecCatalogue:
    """Every shared spec, built from a dataset and a profile (its architecture overrides, its SID table, its seeds).

    ``sid_table``: a SID table to use instead of the profile's; ``sids`` is the one in use (the profile's
    ``SIDConfig``, built or loaded on first use)."""
    dataset: object
    profile: Profile
    sid_table: object = None

    @cached_property
    def sids(self):
        """The SID table the generative models read: the profile's, built on the whole catalogue's training data."""
        if self.sid_table is not None:
            return self.sid_table
        from minirec.data.dataset import leave_one_out
        from minirec.sids.quantizers import cached_sid_table
        return cached_sid_table(self.dataset, leave_one_out(self.dataset), self.profile)

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(self.profile.seeds)

    # ------------------------------------------------------------------------- references
    def sasrec(self, split, label: str = SASREC, seeds: tuple[int, ...] | None = None, **overrides) -> RunSpec:
        """SASRec over the split's catalogue and history cap (``overrides``: a grid setting)."""
        from minirec.experiments.reference import sasrec_spec
        return sasrec_spec(split, self.profile, label=label, seeds=seeds, **overrides)

    def sasrec_first(self, split) -> RunSpec:
        """The study's tuned bar: SASRec at the first setting of the profile's grid."""
        return self.sasrec(split, SASREC_FIRST, **self.profile.sasrec_grid[0])

    # ------------------------------------------------------------------------- SID decoders
    def tiger(self) -> RunSpec:
        """TIGER-mini on the profile's SID table."""
        from minirec.models.generative import GenerativeRecommender, GenRecConfig
        return RunSpec(TIGER, GenerativeRecommender, GenRecConfig(**self.profile.arch("generative")), self.sids,
                       self.dataset.items["text"].tolist(), seeds=self.seeds)

    def item_id_tiger(self, label: str = ITEM_ID_TIGER) -> RunSpec:
        """TIGER-mini with one token per item (``item_id_table``): what the SID tokenisation costs or buys."""
        from minirec.sids.semantic_ids import item_id_table
        return self.tiger().variant(label, sid_table=item_id_table(self.dataset))

    def s2gr(self, setting: str = S2GR) -> RunSpec:
        """S²GR-mini in the method's form (``S2GR``), or one of its ``S2GR_SETTINGS``."""
        from minirec.reasoning.s2gr import S2GR as S2GRModel, S2GRConfig
        headline = RunSpec(S2GR, S2GRModel, S2GRConfig(**self.profile.arch("generative")), self.sids,
                           self.dataset.items["text"].tolist(), seeds=self.seeds)
        if setting == S2GR:
            return headline
        if setting not in S2GR_SETTINGS:
            raise ValueError(f"unknown S²GR-mini setting {setting!r}; choose from {[S2GR, *S2GR_SETTINGS]}")
        return headline.variant(setting, **S2GR_SETTINGS[setting].changes)

    def s2gr_ablations(self, labels: tuple[str, ...] = (S2GR_PAUSE, "S²GR-mini (no alignment)", S2GR_MIXED)
                       ) -> list[RunSpec]:
        """Notebook 06's ablations of the method's form (every seed): pause tokens instead of thinking steps (no
        level vectors, no alignment), no alignment, and mixed targets (4 of a batch's targets get a thinking branch,
        the rest plain next-SID loss)."""
        headline = self.s2gr()
        made = {S2GR_PAUSE: headline.variant(S2GR_PAUSE, thinking="pause"),
                S2GR_MIXED: headline.variant(S2GR_MIXED, think_targets=4, plain_weight=1.0)}
        return [made[label] if label in made else self.s2gr(label) for label in labels]

    def s2gr_kc_sweep(self) -> list[RunSpec]:
        """Notebook 06's sweep of the codeword-cluster count Kc (the profile's ``kc_sweep`` besides the default, at
        most the codebook size), on the profile's ablation seeds."""
        s2gr = self.s2gr()
        return [s2gr.variant(f"S²GR-mini Kc={kc}", n_clusters=kc, seeds=tuple(self.profile.ablation_seeds))
                for kc in self.profile.kc_sweep if kc != s2gr.config.n_clusters and kc <= self.profile.sids.codebook_size]

    # ------------------------------------------------------------------------- the "why" notebooks' diagnostics
    def tiger_diagnostics(self, deep_layers: int) -> list[RunSpec]:
        """Notebook 05b, on the first seed: TIGER-mini with longer windows (max(50, 2x) items) and with
        ``deep_layers`` layers (twice the backbone's, in the notebook)."""
        tiger, first = self.tiger(), self.seeds[:1]
        long_items = max(50, 2 * tiger.config.max_items)
        return [tiger.variant(f"TIGER-mini ({long_items}-item windows)", max_items=long_items, seeds=first),
                self._deeper(tiger, f"TIGER-mini ({deep_layers} layers)", deep_layers)]

    def s2gr_scale_checks(self) -> list[RunSpec]:
        """Notebook 06b, on the first seed: the feedback-scale settings (normed feedback, level vectors at the hidden
        state's scale)."""
        return [self.s2gr(setting).variant(setting, seeds=self.seeds[:1])
                for setting in ("S²GR-mini, normed feedback", "S²GR-mini, level vectors at hidden scale")]

    def s2gr_depth_checks(self, deep_layers: int) -> list[RunSpec]:
        """Notebook 06b, on the first seed: S²GR-mini with the first-step regulariser, and S²GR-mini and TIGER-mini
        with ``deep_layers`` layers."""
        s2gr = self.s2gr()
        return [s2gr.variant("S²GR-mini, first-step regulariser", reg_weight=1.0, seeds=self.seeds[:1]),
                self._deeper(s2gr, f"S²GR-mini, {deep_layers} layers", deep_layers),
                self._deeper(self.tiger(), f"TIGER-mini ({deep_layers} layers)", deep_layers)]

    def _deeper(self, spec: RunSpec, label: str, layers: int) -> RunSpec:
        overrides = dict(spec.config.backbone_overrides, num_hidden_layers=layers)
        return spec.variant(label, seeds=self.seeds[:1], backbone_overrides=overrides)

    def alignment_variants(self) -> dict[str, RunSpec]:
        """Notebook 07's ablations of the alignment recipe (``ALIGN_VARIANTS``, on the profile's ablation seeds): the
        paper's task mix (the headline), a caption-heavy mix of the multi-task stage (after the same warm-up), and
        alignment without the warm-up sub-stage."""
        chain = self.onerec()
        made = {ALIGN: chain.align,
                ALIGN_VARIANTS["caption-heavy mix"]:
                    chain.warmup.then(ALIGN_VARIANTS["caption-heavy mix"], stage="align", task_mix=(0.2, 0.5, 0.2, 0.1)),
                ALIGN_VARIANTS["no warm-up"]: chain.base.variant(ALIGN_VARIANTS["no warm-up"], stage="align")}
        seeds = tuple(self.profile.ablation_seeds)
        return {name: made[label].variant(label, seeds=seeds) for name, label in ALIGN_VARIANTS.items()}

    # ------------------------------------------------------------------------- OneRec-Think
    def onerec(self) -> OneRecChain:
        """Base -> token warm-up -> itemic alignment -> reasoning, on TIGER-mini's architecture (or the profile's
        ``onerec`` architecture: the gpu profile's pretrained backbone)."""
        from minirec.reasoning.itemic import tokenizer_corpus
        from minirec.reasoning.onerec import OneRecConfig, OneRecThink
        architecture = {**self.profile.arch("generative"), **self.profile.arch("onerec")}   # a profile's backbone
        base = RunSpec(BASE, OneRecThink, OneRecConfig(**architecture), self.sids,
                       tokenizer_corpus(self.dataset), seeds=self.seeds)
        warmup = base.variant(WARMUP, stage="warmup")
        align = warmup.then(ALIGN, stage="align")
        return OneRecChain(base, warmup, align, align.then(REASON, stage="reason"))

    def pretrained(self) -> OneRecChain:
        """Base, token warm-up and itemic alignment on SmolLM2-135M-Instruct (a real pretrained language model, loaded
        offline), at ``PRETRAINED_ARCHITECTURE`` and ``PRETRAINED_SIZES`` updated by the profile's ``pretrained``
        architecture and data sizes (by default its last 2 layers and the embeddings train, on 5-item windows, 500
        examples an epoch) and under ``PRETRAINED_RECIPE`` (short fine-tuning stages): sized for study pieces on a
        CPU. Its ``reason`` is None: the question it answers is alignment's."""
        from minirec.reasoning.onerec import OneRecConfig, OneRecThink
        config = OneRecConfig(**{**PRETRAINED_ARCHITECTURE, **self.profile.arch("pretrained")},
                              **{**PRETRAINED_SIZES, **self.profile.sizes("pretrained")})
        base = RunSpec(PRETRAINED_BASE, OneRecThink, config, self.sids, seeds=self.seeds, recipe=PRETRAINED_RECIPE)
        warmup = base.variant(PRETRAINED_WARMUP, stage="warmup")
        align = warmup.then(PRETRAINED_ALIGN, stage="align").variant(PRETRAINED_ALIGN, recipe=PRETRAINED_RECIPE)
        return OneRecChain(base, warmup, align, None)

    def random_codes(self) -> OneRecChain:
        """Base, token warm-up and itemic alignment as ``onerec`` builds them, on a shuffled copy of the SID table
        (``shuffled_sid_table``): every item keeps a distinct SID, but its codes say nothing of its text, so whatever
        the text knows reaches the model through alignment only. Its ``reason`` is None."""
        from minirec.sids.semantic_ids import shuffled_sid_table
        chain = self.onerec()
        base = chain.base.variant(RANDOM_BASE, sid_table=shuffled_sid_table(self.sids, self.dataset))
        warmup = base.variant(RANDOM_WARMUP, stage="warmup")
        return OneRecChain(base, warmup, warmup.then(RANDOM_ALIGN, stage="align"), None)

    def reason_rate_candidates(self) -> list[RunSpec]:
        """The reasoning stage at the other fine-tuning rates it is chosen among (``reason_rates``), each from the
        same aligned checkpoint."""
        reason = self.onerec().reason
        return [reason.variant(label, recipe={"finetune": {"lr": lr}})
                for label, lr in reason_rates(self.profile).items() if label != REASON]

    def align_cosine(self) -> RunSpec:
        """A diagnostic: the alignment stage under the cosine schedule (no plateau cuts)."""
        return self.onerec().align.variant(ALIGN_COSINE, recipe=RECIPE_CHANGES[ALIGN_COSINE])

    def grpo_candidates(self) -> dict[str, tuple[str, float]]:
        """The GRPO settings chosen among on validation under this catalogue's profile (``grpo_candidates``)."""
        return grpo_candidates(self.profile)

    def grpo(self, label: str, **config_changes) -> RunSpec:
        """One GRPO candidate from the reasoning model, trained at its learning rate."""
        candidates = grpo_candidates(self.profile)
        if label not in candidates:
            raise ValueError(f"unknown GRPO setting {label!r}; choose from {sorted(candidates)}")
        from minirec.reasoning.grpo import ReasoningRL
        reward, lr = candidates[label]
        spec = self.onerec().reason.then(label, model=ReasoningRL, reward=reward,
                                         **{**self.profile.sizes("rl"), **config_changes})
        return spec.variant(label, recipe={"rl": {"lr": lr}})

    def shopx(self) -> RunSpec:
        """ShopX-mini: the aligned OneRec-Think model fine-tuned to act on shopping sessions."""
        from minirec.agent.model import ShopXMini
        return self.onerec().align.then(SHOPX, ShopXMini, stage="shop", **self.profile.arch("agent"),
                                        **self.profile.sizes("agent"))

    def tool_caller(self) -> RunSpec:
        """The learned tool-caller: the same aligned checkpoint fine-tuned on the same shopping tasks to write the
        same actions only (no retrieval or next-item examples); a separate SASRec serves its calls."""
        from minirec.agent.model import ToolCaller
        return self.onerec().align.then(TOOL_CALLER, ToolCaller, stage="shop", shop_mix=(1.0, 0.0, 0.0),
                                        **self.profile.arch("agent"), **self.profile.sizes("agent"))
