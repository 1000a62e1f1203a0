"""When reasoning pays (notebook 12, docs/method.md §9): hypotheses stated before any number, the planted worlds they
are measured on, the measurements, and verdicts generated from what was recorded.

- ``HYPOTHESES``: each claim, the paper it comes from, how it is measured and the rule that decides it, fixed before
  measuring. A hypothesis that fails is reported like one that holds.
- The worlds: ``course_worlds`` (notebook 12's one contrast) and ``study_worlds`` (the sweep over depth and tail),
  fixed here before the study trained on them; their sizes were developed on generator seed ``DEVELOPMENT_SEED``,
  not the study's.
- Measurements: the ceiling and every model's share of it, tail users, how well codes recover the planted
  categories, a linear probe of the thinking states, and the thinking steps' attention on the planted driving
  positions.
- ``verdicts``: the table (hypothesis, measured, verdict) built from the results table's rows.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from minirec.data.world import World, WorldConfig, is_world_name, parse_world_name
from minirec.experiments.breakdown import COLD
from minirec.experiments.specs import S2GR, TIGER
from minirec.metrics import paired_bootstrap, stage_batches

TAIL_BELOW = COLD           # a tail target: an item with fewer training interactions than this (the breakdowns' cold)
DEVELOPMENT_SEED = 1        # the generator seed the world's sizes were developed on; the study's worlds use seed 0
STUDY_DEPTHS = (0, 1, 2, 3)
STUDY_TAILS = (0.5, 1.5)
COURSE_USERS = 2000         # notebook 12's worlds: the study's catalogue and rule, fewer shoppers (10 minutes)
H2_NMI = 0.5                # H2 holds when every quantiser's level-1 codes reach this NMI with the categories


@dataclass(frozen=True)
class Hypothesis:
    key: str
    claim: str
    source: str        # the paper and the regime it names
    measure: str       # what is measured, and the rule that decides
    profile: str       # the profile that measures it ("course": notebook 12's contrast; "study": the sweep)


HYPOTHESES = (
    Hypothesis("H1", "S²GR-mini gains nothing over TIGER-mini at depth 0, and its gain grows with depth, most on "
               "tail items",
               "S²GR (arXiv 2601.18664): stepwise latent reasoning pays where each coarse-to-fine code needs "
               "inference over the history, and on long-tail items",
               "NDCG@10 of S²GR-mini − TIGER-mini per world, paired bootstrap (seeds, then users). Holds when, at "
               "every tail setting measured, the depth-0 interval contains 0 and the deepest world's gain is above 0 "
               "beyond noise and larger on tail targets than on all", "course"),
    Hypothesis("H2", "level-1 codes recover the planted categories",
               "TIGER (arXiv 2305.05065) and S²GR: the coarse code of a semantic ID carries coarse semantics",
               f"normalised mutual information of the level-1 codes with the planted category, for RQ-KMeans, "
               f"RQ-VAE and CoBa. Holds when every quantiser reaches {H2_NMI} (random codes: about 0)", "course"),
    Hypothesis("H3", "the thinking state before code l decodes the planted latent of level l better than the plain "
               "hidden state does",
               "S²GR: each thinking step is aligned with the codebook's clusters of its level, so it should carry "
               "that level's latent",
               "a linear probe (logistic regression) trained on half of the test users' states and scored on the "
               "other half, for the planted category (level 1) and subcategory (level 2), on the thinking step t_l "
               "and on the state it starts from, in the deepest world. Holds when the thinking step's accuracy is "
               "above the plain state's beyond noise (paired bootstrap over the probe's users) at both levels",
               "course"),
    Hypothesis("H4", "itemic alignment helps tail items when the driving attribute is in the text but not in the "
               "codes, and not otherwise",
               "OneRec-Think (arXiv 2510.11639): aligning SID tokens with text transfers what the text knows to "
               "items the interactions say little about",
               "NDCG@10 on tail targets of OneRec-Think +alignment − its Base in the deepest world, on random codes "
               "(a shuffled table: the text names the attribute, the codes do not) and on the codes the text made. "
               "Holds when the gain is above 0 beyond noise on random codes and its interval contains 0 on the "
               "text's codes", "study"),
    Hypothesis("H5", "the rationale helps when the next category is predictable from the history, and the beam "
               "search uses it",
               "OneRec-Think: a rationale that names what comes next conditions the item the model writes",
               "NDCG@10 of +reasoning − +alignment in the deepest world against depth 0, and the share of test "
               "users whose top 10 changes when two users' rationales are swapped. Holds when the deep world's gain "
               "is above 0 beyond noise and above the depth-0 world's, and the swap changes more than half of the "
               "top-10 lists", "study"),
)


def course_worlds(seed: int = 0) -> dict[str, WorldConfig]:
    """Notebook 12's contrast: no inference (depth 0) against the deepest world of the study's grid, both with the
    study's default tail; ``COURSE_USERS`` shoppers so that both pairs of models train within 10 minutes."""
    return {f"depth {d}": WorldConfig(depth=d, n_users=COURSE_USERS, seed=seed) for d in (0, max(STUDY_DEPTHS))}


