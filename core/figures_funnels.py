"""Plotly figures of the funnel view, built from core/funnels.py's frames (no Streamlit, no queries)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from core.figures import PALETTE


def _percent(value: float) -> str:
    return "-" if pd.isna(value) else f"{value:.1%}"


def funnel_bars(table: pd.DataFrame, title: str = "Funnel") -> go.Figure:
    """Users per step (bars, one colour per group when ``group`` is present), labelled with the
    count and the conversion from the start; the hover gives both conversions with their 95% intervals."""
    figure = go.Figure()
    groups = list(table["group"].unique()) if "group" in table.columns else [None]
    for index, group in enumerate(groups):
        rows = table if group is None else table[table["group"] == group]
        labels = [f"{step}. {name}" for step, name in zip(rows["step"], rows["event_name"], strict=True)]
        hover = [
            f"{row.users:,} users<br>from start {_percent(row.conversion_from_start)} "
            f"[{_percent(row.lower_from_start)}, {_percent(row.upper_from_start)}]<br>"
            f"from previous {_percent(row.conversion_from_previous)} "
            f"[{_percent(row.lower_from_previous)}, {_percent(row.upper_from_previous)}]"
            for row in rows.itertuples()
        ]
        figure.add_bar(
            x=labels,
            y=rows["users"],
            name="users" if group is None else str(group),
            marker_color=PALETTE[index % len(PALETTE)],
            text=[
                f"{users:,}<br>{_percent(rate)}"
                for users, rate in zip(rows["users"], rows["conversion_from_start"], strict=True)
            ],
            textposition="outside",
            hovertext=hover,
            hoverinfo="text",
        )
    figure.update_layout(title=title, yaxis_title="users", barmode="group", showlegend=groups != [None])
    return figure


def conversion_bars(
    table: pd.DataFrame, title: str = "Conversion from the start, 95% intervals"
) -> go.Figure:
    """Conversion from the start per step (grouped bars per segment) with Wilson error bars."""
    figure = go.Figure()
    groups = list(table["group"].unique()) if "group" in table.columns else [None]
    for index, group in enumerate(groups):
        rows = table if group is None else table[table["group"] == group]
        figure.add_bar(
            x=[f"{step}. {name}" for step, name in zip(rows["step"], rows["event_name"], strict=True)],
            y=rows["conversion_from_start"],
            name="all users" if group is None else str(group),
            marker_color=PALETTE[index % len(PALETTE)],
            error_y={
                "type": "data",
                "symmetric": False,
                "array": rows["upper_from_start"] - rows["conversion_from_start"],
                "arrayminus": rows["conversion_from_start"] - rows["lower_from_start"],
            },
        )
    figure.update_layout(title=title, yaxis_tickformat=".0%", barmode="group", yaxis_range=[0, 1.05])
    return figure


def step_time_histogram(histogram: pd.DataFrame, title: str = "Time between steps") -> go.Figure:
    """Users per time bin, one bar series per step transition."""
    figure = go.Figure()
    for index, (step, rows) in enumerate(histogram.groupby("step", sort=True)):
        figure.add_bar(
            x=rows["bin"],
            y=rows["users"],
            name=f"to step {step} ({rows['event_name'].iloc[0]})",
            marker_color=PALETTE[index % len(PALETTE)],
        )
    figure.update_layout(
        title=title, barmode="group", xaxis_title="time from the previous step", yaxis_title="users"
    )
    return figure


def conversion_over_time(
    weekly: pd.DataFrame, title: str = "Conversion within the window, by week of the first step"
) -> go.Figure:
    """Conversion from the start per week, one line per step after the first, with 95% bands as
    error bars; weeks whose window has not run out (``complete`` false) are dotted with open
    markers, joined to the last complete week, so that a low recent value reads as unfinished."""
    figure = go.Figure()
    for index, (step, rows) in enumerate(weekly[weekly["step"] > 1].groupby("step", sort=True)):
        color = PALETTE[index % len(PALETTE)]
        name = f"step {step}: {rows['event_name'].iloc[0]}"
        complete = rows["complete"].to_numpy(dtype=bool)
        done = rows[complete]
        figure.add_scatter(
            x=done["week"],
            y=done["conversion_from_start"],
            mode="lines+markers",
            name=name,
            legendgroup=name,
            line_color=color,
            error_y={
                "type": "data",
                "symmetric": False,
                "array": done["upper_from_start"] - done["conversion_from_start"],
                "arrayminus": done["conversion_from_start"] - done["lower_from_start"],
            },
        )
        if not complete.all():
            first_open = int(np.argmin(complete))
            tail = rows.iloc[max(first_open - 1, 0) :]
            figure.add_scatter(
                x=tail["week"],
                y=tail["conversion_from_start"],
                mode="lines+markers",
                name=f"{name} (window not over)",
                legendgroup=name,
                showlegend=False,
                line={"color": color, "dash": "dot"},
                marker={"symbol": "circle-open"},
                hovertemplate="%{x}: %{y:.1%} (the window has not run out for every user)<extra></extra>",
            )
    figure.update_layout(title=title, yaxis_tickformat=".0%", xaxis_title="week of the first step")
    return figure
