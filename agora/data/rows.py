"""Rows as the text segments G and the teacher read, and back: ``(text_a,)``, ``(text_a, text_b)``, or
for multiple choice ``(context, "", option_1, ..., option_k)``."""

from __future__ import annotations

from agora.data.cards import TaskCard
from agora.data.formats import is_pair

Segments = tuple[str, ...]


def inputs_of(card: TaskCard, rows: dict[str, list]) -> list[tuple[str, ...]]:
    """Rows as text segments: ``(text_a,)``, ``(text_a, text_b)``, or for multiple choice
    ``(context, "", option_1, ..., option_k)`` (the teacher's ``(context, question, options)`` with
    the question folded into each option, as the student reads it)."""
    if card.format == "multiple_choice":
        return [(a, "", *options) for a, options in zip(rows["text_a"], rows["choices"])]
    if "text_b" in rows:
        return list(zip(rows["text_a"], rows["text_b"]))
    return [(a,) for a in rows["text_a"]]


def rows_of(card: TaskCard, idx, inputs, labels) -> dict[str, list]:
    """The inverse of :func:`inputs_of`: row columns (idx, text columns, label) for new inputs."""
    rows: dict[str, list] = {"idx": [int(i) for i in idx]}
    if card.format == "multiple_choice":
        rows["text_a"] = [seg[0] for seg in inputs]
        rows["choices"] = [list(seg[2:]) for seg in inputs]
    else:
        rows["text_a"] = [seg[0] for seg in inputs]
        if is_pair(card):
            rows["text_b"] = [seg[1] for seg in inputs]
    rows["label"] = [float(x) if card.format == "regression" else int(x) for x in labels]
    return rows
