"""RACE reader: the original per-article directory layout and the hub dataset (``ehovy/race``).

Local layout (Lai et al., 2017): ``race/<split dir>/<level>/<n>.txt`` with split dirs ``train``,
``dev``, ``test`` and levels ``high`` and ``middle``; each file is one JSON object
``{"answers", "options", "questions", "article", "id"}`` holding every question on one article,
``id`` being ``<level><file name>``. Levels are read in the card's order (``local.options.levels``;
RACE-M and RACE-H read one), files in numeric order of their names.

Rows (multiple choice, one per question): ``text_a`` the article; ``choices`` the question with
each option substituted into its ``_`` blank(s) (see :func:`fill_blank`), or appended after the
question when it has no blank; ``label`` the answer letter, by name; ``id``, ``question_idx`` and
``level`` beside them.
The article is what gets truncated, never the question or the option (:mod:`agora.data.formats`).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets

from agora.errors import DataError
from agora.data.readers.registry import convert_label, register_reader
from agora.data.cards import LocalSplit, TaskCard

LEVELS = ("high", "middle")
EXTRA = {"id": datasets.Value("string"), "question_idx": datasets.Value("int64"), "level": datasets.Value("string")}
BLANK = re.compile(r"_+")


def fill_blank(question: str, option: str) -> str:
    """Segment B of one option: the option in the question's ``_`` blank, else after the question.

    A question with k > 1 blanks whose option holds k parts separated by ``;`` (``"soup; medicine"``)
    gets one part per blank; otherwise every blank gets the whole option (our choice).
    """
    parts = BLANK.split(question)
    if len(parts) == 1:
        return f"{question.strip()} {option.strip()}"
    pieces = [p.strip() for p in option.split(";")]
    fills = pieces if len(parts) > 2 and len(pieces) == len(parts) - 1 else [option.strip()] * (len(parts) - 1)
    text = parts[0] + "".join(f" {fill} {rest}" for fill, rest in zip(fills, parts[1:]))
    return " ".join(text.split())


def _natural(path: Path) -> tuple:
    return (int(path.stem), path.name) if path.stem.isdigit() else (float("inf"), path.name)


def article_rows(record: Any, level: str, card: TaskCard, where: str, default_id: str, counter: Iterator[int]) -> Iterator[dict]:
    """The rows of one article record; DataError naming ``where`` and the question for anything off."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object with answers, options, questions, article; got {type(record).__name__}")
    missing = [k for k in ("article", "questions", "options", "answers") if record.get(k) is None]
    if missing:
        raise DataError(f"{where}: missing field(s) {missing} (the record has {sorted(record)})")
    questions, options, answers = record["questions"], record["options"], record["answers"]
    if not (len(questions) == len(options) == len(answers)):
        raise DataError(f"{where}: {len(questions)} questions, {len(options)} option lists and {len(answers)} answers; "
                        "they must match one to one")
    example_id = record.get("id") or default_id
    for q, (question, opts, answer) in enumerate(zip(questions, options, answers)):
        qwhere = f"{where}, question {q} (id {example_id})"
        if not isinstance(opts, list) or len(opts) != card.choices:
            got = len(opts) if isinstance(opts, list) else type(opts).__name__
            raise DataError(f"{qwhere}: {got} options; every {card.name} question has exactly {card.choices}")
        yield {"idx": next(counter), "text_a": record["article"], "choices": [fill_blank(question, str(o)) for o in opts],
               "label": None if answer is None else convert_label(str(answer), card, qwhere),
               "id": example_id, "question_idx": q, "level": level}


def read_race_hub(raw: datasets.Dataset, card: TaskCard, where: str) -> Iterator[dict]:
    """Hub rows are one per question (``example_id``, ``article``, ``question``, ``options``, ``answer``);
    a question's position on its article is counted over consecutive rows of the same ``example_id``."""
    counter = itertools.count()
    previous, position = None, 0
    for number, ex in enumerate(raw):
        rwhere = f"{where}, row {number}"
        example_id = ex.get("example_id")
        level = re.match(r"(high|middle)", str(example_id or ""))
        if level is None:
            raise DataError(f"{rwhere}: example_id {example_id!r} does not start with a level (high/middle)")
        position = position + 1 if example_id == previous else 0
        previous = example_id
        record = {"article": ex.get("article"), "questions": [ex.get("question")], "options": [ex.get("options")],
                  "answers": [ex.get("answer") or None], "id": example_id}
        for row in article_rows(record, level.group(1), card, rwhere, example_id, counter):
            row["question_idx"] = position
            yield row


@register_reader("race", extra_features=EXTRA, hub=read_race_hub)
def read_race(path: Path, spec: LocalSplit, card: TaskCard) -> Iterator[dict]:
    """Walk ``<path>/<level>/*.txt`` (``path`` is the split directory, e.g. ``race/train``)."""
    levels = card.local.options.get("levels", list(LEVELS))
    unknown = sorted(set(levels) - set(LEVELS))
    if unknown:
        raise DataError(f"task card {card.path}: unknown RACE level(s) {unknown}; levels are {list(LEVELS)}")
    if not path.is_dir():
        raise DataError(f"{path}: not a directory; RACE's layout is race/<train|dev|test>/<high|middle>/<n>.txt")
    counter = itertools.count()
    for level in levels:
        folder = path / level
        if not folder.is_dir():
            raise DataError(f"{folder}: missing; RACE's layout is race/<train|dev|test>/<high|middle>/<n>.txt")
        for file in sorted(folder.glob("*.txt"), key=_natural):
            try:
                record = json.loads(file.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise DataError(f"{file}: not valid JSON ({err}); each RACE file is one JSON object "
                                "with answers, options, questions, article, id") from None
            yield from article_rows(record, level, card, str(file), f"{level}{file.name}", counter)
