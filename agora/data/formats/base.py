"""The generic task formats, written once: how rows look, are encoded, batched, scored, written.

Every task card names one format; the core (splits, data module, model, Lightning module, run
dir) calls into it instead of branching on the task.

| format | rows (Arrow columns) | model input | prediction | tasks |
|---|---|---|---|---|
| ``classification`` | idx, text_a[, text_b], label | one sequence | argmax | GLUE, BoolQ, CB, RTE, WiC, WSC, AX-b, AX-g |
| ``regression`` | idx, text_a, text_b, label (float) | one sequence | the score | STS-B |
| ``multiple_choice`` | idx, text_a, choices, label | ``[n_choices, len]`` | argmax over choices | COPA, RACE |
| ``grouped`` | idx, text_a, text_b, label, paragraph_idx, question_idx, answer_idx | one sequence | binary per answer | MultiRC |
| ``entity_cloze`` | idx, text_a, text_b, label, passage_idx, query_idx, entity, answers | one sequence | best candidate per query | ReCoRD |

``idx`` is a unique int64 per row (gathering de-duplicates by it). Where a benchmark's own id is
not unique per row (MultiRC answers, ReCoRD candidates, RACE questions), ``idx`` is the running
row number and the benchmark's ids are kept in their own columns.

Multiple choice: ``text_a`` is the context shared by the options (COPA's premise, RACE's
article) and ``choices`` holds segment B of each option (COPA: connective + alternative; RACE:
the question with the option in its blank). Each (A, B_k) pair is one sequence; a row encodes to
``input_ids`` of shape ``[n_choices, len]`` and batches to ``[batch, n_choices, len]`` for
``AutoModelForMultipleChoice``.

Entity cloze (our choice): ReCoRD is binary per candidate entity, grouped by query. Each row is
(passage, query with the candidate in its ``@placeholder``), labelled 1 when the candidate is one
of the gold answers. A query's prediction is its candidate with the highest probability of 1.
Unlike a multiple-choice encoding with a variable number of padded candidates, batches stay
dense and length-bucketed, and the training rows of a query need not share a batch.

Long contexts: multiple choice, grouped and entity cloze pairs truncate segment A (the article,
paragraph or passage) and never segment B (question, option, answer, query); see
:class:`PairTemplate`.
"""

from __future__ import annotations

import datasets
import numpy as np

from agora.data.cards import TaskCard
from agora.data.formats.encoding import _INT32, _INT64, _STR, PairTemplate, _list, encode_pairs, softmax
from agora.errors import DataError


