"""Time to churn and retention per variant of an experiment, measured from each user's assignment.

A review's fixed-window metrics (retention on day 7, revenue in 30 days) answer "did the change
move this number"; the survival view answers "does the change keep users longer", and shows
when the arms separate. Both count from each user's own assignment time, never from their first
event: a user assigned after months of activity starts at zero like a brand-new one, and events
before the assignment cannot have been caused by the variant.

Definitions (docs/METRICS.md, "A/B experiments: time to churn and retention per variant"):

- **Users**: the clean assignments of the experiment (``clean_assignments_sql``: users with more
  than one variant left out, a repeated assignment counted from the first). Users assigned after
  the data's end are not counted.
- **Data's end** (``end``): the latest event time in the store, over all events.
- **Churn** (the inactivity rule of core/survival.py, window ``W`` days): ``last`` = the user's
  latest event at or after the assignment, or the assignment itself when there is none. If
  ``last <= end - W`` the user churned at ``last``: duration = ``last - assigned``; else censored
  at the data's end: duration = ``end - assigned``. So a user with no event after the assignment
  churned at duration 0 when assigned at least ``W`` days before the end, and is censored
  otherwise (too early to tell).
- **Retention on day k** (k = 0, 1, ...): any event in [assigned + k days, assigned + k + 1
  days). Day k is complete when ``assigned + (k + 1) days <= end``; users whose day k is not
  complete leave that day's denominator.

Durations and retention counts come from DuckDB queries grouped by the integer ``user_key``; the
Kaplan-Meier curves, RMST and log-rank test are core/survival.py's (lifelines) run on the
duration arrays with the variant as the group.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from core.errors import TenureError
from core.experiments.assignments import clean_assignments_sql, experiment_names
from core.population import keyed_events_sql
from core.stats import wilson_interval
from core.store import Store
from core.survival import (
    _MICROSECONDS_PER_DAY,
    DEFAULT_HORIZON_DAYS,
    DEFAULT_INACTIVITY_DAYS,
    SurvivalSpec,
    kaplan_meier,
    log_rank,
    rmst_difference,
)

DEFAULT_MAX_DAY = 60
CONFIDENCE = 0.95

DURATION_COLUMNS = ("user_id", "variant", "assigned_time", "duration_days", "churned")
CURVE_COLUMNS = ("variant", "day", "at_risk", "churned", "censored", "survival", "lower", "upper")
AT_RISK_COLUMNS = ("variant", "day", "at_risk")
RMST_COLUMNS = ("variant", "rmst", "rmst_control", "diff", "se", "ci_low", "ci_high", "p_value", "tau_days")
RETENTION_COLUMNS = ("variant", "day", "eligible", "retained", "rate", "lower", "upper")


@dataclass(frozen=True)
class VariantSurvival:
    """Time to churn per variant of one experiment.

    Attributes:
        experiment: its name; control: the variant the others are compared with.
        curves: ``variant, day, at_risk, churned, censored, survival, lower, upper``: the
            Kaplan-Meier table per variant, one row per distinct duration (day since assignment)
            with users at risk just before it, churns and censorings at it, S(day) and its
            pointwise 95% band. Every curve starts at S(0) = 1 (not a row).
        at_risk: ``variant, day, at_risk``: users with duration >= day at round tick days.
        logrank_p: the log-rank p-value of equal survival across all variants (NaN with one).
        logrank_statistic: its chi-squared statistic, with ``variants - 1`` degrees of freedom.
        rmst: ``variant, rmst, rmst_control, diff, se, ci_low, ci_high, p_value, tau_days``: one
            row per variant other than the control: the restricted mean survival time up to
            ``tau_days`` of the variant and of the control, their difference with its standard
            error, 95% interval and two-sided p-value.
        tau_days: the horizon used: the one asked for, lowered to the shortest of the variants'
            longest durations when needed (the curves are not estimated beyond them).
        inactivity_days: W, the churn window.
        users: users per variant; churned: churns per variant.
    """

    experiment: str
    control: str
    curves: pd.DataFrame
    at_risk: pd.DataFrame
    logrank_p: float
    logrank_statistic: float
    rmst: pd.DataFrame
    tau_days: float
    inactivity_days: float
    users: dict[str, int]
    churned: dict[str, int]


def durations_sql(store: Store, inactivity_days: float = DEFAULT_INACTIVITY_DAYS) -> tuple[str, list[Any]]:
    """The durations query and its parameters: binds the experiment first (see ``durations``)."""
    window = round(_positive(inactivity_days, "inactivity") * _MICROSECONDS_PER_DAY)
    events = keyed_events_sql(store)
    churned = "(epoch_us(l.last_time) <= epoch_us(b.data_end) - ?)"
    sql = f"""
