"""Data expansion: mistakes -> variants (G) -> teacher labels (S) -> filters -> new training rows.

Method card
-----------
What: the step of Agora that grows the training data D (de Wynter 2020, arXiv 2010.07990): take
the examples of E the student gets wrong, generate new inputs from them with G, label them with
the oracle S, append them to D. :func:`expand` is the pure function; :class:`Expander` owns the whole
step (sources, seen inputs, the teacher's counts) for the in-run callback
(:class:`agora.method.callback.AgoraCallback`) and for the outer loop over rounds
(:class:`agora.search.grow.Grower`) alike.

Steps of :func:`expand`, in order, each counted in ``stats``:

1. ``generate`` ``variants_per_source`` variants of every source with G, one seeded RNG per
   ``(seed, key, source id)`` (reproducible; a new ``key``, e.g. the epoch, gives new variants).
   G's own rejections are counted (``band``: outside the mlm token-Jaccard band;
   ``identical``; ``duplicate``). If G returns nothing at all, an :class:`AgoraWarning` is issued
   and nothing is added (never an error).
2. Drop variants already in the training data or generated earlier (``seen``; our choice).
3. Label the rest with S (through its cache: each distinct input is scored once, ever).
4. Drop rows whose teacher confidence (largest probability) is below ``min_confidence``
   (``confidence``; docs/method.md, "Expand"). Not applied to regression.
   With ``require_agreement``, also drop rows whose teacher label differs from their source's gold
   label (``disagree``; regression: ``|S - gold| > 0.5``; our addition: a later epoch's mistakes are
   mostly the teacher's own, and their variants would teach the student the teacher's errors).
5. Optionally balance classes (``balance``): cap each class so the kept rows follow ``class_prior``
   (D's label proportions), keeping the most confident rows (docs/method.md, "Expand": why the
   balance is on by default; the cap is our choice). Classes with no generated row are ignored. The
   agreement check comes before the balancing unless ``balance_first``. Why the order matters: a
   student's mistakes lean to one class (its sources are mostly of the class it misses), so most
   variants get that class from the teacher and agree with their gold label, and the few of the
   other class are mostly the teacher's disagreements. Balancing caps the common class down to the
   rare one, so without the agreement check it keeps the disagreeing rows preferentially
   (``agreement_by_label`` reports, per teacher label, the variants scored and how many agree).

Reported: sources, variants, rejections by reason, rows kept, label balance of the kept rows,
and the agreement between S's label on a variant and its source's gold label (over all scored
variants and over the kept ones; regression: ``|S - gold| <= 0.5``).

Hyperparameters: the generator and its settings, ``variants_per_source``,
``min_teacher_confidence``, ``require_agreement``, ``balance_generated``.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence

import numpy as np

from agora.data.formats import find_mistakes  # noqa: F401  (the mistakes Agora expands)
from agora.fit.contract import FitData
from agora.method.generators import GenerationResult, Segments, make_generator
from agora.method.generated import Expansion, ExpansionStats, counting

REJECT_REASONS = ("band", "identical", "duplicate", "used", "seen", "confidence", "disagree", "balance")


class AgoraWarning(UserWarning):
    """Something in Agora did not work out but the run goes on (e.g. G produced nothing)."""


def balance_mask(labels: np.ndarray, confidence: np.ndarray, class_prior: np.ndarray) -> np.ndarray:
    """Keep-mask that caps each class to ``class_prior``, most confident rows first.

    With ``k_c`` rows of class c and prior ``p_c``, the largest total T with ``T * p_c <= k_c`` for
    every class present is ``min_c k_c / p_c``; class c keeps ``floor(T * p_c)`` rows (at least 1).

    Example:
        >>> balance_mask(np.array([0, 0, 0, 1]), np.array([.9, .8, .7, .6]), np.array([.5, .5])).tolist()
        [True, False, False, True]
    """
    labels = np.asarray(labels, dtype=np.int64)
    prior = np.asarray(class_prior, dtype=np.float64)
    keep = np.zeros(len(labels), dtype=bool)
    present = [c for c in np.unique(labels) if prior[c] > 0]
    if not present:
        return keep
    total = min(np.sum(labels == c) / prior[c] for c in present)
    for c in present:
        rows = np.flatnonzero(labels == c)
        cap = max(1, int(np.floor(total * prior[c] + 1e-9)))
        keep[rows[np.argsort(-confidence[rows], kind="stable")[:cap]]] = True
    return keep


@dataclasses.dataclass
class _Filters:
    """The filters of one expansion (steps 4 and 5 of the module docstring)."""

    min_confidence: float = 0.0
    class_prior: np.ndarray | None = None
    regression: bool = False
    require_agreement: bool = False
    balance_first: bool = False

    def keep(self, probs: np.ndarray, labels: np.ndarray, agree: np.ndarray, rejected: dict) -> np.ndarray:
        """The keep-mask of the scored variants; counts each filter's rejections in ``rejected``."""
        confidence = probs.max(-1)
        keep = np.ones(len(probs), dtype=bool) if self.regression else confidence >= self.min_confidence
        if not self.regression:
            rejected["confidence"] = int((~keep).sum())
        if self.require_agreement and not self.balance_first:
            keep = self._agreeing(keep, agree, rejected)
        if not self.regression and self.class_prior is not None and keep.any():
            balanced = np.zeros_like(keep)
            balanced[keep] = balance_mask(labels[keep], confidence[keep], self.class_prior)
            rejected["balance"] = int(keep.sum() - balanced.sum())
            keep = balanced
        if self.require_agreement and self.balance_first:
            keep = self._agreeing(keep, agree, rejected)
        return keep

    @staticmethod
    def _agreeing(keep: np.ndarray, agree: np.ndarray, rejected: dict) -> np.ndarray:
        rejected["disagree"] = int((keep & ~agree).sum())
        return keep & agree


