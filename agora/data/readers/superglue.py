"""SuperGLUE readers: the original JSONL files and the hub dataset (``aps/super_glue``).

One builder per task turns one record, as the JSONL file holds it, into rows of the task's
format (:mod:`agora.data.formats`); the hub readers turn hub examples into the same rows, so a model
sees identical inputs from either source. Every problem raises :class:`~agora.errors.DataError`
naming the file, the line and the record's idx (or the hub dataset and row).

Inputs (our choices where the SuperGLUE paper leaves them open):

- BoolQ, CB, RTE, AX-b, AX-g: the generic ``jsonl`` reader maps fields to ``text_a`` /
  ``text_b`` as the card says (BoolQ: passage, question).
- WiC: ``"<word>: <sentence 1>"`` and ``<sentence 2>``, the target word's occurrence in each
  sentence marked ``*like this*`` from the given offsets. (The original BORT code dropped the
  word; here the model sees the word and where it occurs.)
- WSC: the text with span 1 (the noun phrase) marked ``*...*`` and span 2 (the pronoun) marked
  ``#...#`` at their word indices (the nearest occurrence where an index is off), and as segment B
  ``"<span 2> refers to <span 1>"``.
- COPA: multiple choice over the two alternatives; the context is the premise and each option
  is the question turned into its connective, ``"because ..."`` (cause) or ``"so ..."``
  (effect), followed by the alternative with its first letter lower-cased (not for "I").
- MultiRC: one row per answer option, ``text_a`` the paragraph, ``text_b`` the question and the
  answer; the paragraph, question and answer idx are kept in their own columns.
- ReCoRD: one row per (query, candidate entity): ``text_a`` the passage (``@highlight`` lines
  shown as ``- ...``), ``text_b`` the query with the candidate in ``@placeholder``; candidates
  are the passage's distinct entity mentions; label 1 when the candidate is a gold answer.

Labels are mapped by name: JSON booleans read as ``"true"`` / ``"false"`` and integers as their
digits, then through the card's ``label_values`` and ``labels``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import datasets

from agora.errors import DataError
from agora.data.readers.registry import convert_label, register_reader
from agora.data.cards import LocalSplit, TaskCard

Counter = Iterator[int]
PAIR = {"text_b": datasets.Value("string")}
"""Rows of readers that build a second segment the card's columns do not name (WiC, WSC)."""


# -- shared helpers ---------------------------------------------------------------------------------


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, record) for every non-blank line; DataError for a line that is not a JSON object."""
    with open(path, encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}, line {number}: not valid JSON ({err.msg} at column {err.colno})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}")
            yield number, record


def need(record: Any, key: str, where: str) -> Any:
    """``record[key]``, or a DataError naming the record and the missing field."""
    if not isinstance(record, dict) or key not in record or record[key] is None:
        have = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise DataError(f"{where}: missing field '{key}' (the record has {have})")
    return record[key]


def as_int(value: Any, where: str, what: str = "idx") -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise DataError(f"{where}: {what} {value!r} is not an integer")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {what} {value!r} is not an integer") from None


def label_text(value: Any) -> str:
    """A JSON label as text: booleans as ``true`` / ``false``, numbers as digits."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def class_label(record: dict, card: TaskCard, where: str) -> int | None:
    """The record's label id (by name), or None when the record has no label."""
    value = record.get("label")
    return None if value is None else convert_label(label_text(value), card, where)


def choice_label(value: Any, card: TaskCard, where: str) -> int | None:
    """A multiple-choice label: the option's name (RACE ``A``..``D``) or its position (COPA ``0`` / ``1``)."""
    if value is None:
        return None
    if card.labels:
        return convert_label(label_text(value), card, where)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < (card.choices or 0):
        return value
    raise DataError(f"{where}: unknown label {value!r} for task {card.name}; expected an option position 0..{(card.choices or 0) - 1}")


def _where(path: Path, line: int, record: dict) -> str:
    idx = record.get("idx")
    return f"{path}, line {line}" + (f" (idx {idx})" if idx is not None else "")


