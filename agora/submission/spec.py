"""What each leaderboard expects: one :class:`FileSpec` per file of the zip, and the test split
every file is checked against.

Every rule comes from the task cards (their ``submission: <benchmark>:`` sections: file name,
split, how a label is written, the task names a run may carry; ``predicted_by`` for AX, AX-b and
AX-g; see :func:`_card_spec`): one place per task owns its labels, its metric and its file. Sources:
the GLUE and SuperGLUE FAQs and the formatters of accepted submissions, summarised in
``docs/submissions.md``. RACE has no leaderboard server; its file format is our choice.

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
from agora.files import read_jsonl


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
    """GLUE: the card whose ``split`` is the test split (loaded with :func:`agora.data.splits.load_split`)."""
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


# -- the files, from the task cards ----------------------------------------------------------
ORDER = {
    "glue": GLUE_ORDER,
    "superglue": ["BoolQ.jsonl", "CB.jsonl", "COPA.jsonl", "MultiRC.jsonl", "ReCoRD.jsonl", "RTE.jsonl", "WiC.jsonl",
                  "WSC.jsonl", "AX-b.jsonl", "AX-g.jsonl"],
    "race": ["RACE.jsonl"],
}
KIND = {  # (benchmark, the card's ``write``) -> kind of file
    ("glue", "name"): "tsv-label", ("glue", "score"): "tsv-score",
    ("superglue", "name"): "label", ("superglue", "index"): "choice", ("superglue", "nested"): "multirc",
    ("superglue", "entity"): "record", ("race", "letter"): "race",
}


def _card_spec(benchmark: str, card, entry: dict, owner_entry: dict) -> FileSpec:
    """A card's ``submission: <benchmark>:`` entry as a :class:`FileSpec`.

    Entry keys: ``file``, ``split`` (default ``test``), ``write`` (GLUE ``name`` | ``score`` | a mapping
    label -> written value; SuperGLUE ``name`` | ``index`` | ``nested`` | ``entity``; RACE ``letter``),
    ``vocabulary`` (the written labels where they differ from the card's), and on the card whose
    model predicts the file: ``key`` (the task key of ``--run KEY=DIR``, default its name) and
    ``aliases`` (other task names its runs may carry); on a test-only card: ``names`` (other names of it).
    """
    owner = card.predicted_by or card.name
    write = entry.get("write", "name" if benchmark != "race" else "letter")
    key = norm(owner_entry.get("key", owner))
    aliases = frozenset({norm(owner), *(norm(a) for a in owner_entry.get("aliases", []))})
    extra = frozenset({norm(card.name), *(norm(n) for n in entry.get("names", []))}) if card.predicted_by else frozenset()
    split = entry.get("split", "test")
    mapping, test_card, test_path = None, None, None
    if isinstance(write, dict):
        kind, mapping = "tsv-label", {str(k): str(v) for k, v in write.items()}
        allowed = tuple(dict.fromkeys(mapping.values()))
    else:
        kind = KIND[(benchmark, write)]
        vocabulary = tuple(entry.get("vocabulary") or card.labels or ())
        allowed = {"tsv-score": (), "choice": tuple(range(card.choices or 2)), "multirc": (0, 1), "record": ()}.get(
            kind, vocabulary)
        if kind == "tsv-label":
            mapping = {n: n for n in card.labels}
        elif kind == "label":  # label names are matched case-insensitively, written as the card spells them
            mapping = {str(v).lower(): v for v in allowed}
    if benchmark == "glue":
        test_card = card.name
    else:
        test_path = f"{card.local.dir}/{card.local.split(split).file}"
    return FileSpec(benchmark=benchmark, file=entry["file"], task_key=key, card=owner, aliases=aliases, split=split,
                    kind=kind, write=mapping, extra=extra, test_card=test_card, test_path=test_path, allowed=allowed)


def _card_specs(benchmark: str) -> list[FileSpec]:
    from agora.data.cards import available_tasks, load_task

    cards = [load_task(name) for name in available_tasks()]
    entries = {c.name: c.submission.get(benchmark) for c in cards}
    specs = []
    for card in cards:
        entries_of_card = entries[card.name]
        if card.benchmark != benchmark or not entries_of_card:
            continue
        owner_entry = entries.get(card.predicted_by or card.name) or {}
        if isinstance(owner_entry, list):
            owner_entry = owner_entry[0]
        for entry in entries_of_card if isinstance(entries_of_card, list) else [entries_of_card]:
            specs.append(_card_spec(benchmark, card, entry, entry if not card.predicted_by else owner_entry))
    rank = {f: i for i, f in enumerate(ORDER[benchmark])}
    return sorted(specs, key=lambda s: (rank.get(s.file, len(rank)), s.file))


BENCHMARKS = ("glue", "superglue", "race")


def specs_for(benchmark: str) -> list[FileSpec]:
    """Every file a benchmark's zip must hold, in the order they are written."""
    benchmark = norm(benchmark)
    if benchmark in BENCHMARKS:
        return _card_specs(benchmark)
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
        from agora.data.splits import load_split, local_path
        from agora.data.cards import load_task

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
    rows = read_jsonl(path)
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
