"""Multiple choice (COPA, RACE): one row per question, one sequence per option."""

from __future__ import annotations

import datasets
import numpy as np

from agora.data.cards import TaskCard
from agora.data.formats.base import _PairEncoded, _need, extra_features
from agora.data.formats.encoding import _INT64, _STR, _list, encode_pairs
from agora.files import plain


class MultipleChoice(_PairEncoded):
    """One row per question: context ``text_a``, segment B of each option in ``choices``.

    Loss: cross-entropy over the options. Metrics: the card's (``accuracy``; ``race`` adds
    accuracy per level from the ``level`` column). Prediction rows:
    ``{"idx", <prediction_fields>, "label"}``, the label being the option's name when the card
    names them (RACE ``A``..``D``) and its position otherwise (COPA ``0`` / ``1``).
    """

    name = "multiple_choice"
    model_class = "AutoModelForMultipleChoice"

    def features(self, card):
        cols = {"idx": _INT64, "text_a": _STR, "choices": _list(_STR), "label": _INT64}
        cols.update(extra_features(card))
        return datasets.Features(cols)

    def meta_columns(self, card):
        return list(card.prediction_fields) + (["level"] if "race" in card.metrics else [])

    def tokenized_features(self, card, tokenizer):
        feats = super().tokenized_features(card, tokenizer)
        return datasets.Features({k: (_list(v) if k in ("input_ids", "token_type_ids") else v) for k, v in feats.items()})

    def encode(self, tokenizer, card, batch, max_length):
        a_texts, b_texts, sizes = [], [], []
        for context, options in zip(batch["text_a"], batch["choices"]):
            a_texts += [context] * len(options)
            b_texts += list(options)
            sizes.append(len(options))
        ids, types = encode_pairs(tokenizer, a_texts, b_texts, max_length)
        out: dict[str, list] = {"input_ids": [], "length": []}
        if types is not None:
            out["token_type_ids"] = []
        start = 0
        for n in sizes:
            out["input_ids"].append(ids[start : start + n])
            out["length"].append(max(len(i) for i in ids[start : start + n]))
            if types is not None:
                out["token_type_ids"].append(types[start : start + n])
            start += n
        return out

    def score(self, card, logits, labels, meta):
        from agora.data.metrics import compute_metrics

        extra = {}
        if "race" in card.metrics:
            extra["levels"] = _need(meta, "level", card)
        preds = self.predict(card, logits)
        return compute_metrics(card.metrics, preds.tolist(), labels.astype(np.int64).tolist(), **extra)

    @staticmethod
    def label_out(card: TaskCard, k: int):
        return card.labels[k] if card.labels else k

    def prediction_rows(self, card, out, meta, with_gold):
        preds = self.predict(card, out["logits"])
        fields = {f: _need(meta, f, card) for f in card.prediction_fields}
        rows = []
        for i, idx in enumerate(out["idx"]):
            row = {"idx": int(idx), **{f: plain(v[i]) for f, v in fields.items()},
                   "label": self.label_out(card, int(preds[i]))}
            if with_gold:
                row["gold"] = self.label_out(card, int(out["labels"][i]))
            rows.append(row)
        return rows
