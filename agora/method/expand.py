"""Data expansion: mistakes -> variants (G) -> teacher labels (S) -> filters -> new training rows.

Method card
-----------
What: the step of Agora that grows the training data D (de Wynter 2020, arXiv 2010.07990): take
the examples of E the student gets wrong, generate new inputs from them with G, label them with
the oracle S, append them to D. Pure functions: the in-run callback
(:class:`agora.method.callback.AgoraCallback`) and the outer loop over rounds both call :func:`expand`.

Steps of :func:`expand`, in order, each counted in ``stats``:

1. ``generate`` ``n_per_source`` variants of every source with G, one seeded RNG per
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

Hyperparameters: the generator and its settings, ``variants_per_mistake`` (``n_per_source``),
``min_teacher_confidence``, ``require_agreement``, ``balance_generated``.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence

import numpy as np

from agora.data.formats import find_mistakes  # noqa: F401  (the mistakes Agora expands)
from agora.method.generators import Segments, generate, make_generator

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
class Expansion:
    """The rows an expansion keeps, in generation order, and what happened to the others."""

    variants: list[Segments]
    source_ids: np.ndarray
    """int64 id (e.g. dataset idx) of each kept variant's source."""
    probs: np.ndarray
    """float32 ``[k, C]`` teacher probabilities (``[k, 1]`` scores for regression)."""
    labels: np.ndarray
    """Teacher hard labels (int64) or scores (float32 for regression)."""
    stats: dict


def expand(
    sources: Sequence[Segments],
    source_ids: Sequence[int],
    source_labels: Sequence,
    score: Callable[[list[Segments]], np.ndarray],
    *,
    generator,
    n_per_source: int,
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
) -> Expansion:
    """Generate variants of ``sources``, label them with ``score`` (the teacher), filter them.

    Args:
        sources: inputs as tuples of segments (``(text_a,)`` or ``(text_a, text_b)``, ...).
        source_ids: an int id per source (its dataset idx); seeds its RNG and is kept per row.
        source_labels: gold labels of the sources (agreement statistics only).
        score: ``list of inputs -> [n, C]`` teacher probabilities (``[n, 1]`` scores for regression).
        generator: a name (``eda``, ``mlm``, an import path) or a callable; see agora.method.generators.
        n_per_source: variants wanted per source.
        seed, key: the RNG of a source is seeded from ``(seed, key, source id)``.
        settings: keyword settings of the generator.
        min_confidence: drop rows whose largest teacher probability is below it.
        class_prior: D's label proportions; given, classes are balanced to it.
        label_names: names for ``stats["label_balance"]`` (defaults to the class ids).
        regression: teacher outputs are scores; no confidence filter or balancing.
        seen: inputs already in the training data; variants among them are dropped. Not modified.
        require_agreement: drop rows whose teacher label disagrees with their source's gold label.
        balance_first: balance classes before the agreement check (default: after it).

    Returns:
        An :class:`Expansion`. Warns with :class:`AgoraWarning` when G returns nothing for every source.
    """
    seen = seen if seen is not None else set()
    ids = [int(i) for i in source_ids]
    gold = np.asarray(source_labels)
    result = generate(list(sources), generator, n_per_source, seed,
                      keys=[[key, i] for i in ids], **(settings or {}))
    rejected = {reason: 0 for reason in REJECT_REASONS}
    rejected.update({k: int(v) for k, v in result.rejected.items()})
    stats = {"sources": len(sources), "variants": len(result.variants)}
    width = 1 if regression else len(label_names or []) or 0
    empty = Expansion([], np.zeros(0, np.int64), np.zeros((0, width), np.float32),
                      np.zeros(0, np.float32 if regression else np.int64), stats)
    if len(sources) and not result.variants:
        name = generator if isinstance(generator, str) else getattr(generator, "name", None) or getattr(
            generator, "__name__", repr(generator))
        warnings.warn(f"Agora: generator {name!r} returned no variant for any of the {len(sources)} "
                      "source examples; nothing is added this time", AgoraWarning, stacklevel=2)
    fresh = [j for j, v in enumerate(result.variants) if v not in seen]
    rejected["seen"] = len(result.variants) - len(fresh)
    variants = [result.variants[j] for j in fresh]
    positions = np.asarray([result.sources[j] for j in fresh], dtype=np.int64)
    if not variants:
        empty.stats.update(_summary(rejected, empty, gold, positions, None, label_names, regression))
        return empty
    probs = np.asarray(score(variants), dtype=np.float32)
    if regression:
        labels = probs[:, 0].astype(np.float32)
        keep = np.ones(len(variants), dtype=bool)
    else:
        labels = probs.argmax(-1).astype(np.int64)
        confidence = probs.max(-1)
        keep = confidence >= min_confidence
        rejected["confidence"] = int((~keep).sum())
    agree_all = _agreement(labels, gold[positions], regression)

    def agreement_filter(keep):
        rejected["disagree"] = int((keep & ~agree_all).sum())
        return keep & agree_all

    def balance_filter(keep):
        if regression or class_prior is None or not keep.any():
            return keep
        balanced = np.zeros_like(keep)
        balanced[keep] = balance_mask(labels[keep], confidence[keep], class_prior)
        rejected["balance"] = int(keep.sum() - balanced.sum())
        return balanced

    if require_agreement and not balance_first:
        keep = agreement_filter(keep)
    keep = balance_filter(keep)
    if require_agreement and balance_first:
        keep = agreement_filter(keep)
    kept = np.flatnonzero(keep)
    out = Expansion([variants[j] for j in kept], np.asarray(ids, dtype=np.int64)[positions[kept]],
                    probs[kept], labels[kept], stats)
    stats.update(_summary(rejected, out, gold, positions[kept], agree_all, label_names, regression, labels))
    return out


