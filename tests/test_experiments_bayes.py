"""Chance to beat and expected loss against Monte Carlo draws and scipy integration."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from scipy import integrate, stats

import core.experiments.bayes
from core.errors import TenureError
from core.experiments.bayes import chance_to_beat_mean, chance_to_beat_rate

# (control successes, control n, variant successes, variant n): each arm at zero, at n, small and
# large, so every one of the four closed-form sums is the shortest somewhere.
RATE_CASES = [
    (100, 1000, 130, 1000),
    (0, 10, 0, 10),
    (10, 10, 3, 10),
    (0, 50, 2, 40),
    (45, 60, 20, 30),
    (7, 9, 12, 12),
    (3, 3, 0, 5),
    (4000, 100_000, 4150, 100_000),
    (37, 5000, 9, 700),
]


def _integrated_rates(control_successes, control_n, variant_successes, variant_n):
    """P(V > C) = int f_V F_C, and E[(X - Y)+] = int F_Y (1 - F_X) (since (X - Y)+ = int 1{Y < x < X} dx)."""
    control = stats.beta(1 + control_successes, 1 + control_n - control_successes)
    variant = stats.beta(1 + variant_successes, 1 + variant_n - variant_successes)
    low = min(control.ppf(1e-14), variant.ppf(1e-14))
    high = max(control.isf(1e-14), variant.isf(1e-14))
    points = [control.mean(), variant.mean()]

    def quad(function):
        return integrate.quad(function, low, high, points=points, limit=500, epsabs=1e-13, epsrel=1e-11)[0]

    chance = quad(lambda x: variant.pdf(x) * control.cdf(x))
    loss_variant = quad(lambda x: variant.cdf(x) * control.sf(x))
    loss_control = quad(lambda x: control.cdf(x) * variant.sf(x))
    return chance, loss_variant, loss_control


@pytest.mark.parametrize("counts", RATE_CASES)
def test_rate_matches_numerical_integration(counts):
    result = chance_to_beat_rate(*counts)
    chance, loss_variant, loss_control = _integrated_rates(*counts)
    assert result.chance_to_beat == pytest.approx(chance, abs=1e-9)
    assert result.expected_loss_variant == pytest.approx(loss_variant, rel=1e-7, abs=1e-12)
    assert result.expected_loss_control == pytest.approx(loss_control, rel=1e-7, abs=1e-12)


@pytest.mark.parametrize("counts", [(100, 1000, 130, 1000), (0, 10, 1, 8), (520, 9000, 505, 9100)])
def test_rate_matches_monte_carlo(counts):
    control_successes, control_n, variant_successes, variant_n = counts
    rng = np.random.default_rng(20240611)
    draws = 2_000_000
    control = rng.beta(1 + control_successes, 1 + control_n - control_successes, draws)
    variant = rng.beta(1 + variant_successes, 1 + variant_n - variant_successes, draws)
    result = chance_to_beat_rate(*counts)
    beats = variant > control
    loss_variant = np.maximum(control - variant, 0.0)
    loss_control = np.maximum(variant - control, 0.0)
    # Five Monte Carlo standard errors: a correct formula fails about once in 3 million runs.
    assert abs(result.chance_to_beat - beats.mean()) < 5 * beats.std() / np.sqrt(draws)
    assert abs(result.expected_loss_variant - loss_variant.mean()) < 5 * loss_variant.std() / np.sqrt(draws)
    assert abs(result.expected_loss_control - loss_control.mean()) < 5 * loss_control.std() / np.sqrt(draws)


def test_rate_sum_in_chunks_equals_sum_at_once(monkeypatch):
    whole = chance_to_beat_rate(40, 120, 55, 130)
    monkeypatch.setattr(core.experiments.bayes, "_SUM_CHUNK", 7)
    chunked = chance_to_beat_rate(40, 120, 55, 130)
    assert chunked.chance_to_beat == pytest.approx(whole.chance_to_beat, abs=1e-13)
    assert chunked.expected_loss_variant == pytest.approx(whole.expected_loss_variant, rel=1e-10)


def test_identical_arms_are_even():
    for counts in [(100, 1000, 100, 1000), (0, 20, 0, 20), (5, 5, 5, 5)]:
        result = chance_to_beat_rate(*counts)
        assert result.chance_to_beat == pytest.approx(0.5, abs=1e-12)
        assert result.expected_loss_variant == pytest.approx(result.expected_loss_control, rel=1e-10)
    assert chance_to_beat_mean(0.0, 2.5).chance_to_beat == 0.5


def test_rate_states_its_prior():
    assert "Beta(1, 1)" in chance_to_beat_rate(1, 10, 2, 10).prior
    assert "flat" in chance_to_beat_mean(1.0, 1.0).prior


@pytest.mark.parametrize(
    ("counts", "named"),
    [
        ((0, 0, 3, 10), "control_n is 0"),
        ((3, 10, 0, 0), "variant_n is 0"),
        ((11, 10, 3, 10), "control_successes is 11"),
        ((3, 10, -1, 10), "variant_successes is -1"),
        ((0.5, 10, 3, 10), "control_successes must be a whole number"),
    ],
)
def test_rate_rejects_impossible_counts(counts, named):
    with pytest.raises(TenureError, match=named):
        chance_to_beat_rate(*counts)


@pytest.mark.parametrize(("diff", "se"), [(0.3, 0.1), (-0.02, 0.05), (1.0, 0.2), (-4.0, 1.5), (0.0, 0.01)])
def test_mean_matches_numerical_integration(diff, se):
    posterior = stats.norm(diff, se)
    low, high = diff - 40 * se, diff + 40 * se
    chance = posterior.sf(0.0)
    loss_variant = integrate.quad(lambda x: max(-x, 0.0) * posterior.pdf(x), low, high, points=[0.0, diff])[0]
    loss_control = integrate.quad(lambda x: max(x, 0.0) * posterior.pdf(x), low, high, points=[0.0, diff])[0]
    result = chance_to_beat_mean(diff, se)
    assert result.chance_to_beat == pytest.approx(chance, abs=1e-12)
    assert result.expected_loss_variant == pytest.approx(loss_variant, rel=1e-8, abs=1e-14)
    assert result.expected_loss_control == pytest.approx(loss_control, rel=1e-8, abs=1e-14)


def test_mean_matches_monte_carlo():
    rng = np.random.default_rng(7)
    draws = 2_000_000
    diff, se = 0.12, 0.1
    posterior = rng.normal(diff, se, draws)
    result = chance_to_beat_mean(diff, se)
    beats = posterior > 0
    loss_variant = np.maximum(-posterior, 0.0)
    loss_control = np.maximum(posterior, 0.0)
    assert abs(result.chance_to_beat - beats.mean()) < 5 * beats.std() / np.sqrt(draws)
    assert abs(result.expected_loss_variant - loss_variant.mean()) < 5 * loss_variant.std() / np.sqrt(draws)
    assert abs(result.expected_loss_control - loss_control.mean()) < 5 * loss_control.std() / np.sqrt(draws)


@pytest.mark.parametrize(("diff", "se"), [(0.1, 0.0), (0.1, -1.0), (0.1, float("nan")), (float("inf"), 1.0)])
def test_mean_rejects_missing_standard_error(diff, se):
    with pytest.raises(TenureError):
        chance_to_beat_mean(diff, se)


def test_docstring_examples_run():
    assert doctest.testmod(core.experiments.bayes).failed == 0
