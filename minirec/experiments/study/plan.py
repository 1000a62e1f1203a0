"""What the study trains: every headline spec (from the catalogue the notebooks use), the command line's short
names, OneRec-Think's steps compared, and Think-Ahead's settings."""
from __future__ import annotations

from minirec.experiments.runner import RunSpec
from minirec.experiments.specs import (ALIGN, ALIGN_COSINE, BASE, ITEM_ID_TIGER_PIECE, PRETRAINED_ALIGN,
                                      PRETRAINED_BASE, RANDOM_ALIGN, RANDOM_BASE, REASON, S2GR, S2GR_SETTINGS,
                                      SASREC_FIRST as SASREC,
                                      SpecCatalogue, grpo_candidates as rl_candidates, reason_rates)
from minirec.profiles import Profile

THINK_AHEAD = "Think-Ahead (chosen on validation)"     # TIGER-mini online after the reasoning model offline
SHOPX_AGENTS = "ShopX agents (held-out phrasings)"      # notebook 11's three agents on held-out words (``agents``)
# OneRec-Think's ablation: each stage against the one before it, and against the tuned SASRec; the alignment
# diagnostic against the headline alignment (never chosen by its test score)
STEPS = ((ALIGN, BASE), (REASON, ALIGN), (REASON, BASE), (BASE, SASREC), (ALIGN, SASREC), (REASON, SASREC),
         (THINK_AHEAD, REASON), (ALIGN_COSINE, ALIGN), (PRETRAINED_ALIGN, PRETRAINED_BASE), (RANDOM_ALIGN, RANDOM_BASE))
# steps whose question is the long tail: also compared inside each popularity group of the test targets
BY_POPULARITY = ((PRETRAINED_ALIGN, PRETRAINED_BASE),)
CACHED_LEVELS, PREFIX_COUNTS = (1, 2), (5, 10, 20)     # Think-Ahead's settings chosen among (notebook 10's)


def headline_specs(ds, split, profile: Profile, sid_table=None) -> dict[str, RunSpec]:
    """Every spec the study trains, from the catalogue the notebooks use (``specs.SpecCatalogue``): SASRec at the
    grid's first setting, TIGER-mini, item-ID TIGER, S²GR-mini and its settings, OneRec-Think's ranking stages, the
    alignment diagnostic, the reasoning stage at every fine-tuning rate and every GRPO candidate (each carrying its
    own recipe changes), Base and alignment on the pretrained SmolLM2-135M (``SpecCatalogue.pretrained``) and on
    random codes (``SpecCatalogue.random_codes``: notebook 12's H4).
    ``sid_table``: another SID table than the profile's."""
    specs = SpecCatalogue(ds, profile, sid_table)
    chain, pretrained, random = specs.onerec(), specs.pretrained(), specs.random_codes()
    out = [specs.sasrec_first(split), specs.tiger(), specs.item_id_tiger(ITEM_ID_TIGER_PIECE),
           *(specs.s2gr(name) for name in (S2GR, *S2GR_SETTINGS)), chain.base, chain.align, chain.reason,
           *specs.reason_rate_candidates(), specs.align_cosine(),
           *(specs.grpo(label) for label in specs.grpo_candidates()), pretrained.base, pretrained.align,
           random.base, random.align]
    return {spec.label: spec for spec in out}


# short names for the command line
ALIASES = {"SASRec": SASREC, "S2GR-mini": S2GR, "item-ID-TIGER": ITEM_ID_TIGER_PIECE,
           **dict(zip(("S2GR-noalign", "S2GR-lambda0.1", "S2GR-soft", "S2GR-soft0.5", "S2GR-normed",
                       "S2GR-levelhidden"), S2GR_SETTINGS, strict=True)),
           "OneRec-base": BASE, "OneRec-align": ALIGN, "OneRec-reason": REASON, "Think-Ahead": THINK_AHEAD,
           "OneRec-align-cosine": ALIGN_COSINE, "ShopX": SHOPX_AGENTS,
           "OneRec-pretrained-base": PRETRAINED_BASE, "OneRec-pretrained-align": PRETRAINED_ALIGN,
           "OneRec-random-base": RANDOM_BASE, "OneRec-random-align": RANDOM_ALIGN}


def expand_models(names: list[str], profile: Profile) -> list[str]:
    """Command-line model names, with ``OneRec-RL`` standing for every GRPO candidate, ``OneRec-RL-<reward>`` for
    that reward at both learning rates, and ``OneRec-reason-rates`` for the reasoning stage at every fine-tuning
    rate."""
    out, candidates = [], rl_candidates(profile)
    for name in names:
        if name == "OneRec-reason-rates":
            out += list(reason_rates(profile))
        elif name == "OneRec-RL":
            out += list(candidates)
        elif name.startswith("OneRec-RL-"):
            reward = name.removeprefix("OneRec-RL-")
            out += [label for label, (r, _) in candidates.items() if r == reward] or [name]
        else:
            out.append(name)
    return out
