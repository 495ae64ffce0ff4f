"""What each leaderboard expects: one :class:`FileSpec` per file of the zip, and the test split
every file is checked against.

GLUE's rules come from the task cards (their ``submission: glue:`` sections: file name, split,
how a label is written; ``predicted_by`` for AX). SuperGLUE's and RACE's live in the tables
below, keyed by benchmark file, so they do not depend on how their cards are laid out. Sources:
the GLUE and SuperGLUE FAQs and the formatters of accepted submissions, summarised in
``design/SUBMISSIONS.md``. RACE has no leaderboard server; its file format is our choice.

Row counts are always taken from the test split actually found in the data dir; the official
counts in :data:`OFFICIAL_ROWS` are only documentation and the fallback of ``submit --check``
when no test file is available.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agora.errors import AgoraError


class SubmissionError(AgoraError, ValueError):
    """A submission cannot be built or does not pass the checks; the message lists every problem."""


def norm(name: str) -> str:
    """Task and file names compared loosely: ``SST-2`` == ``sst2``, ``AX-b`` == ``axb``."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


# Official test-set sizes (rows; MultiRC: paragraphs, ReCoRD: queries, RACE: questions).
OFFICIAL_ROWS: dict[str, int] = {
    # GLUE
    "CoLA.tsv": 1063, "SST-2.tsv": 1821, "MRPC.tsv": 1725, "STS-B.tsv": 1379, "QQP.tsv": 390965,
    "MNLI-m.tsv": 9796, "MNLI-mm.tsv": 9847, "QNLI.tsv": 5463, "RTE.tsv": 3000, "WNLI.tsv": 146,
    "AX.tsv": 1104,
    # SuperGLUE
    "BoolQ.jsonl": 3245, "CB.jsonl": 250, "COPA.jsonl": 500, "MultiRC.jsonl": 166,
    "ReCoRD.jsonl": 10000, "RTE.jsonl": 3000, "WiC.jsonl": 1400, "WSC.jsonl": 146,
    "AX-b.jsonl": 1104, "AX-g.jsonl": 356,
    # RACE
    "RACE.jsonl": 4934,
}

GLUE_ORDER = ["CoLA.tsv", "SST-2.tsv", "MRPC.tsv", "STS-B.tsv", "QQP.tsv", "MNLI-m.tsv", "MNLI-mm.tsv",
              "QNLI.tsv", "RTE.tsv", "WNLI.tsv", "AX.tsv"]
GLUE_HEADER = "index\tprediction"
RACE_METRICS_FILE = "RACE-metrics.json"

# Kinds of file, by how one row is written:
#   tsv-label   GLUE "idx<TAB>value", value from a fixed vocabulary
#   tsv-score   GLUE "idx<TAB>float", 3 decimals, in [0, 5] (STS-B)
#   label       SuperGLUE {"idx", "label": "<string>"} from a fixed vocabulary
#   choice      SuperGLUE {"idx", "label": 0 | 1} (COPA: 0 = choice1)
#   multirc     SuperGLUE one paragraph per line, answers nested and labelled 0 | 1
#   record      SuperGLUE {"idx": <query idx>, "label": "<entity text of the passage>"}
#   race        {"id", "question_idx", "label": "A".."D"}


@dataclass(frozen=True)
class FileSpec:
    benchmark: str
    file: str
    """Name inside the (flat) zip."""
    task_key: str
    """Canonical key of the task whose run predicts this file (``mnli`` for AX, ``rte`` for AX-b)."""
    card: str
    """The task card a run must be trained on to predict this file (``mnli`` for AX, ``superglue-rte``)."""
    aliases: frozenset[str]
    """Normalised run task names (``metrics.json``'s ``task``) accepted as that task."""
    split: str
    """The test split's name in the predicting run (``test``, ``test_matched``)."""
    kind: str
    write: dict[str, str] | None = None
    """Prediction label name -> written value (label kinds); ``None`` when the value is not a name."""
    extra: frozenset[str] = frozenset()
    """For test-only tasks predicted by another task's model (AX, AX-b, AX-g): their names."""
    test_card: str | None = None
    """GLUE: the card whose ``split`` is the test split (loaded with :func:`agora.splits.load_split`)."""
    test_path: str | None = None
    """SuperGLUE / RACE: the test file (or directory) under the data dir."""
    allowed: tuple = field(default=())
    """The written vocabulary (label kinds; used by the checker)."""

    @property
    def stem(self) -> str:
        return self.file.rsplit(".", 1)[0]

    def matches_key(self, key: str) -> bool:
        """Does a ``--run KEY=DIR`` key designate this file (by file name or by task)?"""
        key = norm(key)
        return key in (norm(self.stem), self.task_key) or key in self.aliases or key in self.extra


