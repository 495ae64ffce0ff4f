"""Student models: BORT's pair format, head init, frozen embeddings, optimiser groups, errors."""

import pytest
import torch

from agora.config import ModelConfig, OptimConfig, validate_recipe
from agora.errors import ModelError
from agora.fit.model import bort_config, build_model, load_tokenizer, resolve_location
from agora.data.cards import load_task


def test_bort_shape():
    cfg = bort_config()
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads) == (4, 1024, 768, 8)
    assert cfg.vocab_size == 50265 and cfg.pad_token_id == 1 and cfg.type_vocab_size == 1


def test_bort_pairs_use_a_single_separator_and_survive_export(tiny_bort, tmp_path):
    from transformers import AutoTokenizer

    tok, fmt = load_tokenizer(ModelConfig(name=str(tiny_bort)))
    assert fmt == "single_sep"
    ids = tok("Hello world", "Second one")["input_ids"]
    a, b = (tok(t, add_special_tokens=False)["input_ids"] for t in ("Hello world", "Second one"))
    assert ids == [tok.bos_token_id, *a, tok.eos_token_id, *b, tok.eos_token_id]  # <s> A </s> B </s>
    assert tok.bos_token_id == 0 and tok.eos_token_id == 2
    assert "token_type_ids" not in tok("a", "b")
    tok.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path)("Hello world", "Second one")["input_ids"] == ids
    truncated = tok("word " * 200, "tail", truncation=True, max_length=16)["input_ids"]
    assert len(truncated) == 16 and truncated[-1] == 2


def test_pair_format_can_be_forced(tiny_bort):
    tok, fmt = load_tokenizer(ModelConfig(name=str(tiny_bort), pair_format="tokenizer"))
    assert fmt == "tokenizer"
    a, b = (tok(t, add_special_tokens=False)["input_ids"] for t in ("Hello world", "Second one"))
    assert tok("Hello world", "Second one")["input_ids"] == [0, *a, 2, 2, *b, 2]  # RoBERTa's own <s> A </s></s> B </s>


def test_head_is_fresh_and_labels_are_named(tiny_bort):
    card = load_task("mnli")
    model = build_model(ModelConfig(name=str(tiny_bort), head_init_std=0.02), card, seed=0)
    assert model.config.id2label == {0: "entailment", 1: "neutral", 2: "contradiction"}
    w = model.classifier.weight
    assert w.shape == (3, 32)
    assert 0.01 < w.std().item() < 0.03 and torch.all(model.classifier.bias == 0)
    assert model.training, "ready to train (dropout on)"
    # the encoder's weights are the pretrained ones, not re-initialised
    from transformers import BertModel

    base = BertModel.from_pretrained(tiny_bort)
    assert torch.equal(base.embeddings.word_embeddings.weight, model.bert.embeddings.word_embeddings.weight)


def test_freeze_word_embeddings(tiny_bort):
    model = build_model(ModelConfig(name=str(tiny_bort), freeze_word_embeddings=True), load_task("rte"))
    assert not model.get_input_embeddings().weight.requires_grad
    assert model.classifier.weight.requires_grad


def test_regression_head(tiny_bort):
    model = build_model(ModelConfig(name=str(tiny_bort)), load_task("stsb"))
    assert model.config.num_labels == 1 and model.config.problem_type == "regression"


def test_missing_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match=r"does not exist"):
        load_tokenizer(ModelConfig(name=str(tmp_path / "nope")))
    with pytest.raises(ModelError, match=r"not installed"):
        resolve_location("pkg:no_such_package_xyz/model")


def test_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match=r"cannot load .*amazon/bort.*Hub"):
        load_tokenizer(ModelConfig(name="amazon/bort"))


def test_optimiser_groups_and_lr_scaled_decay(tiny_bort):
    from agora.fit.module import TaskModule

    cfg = validate_recipe({"task": "rte", "model": {"name": str(tiny_bort)}, "optim": {"lr": 0.1, "weight_decay": 2.0}})
    model = build_model(cfg.model, load_task("rte"))
    module = TaskModule(model, load_task("rte"), cfg)

    class _T:
        estimated_stepping_batches = 10

    module._trainer = _T()  # configure_optimizers only reads the step count
    module.trainer = None if False else module.trainer  # noqa: keeps attribute access explicit
    opt = module.configure_optimizers()["optimizer"]
    decay, no_decay = opt.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert all("LayerNorm" in names[id(p)] or names[id(p)].endswith("bias") for p in no_decay["params"])
    assert not any("LayerNorm" in names[id(p)] or names[id(p)].endswith("bias") for p in decay["params"])
    assert decay["weight_decay"] == 2.0 and no_decay["weight_decay"] == 0.0 and opt.defaults["eps"] == 1e-6
    assert opt.defaults["fused"]  # one kernel for all parameters on a CPU (no gradient scaler here)
    # torch's AdamW decay is decoupled and lr-scaled: one step with zero gradient shrinks w by lr*wd
    p = torch.nn.Parameter(torch.ones(3))
    step = torch.optim.AdamW([p], lr=0.1, weight_decay=2.0, eps=1e-6, fused=True)
    p.grad = torch.zeros(3)
    step.step()
    assert torch.allclose(p.detach(), torch.full((3,), 1 - 0.1 * 2.0))


def test_optim_defaults_follow_agora_md():
    opt = OptimConfig()
    assert opt.eps == 1e-6 and opt.betas == (0.9, 0.999)
