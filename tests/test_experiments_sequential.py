"""Always-valid p-values and intervals against the mixture likelihood ratio integrated numerically,
and an A/A simulation of daily looks."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from scipy import integrate, optimize, stats

import core.experiments.sequential
from core.errors import TenureError
from core.experiments.sequential import (
    always_valid_interval,
    always_valid_p_value,
    mixing_variance,
    running_interval,
    running_p_value,
)

# (diff, var, tau2): effects small and large against their standard error, tau2 below and above var.
LOOKS = [(0.3, 0.01, 0.05), (-0.02, 0.0004, 0.003), (1.5, 0.4, 0.1), (0.0, 2.0, 20.0), (-0.8, 0.05, 0.5)]


def _mixture_likelihood_ratio(diff: float, var: float, tau2: float, null: float) -> float:
    """int N(diff; delta, var) / N(diff; null, var) dN(delta; null, tau2), by quadrature."""
    sd, tau = math.sqrt(var), math.sqrt(tau2)
    low = min(null - 12 * tau, diff - 12 * sd)
    high = max(null + 12 * tau, diff + 12 * sd)

    log_prior_constant = -0.5 * math.log(2 * math.pi * tau2)

    def integrand(delta: float) -> float:
        log_ratio = ((diff - null) ** 2 - (diff - delta) ** 2) / (2 * var)
        return math.exp(log_ratio - (delta - null) ** 2 / (2 * tau2) + log_prior_constant)

    return integrate.quad(integrand, low, high, points=[null, diff], limit=500, epsabs=0, epsrel=1e-11)[0]


@pytest.mark.parametrize(("diff", "var", "tau2"), LOOKS)
def test_p_value_is_the_inverse_of_the_integrated_mixture(diff, var, tau2):
    expected = min(1.0, 1.0 / _mixture_likelihood_ratio(diff, var, tau2, null=0.0))
    assert always_valid_p_value([diff], [var], tau2)[0] == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize(("diff", "var", "tau2"), LOOKS)
@pytest.mark.parametrize("alpha", [0.05, 0.2])
def test_interval_bounds_are_where_the_integrated_mixture_reaches_one_over_alpha(diff, var, tau2, alpha):
    def excess(null: float) -> float:
        return _mixture_likelihood_ratio(diff, var, tau2, null) - 1.0 / alpha

    step = math.sqrt(var)
    while excess(diff + step) < 0:
        step *= 2
    high = optimize.brentq(excess, diff, diff + step, xtol=1e-12, rtol=1e-12)
    low = optimize.brentq(excess, diff - step, diff, xtol=1e-12, rtol=1e-12)
    interval = always_valid_interval([diff], [var], tau2, alpha)
    assert interval.low[0] == pytest.approx(low, rel=1e-7, abs=1e-10)
    assert interval.high[0] == pytest.approx(high, rel=1e-7, abs=1e-10)


def test_p_value_is_at_most_alpha_exactly_when_the_interval_excludes_zero():
    rng = np.random.default_rng(3)
    diff = rng.normal(0.0, 0.2, 500)
    var = rng.uniform(0.001, 0.02, 500)
    interval = always_valid_interval(diff, var, 0.05)
    excludes_zero = (interval.low > 0) | (interval.high < 0)
    np.testing.assert_array_equal(always_valid_p_value(diff, var, 0.05) < 0.05, excludes_zero)


def test_running_versions_intersect_and_take_the_minimum_over_looks():
    rng = np.random.default_rng(11)
    var = 1.0 / np.arange(20, 620, 20)
    diff = rng.normal(0.05, np.sqrt(var))
    tau2 = mixing_variance(var[-1])
    each = always_valid_interval(diff, var, tau2)
    running = running_interval(diff, var, tau2)
    p_values = always_valid_p_value(diff, var, tau2)
    running_p = running_p_value(diff, var, tau2)
    for look in range(len(diff)):
        assert running.low[look] == max(each.low[: look + 1])
        assert running.high[look] == min(each.high[: look + 1])
        assert running_p[look] == min(p_values[: look + 1])
    assert np.all(np.diff(running.low) >= 0) and np.all(np.diff(running.high) <= 0)
    assert np.all(np.diff(running_p) <= 0)
    assert np.all(running.low >= each.low) and np.all(running.high <= each.high)


@pytest.mark.parametrize("alpha", [0.05, 0.01, 0.2])
def test_mixing_variance_minimises_the_width_at_the_final_look(alpha):
    final_var = 0.0037

    def width(log_tau2: float) -> float:
        interval = always_valid_interval([0.0], [final_var], math.exp(log_tau2), alpha)
        return float(interval.high[0] - interval.low[0])

    best = optimize.minimize_scalar(
        width,
        bounds=(math.log(final_var) - 5, math.log(final_var) + 8),
        method="bounded",
        options={"xatol": 1e-9},
    )
    assert mixing_variance(final_var, alpha) == pytest.approx(math.exp(best.x), rel=1e-3)
    assert mixing_variance(1.0, 0.05) == pytest.approx(8.212, abs=1e-3)


def test_aa_experiments_peeked_daily_stay_within_alpha_unlike_the_naive_z_test():
    """300 A/A experiments, 20 users per arm per day, a look each day for 30 days.

    The always-valid interval must exclude 0 at some look in at most alpha of them (0.07 leaves
    room for Monte Carlo error: 0.05 + 2.2 standard errors of a proportion over 300); the
    fixed-horizon z test read at every look must do so clearly more often, which is why the
    page labels the two.
    """
    alpha, experiments, days, users_per_day = 0.05, 300, 30, 20
    rng = np.random.default_rng(20240612)
    control = rng.normal(0.0, 1.0, (experiments, days, users_per_day))
    variant = rng.normal(0.0, 1.0, (experiments, days, users_per_day))
    users = users_per_day * np.arange(1, days + 1)

    def running_mean_and_variance(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        total = values.sum(axis=2).cumsum(axis=1)
        squares = (values**2).sum(axis=2).cumsum(axis=1)
        mean = total / users
        return mean, (squares - users * mean**2) / (users - 1)

    control_mean, control_var = running_mean_and_variance(control)
    variant_mean, variant_var = running_mean_and_variance(variant)
    diff = variant_mean - control_mean
    var = control_var / users + variant_var / users
    # Planned in advance from the metric's known unit variance and the planned 600 users per arm.
    tau2 = mixing_variance(2.0 / (users_per_day * days), alpha)

    sequential_rejects = 0
    naive_rejects = 0
    for experiment in range(experiments):
        interval = running_interval(diff[experiment], var[experiment], tau2, alpha)
        ever_excludes_zero = bool(np.any((interval.low > 0) | (interval.high < 0)))
        assert ever_excludes_zero == bool(
            running_p_value(diff[experiment], var[experiment], tau2)[-1] < alpha
        )
        sequential_rejects += ever_excludes_zero
        z = diff[experiment] / np.sqrt(var[experiment])
        naive_rejects += bool(np.any(np.abs(z) > stats.norm.isf(alpha / 2)))

    assert sequential_rejects / experiments <= 0.07
    assert naive_rejects / experiments > 0.1


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda: always_valid_interval([0.1], [0.0], 1.0), "var"),
        (lambda: always_valid_interval([0.1], [0.01], 1.0, alpha=1.0), "alpha"),
        (lambda: always_valid_p_value([0.1], [0.01], 0.0), "tau2"),
        (lambda: always_valid_p_value([np.nan], [0.01], 1.0), "diff"),
        (lambda: running_interval([[0.1]], [[0.01]], 1.0), "one value per look"),
        (lambda: mixing_variance(0.0), "final_var"),
    ],
)
def test_bad_input_is_named(call, named):
    with pytest.raises(TenureError, match=named):
        call()


def test_docstring_examples_run():
    assert doctest.testmod(core.experiments.sequential).failed == 0
