"""Stickiness: how many days (or weeks) of a span users come back on, and DAU/WAU/MAU over time.

Definitions (docs/METRICS.md, "Stickiness"), all UTC:

- **Active day**: a UTC calendar day on which the user has at least one event of the chosen name
  (any event when none is chosen). The population is the filtered users (starts by first
  event, as on the Overview); the filters select users, never events.
- **Spans**: ``7d`` = the 7 days ending with the data end's day (the day of the latest event,
  which may be partial); ``4w`` = the 28 days ending with that day, as 4 blocks of 7 days
  (block j holds the days E-7j-6..E-7j); ``month`` = each calendar month of the data, the last
  one ``partial`` when it has not ended by the data's end.
- **Histogram**: for each span, the users active on k of its days (``7d``, ``month``) or in k
  of its weeks (``4w``), k >= 1; ``share`` = those users over all users active in the span.
- **DAU(d)**: users active on day d. **WAU(d)**: users active on at least one of the 7 days
  d-6..d. **MAU(d)**: users active on at least one of the 28 days d-27..d (28 rather than 30 or
  a calendar month so every window holds each weekday four times; the same 28 days as the
  Overview's daily-active mean). ``dau_mau`` = DAU / MAU (NaN when MAU = 0). Days run from the
  data's first day to the data end's day; ``full_window`` is False where the 28-day window
  starts before the data's first day (MAU and DAU/MAU are then understated/overstated).

WAU and MAU are counted without a users x days grid: a user's active day a, followed by their
next active day b, keeps them in the 7-day window of the days a..min(b, a + 7) - 1; +1/-1
changes at those bounds, summed in date order, give each day's count.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from core.errors import TenureError
from core.population import Filters, StartSpec, keyed_events_sql, population_sql
from core.store import Store

Span = Literal["7d", "4w", "month"]
SPANS: tuple[str, ...] = ("7d", "4w", "month")
SPAN_LABELS = {"7d": "Last 7 days", "4w": "Last 4 weeks", "month": "Each calendar month"}
WAU_DAYS = 7
MAU_DAYS = 28
HISTOGRAM_COLUMNS = ("span_start", "span_end", "active_units", "users", "share", "partial")
SERIES_COLUMNS = ("day", "dau", "wau", "mau", "dau_mau", "full_window")


@dataclass(frozen=True)
class StickinessSpec:
    """What the stickiness view asks for.

    Args:
        event: the event name that makes a day active; None = any event.
        span: ``7d``, ``4w`` or ``month`` (see the module docstring).
    """

    event: str | None = None
    span: Span = "7d"

    def __post_init__(self) -> None:
        if self.span not in SPANS:
            raise TenureError(f"unknown stickiness span '{self.span}'", f"use one of {', '.join(SPANS)}")
        object.__setattr__(self, "event", str(self.event) if self.event else None)

    @property
    def unit(self) -> str:
        """What the histogram counts: ``weeks`` for the 4-week span, else ``days``."""
        return "weeks" if self.span == "4w" else "days"

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.event, "span": self.span}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StickinessSpec:
        return cls(event=data.get("event"), span=data.get("span", "7d"))

    def to_query_params(self) -> dict[str, str]:
        params = {"span": self.span}
        if self.event:
            params["event"] = self.event
        return params

    @classmethod
    def from_query_params(cls, params: dict[str, str]) -> StickinessSpec:
        return cls(event=params.get("event") or None, span=params.get("span", "7d"))  # type: ignore[arg-type]


def _user_days_sql(
    store: Store, spec: StickinessSpec, filters: Filters, last_days: int | None = None
) -> tuple[str, list[Any]]:
    """CTEs ``population``, ``bounds(first_day, last_day, data_end)`` and ``user_days(user_key, day)``.

    Args:
        last_days: keep only the days of the last ``last_days`` days ending with the data end's.
    """
    events = keyed_events_sql(store)
    population, params = population_sql(store, StartSpec(), filters, by_key=True, events=events)
    event_filter = ""
    if spec.event:
        event_filter = " AND e.event_name = ?"
        params = [*params, spec.event]
    if last_days is not None:
        event_filter += f" AND e.event_time >= (SELECT last_day - {int(last_days) - 1} FROM bounds)"
    sql = f"""