def _jsonl_reader(build: Callable) -> Callable:
    """A local reader from a record builder ``build(record, card, where, counter) -> rows``."""

    def read(path: Path, spec: LocalSplit, card: TaskCard) -> Iterator[dict]:
        counter = itertools.count()
        for line, record in iter_jsonl(path):
            yield from build(record, card, _where(path, line, record), counter)

    return read


def _hub_label(raw: datasets.Dataset, value: Any, card: TaskCard) -> Any:
    """A hub label as the JSONL file would hold it: the (mapped) class name, or the raw value."""
    if value is None or value == -1:
        return None
    feature = raw.features.get("label")
    if card.labels and isinstance(feature, datasets.ClassLabel):
        name = feature.names[value]
        return card.hub.label_names.get(name, name)
    return value


def _hub_reader(to_record: Callable, build: Callable) -> Callable:
    """A hub reader: each hub example becomes a JSONL-shaped record, then goes through ``build``."""

    def read(raw: datasets.Dataset, card: TaskCard, where: str) -> Iterator[dict]:
        counter = itertools.count()
        for number, example in enumerate(raw):
            record = to_record(example)
            record["label"] = _hub_label(raw, example.get("label"), card)
            yield from build(record, card, f"{where}, row {number} (idx {record.get('idx')})", counter)

    return read


# -- generic pair / single classification (BoolQ, CB, RTE, AX-b, AX-g) ------------------------------


@register_reader("jsonl")
def read_jsonl(path: Path, spec: LocalSplit, card: TaskCard) -> Iterator[dict]:
    """One JSON object per line; the card's ``columns`` map our fields to the record's keys."""
    columns = spec.columns or {}
    if "text_a" not in columns:
        raise DataError(f"{path}: the task card {card.path} maps no field to text_a (local.columns)")
    for position, (line, record) in enumerate(iter_jsonl(path)):
        where = _where(path, line, record)
        label_key = columns.get("label")
        yield {
            "idx": as_int(need(record, columns["idx"], where), where) if "idx" in columns else position,
            "text_a": need(record, columns["text_a"], where),
            "text_b": need(record, columns["text_b"], where) if "text_b" in columns else None,
            "label": None if record.get(label_key) is None else convert_label(label_text(record[label_key]), card, where),
        }


# -- WiC --------------------------------------------------------------------------------------------


def mark_span(text: str, start: Any, end: Any, where: str, what: str) -> str:
    """``text`` with ``text[start:end]`` wrapped in asterisks."""
    start, end = as_int(start, where, f"{what} start"), as_int(end, where, f"{what} end")
    if not 0 <= start < end <= len(text):
        raise DataError(f"{where}: {what} offsets {start}..{end} fall outside the sentence ({len(text)} characters)")
    return f"{text[:start]}*{text[start:end]}*{text[end:]}"


def wic_rows(record: dict, card: TaskCard, where: str, counter: Counter) -> Iterator[dict]:
    word = need(record, "word", where)
    first = mark_span(need(record, "sentence1", where), need(record, "start1", where), need(record, "end1", where), where, "start1/end1")
    second = mark_span(need(record, "sentence2", where), need(record, "start2", where), need(record, "end2", where), where, "start2/end2")
    yield {"idx": as_int(need(record, "idx", where), where), "text_a": f"{word}: {first}", "text_b": second,
           "label": class_label(record, card, where)}


def _wic_record(example: dict) -> dict:
    return dict(example)


register_reader("wic", extra_features=PAIR, hub=_hub_reader(_wic_record, wic_rows))(_jsonl_reader(wic_rows))


# -- WSC --------------------------------------------------------------------------------------------


def _bare(word: str) -> str:
    return "".join(ch for ch in word.lower() if ch.isalnum())


def locate_span(words: list[str], index: int, span_text: str) -> int:
    """``index`` when the span's first word is there, else the nearest word index where it is.

    A few official WSC records point one word off (val idx 42 marks ``use`` for ``it``); possessives
    (``Emma's`` for ``Emma``) count as there. Our choice: trust the text over the index.
    """
    first = _bare(span_text.split()[0]) if span_text.split() else ""

    def there(i: int) -> bool:
        return 0 <= i < len(words) and _bare(words[i]).startswith(first)

    if not first or there(index):
        return index
    for distance in range(1, len(words)):
        for i in (index - distance, index + distance):
            if there(i):
                return i
    return index


