"""Readers for the original benchmark file layouts. Each yields rows as dicts of our fields.

A reader is a generator ``reader(path, split_spec, card) -> Iterator[dict]`` yielding
``{"idx", "text_a", "text_b", "label"}``; it raises :class:`~agora.errors.DataError` naming the
file and the line for anything that does not fit the card. Rows are streamed into Arrow by
``datasets`` and never held in memory as Python objects.
"""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from agora.errors import DataError
from agora.tasks import LocalSplit, TaskCard

csv.field_size_limit(sys.maxsize)

Reader = Callable[[Path, LocalSplit, TaskCard], Iterator[dict]]
READERS: dict[str, Reader] = {}
HUB_READERS: dict[str, Callable] = {}
"""name -> ``fn(examples, card, where) -> Iterator[dict]``: hub examples (dicts) to rows."""
EXTRA_FEATURES: dict[str, dict] = {}
"""name -> extra Arrow columns its rows carry beyond the format's own (RACE: id, level, ...)."""


def register_reader(name: str, extra_features: dict | None = None, hub: Callable | None = None):
    """Register a local reader (and optionally its hub counterpart and the extra columns it adds)."""

    def wrap(fn: Reader) -> Reader:
        READERS[name] = fn
        if extra_features:
            EXTRA_FEATURES[name] = dict(extra_features)
        if hub is not None:
            HUB_READERS[name] = hub
        return fn

    return wrap


def convert_label(raw: str, card: TaskCard, where: str):
    """Raw label text -> id (classification) or float (regression); DataError if unknown."""
    raw = raw.strip()
    if card.format == "regression":
        try:
            value = float(raw)
        except ValueError:
            raise DataError(f"{where}: label '{raw}' is not a number (task {card.name} is a regression task)") from None
        if math.isnan(value):
            raise DataError(f"{where}: label is NaN")
        return value
    try:
        return card.label_id(raw)
    except (KeyError, ValueError):
        allowed = list(card.labels or []) + list(card.label_values)
        raise DataError(
            f"{where}: unknown label '{raw}' for task {card.name}; expected one of {allowed}. "
            "Fix the file, or the task card's 'labels' / 'label_values'."
        ) from None


@register_reader("tsv")
def read_tsv(path: Path, spec: LocalSplit, card: TaskCard, encoding: str = "utf-8-sig") -> Iterator[dict]:
    """GLUE TSV: tab-separated, no quoting (quotes are text), optional header, BOM and CRLF tolerated."""
    columns = spec.columns or {}
    with open(path, encoding=encoding, newline="") as handle:
        rows = csv.reader(handle, delimiter="\t", quotechar=None)
        positions: dict[str, int] = {}
        header: list[str] | None = None
        line = 0
        if spec.header:
            header = [h.strip() for h in next(rows, [])]
            line = 1
        for field, col in columns.items():
            if isinstance(col, int):
                positions[field] = col
            elif header is None:
                raise DataError(f"{path}: column '{col}' is named but the task card says the file has no header")
            elif col in header:
                positions[field] = header.index(col)
        if "text_a" not in positions:
            raise DataError(
                f"{path}: text column '{columns.get('text_a')}' not found in header {header}; "
                f"the task card {card.path} expects the original GLUE layout"
            )
        width = len(header) if header else None
        for position, row in enumerate(rows):
            line += 1
            if not row or row == [""]:
                continue
            where = f"{path}, line {line}"
            if width is not None and len(row) < width:
                raise DataError(f"{where}: {len(row)} columns, the header has {width}")
            out = {
                "idx": int(row[positions["idx"]]) if "idx" in positions else position,
                "text_a": row[positions["text_a"]],
                "text_b": row[positions["text_b"]] if "text_b" in positions else None,
                "label": None,
            }
            if "label" in positions:
                out["label"] = convert_label(row[positions["label"]], card, where)
            yield out


# Readers of the SuperGLUE JSONL and RACE directory layouts register themselves on import.
from agora import race, superglue  # noqa: E402,F401
