"""The summary card of a review in plain words, every claim taken from the metric table.

A PM reads this first, so it says only what the table under it shows: which metrics moved after
the multiple-comparison adjustment (with their intervals in the metric's own units: rates in
percentage points), whether the sample ratio check passed, and how many tests were adjusted for.
When the ratio check fails it says first, and only, that the results cannot be trusted.
"""

from __future__ import annotations

import math

import pandas as pd

from core.errors import TenureError
from core.experiments.analysis import CORRECTIONS, Review
from core.experiments.ltv import LTV_METRIC
from core.experiments.metrics import MetricSpec, parse_metric

LTV_LABEL = "predicted 90-day LTV (model-based)"


def format_effect(spec: MetricSpec | None, value: float) -> str:
    """A difference in the metric's units: points for rates, currency for money."""
    if not math.isfinite(value):
        return "n/a"
    if spec is not None and spec.is_rate:
        return f"{value * 100:.1f} points"
    if spec is not None and spec.is_revenue:
        return f"{value:,.2f}"
    return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"


def _bound(spec: MetricSpec | None, value: float) -> str:
    """An interval bound: the number alone (the unit is said once, with the estimate)."""
    return format_effect(spec, value).removesuffix(" points")


def metric_spec(metric: str) -> MetricSpec | None:
    """The spec of a metric name of a review table; None for the model-based LTV metric."""
    if metric == LTV_METRIC:
        return None
    try:
        return parse_metric(metric)
    except TenureError:
        return None


def metric_label(metric: str, days: int) -> str:
    """The metric in words, as the card and the page's table say it."""
    if metric == LTV_METRIC:
        return LTV_LABEL
    spec = metric_spec(metric)
    return spec.label(days) if spec is not None else metric.replace("_", " ")


def sentences(review: Review) -> list[str]:
    """The card, one sentence per line."""
    users = review.users
    alpha = review.options.alpha
    if users.srm_failed:
        return [
            f"The sample ratio check failed (p = {users.srm_p_value:.2g}): the users per variant do not match "
            f"the intended split, so assignment or logging is broken and these results cannot be trusted. "
            "Fix the assignment before reading any effect."
        ]
    table = review.results
    lines: list[str] = []
    for variant, rows in table.groupby("variant", sort=True):
        moved = rows[rows["p_adjusted"] < alpha]
        for row in moved.itertuples():
            spec = metric_spec(str(row.metric))
            verb = "raised" if row.abs_diff > 0 else "lowered"
            lines.append(
                f"Variant {variant} {verb} {metric_label(str(row.metric), review.design.days)} by "
                f"{format_effect(spec, abs(row.abs_diff))} (95% CI {_bound(spec, row.ci_low)} to "
                f"{_bound(spec, row.ci_high)})."
            )
        if moved.empty:
            lines.append(
                f"Variant {variant} moved no metric beyond chance after the adjustment; "
                f"{_widest(rows, review.design.days)}"
            )
    if users.targeted:
        lines.insert(
            0,
            "Users were assigned with different probabilities (targeted assignment): a plain comparison of the "
            "variants mixes the effect with who was chosen; a causal reading needs the comparison weighted by "
            "the propensities.",
        )
    tested = int(table["p_value"].notna().sum())
    comparisons = table["variant"].nunique()
    lines.append(
        f"The sample ratio check passed (p = {users.srm_p_value:.2g}); {tested} tests "
        f"({table['metric'].nunique()} metrics x {comparisons} variant comparison{'s' if comparisons > 1 else ''}) were "
        f"{CORRECTIONS[review.options.correction]}-adjusted."
    )
    return lines


def _widest(rows: pd.DataFrame, days: int) -> str:
    """What 'no effect' means here: the interval of the metric with the smallest p-value."""
    usable = rows[rows["p_value"].notna()]
    if usable.empty:
        return "no metric could be tested."
    row = usable.loc[usable["p_value"].idxmin()]
    spec = metric_spec(str(row["metric"]))
    return (
        f"the closest was {metric_label(str(row['metric']), days)}, {format_effect(spec, row['abs_diff'])} "
        f"(95% CI {_bound(spec, row['ci_low'])} to {_bound(spec, row['ci_high'])}, "
        f"adjusted p = {row['p_adjusted']:.2g})."
    )
