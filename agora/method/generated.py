"""What an expansion produces, typed: the kept rows with their teacher targets (:class:`Expansion`), what
happened on the way (:class:`ExpansionStats`), the teacher's work (:class:`TeacherCounts`), and the one
record of a generated row (:class:`GeneratedRow`) that both ``<run>/agora/generated.jsonl`` (a fit's
rows) and ``<run>/search/added.jsonl`` (D's additions between rounds) hold.

One idx scheme serves both: generated row ``j`` gets idx ``base + j``, with ``base`` the larger of
``2**40`` and the largest idx of the rows it joins plus one (:func:`generated_base`), so a generated
row never takes the idx of a dataset row, and a fit's rows sit above D's additions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

Segments = tuple[str, ...]
GENERATED_IDX_BASE = 1 << 40


def generated_base(idx: np.ndarray) -> int:
    """The idx of the first generated row joining rows with these idx (see the module docstring)."""
    return max(GENERATED_IDX_BASE, int(np.max(np.asarray(idx, np.int64), initial=-1)) + 1)


@dataclasses.dataclass
class TeacherCounts:
    """The teacher's work for one step: inputs through the model, inputs served from its cache, seconds."""

    forward_calls: int = 0
    cache_hits: int = 0
    seconds: float = 0.0

    def __add__(self, other: "TeacherCounts") -> "TeacherCounts":
        return TeacherCounts(self.forward_calls + other.forward_calls, self.cache_hits + other.cache_hits,
                             round(self.seconds + other.seconds, 3))


@contextlib.contextmanager
def counting(teacher):
    """``with counting(teacher) as counts:`` fills ``counts`` (:class:`TeacherCounts`) with what the teacher
    did inside the block."""
    counts = TeacherCounts()
    calls, hits, start = teacher.forward_calls, teacher.cache.hits, time.perf_counter()
    try:
        yield counts
    finally:
        counts.forward_calls = teacher.forward_calls - calls
        counts.cache_hits = teacher.cache.hits - hits
        counts.seconds = round(time.perf_counter() - start, 3)


@dataclasses.dataclass
class ExpansionStats:
    """What one expansion did (see :mod:`agora.method.expand` for the steps)."""

    sources: int = 0
    variants: int = 0
    """Variants G returned (after its own rejections)."""
    scored: int = 0
    """Variants the teacher labelled."""
    kept: int = 0
    rejected: dict[str, int] = dataclasses.field(default_factory=dict)
    """Rejections by reason: ``band``, ``identical``, ``duplicate``, ``used``, ``seen``, ``confidence``,
    ``disagree``, ``balance``."""
    agreement: float | None = None
    """Share of scored variants whose teacher label agrees with their source's gold label."""
    agreement_kept: float | None = None
    label_balance: dict[str, int] | None = None
    """Kept rows per teacher label (classification)."""
    agreement_by_label: dict[str, list[int]] | None = None
    """Per teacher label: ``[variants scored, of which agree with the source's gold label]``."""
    anchors: int | None = None
    """Distinct sources (anchors) of the kept rows."""
    near_duplicate_rate: float | None = None
    """Share of the candidates considered that were skipped as near-duplicates (selection only)."""
    random: int | None = None
    """Kept rows drawn uniformly from the pool rather than by rank (selection only)."""
    student_seconds: float | None = None
    """The student's pass over the candidates (selection only)."""
    teacher: TeacherCounts = dataclasses.field(default_factory=TeacherCounts)

    def summarise(self, labels: np.ndarray, agree: np.ndarray, kept: np.ndarray, label_names, regression: bool) -> None:
        """Fill the counts from the scored variants' teacher ``labels``, their ``agree``-ment with the gold
        label, and the positions ``kept``."""
        self.scored, self.kept = int(len(labels)), int(len(kept))
        self.agreement = float(agree.mean()) if len(agree) else None
        self.agreement_kept = float(agree[kept].mean()) if len(kept) else None
        if regression:
            return
        kept_labels = labels[kept]
        names = list(label_names) if label_names else [str(c) for c in range(int(kept_labels.max(initial=-1)) + 1)]
        self.label_balance = {n: int((kept_labels == c).sum()) for c, n in enumerate(names)}
        self.agreement_by_label = {n: [int((labels == c).sum()), int(((labels == c) & agree).sum())]
                                   for c, n in enumerate(names)}

    def as_record(self) -> dict[str, Any]:
        """The flat form kept in ``metrics.json`` (per epoch) and the search's state (per round)."""
        out = {k: v for k, v in dataclasses.asdict(self).items()
               if k != "teacher" and not (v is None and k in ("label_balance", "agreement_by_label"))}
        out["teacher_forward_calls"] = self.teacher.forward_calls
        out["teacher_cache_hits"] = self.teacher.cache_hits
        return out