def expand(
    sources: Sequence[Segments],
    source_ids: Sequence[int],
    source_labels: Sequence,
    score: Callable[[list[Segments]], np.ndarray],
    *,
    generator,
    variants_per_source: int,
    seed: int,
    key=0,
    settings: dict | None = None,
    min_confidence: float = 0.0,
    class_prior: np.ndarray | None = None,
    label_names: Sequence[str] | None = None,
    regression: bool = False,
    seen: set | None = None,
    require_agreement: bool = False,
    balance_first: bool = False,
    balance_by: str = "teacher",
) -> Expansion:
    """Generate variants of ``sources``, label them with ``score`` (the teacher), filter them.

    Args:
        sources: inputs as tuples of segments (``(text_a,)`` or ``(text_a, text_b)``, ...).
        source_ids: an int id per source (its dataset idx); seeds its RNG and is kept per row.
        source_labels: gold labels of the sources (agreement statistics only).
        score: ``list of inputs -> [n, C]`` teacher probabilities (``[n, 1]`` scores for regression).
        generator: a name (``eda``, ``mlm``, an import path) or a generator; see agora.method.generators.
        variants_per_source: variants wanted per source.
        seed, key, settings: a source's RNG is seeded from ``(seed, key, source id)``; G's keyword settings.
        min_confidence, class_prior: drop rows whose largest teacher probability is below it; balance
            classes to D's label proportions (given).
        label_names, regression: names for ``stats.label_balance``; scores, not classes (no balancing).
        seen: inputs already in the training data (not modified); variants among them are dropped.
        require_agreement, balance_first, balance_by: drop rows whose teacher label disagrees with their
            source's gold label; balance before that check; balance on the teacher's labels (``teacher``)
            or, before it scores, on the sources' gold labels (``source``: none is scored in vain).

    Returns an :class:`Expansion`; warns (:class:`AgoraWarning`) when G returns nothing for every source.
    """
    ids, gold = np.asarray([int(i) for i in source_ids], dtype=np.int64), np.asarray(source_labels)
    keys = [[key, i] for i in ids.tolist()]
    result = make_generator(generator, settings).generate(list(sources), variants_per_source, seed, keys)
    _warn_if_empty(result, len(sources), generator)
    variants, positions, rejected = _fresh(result, seen or set())
    if balance_by == "source" and class_prior is not None and not regression:
        variants, positions = _balance_on_sources(variants, positions, gold, class_prior, rejected)
        class_prior = None
    stats = ExpansionStats(sources=len(sources), variants=len(result.variants), rejected=rejected)
    if not variants:
        return Expansion.empty(1 if regression else len(label_names or []), regression, stats, label_names)
    probs = np.asarray(score(variants), dtype=np.float32)
    labels = probs[:, 0].astype(np.float32) if regression else probs.argmax(-1).astype(np.int64)
    agree = _agreement(labels, gold[positions], regression)
    filters = _Filters(min_confidence, class_prior, regression, require_agreement, balance_first)
    kept = np.flatnonzero(filters.keep(probs, labels, agree, rejected))
    out = Expansion([variants[j] for j in kept], ids[positions[kept]], probs[kept], labels[kept], stats)
    stats.summarise(labels, agree, kept, label_names, regression)
    stats.anchors = len(set(out.source_ids.tolist()))
    return out


