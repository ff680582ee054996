"""Survival: how long users stay before they churn, with Kaplan-Meier curves, log-rank tests,
restricted mean survival time and a Cox model. lifelines does the statistics, ``core.cox`` the
Cox model.

Definitions (docs/METRICS.md, "Survival"):

- **Start**: a user's start time, per ``StartSpec`` (core/population.py). Users without a start
  are not counted, nor are users whose start lies after the data's end.
- **Data's end** (``end``): the latest event time in the store, over all events.
- **Inactivity rule** (default, window ``W`` days): ``last`` = the user's latest event at or after
  the start (the start itself when there is none, which only a signup start can cause). If
  ``last <= end - W`` the user **churned** at ``last``: duration = ``last - start``. Else the user
  is **censored** at the data's end: duration = ``end - start``. The last activity is the churn
  time; a gap of ``W`` days or more followed by a return is not a churn.
- **Terminal event rule** (``terminal_event`` set): churned at the first event of that name at or
  after the start (duration = that time - start), else censored at the data's end.
- Durations are in fractional days (microseconds / 86 400 000 000). A duration of 0 (a user with
  one event who churned) is legitimate.
- **Group**: the user's breakdown group (core/breakdown.py) or ``all`` without a breakdown.

Durations come from one DuckDB query that groups events by the integer ``events.user_key``; user
ids are looked up only when asked. The statistics run on the duration arrays.

References:
    E. L. Kaplan, P. Meier (1958), "Nonparametric estimation from incomplete observations", JASA
    53(282), 457-481. M. Greenwood (1926), "The natural duration of cancer", Reports on Public
    Health and Medical Subjects 33. N. Mantel (1966), "Evaluation of survival data and two new
    rank order statistics arising in its consideration", Cancer Chemotherapy Reports 50(3),
    163-170. P. Royston, M. K. B. Parmar (2013), "Restricted mean survival time: an alternative to
    the hazard ratio for the design and analysis of randomized trials with a time-to-event
    outcome", BMC Medical Research Methodology 13, 152. D. R. Cox (1972), "Regression models and
    life-tables", JRSS B 34(2), 187-220. P. M. Grambsch, T. M. Therneau (1994), "Proportional
    hazards tests and diagnostics based on weighted residuals", Biometrika 81(3), 515-526.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy.special import ndtri
from scipy.stats import norm

from core.breakdown import MISSING_GROUP, group_sql, parse_breakdown
from core.cox import CoxConvergenceError, fit_cox
from core.errors import TenureError
from core.population import Filters, StartSpec, keyed_events_sql, population_sql, segment_attributes
from core.schema import user_key_sql
from core.store import Store, quote_identifier

ALL_GROUP = "all"
DEFAULT_INACTIVITY_DAYS = 30.0
DEFAULT_HORIZON_DAYS = 90.0
DEFAULT_SURVIVAL_DAYS: tuple[float, ...] = (7.0, 30.0, 90.0)
LANDMARK_DAYS = 7.0
COX_MAX_USERS = 200_000
PH_ALPHA = 0.05
FIRST_WEEK_COVARIATES = ("first_week_events", "first_week_active_days", "first_week_revenue")

_MICROSECONDS_PER_DAY = 86_400_000_000

DURATION_COLUMNS = ("user_id", "start_time", "duration_days", "churned", "group")
CURVE_COLUMNS = ("group", "day", "at_risk", "churned", "censored", "survival", "lower", "upper")
AT_RISK_COLUMNS = ("group", "day", "at_risk")
MEDIAN_COLUMNS = ("group", "users", "churned", "censored", "median", "lower", "upper")
SURVIVAL_AT_COLUMNS = ("group", "day", "survival", "lower", "upper")
RMST_COLUMNS = ("group", "horizon", "rmst", "se", "lower", "upper")
PAIRWISE_COLUMNS = ("group_a", "group_b", "statistic", "p_value")
HAZARD_COLUMNS = ("covariate", "hazard_ratio", "lower", "upper", "p_value", "ph_p_value", "ph_fails")


@dataclass(frozen=True)
class SurvivalSpec:
    """What a survival view asks for (definitions in the module docstring).

    Args:
        inactivity_days: W, the days without any event after which a user counts as churned.
        terminal_event: churn at the first event of this name instead of after inactivity.
        start: how each user's start is found.
        breakdown: the groups to compare: ``COLUMN``, ``cohort:PERIOD``, ``experiment:NAME``
            (core/breakdown.py); None = one group, ``all``.
        horizon_days: tau, the horizon of the restricted mean survival time.
        survival_days: the days of the survival-at-days table.
        cox_attributes: users attributes for the Cox model (one-hot, the most common value as
            reference).
        cox_first_week: add first-week behaviour to the Cox model (a landmark analysis at day 7).
    """

    inactivity_days: float = DEFAULT_INACTIVITY_DAYS
    terminal_event: str | None = None
    start: StartSpec = field(default_factory=StartSpec)
    breakdown: str | None = None
    horizon_days: float = DEFAULT_HORIZON_DAYS
    survival_days: tuple[float, ...] = DEFAULT_SURVIVAL_DAYS
    cox_attributes: tuple[str, ...] = ()
    cox_first_week: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "inactivity_days", _positive_days(self.inactivity_days, "inactivity"))
        object.__setattr__(self, "horizon_days", _positive_days(self.horizon_days, "horizon"))
        if isinstance(self.survival_days, str | int | float):
            raise TenureError(
                f"survival_days must be a tuple of days, not '{self.survival_days}'",
                "write survival_days=(7, 30, 90)",
            )
        days = tuple(sorted({_positive_days(day, "survival day") for day in self.survival_days}))
        object.__setattr__(self, "survival_days", days)
        if self.terminal_event is not None and not str(self.terminal_event).strip():
            object.__setattr__(self, "terminal_event", None)
        if not isinstance(self.start, StartSpec):
            raise TenureError("start must be a StartSpec", "build it with StartSpec(kind, event_name)")
        breakdown = parse_breakdown(self.breakdown)
        object.__setattr__(self, "breakdown", None if breakdown is None else breakdown.to_text())
        if isinstance(self.cox_attributes, str):
            raise TenureError(
                f"cox_attributes must be a tuple of names, not the string '{self.cox_attributes}'",
                "write cox_attributes=('country',)",
            )
        object.__setattr__(self, "cox_attributes", tuple(dict.fromkeys(str(a) for a in self.cox_attributes)))
        object.__setattr__(self, "cox_first_week", bool(self.cox_first_week))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data; ``start`` is written like the CLI flag (``event:NAME``)."""
        return {
            "inactivity_days": self.inactivity_days,
            "terminal_event": self.terminal_event,
            "start": self.start.to_text(),
            "breakdown": self.breakdown,
            "horizon_days": self.horizon_days,
            "survival_days": list(self.survival_days),
            "cox_attributes": list(self.cox_attributes),
            "cox_first_week": self.cox_first_week,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SurvivalSpec:
        """Inverse of ``to_dict``; missing keys take their defaults, unknown keys are ignored."""
        return cls(
            inactivity_days=data.get("inactivity_days", DEFAULT_INACTIVITY_DAYS),
            terminal_event=data.get("terminal_event"),
            start=StartSpec.from_text(str(data.get("start", "first_event"))),
            breakdown=data.get("breakdown"),
            horizon_days=data.get("horizon_days", DEFAULT_HORIZON_DAYS),
            survival_days=tuple(data.get("survival_days", DEFAULT_SURVIVAL_DAYS)),
            cox_attributes=tuple(data.get("cox_attributes", ())),
            cox_first_week=bool(data.get("cox_first_week", False)),
        )

    def to_query_params(self) -> dict[str, str]:
        """Flat string parameters for a shareable URL (see ``from_query_params``).

        Lists are joined with commas, so attribute names containing commas do not round-trip.
        """
        params = {
            "inactivity": _days_text(self.inactivity_days),
            "start": self.start.to_text(),
            "horizon": _days_text(self.horizon_days),
            "days": ",".join(_days_text(day) for day in self.survival_days),
        }
        if self.terminal_event:
            params["terminal"] = self.terminal_event
        if self.breakdown:
            params["by"] = self.breakdown
        if self.cox_attributes:
            params["cox"] = ",".join(self.cox_attributes)
        if self.cox_first_week:
            params["first_week"] = "1"
        return params

    @classmethod
    def from_query_params(cls, params: dict[str, str]) -> SurvivalSpec:
        """Inverse of ``to_query_params``; unknown keys are ignored, bad values raise."""
        days = params.get("days")
        return cls(
            inactivity_days=_parse_days(params.get("inactivity", DEFAULT_INACTIVITY_DAYS), "inactivity"),
            terminal_event=params.get("terminal") or None,
            start=StartSpec.from_text(params.get("start", "first_event")),
            breakdown=params.get("by") or None,
            horizon_days=_parse_days(params.get("horizon", DEFAULT_HORIZON_DAYS), "horizon"),
            survival_days=(
                tuple(_parse_days(day, "survival day") for day in days.split(",") if day.strip())
                if days
                else DEFAULT_SURVIVAL_DAYS
            ),
            cox_attributes=tuple(name for name in params.get("cox", "").split(",") if name),
            cox_first_week=params.get("first_week", "0").lower() in ("1", "true", "yes"),
        )


def _positive_days(value: Any, name: str) -> float:
    days = _parse_days(value, name)
    if not math.isfinite(days) or days <= 0:
        raise TenureError(f"{name} must be a positive number of days, not '{value}'", "use e.g. 30")
    return days


def _parse_days(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise TenureError(f"{name} must be a number of days, not '{value}'", "use e.g. 30")
    try:
        return float(value)
    except (TypeError, ValueError) as error:
        raise TenureError(f"{name} must be a number of days, not '{value}'", "use e.g. 30") from error


def _days_text(days: float) -> str:
    return f"{days:g}"


# --- Durations -------------------------------------------------------------------------------------


def _survival_users_sql(
    store: Store, spec: SurvivalSpec, filters: Filters, user_ids: bool = False
) -> tuple[str, list[Any]]:
    """The CTEs shared by ``durations`` and the Cox data (a ``WITH`` clause's body).

    Defines ``spans(user_key, first_time, last_time[, user_id])`` (each user's first and last
    event), ``population(user_key, start_time)`` and ``survival_users(user_key, [user_id,]
    start_time, duration_days, churned, "group")``: one row per user of the population whose
    start is on or before the data's end. ``user_ids`` adds the text id, taken in the same pass.
    """
    events = keyed_events_sql(store)
    # One pass over the events gives each user's first and last event time. A first-event or
    # signup start needs only the first (the minimum of per-user minima is the same minimum), so
    # the population reads these spans instead of scanning the events a second time.
    user_id = ", any_value(user_id) AS user_id" if user_ids else ""
    spans = (
        f"SELECT user_key, min(event_time) AS first_time, max(event_time) AS last_time{user_id} "
        f"FROM {events} GROUP BY user_key"
    )
    population_events = (
        events if spec.start.kind == "event" else "(SELECT user_key, first_time AS event_time FROM spans)"
    )
    population, params = population_sql(store, spec.start, filters, by_key=True, events=population_events)
    if spec.terminal_event is not None:
        known = store.query_one("SELECT count(*) FROM events WHERE event_name = ?", [spec.terminal_event])[0]
        if not known:
            raise TenureError(
                f"no event named '{spec.terminal_event}' in the store (terminal event)",
                "choose an event name that occurs, or use the inactivity rule",
            )
        churn = f"""
churn_times AS (
    SELECT e.user_key, min(e.event_time) AS churn_time
    FROM {events} e JOIN population p ON p.user_key = e.user_key
    WHERE e.event_name = ? AND e.event_time >= p.start_time
    GROUP BY e.user_key
),"""
        churn_params: list[Any] = [spec.terminal_event]
        churn_join = "LEFT JOIN churn_times c ON c.user_key = p.user_key"
        churned = "(c.churn_time IS NOT NULL)"
        end_time = "coalesce(c.churn_time, b.data_end)"
        select_params: list[Any] = []
    else:
        # The latest event overall is the latest at or after the start unless every event is
        # before it (a signup start): then the start itself.
        churn = ""
        churn_params = []
        churn_join = ""
        last = "greatest(coalesce(a.last_time, p.start_time), p.start_time)"
        churned = f"(epoch_us({last}) <= epoch_us(b.data_end) - ?)"
        end_time = f"CASE WHEN {churned} THEN {last} ELSE b.data_end END"
        # `churned` appears twice in the select (in the duration and as a column).
        select_params = [round(spec.inactivity_days * _MICROSECONDS_PER_DAY)] * 2

    breakdown = parse_breakdown(spec.breakdown)
    if breakdown is None:
        groups_cte, group_params = "", []
        group_select, group_join = f"'{ALL_GROUP}' AS \"group\"", ""
    else:
        groups, group_params = group_sql(
            store, breakdown, "SELECT user_key, start_time FROM population", by_key=True
        )
        groups_cte = f"\ngroups AS ({groups}),"
        group_select = 'g."group"'
        group_join = "LEFT JOIN groups g ON g.user_key = p.user_key"
    sql = f"""
spans AS MATERIALIZED ({spans}),
population AS MATERIALIZED ({population}),
bounds AS (SELECT max(event_time) AS data_end FROM events),{churn}{groups_cte}
survival_users AS (
    SELECT p.user_key,{" a.user_id," if user_ids else ""} p.start_time,
        (epoch_us({end_time}) - epoch_us(p.start_time)) / {_MICROSECONDS_PER_DAY}.0 AS duration_days,
        {churned} AS churned,
        {group_select}
    FROM population p CROSS JOIN bounds b JOIN spans a ON a.user_key = p.user_key {churn_join} {group_join}
    WHERE p.start_time <= b.data_end
)"""
    return sql, [*params, *churn_params, *group_params, *select_params]


def durations_sql(
    store: Store, spec: SurvivalSpec, filters: Filters, user_ids: bool = True
) -> tuple[str, list[Any]]:
    """The durations query and its bound parameters (columns of ``durations``).

    Args:
        user_ids: name users by ``user_id`` (looked up once per user); False = by the integer
            ``user_key`` (faster when only the durations are needed).
    """
    pieces, params = _survival_users_sql(store, spec, filters, user_ids)
    user = "user_id" if user_ids else "user_key"
    return (
        f'WITH {pieces}\nSELECT {user}, start_time, duration_days, churned, "group" FROM survival_users ORDER BY {user}',
        params,
    )


def durations(store: Store, spec: SurvivalSpec, filters: Filters, user_ids: bool = True) -> pd.DataFrame:
    """Each user's time from start to churn or censoring (definitions in the module docstring).

    Args:
        user_ids: True = a ``user_id`` column; False = ``user_key`` (the integer key) instead.

    Returns:
        One row per user of the population, sorted by user, with columns ``user_id`` (or
        ``user_key``), ``start_time`` (naive UTC), ``duration_days`` (float, >= 0), ``churned``
        (bool: False = censored at the data's end) and ``group`` (text).
    """
    sql, params = durations_sql(store, spec, filters, user_ids)
    frame = store.query_df(sql, params)
    columns = list(DURATION_COLUMNS) if user_ids else ["user_key", *DURATION_COLUMNS[1:]]
    if frame.empty:
        dtypes = {"start_time": "datetime64[us]", "duration_days": float, "churned": bool}
        return pd.DataFrame({column: pd.Series(dtype=dtypes.get(column, object)) for column in columns})
    frame["churned"] = frame["churned"].astype(bool)
    frame["group"] = frame["group"].astype(str)
    return frame[columns]


# --- Kaplan-Meier ----------------------------------------------------------------------------------


class KaplanMeierResult(NamedTuple):
    """Kaplan-Meier estimates per group; every frame is sorted by group (then day).

    Attributes:
        curve: ``group, day, at_risk, churned, censored, survival, lower, upper``: one row per
            group and distinct duration (event or censoring time): users at risk just before
            ``day``, churned and censored at ``day``, S(day) and its pointwise band.
        at_risk: ``group, day, at_risk``: users with duration >= day, at the chosen ticks.
        medians: ``group, users, churned, censored, median, lower, upper``: the median survival
            time (first day with S <= 0.5) and its interval; NaN = not reached.
        survival_at: ``group, day, survival, lower, upper`` at the chosen days; NaN beyond the
            group's longest duration unless S reached 0 there.
        rmst: ``group, horizon, rmst, se, lower, upper``: restricted mean survival time up to the
            horizon, its standard error and normal interval; NaN when the horizon is beyond the
            group's longest duration, unless S reached 0 there.
    """

    curve: pd.DataFrame
    at_risk: pd.DataFrame
    medians: pd.DataFrame
    survival_at: pd.DataFrame
    rmst: pd.DataFrame


def at_risk_ticks(longest_day: float, count: int = 8) -> list[float]:
    """Round tick days from 0 to ``longest_day`` (about ``count`` of them) for the at-risk table.

    Example:
        >>> at_risk_ticks(200)
        [0.0, 30.0, 60.0, 90.0, 120.0, 150.0, 180.0]
    """
    if not math.isfinite(longest_day) or longest_day <= 0:
        return [0.0]
    step = next((s for s in (1, 2, 7, 14, 30, 60, 90, 180, 365, 730) if longest_day / s <= count - 1), 1460)
    return [float(day) for day in np.arange(0, longest_day + 1e-9, step)]


def _step_values(times: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The right-continuous step function through ``(times, values)`` evaluated at ``at``."""
    index = np.searchsorted(times, at, side="right") - 1
    return np.where(index >= 0, values[np.clip(index, 0, None)], 1.0)


# Under the terminal-event rule, this share of users churning at duration 0 or more means the
# terminal event is often the start event itself, which measures nothing for those users.
TERMINAL_AT_START_SHARE = 0.25


def churned_at_start(frame: pd.DataFrame) -> int:
    """Users of a ``durations`` frame who churned at duration 0."""
    return int((frame["churned"] & (frame["duration_days"] == 0)).sum())


def terminal_event_starts_users(frame: pd.DataFrame, spec: SurvivalSpec) -> bool:
    """Whether at least ``TERMINAL_AT_START_SHARE`` of the users churn at their start under
    ``spec``'s terminal event (the page warns); never under the inactivity rule."""
    if not spec.terminal_event or frame.empty:
        return False
    return churned_at_start(frame) >= TERMINAL_AT_START_SHARE * len(frame)


def restricted_mean(
    times: np.ndarray, survival: np.ndarray, at_risk: np.ndarray, churned: np.ndarray, horizon: float
) -> tuple[float, float]:
    """RMST up to ``horizon`` from a Kaplan-Meier table, and its Greenwood-type variance.

    The RMST is the exact area under the step function S on [0, horizon]. Its variance is
    sum over churn times t_j <= horizon of A_j^2 d_j / (n_j (n_j - d_j)), with A_j the area under
    S from t_j to the horizon, d_j the churns and n_j the users at risk at t_j (terms with
    n_j = d_j have A_j = 0 and are left out).

    Args:
        times: the table's distinct durations, increasing; survival: S at each (after its churns);
        at_risk, churned: n_j and d_j at each.

    References:
        Klein & Moeschberger (2003), Survival Analysis, 2nd ed., section 4.5 (eq. 4.5.2);
        Royston & Parmar (2013), BMC Medical Research Methodology 13, 152.

    Example:
        >>> times = np.array([1.0, 2.0]); s = np.array([0.5, 0.0])
        >>> restricted_mean(times, s, np.array([2, 1]), np.array([1, 1]), 3.0)
        (1.5, 0.125)
    """
    knots = np.concatenate([[0.0], times[times < horizon], [horizon]])
    levels = np.concatenate([[1.0], survival[times < horizon]])
    pieces = levels * np.diff(knots)
    total = float(pieces.sum())
    # Area from each knot to the horizon: a reversed running sum.
    tail = np.cumsum(pieces[::-1])[::-1]
    inside = times <= horizon
    index = np.searchsorted(knots[1:], times[inside], side="right")
    area_after = np.where(index < len(tail), tail[np.clip(index, 0, len(tail) - 1)], 0.0)
    n, d = at_risk[inside].astype(float), churned[inside].astype(float)
    usable = (d > 0) & (n > d)
    variance = float(np.sum(area_after[usable] ** 2 * d[usable] / (n[usable] * (n[usable] - d[usable]))))
    return total, variance


def kaplan_meier(
    frame: pd.DataFrame,
    spec: SurvivalSpec,
    ticks: list[float] | None = None,
    confidence: float = 0.95,
) -> KaplanMeierResult:
    """Kaplan-Meier curves with pointwise bands, at-risk counts, medians, survival at days, RMST.

    Args:
        frame: ``durations``' frame (``duration_days``, ``churned``, ``group``).
        ticks: days of the at-risk table; None = ``at_risk_ticks`` of the longest duration.
        confidence: level of every interval.

    The curve and its bands are lifelines' ``KaplanMeierFitter`` (Greenwood variance, log(-log)
    transformed band); the median interval is the median of the band's two curves (lifelines'
    ``median_survival_times``); RMST is ``restricted_mean``, with a normal interval.
    """
    from lifelines import KaplanMeierFitter
    from lifelines.utils import median_survival_times

    _check_confidence(confidence)
    z = float(ndtri(0.5 + confidence / 2))
    if ticks is None:
        ticks = at_risk_ticks(float(frame["duration_days"].max()) if len(frame) else 0.0)
    days = np.asarray(spec.survival_days, dtype=float)
    curves, at_risk_rows, medians, survival_rows, rmst_rows = [], [], [], [], []
    for group, members in frame.groupby("group", sort=True):
        duration = members["duration_days"].to_numpy(dtype=float)
        churned = members["churned"].to_numpy(dtype=bool)
        fitter = KaplanMeierFitter(alpha=1 - confidence).fit(duration, churned, label="survival")
        table = fitter.event_table
        observed = table[table["removed"] > 0]
        times = observed.index.to_numpy(dtype=float)
        survival = fitter.survival_function_["survival"].reindex(observed.index).to_numpy()
        band = fitter.confidence_interval_.reindex(observed.index).to_numpy()
        curves.append(
            pd.DataFrame(
                {
                    "group": group,
                    "day": times,
                    "at_risk": observed["at_risk"].to_numpy(dtype="int64"),
                    "churned": observed["observed"].to_numpy(dtype="int64"),
                    "censored": observed["censored"].to_numpy(dtype="int64"),
                    "survival": survival,
                    "lower": band[:, 0],
                    "upper": band[:, 1],
                }
            )
        )
        sorted_duration = np.sort(duration)
        tick_array = np.asarray(ticks, dtype=float)
        at_risk_rows.append(
            pd.DataFrame(
                {
                    "group": group,
                    "day": tick_array,
                    "at_risk": len(duration) - np.searchsorted(sorted_duration, tick_array, side="left"),
                }
            )
        )
        bounds = median_survival_times(fitter.confidence_interval_).to_numpy()[0]
        medians.append(
            {
                "group": group,
                "users": len(duration),
                "churned": int(churned.sum()),
                "censored": int((~churned).sum()),
                "median": _finite(fitter.median_survival_time_),
                "lower": _finite(bounds[0]),
                "upper": _finite(bounds[1]),
            }
        )
        # Past the longest duration S is known only when the curve reached 0 (everyone churned).
        longest = float(duration.max()) if survival[-1] > 0 else math.inf
        beyond = days > longest
        survival_rows.append(
            pd.DataFrame(
                {
                    "group": group,
                    "day": days,
                    "survival": np.where(beyond, np.nan, _step_values(times, survival, days)),
                    "lower": np.where(beyond, np.nan, _step_values(times, band[:, 0], days)),
                    "upper": np.where(beyond, np.nan, _step_values(times, band[:, 1], days)),
                }
            )
        )
        horizon = spec.horizon_days
        if horizon > longest:
            mean = se = math.nan
        else:
            mean, variance = restricted_mean(
                times, survival, observed["at_risk"].to_numpy(), observed["observed"].to_numpy(), horizon
            )
            se = math.sqrt(variance)
        rmst_rows.append(
            {
                "group": group,
                "horizon": horizon,
                "rmst": mean,
                "se": se,
                "lower": mean - z * se,
                "upper": mean + z * se,
            }
        )
    return KaplanMeierResult(
        curve=_frame(curves, CURVE_COLUMNS),
        at_risk=_frame(at_risk_rows, AT_RISK_COLUMNS),
        medians=pd.DataFrame(medians, columns=list(MEDIAN_COLUMNS)),
        survival_at=_frame(survival_rows, SURVIVAL_AT_COLUMNS),
        rmst=pd.DataFrame(rmst_rows, columns=list(RMST_COLUMNS)),
    )


def _frame(parts: list[pd.DataFrame], columns: tuple[str, ...]) -> pd.DataFrame:
    if not parts:
        return pd.DataFrame(
            {column: pd.Series(dtype=object if column == "group" else float) for column in columns}
        )
    return pd.concat(parts, ignore_index=True)[list(columns)]


def _finite(value: float) -> float:
    value = float(value)
    return value if math.isfinite(value) else math.nan


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise TenureError(f"confidence {confidence} is not between 0 and 1", "use e.g. 0.95")


class RmstDifference(NamedTuple):
    """RMST(group_a) - RMST(group_b) up to ``horizon`` (days), with its normal interval.

    Attributes:
        se: sqrt(se_a^2 + se_b^2) (independent groups); p_value: two-sided, of difference = 0.
    """

    group_a: str
    group_b: str
    horizon: float
    difference: float
    se: float
    lower: float
    upper: float
    p_value: float


def rmst_difference(
    rmst: pd.DataFrame, group_a: str, group_b: str, confidence: float = 0.95
) -> RmstDifference:
    """The difference of two groups' RMST (rows of ``KaplanMeierResult.rmst``).

    References:
        Royston & Parmar (2013), BMC Medical Research Methodology 13, 152 (the difference in
        RMST between arms and its standard error).

    Example:
        >>> table = pd.DataFrame({"group": ["a", "b"], "horizon": [90.0, 90.0],
        ...                       "rmst": [50.0, 40.0], "se": [3.0, 4.0]})
        >>> result = rmst_difference(table, "a", "b")
        >>> result.difference, result.se, round(result.lower, 2)
        (10.0, 5.0, 0.2)
    """
    _check_confidence(confidence)
    rows = rmst.set_index("group")
    for group in (group_a, group_b):
        if group not in rows.index:
            raise TenureError(
                f"no group '{group}' to compare", f"use one of: {', '.join(map(str, rows.index))}"
            )
    a, b = rows.loc[group_a], rows.loc[group_b]
    difference = float(a["rmst"] - b["rmst"])
    se = float(math.hypot(a["se"], b["se"]))
    z = float(ndtri(0.5 + confidence / 2))
    p_value = float(2 * norm.sf(abs(difference) / se)) if se > 0 else math.nan
    return RmstDifference(
        str(group_a),
        str(group_b),
        float(a["horizon"]),
        difference,
        se,
        difference - z * se,
        difference + z * se,
        p_value,
    )


# --- Log-rank --------------------------------------------------------------------------------------


class LogRankResult(NamedTuple):
    """Log-rank tests of equal survival across groups.

    Attributes:
        statistic: the chi-squared statistic across all groups (NaN with fewer than 2 groups).
        degrees_of_freedom: groups - 1.
        p_value: its p-value.
        pairwise: ``group_a, group_b, statistic, p_value`` for every pair (unadjusted p-values).
    """

    statistic: float
    degrees_of_freedom: int
    p_value: float
    pairwise: pd.DataFrame


def log_rank(frame: pd.DataFrame) -> LogRankResult:
    """The multivariate log-rank test across all groups and the pairwise tests (lifelines).

    References:
        Mantel (1966), Cancer Chemotherapy Reports 50(3), 163-170.
    """
    from lifelines.statistics import multivariate_logrank_test, pairwise_logrank_test

    groups = sorted(frame["group"].unique())
    if len(groups) < 2:
        return LogRankResult(math.nan, 0, math.nan, pd.DataFrame(columns=list(PAIRWISE_COLUMNS)))
    duration = frame["duration_days"].to_numpy(dtype=float)
    churned = frame["churned"].to_numpy(dtype=bool)
    labels = frame["group"].to_numpy()
    overall = multivariate_logrank_test(duration, labels, churned)
    pairs = pairwise_logrank_test(duration, labels, churned).summary.reset_index()
    pairs.columns = ["group_a", "group_b", *pairs.columns[2:]]
    pairwise = pd.DataFrame(
        {
            "group_a": pairs["group_a"].astype(str),
            "group_b": pairs["group_b"].astype(str),
            "statistic": pairs["test_statistic"].astype(float),
            "p_value": pairs["p"].astype(float),
        }
    )
    return LogRankResult(
        float(overall.test_statistic), int(overall.degrees_of_freedom), float(overall.p_value), pairwise
    )


# --- Cox proportional hazards -----------------------------------------------------------------------


class CoxResult(NamedTuple):
    """A fitted Cox proportional hazards model.

    Attributes:
        hazard_ratios: ``covariate, hazard_ratio, lower, upper, p_value, ph_p_value, ph_fails``:
            exp(coefficient) with its interval and Wald p-value, the Grambsch-Therneau test's
            p-value (rank time transform) and whether it is below 0.05.
        concordance: Harrell's concordance index of the fitted model on its data.
        users: users in the fit; churned: churns among them.
        sampled_from: the population size when a seeded sample of ``COX_MAX_USERS`` was fitted,
            else None.
        landmark_days: 7 when first-week covariates are in the model (users observed past day 7,
            durations from day 7), else None.
        references: the reference value of each attribute (its most common value).
        warnings: sentences to show next to the model (PH failures, dropped covariates, sampling).
    """

    hazard_ratios: pd.DataFrame
    concordance: float
    users: int
    churned: int
    sampled_from: int | None
    landmark_days: float | None
    references: dict[str, str]
    warnings: tuple[str, ...]


def cox_data(store: Store, spec: SurvivalSpec, filters: Filters) -> pd.DataFrame:
    """Durations with the Cox covariates: one row per user, keyed by ``user_key``.

    Returns:
        Columns ``user_key, duration_days, churned``, one text column per ``spec.cox_attributes``
        (missing values as "(none)") and, when ``spec.cox_first_week``, ``first_week_events``
        (events in [start, start + 7 days)), ``first_week_active_days`` (distinct day offsets
        0..6 from the start with an event) and ``first_week_revenue`` (their revenue).
    """
    known = segment_attributes(store)
    unknown = [name for name in spec.cox_attributes if name not in known]
    if unknown:
        raise TenureError(
            f"Cox covariate(s) {', '.join(unknown)} are not columns of the users table",
            f"use some of: {', '.join(sorted(known)) or 'none (load a users table)'}",
        )
    pieces, params = _survival_users_sql(store, spec, filters)
    selects = ["s.user_key", "s.duration_days", "s.churned"]
    joins = []
    for index, name in enumerate(spec.cox_attributes):
        alias = f"attribute_{index}"
        selects.append(f"coalesce({alias}.value, '{MISSING_GROUP}') AS {quote_identifier(name)}")
        joins.append(
            f"LEFT JOIN (SELECT {user_key_sql()} AS user_key, min(CAST({quote_identifier(name)} AS VARCHAR)) "
            f"AS value FROM users GROUP BY user_id) {alias} ON {alias}.user_key = s.user_key"
        )
    extra = ""
    if spec.cox_first_week:
        window = round(LANDMARK_DAYS * _MICROSECONDS_PER_DAY)
        extra = f""",
first_week AS (
    SELECT p.user_key, count(*) AS events,
        count(DISTINCT (epoch_us(e.event_time) - epoch_us(p.start_time)) // {_MICROSECONDS_PER_DAY}) AS active_days,
        coalesce(sum(e.revenue), 0) AS revenue
    FROM population p JOIN {keyed_events_sql(store)} e ON e.user_key = p.user_key
    WHERE e.event_time >= p.start_time AND epoch_us(e.event_time) < epoch_us(p.start_time) + {window}
    GROUP BY p.user_key
)"""
        selects += [
            "coalesce(w.events, 0) AS first_week_events",
            "coalesce(w.active_days, 0) AS first_week_active_days",
            "coalesce(w.revenue, 0) AS first_week_revenue",
        ]
        joins.append("LEFT JOIN first_week w ON w.user_key = s.user_key")
    sql = f"WITH {pieces}{extra}\nSELECT {', '.join(selects)} FROM survival_users s {' '.join(joins)} ORDER BY s.user_key"
    frame = store.query_df(sql, params)
    frame["churned"] = frame["churned"].astype(bool)
    return frame


def cox_design(data: pd.DataFrame, spec: SurvivalSpec) -> tuple[pd.DataFrame, dict[str, str], list[str]]:
    """The model matrix: ``duration``, ``churned`` and one column per covariate.

    Attributes become indicator columns ``ATTRIBUTE=VALUE`` for every value but the most common
    (ties: the first in text order), the reference. With first-week covariates only users with
    ``duration_days > 7`` are kept and ``duration`` counts from day 7 (a landmark analysis);
    otherwise ``duration = duration_days``. Covariates constant over the kept users, or linear
    combinations of the covariates before them (e.g. first-week events equal to active days when
    users have one event a day), are left out with a note.

    Returns:
        The matrix, the reference of each attribute, and notes on dropped covariates.
    """
    notes: list[str] = []
    if spec.cox_first_week:
        data = data[data["duration_days"] > LANDMARK_DAYS]
        duration = data["duration_days"] - LANDMARK_DAYS
    else:
        duration = data["duration_days"]
    design = pd.DataFrame(
        {"duration": duration.to_numpy(dtype=float), "churned": data["churned"].to_numpy(dtype=bool)}
    )
    references: dict[str, str] = {}
    for name in spec.cox_attributes:
        values = data[name].astype(str)
        counts = values.value_counts()
        reference = str(sorted(counts[counts == counts.max()].index)[0]) if len(counts) else MISSING_GROUP
        references[name] = reference
        for value in sorted(counts.index):
            if value != reference:
                design[f"{name}={value}"] = (values == value).to_numpy(dtype=float)
    if spec.cox_first_week:
        for name in FIRST_WEEK_COVARIATES:
            design[name] = data[name].to_numpy(dtype=float)
    kept: list[str] = []
    for column in list(design.columns[2:]):
        if design[column].nunique() < 2:
            design = design.drop(columns=column)
            notes.append(f"{column} is the same for every user and was left out.")
            continue
        centred = design[[*kept, column]].to_numpy(dtype=float)
        centred = centred - centred.mean(axis=0)
        if np.linalg.matrix_rank(centred) <= len(kept):
            design = design.drop(columns=column)
            notes.append(f"{column} is a linear combination of the covariates before it and was left out.")
            continue
        kept.append(column)
    return design, references, notes


def cox_model(
    store: Store,
    spec: SurvivalSpec,
    filters: Filters,
    max_users: int = COX_MAX_USERS,
    seed: int = 0,
    confidence: float = 0.95,
) -> CoxResult:
    """Fit a Cox proportional hazards model of churn on ``spec``'s covariates (``core.cox``:
    Efron's ties, vectorised; lifelines gives the same estimates, 7x slower).

    More than ``max_users`` users: a seeded simple random sample of ``max_users`` is fitted (and
    the result says so). The proportional-hazards check is Grambsch and Therneau's test with the
    rank time transform (lifelines' ``proportional_hazard_test``); a covariate with p < 0.05 gets a
    warning.

    Raises:
        TenureError: no covariate chosen, no user left, no churn, or the fit does not converge.

    References:
        Cox (1972), JRSS B 34(2), 187-220; Harrell, Califf, Pryor, Lee, Rosati (1982), JAMA
        247(18), 2543-2546 (concordance); Grambsch & Therneau (1994), Biometrika 81(3), 515-526.
    """
    _check_confidence(confidence)
    if not spec.cox_attributes and not spec.cox_first_week:
        raise TenureError("the Cox model has no covariate", "choose users attributes or first-week behaviour")
    design, references, notes = cox_design(cox_data(store, spec, filters), spec)
    sampled_from = None
    if len(design) > max_users:
        sampled_from = len(design)
        design = design.sample(n=max_users, random_state=seed).reset_index(drop=True)
        notes.append(f"Fitted on a random sample of {max_users:,} of {sampled_from:,} users (seed {seed}).")
    if design.shape[1] <= 2:
        raise TenureError(
            "no covariate varies across these users", "choose other covariates or widen the filters"
        )
    if len(design) == 0 or not design["churned"].any():
        raise TenureError(
            "no churn among these users: the Cox model cannot be fitted", "lower the inactivity window"
        )
    try:
        fitted = fit_cox(design, "duration", "churned")
    except CoxConvergenceError as error:
        raise TenureError(
            f"the Cox model did not converge ({error}; a covariate may separate churners perfectly)",
            "remove a covariate with few users or no churn",
        ) from error
    hazard_ratios = fitted.summary(confidence)
    hazard_ratios["ph_fails"] = hazard_ratios["ph_p_value"] < PH_ALPHA
    for row in hazard_ratios[hazard_ratios["ph_fails"]].itertuples():
        notes.append(
            f"{row.covariate}: the proportional-hazards check fails (p = {row.ph_p_value:.3g}); its hazard "
            "ratio is an average over time."
        )
    return CoxResult(
        hazard_ratios=hazard_ratios,
        concordance=fitted.concordance,
        users=len(design),
        churned=int(design["churned"].sum()),
        sampled_from=sampled_from,
        landmark_days=LANDMARK_DAYS if spec.cox_first_week else None,
        references=references,
        warnings=tuple(notes),
    )
