"""Writing a benchmark file from a run's predictions, and checking any such file.

:func:`render` turns prediction rows (the run-dir contract, ``predictions/<split>.jsonl``) into
the exact text the leaderboard wants. :func:`check_text` reads a file's text back, whoever wrote
it, and lists every problem: header, line endings, row count, every idx exactly once, every label
in the allowed vocabulary (its JSON type included), SuperGLUE rows sorted by idx. ``submit``
checks what it is about to zip with the same function that ``submit --check`` uses.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict

from agora.submission.spec import GLUE_HEADER, Expected, FileSpec

SHOWN = 5
"""Problems of one kind listed per file before "... and N more"."""


class Problems:
    """Collects a file's problems, at most :data:`SHOWN` of each kind, with a count of the rest."""

    def __init__(self, file: str, skip: frozenset[str] = frozenset()):
        self.file = file
        self.skip = skip
        self._shown: dict[str, list[str]] = defaultdict(list)
        self._more: dict[str, int] = defaultdict(int)

    def add(self, kind: str, message: str, line: int | None = None) -> None:
        if kind in self.skip:
            return
        where = f"{self.file} line {line}" if line is not None else self.file
        if len(self._shown[kind]) < SHOWN:
            self._shown[kind].append(f"{where}: {message}")
        else:
            self._more[kind] += 1

    def __bool__(self) -> bool:
        return bool(self._shown)

    def lines(self) -> list[str]:
        out = []
        for kind, shown in self._shown.items():
            out += shown
            if self._more[kind]:
                out.append(f"{self.file}: ... and {self._more[kind]} more {kind} problem(s)")
        return out


def _sample(values, n: int = 5) -> str:
    items = sorted(values, key=lambda v: (str(type(v)), v))
    text = ", ".join(str(v) for v in items[:n])
    return text + (", ..." if len(items) > n else "")


# -- predictions -> file text ---------------------------------------------------------------------
def _label_name(label) -> str:
    return str(label)  # JSON booleans come back as True/False: "True"/"False"


def _as_01(value) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value in (0, 1):
        return value
    return None


def render(spec: FileSpec, rows: list[dict], where: str) -> tuple[str, list[str]]:
    """The file's text from prediction rows, and the rows that could not be written (``where``: their file)."""
    problems = Problems(where)
    out: list[tuple] = []  # (sort key, row number, text line)
    for n, row in enumerate(rows, 1):
        line = _render_row(spec, row, n, problems)
        if line is not None:
            out.append(line)
    kept = _first_of_each_idx(out, problems)
    try:
        kept.sort(key=lambda item: (str(type(item[0])), item[0]))
    except TypeError:  # idx values that do not compare: any order, the checker reports them
        kept.sort(key=lambda item: repr(item[0]))
    header = [GLUE_HEADER] if spec.kind.startswith("tsv") else []
    return "".join(line + "\n" for line in header + [text for _, text in kept]), problems.lines()


def _render_row(spec: FileSpec, row, n: int, problems: Problems) -> tuple | None:
    """``(sort key, row number, text line)`` of prediction row ``n``; None (and a problem) if it cannot be written."""
    if not isinstance(row, dict) or ("idx" not in row and spec.kind != "race"):
        problems.add("malformed", "not a prediction row with an 'idx'", n)
        return None
    label = row.get("label")
    if spec.kind == "race":
        if not {"id", "question_idx"} <= set(row):
            problems.add("malformed", "a RACE prediction needs 'id' and 'question_idx'", n)
            return None
        q = row["question_idx"]
        key = (str(row["id"]), int(q) if isinstance(q, (int, str)) and str(q).isdigit() else q)
        return key, n, json.dumps({"id": row["id"], "question_idx": q, "label": label})
    idx = row["idx"]
    key = int(idx) if isinstance(idx, (int, str)) and str(idx).lstrip("-").isdigit() else idx
    text = _row_text(spec, key, label, row, n, problems)
    return None if text is None else (key, n, text)


def _row_text(spec: FileSpec, key, label, row: dict, n: int, problems: Problems) -> str | None:
    """The line of a row with an idx, as the file's kind writes it; None (and a problem) for a label it cannot write."""
    if spec.kind == "tsv-score":
        try:
            value = float(label)
        except (TypeError, ValueError):
            problems.add("label", f"score {label!r} is not a number", n)
            return None
        if math.isnan(value):
            problems.add("label", "score is NaN", n)
            return None
        return f"{key}\t{min(5.0, max(0.0, value)):.3f}"
    if spec.kind == "tsv-label":
        written = spec.write.get(_label_name(label))
        if written is None:
            problems.add("label", f"label {label!r} is not one of {list(spec.write)}: predictions must carry the "
                                  "task card's label names", n)
            return None
        return f"{key}\t{written}"
    if spec.kind == "label":
        written = spec.write.get(_label_name(label).lower())
        if written is None:
            problems.add("label", f"label {label!r} is not one of {list(spec.allowed)}", n)
            return None
        return json.dumps({"idx": key, "label": written})
    if spec.kind == "choice":
        value = _as_01(label)
        if value is None:
            problems.add("label", f"label {label!r} is not 0 or 1", n)
            return None
        return json.dumps({"idx": key, "label": value})
    if spec.kind == "record":
        return json.dumps({"idx": key, "label": label})
    if spec.kind == "multirc":
        return _multirc_text(key, row, n, problems)
    raise ValueError(f"unknown file kind {spec.kind}")  # pragma: no cover - the spec table only holds the kinds above


