"""Figures and display tables of the Experiments page: pure functions of the frames of
``core/experiments`` (no Streamlit), so the page only places them and the tests can read them.

Units follow the summary card (``core.experiments.summary``): a rate's value is shown as a
percentage and a difference of rates in percentage points; money with two decimals; counts with
three significant digits.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from core.experiments.analysis import CORRECTIONS
from core.experiments.summary import metric_label, metric_spec
from core.figures import BAND_OPACITY, PALETTE, _hex_to_rgba

ALWAYS_VALID = "always-valid 95% CI (for daily peeking)"


def is_rate(metric: str) -> bool:
    spec = metric_spec(metric)
    return spec is not None and spec.is_rate


def format_value(metric: str, value: float) -> str:
    """An arm's value: a rate as a percentage, money with two decimals, else 3 significant digits."""
    if not _finite(value):
        return "n/a"
    spec = metric_spec(metric)
    if spec is not None and spec.is_rate:
        return f"{value:.1%}"
    if spec is None or spec.is_revenue:
        return f"{value:,.2f}"
    return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def format_difference(metric: str, value: float, signed: bool = True) -> str:
    """A difference: percentage points for rates, the metric's unit otherwise."""
    if not _finite(value):
        return "n/a"
    sign = "+" if signed else ""
    spec = metric_spec(metric)
    if spec is not None and spec.is_rate:
        return f"{value * 100:{sign}.2f} pts"
    if spec is None or spec.is_revenue:
        return f"{value:{sign},.2f}"
    return f"{value:{sign},.3g}"


def format_interval(metric: str, low: float, high: float, unit: bool = True) -> str:
    """``[low, high]``; without ``unit`` the bounds drop " pts" (said once, with the estimate)."""
    if not (_finite(low) and _finite(high)):
        return "n/a"
    bounds = [format_difference(metric, value) for value in (low, high)]
    if not unit:
        bounds = [bound.removesuffix(" pts") for bound in bounds]
    return f"[{bounds[0]}, {bounds[1]}]"


def format_p(value: float) -> str:
    if not _finite(value):
        return "n/a"
    return "<0.0001" if value < 0.0001 else f"{value:.4f}"


def adjusted_column(correction: str) -> str:
    """The header of the adjusted p-value column: it names the correction."""
    return f"adjusted p ({CORRECTIONS[correction]})"


def results_display(results: pd.DataFrame, days: int, correction: str, cuped: bool) -> pd.DataFrame:
    """The review's metric table in words and units, one row per metric and variant.

    Every figure is a column of ``Review.results`` formatted: the values, the absolute difference
    with its 95% interval, the relative difference, the p-value and the adjusted p-value, the
    always-valid interval, the chance to beat control and the expected loss of shipping the
    variant; with ``cuped``, the share of variance CUPED removed ("not applied" where the metric
    has no usable pre-period).
    """
    rows = []
    for row in results.to_dict(orient="records"):
        metric = str(row["metric"])
        shown = {
            "metric": metric_label(metric, days),
            "variant": str(row["variant"]),
            "control value": format_value(metric, row["control_value"]),
            "variant value": format_value(metric, row["variant_value"]),
            "abs diff [95% CI]": f"{format_difference(metric, row['abs_diff'])} "
            f"{format_interval(metric, row['ci_low'], row['ci_high'], unit=False)}",
            "relative diff": f"{row['rel_diff']:+.1%}" if _finite(row["rel_diff"]) else "n/a",
            "p-value": format_p(row["p_value"]),
            adjusted_column(correction): format_p(row["p_adjusted"]),
            ALWAYS_VALID: format_interval(metric, row.get("seq_ci_low"), row.get("seq_ci_high")),
            "chance to beat control": f"{row['chance_to_beat']:.1%}"
            if _finite(row.get("chance_to_beat"))
            else "n/a",
            "expected loss": format_difference(metric, row.get("expected_loss"), signed=False),
        }
        if cuped:
            reduction = row.get("variance_reduction")
            shown["CUPED variance reduction"] = (
                f"{reduction:.1%}" if bool(row.get("cuped")) and _finite(reduction) else "not applied"
            )
        rows.append(shown)
    return pd.DataFrame(rows)


def overview_display(overview: pd.DataFrame) -> pd.DataFrame:
    """``experiment_overview`` for the list: whole days, the SRM p-value and its verdict."""
    return pd.DataFrame(
        {
            "experiment": overview["experiment"],
            "status": overview["status"],
            "variants": overview["variants"],
            "users": overview["users"],
            "days running": overview["days_running"].astype(float).round(0).astype(int),
            "first assigned": pd.to_datetime(overview["first_assigned"]).dt.strftime("%Y-%m-%d"),
            "SRM p": [format_p(value) for value in overview["srm_p_value"]],
            "SRM check": overview["srm"],
        }
    )