population AS ({population}),
bounds AS (
    SELECT CAST(min(event_time) AS DATE) AS first_day, CAST(max(event_time) AS DATE) AS last_day,
        max(event_time) AS data_end
    FROM events
),
user_days AS (
    SELECT DISTINCT e.user_key, CAST(e.event_time AS DATE) AS day
    FROM {events} e
    WHERE e.user_key IN (SELECT user_key FROM population){event_filter}
)"""
    return sql, params


def stickiness_histogram(store: Store, spec: StickinessSpec, filters: Filters) -> pd.DataFrame:
    """Users by number of active days (or weeks) in each span (definitions in the module docstring).

    Returns:
        Columns ``span_start``, ``span_end`` (dates, inclusive), ``active_units`` (k = 1 to the
        span's days, or 1..4 weeks; zeros included), ``users``, ``share`` (of the span's active
        users; NaN when none) and ``partial`` (a month that has not ended by the data's end).
        Sorted by span then k; empty without events.
    """
    last_days = {"7d": 7, "4w": 28}.get(spec.span)
    pieces, params = _user_days_sql(store, spec, filters, last_days)
    if spec.span == "7d":
        unit = "day"
        where = "d.day BETWEEN b.last_day - 6 AND b.last_day"
        span_start, span_end = "b.last_day - 6", "b.last_day"
    elif spec.span == "4w":
        unit = "(b.last_day - d.day) // 7"
        where = "d.day BETWEEN b.last_day - 27 AND b.last_day"
        span_start, span_end = "b.last_day - 27", "b.last_day"
    else:
        unit = "day"
        where = "TRUE"
        span_start = "CAST(date_trunc('month', d.day) AS DATE)"
        span_end = "CAST(date_trunc('month', d.day) + INTERVAL 1 MONTH AS DATE) - 1"
    sql = f"""
WITH {pieces},
per_user AS (
    SELECT {span_start} AS span_start, {span_end} AS span_end, d.user_key,
        count(DISTINCT {unit}) AS active_units
    FROM user_days d CROSS JOIN bounds b
    WHERE {where}
    GROUP BY ALL
)
SELECT span_start, span_end, active_units, count(*) AS users
FROM per_user GROUP BY ALL ORDER BY span_start, active_units"""
    counts = store.query_df(sql, params)
    end = store.data_end()
    if end is None:
        return pd.DataFrame({column: pd.Series(dtype=object) for column in HISTOGRAM_COLUMNS})
    last_day = end.date()
    if spec.span == "month":
        first_day = pd.Timestamp(store.query_one("SELECT min(event_time) FROM events")[0]).date()
        months = pd.period_range(first_day, last_day, freq="M")
        spans = [(month.start_time.date(), month.end_time.date()) for month in months]
    else:
        days = 7 if spec.span == "7d" else 28
        spans = [(last_day - dt.timedelta(days=days - 1), last_day)]
    rows = []
    for start, stop in spans:
        units = 4 if spec.span == "4w" else (stop - start).days + 1
        rows += [(start, stop, k) for k in range(1, units + 1)]
    frame = pd.DataFrame(rows, columns=["span_start", "span_end", "active_units"])
    if not counts.empty:
        counts["span_start"] = pd.to_datetime(counts["span_start"]).dt.date
        counts["span_end"] = pd.to_datetime(counts["span_end"]).dt.date
        counts["active_units"] = counts["active_units"].astype("int64")
    merged = frame.merge(counts, on=["span_start", "span_end", "active_units"], how="left")
    merged["users"] = merged["users"].fillna(0).astype("int64")
    totals = merged.groupby("span_start")["users"].transform("sum")
    merged["share"] = np.where(totals > 0, merged["users"] / totals.where(totals > 0, 1), np.nan)
    end_instant = pd.Timestamp(end)
    merged["partial"] = [
        spec.span == "month" and pd.Timestamp(stop) + pd.Timedelta(days=1) > end_instant
        for stop in merged["span_end"]
    ]
    for column in ("span_start", "span_end"):
        merged[column] = merged[column].astype(object)
    return merged[list(HISTOGRAM_COLUMNS)]


def active_users_series(store: Store, spec: StickinessSpec, filters: Filters) -> pd.DataFrame:
    """DAU, WAU, MAU and DAU/MAU for every day from the data's first to the data end's day.

    Returns:
        Columns ``day`` (date), ``dau``, ``wau``, ``mau`` (integers), ``dau_mau`` (float, NaN
        when MAU = 0) and ``full_window`` (the 28-day window lies within the data).
    """
    pieces, params = _user_days_sql(store, spec, filters)
    sql = f"""
WITH {pieces},
sequenced AS (
    SELECT user_key, day, lead(day) OVER (PARTITION BY user_key ORDER BY day) AS next_day FROM user_days
),
changes AS (
    SELECT day, count(*) AS dau, count(*) AS wau_change, count(*) AS mau_change FROM sequenced GROUP BY day
    UNION ALL
    SELECT least(next_day, day + {WAU_DAYS}), 0, -count(*), 0 FROM sequenced GROUP BY ALL
    UNION ALL
    SELECT least(next_day, day + {MAU_DAYS}), 0, 0, -count(*) FROM sequenced GROUP BY ALL
),
per_day AS (
    SELECT day, sum(dau) AS dau, sum(wau_change) AS wau_change, sum(mau_change) AS mau_change
    FROM changes GROUP BY day
),
calendar AS (
    SELECT CAST(unnest(generate_series(first_day, last_day, INTERVAL 1 DAY)) AS DATE) AS day FROM bounds
)
SELECT c.day, coalesce(p.dau, 0) AS dau,
    sum(coalesce(p.wau_change, 0)) OVER (ORDER BY c.day) AS wau,
    sum(coalesce(p.mau_change, 0)) OVER (ORDER BY c.day) AS mau,
    c.day - {MAU_DAYS - 1} >= b.first_day AS full_window
FROM calendar c CROSS JOIN bounds b LEFT JOIN per_day p ON p.day = c.day
ORDER BY c.day"""
    frame = store.query_df(sql, params)
    if frame.empty:
        return pd.DataFrame({column: pd.Series(dtype=object) for column in SERIES_COLUMNS})
    frame["day"] = pd.to_datetime(frame["day"]).dt.date.astype(object)
    for column in ("dau", "wau", "mau"):
        frame[column] = frame[column].astype("int64")
    mau = frame["mau"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        frame["dau_mau"] = np.where(mau > 0, frame["dau"].to_numpy() / mau, np.nan)
    frame["full_window"] = frame["full_window"].astype(bool)
    return frame[list(SERIES_COLUMNS)]
