"""The Score page's histograms (core/figures_scoring.py) against counts made by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.figures_scoring import score_distribution_figure, score_histogram


def test_churn_bars_count_users_in_tenths() -> None:
    values = pd.Series([0.0, 0.05, 0.1, 0.55, 0.99, 1.0, np.nan])
    histogram = score_histogram(values, 10, upper=1.0)
    assert histogram.counts.tolist() == [2, 1, 0, 0, 0, 1, 0, 0, 0, 2]
    assert histogram.clipped == 0 and histogram.counts.sum() == 6


def test_ltv_tail_above_the_clip_goes_to_the_last_bar() -> None:
    values = pd.Series([*range(100), 10_000.0])
    histogram = score_histogram(values, 10, clip_quantile=0.99)
    high = np.quantile(values, 0.99)
    assert histogram.edges[-1] == high
    assert histogram.clipped == int((values > high).sum()) == 1
    assert histogram.counts.sum() == len(values)


def test_figure_has_one_bar_trace_per_score() -> None:
    scores = pd.DataFrame({"churn_prob": [0.1, 0.9, 0.5], "ltv_pred": [1.0, 20.0, 3.0]})
    figure = score_distribution_figure(scores)
    assert [trace.type for trace in figure.data] == ["bar", "bar"]
    assert sum(figure.data[0].y) == 3 and sum(figure.data[1].y) == 3