def mark_words(text: str, spans: list[tuple[int, str, str]], where: str) -> str:
    """Wrap each span (word index, span text, marker) of the whitespace-split text in its marker."""
    words = text.split()
    for index, span_text, marker in spans:
        n = max(1, len(span_text.split()))
        if not 0 <= index <= len(words) - n:
            raise DataError(f"{where}: span '{span_text}' at word {index} falls outside the text ({len(words)} words)")
        index = min(locate_span(words, index, span_text), len(words) - n)
        words[index] = marker + words[index]
        words[index + n - 1] = words[index + n - 1] + marker
    return " ".join(words)


def wsc_rows(record: dict, card: TaskCard, where: str, counter: Counter) -> Iterator[dict]:
    target = need(record, "target", where)
    span1, span2 = need(target, "span1_text", where + ", target"), need(target, "span2_text", where + ", target")
    index1 = as_int(need(target, "span1_index", where + ", target"), where, "span1_index")
    index2 = as_int(need(target, "span2_index", where + ", target"), where, "span2_index")
    text = mark_words(need(record, "text", where), [(index1, span1, "*"), (index2, span2, "#")], where)
    yield {"idx": as_int(need(record, "idx", where), where), "text_a": text, "text_b": f"{span2} refers to {span1}",
           "label": class_label(record, card, where)}


def _wsc_record(example: dict) -> dict:
    target = {k: example.get(k) for k in ("span1_index", "span2_index", "span1_text", "span2_text")}
    return {"text": example.get("text"), "target": target, "idx": example.get("idx")}


register_reader("wsc", extra_features=PAIR, hub=_hub_reader(_wsc_record, wsc_rows))(_jsonl_reader(wsc_rows))


# -- COPA -------------------------------------------------------------------------------------------

CONNECTIVES = {"cause": "because", "effect": "so"}


def lower_first(text: str) -> str:
    """``It was fragile.`` -> ``it was fragile.``; ``I ...`` and ``I'm ...`` stay as they are."""
    first = text.split(" ", 1)[0]
    if first == "I" or first.startswith("I'") or not text:
        return text
    return text[0].lower() + text[1:]


def copa_rows(record: dict, card: TaskCard, where: str, counter: Counter) -> Iterator[dict]:
    question = need(record, "question", where)
    if question not in CONNECTIVES:
        raise DataError(f"{where}: question '{question}' is neither 'cause' nor 'effect'")
    options = [need(record, key, where) for key in ("choice1", "choice2")]
    yield {"idx": as_int(need(record, "idx", where), where), "text_a": need(record, "premise", where),
           "choices": [f"{CONNECTIVES[question]} {lower_first(o)}" for o in options],
           "label": choice_label(record.get("label"), card, where)}


register_reader("copa", hub=_hub_reader(dict, copa_rows))(_jsonl_reader(copa_rows))


# -- MultiRC ----------------------------------------------------------------------------------------


def multirc_rows(record: dict, card: TaskCard, where: str, counter: Counter) -> Iterator[dict]:
    paragraph = as_int(need(record, "idx", where), where)
    passage = need(record, "passage", where)
    text = need(passage, "text", where + ", passage")
    for qn, question in enumerate(need(passage, "questions", where + ", passage")):
        qwhere = f"{where}, question {qn}" + (f" (idx {question['idx']})" if isinstance(question, dict) and "idx" in question else "")
        q_idx = as_int(need(question, "idx", qwhere), qwhere)
        q_text = need(question, "question", qwhere)
        for an, answer in enumerate(need(question, "answers", qwhere)):
            awhere = f"{qwhere}, answer {an}"
            yield {"idx": next(counter), "text_a": text, "text_b": f"{q_text} {need(answer, 'text', awhere)}",
                   "label": class_label(answer, card, awhere), "paragraph_idx": paragraph, "question_idx": q_idx,
                   "answer_idx": as_int(need(answer, "idx", awhere), awhere)}