def _fresh(result: GenerationResult, seen: set) -> tuple[list[Segments], np.ndarray, dict[str, int]]:
    """G's variants not in ``seen``, their sources' positions, and the rejections so far by reason."""
    rejected = {reason: 0 for reason in REJECT_REASONS}
    rejected.update({k: int(v) for k, v in result.rejected.items()})
    fresh = [j for j, v in enumerate(result.variants) if v not in seen]
    rejected["seen"] = len(result.variants) - len(fresh)
    return [result.variants[j] for j in fresh], np.asarray([result.sources[j] for j in fresh], np.int64), rejected


def _balance_on_sources(variants, positions, gold, class_prior, rejected) -> tuple[list[Segments], np.ndarray]:
    """``balance_by: source``: cap the variants per source gold class to ``class_prior`` before the teacher
    scores them (earlier variants first)."""
    keep = balance_mask(gold[positions].astype(np.int64), -np.arange(len(variants), dtype=np.float64), class_prior)
    rejected["balance"] = int((~keep).sum())
    return [v for v, k in zip(variants, keep) if k], positions[keep]


def _warn_if_empty(result: GenerationResult, n_sources: int, generator) -> None:
    if n_sources and not result.variants:
        name = generator if isinstance(generator, str) else make_generator(generator).name
        warnings.warn(f"Agora: generator {name!r} returned no variant for any of the {n_sources} "
                      "source examples; nothing is added this time", AgoraWarning, stacklevel=3)


def _agreement(teacher_labels, gold, regression) -> np.ndarray:
    if regression:
        return np.abs(np.asarray(teacher_labels, np.float64) - np.asarray(gold, np.float64)) <= 0.5
    return np.asarray(teacher_labels) == np.asarray(gold).astype(np.int64)


@dataclasses.dataclass
class Sources:
    """Rows variants are made from: idx, inputs (text segments) and gold labels."""

    idx: np.ndarray
    inputs: list[Segments]
    labels: np.ndarray

    @classmethod
    def of(cls, data: FitData, split: str) -> "Sources":
        return cls(*data.inputs(split))

    def only(self, idx) -> "Sources":
        keep = np.isin(self.idx, np.asarray(idx, dtype=np.int64))
        return Sources(self.idx[keep], [x for x, k in zip(self.inputs, keep) if k], self.labels[keep])


def known_inputs(data: FitData, *more) -> set:
    """Inputs a variant must not repeat: D's, E_gen's and E_sel's (and ``more``: rows added so far)."""
    seen = set()
    for split in (data.card.train_split, "e_gen", "e_sel"):
        seen.update(data.inputs(split)[1])
    for rows in more:
        seen.update(tuple(r) for r in rows)
    return seen