# -- GLUE: from the task cards -------------------------------------------------------------
def _glue_specs() -> list[FileSpec]:
    from agora.tasks import available_tasks, load_task

    specs = []
    for name in available_tasks():
        card = load_task(name)
        if card.benchmark != "glue" or "glue" not in card.submission:
            continue
        entries = card.submission["glue"]
        for entry in entries if isinstance(entries, list) else [entries]:
            owner = card.predicted_by or card.name
            write = entry.get("write", "name")
            if write == "score":
                kind, mapping, allowed = "tsv-score", None, ()
            elif write == "name":
                kind, mapping = "tsv-label", {n: n for n in card.labels}
                allowed = tuple(card.labels)
            else:
                kind, mapping = "tsv-label", {str(k): str(v) for k, v in write.items()}
                allowed = tuple(dict.fromkeys(mapping.values()))
            specs.append(FileSpec(
                benchmark="glue", file=entry["file"], task_key=norm(owner), card=owner, aliases=frozenset({norm(owner)}),
                split=entry.get("split", "test"), kind=kind, write=mapping, allowed=allowed,
                extra=frozenset({norm(card.name)}) if card.predicted_by else frozenset(),
                test_card=card.name,
            ))
    rank = {f: i for i, f in enumerate(GLUE_ORDER)}
    return sorted(specs, key=lambda s: (rank.get(s.file, len(rank)), s.file))


# -- SuperGLUE and RACE: tables ------------------------------------------------------------
# Run task names accepted for each task (normalised). RTE is the SuperGLUE RTE card, not GLUE's.
SUPERGLUE_RTE = frozenset({"supergluerte", "rtesuperglue", "sgrte", "rtesg"})
SUPERGLUE_AXB = frozenset({"axb", "superglueaxb", "sgaxb", "axbroadcoverage"})
SUPERGLUE_AXG = frozenset({"axg", "superglueaxg", "sgaxg", "axwinogender"})

NLI2 = ("entailment", "not_entailment")
NLI3 = ("entailment", "contradiction", "neutral")
BOOL_LOWER = ("true", "false")
BOOL_CAPITAL = ("True", "False")

# file -> (task key, aliases, extra test-only names, kind, written vocabulary, test file)
SUPERGLUE_TABLE: dict[str, tuple[str, frozenset[str], frozenset[str], str, tuple, str]] = {
    "BoolQ.jsonl": ("boolq", frozenset({"boolq"}), frozenset(), "label", BOOL_LOWER, "superglue/BoolQ/test.jsonl"),
    "CB.jsonl": ("cb", frozenset({"cb"}), frozenset(), "label", NLI3, "superglue/CB/test.jsonl"),
    "COPA.jsonl": ("copa", frozenset({"copa"}), frozenset(), "choice", (0, 1), "superglue/COPA/test.jsonl"),
    "MultiRC.jsonl": ("multirc", frozenset({"multirc"}), frozenset(), "multirc", (0, 1), "superglue/MultiRC/test.jsonl"),
    "ReCoRD.jsonl": ("record", frozenset({"record"}), frozenset(), "record", (), "superglue/ReCoRD/test.jsonl"),
    "RTE.jsonl": ("rte", SUPERGLUE_RTE, frozenset(), "label", NLI2, "superglue/RTE/test.jsonl"),
    "WiC.jsonl": ("wic", frozenset({"wic"}), frozenset(), "label", BOOL_LOWER, "superglue/WiC/test.jsonl"),
    "WSC.jsonl": ("wsc", frozenset({"wsc"}), frozenset(), "label", BOOL_CAPITAL, "superglue/WSC/test.jsonl"),
    "AX-b.jsonl": ("rte", SUPERGLUE_RTE, SUPERGLUE_AXB, "label", NLI2, "superglue/AX-b/AX-b.jsonl"),
    "AX-g.jsonl": ("rte", SUPERGLUE_RTE, SUPERGLUE_AXG, "label", NLI2, "superglue/AX-g/AX-g.jsonl"),
}

# Task key -> the card its runs are trained on, where they differ.
TABLE_CARDS = {"rte": "superglue-rte"}

RACE_TABLE = {
    "RACE.jsonl": ("race", frozenset({"race"}), frozenset(), "race", ("A", "B", "C", "D"), "race/test"),
}


def _table_specs(benchmark: str, table: dict) -> list[FileSpec]:
    specs = []
    for file, (key, aliases, extra, kind, allowed, test_path) in table.items():
        write = None
        if kind == "label":  # label names are matched case-insensitively, written as the table says
            write = {str(v).lower(): v for v in allowed}
        specs.append(FileSpec(benchmark=benchmark, file=file, task_key=key, card=TABLE_CARDS.get(key, key),
                              aliases=aliases | {norm(TABLE_CARDS.get(key, key))}, split="test",
                              kind=kind, write=write, extra=extra, test_path=test_path, allowed=allowed))
    return specs