WITH assigned AS MATERIALIZED ({clean_assignments_sql()}),
bounds AS (SELECT max(event_time) AS data_end FROM events),
latest AS (
    SELECT a.user_key, max(e.event_time) AS last_time
    FROM assigned a JOIN {events} e ON e.user_key = a.user_key AND e.event_time >= a.assigned_time
    GROUP BY a.user_key
),
spans AS (
    SELECT a.user_id, a.variant, a.assigned_time, coalesce(t.last_time, a.assigned_time) AS last_time
    FROM assigned a LEFT JOIN latest t ON t.user_key = a.user_key
)
SELECT l.user_id, l.variant, l.assigned_time,
    (epoch_us(CASE WHEN {churned} THEN l.last_time ELSE b.data_end END) - epoch_us(l.assigned_time))
        / {_MICROSECONDS_PER_DAY}.0 AS duration_days,
    {churned} AS churned
FROM spans l CROSS JOIN bounds b
WHERE l.assigned_time <= b.data_end
ORDER BY l.variant, l.user_id"""
    return sql, [window, window]


def durations(
    store: Store, experiment: str, inactivity_days: float = DEFAULT_INACTIVITY_DAYS
) -> pd.DataFrame:
    """Each clean assigned user's time from assignment to churn or censoring (module docstring).

    Returns:
        ``user_id, variant, assigned_time, duration_days, churned``, sorted by variant then user;
        ``duration_days`` is fractional (>= 0), ``churned`` False = censored at the data's end.

    Raises:
        TenureError: the experiment has no assigned user on or before the data's end.
    """
    sql, params = durations_sql(store, inactivity_days)
    frame = store.query_df(sql, [experiment, *params])
    if frame.empty:
        known = experiment_names(store)
        raise TenureError(
            f"experiment '{experiment}' has no assigned users on or before the data's end",
            f"choose one of: {', '.join(known)}" if known else "load an assignments file first",
        )
    frame["variant"] = frame["variant"].astype(str)
    frame["churned"] = frame["churned"].astype(bool)
    return frame[list(DURATION_COLUMNS)]


def variant_survival(
    store: Store,
    experiment: str,
    control: str,
    inactivity_days: float = DEFAULT_INACTIVITY_DAYS,
    tau_days: float = DEFAULT_HORIZON_DAYS,
) -> VariantSurvival:
    """Kaplan-Meier curves per variant, the log-rank test and each variant's RMST vs the control.

    The curves and bands are lifelines' ``KaplanMeierFitter`` (Greenwood variance, log(-log)
    band), the test lifelines' ``multivariate_logrank_test``, the RMST the exact area under the
    step curve with the Greenwood-type variance of the estimate (core/survival.py
    ``restricted_mean``), and the difference's standard error sqrt(se_c^2 + se_v^2) (independent
    arms).

    Args:
        control: the variant the others are compared with.
        inactivity_days: W, the churn window.
        tau_days: the RMST horizon; lowered to the shortest of the variants' longest durations.

    Raises:
        TenureError: unknown experiment or control, a bad window or horizon.

    References:
        Kaplan & Meier (1958), JASA 53(282); Mantel (1966), Cancer Chemotherapy Reports 50(3);
        Royston & Parmar (2013), BMC Medical Research Methodology 13, 152.
    """
    tau = _positive(tau_days, "tau")
    frame = durations(store, experiment, inactivity_days)
    variants = sorted(frame["variant"].unique())
    if control not in variants:
        raise TenureError(
            f"control '{control}' is not a variant of experiment '{experiment}'",
            f"choose one of: {', '.join(variants)}",
        )
    groups = frame.rename(columns={"variant": "group"})
    # A zero longest duration (every user churned at once) leaves no horizon to integrate over.
    longest = groups.groupby("group")["duration_days"].max().min()
    tau = min(tau, float(longest)) if longest > 0 else tau
    spec = SurvivalSpec(inactivity_days=inactivity_days, horizon_days=tau, survival_days=(tau,))
    estimates = kaplan_meier(groups, spec, confidence=CONFIDENCE)
    test = log_rank(groups)
    rows = []
    for variant in variants:
        if variant == control:
            continue
        difference = rmst_difference(estimates.rmst, variant, control, CONFIDENCE)
        rows.append(
            {
                "variant": variant,
                "rmst": _rmst_of(estimates.rmst, variant),
                "rmst_control": _rmst_of(estimates.rmst, control),
                "diff": difference.difference,
                "se": difference.se,
                "ci_low": difference.lower,
                "ci_high": difference.upper,
                "p_value": difference.p_value,
                "tau_days": tau,
            }
        )
    counts = frame.groupby("variant")["churned"].agg(["size", "sum"])
    return VariantSurvival(
        experiment=experiment,
        control=control,
        curves=estimates.curve.rename(columns={"group": "variant"})[list(CURVE_COLUMNS)],
        at_risk=estimates.at_risk.rename(columns={"group": "variant"})[list(AT_RISK_COLUMNS)],
        logrank_p=test.p_value,
        logrank_statistic=test.statistic,
        rmst=pd.DataFrame(rows, columns=list(RMST_COLUMNS)),
        tau_days=tau,
        inactivity_days=spec.inactivity_days,
        users={str(v): int(n) for v, n in counts["size"].items()},
        churned={str(v): int(n) for v, n in counts["sum"].items()},
    )


def _rmst_of(rmst: pd.DataFrame, variant: str) -> float:
    return float(rmst.loc[rmst["group"] == variant, "rmst"].iloc[0])


def retention_sql(store: Store, max_day: int = DEFAULT_MAX_DAY) -> tuple[str, list[Any]]:
    """The retention-by-day query and its parameters: binds the experiment first.

    ``complete_days`` = the number of whole days between the assignment and the data's end, so
    day k is complete exactly when k < complete_days; ``eligible`` per day is a reverse running
    count of users by ``complete_days``, ``retained`` counts users with an event on a complete
    day k. Only days 0..max_day are read.
    """
    max_day = _max_day(max_day)
    events = keyed_events_sql(store)
    day = _MICROSECONDS_PER_DAY
    sql = f"""
