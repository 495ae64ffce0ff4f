"""The evidence bench's statistics against scipy and hand-computed values on fixed numbers."""

import importlib.util
import sys
from pathlib import Path

import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]


def _stats_module():
    spec = importlib.util.spec_from_file_location("evidence_stats", ROOT / "benches" / "evidence" / "stats.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


A = [74.1, 72.3, 75.0, 71.8, 73.9, 76.2, 72.5, 74.4, 73.0, 75.5]
B = [71.2, 71.9, 72.4, 70.1, 72.8, 73.0, 71.1, 72.2, 72.9, 72.6]


def test_paired_t_test_matches_scipy():
    s = _stats_module()
    result = s.paired("a-b", A, B)
    expected = stats.ttest_rel(A, B)
    assert result.t == pytest.approx(expected.statistic) and result.p == pytest.approx(expected.pvalue)
    diffs = [a - b for a, b in zip(A, B)]
    ci = stats.t.interval(0.95, len(diffs) - 1, loc=sum(diffs) / len(diffs), scale=stats.sem(diffs))
    assert (result.ci_low, result.ci_high) == pytest.approx(ci)
    assert result.mean == pytest.approx(1.85) and result.n == 10


def test_holm_adjusts_step_down():
    s = _stats_module()
    results = [s.Paired(n, 10, 0, 0, 0, 0, p) for n, p in (("x", 0.01), ("y", 0.04), ("z", 0.03))]
    s.holm(results)
    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01 = 0.03, 2 x 0.03 = 0.06, max(0.06, 1 x 0.04) = 0.06
    assert [r.p_holm for r in results] == pytest.approx([0.03, 0.06, 0.06])
    assert results[0].significant and not results[1].significant


def test_a_paired_test_needs_pairs():
    s = _stats_module()
    with pytest.raises(ValueError, match="two equal lists"):
        s.paired("x", [1.0], [2.0])
    assert s.paired("same", [1.0, 2.0], [1.0, 2.0]).p == 1.0


def test_holm_adjusted_intervals_widen_with_the_step():
    s = _stats_module()
    diffs = [[1.0, 2.0, 0.5, 1.5], [0.2, -0.1, 0.4, 0.3], [3.0, 2.0, 2.5, 4.0]]
    results = s.holm([s.paired(f"c{i}", d, [0.0] * 4) for i, d in enumerate(diffs)])
    order = sorted(range(3), key=lambda i: results[i].p)
    for k, i in enumerate(order):  # rank k: level 1 - 0.05 / (3 - k)
        r = results[i]
        assert r.holm_level == pytest.approx(1 - 0.05 / (3 - k))
        d = diffs[i]
        expected = stats.t.interval(r.holm_level, 3, loc=sum(d) / 4, scale=stats.sem(d))
        assert r.holm_interval == pytest.approx(expected)
        assert r.holm_interval[0] <= r.ci_low and r.holm_interval[1] >= r.ci_high  # never narrower than 95%
    assert results[order[-1]].holm_interval == pytest.approx((results[order[-1]].ci_low, results[order[-1]].ci_high))