BENCHMARKS = ("glue", "superglue", "race")


def specs_for(benchmark: str) -> list[FileSpec]:
    """Every file a benchmark's zip must hold, in the order they are written."""
    benchmark = norm(benchmark)
    if benchmark == "glue":
        return _glue_specs()
    if benchmark == "superglue":
        return _table_specs("superglue", SUPERGLUE_TABLE)
    if benchmark == "race":
        return _table_specs("race", RACE_TABLE)
    raise SubmissionError(f"unknown benchmark '{benchmark}': choose one of {', '.join(BENCHMARKS)}")


def guess_benchmark(names: list[str]) -> str | None:
    """The benchmark a zip's file names belong to (the one sharing the most names)."""
    base = {n.rsplit("/", 1)[-1] for n in names}
    counts = {b: len(base & {s.file for s in specs_for(b)}) for b in BENCHMARKS}
    best = max(counts, key=counts.get)
    return best if counts[best] else None


# -- the test split a file is checked against ---------------------------------------------------
@dataclass
class Expected:
    """The keys a file must hold exactly once, or only their number when no test file is found."""

    count: int
    source: str
    keys: set | None = None
    """idx values (RACE: (id, question_idx) pairs); None: only the count is known."""
    structure: dict | None = None
    """MultiRC: {paragraph idx: {question idx: {answer idx, ...}}}."""
    candidates: dict | None = None
    """ReCoRD: {query idx: {entity text, ...}}."""
    gold: dict | None = None
    """RACE: {(id, question_idx): answer letter}."""
    why: str = ""
    """Why only the official count is known (no test file found)."""


def official(spec: FileSpec, why: str) -> Expected:
    return Expected(count=OFFICIAL_ROWS.get(spec.file, 0), source="the official test set", why=why)


def load_expected(spec: FileSpec, data_dir: Path | None, source: str = "local", cache: Path | None = None) -> Expected:
    """The test split of ``spec`` from the data dir. Raises AgoraError when it cannot be read."""
    if spec.test_card is not None:
        from agora.splits import load_split, local_path
        from agora.tasks import load_task

        card = load_task(spec.test_card)
        ds = load_split(card, spec.split, data_dir, source, cache)
        keys = [int(i) for i in ds["idx"]]
        path = local_path(card, spec.split, data_dir)
        where = str(path.relative_to(data_dir)) if path is not None and path.is_file() else f"hub:{card.hub.path}"
        return _exact(keys, f"the test split {where}")
    if data_dir is None:
        raise SubmissionError("no data dir (give --data-dir or set AGORA_DATA_DIR)")
    path = Path(data_dir) / spec.test_path
    if spec.kind == "race":
        return _race_expected(path)
    if not path.is_file():
        raise SubmissionError(f"test file {path} not found")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    where = f"the test file {spec.test_path}"
    if spec.kind == "multirc":
        structure = {
            int(p["idx"]): {int(q["idx"]): {int(a["idx"]) for a in q["answers"]} for q in p["passage"]["questions"]}
            for p in rows
        }
        exp = _exact([int(p["idx"]) for p in rows], where)
        exp.structure = structure
        return exp
    if spec.kind == "record":
        candidates: dict[int, set[str]] = {}
        for p in rows:
            text = p["passage"]["text"]
            names = {text[e["start"] : e["end"] + 1] for e in p["passage"]["entities"]}
            for q in p["qas"]:
                candidates[int(q["idx"])] = names
        exp = _exact(list(candidates), where)
        exp.candidates = candidates
        return exp
    return _exact([int(r["idx"]) for r in rows], where)


def _exact(keys: list, source: str) -> Expected:
    unique = set(keys)
    if len(unique) != len(keys):
        raise SubmissionError(f"{source} repeats some idx values; it is not a benchmark test file")
    return Expected(count=len(keys), source=source, keys=unique)


def _race_expected(root: Path) -> Expected:
    files = sorted(root.glob("*/*.txt"))
    if not files:
        raise SubmissionError(f"RACE test directory {root} has no <level>/<n>.txt files")
    gold: dict[tuple[str, int], str] = {}
    for path in files:
        article: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        for q, answer in enumerate(article["answers"]):
            gold[(article["id"], q)] = answer
    return Expected(count=len(gold), source=f"the RACE test split {root.parent.name}/{root.name}", keys=set(gold),
                    gold=gold)


def race_level(article_id: str) -> str:
    return "middle" if article_id.startswith("middle") else "high"
