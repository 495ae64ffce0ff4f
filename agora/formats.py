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

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np

from agora.errors import DataError, ModelError
from agora.tasks import TaskCard

_INT64, _INT32, _STR = datasets.Value("int64"), datasets.Value("int32"), datasets.Value("string")


def _list(feature) -> Any:
    return datasets.List(feature) if hasattr(datasets, "List") else datasets.Sequence(feature)  # datasets < 4


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
    from agora.readers import EXTRA_FEATURES

    out: dict = {}
    for reader in (card.local.reader if card.local else None, card.hub.reader if card.hub else None):
        out.update(EXTRA_FEATURES.get(reader or "", {}))
    return out


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


# -- the formats ------------------------------------------------------------------------------------


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
        from agora.metrics import compute_metrics

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
        from agora.metrics import compute_metrics

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
            row = {"idx": int(idx), **{f: _plain(v[i]) for f, v in fields.items()},
                   "label": self.label_out(card, int(preds[i]))}
            if with_gold:
                row["gold"] = self.label_out(card, int(out["labels"][i]))
            rows.append(row)
        return rows


class Grouped(_PairEncoded):
    """MultiRC: one binary row per answer option, grouped by (paragraph, question).

    Segment A is the paragraph, B the question and the answer. Metrics: ``f1a`` over all answer
    rows, ``em`` per question. Prediction rows: one line per paragraph, nested as SuperGLUE
    wants, ``{"idx": P, "passage": {"questions": [{"idx": Q, "answers": [{"idx": A, "label": 0|1}]}]}}``
    (dev: each answer adds ``gold``).
    """

    name = "grouped"
    KEYS = ("paragraph_idx", "question_idx", "answer_idx")
    group_columns = ("paragraph_idx", "question_idx")

    def own_features(self):
        return {k: _INT64 for k in self.KEYS}

    def meta_columns(self, card):
        return list(self.KEYS)

    def score(self, card, logits, labels, meta):
        from agora.metrics import compute_metrics

        groups = list(zip(_need(meta, "paragraph_idx", card), _need(meta, "question_idx", card)))
        preds = self.predict(card, logits)
        return compute_metrics(card.metrics, preds.tolist(), labels.astype(np.int64).tolist(), groups=groups)

    def prediction_rows(self, card, out, meta, with_gold):
        preds = self.predict(card, out["logits"])
        p_ids, q_ids, a_ids = (_need(meta, k, card) for k in self.KEYS)
        passages: dict[int, dict[int, list]] = defaultdict(dict)
        for i in range(len(out["idx"])):
            answer = {"idx": int(a_ids[i]), "label": int(preds[i])}
            if with_gold:
                answer["gold"] = int(out["labels"][i])
            passages[int(p_ids[i])].setdefault(int(q_ids[i]), []).append(answer)
        return [
            {"idx": p, "passage": {"questions": [{"idx": q, "answers": answers} for q, answers in questions.items()]}}
            for p, questions in sorted(passages.items())
        ]


class EntityCloze(_PairEncoded):
    """ReCoRD: one binary row per (query, candidate entity); the best candidate answers the query.

    Segment A is the passage, B the query with the candidate in its placeholder. Metrics:
    ``record_f1`` / ``record_em`` of each query's best candidate against its gold answers
    (max over answers, mean over queries). Prediction rows ``{"idx": <query idx>, "label":
    "<entity>"}`` ordered by query idx (dev: ``gold``, the list of answers).
    """

    name = "entity_cloze"
    group_columns = ("query_idx",)

    def own_features(self):
        return {"passage_idx": _INT64, "query_idx": _INT64, "entity": _STR, "answers": _list(_STR)}

    def meta_columns(self, card):
        return ["query_idx", "entity", "answers"]

    def best_per_query(self, card, logits, meta) -> dict[int, tuple[str, list[str]]]:
        """query idx -> (its best candidate, its gold answers), in query-idx order."""
        yes = softmax(logits)[:, 1]
        queries, entities, answers = (_need(meta, k, card) for k in ("query_idx", "entity", "answers"))
        best: dict[int, tuple[float, str, list[str]]] = {}
        for i, q in enumerate(queries):
            q = int(q)
            if q not in best or yes[i] > best[q][0]:
                best[q] = (float(yes[i]), entities[i], list(answers[i]))
        return {q: (best[q][1], best[q][2]) for q in sorted(best)}

    def score(self, card, logits, labels, meta):
        from agora.metrics import compute_metrics

        best = self.best_per_query(card, logits, meta)
        return compute_metrics(card.metrics, [b[0] for b in best.values()], [b[1] for b in best.values()])

    def prediction_rows(self, card, out, meta, with_gold):
        rows = []
        for q, (entity, golds) in self.best_per_query(card, out["logits"], meta).items():
            row = {"idx": q, "label": entity}
            if with_gold:
                row["gold"] = golds
            rows.append(row)
        return rows


def _need(meta: dict | None, column: str, card: TaskCard) -> list:
    if meta is None or column not in meta:
        raise DataError(
            f"task {card.name} (format {card.format}) needs the '{column}' column of each row to score "
            "and write predictions; pass the split's rows (TaskDataModule.meta)"
        )
    return meta[column]


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


FORMATS: dict[str, Format] = {
    f.name: f for f in (Format(), Regression(), MultipleChoice(), Grouped(), EntityCloze())
}


def format_of(card: TaskCard) -> Format:
    return FORMATS[card.format]
