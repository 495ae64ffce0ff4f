"""The last layer computing only the first token: same logits, same gradients, same export."""

import pytest
import torch
from transformers import (BertConfig, BertForMultipleChoice, BertForSequenceClassification, DistilBertConfig,
                          DistilBertForSequenceClassification, RobertaConfig, RobertaForSequenceClassification)

from agora.fit.first_token import first_token_last_layer

SMALL = dict(vocab_size=120, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=37,
             hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=64)


def _batch(shape, pad_rows=(0, 2)):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 120, shape, generator=g)
    mask = torch.ones_like(ids)
    for r in pad_rows:
        mask[r, ..., -4:] = 0
    return ids, mask


@pytest.mark.parametrize("make, shape", [
    (lambda: BertForSequenceClassification(BertConfig(num_labels=3, **SMALL)), (4, 12)),
    (lambda: BertForSequenceClassification(BertConfig(num_labels=1, problem_type="regression", **SMALL)), (4, 12)),
    (lambda: BertForMultipleChoice(BertConfig(**SMALL)), (4, 3, 12)),
    (lambda: RobertaForSequenceClassification(RobertaConfig(num_labels=2, pad_token_id=1, **SMALL)), (4, 12)),
], ids=["bert", "bert-regression", "bert-multiple-choice", "roberta"])
def test_same_logits_and_gradients(make, shape):
    torch.manual_seed(0)
    full = make()
    fast = make()
    fast.load_state_dict(full.state_dict())
    assert first_token_last_layer(fast)
    ids, mask = _batch(shape)
    for model in (full, fast):
        model.train()  # dropout is 0: train mode is deterministic
        model.zero_grad()
        out = model(input_ids=ids, attention_mask=mask)
        out.logits.float().pow(2).sum().backward()
    torch.testing.assert_close(fast(input_ids=ids, attention_mask=mask).logits,
                               full(input_ids=ids, attention_mask=mask).logits, atol=1e-5, rtol=1e-5)
    grads = {n: p.grad for n, p in full.named_parameters() if p.grad is not None}
    for name, param in fast.named_parameters():
        if name in grads:
            torch.testing.assert_close(param.grad, grads[name], atol=1e-5, rtol=1e-4, msg=name)
    # the parameters and their names are untouched: the export is the usual model
    assert list(fast.state_dict()) == list(full.state_dict())


def test_padding_of_the_first_row_is_respected():
    """A mask that is ignored would change the first row's logits and not the others'."""
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(num_labels=2, initializer_range=0.5, **SMALL)).eval()
    ids, mask = _batch((2, 10), pad_rows=(0,))
    reference = model(input_ids=ids, attention_mask=mask).logits
    assert first_token_last_layer(model)
    torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).logits, reference, atol=1e-5, rtol=1e-5)
    unmasked = model(input_ids=ids).logits
    assert not torch.allclose(unmasked[0], reference[0], atol=1e-3)  # the mask matters here


def test_other_heads_are_left_alone():
    model = DistilBertForSequenceClassification(DistilBertConfig(vocab_size=120, dim=32, n_layers=2, n_heads=4,
                                                                 hidden_dim=37))
    forwards = [layer.forward for layer in model.distilbert.transformer.layer]
    assert not first_token_last_layer(model)
    assert [layer.forward for layer in model.distilbert.transformer.layer] == forwards