def notebook_worlds(profile) -> dict[str, WorldConfig]:
    """The worlds notebook 12 opens under ``profile``: the course contrast (``course_worlds``) in the smoke and
    course profiles; in the study and gpu profiles the same two depths at the study's size, so the notebook reuses
    the study pieces' checkpoints."""
    if profile.name in ("smoke", "course"):
        return course_worlds()
    return {f"depth {d}": WorldConfig(depth=d) for d in (0, max(STUDY_DEPTHS))}


def study_worlds(seed: int = 0) -> list[WorldConfig]:
    """The study's sweep: every depth of ``STUDY_DEPTHS`` at every tail of ``STUDY_TAILS``."""
    return [WorldConfig(depth=d, tail=t, seed=seed) for t in STUDY_TAILS for d in STUDY_DEPTHS]


# ----------------------------------------------------------------------------- measurements
def tail_targets(split, stage: str = "test", below: int = TAIL_BELOW) -> np.ndarray:
    """(n_users,) bool: the stage's target has fewer than ``below`` training interactions."""
    counts = split.train_item_counts()
    return counts[split.stage(stage).targets] < below


def ceiling_shares(table, run: "WorldRun", per_user: dict[str, dict[str, np.ndarray]], profile, seeds,
                   metric: str = "ndcg@10") -> list[dict]:
    """Each model's mean ``metric`` as a share of the Bayes-optimal ranking's on the same users, on every test user
    and on the tail targets; ``per_user``: name -> metric -> (users,) or (seeds, users). Recorded per seed in
    ``table`` (``CEILING_TABLE``) under the world's name, the ceiling itself as a row of its own."""
    rows = []
    with table.writing_once():
        for group, mask in run.groups.items():
            if not mask.any():
                continue
            best = float(run.ceiling[metric][mask].mean())
            stored = None if group == "all users" else group
            table.record(run.name, "Bayes-optimal ranking", {metric: [best]}, profile.name, [0], table=CEILING_TABLE,
                         group=stored)
            for name, values in per_user.items():
                per_seed = np.atleast_2d(np.asarray(values[metric]))[:, mask].mean(axis=1)
                shares = per_seed / best if best > 0 else np.full(len(per_seed), np.nan)
                table.record(run.name, name, {metric: per_seed, f"share of ceiling {metric}": shares}, profile.name,
                             list(seeds)[:len(per_seed)], table=CEILING_TABLE, group=stored)
                rows.append({"world": run.label, "model": name, "users": group, "n": int(mask.sum()),
                             metric: float(per_seed.mean()), "ceiling": best, "share of ceiling": float(shares.mean())})
    return rows


def code_alignment(codes: np.ndarray, world: World) -> dict[str, float]:
    """How well a SID table's codes recover what drives the shoppers: NMI of level-1 codes with the category, of the
    (level 1, level 2) prefix with the subcategory, level-1 purity (each code's majority category), and NMI of the
    level-3 code with the item's colour (what decides the item inside a subcategory for most steps)."""
    from sklearn.metrics import normalized_mutual_info_score as nmi
    first = codes[:, 0]
    prefix = codes[:, 0] * (codes[:, 1].max() + 1) + codes[:, 1]
    majority = sum(np.bincount(world.category[first == c]).max() for c in np.unique(first))
    return {"nmi level 1 / category": float(nmi(world.category, first)),
            "nmi levels 1-2 / subcategory": float(nmi(world.subcategory, prefix)),
            "level-1 purity": float(majority / len(first)),
            "nmi level 3 / colour": float(nmi(world.colour, codes[:, 2])) if codes.shape[1] > 2 else float("nan")}


