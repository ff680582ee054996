"""Plotly figures of the Score page: how the scored users' churn probability and predicted LTV are
spread. Pure functions of a scores frame (``user_id, churn_prob, ltv_pred, ...``).

The bars are counted here with numpy (``score_histogram``), so the page sends a few dozen bars to
the browser, not one point per user.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.figures import PALETTE

CHURN_BINS = 20
LTV_BINS = 30
LTV_CLIP_QUANTILE = 0.99


@dataclass(frozen=True)
class Histogram:
    """Bars of a histogram: ``counts[i]`` users in ``[edges[i], edges[i + 1])`` (the last bar closed).

    ``clipped``: users above the last edge, counted in the last bar (their value is shown as the edge).
    """

    edges: np.ndarray
    counts: np.ndarray
    clipped: int


def score_histogram(
    values: pd.Series, bins: int, clip_quantile: float | None = None, upper: float | None = None
) -> Histogram:
    """Equal-width bars from 0 (or the minimum, if negative) to ``upper``, else the ``clip_quantile``,
    else the maximum.

    Values above the clip are counted in the last bar (``clipped`` says how many): a long right
    tail (LTV) would otherwise squeeze every other user into the first bar. NaN values are left out.
    """
    data = pd.to_numeric(values, errors="coerce").dropna().to_numpy(dtype=float)
    if len(data) == 0:
        return Histogram(np.array([0.0, 1.0]), np.array([0]), 0)
    low = min(0.0, float(data.min()))
    if upper is not None:
        high = upper
    elif clip_quantile is not None:
        high = float(np.quantile(data, clip_quantile))
    else:
        high = float(data.max())
    high = max(high, low + 1e-9)
    clipped = int((data > high).sum())
    counts, edges = np.histogram(np.minimum(data, high), bins=bins, range=(low, high))
    return Histogram(edges, counts, clipped)


def score_distribution_figure(
    scores: pd.DataFrame, bins_churn: int = CHURN_BINS, bins_ltv: int = LTV_BINS
) -> go.Figure:
    """Two histograms side by side: users by churn_prob (0 to 1) and by ltv_pred (to the 99th percentile)."""
    churn = score_histogram(scores["churn_prob"], bins_churn, upper=1.0)
    ltv = score_histogram(scores["ltv_pred"], bins_ltv, LTV_CLIP_QUANTILE)
    ltv_title = "Predicted LTV (ltv_pred)"
    if ltv.clipped:
        ltv_title += f"; {ltv.clipped:,} users above {ltv.edges[-1]:,.2f} in the last bar"
    figure = make_subplots(rows=1, cols=2, subplot_titles=("Churn probability (churn_prob)", ltv_title))
    for column, (histogram, colour) in enumerate(((churn, PALETTE[0]), (ltv, PALETTE[1])), start=1):
        centres = (histogram.edges[:-1] + histogram.edges[1:]) / 2
        widths = np.diff(histogram.edges)
        figure.add_trace(
            go.Bar(
                x=centres,
                y=histogram.counts,
                width=widths,
                marker={"color": colour},
                customdata=np.stack([histogram.edges[:-1], histogram.edges[1:]], axis=1),
                hovertemplate="%{customdata[0]:.3g} to %{customdata[1]:.3g}: %{y:,} users<extra></extra>",
                showlegend=False,
            ),
            row=1,
            col=column,
        )
        figure.update_yaxes(title_text="users", row=1, col=column)
    figure.update_layout(bargap=0.02, margin={"t": 60})
    return figure
