"""Tables and plotly figures of the What-if page: estimates with intervals against the logged value
and (on a simulated store) the ground truth, weighted survival per policy, the scenario projection.

Pure functions of core/whatif's results, so they are tested without a browser. The simulator's
ground truth is always drawn and labelled as such, never mixed with an estimate.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.whatif.scenario import ASSUMPTION
from core.whatif.user_policies import UserPolicyValue

TRUTH_LABEL = "simulator ground truth"
LOGGED_LABEL = "logged"
ESTIMATE_COLUMNS = ("policy", "estimator", "value", "ci_low", "ci_high", TRUTH_LABEL)
COLORS = {"current": "#7f7f7f", "chosen": "#1f77b4"}


def truth_value(truth: pd.DataFrame | None, policy: str | None, column: str) -> float | None:
    """The ground truth of ``policy`` in ``column`` of ``truth.policy_values``, if the store has it."""
    if truth is None or policy is None or column not in truth.columns:
        return None
    rows = truth.loc[truth["policy"] == policy, column]
    return float(rows.iloc[0]) if len(rows) else None


def click_rate_table(estimates: pd.DataFrame, target: str, truth: float | None) -> pd.DataFrame:
    """``ESTIMATE_COLUMNS`` for a per-recommendation what-if (``WhatIfResult.estimates``)."""
    frame = estimates[["estimator", "value", "ci_low", "ci_high"]].copy()
    frame.insert(0, "policy", target)
    frame[TRUTH_LABEL] = np.nan if truth is None else truth
    return frame[list(ESTIMATE_COLUMNS)]


def user_policy_table(
    result: UserPolicyValue, truth: pd.DataFrame | None = None, truth_column: str | None = None
) -> pd.DataFrame:
    """``ESTIMATE_COLUMNS``: the target's estimates, every "everyone W" policy's, and the logged mean.

    A policy ``everyone W`` (and a variant target) gets the truth of policy W when ``truth`` has it.
    """
    rows = [
        (result.target, e.estimator, e.value, e.ci_low, e.ci_high)
        for e in result.estimates
        if not result.policies["policy"].eq(f"everyone {result.target}").any()
    ]
    frame = pd.DataFrame(rows, columns=list(ESTIMATE_COLUMNS[:5]))
    policies = result.policies[list(ESTIMATE_COLUMNS[:5])]
    logged = pd.DataFrame(
        [(LOGGED_LABEL, "mean", result.logged_value, np.nan, np.nan)], columns=frame.columns
    )
    frame = pd.concat([frame, policies, logged], ignore_index=True)
    names = frame["policy"].str.removeprefix("everyone ")
    frame[TRUTH_LABEL] = [
        (truth_value(truth, name, truth_column) if truth_column else None) if policy != LOGGED_LABEL else None
        for name, policy in zip(names, frame["policy"], strict=True)
    ]
    frame[TRUTH_LABEL] = frame[TRUTH_LABEL].astype(float)
    return frame


def estimates_figure(
    table: pd.DataFrame, logged_value: float | None, title: str, value_title: str, percent: bool = False
) -> go.Figure:
    """One row per policy and estimator: the estimate with its interval, a dashed line at the
    logged value and a diamond at the simulator's ground truth where known.

    Args:
        table: ``ESTIMATE_COLUMNS`` (rows without an interval, like the logged mean, are skipped).
    """
    shown = table[table["policy"] != LOGGED_LABEL].dropna(subset=["value"])
    labels = [
        f"{policy} · {estimator}"
        for policy, estimator in zip(shown["policy"], shown["estimator"], strict=True)
    ]
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(
            x=shown["value"],
            y=labels,
            mode="markers",
            name="estimate (95% interval)",
            marker={"size": 9, "color": "#1f77b4"},
            error_x={
                "type": "data",
                "symmetric": False,
                "array": (shown["ci_high"] - shown["value"]).to_numpy(),
                "arrayminus": (shown["value"] - shown["ci_low"]).to_numpy(),
            },
        )
    )
    truth = shown[TRUTH_LABEL] if TRUTH_LABEL in shown else pd.Series(dtype=float)
    if truth.notna().any():
        known = truth.notna().to_numpy()
        figure.add_trace(
            go.Scatter(
                x=truth[known],
                y=np.asarray(labels)[known],
                mode="markers",
                name=TRUTH_LABEL,
                marker={"symbol": "diamond-open", "size": 12, "color": "#d62728", "line": {"width": 2}},
            )
        )
    if logged_value is not None and np.isfinite(logged_value):
        figure.add_vline(
            x=logged_value,
            line={"dash": "dash", "color": "#555555"},
            annotation_text=f"logged {logged_value:.2%}" if percent else f"logged {logged_value:,.3g}",
            annotation_position="top",
        )
    figure.update_layout(
        title=title,
        xaxis={"title": value_title, "tickformat": ".1%" if percent else None},
        yaxis={"autorange": "reversed"},
        height=max(260, 60 + 34 * len(labels)),
        legend={"orientation": "h", "y": -0.25},
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
    )
    return figure


def survival_figure(
    survival: pd.DataFrame, title: str = "Time to churn under each policy (weighted)"
) -> go.Figure:
    """Inverse-propensity-weighted survival per policy (``UserPolicyValue.survival``), each with a
    band from its ``ci_low``/``ci_high`` (none for a policy whose interval was not computed)."""
    figure = go.Figure()
    palette = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b")
    for index, (policy, curve) in enumerate(survival.groupby("policy", sort=False)):
        color = palette[index % len(palette)]
        curve = curve.sort_values("day")
        if curve["ci_low"].notna().any():
            figure.add_trace(
                go.Scatter(
                    x=np.concatenate([curve["day"], curve["day"][::-1]]),
                    y=np.concatenate([curve["ci_high"], curve["ci_low"][::-1]]),
                    fill="toself",
                    fillcolor=color,
                    opacity=0.15,
                    line={"width": 0},
                    name=f"{policy} (95% interval)",
                    hoverinfo="skip",
                    showlegend=False,
                )
            )
        figure.add_trace(
            go.Scatter(
                x=curve["day"],
                y=curve["survival"],
                mode="lines",
                name=str(policy),
                line={"color": color, "shape": "hv"},
            )
        )
    figure.update_layout(
        title=title,
        xaxis={"title": "Days since assignment"},
        yaxis={"title": "Not churned", "tickformat": ".0%", "range": [0, 1.02]},
        legend={"title": {"text": "Policy"}},
    )
    return figure


def survival_table(survival: pd.DataFrame, days: Iterable[float]) -> pd.DataFrame:
    """The weighted survival with its interval at a few ``days`` (those the frame was read at),
    one row per policy and day: the chart's numbers, to read off."""
    wanted = sorted({float(day) for day in days})
    rows = survival[survival["day"].astype(float).isin(wanted)]
    return rows[["policy", "day", "survival", "ci_low", "ci_high"]].reset_index(drop=True)