class Expander:
    """Agora's expansion step as the recipe sets it (``agora.*``, :class:`agora.config.AgoraConfig`), the
    one step of the in-run callback (after an epoch) and of the search (between rounds): mistakes, the
    inputs added so far and a key go in (:meth:`step`); a typed :class:`Expansion` comes out, with its
    statistics and the teacher's counts.

    Args:
        acfg: the ``agora`` section (generator, variants per source, confidence, agreement, balance).
        card: the task card (labels, regression).
        teacher: the teacher S (:class:`agora.method.teacher.Teacher`: ``score``, ``forward_calls``,
            ``cache.hits``).
        seed: the run's seed; each expansion's ``key`` (an epoch, a round) gives new variants.

    A generator that draws from the unlabelled pool (``needs_pool``) is prepared with it first
    (:meth:`prepare`); its state (the pool rows it has returned) is ``generator.state_dict()``.
    """

    def __init__(self, acfg, card, teacher, seed: int):
        self.acfg, self.card, self.teacher, self.seed = acfg, card, teacher, seed
        self.regression = card.format == "regression"
        self.names = list(card.labels) if card.labels else [str(i) for i in range(card.num_labels)]
        self.generator = make_generator(acfg.generator, acfg.generator_settings)

    def prepare(self, pool, default_model: str | None, cache_dir) -> None:
        """Give a pool-drawing generator its pool (embedded once, cached under ``cache_dir``) and the teacher."""
        if self.generator.needs_pool:
            self.generator.prepare(pool, default_model=default_model, cache_dir=cache_dir, teacher=self.teacher)

    def sources(self, e_gen: Sources, d: Sources, mistakes) -> Sources:
        """What ``agora.expand_from`` names: every row of D (``train``), of E_gen (``all``), or E_gen's
        rows whose idx is in ``mistakes`` (``mistakes``: the student's mistakes on E_gen)."""
        if self.acfg.expand_from == "train":
            return d
        if self.acfg.expand_from == "all":
            return e_gen
        if mistakes is None:
            raise RuntimeError("agora.expand_from: mistakes needs the student's predictions on e_gen")
        return e_gen.only(mistakes)

    def step(self, data: FitData, mistakes, key, added: Sequence[Segments] = ()) -> Expansion:
        """One expansion: the sources ``agora.expand_from`` names (``mistakes``: idx of E_gen rows the
        student gets wrong), their variants labelled by the teacher and filtered; variants already in D,
        E or ``added`` (the rows added so far) are dropped. ``key`` (an epoch, a round) seeds G."""
        d = Sources.of(data, self.card.train_split)
        sources = self.sources(Sources.of(data, "e_gen"), d, mistakes)
        seen = known_inputs(data, added)
        with counting(self.teacher) as counts:
            out = self(sources, key, seen, d.labels)
        out.stats.teacher = counts
        return out

    def __call__(self, sources: Sources, key, seen: set, d_labels: np.ndarray) -> Expansion:
        """Variants of ``sources`` labelled by the teacher and filtered (:func:`expand`); classes are
        balanced to ``d_labels``' proportions with ``balance_generated``."""
        acfg = self.acfg
        prior = None
        if acfg.balance_generated and not self.regression:
            counts = np.bincount(np.asarray(d_labels, np.int64), minlength=self.card.num_labels)
            prior = counts / counts.sum()
        return expand(sources.inputs, sources.idx, sources.labels, self.teacher.score, generator=self.generator,
                      variants_per_source=acfg.variants_per_source, seed=self.seed, key=key,
                      min_confidence=acfg.min_teacher_confidence,
                      class_prior=prior, label_names=None if self.regression else self.names,
                      regression=self.regression, seen=seen, require_agreement=acfg.require_agreement,
                      balance_first=acfg.balance_first, balance_by=acfg.balance_by)

    def label_pool(self, pool, size: int | str, seed: int) -> Expansion:
        """``size`` random rows of the unlabelled pool (``all``: every row) labelled by the teacher, every
        row kept (``agora.pool_rows``: distillation on unlabelled data, no filter)."""
        from agora.method.generators import stable_seed

        if size == "all":
            chosen = np.arange(len(pool))
        else:
            rng = np.random.default_rng(stable_seed(seed, "pool_rows") % 2**32)
            chosen = np.sort(rng.choice(len(pool), size=min(size, len(pool)), replace=False))
        inputs = [pool.inputs[j] for j in chosen]
        with counting(self.teacher) as counts:
            probs = np.asarray(self.teacher.score(inputs), np.float32)
        labels = probs[:, 0] if self.regression else probs.argmax(-1)
        stats = ExpansionStats(sources=len(inputs), variants=len(inputs), scored=len(inputs), kept=len(inputs),
                               teacher=counts)
        return Expansion(inputs, np.full(len(inputs), -1, np.int64), probs, labels, stats)
