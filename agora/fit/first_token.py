"""The last encoder layer computes only the token the head reads (exact, about 15% less compute).

A sequence-classification or multiple-choice head of BERT and RoBERTa reads one position of the
last layer: the first token (``[CLS]`` / ``<s>``, through the pooler or the classification
head). Every other position of the last layer is computed and thrown away. In that layer only
the keys and values need every token; the query, the attention output, the residual, the
LayerNorms and the feed-forward block need the first token alone. For BORT (4 layers, hidden
1024, FFN 768) that is about 16% of the training FLOPs of every step, forward and backward.

:func:`first_token_last_layer` installs that computation on the model's last layer: a forward on
the layer instance (the class, the parameters and their names are untouched, so
``save_pretrained`` exports the usual model, which computes every position and gives the same
logits). Before it is kept, the patched model is checked against the unpatched one on a random
batch with padding (eval mode, logits within 1e-4); a model whose layout is not the one expected
is left as it is. Dropout draws fewer random numbers in the last layer, so a training run is
statistically, not bitwise, the same as without it; evaluation is the same.

Switch: ``model.first_token_last_layer`` (default true).
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator

import torch

HEADS = ("BertForSequenceClassification", "BertForMultipleChoice",
         "RobertaForSequenceClassification", "RobertaForMultipleChoice")
"""Heads that read the first token of the last layer and nothing else."""


def _encoder_layers(model):
    base = getattr(model, model.base_model_prefix, None)
    encoder = getattr(base, "encoder", None)
    return getattr(encoder, "layer", None)


def _fits(layer) -> bool:
    attn = getattr(getattr(layer, "attention", None), "self", None)
    return (all(hasattr(attn, name) for name in ("query", "key", "value", "dropout", "attention_head_size", "scaling"))
            and hasattr(layer, "feed_forward_chunk") and hasattr(layer.attention, "output")
            and not getattr(layer, "is_decoder", False) and not getattr(layer, "add_cross_attention", False))


def _first_token_forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                         *args, **kwargs) -> torch.Tensor:
    """BertLayer / RobertaLayer forward for the first position only: ``[B, L, H] -> [B, 1, H]``."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.bert.modeling_bert import eager_attention_forward

    attn = self.attention.self
    batch, length, _ = hidden_states.shape
    size = attn.attention_head_size
    first = hidden_states[:, :1]
    query = attn.query(first).view(batch, 1, -1, size).transpose(1, 2)
    key = attn.key(hidden_states).view(batch, length, -1, size).transpose(1, 2)
    value = attn.value(hidden_states).view(batch, length, -1, size).transpose(1, 2)
    if attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[-2] != 1:
        attention_mask = attention_mask[:, :, :1]
    interface = ALL_ATTENTION_FUNCTIONS.get_interface(attn.config._attn_implementation, eager_attention_forward)
    out, _ = interface(attn, query, key, value, attention_mask,
                       dropout=attn.dropout.p if attn.training else 0.0, scaling=attn.scaling)
    out = out.reshape(batch, 1, -1).contiguous()
    return self.feed_forward_chunk(self.attention.output(out, first))


def _probe(model) -> dict[str, torch.Tensor]:
    config = model.config
    generator = torch.Generator().manual_seed(0)
    low = 3 if config.vocab_size > 8 else 0
    shape = (2, 2, 9) if type(model).__name__.endswith("MultipleChoice") else (2, 9)
    ids = torch.randint(low, config.vocab_size, shape, generator=generator)
    mask = torch.ones_like(ids)
    mask[0, ..., -3:] = 0  # padding in the first row: the first token's query must see the mask
    return {"input_ids": ids, "attention_mask": mask}


def first_token_last_layer(model) -> bool:
    """Make the model's last layer compute only the first token, if the model is of a kind where that
    is exact (:data:`HEADS`) and a check on a random batch agrees. Returns whether it was installed."""
    layers = _encoder_layers(model)
    if type(model).__name__ not in HEADS or not layers or not _fits(layers[-1]):
        return False
    last = layers[-1]
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in _probe(model).items()}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            full = model(**batch).logits.float()
            last.forward = types.MethodType(_first_token_forward, last)
            fast = model(**batch).logits.float()
        ok = torch.allclose(full, fast, atol=1e-4, rtol=1e-4)
    except Exception:  # a layout this code does not know: keep the model as it is
        ok = False
    if not ok:
        last.__dict__.pop("forward", None)
    model.train(was_training)
    return ok


@contextlib.contextmanager
def full_last_layer(model) -> Iterator[None]:
    """Inside the block the last layer computes every position again (the pool's one teacher pass reads
    them all for its embeddings, :mod:`agora.method.generators.nearest`); a no-op where nothing is installed."""
    layers = _encoder_layers(model)
    patched = layers[-1].__dict__.pop("forward", None) if layers else None
    try:
        yield
    finally:
        if patched is not None:
            layers[-1].forward = patched