def attribute_values_table(attributes: dict[str, list[str]], shown: int = 12) -> pd.DataFrame:
    """One row per attribute a rule may name: how many values its users have and the first
    ``shown`` of them, as text (a rule's value must be one of them, written exactly)."""
    rows = [
        (
            name,
            len(values),
            ", ".join(values[:shown])
            + (f", ... ({len(values) - shown} more)" if len(values) > shown else ""),
        )
        for name, values in attributes.items()
    ]
    return pd.DataFrame(rows, columns=["attribute", "value_count", "values"])


def scenario_figure(projection: pd.DataFrame) -> go.Figure:
    """Current against chosen for each projected figure, the chosen bar with its interval; a bar
    that rests on an assumption is hatched and says so in its label."""
    figures = list(dict.fromkeys(projection["figure"]))
    figure = make_subplots(rows=1, cols=len(figures), subplot_titles=figures)
    for column, name in enumerate(figures, start=1):
        rows = projection[(projection["figure"] == name) & projection["strategy"].isin(["current", "chosen"])]
        for row in rows.itertuples():
            assumed = row.source == ASSUMPTION
            figure.add_trace(
                go.Bar(
                    x=[f"{row.strategy} ({row.source})"],
                    y=[row.value],
                    marker={"color": COLORS[row.strategy], "pattern": {"shape": "/" if assumed else ""}},
                    error_y=None
                    if row.strategy == "current"
                    else {
                        "type": "data",
                        "symmetric": False,
                        "array": [row.ci_high - row.value],
                        "arrayminus": [row.value - row.ci_low],
                    },
                    name=row.strategy,
                    showlegend=False,
                    hovertemplate=f"{row.strategy}: %{{y:,.0f}}<extra>{row.source}</extra>",
                ),
                row=1,
                col=column,
            )
    figure.update_layout(
        title="Projected over the horizon: current strategy against the chosen one", height=380
    )
    return figure


def _plain(value: object) -> object:
    """JSON has no NaN and no numpy scalars: an undefined figure is null."""
    if isinstance(value, pd.DataFrame):
        return [{key: _plain(item) for key, item in row.items()} for row in value.to_dict(orient="records")]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if hasattr(value, "item"):
        value = value.item()  # type: ignore[union-attr]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def estimates_json(sections: dict[str, object]) -> str:
    """The page's results as one JSON document (frames as lists of records, NaN as null)."""
    return json.dumps(_plain(sections), indent=2, default=str)
