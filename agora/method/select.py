"""Selection by disagreement: choose the unlabelled pool's rows where the student disagrees most with
the teacher (``agora.select.by: disagreement``), diverse and mixed with random rows.

Method card
-----------
What: Agora's expansion step adds rows near the student's failures. With a pool of unlabelled
in-domain rows whose teacher outputs are cheap (the teacher embeds the pool anyway), the question is
which rows the student should see. Our choice, after what the literature measured against random
selection at an equal budget:

1. **Candidates** (``candidates``): every pool row not chosen yet (``pool``), or the ``neighbours``
   pool rows nearest to each source (E_gen's mistakes, or what ``expand_from`` names), the source being
   the row's anchor.
2. **Rank** by the student's divergence from the teacher: KL(p_T || p_S) for classification, |T - S|
   for regression (Robust Active Distillation, Baykal et al. 2023; CAL, Margatina et al. 2021). The
   student scores the candidates in eval mode at each expansion (``student_seconds`` times it).
   ``confidence: weight`` multiplies the divergence by the teacher's confidence, and rows below
   ``min_teacher_confidence`` are dropped (``gate`` drops them only): plain uncertainty picks the rows
   the teacher gets wrong.
3. **Diverse**: at most ``per_anchor`` rows per anchor; a candidate whose cosine similarity to a row of D
   or E, or to a row already chosen, is above ``near_duplicate`` is skipped (TypiClust, Hacohen et al.
   2022: at small budgets diverse rows beat hard ones). Embeddings: the ``nearest`` generator's (mean
   pooled, normalised, cached per pool and model).
4. **Mixed**: a share ``random_fraction`` of the rows is drawn uniformly from the pool (Lion keeps hard
   and easy rows 1:1), optionally moving linearly to ``random_fraction_final`` over the epochs.
5. **Balanced** (``balance_generated``): each class (the teacher's label) takes at most its share of D's
   prior in the ranked picks. The teacher has scored the candidates already, so nothing is paid for and
   thrown away: the whole pool is scored once per teacher (its cache), the neighbours as they come.

Reported per expansion (:class:`agora.method.generated.ExpansionStats`): candidates, rows kept,
rejections by reason (``used``, ``confidence``, ``per_anchor``, ``near_duplicate``, ``balance``), distinct
anchors, teacher/gold agreement of the kept rows (rows with an anchor), the near-duplicate rate,
random rows, the student's scoring time.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np

from agora.fit.contract import FitData
from agora.method.expand import Expander, Sources, known_inputs
from agora.method.generated import Expansion, ExpansionStats, counting
from agora.method.generators import stable_seed


def divergence(teacher: np.ndarray, student_logits: np.ndarray, regression: bool) -> np.ndarray:
    """Per row: KL(p_T || softmax(student logits)), or |T - S| for regression (``[n, 1]`` scores).

    Example:
        >>> divergence(np.array([[0.5, 0.5]]), np.array([[0.0, 0.0]]), False).round(6).tolist()
        [0.0]
    """
    teacher = np.asarray(teacher, np.float64)
    logits = np.asarray(student_logits, np.float64)
    if regression:
        return np.abs(teacher[:, 0] - logits[:, 0])
    shifted = logits - logits.max(-1, keepdims=True)
    log_s = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    t = np.clip(teacher, 1e-12, 1.0)
    return np.maximum((teacher * (np.log(t) - log_s)).sum(-1), 0.0)


def random_share(start: float, final: float | None, epoch: int, first: int, last: int) -> float:
    """The random share at ``epoch``: ``start``, or moving linearly from ``start`` (epoch ``first``) to
    ``final`` (epoch ``last``)."""
    if final is None or last <= first:
        return start
    t = min(max((epoch - first) / (last - first), 0.0), 1.0)
    return start + (final - start) * t


@dataclasses.dataclass
class Picker:
    """The greedy, diverse pick in rank order (steps 3 and 5 of the module docstring)."""

    vectors: np.ndarray
    """Unit embeddings of the pool rows."""
    near_de: np.ndarray
    """Per pool row, its largest cosine similarity to a row of D or E."""
    threshold: float | None
    per_anchor: int | None
    quotas: dict[int, int] | None
    """Class -> rows it may take (None: no balance)."""

    def pick(self, order: np.ndarray, k: int, anchors: np.ndarray, labels: np.ndarray, rejected: dict) -> list[int]:
        """Up to ``k`` positions of ``order`` (pool positions, best first); counts skips in ``rejected``."""
        chosen: list[int] = []
        taken_vectors = np.zeros((k, self.vectors.shape[1]), np.float32)
        per_anchor: dict[int, int] = {}
        per_class: dict[int, int] = {}
        for j in order:
            if len(chosen) == k:
                break
            anchor, label = int(anchors[j]), int(labels[j])
            if self.per_anchor is not None and anchor >= 0 and per_anchor.get(anchor, 0) >= self.per_anchor:
                rejected["per_anchor"] += 1
                continue
            if self.quotas is not None and per_class.get(label, 0) >= self.quotas.get(label, 0):
                rejected["balance"] += 1
                continue
            if self.threshold is not None and (self.near_de[j] > self.threshold or (
                    chosen and float((taken_vectors[: len(chosen)] @ self.vectors[j]).max()) > self.threshold)):
                rejected["near_duplicate"] += 1
                continue
            taken_vectors[len(chosen)] = self.vectors[j]
            chosen.append(int(j))
            per_anchor[anchor] = per_anchor.get(anchor, 0) + 1
            per_class[label] = per_class.get(label, 0) + 1
        return chosen


def class_quotas(k: int, prior: np.ndarray) -> dict[int, int]:
    """Rows per class for ``k`` rows under ``prior`` (largest remainders)."""
    raw = np.asarray(prior, np.float64) * k
    counts = np.floor(raw).astype(int)
    for c in np.argsort(-(raw - counts), kind="stable")[: k - counts.sum()]:
        counts[c] += 1
    return {c: int(n) for c, n in enumerate(counts)}


class Selector:
    """The expansion step of ``select.by: disagreement`` (see the module docstring); its counterpart for G
    is :class:`agora.method.expand.Expander`, whose sources and teacher it shares.

    :meth:`prepare` once per fit (the pool's embeddings, and its teacher outputs with ``candidates:
    pool``), then :meth:`step` at every expansion with the student's scorer."""

    def __init__(self, expander: Expander):
        self.expander, self.acfg, self.scfg = expander, expander.acfg, expander.acfg.select
        self.teacher, self.regression, self.seed = expander.teacher, expander.regression, expander.seed
        self.used = np.zeros(0, bool)

    def prepare(self, data: FitData, default_model: str | None, cache_dir) -> None:
        """Embed the pool (cached; the teacher's outputs come with the teacher's embedding pass), find each pool
        row's nearest row of D and E, tokenize the pool."""
        from agora.method.generators.nearest import NearestGenerator

        self.pool = data.pool
        settings = self.acfg.generator_settings if self.acfg.generator == "nearest" else {}
        self.nearest = NearestGenerator(**settings)
        self.nearest.prepare(self.pool, default_model=default_model, cache_dir=cache_dir, teacher=self.teacher)
        self.used = np.zeros(len(self.pool), bool)
        seen = sorted(known_inputs(data)) if self.scfg.near_duplicate is not None else []  # only the cut reads it
        self.near_de = self._max_similarity(self.nearest.embedder(seen)) if seen else np.zeros(len(self.pool))
        n = len(self.pool)
        self.tokens = data.tokenize_rows(np.arange(n), self.pool.inputs,
                                         np.zeros(n, np.float32 if self.regression else np.int64))
        self.pool_probs: np.ndarray | None = None

    def state_dict(self) -> dict:
        """The pool rows chosen so far in this fit (a resumed fit does not choose them again)."""
        return {"used": np.flatnonzero(self.used).tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.used = np.zeros(len(self.used), bool)
        self.used[np.asarray(state.get("used", []), dtype=np.int64)] = True

    def _max_similarity(self, others: np.ndarray) -> np.ndarray:
        out = np.zeros(len(self.pool), np.float32)
        for start in range(0, len(self.pool), 4096):
            out[start : start + 4096] = (self.nearest.vectors[start : start + 4096] @ others.T).max(1)
        return out

    def _candidates(self, sources: Sources) -> tuple[np.ndarray, np.ndarray]:
        """``(pool positions, anchor idx)`` of the unused candidates (anchor -1: none)."""
        if self.scfg.candidates == "pool":
            positions = np.flatnonzero(~self.used)
            return positions, np.full(len(positions), -1, np.int64)
        found = self.nearest.neighbours(self.nearest.embedder(list(sources.inputs)), self.scfg.neighbours)
        positions, anchors, taken = [], [], set()
        for source, row in zip(sources.idx, found):
            for j in row:
                if not self.used[j] and int(j) not in taken:
                    taken.add(int(j))
                    positions.append(int(j))
                    anchors.append(int(source))
        return np.asarray(positions, np.int64), np.asarray(anchors, np.int64)

    def _teacher_probs(self, positions: np.ndarray) -> np.ndarray:
        if self.scfg.candidates == "pool":
            if self.pool_probs is None:  # the whole pool, once per fit (and once per teacher: its cache)
                self.pool_probs = np.asarray(self.teacher.score(self.pool.inputs), np.float32)
            return self.pool_probs[positions]
        return np.asarray(self.teacher.score([self.pool.inputs[j] for j in positions]), np.float32)

    def step(self, data: FitData, student: Callable, mistakes, key, share: float) -> Expansion:
        """One expansion: the candidates ranked by disagreement, a diverse and balanced pick, a random
        share; ``student(dataset) -> logits`` scores the candidates."""
        d = Sources.of(data, data.card.train_split)
        sources = self.expander.sources(Sources.of(data, "e_gen"), d, mistakes)
        k = self.scfg.rows or self.acfg.variants_per_source * max(len(sources.idx), 1)
        rejected = {r: 0 for r in ("used", "confidence", "per_anchor", "near_duplicate", "balance")}
        positions, anchors = self._candidates(sources)
        with counting(self.teacher) as counts:
            probs = self._teacher_probs(positions)
        start = time.perf_counter()
        logits = student(self.tokens.select(positions.tolist())) if len(positions) else np.zeros((0, 1))
        seconds = round(time.perf_counter() - start, 3)
        order, labels = self._ranked(probs, logits, rejected)
        n_random = int(round(share * min(k, len(positions))))
        picker = Picker(self.nearest.vectors[positions], self.near_de[positions], self.scfg.near_duplicate,
                        self.scfg.per_anchor, self._quotas(k - n_random, d.labels))
        chosen = picker.pick(order, k - n_random, anchors, labels, rejected)
        drawn = self._random(positions, chosen, n_random, key)
        out = self._expansion(positions, anchors, probs, chosen + drawn, sources, rejected)
        out.stats.teacher, out.stats.student_seconds, out.stats.random = counts, seconds, len(drawn)
        return out

    def _ranked(self, probs: np.ndarray, logits: np.ndarray, rejected: dict) -> tuple[np.ndarray, np.ndarray]:
        """Candidate positions (into ``probs``) best first, and the teacher's label of each candidate."""
        score = divergence(probs, logits, self.regression)
        if self.regression:
            return np.argsort(-score, kind="stable"), np.zeros(len(probs), np.int64)
        confidence = probs.max(-1)
        if self.scfg.confidence == "weight":
            score = score * confidence
        keep = confidence >= self.acfg.min_teacher_confidence
        if self.scfg.confidence == "none":
            keep = np.ones(len(probs), bool)
        rejected["confidence"] = int((~keep).sum())
        order = np.argsort(-score, kind="stable")
        return order[keep[order]], probs.argmax(-1)

    def _quotas(self, k: int, d_labels: np.ndarray) -> dict[int, int] | None:
        if self.regression or not self.acfg.balance_generated:
            return None
        counts = np.bincount(np.asarray(d_labels, np.int64), minlength=self.expander.card.num_labels)
        return class_quotas(k, counts / counts.sum())

    def _random(self, positions: np.ndarray, chosen: list[int], n: int, key) -> list[int]:
        """``n`` candidates drawn uniformly from those not chosen (seeded by the run's seed and ``key``)."""
        if n <= 0:
            return []
        left = np.setdiff1d(np.arange(len(positions)), np.asarray(chosen, np.int64))
        rng = np.random.default_rng(stable_seed(self.seed, "select-random", key) % 2**32)
        return sorted(rng.choice(left, size=min(n, len(left)), replace=False).tolist())

    def _expansion(self, positions, anchors, probs, chosen, sources: Sources, rejected) -> Expansion:
        """The chosen candidates as an :class:`Expansion` (marked used), with the step's statistics."""
        chosen = np.asarray(chosen, np.int64)
        self.used[positions[chosen]] = True
        kept_probs, kept_anchors = probs[chosen], anchors[chosen]
        labels = kept_probs[:, 0] if self.regression else kept_probs.argmax(-1)
        gold = dict(zip(sources.idx.tolist(), sources.labels.tolist()))
        with_anchor = np.flatnonzero(kept_anchors >= 0)
        agree = _agreement(labels[with_anchor], [gold[a] for a in kept_anchors[with_anchor]], self.regression)
        considered = len(chosen) + rejected["near_duplicate"]
        stats = ExpansionStats(sources=len(sources.idx), variants=len(positions), scored=len(positions),
                               kept=len(chosen), rejected=rejected,
                               agreement_kept=float(agree.mean()) if len(agree) else None,
                               anchors=len(set(kept_anchors[with_anchor].tolist())),
                               near_duplicate_rate=rejected["near_duplicate"] / considered if considered else None)
        if not self.regression:
            stats.label_balance = {n: int((labels == c).sum()) for c, n in enumerate(self.expander.names)}
        return Expansion([self.pool.inputs[j] for j in positions[chosen]], kept_anchors, kept_probs, labels, stats)


def _agreement(labels: np.ndarray, gold, regression: bool) -> np.ndarray:
    gold = np.asarray(gold)
    if regression:
        return np.abs(np.asarray(labels, np.float64) - gold.astype(np.float64)) <= 0.5
    return np.asarray(labels, np.int64) == gold.astype(np.int64)