def _multirc_text(key, row: dict, n: int, problems: Problems) -> str | None:
    """One line per paragraph: its questions and their answers sorted by idx, 0/1 labels as integers."""
    questions = (row.get("passage") or {}).get("questions")
    if not isinstance(questions, list):
        problems.add("malformed", "a MultiRC prediction needs passage.questions (one line per paragraph)", n)
        return None
    nested = []
    for q in sorted(questions, key=lambda q: q.get("idx", -1)):
        answers = []
        for a in sorted(q.get("answers", []), key=lambda a: a.get("idx", -1)):
            value = _as_01(a.get("label"))
            answers.append({"idx": a.get("idx"), "label": a.get("label") if value is None else value})
        nested.append({"idx": q.get("idx"), "answers": answers})
    return json.dumps({"idx": key, "passage": {"questions": nested}})


def _first_of_each_idx(out: list[tuple], problems: Problems) -> list[tuple]:
    """``(key, text)`` of the rendered rows, a repeated idx dropped (and reported) after its first row."""
    first: dict = {}
    kept: list[tuple] = []
    for key, n, text in out:
        try:
            hashable = hash(key) is not None
        except TypeError:  # an idx that is a list or an object: the checker reports it
            hashable = False
        if hashable and key in first:
            problems.add("duplicate", f"idx {_show(key)} appears again (first on line {first[key]}); a run predicts "
                                      "each test example once: is this file two runs' predictions joined?", n)
            continue
        if hashable:
            first[key] = n
        kept.append((key, text))
    return kept


