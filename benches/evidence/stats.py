"""Paired comparisons of arms over seeds: t-tests, Holm's correction, 95% confidence intervals.

A contrast compares two arms on the same seeds (each seed has its own draw of D, E and the pool, so
the pairs share everything but the arm). The paired t-test's statistic is the mean difference over
its standard error, with n - 1 degrees of freedom; the 95% confidence interval is the mean difference
plus or minus the 97.5% t quantile times the standard error. Holm's step-down correction controls
the family-wise error over the contrasts fixed before the run: sort the p-values, multiply the k-th
smallest (k from 0) by (m - k), keep the running maximum, cap at 1. Beside each verdict the report
gives the Holm-adjusted interval: the confidence interval at level 1 - 0.05 / (m - k), k the contrast's
rank in that order (the level its own test meets at its Holm step). A contrast ranked after one that
failed is not significant even where its adjusted interval leaves out 0: the step-down stops there.
"""

from __future__ import annotations

import dataclasses
import math

from scipy import stats as _stats


@dataclasses.dataclass
class Paired:
    """One paired comparison (``a`` - ``b``), in the units of the scores given (points)."""

    name: str
    n: int
    mean: float
    ci_low: float
    ci_high: float
    t: float
    p: float
    p_holm: float | None = None
    se: float | None = None
    """The standard error of the mean difference."""
    holm_level: float | None = None
    """The level of the Holm-adjusted interval: 1 - alpha / (m - k), k the rank of ``p`` (set by :func:`holm`)."""

    def interval(self, level: float) -> tuple[float, float]:
        """The confidence interval of the mean difference at ``level``."""
        if not self.se:
            return self.mean, self.mean
        q = _stats.t.ppf(0.5 + level / 2, self.n - 1)
        return self.mean - q * self.se, self.mean + q * self.se

    @property
    def holm_interval(self) -> tuple[float, float] | None:
        return None if self.holm_level is None else self.interval(self.holm_level)

    @property
    def significant(self) -> bool:
        return self.p_holm is not None and self.p_holm < 0.05


def paired(name: str, a: list[float], b: list[float], confidence: float = 0.95) -> Paired:
    """The paired t-test of ``a`` against ``b`` (same length, paired by position), two-sided."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"{name}: a paired test needs two equal lists of at least 2 values ({len(a)}, {len(b)})")
    diffs = [x - y for x, y in zip(a, b)]
    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    se = sd / math.sqrt(n)
    q = _stats.t.ppf(0.5 + confidence / 2, n - 1)
    if se == 0:  # identical differences: no spread; the sign of the mean decides
        t = 0.0 if mean == 0 else math.copysign(math.inf, mean)
        p = 1.0 if mean == 0 else 0.0
    else:
        t = mean / se
        p = float(2 * _stats.t.sf(abs(t), n - 1))
    return Paired(name, n, mean, mean - q * se, mean + q * se, t, p, se=se)


def holm(results: list[Paired], alpha: float = 0.05) -> list[Paired]:
    """Holm's step-down adjusted p-values over ``results``, and each one's adjusted interval level (set in
    place, and returned)."""
    order = sorted(range(len(results)), key=lambda i: results[i].p)
    m, running = len(results), 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * results[i].p))
        results[i].p_holm = running
        results[i].holm_level = 1 - alpha / (m - k)
    return results