WITH assigned AS MATERIALIZED ({clean_assignments_sql()}),
bounds AS (SELECT max(event_time) AS data_end FROM events),
users AS MATERIALIZED (
    SELECT a.user_key, a.variant, a.assigned_time,
        least((epoch_us(b.data_end) - epoch_us(a.assigned_time)) // {day}, ? + 1) AS complete_days
    FROM assigned a CROSS JOIN bounds b
    WHERE a.assigned_time <= b.data_end
),
active AS (
    SELECT DISTINCT u.user_key, u.variant,
        (epoch_us(e.event_time) - epoch_us(u.assigned_time)) // {day} AS day
    FROM users u JOIN {events} e ON e.user_key = u.user_key
    WHERE e.event_time >= u.assigned_time
        AND epoch_us(e.event_time) < epoch_us(u.assigned_time) + u.complete_days * {day}
),
retained AS (SELECT variant, day, count(*) AS retained FROM active GROUP BY variant, day),
by_length AS (
    SELECT variant, complete_days, count(*) AS users FROM users WHERE complete_days > 0
    GROUP BY variant, complete_days
),
grid AS (
    SELECT v.variant, d.range AS day
    FROM (SELECT DISTINCT variant FROM users) v CROSS JOIN range(0, ? + 1) d
),
eligible AS (
    SELECT g.variant, g.day, coalesce(sum(l.users), 0) AS eligible
    FROM grid g LEFT JOIN by_length l ON l.variant = g.variant AND l.complete_days > g.day
    GROUP BY g.variant, g.day
)
SELECT e.variant, e.day, e.eligible, coalesce(r.retained, 0) AS retained
FROM eligible e LEFT JOIN retained r ON r.variant = e.variant AND r.day = e.day
ORDER BY e.variant, e.day"""
    return sql, [max_day, max_day]


def variant_retention(store: Store, experiment: str, max_day: int = DEFAULT_MAX_DAY) -> pd.DataFrame:
    """Classic retention by day since assignment per variant, with 95% Wilson intervals.

    Days after the last one complete for at least one user are left out (like the cohort
    retention view), so the table ends where the data does.

    Returns:
        ``variant, day, eligible, retained, rate, lower, upper``, sorted by variant then day;
        ``rate`` = retained / eligible, NaN (and NaN bounds) when no user of the variant is
        eligible.

    Raises:
        TenureError: the experiment has no assigned user on or before the data's end; a bad
            ``max_day``.

    References:
        Wilson (1927), JASA 22(158), 209-212 (core/stats.py ``wilson_interval``).
    """
    sql, params = retention_sql(store, max_day)
    frame = store.query_df(sql, [experiment, *params])
    if frame.empty:
        known = experiment_names(store)
        raise TenureError(
            f"experiment '{experiment}' has no assigned users on or before the data's end",
            f"choose one of: {', '.join(known)}" if known else "load an assignments file first",
        )
    frame["variant"] = frame["variant"].astype(str)
    for column in ("day", "eligible", "retained"):
        frame[column] = frame[column].astype("int64")
    reached = frame.loc[frame["eligible"] > 0, "day"]
    frame = frame[frame["day"] <= (reached.max() if len(reached) else 0)].reset_index(drop=True)
    eligible = frame["eligible"].to_numpy(dtype=float)
    retained = frame["retained"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        frame["rate"] = np.where(eligible > 0, retained / eligible, np.nan)
    lower, upper = wilson_interval(retained, eligible, CONFIDENCE)
    frame["lower"], frame["upper"] = lower, upper
    return frame[list(RETENTION_COLUMNS)]


def _positive(value: Any, name: str) -> float:
    try:
        days = float(value)
    except (TypeError, ValueError) as error:
        raise TenureError(f"{name} must be a number of days, not '{value}'", "use e.g. 30") from error
    if isinstance(value, bool) or not math.isfinite(days) or days <= 0:
        raise TenureError(f"{name} must be a positive number of days, not '{value}'", "use e.g. 30")
    return days


def _max_day(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise TenureError(f"max_day must be a whole number of days >= 0, not '{value}'", "use e.g. 60")
    return int(value)
