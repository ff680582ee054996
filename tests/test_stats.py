"""Wilson score intervals against scipy's binomial test."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from scipy.stats import binomtest

import core.stats
from core.errors import TenureError
from core.stats import wilson_interval


@pytest.mark.parametrize("confidence", [0.8, 0.95, 0.99])
def test_wilson_matches_scipy(confidence):
    rng = np.random.default_rng(5)
    random_trials = rng.integers(1, 5000, size=40)
    trials = np.concatenate([[1, 2, 5, 10, 10, 10], random_trials])
    successes = np.concatenate([[0, 2, 3, 0, 10, 7], rng.integers(0, random_trials + 1)])
    lower, upper = wilson_interval(successes, trials, confidence)
    for k, n, low, high in zip(successes, trials, lower, upper, strict=True):
        expected = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
        assert low == pytest.approx(expected.low, abs=1e-12)
        assert high == pytest.approx(expected.high, abs=1e-12)


def test_wilson_empty_cells_are_nan_and_bounds_are_exact_at_the_ends():
    lower, upper = wilson_interval([0, 0, 4], [0, 4, 4])
    assert np.isnan(lower[0]) and np.isnan(upper[0])
    assert lower[1] == 0.0 and upper[2] == 1.0


@pytest.mark.parametrize("arguments", [([3], [2], 0.95), ([1], [2], 1.0), ([-1], [2], 0.95)])
def test_wilson_rejects_bad_input(arguments):
    with pytest.raises(TenureError):
        wilson_interval(*arguments)


def test_docstring_examples_run():
    assert doctest.testmod(core.stats).failed == 0