def rmst_display(rmst: pd.DataFrame) -> pd.DataFrame:
    """``VariantSurvival.rmst`` in days: each variant's RMST, the control's, the difference with
    its 95% interval and p-value."""
    return pd.DataFrame(
        {
            "variant": rmst["variant"],
            "RMST (days)": [f"{value:.2f}" if _finite(value) else "n/a" for value in rmst["rmst"]],
            "control RMST (days)": [
                f"{value:.2f}" if _finite(value) else "n/a" for value in rmst["rmst_control"]
            ],
            "difference [95% CI]": [
                f"{diff:+.2f} [{low:+.2f}, {high:+.2f}]"
                if _finite(diff) and _finite(low) and _finite(high)
                else "n/a"
                for diff, low, high in zip(rmst["diff"], rmst["ci_low"], rmst["ci_high"], strict=True)
            ],
            "p-value": [format_p(value) for value in rmst["p_value"]],
            "horizon (days)": rmst["tau_days"],
        }
    )


def cumulative_figure(cumulative: pd.DataFrame, metric: str, variant: str, days: int) -> go.Figure:
    """The effect as it stood each assignment day: the estimate, its fixed-horizon 95% band and
    the (wider) always-valid band, against the zero line.

    Args:
        cumulative: ``Review.cumulative``.
        metric, variant: the row to draw.
        days: the review's window N (for the metric's label).

    Rates are drawn in percentage points (the frame's differences x 100), other metrics in
    their own units.
    """
    rows = cumulative[(cumulative["metric"] == metric) & (cumulative["variant"] == variant)]
    scale = 100.0 if is_rate(metric) else 1.0
    unit = "difference (percentage points)" if scale == 100.0 else "difference"
    title = f"{metric_label(metric, days)}: {variant} minus control, cumulative by assignment day"
    figure = go.Figure()
    if rows.empty:
        figure.update_layout(title=title, annotations=[{"text": "No days to show", "showarrow": False}])
        return figure
    day = rows["day"]

    def band(low: str, high: str, colour: str, name: str, opacity: float) -> None:
        figure.add_trace(
            go.Scatter(
                x=day,
                y=rows[high].to_numpy(dtype=float) * scale,
                mode="lines",
                line={"width": 0},
                showlegend=False,
                hoverinfo="skip",
                name=f"{name} upper",
            )
        )
        figure.add_trace(
            go.Scatter(
                x=day,
                y=rows[low].to_numpy(dtype=float) * scale,
                mode="lines",
                line={"width": 0},
                fill="tonexty",
                fillcolor=_hex_to_rgba(colour, opacity),
                name=name,
            )
        )

    band("seq_ci_low", "seq_ci_high", PALETTE[1], "always-valid 95% band", BAND_OPACITY)
    band("ci_low", "ci_high", PALETTE[0], "fixed-horizon 95% band", 2 * BAND_OPACITY)
    figure.add_trace(
        go.Scatter(
            x=day,
            y=rows["diff"].to_numpy(dtype=float) * scale,
            mode="lines+markers",
            line={"color": PALETTE[0]},
            name="estimate",
        )
    )
    figure.add_hline(y=0, line={"color": "grey", "dash": "dot"})
    figure.update_layout(
        title=title, xaxis_title="assigned on or before", yaxis_title=unit, hovermode="x unified"
    )
    return figure


def relative_effects_figure(results: pd.DataFrame, days: int) -> go.Figure:
    """Every metric's relative difference with its 95% interval, one marker per variant: the
    table at a glance, comparable across metrics because relative."""
    figure = go.Figure()
    for index, (variant, rows) in enumerate(results.groupby("variant", sort=True)):
        rel = rows["rel_diff"].to_numpy(dtype=float)
        low = rows["rel_ci_low"].to_numpy(dtype=float)
        high = rows["rel_ci_high"].to_numpy(dtype=float)
        figure.add_trace(
            go.Scatter(
                x=rel * 100,
                y=[metric_label(str(m), days) for m in rows["metric"]],
                mode="markers",
                marker={"color": PALETTE[index % len(PALETTE)], "size": 9},
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": np.where(np.isfinite(high), high - rel, np.nan) * 100,
                    "arrayminus": np.where(np.isfinite(low), rel - low, np.nan) * 100,
                },
                name=str(variant),
            )
        )
    figure.add_vline(x=0, line={"color": "grey", "dash": "dot"})
    figure.update_layout(
        title="Relative difference against the control, with 95% intervals",
        xaxis_title="relative difference (%)",
        yaxis={"autorange": "reversed"},
        height=max(260, 60 + 40 * results["metric"].nunique()),
    )
    return figure


def _finite(value: object) -> bool:
    try:
        return value is not None and math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
