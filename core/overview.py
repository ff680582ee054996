"""What a store holds and the product's headline figures (the Overview page and `python -m core info`).

Definitions (docs/METRICS.md, "Overview"): all times are UTC; the data's start and end are the
earliest and latest event times in the store (all events, whatever the filters); the filters
select users (core/population.py) and every figure then counts all events of the selected users.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from core.errors import TenureError
from core.population import Filters, StartSpec, keyed_events_sql, population_sql
from core.schema import TIME_COLUMNS
from core.store import Store, quote_identifier
from core.user_index import USER_INDEX_TABLES

INTERNAL_TABLES = ("load_history", "store_meta", "model_registry", *USER_INDEX_TABLES)
TRUTH_SCHEMA = "truth"
ACTIVITY_PERIODS = ("day", "week", "month")
DAU_WINDOW_DAYS = 28
WAU_WINDOW_WEEKS = 12


@dataclass(frozen=True)
class TableInfo:
    """One table: its row count and the range of its time column (None when it has none)."""

    schema: str
    name: str
    rows: int
    time_column: str | None = None
    first: pd.Timestamp | None = None
    last: pd.Timestamp | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "name": self.name,
            "rows": self.rows,
            "time_column": self.time_column,
            "first": None if self.first is None else self.first.isoformat(),
            "last": None if self.last is None else self.last.isoformat(),
        }


@dataclass(frozen=True)
class StoreInfo:
    """What a store holds.

    Attributes:
        path: the store's file.
        tables: the main schema's tables, canonical ones first (internal bookkeeping tables
            ``load_history`` and ``store_meta`` are reported below instead).
        truth_tables: the simulator's ground truth (schema ``truth``), empty for real data.
        loads: the load history, oldest first, one dict per load.
        meta: the store's key-value facts (dataset, source, ...).
    """

    path: str
    tables: tuple[TableInfo, ...]
    truth_tables: tuple[TableInfo, ...] = ()
    loads: tuple[dict[str, Any], ...] = ()
    meta: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "meta": dict(self.meta),
            "tables": [table.to_dict() for table in self.tables],
            "truth_tables": [table.to_dict() for table in self.truth_tables],
            "loads": [{key: _plain(value) for key, value in load.items()} for load in self.loads],
        }

    def to_text(self) -> str:
        lines = [f"store: {self.path}"]
        lines += [f"{key}: {value}" for key, value in sorted(self.meta.items())]
        lines.append("")
        lines += _tables_text("tables", self.tables)
        if self.truth_tables:
            lines.append("")
            lines += _tables_text("ground truth (schema truth, not used by any analysis)", self.truth_tables)
        lines.append("")
        if self.loads:
            lines.append("load history:")
            for load in self.loads:
                lines.append(
                    f"  #{load['load_id']} {_plain(load['loaded_at'])} {load['table_name']} <- {load['source']}: "
                    f"{load['rows_accepted']:,} accepted, {load['rows_rejected']:,} rejected, "
                    f"{load['duplicates_dropped']:,} duplicates dropped"
                )
        else:
            lines.append("load history: none")
        return "\n".join(lines)


def _plain(value: Any) -> Any:
    if isinstance(value, pd.Timestamp | dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _tables_text(title: str, tables: tuple[TableInfo, ...]) -> list[str]:
    lines = [f"{title}:"]
    width = max((len(table.name) for table in tables), default=0)
    for table in tables:
        line = f"  {table.name:<{width}}  {table.rows:>12,} rows"
        if table.first is not None:
            line += f"  {table.time_column} {table.first:%Y-%m-%d %H:%M:%S} .. {table.last:%Y-%m-%d %H:%M:%S}"
        lines.append(line)
    return lines


def _table_info(store: Store, schema: str, name: str) -> TableInfo:
    columns = store.query_df(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
        [schema, name],
    )
    time_column = TIME_COLUMNS.get(name)
    if time_column not in set(columns["column_name"]):
        timestamps = columns[
            columns["data_type"].str.startswith("TIMESTAMP") | (columns["data_type"] == "DATE")
        ]
        time_column = str(timestamps["column_name"].iloc[0]) if len(timestamps) else None
    qualified = f"{quote_identifier(schema)}.{quote_identifier(name)}"
    if time_column is None:
        rows = store.query_one(f"SELECT count(*) FROM {qualified}")[0]
        return TableInfo(schema, name, int(rows))
    column = quote_identifier(time_column)
    rows, first, last = store.query_one(f"SELECT count(*), min({column}), max({column}) FROM {qualified}")
    return TableInfo(
        schema,
        name,
        int(rows),
        time_column,
        None if first is None else pd.Timestamp(first),
        None if last is None else pd.Timestamp(last),
    )


def store_info(store: Store) -> StoreInfo:
    """Tables with row counts and date ranges, the ground-truth tables, the load history, the meta."""
    tables = tuple(
        _table_info(store, "main", name) for name in store.table_names() if name not in INTERNAL_TABLES
    )
    truth_names = store.query_df(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = ? ORDER BY table_name",
        [TRUTH_SCHEMA],
    )["table_name"]
    truth_tables = tuple(_table_info(store, TRUTH_SCHEMA, str(name)) for name in truth_names)
    loads = store.query_df("SELECT * FROM load_history ORDER BY load_id")
    return StoreInfo(
        path=str(store.path),
        tables=tables,
        truth_tables=truth_tables,
        loads=tuple(loads.to_dict(orient="records")),
        meta=store.meta(),
    )


class Headline(NamedTuple):
    """The Overview page's headline figures for the filtered population.

    Attributes:
        users: users in the filtered population (users with a start, kept by the filters).
        events: events of those users, all names, over their whole history.
        first_event: the earliest of those events (None without events).
        last_event: the latest of those events (None without events).
        daily_active_users: mean over the last 28 UTC calendar days of data (the day holding the
            data end and the 27 before it, not counting days before the data's first day) of the
            number of population users with at least one event that day; days without any
            activity count as 0. The data end's own day may be partial.
        weekly_active_users: mean over the last 12 complete ISO weeks (Monday 00:00 to the next
            Monday 00:00, ending on or before the data end; not counting weeks before the week of
            the data's first event) of the number of population users with at least one event
            that week; NaN when no week is complete.
        revenue: the sum of ``revenue`` over the population's events (missing revenue counts 0).
        revenue_per_user: ``revenue / users`` (every user counts, paying or not; NaN without users).
        paying_share: the share of ``users`` with at least one event with ``revenue > 0``
            (NaN without users).
    """

    users: int
    events: int
    first_event: pd.Timestamp | None
    last_event: pd.Timestamp | None
    daily_active_users: float
    weekly_active_users: float
    revenue: float
    revenue_per_user: float
    paying_share: float


def headline(store: Store, filters: Filters, start: StartSpec | None = None) -> Headline:
    """The headline figures (definitions on ``Headline``) in one DuckDB query.

    Args:
        filters: the global filters (they select users by start date and segment).
        start: how a user's start is found for the date filter (default: first event).
    """
    events = keyed_events_sql(store)
    population, params = population_sql(store, start or StartSpec(), filters, by_key=True, events=events)
    sql = f"""
WITH population AS ({population}),
bounds AS (
    SELECT CAST(min(event_time) AS DATE) AS first_day, CAST(max(event_time) AS DATE) AS last_day,
        date_trunc('week', min(event_time)) AS first_week,
        date_trunc('week', max(event_time)) - INTERVAL 7 DAY AS last_complete_week
    FROM events
),
windows AS (
    SELECT greatest(first_day, last_day - {DAU_WINDOW_DAYS - 1}) AS dau_from, last_day AS dau_to,
        greatest(first_week, last_complete_week - INTERVAL {7 * (WAU_WINDOW_WEEKS - 1)} DAY) AS wau_from,
        last_complete_week AS wau_to
    FROM bounds
),
population_events AS (
    SELECT e.user_key, e.event_time, coalesce(e.revenue, 0) AS revenue
    FROM {events} e JOIN population p ON p.user_key = e.user_key
)
SELECT
    (SELECT count(*) FROM population) AS users,
    count(*) AS events,
    min(event_time) AS first_event,
    max(event_time) AS last_event,
    count(DISTINCT CASE WHEN CAST(event_time AS DATE) BETWEEN w.dau_from AND w.dau_to
        THEN (user_key, CAST(event_time AS DATE)) END) AS active_user_days,
    any_value(w.dau_to - w.dau_from + 1) AS dau_days,
    count(DISTINCT CASE WHEN date_trunc('week', event_time) BETWEEN w.wau_from AND w.wau_to
        THEN (user_key, date_trunc('week', event_time)) END) AS active_user_weeks,
    any_value(greatest(date_diff('day', w.wau_from, w.wau_to) // 7 + 1, 0)) AS wau_weeks,
    coalesce(sum(revenue), 0) AS revenue,
    count(DISTINCT CASE WHEN revenue > 0 THEN user_key END) AS paying_users
FROM population_events CROSS JOIN windows w
"""
    row = store.query_df(sql, params).iloc[0]
    users = int(row["users"])
    dau_days = row["dau_days"]
    wau_weeks = row["wau_weeks"]
    return Headline(
        users=users,
        events=int(row["events"]),
        first_event=None if pd.isna(row["first_event"]) else pd.Timestamp(row["first_event"]),
        last_event=None if pd.isna(row["last_event"]) else pd.Timestamp(row["last_event"]),
        daily_active_users=(
            float(row["active_user_days"]) / int(dau_days)
            if not pd.isna(dau_days) and dau_days > 0
            else np.nan
        ),
        weekly_active_users=(
            float(row["active_user_weeks"]) / int(wau_weeks)
            if not pd.isna(wau_weeks) and wau_weeks > 0
            else np.nan
        ),
        revenue=float(row["revenue"]),
        revenue_per_user=float(row["revenue"]) / users if users else np.nan,
        paying_share=int(row["paying_users"]) / users if users else np.nan,
    )


def activity_series(
    store: Store, filters: Filters, period: str = "week", start: StartSpec | None = None
) -> pd.DataFrame:
    """Activity of the filtered population per calendar period, for the Overview's small chart.

    Returns:
        One row per UTC calendar period (day, ISO week from Monday, or calendar month) from the
        period of the population's first event to the period of the data end, periods without
        activity included: ``period_start`` (timestamp), ``active_users`` (population users with
        at least one event in the period), ``events``, ``revenue`` (sum, missing counts 0) and
        ``complete`` (the period ends on or before the data end; the last one usually does not).
    """
    if period not in ACTIVITY_PERIODS:
        raise TenureError(f"unknown activity period '{period}'", f"use one of {', '.join(ACTIVITY_PERIODS)}")
    events = keyed_events_sql(store)
    population, params = population_sql(store, start or StartSpec(), filters, by_key=True, events=events)
    sql = f"""
WITH population AS ({population}),
population_events AS (
    SELECT date_trunc('{period}', e.event_time) AS period_start, e.user_key, coalesce(e.revenue, 0) AS revenue
    FROM {events} e JOIN population p ON p.user_key = e.user_key
),
per_period AS (
    SELECT period_start, count(DISTINCT user_key) AS active_users, count(*) AS events, sum(revenue) AS revenue
    FROM population_events GROUP BY period_start
),
bounds AS (SELECT max(event_time) AS data_end FROM events),
calendar AS (
    SELECT unnest(generate_series(
        (SELECT min(period_start) FROM per_period),
        date_trunc('{period}', (SELECT data_end FROM bounds)),
        INTERVAL 1 {period.upper()})) AS period_start
)
SELECT c.period_start,
    coalesce(p.active_users, 0) AS active_users,
    coalesce(p.events, 0) AS events,
    coalesce(p.revenue, 0) AS revenue,
    c.period_start + INTERVAL 1 {period.upper()} <= (SELECT data_end FROM bounds) AS complete
FROM calendar c LEFT JOIN per_period p ON p.period_start = c.period_start
ORDER BY c.period_start
"""
    frame = store.query_df(sql, params)
    for column in ("active_users", "events"):
        frame[column] = frame[column].astype("int64")
    frame["revenue"] = frame["revenue"].astype("float64")
    frame["complete"] = frame["complete"].astype(bool)
    return frame.reset_index(drop=True)
