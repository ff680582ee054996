"""Plotly figures of an experiment's time to churn and retention per variant.

Pure functions of core/experiments/survival.py's results. They reuse the survival view's
Kaplan-Meier figure and the retention view's curves with the variant as the group, so the three
views read alike; only the labels (days since assignment, variant) and the RMST horizon differ.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from core.experiments.survival import VariantSurvival
from core.figures import retention_curves
from core.figures_survival import kaplan_meier_figure


def variant_survival_figure(
    survival: VariantSurvival, title: str = "Time to churn since assignment (Kaplan-Meier)"
) -> go.Figure:
    """Kaplan-Meier curve per variant with its 95% band, the number at risk under the plot and a
    dotted line at the RMST horizon (the area under each curve up to it is the RMST)."""
    figure = kaplan_meier_figure(
        survival.curves.rename(columns={"variant": "group"}),
        survival.at_risk.rename(columns={"variant": "group"}),
        title=title,
    )
    if len(survival.curves):
        figure.add_vline(
            x=survival.tau_days,
            line={"dash": "dot", "color": "#555555", "width": 1},
            annotation_text=f"RMST horizon {survival.tau_days:g} d",
            annotation_position="top right",
            row=1,
            col=1,
        )
    figure.update_xaxes(title_text="Days since assignment", row=2, col=1)
    figure.update_layout(legend={"title": {"text": "Variant"}})
    return figure


def variant_retention_figure(
    retention: pd.DataFrame, title: str = "Retention by day since assignment"
) -> go.Figure:
    """Retention rate on each day since assignment per variant, with its 95% Wilson band.

    Args:
        retention: ``variant_retention``'s frame; days where nobody of a variant is eligible yet
            are not drawn.
    """
    figure = retention_curves(retention.rename(columns={"variant": "segment", "day": "period"}), title)
    for trace in figure.data:
        if trace.hovertemplate:
            trace.hovertemplate = trace.hovertemplate.replace("<br>period ", "<br>day ")
    figure.update_layout(
        xaxis={"title": "Days since assignment", "dtick": None},
        yaxis={"title": "Active on that day"},
        legend={"title": {"text": "Variant"}},
    )
    return figure
