"""Plotly figures the pages draw: pure functions from a result DataFrame to a ``go.Figure``.

They take the documented frames of core/retention.py and core/overview.py as they are, so a page
only passes results through; nothing here queries the store or imports Streamlit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

INCOMPLETE_LABEL = "…"
BAND_OPACITY = 0.18
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")

# A second y axis's own round ticks and no grid of its own: the browser's Plotly otherwise places
# its ticks on the first axis's grid lines (odd values such as 0.359), and its zero need not sit
# on the first axis's zero, so a small ratio could look negative.
SECOND_AXIS_TICKS = {"tickmode": "auto", "showgrid": False}


def _hex_to_rgba(colour: str, alpha: float) -> str:
    red, green, blue = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},{alpha})"


# A readable triangle: one row per cohort at a legible height; cell labels only when they fit
# (beyond that many periods the rate is in the colour and the hover).
HEATMAP_ROW_HEIGHT = 22
HEATMAP_MARGIN = 140
HEATMAP_MIN_HEIGHT = 360
HEATMAP_LABELLED_PERIODS = 26
# The counts behind each cell's hover, in the order of ``customdata``'s last axis.
HEATMAP_HOVER_COUNTS = ("retained", "eligible", "excluded", "cohort_size")


def retention_heatmap(table: pd.DataFrame, title: str = "Retention by cohort") -> go.Figure:
    """The cohort triangle: cohorts as rows (oldest on top), periods as columns, rate as colour.

    Incomplete cells (``incomplete``: no user's period is over yet) are left blank and, when cell
    labels fit, labelled "…", so they never read as a low rate; they have no hover. A complete
    cell's hover shows retained / eligible and the cohort's users not yet eligible (their period
    had not ended).

    The hover's numbers travel as one integer array (``customdata``: retained, eligible, not yet
    eligible, cohort size per cell) that Plotly formats in the browser, and cell labels are sent
    only when they are drawn: a daily triangle has 130,000 cells, and one hover string per cell
    made an 18.8 MB figure that took seconds to build and far longer to draw.

    Args:
        table: ``retention_table``'s frame.
    """
    figure = go.Figure()
    if table.empty:
        figure.update_layout(
            title=title, annotations=[{"text": "No users in this selection", "showarrow": False}]
        )
        return figure
    cohorts = sorted(table["cohort"].unique())
    periods = sorted(table["period"].unique())
    rows = pd.Categorical(table["cohort"], categories=cohorts).codes
    columns = pd.Categorical(table["period"], categories=periods).codes

    def matrix(column: str, fill: float) -> np.ndarray:
        cells = np.full((len(cohorts), len(periods)), fill, dtype=float)
        cells[rows, columns] = table[column].to_numpy(dtype=float)
        return cells

    incomplete = matrix("incomplete", 1.0) != 0
    rates = matrix("rate", np.nan)
    rates[incomplete] = np.nan
    counts = np.stack([matrix(column, 0.0) for column in HEATMAP_HOVER_COUNTS], axis=-1).astype(np.int64)
    # The narrowest integer type that holds the counts (uint16 for cohorts under 65,536 users).
    counts = counts.astype(np.min_scalar_type(int(counts.max())))
    labelled = len(periods) <= HEATMAP_LABELLED_PERIODS
    labels = (
        np.where(incomplete, INCOMPLETE_LABEL, np.char.mod("%.0f%%", np.nan_to_num(rates) * 100))
        if labelled
        else None
    )
    figure.add_trace(
        go.Heatmap(
            z=rates.astype(np.float32),
            x=[str(period) for period in periods],
            y=[str(cohort) for cohort in cohorts],
            text=labels,
            texttemplate="%{text}" if labelled else None,
            customdata=counts,
            hovertemplate=(
                "cohort %{y} (size %{customdata[3]:,})<br>period %{x}<br>"
                "retained %{customdata[0]:,} of %{customdata[1]:,} eligible (%{z:.1%})<br>"
                "%{customdata[2]:,} not yet eligible<extra></extra>"
            ),
            colorscale="Blues",
            zmin=0,
            zmax=1,
            colorbar={"title": "rate", "tickformat": ".0%"},
            hoverongaps=False,
        )
    )
    figure.update_layout(
        title=title,
        xaxis={"title": "period", "type": "category", "side": "top"},
        yaxis={"title": "cohort", "type": "category", "autorange": "reversed"},
        plot_bgcolor="white",
        height=max(HEATMAP_MIN_HEIGHT, HEATMAP_MARGIN + HEATMAP_ROW_HEIGHT * len(cohorts)),
    )
    return figure


def retention_curves(curve: pd.DataFrame, title: str = "Retention curve") -> go.Figure:
    """Retention rate by period with its Wilson band; one line and band per segment if present.

    Periods where nobody is eligible yet are not drawn (no point, no band).

    Args:
        curve: ``retention_curve``'s frame (with or without the ``segment`` column).
    """
    figure = go.Figure()
    segments = (
        [(None, curve)] if "segment" not in curve.columns else list(curve.groupby("segment", sort=True))
    )
    for index, (segment, frame) in enumerate(segments):
        frame = frame[frame["eligible"] > 0].sort_values("period")
        colour = PALETTE[index % len(PALETTE)]
        name = "all users" if segment is None else str(segment)
        figure.add_trace(
            go.Scatter(
                x=np.concatenate([frame["period"], frame["period"][::-1]]),
                y=np.concatenate([frame["upper"], frame["lower"][::-1]]),
                fill="toself",
                fillcolor=_hex_to_rgba(colour, BAND_OPACITY),
                line={"width": 0},
                hoverinfo="skip",
                showlegend=False,
                legendgroup=name,
                name=f"{name} 95% interval",
            )
        )
        figure.add_trace(
            go.Scatter(
                x=frame["period"],
                y=frame["rate"],
                mode="lines+markers",
                name=name,
                legendgroup=name,
                line={"color": colour},
                customdata=np.stack(
                    [frame["retained"], frame["eligible"], frame["lower"], frame["upper"]], axis=-1
                ),
                hovertemplate=(
                    f"{name}<br>period %{{x}}: %{{y:.1%}}<br>%{{customdata[0]:,}} of %{{customdata[1]:,}} eligible"
                    "<br>95% interval %{customdata[2]:.1%} to %{customdata[3]:.1%}<extra></extra>"
                ),
            )
        )
    figure.update_layout(
        title=title,
        xaxis={
            "title": "period",
            "dtick": 1 if len(curve) and curve["period"].max() <= 30 else None,
            "rangemode": "nonnegative",
        },
        yaxis={"title": "retained", "tickformat": ".0%", "range": [0, 1.02]},
        hovermode="closest",
        plot_bgcolor="white",
    )
    return figure


def activity_chart(series: pd.DataFrame, title: str = "Activity") -> go.Figure:
    """Active users per period as bars (the unfinished last period paler), events as a line.

    Args:
        series: ``activity_series``'s frame.
    """
    figure = go.Figure()
    complete = series["complete"].to_numpy(dtype=bool) if len(series) else np.array([], dtype=bool)
    figure.add_trace(
        go.Bar(
            x=series["period_start"],
            y=series["active_users"],
            name="active users",
            marker={"color": [PALETTE[0] if done else _hex_to_rgba(PALETTE[0], 0.35) for done in complete]},
            customdata=np.stack([series["events"], series["revenue"]], axis=-1) if len(series) else None,
            hovertemplate=(
                "%{x|%Y-%m-%d}<br>%{y:,} active users<br>%{customdata[0]:,} events"
                "<br>revenue %{customdata[1]:,.2f}<extra></extra>"
            ),
        )
    )
    figure.add_trace(
        go.Scatter(
            x=series["period_start"],
            y=series["events"],
            name="events",
            mode="lines",
            yaxis="y2",
            line={"color": PALETTE[1]},
            hoverinfo="skip",
        )
    )
    figure.update_layout(
        title=title,
        xaxis={"title": "period start"},
        yaxis={"title": "active users", "rangemode": "tozero"},
        yaxis2={
            "title": "events",
            "overlaying": "y",
            "side": "right",
            "rangemode": "tozero",
            **SECOND_AXIS_TICKS,
        },
        legend={"orientation": "h", "y": -0.2},
        plot_bgcolor="white",
        bargap=0.1,
    )
    return figure
