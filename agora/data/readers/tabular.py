"""A user's own data in the formats people have: CSV, JSON (lines or one array) and Parquet.

``reader: csv | json | parquet`` in a task card's ``local:`` section. The files are parsed by
``datasets``' own packaged builders (``datasets.load_dataset("csv", data_files=...)``; pandas for
CSV, pyarrow for JSON and Parquet), not by code of ours; ``local.options`` are passed to the
builder (CSV: ``sep``, ``quotechar``, ``encoding``, ...; JSON: ``field``, the key holding the
records). The card's ``columns`` map our fields (``idx``, ``text_a``, ``text_b``, ``label``) to
column names, or to positions with ``header: false`` (CSV). Every column the card names must exist
(the label column only in labelled splits), and an empty text is an error naming the file and the
row: nothing is dropped or filled in silently. Labels are matched by name, through the card's
``labels`` and ``label_values`` (``1`` and ``1.0`` read as ``"1"``, booleans as ``true`` / ``false``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agora.data.cards import LocalSplit, TaskCard
from agora.data.readers.registry import as_idx, check_columns, convert_label, register_reader
from agora.errors import DataError

BUILDERS = ("csv", "json", "parquet")


def as_text(value: Any) -> str:
    """A cell as text: booleans as ``true`` / ``false``, integral floats without ``.0``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _load(builder: str, path: Path, card: TaskCard, cache: str):
    import datasets

    options = dict(card.local.options)
    if builder == "csv" and not card.local.header:
        options.setdefault("header", None)
    try:
        return datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=cache, **options)
    except Exception as err:  # the builder's own parse error, named with the file
        text = str(err).strip().splitlines()
        cause = err.__cause__ or err.__context__
        detail = f"{type(cause).__name__}: {str(cause).strip().splitlines()[0]}" if cause and str(cause).strip() else ""
        raise DataError(
            f"{path}: cannot be read as {builder} ({type(err).__name__}: {text[0] if text else ''}"
            f"{'; ' + detail if detail else ''}). Check the file, or the reader and local.options of task card "
            f"{card.path or card.name}"
        ) from None


def read_table(builder: str, path: Path, spec: LocalSplit, card: TaskCard) -> Iterator[dict]:
    """Rows of one file through ``datasets``' ``builder``; DataError for a missing column or an empty text."""
    with tempfile.TemporaryDirectory(prefix="agora-table-") as cache:  # the rows are cached by the caller
        table = _load(builder, path, card, cache)
        found = list(table.column_names)
        check_columns(path, spec, card, found)
        names: dict[str, str] = {}
        for field, col in (spec.columns or {}).items():
            if isinstance(col, int):
                if not 0 <= col < len(found):
                    raise DataError(f"{path}: the task card {card.path or card.name} reads {field} from column "
                                    f"{col}, but the file has {len(found)} columns {found}")
                names[field] = found[col]
            elif col in found:
                names[field] = col
        if "text_a" not in names:
            raise DataError(f"{path}: the task card {card.path or card.name} maps no column to text_a (local.columns)")
        for position, row in enumerate(table):
            where = f"{path}, row {position + 1}"
            out: dict[str, Any] = {"idx": position, "text_a": None, "text_b": None, "label": None}
            for field in ("text_a", "text_b"):
                if field in names:
                    value = row[names[field]]
                    if value is None:
                        raise DataError(f"{where}: column '{names[field]}' ({field}) is empty; every row needs its text")
                    out[field] = as_text(value)
            if "idx" in names:
                out["idx"] = as_idx(row[names["idx"]], where)
            if "label" in names and row[names["label"]] is not None:
                out["label"] = convert_label(as_text(row[names["label"]]), card, where)
            yield out


def _reader(builder: str):
    def read(path: Path, spec: LocalSplit, card: TaskCard) -> Iterator[dict]:
        return read_table(builder, path, spec, card)

    read.__doc__ = f"A {builder} file through ``datasets.load_dataset({builder!r})``."
    return read


for _builder in BUILDERS:
    register_reader(_builder)(_reader(_builder))