def planted_latents(world: World, stage) -> np.ndarray:
    """(n_users, 2): the planted category and subcategory of each user's next step (the rule's most probable
    subcategory; at depth >= 1 the only one), from the true history; noise steps aside, this is what the model
    should infer."""
    c = world.config
    out = np.empty((len(stage), 2), dtype=np.int64)
    for i, (user, history) in enumerate(zip(stage.users, stage.histories)):
        sub = int(np.argmax(world.planted_subcategories(history, int(world.taste[user]))))
        out[i] = (sub // c.n_subcategories, sub)
    return out


@torch.no_grad()
def probe_features(module, stage, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Hidden states per user and level, teacher-forced on the true target: for S²GR-mini ``thinking`` and
    ``before`` (``S2GR.probe_states``), for a plain decoder ``plain`` (the state that predicts each code)."""
    module.eval()
    out: dict[str, list] = {}
    device = module.item_tokens.device
    for x, _, y in stage_batches(stage, module.config.max_items, batch_size, device):
        states = (module.probe_states(x, y) if hasattr(module, "probe_states")
                  else {"plain": module.code_states(x, y)[:, :module.sid_table.levels]})
        for name, v in states.items():
            out.setdefault(name, []).append(v.float().cpu().numpy())
    return {name: np.concatenate(v) for name, v in out.items()}


def probe_accuracy(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """A linear probe on held-out users: logistic regression fit on a random half of the users, per-user
    correctness (0/1) on the other half, in the order of that half (the same half for the same seed and size)."""
    import warnings

    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    fit, held = probe_halves(len(labels), seed)
    scaler = StandardScaler().fit(features[fit])
    with warnings.catch_warnings():      # a small test split (the smoke profile) has nearly one user per class
        warnings.filterwarnings("ignore", message="The number of unique classes", category=UserWarning)
        probe = LogisticRegression(max_iter=2000).fit(scaler.transform(features[fit]), labels[fit])
    return (probe.predict(scaler.transform(features[held])) == labels[held]).astype(np.float64)


def probe_halves(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2:])


def probe_levels(table, run: "WorldRun", features: dict[str, dict[str, np.ndarray]], profile, seed: int = 0
                 ) -> list[dict]:
    """H3's measurement on ``run``'s test users: probe accuracy per model, state and level (level 1: the planted
    category, level 2: the subcategory), and S²GR-mini's thinking step against the state it starts from (paired
    bootstrap over the probe's held-out users). Records both in ``table`` (``PROBE_TABLE``, comparisons) and returns
    the rows."""
    latents = planted_latents(run.world, run.split.test)
    names = {(S2GR, "thinking"): PROBE_THINKING, (S2GR, "before"): PROBE_BEFORE}
    rows, correct = [], {}
    with table.writing_once():
        for model, states in features.items():
            for state, x in states.items():
                method = names.get((model, state), f"{model} {state} state")
                for level in (0, 1):
                    hits = probe_accuracy(x[:, level], latents[:, level], seed)
                    correct[(method, level)] = hits
                    rows.append({"model": model, "state": state, "level": level + 1,
                                 "latent": ("category", "subcategory")[level], "accuracy": float(hits.mean()),
                                 "majority class": float(np.bincount(latents[:, level]).max() / len(latents))})
                table.record(run.name, method, {f"probe accuracy level {level + 1}": [correct[(method, level)].mean()]
                                                for level in (0, 1)}, profile.name, [seed], table=PROBE_TABLE)
        for level in (0, 1):
            if (PROBE_THINKING, level) in correct and (PROBE_BEFORE, level) in correct:
                r = paired_bootstrap(correct[(PROBE_THINKING, level)], correct[(PROBE_BEFORE, level)],
                                     f"probe accuracy level {level + 1}", n_boot=profile.n_boot)
                table.compare(run.name, PROBE_THINKING, PROBE_BEFORE, r, profile.name)
                for row in rows:
                    if (row["model"], row["state"], row["level"]) == (S2GR, "thinking", level + 1):
                        row.update({"thinking − before": r.diff, "95% CI": f"[{r.low:+.3f}, {r.high:+.3f}]"})
    return rows


def driving_attention(by_recency: np.ndarray, depth: int) -> dict[str, np.ndarray]:
    """From the thinking steps' mean attention by recency (L, T; column 0 the last item), the mean attention per item
    on the planted driving positions (the last ``max(depth, 1)`` items) and per item on the older ones."""
    k = max(depth, 1)
    return {"driving positions": np.nanmean(by_recency[:, :k], axis=1),
            "older positions": np.nanmean(by_recency[:, k:], axis=1)}


# ----------------------------------------------------------------------------- notebook 12's steps
@dataclass
class WorldRun:
    """One world opened for training: the world, its split under the profile, the shared specs on the profile's SID
    table, the Bayes-optimal ranking's per-user metrics on the test users and which of them have tail targets."""
    label: str
    world: World
    split: object
    specs: object
    ceiling: dict
    tail: np.ndarray

    @property
    def name(self) -> str:
        return self.world.config.name

    @property
    def groups(self) -> dict[str, np.ndarray]:
        return {"all users": np.ones(len(self.tail), dtype=bool), "tail targets": self.tail}


def open_world(label: str, config: WorldConfig, profile) -> WorldRun:
    """Generate ``config``'s world and open it under ``profile`` (its user cap, its SID table)."""
    from minirec.data.dataset import leave_one_out
    from minirec.data.world import make_world
    from minirec.experiments.specs import SpecCatalogue

    world = make_world(config)
    split = leave_one_out(world.dataset.subset_users(profile.max_users))
    return WorldRun(label, world, split, SpecCatalogue(world.dataset, profile), world.ceiling(split.test),
                    tail_targets(split))


def world_overview(runs: dict[str, WorldRun]) -> list[dict]:
    """Per world: its knobs and sizes, the share of rare items, how often the planted rule held (and the rate it
    should hold at), the Bayes-optimal ceiling, what the rule reaches when the shopper's taste and colour are read
    off the history (``World.plug_in``: a model that learnt the rule could do as well) and the popularity floor, on
    the test users."""
    from minirec.metrics import evaluate
    from minirec.models.baselines import Popularity
    rows = []
    for label, r in runs.items():
        holds, chance = r.world.rule_holds()
        popularity = evaluate(Popularity(r.split), r.split.test)
        c = r.world.config
        rows.append({"world": label, "name": r.name, "depth": c.depth, "tail": c.tail, "noise": c.noise,
                     "text carries": c.text_carries, "items": c.n_items, "test users": len(r.split.test),
                     "interactions": r.world.dataset.n_interactions,
                     f"items < {TAIL_BELOW} training interactions": r.world.rare_share(r.split.train),
                     "tail-target users": float(r.tail.mean()),
                     "rule held": float(holds.mean()), "rule should hold": float(chance.mean()),
                     "ceiling NDCG@10": float(r.ceiling["ndcg@10"].mean()),
                     "ceiling NDCG@10 (expected)": float(r.ceiling["expected_ndcg@10"].mean()),
                     "history-only plug-in NDCG@10": float(r.world.plug_in(r.split.test)["ndcg@10"].mean()),
                     "popularity NDCG@10": float(popularity["ndcg@10"].mean())})
    return rows


def quantizer_alignment(table, run: WorldRun, profile,
                        quantizers: tuple[str, ...] = ("RQ-KMeans", "RQ-VAE", "CoBa")) -> list[dict]:
    """H2's measurement: each quantiser's table on the world (the profile's settings otherwise; cached like
    notebook 04's), against the planted hierarchy, and a shuffled table (random codes) as the floor; recorded in
    ``table`` (``CODES_TABLE``) under the world's name."""
    from minirec.sids.quantizers import cached_sid_table
    from minirec.sids.semantic_ids import shuffled_sid_table
    rows = []
    tables = {q: cached_sid_table(run.world.dataset, run.split, profile, replace(profile.sids, quantizer=q))
              for q in quantizers}
    tables["random codes (shuffled)"] = shuffled_sid_table(tables[quantizers[-1]], run.world.dataset)
    with table.writing_once():
        for name, sids in tables.items():
            scores = code_alignment(sids.codes, run.world)
            rows.append({"quantiser": name, **scores})
            table.record(run.name, name, {k: [v] for k, v in scores.items()}, profile.name, [profile.sids.seed],
                         table=CODES_TABLE)
    return rows


def compare_models(table, run: WorldRun, a: str, b: str, per_user: dict[str, dict[str, np.ndarray]], profile,
                   metric: str = "ndcg@10") -> list:
    """``a`` against ``b`` on every test user and on the tail targets, recorded in ``table`` under the world's name.
    ``per_user``: name -> metric -> (users,) for one seed or (seeds, users), row s from seed s for both (the
    two-level bootstrap). Returns one row per group (world, users, means, difference and its 95% interval)."""
    out = []
    for group, mask in run.groups.items():
        if mask.sum() < 2:
            continue
        r = paired_bootstrap(np.asarray(per_user[a][metric])[..., mask], np.asarray(per_user[b][metric])[..., mask],
                             metric, n_boot=profile.n_boot)
        table.compare(run.name, a, b, r, profile.name, group=None if group == "all users" else group)
        out.append({"world": run.label, "users": group, "n": int(mask.sum()), a: r.mean_a, b: r.mean_b,
                    "diff": r.diff, "low": r.low, "high": r.high, "verdict": r.verdict(a, b)})
    return out


def by_seed(runs: dict) -> dict[str, dict[str, np.ndarray]]:
    """name -> ``SeedRuns`` as name -> metric -> (seeds, users), row s from seed s (what ``compare_models`` and
    ``ceiling_shares`` take: one row is the user bootstrap, several the two-level one)."""
    return {name: {m: np.stack([r.per_user_by_seed[s][m] for s in r.seeds]) for m in r.per_user}
            for name, r in runs.items()}


def thinking_attention_rows(run: WorldRun, module, n_users: int) -> list[dict]:
    """Each thinking step's mean attention per history item on the planted driving positions (the last
    ``max(depth, 1)`` items) and on older ones, over the first ``n_users`` test users (teacher-forced on the true
    target; ``s2gr.attention_profiles``)."""
    from minirec.reasoning.s2gr import attention_profiles
    by_recency, _, _, _ = attention_profiles(module, run.split.test, run.world.dataset.items["genres"].tolist(),
                                             n_users)
    shares = driving_attention(by_recency, run.world.config.depth)
    return [{"world": run.label, "step": f"t{level + 1}", "positions": kind, "attention": float(v[level])}
            for kind, v in shares.items() for level in range(len(v))]


# ----------------------------------------------------------------------------- verdicts, from recorded rows
PROBE_THINKING, PROBE_BEFORE = "S²GR-mini thinking state", "S²GR-mini state before thinking"
CODES_TABLE, PROBE_TABLE, CEILING_TABLE = "world_codes", "world_probe", "world_ceiling"


def _world(dataset: str) -> WorldConfig | None:
    return parse_world_name(dataset) if is_world_name(dataset) else None


def _interval(c: dict) -> str:
    return f"{c['diff']:+.4f} [{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}]"


def _h1(table, profile: str) -> tuple[str, str]:
    rows = [c for c in table.comparisons if c["profile"] == profile and c["a"] == S2GR
            and c["b"] == TIGER and c["metric"] == "ndcg@10" and _world(c["dataset"]) is not None
            and c.get("group") in (None, "tail targets")]
    by_tail: dict[float, dict] = {}
    for c in rows:
        w = _world(c["dataset"])
        by_tail.setdefault(w.tail, {}).setdefault(c.get("group") or "all", {})[w.depth] = c
    measured, verdicts = [], []
    for tail, groups in sorted(by_tail.items()):
        every, tails = groups.get("all", {}), groups.get("tail targets", {})
        if 0 not in every or len(every) < 2:
            continue
        deepest = max(every)
        text = "; ".join(f"depth {d}: {_interval(every[d])}" for d in sorted(every))
        if deepest in tails:
            text += f"; tail targets at depth {deepest}: {_interval(tails[deepest])}"
        measured.append(f"tail {tail:g}: {text}")
        verdicts.append(not every[0]["significant"] and every[deepest]["significant"] and every[deepest]["diff"] > 0
                        and deepest in tails and tails[deepest]["diff"] > every[deepest]["diff"])
    if not verdicts:
        return "", "not measured in this profile"
    return " | ".join(measured), "holds" if all(verdicts) else "fails"


def _h2(table, profile: str) -> tuple[str, str]:
    rows = [r for r in table.records if r["profile"] == profile and r["table"] == CODES_TABLE
            and r["metric"] == "nmi level 1 / category" and "shuffled" not in r["method"]]
    if not rows:
        return "", "not measured in this profile"
    measured = "; ".join(f"{r['method']} NMI {r['mean']:.3f} ({r['dataset']})" for r in rows)
    return measured, "holds" if all(r["mean"] >= H2_NMI for r in rows) else "fails"


def _h3(table, profile: str) -> tuple[str, str]:
    rows = [c for c in table.comparisons if c["profile"] == profile and c["a"] == PROBE_THINKING
            and c["b"] == PROBE_BEFORE]
    if not rows:
        return "", "not measured in this profile"
    deepest = max(_world(c["dataset"]).depth for c in rows)
    rows = sorted((c for c in rows if _world(c["dataset"]).depth == deepest), key=lambda c: c["metric"])
    measured = "; ".join(f"{c['metric']} at depth {deepest}: thinking {c['mean_a']:.3f} vs before {c['mean_b']:.3f}, "
                         f"{_interval(c)}" for c in rows)
    holds = len(rows) >= 2 and all(c["significant"] and c["diff"] > 0 for c in rows)
    return measured, "holds" if holds else "fails"


def _tail_steps(table, profile: str, a: str, b: str) -> dict[int, dict]:
    """depth -> the tail-target comparison of ``a`` against ``b`` in a world of the default tail."""
    out = {}
    for c in table.comparisons:
        w = _world(c["dataset"])
        if (w is not None and c["profile"] == profile and (c["a"], c["b"]) == (a, b) and c["metric"] == "ndcg@10"
                and c.get("group") == "tail targets" and w.tail == WorldConfig().tail):
            out[w.depth] = c
    return out


def _h4(table, profile: str) -> tuple[str, str]:
    from minirec.experiments.specs import ALIGN, BASE, RANDOM_ALIGN, RANDOM_BASE
    text, random = _tail_steps(table, profile, ALIGN, BASE), _tail_steps(table, profile, RANDOM_ALIGN, RANDOM_BASE)
    both = sorted(set(text) & set(random))
    if not both:
        return "", "not measured in this profile"
    d = both[-1]
    measured = (f"tail targets at depth {d}: alignment − Base on random codes {_interval(random[d])}, "
                f"on the text's codes {_interval(text[d])}")
    holds = random[d]["significant"] and random[d]["diff"] > 0 and not text[d]["significant"]
    return measured, "holds" if holds else "fails"


SWAP_SHARE = 0.5            # H5: the swap changes more than this share of top-10 lists


def _h5(table, profile: str) -> tuple[str, str]:
    from minirec.experiments.specs import ALIGN, REASON
    steps = {}
    for c in table.comparisons:
        w = _world(c["dataset"])
        if (w is not None and c["profile"] == profile and (c["a"], c["b"]) == (REASON, ALIGN)
                and c["metric"] == "ndcg@10" and not c.get("group") and w.tail == WorldConfig().tail):
            steps[w.depth] = c
    if 0 not in steps or len(steps) < 2:
        return "", "not measured in this profile"
    deepest = max(steps)
    deep_world = steps[deepest]["dataset"]
    swaps = [r for r in table.records if r["profile"] == profile and r["dataset"] == deep_world
             and r["table"] == "stage_diagnostics" and r["metric"] == "top10_changed_by_swap"
             and r["method"] == f"{REASON}: test rationales"]
    swap = swaps[0]["mean"] if swaps else float("nan")
    measured = (f"+reasoning − +alignment: depth 0 {_interval(steps[0])}, depth {deepest} "
                f"{_interval(steps[deepest])}; top 10 changed by a rationale swap at depth {deepest}: "
                + (f"{swap:.3f} of users" if swaps else "not recorded"))
    holds = (steps[deepest]["significant"] and steps[deepest]["diff"] > 0
             and steps[deepest]["diff"] > steps[0]["diff"] and swap > SWAP_SHARE)
    return measured, "holds" if holds else "fails"


def verdicts(table, profile: str) -> list[dict]:
    """(hypothesis, measured, verdict) for every hypothesis, from the rows ``table`` holds for ``profile``: what
    notebook 12 ends with and what the other notebooks' summaries quote. A hypothesis whose rows are missing says
    so (``not measured in this profile``)."""
    measure = {"H1": _h1, "H2": _h2, "H3": _h3, "H4": _h4, "H5": _h5}
    out = []
    for h in HYPOTHESES:
        measured, verdict = measure[h.key](table, profile) if h.key in measure else ("", "not measured yet")
        out.append({"hypothesis": f"{h.key}: {h.claim}", "measured": measured or "—", "verdict": verdict})
    return out


# ----------------------------------------------------------------------------- notebook 12's contrast, world by world
PAIR = (TIGER, S2GR)                    # the model a method extends, then the method


def train_pair(worlds: dict[str, WorldRun], profile, table, retrain: bool = False) -> dict[str, dict]:
    """TIGER-mini and S²GR-mini in every world, as notebooks 05 and 06 build them on the world's SID table, each
    recorded in ``table`` under the world's name. Returns world label -> model -> ``SeedRuns``."""
    from minirec.experiments.runner import record, run as run_spec
    runs = {}
    with table.writing_once():
        for label, w in worlds.items():
            runs[label] = {PAIR[0]: run_spec(w.specs.tiger(), w.split, profile, retrain),
                           PAIR[1]: run_spec(w.specs.s2gr(), w.split, profile, retrain)}
            for r in runs[label].values():
                record(table, w.name, r, profile, notes=f"planted world ({label})")
                print(f"{label}: {r.summary()}")
    return runs


def pair_gains(table, worlds: dict[str, WorldRun], runs: dict[str, dict], profile) -> list[dict]:
    """S²GR-mini against TIGER-mini in every world, on every test user and on the tail targets (``compare_models``)."""
    return [row for label, w in worlds.items()
            for row in compare_models(table, w, PAIR[1], PAIR[0], by_seed(runs[label]), profile)]


def pair_shares(table, worlds: dict[str, WorldRun], runs: dict[str, dict], profile) -> list[dict]:
    """Both models' shares of each world's ceiling (``ceiling_shares``)."""
    return [row for label, w in worlds.items()
            for row in ceiling_shares(table, w, by_seed(runs[label]), profile, profile.seeds)]


def pair_attention(worlds: dict[str, WorldRun], runs: dict[str, dict], n_users: int) -> list[dict]:
    """S²GR-mini's thinking attention on the driving positions in every world (``thinking_attention_rows``)."""
    return [row for label, w in worlds.items()
            for row in thinking_attention_rows(w, runs[label][PAIR[1]].module, n_users)]


# ----------------------------------------------------------------------------- a sparse real catalogue beside the worlds
REAL_CATALOGUE = "ml-latest-small"


def catalogue_stats(datasets: dict[str, object]) -> list[dict]:
    """Size, density and sparsity of each dataset (name -> ``SequenceDataset``), on its leave-one-out training part:
    how far into the tail regime a real catalogue is, beside a world's."""
    from minirec.data.dataset import leave_one_out
    rows = []
    for name, ds in datasets.items():
        counts = leave_one_out(ds).train_item_counts()
        stats = ds.stats()
        rows.append({"dataset": name, "users": stats["users"], "items": stats["items"],
                     "interactions": stats["interactions"], "density": stats["density"],
                     f"items < {TAIL_BELOW} training interactions": float((counts < TAIL_BELOW).mean()),
                     "items bought at most twice": float((counts <= 2).mean())})
    return rows


def real_catalogue_rows(table, profile: str = "study") -> list[dict]:
    """The study's comparisons on MovieLens latest-small: S²GR-mini and item-ID TIGER each against TIGER-mini
    (two-level bootstrap), on every test user; empty until its pieces are assembled."""
    from minirec.experiments.specs import ITEM_ID_TIGER_PIECE, S2GR, TIGER
    return [{"A": c["a"], "B": c["b"], "metric": c["metric"], "A − B": c["diff"],
             "95% CI": f"[{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}]", "seeds": c["n_seeds"], "users": c["n_users"]}
            for c in table.comparisons
            if c["dataset"] == REAL_CATALOGUE and c["profile"] == profile and c["b"] == TIGER
            and c["a"] in (S2GR, ITEM_ID_TIGER_PIECE) and not c.get("group")]
