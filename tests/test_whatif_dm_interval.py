"""DM's interval holds the reward model's own variance: the subsampling formula against the
textbook variance of a mean, the weighted cells against numpy, and coverage over many logs where
the model is fitted on few rows (the request bootstrap alone, with the model held fixed, is far
too narrow there)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_whatif_ope import UNIFORM, load_store, simulate_log, true_value

from core.whatif.dm_variance import dm_interval, subsample_variance, weighted_cells
from core.whatif.evaluate import WhatIfSpec, evaluate


@pytest.mark.parametrize("share", [0.5, 0.25])
def test_subsample_variance_of_a_mean_is_the_variance_of_the_full_mean(share):
    rng = np.random.default_rng(7)
    values = rng.exponential(1.0, 4000)
    means = [values[rng.random(len(values)) < share].mean() for _ in range(2000)]
    assert subsample_variance(np.asarray(means), share) == pytest.approx(
        values.var(ddof=1) / len(values), rel=0.1
    )


def test_weighted_cells_sum_is_the_direct_term_exactly_or_unbiased():
    rng = np.random.default_rng(3)
    probabilities = rng.dirichlet(np.ones(6), size=(4, 2)).transpose(0, 2, 1)  # (C=4, K=6, P=2)
    counts = pd.DataFrame({"context": [0, 1, 3, 3], "position": [0, 1, 0, 1], "rows": [5, 2, 7, 1]})
    q = rng.random((4, 6, 2))
    expected = sum(
        row.rows * probabilities[row.context, :, row.position] @ q[row.context, :, row.position]
        for row in counts.itertuples()
    )
    exact = weighted_cells(counts, probabilities, seed=0)
    assert len(exact.weight) == 24
    assert exact.weight @ q[exact.context, exact.item, exact.position] == pytest.approx(expected, rel=1e-12)
    sampled = [weighted_cells(counts, probabilities, seed=seed, limit=10) for seed in range(3000)]
    estimates = [cells.weight @ q[cells.context, cells.item, cells.position] for cells in sampled]
    assert all(len(cells.weight) == 10 for cells in sampled)
    assert np.mean(estimates) == pytest.approx(expected, rel=0.01)


def test_dm_interval_adds_the_model_variance_with_student_quantile():
    draws = np.random.default_rng(1).normal(0.3, 0.01, 5000)
    low, high, freedom = dm_interval(0.3, draws, [0.0002, 0.0001], refits=4, level=0.95)
    total = draws.var(ddof=1) + 0.0003
    assert freedom == pytest.approx(total**2 / ((0.0002**2 + 0.0001**2) / 3))
    # the t quantile lies between the normal one and t with 3 degrees of freedom
    assert 1.96 * np.sqrt(total) < (high - low) / 2 < 3.19 * np.sqrt(total)
    assert (low + high) / 2 == pytest.approx(0.3)


def test_dm_interval_covers_the_truth_when_the_model_is_fitted_on_few_rows():
    """1,000 training rows per fold, about 100 clicks: the model's error dominates DM's. Over
    independent logs, the spread of DM is compared with what each interval claims."""
    truth = true_value(UNIFORM)
    values, sampling_only, with_model = [], [], []
    for seed in range(10):
        with load_store(simulate_log(500 + seed, 2000)) as store:
            for refits, intervals in ((0, sampling_only), (3, with_model)):
                spec = WhatIfSpec(
                    target="uniform",
                    estimators=("dm",),
                    seed=seed,
                    max_model_rows=1000,
                    resamples=50,
                    dm_refits=refits,
                )
                result = evaluate(store, spec)
                row = result.estimates.iloc[0]
                intervals.append((row.ci_low, row.ci_high))
            values.append(row.value)
            assert result.details["dm_interval"] == "sampling and model (3 refits per fold)"
            assert result.details["dm_model_sd"] > 0
    spread = np.std(values, ddof=1)
    for intervals, low_ratio, high_ratio, covered in (
        (sampling_only, 0.0, 0.4, (0, 6)),
        (with_model, 0.7, 2.5, (8, 10)),
    ):
        bounds = np.asarray(intervals)
        half_widths = (bounds[:, 1] - bounds[:, 0]) / 2 / 1.96
        assert low_ratio * spread <= half_widths.mean() <= high_ratio * spread, (half_widths.mean(), spread)
        hits = int(((bounds[:, 0] <= truth) & (truth <= bounds[:, 1])).sum())
        assert covered[0] <= hits <= covered[1], hits
