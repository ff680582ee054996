"""Plotly figures of the Models page: ROC and precision-recall curves, reliability diagrams, LTV
deciles and one user's timeline. Pure functions of the frames of core/models/curves.py,
core/models/results.py and core/models/timeline.py; one trace per model, coloured alike in
every figure (by the order of ``model_ids``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.figures import PALETTE

# Beyond this many points a curve is drawn through evenly spaced rows (every drawn point exact).
MAX_CURVE_POINTS = 2000
DIAGONAL_STYLE = {"dash": "dot", "color": "#9e9e9e", "width": 1}
WINDOW_COLOURS = {"before": "#1f77b4", "after": "#2ca02c"}


def _colour(model_ids: list[str], model_id: str) -> str:
    return PALETTE[model_ids.index(model_id) % len(PALETTE)] if model_id in model_ids else PALETTE[-1]


def _empty(title: str, text: str) -> go.Figure:
    figure = go.Figure()
    figure.update_layout(title=title, annotations=[{"text": text, "showarrow": False}])
    return figure


def _thinned(frame: pd.DataFrame) -> pd.DataFrame:
    if len(frame) <= MAX_CURVE_POINTS:
        return frame
    index = np.unique(np.linspace(0, len(frame) - 1, MAX_CURVE_POINTS).round().astype(int))
    return frame.iloc[index]


def _model_order(frame: pd.DataFrame, model_ids: list[str] | None) -> list[str]:
    present = list(dict.fromkeys(frame["model_id"])) if len(frame) else []
    return [model for model in (model_ids or present) if model in present]


def roc_figure(
    roc: pd.DataFrame, aucs: dict[str, float] | None = None, model_ids: list[str] | None = None
) -> go.Figure:
    """ROC curves, one per model, over the chance diagonal.

    Args:
        roc: ``roc_by_model(..., by="model_id")``: ``model_id, threshold, fpr, tpr``.
        aucs: ROC AUC per model id, shown in the legend.
        model_ids: the colour order.
    """
    title = "ROC curve (churn)"
    order = _model_order(roc, model_ids)
    if not order:
        return _empty(title, "No model has both churners and non-churners among its evaluation users")
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=DIAGONAL_STYLE, name="chance", hoverinfo="skip")
    )
    for model_id in order:
        rows = _thinned(roc[roc["model_id"] == model_id])
        auc = (aucs or {}).get(model_id)
        figure.add_trace(
            go.Scatter(
                x=rows["fpr"],
                y=rows["tpr"],
                mode="lines",
                name=model_id if auc is None else f"{model_id} (AUC {auc:.3f})",
                line={"color": _colour(model_ids or order, model_id), "shape": "linear"},
                customdata=rows["threshold"],
                hovertemplate="FPR %{x:.3f}<br>TPR %{y:.3f}<br>churn_prob >= %{customdata:.3f}<extra></extra>",
            )
        )
    figure.update_layout(
        title=title,
        xaxis={"title": "False positive rate", "range": [0, 1]},
        yaxis={"title": "True positive rate (recall)", "range": [0, 1.02]},
        legend={"orientation": "h", "y": -0.2},
    )
    return figure


def pr_figure(
    pr: pd.DataFrame,
    base_rates: dict[str, float] | None = None,
    aps: dict[str, float] | None = None,
    model_ids: list[str] | None = None,
) -> go.Figure:
    """Precision-recall curves, one per model (steps), with each model's churn rate as a dotted
    line (the precision of flagging users at random).

    Args:
        pr: ``pr_by_model(..., by="model_id")``: ``model_id, threshold, recall, precision``.
        base_rates: churn rate per model id (its evaluation users).
        aps: average precision per model id, shown in the legend.
        model_ids: the colour order.
    """
    title = "Precision-recall curve (churn)"
    order = _model_order(pr, model_ids)
    if not order:
        return _empty(title, "No model has a churner among its evaluation users")
    figure = go.Figure()
    for model_id in order:
        colour = _colour(model_ids or order, model_id)
        rows = _thinned(pr[pr["model_id"] == model_id])
        average = (aps or {}).get(model_id)
        figure.add_trace(
            go.Scatter(
                x=rows["recall"],
                y=rows["precision"],
                mode="lines",
                name=model_id if average is None else f"{model_id} (AP {average:.3f})",
                line={"color": colour, "shape": "vh"},
                customdata=rows["threshold"],
                hovertemplate="recall %{x:.3f}<br>precision %{y:.3f}<br>churn_prob >= %{customdata:.3f}"
                "<extra></extra>",
            )
        )
        rate = (base_rates or {}).get(model_id)
        if rate is not None:
            figure.add_trace(
                go.Scatter(
                    x=[0, 1],
                    y=[rate, rate],
                    mode="lines",
                    line={**DIAGONAL_STYLE, "color": colour},
                    name=f"{model_id} churn rate",
                    showlegend=False,
                    hovertemplate=f"churn rate {rate:.3f}<extra></extra>",
                )
            )
    figure.update_layout(
        title=title,
        xaxis={"title": "Recall", "range": [0, 1]},
        yaxis={"title": "Precision", "range": [0, 1.02]},
        legend={"orientation": "h", "y": -0.2},
    )
    return figure


def calibration_figure(reliability: pd.DataFrame, model_ids: list[str] | None = None) -> go.Figure:
    """Reliability diagrams: observed churn rate against mean predicted probability per bin, raw
    (left) and calibrated (right), one line per model, over the diagonal of perfect calibration.
    Empty bins are not drawn; the hover gives the bin's users.

    Args:
        reliability: ``model_reliability``: ``model_id, which, mean_predicted, observed_rate,
            users, ...``.
        model_ids: the colour order.
    """
    title = "Calibration (reliability diagram)"
    order = _model_order(reliability, model_ids) if "which" in reliability.columns else []
    if not order:
        return _empty(title, "No reliability table among these models")
    figure = make_subplots(rows=1, cols=2, subplot_titles=("Raw", "Calibrated"), shared_yaxes=True)
    for column, which in enumerate(("raw", "calibrated"), start=1):
        figure.add_trace(
            go.Scatter(
                x=[0, 1], y=[0, 1], mode="lines", line=DIAGONAL_STYLE, showlegend=False, hoverinfo="skip"
            ),
            row=1,
            col=column,
        )
        for model_id in order:
            rows = reliability[
                (reliability["model_id"] == model_id)
                & (reliability["which"] == which)
                & (reliability["users"] > 0)
            ]
            figure.add_trace(
                go.Scatter(
                    x=rows["mean_predicted"],
                    y=rows["observed_rate"],
                    mode="lines+markers",
                    name=model_id,
                    legendgroup=model_id,
                    showlegend=column == 1,
                    line={"color": _colour(model_ids or order, model_id)},
                    customdata=rows["users"],
                    hovertemplate="predicted %{x:.3f}<br>observed %{y:.3f}<br>%{customdata} users<extra></extra>",
                ),
                row=1,
                col=column,
            )
        figure.update_xaxes(title_text="Mean predicted churn probability", range=[0, 1], row=1, col=column)
    figure.update_yaxes(title_text="Observed churn rate", range=[0, 1.02], row=1, col=1)
    figure.update_layout(title=title, legend={"orientation": "h", "y": -0.25})
    return figure


def decile_figure(deciles: pd.DataFrame, model_ids: list[str] | None = None) -> go.Figure:
    """LTV by decile of predicted LTV: mean predicted (dashed) and mean actual (bars), decile 1 =
    highest predictions, one colour per model.

    Args:
        deciles: ``deciles_by_model(..., by="model_id")``: ``model_id, decile, mean_predicted,
            mean_actual, users, ...``.
        model_ids: the colour order.
    """
    title = "LTV by decile of predicted LTV"
    order = _model_order(deciles, model_ids)
    if not order:
        return _empty(title, "No predictions")
    figure = go.Figure()
    for model_id in order:
        colour = _colour(model_ids or order, model_id)
        rows = deciles[deciles["model_id"] == model_id]
        figure.add_trace(
            go.Bar(
                x=rows["decile"],
                y=rows["mean_actual"],
                name=f"{model_id} actual",
                legendgroup=model_id,
                marker={"color": colour},
                customdata=rows["users"],
                hovertemplate="decile %{x}<br>mean actual %{y:.2f}<br>%{customdata} users<extra></extra>",
            )
        )
        figure.add_trace(
            go.Scatter(
                x=rows["decile"],
                y=rows["mean_predicted"],
                mode="lines+markers",
                name=f"{model_id} predicted",
                legendgroup=model_id,
                line={"color": colour, "dash": "dash"},
                hovertemplate="decile %{x}<br>mean predicted %{y:.2f}<extra></extra>",
            )
        )
    figure.update_layout(
        title=title,
        barmode="group",
        xaxis={"title": "Decile of predicted LTV (1 = highest)", "dtick": 1},
        yaxis={"title": "Mean LTV per user"},
        legend={"orientation": "h", "y": -0.2},
    )
    return figure


def timeline_figure(timeline: pd.DataFrame, as_of: pd.Timestamp, horizon_end: pd.Timestamp) -> go.Figure:
    """One user's events as markers on a time axis, one row per event name, coloured by window
    (before / after the as-of date), marker size growing with revenue; the as-of date and the end
    of the horizon as vertical lines.

    Args:
        timeline: ``user_timeline``: ``event_time, event_name, revenue, window``.
    """
    title = "Events before and after the as-of date"
    figure = go.Figure()
    for window in ("before", "after"):
        rows = timeline[timeline["window"] == window]
        if rows.empty:
            continue
        revenue = rows["revenue"].to_numpy(dtype=float)
        figure.add_trace(
            go.Scatter(
                x=rows["event_time"],
                y=rows["event_name"],
                mode="markers",
                name=f"{window} as-of",
                marker={
                    "color": WINDOW_COLOURS[window],
                    "size": np.minimum(8 + 2 * np.sqrt(np.clip(revenue, 0, None)), 30),
                },
                customdata=revenue,
                hovertemplate="%{x}<br>%{y}<br>revenue %{customdata:.2f}<extra></extra>",
            )
        )
    for moment, label in ((as_of, "as-of"), (horizon_end, "horizon end")):
        figure.add_vline(x=pd.Timestamp(moment).to_pydatetime(), line={"dash": "dash", "color": "#616161"})
        figure.add_annotation(
            x=pd.Timestamp(moment).to_pydatetime(), y=1.04, yref="paper", text=label, showarrow=False
        )
    if timeline.empty:
        figure.add_annotation(
            text="No events before the horizon's end", showarrow=False, xref="paper", yref="paper"
        )
    figure.update_layout(
        title=title,
        xaxis={"title": "Event time (UTC)"},
        yaxis={"title": "Event"},
        legend={"orientation": "h", "y": -0.2},
    )
    return figure


def user_survival_figure(curve: pd.DataFrame, horizon_days: int) -> go.Figure:
    """One user's weekly survival S(w) (``week, survival``) as steps from week 0 to the horizon."""
    figure = go.Figure(
        go.Scatter(
            x=curve["week"],
            y=curve["survival"],
            mode="lines+markers",
            line_shape="hv",
            name="S(w)",
            hovertemplate="week %{x}: %{y:.1%}<extra></extra>",
        )
    )
    figure.update_layout(
        xaxis_title=f"week w after the as-of date (horizon {horizon_days} days)",
        yaxis_title="P(seen again on or after week w)",
        yaxis_range=[0, 1.02],
        yaxis_tickformat=".0%",
        height=300,
        margin={"t": 20},
    )
    return figure
