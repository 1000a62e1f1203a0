"""S²GR-mini: latent thinking steps, alignment to codebook clusters, beam search with thinking."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minirec import metrics
from minirec.data.dataset import leave_one_out
from minirec.models.baselines import Popularity
from minirec.models.generative import GenerativeRecommender, GenRecConfig, level_accuracy
from minirec.profiles import get_profile, seed_everything, with_recipe
from minirec.reasoning.s2gr import S2GR, S2GRConfig, cluster_accuracy, codeword_clusters, soft_cluster_targets
from minirec.sids.semantic_ids import SIDTable
from minirec.training import SequenceDataModule, fit

SMALL = dict(hidden_size=32, intermediate_size=64, head_dim=8)


@pytest.fixture(scope="module")
def table(synthetic_sids):
    return synthetic_sids


def make(synthetic, table, seed=0, **overrides):
    torch.manual_seed(seed)
    config = S2GRConfig(**dict(dict(max_items=6, text_vocab_size=50, n_clusters=2, backbone_overrides=SMALL),
                               **overrides))
    model = S2GR(config, table, synthetic.items["text"].tolist()).eval()
    with torch.no_grad():                      # large level vectors, so a wrong wiring cannot hide
        model.level_vectors.normal_(0, 1)
        if model.feedback_norm is not None:    # and feedback of the same size
            model.feedback_norm.weight.fill_(1.0)
    return model


def naive_log_prob(model: S2GR, history: torch.Tensor, item: int) -> float:
    """The definition, with no cache and no mask tricks: grow the input embeddings one step at a time."""
    base, embed = model.model.base_model, model.model.get_input_embeddings()
    head = model.model.get_output_embeddings()
    ids, mask, _ = model.encode_histories(history[None])
    x = embed(ids[mask > 0])[None]                                        # <bos> + history tokens
    tokens = model.item_tokens[item]
    total = 0.0
    for level in range(model.tokens_per_item):
        if level < model.levels:                                         # think before each semantic code
            h = base(inputs_embeds=x).last_hidden_state[:, -1:]
            x = torch.cat([x, model.thinking_input(h, level)], dim=1)
        logp = F.log_softmax(head(base(inputs_embeds=x).last_hidden_state[0, -1]), dim=-1)
        total += float(logp[tokens[level]])
        x = torch.cat([x, embed(tokens[level])[None, None]], dim=1)
    return total


@pytest.mark.parametrize("thinking", ["latent", "pause"])
@torch.no_grad()
def test_beam_search_with_thinking_equals_brute_force(synthetic, table, thinking):
    model = make(synthetic, table, thinking=thinking)
    split = leave_one_out(synthetic)
    history = torch.as_tensor(split.test.histories[0][-6:])
    brute = model.score_items(history, torch.arange(table.n_items))
    for item in (0, 17, 101):                                             # brute force = the definition
        assert brute[item].item() == pytest.approx(naive_log_prob(model, history, item), abs=1e-4)
    exclude = torch.as_tensor(history[:3])[None]
    items, scores = model.beam_search(history[None], exclude, 20, beam_width=table.n_items)
    brute[exclude[0]] = -torch.inf
    expected = torch.sort(brute, descending=True, stable=True)
    assert items[0].tolist() == expected.indices[:20].tolist()
    torch.testing.assert_close(scores[0], expected.values[:20], rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_training_branches_compute_what_inference_computes(synthetic, table):
    # all branches of one window at once (4-D mask, shared cache) = each target scored alone after its prefix, by
    # the step-by-step definition (naive_log_prob: no cache, no mask, no think_forward) and by score_items
    model = make(synthetic, table)
    split = leave_one_out(synthetic)
    window = torch.as_tensor(np.r_[split.test.histories[1][-6:], split.test.targets[1]])
    b = model.think_forward(window[None])
    logp = F.log_softmax(model.model.get_output_embeddings()(model.code_hidden(b)), dim=-1)
    per_branch = logp.gather(3, b.tokens[..., None]).squeeze(3).sum(-1)[0]           # targets 1..6
    for j in (1, 3, 6):
        assert per_branch[j - 1].item() == pytest.approx(naive_log_prob(model, window[:j], int(window[j])), abs=1e-4)
        alone = model.score_items(window[:j], window[j:j + 1])[0]
        assert per_branch[j - 1].item() == pytest.approx(alone.item(), abs=1e-4)
    # a random subset of targets per row gives the same numbers as all of them
    targets = torch.tensor([[2, 5]])
    sub = model.think_forward(window[None], targets)
    torch.testing.assert_close(model.code_hidden(sub)[0], model.code_hidden(b)[0, [1, 4]], rtol=1e-4, atol=1e-5)


def test_latent_feedback_is_real(synthetic, table):
    model = make(synthetic, table)
    h = torch.randn(1, 1, 32, requires_grad=True)
    x = model.thinking_input(h, 0)
    assert not torch.equal(x, model.thinking_input(h + 0.5, 0))                 # input follows the hidden state
    torch.testing.assert_close(x, h + model.level_vectors[0])                  # raw feedback by default


def test_feedback_norm_feeds_back_at_the_embedding_scale(synthetic, table):
    h = torch.randn(1, 1, 32)
    normed = make(synthetic, table, feedback_norm=True)
    # a 50x longer hidden state gives the same input, and the input still follows the hidden state's direction
    torch.testing.assert_close(normed.thinking_input(50 * h, 0), normed.thinking_input(h, 0), rtol=1e-4, atol=1e-5)
    assert not torch.equal(normed.thinking_input(h, 0), normed.thinking_input(h + 0.5, 0))


def test_thinking_output_and_gradient_follow_the_fed_back_state(synthetic, table):
    model = make(synthetic, table)
    ids, mask, pos = model.encode_histories(torch.tensor([[3, 4, 5]]))
    out = model.model.base_model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
    prev = out.last_hidden_state[:, -1:].detach().requires_grad_(True)

    def think(previous):
        cache = type(out.past_key_values)()
        o = model.model.base_model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                                   use_cache=True)
        step = model.model.base_model(inputs_embeds=model.thinking_input(previous, 0), position_ids=pos[:, -1:] + 1,
                                      attention_mask=torch.ones(1, ids.shape[1] + 1, dtype=torch.long),
                                      past_key_values=o.past_key_values, use_cache=True)
        return model.model.get_output_embeddings()(step.last_hidden_state)

    logits = think(prev)
    assert not torch.allclose(logits, think(prev + torch.randn_like(prev)))
    logits.sum().backward()
    assert prev.grad is not None and prev.grad.abs().sum() > 0                  # gradients reach it


def test_training_loss_reaches_level_vectors_and_projection(synthetic, table):
    model = make(synthetic, table)
    model.train()
    split = leave_one_out(synthetic)
    window = torch.as_tensor(np.stack([s[-7:] for s in split.train[:4]]))
    model.zero_grad()
    model.loss((window[:, :-1], window[:, 1:])).backward()
    assert model.level_vectors.grad.abs().sum() > 0 and model.project.weight.grad.abs().sum() > 0


def test_pause_token_ignores_the_previous_hidden_state(synthetic, table):
    h = torch.randn(1, 1, 32)
    pause = make(synthetic, table, thinking="pause")
    torch.testing.assert_close(pause.thinking_input(h, 1), pause.thinking_input(h + 3.0, 1))


def test_s2gr_learns_aligns_and_roundtrips(synthetic, table, tmp_path):
    split = leave_one_out(synthetic)
    seed_everything(0)
    config = S2GRConfig(max_items=10, beam_width=20, text_vocab_size=50, n_clusters=2,
                        backbone_overrides=dict(hidden_size=64, intermediate_size=128, head_dim=16))
    model = S2GR(config, table, synthetic.items["text"].tolist())
    dm = SequenceDataModule(split, max_len=10)
    profile = with_recipe(get_profile("smoke"), "generative", max_epochs=8, patience=8, batch_size=32, lr=3e-3,
                          warmup_steps=20, horizon_steps=2000)
    result = fit(model, dm, profile, tmp_path / "s2gr-test")
    align = [row["train_align"] for row in result.curves]
    assert align[-1] < 0.5 * align[0]                                   # the alignment loss falls
    assert cluster_accuracy(model, split.test).min() > 0.75             # chance: 1/2 per level
    s2gr = metrics.evaluate(model, split.test, max_len=10)
    pop = metrics.evaluate(Popularity(split), split.test)
    assert s2gr["ndcg@10"].mean() > pop["ndcg@10"].mean() + 0.15
    acc = level_accuracy(model, split.test)
    assert acc.shape == (3,) and acc[0] > 0.5
    model.save_pretrained(tmp_path / "saved")
    again = S2GR.from_pretrained(tmp_path / "saved", sid_table=table).eval()
    x = torch.tensor(np.stack([s[-10:] for s in split.test.histories[:5]]))
    assert torch.equal(model.eval().beam_search(x, None, 5)[0], again.beam_search(x, None, 5)[0])
    with pytest.raises(ValueError, match="holds a S2GR"):
        GenerativeRecommender.from_pretrained(tmp_path / "saved")


def test_variants_run_and_bad_settings_are_clear_errors(synthetic, table):
    split = leave_one_out(synthetic)
    window = torch.as_tensor(np.stack([s[-7:] for s in split.train[:4]]))
    batch = (window[:, :-1], window[:, 1:])
    no_align = make(synthetic, table, align_weight=0.0).train()
    terms = no_align.loss_terms(batch)
    torch.testing.assert_close(terms["loss"], terms["rec"])
    mixed = make(synthetic, table, think_targets=2, plain_weight=1.0).train()       # the mixed-form ablation
    terms = mixed.loss_terms(batch)
    torch.testing.assert_close(terms["loss"], terms["rec"] + terms["align"] + terms["plain"])
    pause = make(synthetic, table, thinking="pause").train()
    pause.loss(batch).backward()
    items, _ = pause.eval().beam_search(window[:, :-1], None, 5)
    assert ((items >= 0) & (items < table.n_items)).all()
    with pytest.raises(ValueError, match="thinking must be one of"):
        make(synthetic, table, thinking="telepathy")
    with pytest.raises(ValueError, match="n_clusters"):
        make(synthetic, table, n_clusters=9)
    with pytest.raises(ValueError, match="align_targets must be one of"):
        make(synthetic, table, align_targets="fuzzy")
    with pytest.raises(ValueError, match="level_init must be one of"):
        make(synthetic, table, level_init="huge")
    bare = SIDTable(table.codes, table.codebook_size, table.settings)                  # no codebook vectors
    with pytest.raises(ValueError, match="has none"):
        S2GR(S2GRConfig(), bare, ["x"])


def test_first_step_regulariser(synthetic, table):
    split = leave_one_out(synthetic)
    window = torch.as_tensor(np.stack([s[-7:] for s in split.train[:8]]))
    batch = (window[:, :-1], window[:, 1:])
    assert make(synthetic, table).interest is None                       # off by default: no extra weights
    model = make(synthetic, table, reg_weight=0.5).train()
    terms = model.loss_terms(batch)
    torch.testing.assert_close(terms["loss"], terms["rec"] + terms["align"]
                               + 0.5 * (terms["interest"] + terms["first_step"]))
    terms["first_step"].backward()                                       # 1 - cos(t1, stopgrad(v_g)):
    assert model.interest.weight.grad is None or not model.interest.weight.grad.any()   # v_g is not moved
    assert model.level_vectors.grad.abs().sum() > 0                      # t1 is
    # the interest vector learns to point at the target's SID embeddings (InfoNCE falls)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        optimiser.zero_grad()
        t = model.loss_terms(batch)
        first = first if first is not None else t["interest"].item()
        (t["interest"] + t["first_step"]).backward()
        optimiser.step()
    assert t["interest"].item() < 0.5 * first and t["first_step"].item() < 0.5


def test_codeword_clusters_group_nearby_codewords():
    rng = np.random.default_rng(0)
    books = np.concatenate([rng.normal(0, 0.1, (3, 4, 5)) + 5, rng.normal(0, 0.1, (3, 4, 5)) - 5], axis=1)
    assign, centres = codeword_clusters(books, 2)
    assert assign.shape == (3, 8) and centres.shape == (3, 2, 5)
    for level in assign:
        assert len(set(level[:4])) == 1 and len(set(level[4:])) == 1 and level[0] != level[4]


def test_the_default_is_the_method_every_target_thinks_and_no_plain_loss(synthetic, table):
    assert S2GRConfig().think_targets is None and S2GRConfig().plain_weight == 0.0
    split = leave_one_out(synthetic)
    window = torch.as_tensor(np.stack([s[-7:] for s in split.train[:4]]))
    model = make(synthetic, table).train()
    b = model.think_forward(window, model.sample_targets(window))
    real = window >= 0
    assert int(b.valid.sum()) == int((real & (real.long().cumsum(1) > 1)).sum())    # every target but the first item
    assert "plain" not in model.loss_terms((window[:, :-1], window[:, 1:]))


def test_soft_cluster_targets_are_distributions_peaked_at_the_hard_label():
    rng = np.random.default_rng(0)
    codebooks = rng.normal(size=(3, 16, 8))
    assign, centres = codeword_clusters(codebooks, 4)
    q = soft_cluster_targets(codebooks, centres, 0.1)
    assert q.shape == (3, 16, 4) and np.allclose(q.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(q.argmax(-1), assign)                   # the nearest centre is the k-means label
    flatter = soft_cluster_targets(codebooks, centres, 10.0)
    assert flatter.max(-1).mean() < q.max(-1).mean()                      # a higher temperature spreads the mass
    with pytest.raises(ValueError, match="positive"):
        soft_cluster_targets(codebooks, centres, 0.0)


def test_soft_alignment_trains_and_differs_from_hard(synthetic, table):
    split = leave_one_out(synthetic)
    window = torch.as_tensor(np.stack([s[-7:] for s in split.train[:4]]))
    batch = (window[:, :-1], window[:, 1:])
    hard = make(synthetic, table).train().loss_terms(batch)
    soft_model = make(synthetic, table, align_targets="soft", target_temperature=1.0).train()
    soft = soft_model.loss_terms(batch)
    torch.testing.assert_close(soft["rec"], hard["rec"])                 # same weights, same recommendation loss
    assert torch.isfinite(soft["align"]) and not torch.isclose(soft["align"], hard["align"])
    soft["loss"].backward()
    assert soft_model.project.weight.grad.abs().sum() > 0


def test_level_vectors_can_start_at_a_hidden_states_scale(synthetic, table):
    torch.manual_seed(0)
    base = dict(max_items=6, text_vocab_size=50, n_clusters=2, backbone_overrides=SMALL)
    small = S2GR(S2GRConfig(**base), table, synthetic.items["text"].tolist())
    hidden = S2GR(S2GRConfig(**base, level_init="hidden"), table, synthetic.items["text"].tolist())
    assert small.level_vectors.std().item() < 0.1 < 0.5 < hidden.level_vectors.std().item()


@torch.no_grad()
def test_alignment_loss_reads_the_thinking_position_of_each_level(synthetic, table):
    """L_align at level l is the cross-entropy of the cluster head on t_l's hidden state (not s_l's), computed
    here from scratch by growing the input embeddings one step at a time."""
    model = make(synthetic, table)
    base, embed = model.model.base_model, model.model.get_input_embeddings()
    history, target = torch.tensor([3]), 7
    ids, mask, _ = model.encode_histories(history[None])
    x = embed(ids[mask > 0])[None]
    codes = table.codes[target]
    for level in range(model.levels):
        h = base(inputs_embeds=x).last_hidden_state[:, -1:]
        x = torch.cat([x, model.thinking_input(h, level)], dim=1)
        thinking = base(inputs_embeds=x).last_hidden_state[0, -1]           # the output at t_l
        expected = F.cross_entropy(model.cluster_logits(thinking[None], level).float(),
                                   model.code_cluster[level, codes[level]][None])
        x = torch.cat([x, embed(model.item_tokens[target][level])[None, None]], dim=1)
        terms = model.loss_terms((history[None], torch.tensor([[target]])))
        assert terms[f"align_L{level + 1}"].item() == pytest.approx(expected.item(), abs=1e-4), level
        code_state = base(inputs_embeds=x).last_hidden_state[0, -1]          # s_l: must not be what is read
        wrong = F.cross_entropy(model.cluster_logits(code_state[None], level).float(),
                                model.code_cluster[level, codes[level]][None])
        assert abs(wrong.item() - expected.item()) > 1e-3


def test_probe_states_are_the_states_that_predict_each_code(synthetic, table):
    # thinking t_l is the state the code-l logits are read from; "before" is the state it starts from: the history's
    # last state for level 1, the previous code's state after
    model = make(synthetic, table)
    split = leave_one_out(synthetic)
    x = torch.as_tensor(np.stack([h[-6:] for h in split.test.histories[:3]]))
    y = torch.as_tensor(split.test.targets[:3])
    states = model.probe_states(x, y)
    b = model.last_branch(model.target_window(x, y))
    torch.testing.assert_close(states["thinking"], model.code_hidden(b)[:, 0, :model.levels])
    torch.testing.assert_close(states["before"][:, 0], b.context[:, 0])
    torch.testing.assert_close(states["before"][:, 1], b.stage_hidden[1][:, 0])
    # TIGER-mini's plain states: the hidden states whose logits are level_logits
    tiger = GenerativeRecommender(GenRecConfig(max_items=6, text_vocab_size=50, backbone_overrides=SMALL), table).eval()
    plain = tiger.code_states(x, y)
    torch.testing.assert_close(tiger.model.get_output_embeddings()(plain), tiger.level_logits(x, y))
