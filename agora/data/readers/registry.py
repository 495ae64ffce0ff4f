"""The registry of readers, and the label conversion every reader shares.

A reader is a generator ``reader(path, split_spec, card) -> Iterator[dict]`` yielding
``{"idx", "text_a", "text_b", "label"}``; it raises :class:`~agora.errors.DataError` naming the
file and the line for anything that does not fit the card. Rows are streamed into Arrow by
``datasets`` and never held in memory as Python objects. The readers register themselves when
:mod:`agora.data.readers` is imported.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from agora.errors import DataError
from agora.data.cards import LocalSplit, TaskCard

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


def check_columns(path: Path, spec: LocalSplit, card: TaskCard, found: list[str]) -> None:
    """Every column the card names for this split must be among ``found`` (the file's header or
    columns): a DataError names the file, each missing column, the field it feeds and what was found.
    The label column may be absent only from a split that needs no labels (test)."""
    missing = [(field, col) for field, col in (spec.columns or {}).items()
               if isinstance(col, str) and col not in found and (field != "label" or spec._labelled)]
    if missing:
        named = ", ".join(f"'{col}' (for {field})" for field, col in missing)
        raise DataError(
            f"{path}: column{'s' if len(missing) > 1 else ''} {named} not found; the file has {found}. "
            f"Task card {card.path or card.name} names {'them' if len(missing) > 1 else 'it'} in local.columns: "
            "fix the file's header, or the card's columns"
        )


def convert_label(raw: str, card: TaskCard, where: str):
    """Raw label text -> id (classification) or float (regression); DataError if unknown."""
    raw = raw.strip()
    if card.format == "regression":
        try:
            value = float(raw)
        except ValueError:
            raise DataError(f"{where}: label '{raw}' is not a number (task {card.name} is a regression task)") from None
        if not math.isfinite(value):
            raise DataError(f"{where}: label '{raw}' is not a finite number; a regression label must be finite: "
                            "fix the row, or drop it")
        return value
    try:
        return card.label_id(raw)
    except (KeyError, ValueError):
        allowed = list(card.labels or []) + list(card.label_values)
        raise DataError(
            f"{where}: unknown label '{raw}' for task {card.name}; expected one of {allowed}. "
            "Fix the file, or the task card's 'labels' / 'label_values'."
        ) from None


def as_idx(value: Any, where: str) -> int:
    """An idx column's value as an int (``7``, ``"7"``, ``7.0``); DataError naming the row otherwise."""
    if isinstance(value, bool) or value is None:
        raise DataError(f"{where}: idx {value!r} is not an integer")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: idx {value!r} is not an integer") from None
    if not number.is_integer():
        raise DataError(f"{where}: idx {value!r} is not an integer")
    return int(number)