@dataclasses.dataclass
class Expansion:
    """The rows an expansion keeps, in generation order, with their teacher targets and the step's stats."""

    variants: list[Segments]
    source_ids: np.ndarray
    """int64 id (e.g. dataset idx) of each kept variant's source; -1 for a pool row drawn at random."""
    probs: np.ndarray
    """float32 ``[k, C]`` teacher probabilities (``[k, 1]`` scores for regression)."""
    labels: np.ndarray
    """Teacher hard labels (int64) or scores (float32 for regression)."""
    stats: ExpansionStats = dataclasses.field(default_factory=ExpansionStats)

    @classmethod
    def empty(cls, width: int, regression: bool, stats: ExpansionStats, label_names=None) -> "Expansion":
        """No row kept; ``stats`` say why (a classification task reports an all-zero label balance)."""
        out = cls([], np.zeros(0, np.int64), np.zeros((0, width), np.float32),
                  np.zeros(0, np.float32 if regression else np.int64), stats)
        stats.summarise(out.labels, np.zeros(0, bool), np.zeros(0, np.int64), label_names, regression)
        if not regression:
            stats.agreement_by_label = None
        return out

    def records(self, first_idx: int, key, label_names: Sequence[str] | None, regression: bool) -> list["GeneratedRow"]:
        """The kept rows as :class:`GeneratedRow` records, idx from ``first_idx`` on."""
        return [GeneratedRow.of(first_idx + j, v, y, probs, source, key, label_names, regression)
                for j, (v, y, probs, source) in enumerate(zip(self.variants, self.labels.tolist(), self.probs,
                                                               self.source_ids))]


@dataclasses.dataclass
class GeneratedRow:
    """One generated row, as ``generated.jsonl`` and ``added.jsonl`` hold it."""

    idx: int
    inputs: Segments
    label: str | float | int
    """The teacher's label: its name (classification), its score (regression), or its index."""
    teacher_probs: list[float]
    source_idx: int
    """idx of the row it was made from (-1: a pool row drawn at random)."""
    key: int | str
    """The expansion that made it: the epoch of a fit (-1: when the fit started), or ``round-<n>``."""

    @classmethod
    def of(cls, idx: int, inputs, y, probs, source: int, key, label_names, regression: bool) -> "GeneratedRow":
        """A row from a training set's or an expansion's columns: the teacher's label ``y`` written as its name
        (classification), its score (regression) or its index; probabilities rounded to 6 places."""
        label = float(y) if regression else (label_names[int(y)] if label_names else int(y))
        return cls(int(idx), tuple(inputs), label, [round(float(p), 6) for p in probs], int(source), key)

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "inputs": list(self.inputs)}

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> "GeneratedRow":
        return cls(int(row["idx"]), tuple(row["inputs"]), row["label"], list(row.get("teacher_probs", [])),
                   int(row.get("source_idx", -1)), row.get("key", row.get("epoch", 0)))


def flat_record(record: dict[str, Any], prefix: str) -> dict[str, float]:
    """A per-epoch record as logger metrics: numbers as ``<prefix>/<key>``, a dict's numbers as
    ``<prefix>/<key>_<inner key>``; the epoch itself and anything else (lists, text, None) left out."""
    flat: dict[str, float] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update({f"{prefix}/{key}_{k}": v for k, v in value.items() if isinstance(v, (int, float))})
        elif isinstance(value, (int, float)) and key != "epoch":
            flat[f"{prefix}/{key}"] = value
    return flat
