"""Token-level helpers shared by the formats: a tokenizer's pair template (the context truncated, never
the question), pairs encoded with a context tokenized once, batches padded to their longest row."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np

from agora.errors import DataError, ModelError

_INT64, _INT32, _STR = datasets.Value("int64"), datasets.Value("int32"), datasets.Value("string")


def _list(feature) -> Any:
    return datasets.List(feature) if hasattr(datasets, "List") else datasets.Sequence(feature)  # datasets < 4


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(-1, keepdims=True)


# -- pair encoding with the context truncated, never the question ------------------------------------


@dataclass(frozen=True)
class PairTemplate:
    """Where a tokenizer puts its special tokens around a pair: ``prefix A middle B suffix``.

    Read off the tokenizer itself (BORT ``<s> A </s> B </s>``, RoBERTa ``<s> A </s></s> B </s>``,
    BERT ``[CLS] A [SEP] B [SEP]`` with token types), so segments tokenized once without special
    tokens can be assembled into exactly what ``tokenizer(a, b, truncation="only_first")`` gives.
    This lets a context shared by several rows (a RACE article and its 4 options, a ReCoRD passage
    and its candidates) be tokenized once.
    """

    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...]
    types: tuple[tuple[int, ...], int, tuple[int, ...], int, tuple[int, ...]] | None = None
    """Token types of (prefix, each A token, middle, each B token, suffix); None without types."""

    @property
    def num_special(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)

    @classmethod
    def of(cls, tokenizer) -> "PairTemplate":
        a_text, b_text = "hello there", "world"
        full = tokenizer(a_text, b_text)
        a = tokenizer(a_text, add_special_tokens=False)["input_ids"]
        b = tokenizer(b_text, add_special_tokens=False)["input_ids"]
        ids = list(full["input_ids"])
        p = _find(ids, a, 0)
        q = _find(ids, b, p + len(a)) if p >= 0 else -1
        if p < 0 or q < 0:
            raise ModelError(f"cannot read the pair template of tokenizer '{tokenizer.name_or_path}' ({ids})")
        types = None
        if "token_type_ids" in full and "token_type_ids" in tokenizer.model_input_names:
            tt = list(full["token_type_ids"])
            types = (tuple(tt[:p]), tt[p], tuple(tt[p + len(a) : q]), tt[q], tuple(tt[q + len(b) :]))
        template = cls(tuple(ids[:p]), tuple(ids[p + len(a) : q]), tuple(ids[q + len(b) :]), types)
        check = tokenizer("one two three", "four five")["input_ids"]
        a2 = tokenizer("one two three", add_special_tokens=False)["input_ids"]
        b2 = tokenizer("four five", add_special_tokens=False)["input_ids"]
        if template.assemble(a2, b2, 10_000)[0] != list(check):
            raise ModelError(f"the pair template of tokenizer '{tokenizer.name_or_path}' is not prefix A middle B suffix")
        return template

    def assemble(self, a: list[int], b: list[int], max_length: int) -> tuple[list[int], list[int] | None]:
        """``prefix A middle B suffix`` cut to ``max_length`` by dropping the end of A only.

        B is cut (from its end) only when B alone does not fit, which no shipped task reaches at
        its recipe's ``max_length``.
        """
        room = max_length - self.num_special - len(b)
        if room < 0:
            b, room = b[: len(b) + room], 0
        a = a[:room]
        ids = [*self.prefix, *a, *self.middle, *b, *self.suffix]
        if self.types is None:
            return ids, None
        tp, ta, tm, tb, ts = self.types
        return ids, [*tp, *([ta] * len(a)), *tm, *([tb] * len(b)), *ts]


def _find(seq: list[int], sub: list[int], start: int) -> int:
    for i in range(start, len(seq) - len(sub) + 1):
        if seq[i : i + len(sub)] == sub:
            return i
    return -1


def encode_pairs(tokenizer, a_texts: list[str], b_texts: list[str], max_length: int) -> tuple[list, list | None]:
    """Token ids (and types) of each (A, B) pair, truncating A only; repeated A texts tokenized once."""
    template = PairTemplate.of(tokenizer)
    unique = list(dict.fromkeys(a_texts))
    a_ids = dict(zip(unique, tokenizer(unique, add_special_tokens=False, verbose=False)["input_ids"]))
    b_ids = tokenizer(list(b_texts), add_special_tokens=False, verbose=False)["input_ids"] if b_texts else []
    ids, types = [], []
    for a, b in zip(a_texts, b_ids):
        i, t = template.assemble(a_ids[a], b, max_length)
        ids.append(i)
        types.append(t)
    return ids, (types if template.types is not None else None)


# -- batching ---------------------------------------------------------------------------------------


def pad_token_columns(rows: list[dict], pad_token_id: int) -> dict:
    """``input_ids`` (and ``token_type_ids``) padded to the longest sequence, plus the attention mask.

    Rows hold one sequence (``[len]``) or one per option (``[n_choices, len]``); the batch is
    ``[batch, len]`` or ``[batch, n_choices, len]``. The mask is 1 on every stored token.
    """
    import torch

    first = rows[0]["input_ids"]
    nested = len(first) > 0 and isinstance(first[0], (list, tuple, np.ndarray))
    seqs = [[r["input_ids"]] for r in rows] if not nested else [list(r["input_ids"]) for r in rows]
    n_choices = max(len(s) for s in seqs)
    if nested and any(len(s) != n_choices for s in seqs):
        raise DataError(f"a batch mixes rows with different numbers of options ({sorted({len(s) for s in seqs})})")
    width = max(len(c) for s in seqs for c in s)
    shape = (len(rows), n_choices, width)
    ids = np.full(shape, pad_token_id, dtype=np.int64)
    mask = np.zeros(shape, dtype=np.int64)
    for i, s in enumerate(seqs):
        for j, c in enumerate(s):
            ids[i, j, : len(c)] = c
            mask[i, j, : len(c)] = 1
    out = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in rows[0]:
        types = np.zeros(shape, dtype=np.int64)
        tseqs = [[r["token_type_ids"]] for r in rows] if not nested else [list(r["token_type_ids"]) for r in rows]
        for i, s in enumerate(tseqs):
            for j, c in enumerate(s):
                types[i, j, : len(c)] = c
        out["token_type_ids"] = types
    if not nested:
        out = {k: v[:, 0] for k, v in out.items()}
    return {k: torch.from_numpy(v) for k, v in out.items()}
