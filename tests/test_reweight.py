"""Metric-based reweighting: shape of the weights and the cap on generated rows."""

import numpy as np
import pytest

from agora.method.reweight import example_weights, weight_stats

RNG = np.random.default_rng(0)
LOSS = RNG.exponential(size=50)
GEN = np.arange(50) >= 20  # 20 original rows, 30 generated


def test_gamma_zero_is_uniform():
    w = example_weights(LOSS, np.zeros(50, bool), gamma=0.0, rho=1.0)
    assert np.allclose(w, 1.0)


def test_monotone_in_loss_and_bounded_by_two_to_gamma():
    w = example_weights(LOSS, np.zeros(50, bool), gamma=1.5, rho=1.0)
    order = np.argsort(LOSS)
    assert np.all(np.diff(w[order]) >= 0)
    assert w.max() / w.min() <= 2**1.5 + 1e-9


def test_error_kind_weighs_mistakes_by_two_to_gamma():
    err = np.array([0, 1, 0, 1])
    w = example_weights(err, np.zeros(4, bool), gamma=2.0, rho=1.0, kind="error")
    assert np.allclose(w[[1, 3]] / w[[0, 2]], 4.0) and np.isclose(w.mean(), 1.0)


@pytest.mark.parametrize("rho", [0.0, 0.1, 0.3, 0.5])
def test_rho_cap_holds_exactly_and_total_is_preserved(rho):
    w = example_weights(LOSS, GEN, gamma=1.0, rho=rho)
    assert w[GEN].sum() == pytest.approx(rho * w.sum(), abs=1e-9)
    assert w.sum() == pytest.approx(50.0)
    # within each group the ordering by loss is kept
    for group in (GEN, ~GEN):
        order = np.argsort(LOSS[group])
        assert np.all(np.diff(w[group][order]) >= -1e-12)


def test_rho_one_never_caps_and_cap_below_share_is_untouched():
    uncapped = example_weights(LOSS, np.zeros(50, bool), gamma=1.0, rho=1.0)
    assert np.allclose(example_weights(LOSS, GEN, gamma=1.0, rho=1.0), uncapped)
    assert np.allclose(example_weights(LOSS, GEN, gamma=1.0, rho=0.99), uncapped)  # share ~0.6 < 0.99


def test_empty_generated_set_and_empty_input():
    w = example_weights(LOSS, np.zeros(50, bool), gamma=1.0, rho=0.1)
    assert np.isclose(w.mean(), 1.0)
    assert example_weights(np.array([]), np.array([], bool), 1.0, 0.5).shape == (0,)


def test_unknown_losses_get_the_mean_weight_and_zero_losses_are_uniform():
    values = np.array([0.0, 1.0, np.nan])
    w = example_weights(values, np.zeros(3, bool), gamma=1.0, rho=1.0)
    assert np.isclose(w[2], (w[0] + w[1]) / 2) and np.isclose(w.sum(), 3.0)
    assert np.allclose(example_weights(np.zeros(4), np.zeros(4, bool), 2.0, 1.0), 1.0)


def test_deterministic():
    a = example_weights(LOSS, GEN, 1.0, 0.2)
    assert np.array_equal(a, example_weights(LOSS.copy(), GEN.copy(), 1.0, 0.2))


def test_weight_stats():
    w = example_weights(LOSS, GEN, gamma=1.0, rho=0.25)
    stats = weight_stats(w, GEN)
    assert stats["generated_share"] == pytest.approx(0.25)
    assert stats["mean"] == pytest.approx(1.0) and stats["min"] <= stats["max"]
    assert stats["n"] == 50 and stats["n_generated"] == 30


@pytest.mark.parametrize("key,value", [("gamma", -1.0), ("rho", 1.5), ("reweight_by", "rank")])
def test_invalid_settings_are_refused_by_the_schema_naming_the_key(key, value):
    """Agora's settings are checked once, when the recipe loads: example_weights trusts them."""
    from agora.config import RunConfig

    with pytest.raises(ValueError, match=key):
        RunConfig.model_validate({"task": "rte", "agora": {key: value}})
