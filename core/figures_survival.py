"""Plotly figures of the survival view: Kaplan-Meier curves with the number-at-risk table under
them, and the Cox model's forest plot. Pure functions of core/survival.py's result frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.figures import BAND_OPACITY, PALETTE, _hex_to_rgba

# Beyond this many points a group's curve is drawn through evenly spaced rows of its table (each
# drawn point is exact; the steps between them are merged), which keeps the page light.
MAX_CURVE_POINTS = 3000


def _thinned(curve: pd.DataFrame) -> pd.DataFrame:
    if len(curve) <= MAX_CURVE_POINTS:
        return curve
    index = np.unique(np.linspace(0, len(curve) - 1, MAX_CURVE_POINTS).round().astype(int))
    return curve.iloc[index]


def kaplan_meier_figure(
    curve: pd.DataFrame, at_risk: pd.DataFrame, title: str = "Survival (Kaplan-Meier)"
) -> go.Figure:
    """Step curves S(t) per group with their 95% bands, and the number at risk under the plot.

    Args:
        curve: ``KaplanMeierResult.curve``; each group's curve starts at (0, 1).
        at_risk: ``KaplanMeierResult.at_risk``: one text row per group, at the tick days.
    """
    groups = list(dict.fromkeys(curve["group"])) if len(curve) else []
    figure = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        row_heights=[0.74, 0.26],
        vertical_spacing=0.16,
    )
    if not groups:
        figure.update_layout(
            title=title, annotations=[{"text": "No users in this selection", "showarrow": False}]
        )
        return figure
    for index, group in enumerate(groups):
        colour = PALETTE[index % len(PALETTE)]
        rows = _thinned(curve[curve["group"] == group])
        days = np.concatenate([[0.0], rows["day"].to_numpy(dtype=float)])

        def with_start(column: str, rows: pd.DataFrame = rows) -> np.ndarray:
            return np.concatenate([[1.0], rows[column].to_numpy(dtype=float)])

        figure.add_trace(
            go.Scatter(
                x=days,
                y=with_start("upper"),
                mode="lines",
                line={"width": 0, "shape": "hv"},
                hoverinfo="skip",
                showlegend=False,
                legendgroup=str(group),
            ),
            row=1,
            col=1,
        )
        figure.add_trace(
            go.Scatter(
                x=days,
                y=with_start("lower"),
                mode="lines",
                line={"width": 0, "shape": "hv"},
                fill="tonexty",
                fillcolor=_hex_to_rgba(colour, BAND_OPACITY),
                hoverinfo="skip",
                showlegend=False,
                legendgroup=str(group),
            ),
            row=1,
            col=1,
        )
        figure.add_trace(
            go.Scatter(
                x=days,
                y=with_start("survival"),
                mode="lines",
                name=str(group),
                line={"color": colour, "shape": "hv"},
                legendgroup=str(group),
                hovertemplate=f"{group}<br>day %{{x:.1f}}<br>S = %{{y:.3f}}<extra></extra>",
            ),
            row=1,
            col=1,
        )
        counts = at_risk[at_risk["group"] == group]
        figure.add_trace(
            go.Scatter(
                x=counts["day"],
                y=[str(group)] * len(counts),
                mode="text",
                text=[f"{int(value):,}" for value in counts["at_risk"]],
                textfont={"color": colour},
                showlegend=False,
                hovertemplate=f"{group}: %{{text}} at risk on day %{{x}}<extra></extra>",
            ),
            row=2,
            col=1,
        )
    figure.update_yaxes(title_text="Share not yet churned", range=[0, 1.02], row=1, col=1)
    # Categories top-down, with room above the first row for the table's heading.
    figure.update_yaxes(type="category", range=[len(groups) - 0.5, -0.9], row=2, col=1)
    figure.add_annotation(
        text="Number at risk",
        x=0,
        xref="paper",
        xanchor="left",
        y=-0.9,
        yref="y2",
        yanchor="bottom",
        showarrow=False,
        font={"size": 13},
    )
    ticks = sorted(at_risk["day"].unique())
    figure.update_xaxes(tickvals=ticks, row=2, col=1, title_text="Days since start")
    figure.update_xaxes(tickvals=ticks, showticklabels=True, row=1, col=1)
    figure.update_layout(
        title=title,
        height=420 + 22 * len(groups),
        hovermode="closest",
        legend={"title": {"text": "Group"}},
        margin={"l": 60, "r": 20, "t": 60, "b": 50},
    )
    return figure


def forest_figure(hazard_ratios: pd.DataFrame, title: str = "Hazard ratios (Cox model)") -> go.Figure:
    """Hazard ratio and 95% interval per covariate on a log axis, with the line HR = 1.

    Covariates whose proportional-hazards check fails are drawn in red.
    """
    figure = go.Figure()
    if hazard_ratios.empty:
        figure.update_layout(title=title)
        return figure
    rows = hazard_ratios.iloc[::-1]
    colours = ["#d62728" if fails else "#1f77b4" for fails in rows["ph_fails"]]
    figure.add_trace(
        go.Scatter(
            x=rows["hazard_ratio"],
            y=rows["covariate"],
            mode="markers",
            marker={"color": colours, "size": 9, "symbol": "square"},
            error_x={
                "type": "data",
                "symmetric": False,
                "array": rows["upper"] - rows["hazard_ratio"],
                "arrayminus": rows["hazard_ratio"] - rows["lower"],
            },
            customdata=np.column_stack([rows["lower"], rows["upper"], rows["p_value"]]),
            hovertemplate="%{y}<br>HR %{x:.3f} [%{customdata[0]:.3f}, %{customdata[1]:.3f}]"
            "<br>p = %{customdata[2]:.3g}<extra></extra>",
            showlegend=False,
        )
    )
    figure.add_vline(x=1, line={"dash": "dash", "color": "grey"})
    figure.update_xaxes(type="log", title_text="Hazard ratio of churn (log scale; < 1 = stays longer)")
    figure.update_layout(
        title=title, height=160 + 28 * len(rows), margin={"l": 60, "r": 20, "t": 60, "b": 50}
    )
    return figure
