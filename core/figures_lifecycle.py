"""Plotly figures of the lifecycle and stickiness views, from the documented result frames.

Pure functions from core/lifecycle.py's and core/stickiness.py's frames to ``go.Figure``: no store,
no Streamlit.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.figures import SECOND_AXIS_TICKS
from core.lifecycle import NOT_STARTED, STAGE_LABELS, STAGES

STATUS_COLOURS = {
    "new": "#2ca02c",
    "returning": "#1f77b4",
    "resurrecting": "#9467bd",
    "dormant": "#d62728",
}
STAGE_COLOURS = {
    NOT_STARTED: "#c7c7c7",
    "new": "#2ca02c",
    "active": "#1f77b4",
    "reactivated": "#9467bd",
    "at_risk": "#ff7f0e",
    "dormant": "#d62728",
    "churned": "#7f7f7f",
}


def _empty(title: str) -> go.Figure:
    figure = go.Figure()
    figure.update_layout(
        title=title, annotations=[{"text": "No users in this selection", "showarrow": False}]
    )
    return figure


def lifecycle_chart(table: pd.DataFrame, title: str = "Lifecycle") -> go.Figure:
    """Stacked bars per period (dormant drawn below zero) and the quick ratio on a second axis.

    The last period is partial: its bars are drawn paler and its label says so.
    """
    if table.empty:
        return _empty(title)
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    labels = [
        f"{day.isoformat()} (partial)" if partial else day.isoformat()
        for day, partial in zip(table["period"], table["partial"], strict=True)
    ]
    opacity = [0.45 if partial else 1.0 for partial in table["partial"]]
    for status, colour in STATUS_COLOURS.items():
        values = -table[status] if status == "dormant" else table[status]
        figure.add_trace(
            go.Bar(
                x=labels,
                y=values,
                name=status.capitalize(),
                marker={"color": colour, "opacity": opacity},
                customdata=table[status],
                hovertemplate=f"%{{x}}<br>{status}: %{{customdata:,}}<extra></extra>",
            ),
            secondary_y=False,
        )
    figure.add_trace(
        go.Scatter(
            x=labels,
            y=table["quick_ratio"],
            name="Quick ratio",
            mode="lines+markers",
            line={"color": "#222222"},
            hovertemplate="%{x}<br>quick ratio: %{y:.2f}<extra></extra>",
        ),
        secondary_y=True,
    )
    figure.update_layout(title=title, barmode="relative", legend={"orientation": "h"}, hovermode="x unified")
    figure.update_yaxes(title_text="users (dormant below zero)", secondary_y=False)
    figure.update_yaxes(title_text="quick ratio", secondary_y=True, rangemode="tozero", **SECOND_AXIS_TICKS)
    return figure


def stage_chart(stages: pd.DataFrame, title: str = "Users by stage") -> go.Figure:
    """Horizontal bars of users per stage, with their share of users and of revenue in the hover."""
    figure = go.Figure(
        go.Bar(
            x=stages["users"],
            y=[STAGE_LABELS[stage] for stage in stages["stage"]],
            orientation="h",
            marker={"color": [STAGE_COLOURS[stage] for stage in stages["stage"]]},
            customdata=stages[["share", "revenue_share"]].fillna(0).to_numpy(),
            hovertemplate="%{y}: %{x:,} users (%{customdata[0]:.1%})<br>"
            "revenue share %{customdata[1]:.1%}<extra></extra>",
        )
    )
    figure.update_layout(title=title, yaxis={"autorange": "reversed"}, xaxis_title="users")
    return figure


def transition_heatmap(matrix: pd.DataFrame, title: str = "Stage transitions") -> go.Figure:
    """Rows = stage at the first date, columns = at the second; cells = users."""
    rows = [STAGE_LABELS[stage] for stage in matrix.index]
    columns = [STAGE_LABELS[stage] for stage in matrix.columns]
    figure = go.Figure(
        go.Heatmap(
            z=matrix.to_numpy(),
            x=columns,
            y=rows,
            colorscale="Blues",
            text=matrix.to_numpy(),
            texttemplate="%{text:,}",
            hovertemplate="%{y} → %{x}: %{z:,} users<extra></extra>",
        )
    )
    figure.update_layout(
        title=title,
        xaxis_title="stage at the second date",
        yaxis_title="stage at the first date",
        yaxis={"autorange": "reversed"},
    )
    return figure


def transition_sankey(transitions: pd.DataFrame, title: str = "Stage flows") -> go.Figure:
    """A Sankey of ``stage_transitions``' frame: stages at the first date on the left, second on the right."""
    left = [NOT_STARTED, *STAGES]
    flows = transitions[transitions["users"] > 0]
    figure = go.Figure(
        go.Sankey(
            node={
                "label": [STAGE_LABELS[stage] for stage in left] + [STAGE_LABELS[stage] for stage in STAGES],
                "color": [STAGE_COLOURS[stage] for stage in left]
                + [STAGE_COLOURS[stage] for stage in STAGES],
            },
            link={
                "source": [left.index(stage) for stage in flows["from_stage"]],
                "target": [len(left) + STAGES.index(stage) for stage in flows["to_stage"]],
                "value": flows["users"].tolist(),
            },
        )
    )
    figure.update_layout(title=title)
    return figure


def stickiness_chart(histogram: pd.DataFrame, unit: str = "days", title: str = "Stickiness") -> go.Figure:
    """Users by number of active days (or weeks), one bar group per span."""
    if histogram.empty:
        return _empty(title)
    figure = go.Figure()
    for (start, end), span in histogram.groupby(["span_start", "span_end"], sort=True):
        partial = bool(span["partial"].any())
        figure.add_trace(
            go.Bar(
                x=span["active_units"],
                y=span["users"],
                name=f"{start.isoformat()} to {end.isoformat()}{' (partial)' if partial else ''}",
                customdata=span["share"].fillna(0),
                hovertemplate=f"%{{x}} {unit}: %{{y:,}} users (%{{customdata:.1%}})<extra></extra>",
            )
        )
    figure.update_layout(title=title, xaxis_title=f"active {unit}", yaxis_title="users", barmode="group")
    return figure


def active_users_chart(series: pd.DataFrame, title: str = "Active users") -> go.Figure:
    """DAU, WAU and MAU per day, and DAU/MAU on a second axis (dotted where the 28-day window is short)."""
    if series.empty:
        return _empty(title)
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    for column, label in (("dau", "DAU"), ("wau", "WAU (7 days)"), ("mau", "MAU (28 days)")):
        figure.add_trace(
            go.Scatter(x=series["day"], y=series[column], name=label, mode="lines"), secondary_y=False
        )
    full = series["dau_mau"].where(series["full_window"])
    short = series["dau_mau"].where(~series["full_window"])
    figure.add_trace(
        go.Scatter(x=series["day"], y=full, name="DAU/MAU", mode="lines", line={"color": "#222222"}),
        secondary_y=True,
    )
    figure.add_trace(
        go.Scatter(
            x=series["day"],
            y=short,
            name="DAU/MAU (window before the data)",
            mode="lines",
            line={"color": "#222222", "dash": "dot"},
        ),
        secondary_y=True,
    )
    figure.update_layout(title=title, legend={"orientation": "h"}, hovermode="x unified")
    figure.update_yaxes(title_text="users", secondary_y=False, rangemode="tozero")
    figure.update_yaxes(
        title_text="DAU/MAU", tickformat=".0%", secondary_y=True, rangemode="tozero", **SECOND_AXIS_TICKS
    )
    return figure