# -- file text -> problems ------------------------------------------------------------------------
_INT = re.compile(r"-?\d+")
_FLOAT = re.compile(r"-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_text(spec: FileSpec, text: str, expected: Expected | None, skip: frozenset[str] = frozenset()) -> list[str]:
    """Every problem of one benchmark file (empty list: the file is fine).

    ``skip``: kinds of problem not to report (``count``, ``missing``), where the caller already
    said why, in its own words.
    """
    problems = Problems(spec.file, skip)
    if "\r" in text:
        problems.add("format", "has CR (\\r) characters; lines must end with \\n only")
        text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines, first = _past_header(spec, lines, problems) if spec.kind.startswith("tsv") else (lines, 1)
    seen: dict = {}
    order: list = []
    for n, line in enumerate(lines, first):
        if not line.strip():
            problems.add("format", "blank line", n)
            continue
        key = _check_line(spec, line, n, expected, problems)
        if key is None:
            continue
        if key in seen:
            problems.add("duplicate", f"idx {_show(key)} appears again (first on line {seen[key]}); "
                                      "keep one row per idx", n)
            continue
        seen[key] = n
        order.append((key, n))
    if spec.benchmark == "superglue":
        for (a, _), (b, n) in zip(order, order[1:]):
            if _is_int(a) and _is_int(b) and b < a:
                problems.add("order", f"rows must be sorted by idx: idx {b} comes after {a}; sort the lines by idx", n)
                break
    if expected is not None:
        _check_against(expected, seen, len(lines), problems)
    return problems.lines()


def _past_header(spec: FileSpec, lines: list[str], problems: Problems) -> tuple[list[str], int]:
    """A TSV file's rows and the number of the first one. One problem for a wrong header; the line is a
    header all the same (not a row), unless it is a data row (the header is missing), which is then
    checked and counted as a row."""
    expected_header = GLUE_HEADER.replace("\t", "<TAB>")
    if not lines:
        problems.add("format", f"empty file; the first line must be the header '{expected_header}'", 1)
    elif lines[0] != GLUE_HEADER:
        if _INT.fullmatch(lines[0].split("\t")[0].strip()):
            problems.add("format", f"the header '{expected_header}' is missing: the first line is a row "
                                   f"({lines[0][:60]!r}); add the header above it", 1)
        else:
            problems.add("format", f"the first line must be the header '{expected_header}', got "
                                   f"{lines[0][:60]!r}; replace it", 1)
            return lines[1:], 2
    else:
        return lines[1:], 2
    return lines, 1


def _check_against(expected: Expected, seen: dict, rows: int, problems: Problems) -> None:
    """The row count against the test split's, and (with a test file) its idx: none missing, none unexpected."""
    if len(seen) != expected.count or rows != expected.count:
        why = f" (no test file to compare with: {expected.why})" if expected.why else ""
        problems.add("count", f"{rows} rows, but {expected.source} has {expected.count}{why}; "
                              "write exactly one row per test example")
    if expected.keys is not None:
        missing, unexpected = expected.keys - seen.keys(), seen.keys() - expected.keys
        if missing:
            problems.add("missing", f"{len(missing)} idx of the test split have no row "
                                    f"({_sample(map(_show, missing))}); predict the whole test split")
        if unexpected:
            problems.add("unexpected", f"{len(unexpected)} idx are not in the test split "
                                       f"({_sample(map(_show, unexpected))}); were they predicted on another split?")


def _show(key) -> str:
    return f"{key[0]}/{key[1]}" if isinstance(key, tuple) else str(key)


def _check_line(spec: FileSpec, line: str, n: int, expected: Expected | None, problems: Problems):
    """Check one row; return its key (idx, or (id, question_idx) for RACE), None if unreadable."""
    if spec.kind.startswith("tsv"):
        fields = line.split("\t")
        if len(fields) != 2 or not _INT.fullmatch(fields[0]):
            problems.add("format", f"expected 'idx<TAB>prediction', got {line[:60]!r}", n)
            return None
        value = fields[1]
        if spec.kind == "tsv-score":
            if not _FLOAT.fullmatch(value) or not 0.0 <= float(value) <= 5.0:
                problems.add("label", f"prediction {value!r} is not a number in [0, 5]", n)
        elif value not in spec.allowed:
            problems.add("label", f"prediction {value!r} is not one of {list(spec.allowed)} (spelled exactly so)", n)
        return int(fields[0])
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        problems.add("format", f"not valid JSON ({err.msg})", n)
        return None
    if not isinstance(row, dict):
        problems.add("format", "not a JSON object", n)
        return None
    if spec.kind == "race":
        return _check_race(spec, row, n, expected, problems)
    idx = row.get("idx")
    if not _is_int(idx):
        problems.add("format", f"'idx' must be an integer, got {idx!r}", n)
        return None
    if spec.kind == "multirc":
        _check_multirc(row, n, expected, problems)
        return idx
    if "label" not in row:
        problems.add("format", "no 'label'", n)
        return idx
    label = row["label"]
    if spec.kind == "choice":
        if not _is_int(label) or label not in spec.allowed:
            problems.add("label", f"label {label!r} must be the integer 0 or 1", n)
    elif spec.kind == "record":
        if not isinstance(label, str) or not label:
            problems.add("label", f"label {label!r} must be the text of an entity of the passage", n)
        elif expected is not None and expected.candidates is not None and idx in expected.candidates \
                and label not in expected.candidates[idx]:
            problems.add("label", f"label {label!r} is not an entity of the passage of query {idx}", n)
    elif not isinstance(label, str) or label not in spec.allowed:
        problems.add("label", f"label {label!r} is not one of {list(spec.allowed)} "
                              "(JSON strings, spelled exactly so)", n)
    return idx


def _check_multirc(row: dict, n: int, expected: Expected | None, problems: Problems) -> None:
    idx = row["idx"]
    questions = (row.get("passage") or {}).get("questions") if isinstance(row.get("passage"), dict) else None
    if not isinstance(questions, list):
        problems.add("format", "a MultiRC line needs passage.questions", n)
        return
    want = (expected.structure or {}).get(idx) if expected is not None and expected.structure else None
    got: dict[int, set[int]] = {}
    for q in questions:
        qidx = q.get("idx") if isinstance(q, dict) else None
        if not _is_int(qidx) or not isinstance(q.get("answers"), list):
            problems.add("format", f"paragraph {idx}: a question needs an integer 'idx' and 'answers'", n)
            continue
        if qidx in got:
            problems.add("duplicate", f"paragraph {idx}: question {qidx} appears twice", n)
            continue
        got[qidx] = set()
        for a in q["answers"]:
            aidx = a.get("idx") if isinstance(a, dict) else None
            if not _is_int(aidx):
                problems.add("format", f"question {qidx}: an answer needs an integer 'idx'", n)
                continue
            if aidx in got[qidx]:
                problems.add("duplicate", f"question {qidx}: answer {aidx} appears twice", n)
            got[qidx].add(aidx)
            if not _is_int(a.get("label")) or a["label"] not in (0, 1):
                problems.add("label", f"question {qidx} answer {aidx}: label {a.get('label')!r} must be 0 or 1", n)
    if want is None:
        return
    if set(got) != set(want):
        problems.add("missing", f"paragraph {idx}: questions {sorted(got)} differ from the test file's {sorted(want)}", n)
    for qidx in set(got) & set(want):
        if got[qidx] != want[qidx]:
            problems.add("missing", f"question {qidx}: answers {sorted(got[qidx])} differ from the test file's "
                                    f"{sorted(want[qidx])}", n)


def _check_race(spec: FileSpec, row: dict, n: int, expected: Expected | None, problems: Problems):
    article, q = row.get("id"), row.get("question_idx")
    if not isinstance(article, str) or not _is_int(q):
        problems.add("format", "a RACE row needs 'id' (string) and 'question_idx' (integer)", n)
        return None
    if row.get("label") not in spec.allowed:
        problems.add("label", f"label {row.get('label')!r} is not one of {list(spec.allowed)} (spelled exactly so)", n)
    return (article, q)