def _agreement(teacher_labels, gold, regression) -> np.ndarray:
    if regression:
        return np.abs(np.asarray(teacher_labels, np.float64) - np.asarray(gold, np.float64)) <= 0.5
    return np.asarray(teacher_labels) == np.asarray(gold).astype(np.int64)


def _summary(rejected, out: Expansion, gold, kept_positions, agree_all, label_names, regression,
             scored_labels=None) -> dict:
    summary = {"scored": 0 if agree_all is None else int(len(agree_all)), "kept": len(out.variants),
               "rejected": dict(rejected)}
    summary["agreement"] = float(agree_all.mean()) if agree_all is not None and len(agree_all) else None
    agree_kept = _agreement(out.labels, gold[kept_positions], regression) if len(out.variants) else None
    summary["agreement_kept"] = float(agree_kept.mean()) if agree_kept is not None else None
    if not regression:
        names = list(label_names) if label_names else [str(c) for c in range(int(out.labels.max(initial=-1)) + 1)]
        summary["label_balance"] = {n: int((out.labels == c).sum()) for c, n in enumerate(names)}
        if scored_labels is not None and agree_all is not None:
            # per teacher label: variants scored and how many agree with their source's gold label (why
            # class balancing can keep disagreeing rows: see the method card)
            summary["agreement_by_label"] = {n: [int((scored_labels == c).sum()),
                                                 int(((scored_labels == c) & agree_all).sum())]
                                             for c, n in enumerate(names)}
    return summary


@dataclasses.dataclass
class Sources:
    """Rows variants are made from: idx, inputs (text segments) and gold labels."""

    idx: np.ndarray
    inputs: list[Segments]
    labels: np.ndarray

    @classmethod
    def of(cls, dm, split: str) -> "Sources":
        return cls(*dm.inputs(split))

    def only(self, idx) -> "Sources":
        keep = np.isin(self.idx, np.asarray(idx, dtype=np.int64))
        return Sources(self.idx[keep], [x for x, k in zip(self.inputs, keep) if k], self.labels[keep])


def known_inputs(dm, *more) -> set:
    """Inputs a variant must not repeat: D's, E_gen's and E_sel's (and ``more``: rows added so far)."""
    seen = set()
    for split in (dm.card.train_split, "e_gen", "e_sel"):
        seen.update(dm.inputs(split)[1])
    for rows in more:
        seen.update(tuple(r) for r in rows)
    return seen


class Expander:
    """Agora's expansion step as the recipe sets it (``agora.*``, :class:`agora.config.AgoraConfig`),
    shared by the in-run callback (after an epoch) and the search (between rounds).

    Args:
        acfg: the ``agora`` section (generator, variants per source, confidence, agreement, balance).
        card: the task card (labels, regression).
        score: the teacher, ``list of inputs -> [n, C]`` probabilities (scores for regression).
        seed: the run's seed; each expansion's ``key`` (an epoch, a round) gives new variants.

    A generator that draws from the unlabelled pool (``nearest``) is prepared with it first
    (:meth:`prepare`); its state (the pool rows it has returned) is ``generator.state_dict()``.
    """

    def __init__(self, acfg, card, score: Callable[[list[Segments]], np.ndarray], seed: int):
        self.acfg, self.card, self.score, self.seed = acfg, card, score, seed
        self.regression = card.format == "regression"
        self.names = list(card.labels) if card.labels else [str(i) for i in range(card.num_labels)]
        self.generator = make_generator(acfg.generator, acfg.generator_settings)

    def prepare(self, pool, default_model: str | None, cache_dir) -> None:
        """Give a pool-drawing generator its pool (embedded once, cached under ``cache_dir``)."""
        if getattr(self.generator, "needs_pool", False):
            self.generator.prepare(pool, default_model=default_model, cache_dir=cache_dir)

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

    def __call__(self, sources: Sources, key, seen: set, d_labels: np.ndarray) -> Expansion:
        """Variants of ``sources`` labelled by the teacher and filtered (:func:`expand`); classes are
        balanced to ``d_labels``' proportions with ``balance_generated``."""
        acfg = self.acfg
        prior = None
        if acfg.balance_generated and not self.regression:
            counts = np.bincount(np.asarray(d_labels, np.int64), minlength=self.card.num_labels)
            prior = counts / counts.sum()
        return expand(sources.inputs, sources.idx, sources.labels, self.score, generator=self.generator,
                      n_per_source=acfg.variants_per_mistake, seed=self.seed, key=key,
                      min_confidence=acfg.min_teacher_confidence,
                      class_prior=prior, label_names=None if self.regression else self.names,
                      regression=self.regression, seen=seen, require_agreement=acfg.require_agreement,
                      balance_first=acfg.balance_first)
