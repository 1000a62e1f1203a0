"""S²GR-mini: stepwise latent thinking before each SID code (docs/method.md §6).

TIGER decodes an item as ``s1 s2 s3 s4`` (three semantic codes, then the de-duplication
code). S²GR puts one *thinking step* before each semantic code::

    <bos> history ... t1 s1 t2 s2 t3 s3 s4

A thinking step is not a vocabulary token. Its input embedding is the backbone's own last
hidden state at the previous position plus a learned level vector p_l (*latent feedback*);
in the *pause* ablation it is p_l alone. With ``feedback_norm=True`` the hidden state first
passes through a learned RMSNorm started at the token embeddings' scale. The output hidden
state at t_l predicts s_l, and an alignment loss ties it to the codebook: k-means groups
each level's K codewords into Kc clusters with unit centres c_{l,k}, a projection W maps
t_l into codebook space, and

    L_align_l = -log softmax_k( cos(W t_l, c_{l,k}) / τ )[cluster of the target's code l]
    L = L_rec + align_weight * Σ_l L_align_l  (+ reg_weight * (L_interest + L_reg))

With ``align_targets="soft"`` the label is replaced by a distribution over the clusters (a
softmax of negative squared distances from the target's codeword to the centres,
``soft_cluster_targets``), and L_align_l is the cross-entropy against it.

The defaults are the method's form: every target of a window gets its thinking branch
(``think_targets=None``) and no loss is spent on the plain, thinking-free path that inference
never uses (``plain_weight=0``). ``think_targets=4, plain_weight=1`` is minirec's earlier,
cheaper mixed form, kept as an ablation.

Optional first-step regulariser (``reg_weight > 0``): an interest head maps the hidden state
the branch starts from to a vector v_g, trained by InfoNCE to point at the mean of the
target's SID-token embeddings (other targets of the batch as negatives, L_interest), and
L_reg = 1 - cos(t_1, stopgrad(v_g)) pulls the first thinking step towards it.

Training exactly as inference computes it. Every item of a training window is a target,
and each needs its own thinking steps, whose inputs are hidden states that exist only
after the previous step ran. ``think_forward`` therefore runs:

1. the plain history ``<bos> sid(i_1) ... sid(i_T)`` once, keeping its KV cache;
2. one *thinking branch* per target item j, appended after the history: ``t1 s1 t2 s2 t3 s3``.
   A 4-D attention mask lets branch j see the history tokens before item j and its own
   earlier branch tokens, nothing else; its positions continue from item j-1, exactly the
   positions those tokens get at inference.
3. With latent feedback the input of t_l is the hidden state of s_{l-1}, which exists only
   after the pass that computed it, so the branches run as L cached passes, each over all
   branches at once: pass l feeds ``t_l s_l`` (s_l is a known token and attends to t_l
   inside the same pass). Every thinking input is thus the real hidden state. Pause tokens
   do not depend on hidden states, so all stages go in one pass with the same mask.

Inference runs the thinking steps inside every beam of the constrained beam search
(``decode_step``, the ``step_fn`` of ``beam_search.constrained_beam_search``): the beam width does not grow.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.cluster import KMeans

from minirec.metrics import stage_batches
from minirec.models.generative import GenerativeRecommender, GenRecConfig
from minirec.sids.semantic_ids import SIDTable

THINKING = ("latent", "pause")
ALIGN_TARGETS = ("hard", "soft")
LEVEL_INITS = ("small", "hidden")


@dataclass
class S2GRConfig(GenRecConfig):
    thinking: str = "latent"        # latent: h_prev + p_l (S²GR) | pause: p_l alone (learnable pause tokens)
    feedback_norm: bool = False     # latent: bring h_prev to the token embeddings' scale (learned RMSNorm) first
    align_weight: float = 1.0       # weight of Σ_l L_align_l; 0 = the no-alignment ablation
    n_clusters: int = 8             # Kc: clusters of each level's codewords
    temperature: float = 0.1        # τ of the prototype contrast
    align_targets: str = "hard"     # hard: the target code's cluster | soft: a distribution over the clusters
    target_temperature: float = 0.1 # soft targets: softmax(-d² / (this x the level's mean d²)) over cluster centres
    level_init: str = "small"       # p_l at init: small (the backbone's initializer_range) | hidden (a hidden state's scale)
    think_targets: int | None = None  # targets per training window with thinking branches (None = all: the method)
    reg_weight: float = 0.0         # weight of the first-step regulariser (InfoNCE interest + 1 - cos); 0 = off
    plain_weight: float = 0.0       # weight of TIGER's loss on the plain pass, a path inference never uses (0: the method)
    cluster_seed: int = 0


def soft_cluster_targets(codebooks: np.ndarray, centres: np.ndarray, temperature: float) -> np.ndarray:
    """(L, K, Kc): for every codeword, a distribution over its level's cluster centres.

    q_{l,j,k} ∝ exp(-‖e_{l,j} - c_{l,k}‖² / (temperature · mean_{j,k} ‖e_{l,j} - c_{l,k}‖²)): scale-free across
    levels, and its argmax is the nearest centre, the hard k-means label.
    """
    codebooks, centres = np.asarray(codebooks, dtype=np.float64), np.asarray(centres, dtype=np.float64)
    if temperature <= 0:
        raise ValueError(f"target_temperature must be positive, got {temperature}")
    d2 = ((codebooks[:, :, None, :] - centres[:, None, :, :]) ** 2).sum(-1)             # (L, K, Kc)
    logits = -d2 / (temperature * d2.mean(axis=(1, 2), keepdims=True))
    q = np.exp(logits - logits.max(axis=2, keepdims=True))
    return (q / q.sum(axis=2, keepdims=True)).astype(np.float32)


def codeword_clusters(codebooks: np.ndarray, n_clusters: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """k-means over each level's codewords: the cluster of every code (L, K) and centres (L, Kc, D)."""
    codebooks = np.asarray(codebooks, dtype=np.float64)
    levels, k, _ = codebooks.shape
    if not 1 <= n_clusters <= k:
        raise ValueError(f"n_clusters={n_clusters} must lie in [1, {k}] (the codes per level)")
    assign, centres = [], []
    for level in range(levels):
        km = KMeans(n_clusters=n_clusters, n_init=3, random_state=seed + level).fit(codebooks[level])
        assign.append(km.labels_)
        centres.append(km.cluster_centers_)
    return np.stack(assign).astype(np.int64), np.stack(centres).astype(np.float32)


