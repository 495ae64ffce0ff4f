"""Binary rows grouped into scored units: MultiRC's answers by question, ReCoRD's candidates by query."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from agora.data.formats.base import _PairEncoded, _need
from agora.data.formats.encoding import _INT64, _STR, _list, softmax


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
        from agora.data.metrics import compute_metrics

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
        from agora.data.metrics import compute_metrics

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
