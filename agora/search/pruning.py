"""Pruning Θ after a round, and the most fits a search can make (pure functions).

Method card
-----------
What: Agora trains one student per hyperparameter set θ of a finite Θ, then prunes Θ after every
round (de Wynter 2020, arXiv 2010.07990, and docs/method.md, "The loop", "Pruning"). Θ itself (θ an
ordered tuple of recipe values, most influential first) comes from the recipe
(:mod:`agora.config.space`).

- **Pruning** (:func:`prune`): remove the worst θ and every θ whose common prefix with it is the
  longest found (a prefix of length 0 is no kinship: then only the worst goes). Safeguard: at
  least ``min_prune_fraction`` of Θ goes (rounded up), next-worst first. A θ whose fit failed
  (diverged) is removed with its reason; in a round with failures the prefix rule does not fire
  (our choice: the failed θs are the worst). Ties in score are broken by a finer signal measured on
  the same E_sel (``tiebreak``: the mean log-likelihood of the gold labels), then against the later
  θ in Θ's order; and when the worst score is shared by several θs, the prefix rule does not fire
  (our choice: a tie is no evidence against a prefix; BORT's known failure is every student at the
  majority class, where every θ ties).
"""

from __future__ import annotations

import dataclasses
import math

from agora.config.space import describe, thetas  # noqa: F401  (Θ as the recipe states it)

@dataclasses.dataclass
class Pruning:
    """Which θs (positions in the ranked Θ) go, and why."""

    removed: list[int]
    reasons: dict[int, str]
    rule: str
    """``prefix``, ``tie``, ``failed``, each possibly ``+safeguard``."""
    tie: bool = False
    """The worst score was shared by several θs (the tie-breaker, or Θ's order, chose)."""


def common_prefix(a: tuple, b: tuple) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def rank_key(score: float | None, tiebreak: float | None, position: int) -> tuple:
    """Sort key of a θ, best last: score, then the tie-breaker, then the earlier θ in Θ's order."""
    return (-math.inf if score is None else score, -math.inf if tiebreak is None else tiebreak, -position)


def prune(theta_list: list[tuple], scores: list[float | None], min_fraction: float = 0.25,
          tiebreak: list[float | None] | None = None) -> Pruning:
    """Pruning after a round (docs/method.md, "Pruning").

    Args:
        theta_list: Θ in its order (ordered tuples, most influential value first).
        scores: E_sel score of each θ (higher is better); None for a failed fit.
        min_fraction: safeguard, the least share of Θ removed (rounded up, at least one θ).
        tiebreak: a finer score of each θ on the same E_sel (higher is better), used where scores tie.

    Returns:
        A :class:`Pruning` of positions into ``theta_list``.

    Example:
        >>> p = prune([(1, 0), (1, 1), (2, 0), (2, 1)], [0.9, 0.8, 0.5, 0.7], 0.25)
        >>> p.removed, p.rule
        ([2, 3], 'prefix')
    """
    n = len(theta_list)
    if n == 0:
        return Pruning([], {}, "empty")
    tiebreak = tiebreak or [None] * n
    # rank worst first; a failed fit is worst; ties: the tie-breaker, then the later θ is worse
    order = sorted(range(n), key=lambda i: rank_key(scores[i], tiebreak[i], i))
    reasons: dict[int, str] = {}
    failed = [i for i in range(n) if scores[i] is None]
    tie = False
    if failed:
        rule = "failed"
        for i in failed:
            reasons[i] = "failed fit"
    else:
        worst = order[0]
        tie = sum(scores[i] == scores[worst] for i in range(n)) > 1
        if tie:  # no prefix is pruned on a tie: only the worst by the tie-breaker goes
            rule = "tie"
            reasons[worst] = "worst score, tied: the lowest E_sel log-likelihood among the tied"
        else:
            rule = "prefix"
            reasons[worst] = "worst score"
            lengths = {i: common_prefix(theta_list[i], theta_list[worst]) for i in range(n) if i != worst}
            longest = max(lengths.values(), default=0)
            if longest > 0:
                for i, length in lengths.items():
                    if length == longest:
                        reasons[i] = f"shares the first {longest} value(s) with the worst θ"
    need = min(n, max(1, math.ceil(min_fraction * n - 1e-9)))
    for i in order:
        if len(reasons) >= need:
            break
        if i not in reasons:
            reasons[i] = f"safeguard: at least {min_fraction:g} of Θ goes"
            rule = rule.split("+")[0] + "+safeguard"
    return Pruning(sorted(reasons), reasons, rule, tie)


def max_fits(n_thetas: int, min_fraction: float, max_replays: int, max_rounds: int | None = None) -> int:
    """The most fits a search can make (every round replayed the most, the least pruned)."""
    total, n, rounds = 0, n_thetas, 0
    while n > 0 and (max_rounds is None or rounds < max_rounds):
        for _ in range(1 + max_replays):
            if max_rounds is not None and rounds >= max_rounds:
                break
            total += n
            rounds += 1
        n -= min(n, max(1, math.ceil(min_fraction * n - 1e-9)))
    return total
