"""E, the evaluation set of Agora, carved from the training split and cut in two halves.

Method card
-----------
What: Agora collects the student's mistakes on an evaluation set E and generates new training
inputs from them (de Wynter 2020, arXiv 2010.07990). Our choice (docs/method.md, "E, cut in
two"): E is a stratified slice of train, kept out of the training data D, the same size as the
official dev set and at most ``e_max_fraction`` (20%) of train. It is cut into ``E_gen`` (its
mistakes drive generation) and ``E_sel`` (ranks models and
rounds; never used for generation), so that variants of E's rows cannot inflate the score used to
rank, and the official dev set stays an honest measure.

Stratification: by label for classification, by quintile of the score for regression. Within
each stratum rows are shuffled with ``numpy.random.default_rng(seed)``; each stratum gives E its
proportional share (largest remainders), and E's rows alternate between E_gen and E_sel, so both
halves keep the class balance and differ in size by at most one row.

Hyperparameters: ``agora.e_size`` (default: dev size, capped), ``agora.e_max_fraction`` (0.2),
the run's ``seed``. ``agora.eval_on: dev`` skips all this (E = dev for both roles, the
paper-faithful variant).

:class:`EvalSet` is the one place that reads these settings: whether a fit carves E, with which
seed and size, whether E_gen is evaluated, which split picks the best epoch, which split's
mistakes drive generation. The data module, the fit, the Agora callback and the search ask it.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from agora.errors import RecipeError


@dataclasses.dataclass(frozen=True)
class EvalSet:
    """E for one fit, decided from its recipe (``agora.*`` and the ``trial`` section of a search's fit).

    - ``carve``: E is carved from train: Agora is on, or the fit is one of Agora's rounds (the plain
      baseline of a search is ranked on the same E_sel).
    - ``on_dev``: ``agora.eval_on: dev``: E is the dev set, nothing is carved (paper-faithful).
    - ``seed``: E's seed: the search's (``trial.e_seed``, the same for every θ), else the run's.
    - ``e_gen``: E_gen is evaluated every epoch (Agora on, and its mistakes are needed).
    - ``select``: the split whose main metric picks the best epoch: ``e_sel`` in a search's fit,
      else the dev set.
    - ``gen``: the split whose mistakes drive generation: ``e_gen``, or dev with ``eval_on: dev``.
    - ``extra_rows``: D's additions (a JSONL file written by the search), appended after E is carved.
    """

    carve: bool
    on_dev: bool
    seed: int
    size: int | None
    max_fraction: float
    gen_size: int | None
    e_gen: bool
    select: str
    gen: str
    extra_rows: str | None = None

    @classmethod
    def of(cls, cfg, card) -> "EvalSet":
        acfg, trial = cfg.agora, cfg.trial
        on_dev = acfg.eval_on == "dev"
        carve = (acfg.enabled or trial is not None) and card.train_split is not None
        mistakes_needed = trial is not None or (acfg.expand_every_n_epochs > 0 and acfg.expand_from == "mistakes")
        return cls(
            carve=carve, on_dev=on_dev, seed=cfg.seed if trial is None else trial.e_seed, size=acfg.e_size,
            max_fraction=acfg.e_max_fraction, gen_size=acfg.e_gen_size, e_gen=carve and acfg.enabled and mistakes_needed and not on_dev,
            select=card.select_split if on_dev or trial is None else "e_sel",
            gen=card.select_split if on_dev else "e_gen",
            extra_rows=None if trial is None else trial.extra_rows,
        )

    @property
    def tiebreak(self) -> str | None:
        """The split whose log-likelihood of the gold labels breaks ties between equal scores: ``e_sel``
        where E is carved, else none."""
        return "e_sel" if self.carve and not self.on_dev else None

    def size_for(self, n_train: int, n_dev: int | None) -> int:
        """Rows of E for a training split of ``n_train`` rows and a dev set of ``n_dev`` (None: none)."""
        return self.size or default_e_size(n_train, n_dev or n_train, self.max_fraction)

    def d_size(self, n_train: int, n_dev: int | None) -> int:
        """Rows of D before any addition: train minus E (all of train with ``eval_on: dev``)."""
        return n_train if self.on_dev or not self.carve else n_train - self.size_for(n_train, n_dev)


def default_e_size(n_train: int, n_dev: int, max_fraction: float = 0.2) -> int:
    """The dev set's size, capped at ``max_fraction`` of train, at least 2 (one row per half)."""
    return max(2, min(int(n_dev), int(math.floor(max_fraction * n_train))))


def strata(labels: np.ndarray, regression: bool, bins: int = 5) -> np.ndarray:
    """Stratum id of every row: the label, or the score's quantile bin for regression."""
    labels = np.asarray(labels)
    if not regression:
        return labels.astype(np.int64)
    edges = np.quantile(labels, np.linspace(0, 1, bins + 1)[1:-1])
    return np.searchsorted(edges, labels, side="right").astype(np.int64)


def _quota(counts: np.ndarray, total: int) -> np.ndarray:
    """``total`` shared in proportion to ``counts`` by largest remainders."""
    exact = counts * total / max(1, counts.sum())
    quota = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - quota), kind="stable")[: total - quota.sum()]:
        quota[i] += 1
    return quota


def split_e(labels, size: int, seed: int, regression: bool = False,
            gen_size: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions ``(D, E_gen, E_sel)``: a stratified E of ``size`` rows cut in two halves (or, with
    ``gen_size``, into a stratified E_gen of that many rows and E_sel, the rest).

    Args:
        labels: ``[n]`` labels of the training split (class ids, or scores for regression).
        size: rows of E, in [2, n - 1].
        seed: the only source of randomness.
        regression: stratify by score quintile instead of by class.
        gen_size: rows of E_gen (default: half of E, the rows alternating between the halves).

    Returns:
        Three sorted int64 position arrays that partition ``range(n)``.

    Raises:
        RecipeError (a ValueError): ``size`` leaves no row for D or none for one half.

    Example:
        >>> d, gen, sel = split_e(np.array([0, 1] * 10), size=6, seed=0)
        >>> len(d), len(gen), len(sel)
        (14, 3, 3)
    """
    labels = np.asarray(labels)
    n = len(labels)
    if not 2 <= size <= n - 1:
        raise RecipeError(
            f"agora.e_size must leave at least one training row and give each half of E one row: "
            f"got {size} for a training split of {n} rows"
        )
    if gen_size is not None and not 1 <= gen_size <= size - 1:
        raise RecipeError(f"agora.e_gen_size must leave E_sel a row: got {gen_size} for an E of {size} rows")
    groups = strata(labels, regression)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(groups, return_counts=True)
    quota = _quota(counts, size)
    chosen = [rng.permutation(np.flatnonzero(groups == c))[:q] for c, q in zip(classes, quota)]
    e = np.concatenate(chosen)
    if gen_size is None:
        gen, sel = e[0::2], e[1::2]
    else:  # each stratum gives E_gen its share of gen_size: both parts keep the class balance
        shares = _quota(quota, gen_size)
        gen = np.concatenate([c[:g] for c, g in zip(chosen, shares)])
        sel = np.concatenate([c[g:] for c, g in zip(chosen, shares)])
    d = np.setdiff1d(np.arange(n), e)
    return d, np.sort(gen), np.sort(sel)
