"""Per-group moment sums of the per-user metric values, computed in DuckDB.

The statistics only need, per arm, the count, means, variances and covariances of a metric's
columns (value and pre-period covariate). Sums of x and of x*y for each pair are additive, so the
same query serves the whole experiment (group by variant), a segment view (variant and segment)
and the cumulative view (variant and assignment day, summed up day by day in numpy).
"""

from __future__ import annotations

from itertools import combinations_with_replacement
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from core.experiments.metrics import (
    Design,
    MetricSpec,
    covariate_columns,
    eligible_column,
    per_user_sql,
    value_columns,
)
from core.store import Store

if TYPE_CHECKING:
    from tea_tasting.aggr import Aggregates

DAILY_GROUPS = ("variant", "CAST(assigned_time AS DATE)")
"""The review's grouping: per variant (``g0``) and assignment day (``g1``)."""


def metric_columns(index: int, spec: MetricSpec) -> list[str]:
    return value_columns(index, spec) + covariate_columns(index, spec)


def moments_select(design: Design) -> str:
    """The aggregate expressions: ``n{i}``, ``s__{col}`` and ``ss__{a}__{b}`` for every metric.

    Cheap where it can be: only retention has users to leave out (``FILTER``), and without the
    pre-period its columns are zero, so their sums are the constant 0 rather than aggregates.
    """

    def zero(*names: str) -> bool:
        return not design.pre_period and any(name.startswith("pre_") for name in names)

    parts: list[str] = ["count(*) FILTER (WHERE partial_window) AS partial_users"]
    for index, spec in enumerate(design.metrics):
        only = f" FILTER (WHERE {eligible_column(index)})" if spec.kind == "retention" else ""
        parts.append(f"count(*){only} AS n{index}")
        columns = metric_columns(index, spec)
        parts += [f"0.0 AS s__{c}" if zero(c) else f"sum({c}){only} AS s__{c}" for c in columns]
        parts += [
            f"0.0 AS ss__{a}__{b}" if zero(a, b) else f"sum({a} * {b}){only} AS ss__{a}__{b}"
            for a, b in combinations_with_replacement(columns, 2)
        ]
    return ", ".join(parts)


def moments_sql(user_sql: str, design: Design, group_by: list[str]) -> str:
    """Moment sums of the per-user SELECT ``user_sql`` per value of the ``group_by`` expressions.

    ``group_by`` holds SQL expressions over the per-user columns (trusted: built in core).
    """
    keys = ", ".join(f"{expression} AS g{k}" for k, expression in enumerate(group_by))
    group = ", ".join(f"g{k}" for k in range(len(group_by)))
    return f"SELECT {keys}, {moments_select(design)} FROM ({user_sql}) u GROUP BY {group} ORDER BY {group}"


def moment_sums(
    store: Store, design: Design, group_by: list[str] | tuple[str, ...] = DAILY_GROUPS
) -> pd.DataFrame:
    """The moment sums of ``design``'s per-user values per ``group_by`` value: one DuckDB query.

    Kept free of the statistics stack so that a caller can run it in a thread while that stack
    imports (DuckDB releases the GIL while it works).
    """
    user_sql, params = per_user_sql(store, design)
    return store.query_df(moments_sql(user_sql, design, list(group_by)), params)


def aggregates(row: pd.Series | dict[str, Any], index: int, spec: MetricSpec) -> Aggregates:
    """tea-tasting's ``Aggregates`` of metric ``index`` from one row of moment sums.

    Sample (n - 1) variances and covariances, as tea-tasting computes them from raw data.
    """
    from tea_tasting.aggr import Aggregates

    n = float(row[f"n{index}"] or 0)
    columns = metric_columns(index, spec)
    sums = {c: float(row[f"s__{c}"] or 0.0) for c in columns}
    means = {c: (sums[c] / n if n else float("nan")) for c in columns}
    var: dict[str, float] = {}
    cov: dict[tuple[str, str], float] = {}
    for a, b in combinations_with_replacement(columns, 2):
        cross = float(row[f"ss__{a}__{b}"] or 0.0)
        value = (cross - n * means[a] * means[b]) / (n - 1) if n > 1 else float("nan")
        if a == b:
            var[a] = max(value, 0.0) if np.isfinite(value) else value
        else:
            cov[(a, b)] = value
    return Aggregates(count_=int(n), mean_=means, var_=var, cov_=cov)


def cumulative(frame: pd.DataFrame, by: str) -> pd.DataFrame:
    """Running sums of every moment column along ``by`` (already sorted), per variant ``g0``."""
    sums = [c for c in frame.columns if c.startswith(("n", "s__", "ss__")) and c not in ("g0", by)]
    running = frame.copy()
    running[sums] = frame.groupby("g0", sort=False)[sums].cumsum()
    return running
