"""The bootstrap interval of the inverse-propensity-weighted survival (core/whatif/survival_ipw.py):
it holds lifelines' weighted Kaplan-Meier point estimate, covers a known true survival at about
the nominal rate over repeated simulated experiments, and is fast at the sample's scale."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
from lifelines import KaplanMeierFitter

from core.whatif.survival_ipw import bootstrap_counts, survival_interval

DAYS = (7.0, 30.0, 60.0)
# hazards per day of "everyone gets b", for users with x = 0 and x = 1
HAZARD_B = (0.01, 0.04)


def _experiment(seed: int, n: int = 300) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A confounded experiment: users with x = 1 churn faster and get b more often (p = 0.7 vs
    0.3). Returns durations, churned and the weights of the policy "everyone gets b"."""
    rng = np.random.default_rng(seed)
    x = rng.random(n) < 0.5
    p_b = np.where(x, 0.7, 0.3)
    got_b = rng.random(n) < p_b
    hazard = np.where(got_b, np.where(x, HAZARD_B[1], HAZARD_B[0]), np.where(x, 0.03, 0.02))
    churn_time = rng.exponential(1 / hazard)
    censor = rng.uniform(20, 150, n)
    durations = np.minimum(churn_time, censor)
    return durations, churn_time <= censor, np.where(got_b, 1 / p_b, 0.0)


def _true_survival(days: tuple[float, ...]) -> np.ndarray:
    at = np.asarray(days)
    return 0.5 * np.exp(-HAZARD_B[0] * at) + 0.5 * np.exp(-HAZARD_B[1] * at)


def test_interval_holds_lifelines_weighted_estimate() -> None:
    durations, churned, weights = _experiment(1, n=2000)
    low, high = survival_interval(durations, churned, weights, DAYS, bootstrap_counts(len(durations), 300, 2))
    kept = weights > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lifelines warns that its variance ignores the weights
        fitter = KaplanMeierFitter().fit(durations[kept], churned[kept], weights=weights[kept])
    point = fitter.survival_function_at_times(list(DAYS)).to_numpy()
    assert (low < point).all() and (point < high).all()
    assert (high - low < 0.1).all()


def test_interval_covers_the_true_survival_at_nominal_rate() -> None:
    truth = _true_survival(DAYS)
    covered = []
    for seed in range(200):
        durations, churned, weights = _experiment(seed)
        counts = bootstrap_counts(len(durations), 200, 10_000 + seed)
        low, high = survival_interval(durations, churned, weights, DAYS, counts)
        covered.append((low <= truth) & (truth <= high))
    coverage = np.mean(covered, axis=0)
    assert ((coverage > 0.9) & (coverage < 0.99)).all(), coverage


def test_bootstrap_counts_are_resamples_of_every_user() -> None:
    counts = bootstrap_counts(50, 400, 0)
    assert counts.shape == (400, 50)
    assert (counts.sum(axis=1) == 50).all()
    assert counts.mean() == pytest.approx(1.0)
    assert counts.var() == pytest.approx(1 - 1 / 50, rel=0.1)


def test_interval_is_fast_at_sample_scale() -> None:
    durations, churned, weights = _experiment(3, n=20_000)
    start = time.perf_counter()
    survival_interval(durations, churned, weights, DAYS, bootstrap_counts(len(durations), 300, 0))
    assert time.perf_counter() - start < 10
