"""GLUE's TSV layout: tab-separated, no quoting, optional header, BOM and CRLF tolerated."""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from pathlib import Path

from agora.data.cards import LocalSplit, TaskCard
from agora.data.readers.registry import as_idx, check_columns, convert_label, register_reader
from agora.errors import DataError

csv.field_size_limit(sys.maxsize)


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
        if header is not None:
            check_columns(path, spec, card, header)
        for field, col in columns.items():
            if isinstance(col, int):
                positions[field] = col
            elif header is None:
                raise DataError(f"{path}: column '{col}' is named but the task card says the file has no header")
            elif col in header:
                positions[field] = header.index(col)
        if "text_a" not in positions:
            raise DataError(f"{path}: the task card {card.path} maps no column to text_a (local.columns)")
        width = len(header) if header else None
        for position, row in enumerate(rows):
            line += 1
            if not row or row == [""]:
                continue
            where = f"{path}, line {line}"
            if width is not None and len(row) < width:
                raise DataError(f"{where}: {len(row)} columns, the header has {width}")
            short = [f"{field} (column {pos})" for field, pos in positions.items() if pos >= len(row)]
            if short:
                raise DataError(f"{where}: {len(row)} columns, but the task card {card.path} reads {', '.join(short)}")
            out = {
                "idx": as_idx(row[positions["idx"]], where) if "idx" in positions else position,
                "text_a": row[positions["text_a"]],
                "text_b": row[positions["text_b"]] if "text_b" in positions else None,
                "label": None,
            }
            if "label" in positions:
                out["label"] = convert_label(row[positions["label"]], card, where)
            yield out