@dataclass
class Branches:
    """What ``think_forward`` computed for the target items of a batch of windows."""

    stage_hidden: list[torch.Tensor]   # per stage t1, s1, t2, ..., sL: (B, n, H) last hidden states
    tokens: torch.Tensor               # (B, n, P) the target items' SID tokens
    valid: torch.Tensor                # (B, n) which branches are real targets
    context: torch.Tensor              # (B, n, H) the hidden state each branch starts from (before t1)
    items: torch.Tensor                # (B, n) the target items
    plain_logits: torch.Tensor | None  # (B, S0, V) plain-pass logits when asked for
    plain_labels: torch.Tensor | None  # (B, S0) TIGER's next-token labels of the plain pass, with the logits
    attentions: list | None            # per stage: per layer (B, heads, n, keys) when asked for


class S2GR(GenerativeRecommender):
    """TIGER-mini with stepwise latent thinking before each semantic code."""

    config_class = S2GRConfig

    def __init__(self, config: S2GRConfig, sid_table: SIDTable, texts=(), model=None, tokenizer=None):
        for name, value, allowed in (("thinking", config.thinking, THINKING),
                                     ("align_targets", config.align_targets, ALIGN_TARGETS),
                                     ("level_init", config.level_init, LEVEL_INITS)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, not {value!r}")
        if sid_table.codebooks is None:
            raise ValueError("S²GR clusters the codebook vectors, and this SID table has none: "
                             "rebuild it with semantic_ids.build_sid_table")
        super().__init__(config, sid_table, texts, model, tokenizer)
        hidden = self.model.config.hidden_size
        self.levels = sid_table.levels
        # "small": the scale of any new weight; "hidden": the scale of a hidden state leaving the final RMSNorm
        # (unit entries at initialisation), so that h_prev + p_l is not h_prev alone.
        init = self.model.config.initializer_range if config.level_init == "small" else 1.0
        self.level_vectors = nn.Parameter(torch.randn(self.levels, hidden) * init)
        # A last hidden state is ~13x longer than a token embedding once trained (it leaves the final
        # RMSNorm). Fed back raw, it swamps p_l and the residual stream, and the thinking step's
        # output stays close to its input. A learned RMSNorm, started at the embeddings' scale,
        # feeds it back at the scale the layers expect. (feedback_norm=False: h_prev + p_l as is.)
        self.feedback_norm = None
        if config.feedback_norm and config.thinking == "latent":
            self.feedback_norm = nn.RMSNorm(hidden, eps=self.model.config.rms_norm_eps)
            nn.init.constant_(self.feedback_norm.weight, self._embedding_rms())
        assign, centres = codeword_clusters(sid_table.codebooks, config.n_clusters, config.cluster_seed)
        self.register_buffer("code_cluster", torch.as_tensor(assign), persistent=False)            # (L, K)
        self.register_buffer("centres", F.normalize(torch.as_tensor(centres), dim=-1), persistent=False)
        soft = soft_cluster_targets(sid_table.codebooks, centres, config.target_temperature)
        self.register_buffer("code_soft_cluster", torch.as_tensor(soft), persistent=False)          # (L, K, Kc)
        self.project = nn.Linear(hidden, centres.shape[-1], bias=False)
        self.interest = nn.Linear(hidden, hidden, bias=False) if config.reg_weight > 0 else None

    @property
    def n_stages(self) -> int:
        """Branch inputs: t1 s1 t2 s2 ... tL sL (the de-dup code is predicted from sL, never fed)."""
        return 2 * self.levels

    def thinking_input(self, previous: torch.Tensor | None, level: int) -> torch.Tensor:
        """Input embedding of t_{level+1}: previous hidden state + p_l, or p_l alone (pause)."""
        p = self.level_vectors[level]
        if self.config.thinking == "pause":
            return p.expand(*previous.shape[:-1], -1) if previous is not None else p
        if self.feedback_norm is not None:
            previous = self.feedback_norm(previous)
        return previous + p

    @torch.no_grad()
    def _embedding_rms(self) -> float:
        """Root-mean-square entry of the input embedding rows (the scale a thinking input should have)."""
        return self.model.get_input_embeddings().weight.float().pow(2).mean().sqrt().item()

    # ------------------------------------------------------------------ teacher-forced branches
    def _branch_bias(self, mask: torch.Tensor, before: torch.Tensor, dtype) -> torch.Tensor:
        """(B, 1, St*n, S0 + St*n) additive mask: rows stage-major, branch j sees history <= before[:, j]."""
        (B, S0), n = mask.shape, before.shape[1]
        St, device = self.n_stages, mask.device
        keys = torch.arange(S0, device=device)
        history = (keys[None, None, :] <= before[:, :, None]) & mask.bool()[:, None, :]  # (B, n, S0)
        history = history.repeat(1, St, 1)                                                 # (B, St*n, S0)
        own = torch.kron(torch.tril(torch.ones(St, St, device=device)), torch.eye(n, device=device)) > 0
        visible = torch.cat([history, own.expand(B, -1, -1)], dim=2)[:, None]
        return torch.zeros(visible.shape, dtype=dtype, device=device).masked_fill(~visible, torch.finfo(dtype).min)

    def think_forward(self, window: torch.Tensor, targets: torch.Tensor | int = 1, plain_logits: bool = False,
                      output_attentions: bool = False) -> Branches:
        """Teacher-forced thinking branches for some items of windows (B, T+1).

        ``targets``: (B, n) window positions to branch at, or an int j for all positions >= j.
        """
        window = window.to(self.item_tokens.device)
        B = window.shape[0]
        if isinstance(targets, int):
            targets = torch.arange(targets, window.shape[1], device=window.device).expand(B, -1)
        input_ids, mask, positions, *labels = self.encode_histories(window, with_labels=plain_logits)
        base = self.model.base_model
        extra = {"output_attentions": True} if output_attentions else {}
        out = base(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True)
        cache, S0, P = out.past_key_values, input_ids.shape[1], self.tokens_per_item
        n = targets.shape[1]
        before = targets * P                                    # index of the token just before item j
        start = positions.gather(1, before)                     # (B, n) its position
        items = window.gather(1, targets)
        tokens = self.item_tokens[items.clamp(min=0)]                                    # (B, n, P)
        real = window >= 0
        valid = (real & (real.long().cumsum(1) > 1)).gather(1, targets)                  # real, not the first
        bias = self._branch_bias(mask, before, out.last_hidden_state.dtype)
        embed = self.model.get_input_embeddings()
        stage_hidden, attentions = [], []
        previous = context = _rows(out.last_hidden_state, before)                         # (B, n, H)
        for group in self._stage_groups():
            x = torch.cat([self.thinking_input(previous, s // 2) if s % 2 == 0 else embed(tokens[:, :, s // 2])
                           for s in group], dim=1)
            lo, hi = group[0] * n, (group[-1] + 1) * n
            o = base(inputs_embeds=x, attention_mask=bias[:, :, lo:hi, :S0 + hi],
                     position_ids=torch.cat([start + 1 + s for s in group], dim=1), past_key_values=cache,
                     use_cache=True, **extra)
            hidden = o.last_hidden_state.split(n, dim=1)
            stage_hidden.extend(hidden)
            previous = hidden[-1]
            if output_attentions:
                attentions.extend([a[:, :, i * n:(i + 1) * n] for a in o.attentions] for i in range(len(group)))
        logits = self.model.get_output_embeddings()(out.last_hidden_state) if plain_logits else None
        return Branches(stage_hidden, tokens, valid, context, items, logits, labels[0] if labels else None,
                        attentions or None)

    def _stage_groups(self) -> list[range]:
        """Stages that can share one forward: ``t_l s_l`` pairs (latent), or all stages (pause)."""
        if self.config.thinking == "pause":
            return [range(self.n_stages)]
        return [range(s, s + 2) for s in range(0, self.n_stages, 2)]

    def last_branch(self, window: torch.Tensor, output_attentions: bool = False) -> Branches:
        """Thinking branch of each window's last item only (evaluation, brute force, attention)."""
        return self.think_forward(window, window.shape[1] - 1, output_attentions=output_attentions)

    def sample_targets(self, window: torch.Tensor) -> torch.Tensor | int:
        """Training: ``think_targets`` random real targets per window (all positions when None)."""
        m = self.config.think_targets
        if m is None or m >= window.shape[1] - 1:
            return 1
        real = window >= 0
        valid = real & (real.long().cumsum(1) > 1)
        score = torch.rand(window.shape, device=window.device) + valid.float()            # valid ones first
        return score.topk(m, dim=1).indices.sort(dim=1).values

    def code_hidden(self, branches: Branches) -> torch.Tensor:
        """(B, n, P, H): the hidden states that predict each SID token (t_1..t_L, then s_L for the de-dup code)."""
        h = branches.stage_hidden
        return torch.stack([h[2 * level] for level in range(self.levels)] + [h[-1]], dim=2)

    def cluster_logits(self, thinking: torch.Tensor, level: int) -> torch.Tensor:
        """(..., Kc) cos(W t_l, c_{l,k}) / τ."""
        z = F.normalize(self.project(thinking), dim=-1)
        return z @ self.centres[level].T / self.config.temperature

    def loss_terms(self, batch) -> dict[str, torch.Tensor]:
        window = self.window_of(batch)
        b = self.think_forward(window, self.sample_targets(window), plain_logits=self.config.plain_weight > 0)
        head = self.model.get_output_embeddings()
        logits = head(self.code_hidden(b)[b.valid])                                       # (m, P, V)
        rec = F.cross_entropy(logits.flatten(0, 1).float(), b.tokens[b.valid].flatten())
        terms = {"rec": rec}
        align = torch.zeros((), device=rec.device)
        codes = self.sid_table_codes(b.items)[b.valid]                                    # (m, P)
        for level in range(self.levels):
            target = (self.code_cluster if self.config.align_targets == "hard" else self.code_soft_cluster)[
                level, codes[:, level]]                                                   # (m,) labels or (m, Kc)
            term = F.cross_entropy(self.cluster_logits(b.stage_hidden[2 * level][b.valid], level).float(), target)
            terms[f"align_L{level + 1}"] = term.detach()
            align = align + term
        terms["align"] = align
        loss = rec + self.config.align_weight * align
        if self.config.reg_weight > 0:
            terms["interest"], terms["first_step"] = self.first_step_terms(b)
            loss = loss + self.config.reg_weight * (terms["interest"] + terms["first_step"])
        if self.config.plain_weight > 0:
            plain = F.cross_entropy(b.plain_logits[:, :-1].flatten(0, 1).float(), b.plain_labels[:, 1:].flatten(),
                                    ignore_index=-100)
            terms["plain"] = plain
            loss = loss + self.config.plain_weight * plain
        terms["loss"] = loss
        return terms

    def first_step_terms(self, b: Branches) -> tuple[torch.Tensor, torch.Tensor]:
        """InfoNCE of the interest vector v_g against the targets' mean SID embeddings, and 1 - cos(t1, sg(v_g))."""
        items = b.items[b.valid]
        v = self.interest(b.context[b.valid])                                              # (m, H)
        goal = self.model.get_input_embeddings()(b.tokens[b.valid][:, :self.levels]).mean(1).detach()
        sim = F.normalize(v, dim=-1).float() @ F.normalize(goal, dim=-1).float().T / self.config.temperature
        twin = (items[:, None] == items[None, :]) & ~torch.eye(len(items), dtype=torch.bool, device=items.device)
        sim = sim.masked_fill(twin, torch.finfo(sim.dtype).min)          # the same item twice is not a negative
        interest = F.cross_entropy(sim, torch.arange(len(items), device=items.device))
        reg = 1 - F.cosine_similarity(b.stage_hidden[0][b.valid].float(), v.detach().float(), dim=-1).mean()
        return interest, reg

    def sid_table_codes(self, items: torch.Tensor) -> torch.Tensor:
        """SID codes (.., P) of item indices (padding rows give item 0's codes; mask them)."""
        return self.item_tokens[items.clamp(min=0)] - self._token_offsets

    @property
    def _token_offsets(self) -> torch.Tensor:
        return torch.as_tensor(self.vocab.offsets, device=self.item_tokens.device)

    # ------------------------------------------------------------------ inference
    def decode_step(self, model, input_ids, tree, cache, depth):
        """One beam-search step: feed the prompt or each beam's chosen code, then think before the next level."""
        base = model.base_model
        mask, positions = tree.prompt() if depth == 0 else tree.round()
        out = base(input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                   use_cache=True)
        h, cache = out.last_hidden_state[:, -tree.width:], out.past_key_values
        if depth < self.levels:                          # t_{depth+1}: one thinking token per beam
            mask, positions = tree.round()
            out = base(inputs_embeds=self.thinking_input(h, depth), attention_mask=mask, position_ids=positions,
                       past_key_values=cache, use_cache=True)
            h = out.last_hidden_state
        return model.get_output_embeddings()(h), cache

    @torch.no_grad()
    def score_items(self, history: torch.Tensor, candidates: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Brute force: log-probability of each candidate item's SID after one history (T,), thinking included."""
        history = history[-self.config.max_items:].to(self.item_tokens.device)
        out = []
        for lo in range(0, len(candidates), batch_size):
            c = candidates[lo:lo + batch_size].to(history.device)
            b = self.last_branch(self.target_window(history.expand(len(c), -1), c))
            logp = F.log_softmax(self.model.get_output_embeddings()(self.code_hidden(b)[:, 0]).float(), dim=-1)
            out.append(logp.gather(2, b.tokens[:, 0, :, None]).squeeze(2).sum(1))
        return torch.cat(out)

    @torch.no_grad()
    def level_logits(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        b = self.last_branch(self.target_window(inputs, targets))
        return self.model.get_output_embeddings()(self.code_hidden(b)[:, 0])

    @torch.no_grad()
    def thinking_clusters(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced: the cluster each thinking step points to (B, L) and the target's clusters (B, L)."""
        b = self.last_branch(self.target_window(inputs, targets))
        codes = self.sid_table_codes(b.items[:, 0])
        predicted = torch.stack([self.cluster_logits(b.stage_hidden[2 * l][:, 0], l).argmax(-1)
                                 for l in range(self.levels)], dim=1)
        truth = torch.stack([self.code_cluster[l, codes[:, l]] for l in range(self.levels)], dim=1)
        return predicted, truth

    @torch.no_grad()
    def probe_states(self, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Teacher-forced hidden states per level (B, L, H): ``thinking``, the thinking step t_l that predicts code
        l, and ``before``, the state it starts from (the history's last state for l = 1, then the previous code's
        state s_{l-1}): the same model's state with and without the thinking step, for a linear probe."""
        b = self.last_branch(self.target_window(inputs, targets))
        thinking = torch.stack([b.stage_hidden[2 * l][:, 0] for l in range(self.levels)], dim=1)
        before = torch.stack([b.context[:, 0]] + [b.stage_hidden[2 * l - 1][:, 0] for l in range(1, self.levels)],
                             dim=1)
        return {"thinking": thinking, "before": before}

    @torch.no_grad()
    def thinking_attention(self, history: torch.Tensor, target: int) -> np.ndarray:
        """Attention of each thinking step over the history items: (L, layers, heads, T) for one user.

        Teacher-forced on the true target; each history item's weight is the sum over its SID tokens.
        """
        history = history[history >= 0][-self.config.max_items:]
        with eager_attention(self.model):
            b = self.last_branch(self.target_window(history[None], [target]), output_attentions=True)
        P, T = self.tokens_per_item, len(history)
        out = []
        for level in range(self.levels):
            per_layer = [a[0, :, 0, 1:1 + T * P].reshape(a.shape[1], T, P).sum(-1) for a in b.attentions[2 * level]]
            out.append(torch.stack(per_layer).float().cpu().numpy())
        return np.stack(out)


def user_attention(module: S2GR, stage, user: int) -> tuple[np.ndarray, list[int]]:
    """One test user's thinking attention (L, layers, heads, T) on the true target, and the T history items."""
    history = torch.as_tensor(stage.inputs(module.config.max_items)[user])
    att = module.thinking_attention(history, int(stage.targets[user]))
    return att, history[history >= 0].tolist()[-att.shape[-1]:]


def attention_profiles(module: S2GR, stage, genres: list, n_users: int):
    """Mean attention of each thinking step (over layers and heads) across the first ``n_users`` users.

    Returns (L, T) by recency (column 0 = the last item) with the standard error of each
    mean, and per thinking step the mean attention on items that do / do not share a genre with the
    target, with its standard error.
    """
    T, L = module.config.max_items, module.levels
    rows = [[] for _ in range(T)]
    shares, others = [], []
    for u in range(min(len(stage), n_users)):
        a, hist = user_attention(module, stage, u)
        a = a.mean(axis=(1, 2))                                                   # (L, t)
        for back, column in enumerate(a[:, ::-1].T):
            rows[back].append(column)
        target_genres = set(genres[int(stage.targets[u])])
        shared = np.array([bool(target_genres & set(genres[i])) for i in hist])
        shares += list(a[:, shared].T)
        others += list(a[:, ~shared].T)
    mean = np.array([np.mean(r, axis=0) if r else np.full(L, np.nan) for r in rows]).T        # (L, T)
    sem = np.array([np.std(r, axis=0, ddof=1) / np.sqrt(len(r)) if len(r) > 1 else np.zeros(L) for r in rows]).T
    groups = {"shares a genre with the target": shares, "no shared genre": others}
    by_genre = {name: np.mean(g, axis=0) if g else np.zeros(L) for name, g in groups.items()}
    genre_sem = {name: np.std(g, axis=0, ddof=1) / np.sqrt(len(g)) if len(g) > 1 else np.zeros(L)
                 for name, g in groups.items()}
    return mean, sem, by_genre, genre_sem


@torch.no_grad()
def cluster_accuracy(module: S2GR, stage, batch_size: int = 256) -> np.ndarray:
    """Per level: how often the thinking step t_l points to the cluster of the target's level-l code."""
    module.eval()
    hits, total = np.zeros(module.levels), 0
    for x, _, y in stage_batches(stage, module.config.max_items, batch_size, module.item_tokens.device):
        predicted, truth = module.thinking_clusters(x, y)
        hits += (predicted == truth).sum(0).cpu().numpy()
        total += len(y)
    return hits / total


def _rows(hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """hidden (B, S, H) at per-row positions index (B, n) -> (B, n, H)."""
    return hidden.gather(1, index[:, :, None].expand(-1, -1, hidden.shape[-1]))


@contextmanager
def eager_attention(model):
    """Run a block with eager attention (the implementation that returns attention weights)."""
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(previous)