def find_mistakes(logits: np.ndarray, labels: np.ndarray, regression: bool) -> np.ndarray:
    """Bool mask of mistakes: argmax != gold, or ``|prediction - gold| > 0.5`` for regression
    (docs/method.md, "E, cut in two")."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    if regression:
        return np.abs(logits.reshape(len(labels), -1)[:, 0] - labels) > 0.5
    return logits.argmax(-1) != labels.astype(np.int64)


def log_likelihood(logits: np.ndarray, labels: np.ndarray, regression: bool) -> float:
    """Mean log-likelihood of the gold labels under the model (finer than accuracy: the search breaks
    ties with it): log softmax of the gold class, or minus the squared error for regression."""
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels)
    if regression:
        return float(-np.mean((logits.reshape(len(labels), -1)[:, 0] - labels) ** 2))
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    return float(np.mean(log_probs[np.arange(len(labels)), labels.astype(np.int64)]))


def is_pair(card: TaskCard) -> bool:
    """Whether rows carry a second segment (``text_b``)."""
    if card.format in ("grouped", "entity_cloze") or "text_b" in extra_features(card):
        return True
    local = card.local is not None and "text_b" in card.local.columns
    hub = card.hub is not None and "text_b" in card.hub.columns
    return local or hub or any(
        "text_b" in (s.columns or {}) for s in (card.local.splits.values() if card.local else []) if not isinstance(s, str)
    )


def extra_features(card: TaskCard) -> dict:
    """Columns the card's reader adds beyond its format's own (RACE: id, question_idx, level)."""
    from agora.data.readers import EXTRA_FEATURES

    out: dict = {}
    for reader in (card.local.reader if card.local else None, card.hub.reader if card.hub else None):
        out.update(EXTRA_FEATURES.get(reader or "", {}))
    return out


class Format:
    """Classification (single sentence or pair): argmax over the card's labels."""

    name = "classification"
    model_class = "AutoModelForSequenceClassification"
    group_columns: tuple[str, ...] = ()
    """Columns whose equal values form one scored unit (a MultiRC question, a ReCoRD query)."""

    def whole_groups(self, ds: datasets.Dataset, limit: int) -> int:
        """The smallest row count >= ``limit`` that keeps the last group whole (readers write a
        group's rows together), so ``data.max_*_samples`` never scores half a question."""
        if not self.group_columns or limit >= len(ds) or limit <= 0:
            return min(limit, len(ds))
        cols = ds.select_columns(list(self.group_columns)).with_format("numpy")
        keys = np.stack([np.asarray(cols[c]) for c in self.group_columns], axis=1)
        end = limit
        while end < len(keys) and (keys[end] == keys[limit - 1]).all():
            end += 1
        return end

    # rows
    def features(self, card: TaskCard) -> datasets.Features:
        cols = {"idx": _INT64, "text_a": _STR}
        if is_pair(card):
            cols["text_b"] = _STR
        cols["label"] = datasets.Value("float32" if card.format == "regression" else "int64")
        cols.update(self.own_features())
        cols.update({k: v for k, v in extra_features(card).items() if k not in cols})
        return datasets.Features(cols)

    def own_features(self) -> dict:
        return {}

    def meta_columns(self, card: TaskCard) -> list[str]:
        """Row columns the metric and the prediction rows need, looked up by idx."""
        return list(card.prediction_fields)

    # encoding
    def tokenized_features(self, card: TaskCard, tokenizer) -> datasets.Features | None:
        """Arrow types of the tokenized split (None: let ``datasets`` infer them)."""
        return None

    def encode(self, tokenizer, card: TaskCard, batch: dict[str, list], max_length: int) -> dict[str, list]:
        texts = (batch["text_a"], batch["text_b"]) if is_pair(card) else (batch["text_a"],)
        enc = tokenizer(*texts, truncation=True, max_length=max_length)
        out = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
        out["length"] = [len(ids) for ids in enc["input_ids"]]
        return out

    # outputs
    def predict(self, card: TaskCard, logits: np.ndarray) -> np.ndarray:
        return logits.argmax(-1)

    def score(self, card: TaskCard, logits: np.ndarray, labels: np.ndarray, meta: dict | None) -> dict[str, float]:
        from agora.data.metrics import compute_metrics

        preds = self.predict(card, logits)
        return compute_metrics(card.metrics, predictions=preds.tolist(), references=labels.tolist())

    def prediction_rows(self, card: TaskCard, out: dict[str, np.ndarray], meta: dict | None, with_gold: bool) -> list[dict]:
        """``{"idx", "label": <label name>, "probs": [...]}`` per row, ordered by idx (dev: ``gold``)."""
        probs = softmax(out["logits"])
        rows = []
        for i, idx in enumerate(out["idx"]):
            row = {"idx": int(idx), "label": card.labels[int(probs[i].argmax())],
                   "probs": [round(float(p), 6) for p in probs[i]]}
            if with_gold:
                row["gold"] = card.labels[int(out["labels"][i])]
            rows.append(row)
        return rows


class Regression(Format):
    """One score per row (STS-B): MSE loss, Pearson / Spearman."""

    name = "regression"

    def predict(self, card, logits):
        return logits[:, 0]

    def prediction_rows(self, card, out, meta, with_gold):
        rows = []
        for i, idx in enumerate(out["idx"]):
            row = {"idx": int(idx), "label": float(out["logits"][i, 0])}
            if with_gold:
                row["gold"] = float(out["labels"][i])
            rows.append(row)
        return rows


class _PairEncoded(Format):
    """Pairs whose segment A is a long context: A is truncated, B never; A tokenized once per batch."""

    def tokenized_features(self, card, tokenizer):
        cols = {"idx": _INT64, "label": _INT64, "input_ids": _list(_INT32)}
        if "token_type_ids" in tokenizer.model_input_names and PairTemplate.of(tokenizer).types is not None:
            cols["token_type_ids"] = _list(datasets.Value("int8"))
        cols["length"] = _INT32
        return datasets.Features(cols)

    def encode(self, tokenizer, card, batch, max_length):
        ids, types = encode_pairs(tokenizer, batch["text_a"], batch["text_b"], max_length)
        out = {"input_ids": ids, "length": [len(i) for i in ids]}
        if types is not None:
            out["token_type_ids"] = types
        return out


def _need(meta: dict | None, column: str, card: TaskCard) -> list:
    if meta is None or column not in meta:
        raise DataError(
            f"task {card.name} (format {card.format}) needs the '{column}' column of each row to score "
            "and write predictions; pass the split's rows (TaskDataModule.meta)"
        )
    return meta[column]