def _multirc_hub(raw: datasets.Dataset, card: TaskCard, where: str) -> Iterator[dict]:
    """The hub has one example per answer, its ids in ``idx: {paragraph, question, answer}``."""
    counter = itertools.count()
    for number, ex in enumerate(raw):
        ids = ex.get("idx") or {}
        record = {"idx": ids.get("paragraph"), "passage": {"text": ex.get("paragraph"), "questions": [
            {"idx": ids.get("question"), "question": ex.get("question"),
             "answers": [{"idx": ids.get("answer"), "text": ex.get("answer"), "label": _hub_label(raw, ex.get("label"), card)}]}]}}
        yield from multirc_rows(record, card, f"{where}, row {number}", counter)


register_reader("multirc", hub=_multirc_hub)(_jsonl_reader(multirc_rows))


# -- ReCoRD -----------------------------------------------------------------------------------------


def record_query_rows(passage: str, passage_idx: int, entities: list[str], query: str, query_idx: int,
                      answers: list[str] | None, card: TaskCard, where: str, counter: Counter) -> Iterator[dict]:
    """One row per distinct candidate entity of a query (``answers`` None: unlabelled)."""
    if "@placeholder" not in query:
        raise DataError(f"{where}: the query has no @placeholder: {query!r}")
    candidates = list(dict.fromkeys(e.strip() for e in entities if e and e.strip()))
    if not candidates:
        raise DataError(f"{where}: the passage has no entities to fill the query's @placeholder with")
    context = passage.replace("@highlight\n", "- ")
    gold = set(answers or [])
    yes, no = (card.label_id(name) for name in ("true", "false")) if answers is not None else (None, None)
    for entity in candidates:
        yield {"idx": next(counter), "text_a": context, "text_b": query.replace("@placeholder", entity),
               "label": None if answers is None else (yes if entity in gold else no),
               "passage_idx": passage_idx, "query_idx": query_idx, "entity": entity, "answers": list(answers or [])}


def record_rows(record: dict, card: TaskCard, where: str, counter: Counter) -> Iterator[dict]:
    passage_idx = as_int(need(record, "idx", where), where)
    passage = need(record, "passage", where)
    text = need(passage, "text", where + ", passage")
    entities = []
    for n, span in enumerate(need(passage, "entities", where + ", passage")):
        ewhere = f"{where}, entity {n}"
        start, end = as_int(need(span, "start", ewhere), ewhere, "start"), as_int(need(span, "end", ewhere), ewhere, "end")
        if not 0 <= start <= end < len(text):
            raise DataError(f"{ewhere}: offsets {start}..{end} fall outside the passage ({len(text)} characters)")
        entities.append(text[start : end + 1])  # ReCoRD's end offset is inclusive
    for qn, qa in enumerate(need(record, "qas", where)):
        qwhere = f"{where}, query {qn}" + (f" (idx {qa['idx']})" if isinstance(qa, dict) and "idx" in qa else "")
        answers = None
        if isinstance(qa, dict) and qa.get("answers") is not None:
            answers = [need(a, "text", f"{qwhere}, answer {an}") for an, a in enumerate(qa["answers"])]
        yield from record_query_rows(text, passage_idx, entities, need(qa, "query", qwhere),
                                     as_int(need(qa, "idx", qwhere), qwhere), answers, card, qwhere, counter)


def _record_hub(raw: datasets.Dataset, card: TaskCard, where: str) -> Iterator[dict]:
    """The hub has one example per query: entity texts listed, answers as texts (none on test)."""
    counter = itertools.count()
    for number, ex in enumerate(raw):
        ids = ex.get("idx") or {}
        qwhere = f"{where}, row {number}"
        answers = list(ex.get("answers") or []) or None
        yield from record_query_rows(need(ex, "passage", qwhere), as_int(ids.get("passage"), qwhere),
                                     list(need(ex, "entities", qwhere)), need(ex, "query", qwhere),
                                     as_int(ids.get("query"), qwhere), answers, card, qwhere, counter)


register_reader("record", hub=_record_hub)(_jsonl_reader(record_rows))
