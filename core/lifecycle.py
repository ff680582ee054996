"""Lifecycle: how the active base changes from one period to the next, and each user's stage on a date.

Definitions (docs/METRICS.md, "Lifecycle"):

Per-period lifecycle (``lifecycle_table``):

- **Start**: each user's start, per ``StartSpec`` (first event over the whole history, signup,
  or first event of a name; core/population.py). Never "first event inside a window".
- **Periods**: UTC calendar periods: days, ISO weeks starting Monday, calendar months. A period
  is named by its first day. The table runs from the period of the store's first event (with a
  signup start, of the earliest ``users.signup_time`` when earlier) to the period holding the
  data's end (the latest event in the store), whatever the filters; that last period is
  **partial** (it has not ended).
- **Activity event**: any event, or only events whose name is in ``activity_events``. Events in
  periods before the user's start period never count.
- **Active in t**: the user has an activity event in period t, or t is their start period (a
  user counts as active in the period they start in, even without an activity event there, e.g.
  a signup start or a start event that is not an activity event).
- For each period t, every user who is active in t or in t-1 (and whose start period is t or
  earlier) has exactly one status: **new** (t is their start period); **returning** (active in
  t and t-1, not new); **resurrecting** (active in t, not in t-1, not new); **dormant** (active
  in t-1, not in t; drawn as a negative bar, counted as a positive number here).
- ``active`` = new + returning + resurrecting; ``quick_ratio`` = (new + resurrecting) / dormant,
  NaN where dormant = 0.
- Users whose start is after the data's end are in no period. The global filters select users,
  never events.

Point-in-time stages (``stage_table``), evaluated **at the end of day D** (UTC; events on D
count, the as-of instant is D + 1 day 00:00, exclusive):

- A user's **activity days** are the UTC days of their activity events at or after their start,
  plus the day of the start itself. ``last_day`` = the latest activity day on or before D;
  ``idle`` = D - last_day in days (0 when active on D).
- A **return** is an activity day whose previous activity day lies ``dormant_days`` (W) or more
  before it: the user came back from being dormant.
- Stages, first match wins (so they are exclusive and, with the last, exhaustive):
  not started (start day after D: excluded from the stage counts);
  **new** (D - start day < N); **churned** (idle >= C); **dormant** (idle >= W);
  **at risk** (idle >= A); **reactivated** (their latest return on or before D is less than N
  days before D, i.e. they came back from a gap of W days or more within the last N days);
  **active** (otherwise: active within the last A days).
- **Revenue share**: the revenue of each stage's users (events of any name) over the
  ``revenue_days`` days ending with D, divided by that of all staged users.
- **Transitions** between D1 <= D2: every user started by D2 is counted once, by their stage at
  D1 (row; "not started" for users who start after D1) and at D2 (column). Row sums equal the
  stage counts at D1 (plus the users who start between them), column sums those at D2.

All counting runs in DuckDB, grouped by the integer ``events.user_key``. The per-period table
takes one pass over the events: per user, the first event time and bit masks of the periods with
an activity event (no (user, period) pairs are ever hashed). With the start period's bit set and
earlier bits cleared, ``active(t)`` is the number of users with bit t set, ``returning(t)`` the
number with bits t and t-1 set, and ``resurrecting = active - new - returning``,
``dormant(t) = active(t-1) - returning(t)``. Stages use ``lag`` over each user's distinct
activity days to find returns.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd

from core.errors import TenureError
from core.population import Filters, StartSpec, keyed_events_sql, population_sql
from core.store import Store

Period = Literal["day", "week", "month"]
PERIODS: tuple[str, ...] = ("day", "week", "month")
STATUSES: tuple[str, ...] = ("new", "returning", "resurrecting", "dormant")
TABLE_COLUMNS = (
    "period",
    "new",
    "returning",
    "resurrecting",
    "dormant",
    "active",
    "quick_ratio",
    "partial",
)

NOT_STARTED = "not_started"
STAGES: tuple[str, ...] = ("new", "active", "reactivated", "at_risk", "dormant", "churned")
STAGE_LABELS: dict[str, str] = {
    NOT_STARTED: "Not started",
    "new": "New",
    "active": "Active",
    "reactivated": "Reactivated",
    "at_risk": "At risk",
    "dormant": "Dormant",
    "churned": "Churned",
}
STAGE_COLUMNS = ("stage", "users", "share", "revenue", "revenue_share")
TRANSITION_COLUMNS = ("from_stage", "to_stage", "users")


def _event_names(value: Any, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TenureError(
            f"{name} must be a tuple of names, not the string '{value}'", f"write {name}=('purchase',)"
        )
    return tuple(str(item) for item in value)


def _events_from_text(text: str) -> tuple[str, ...]:
    return tuple(name for name in text.split(",") if name)


@dataclass(frozen=True)
class LifecycleSpec:
    """What the per-period lifecycle asks for (definitions in the module docstring).

    Args:
        period: ``day``, ``week`` (ISO, from Monday) or ``month`` (calendar), all UTC.
        start: how each user's start is found.
        activity_events: event names that make a user active; empty = any event.
    """

    period: Period = "week"
    start: StartSpec = field(default_factory=StartSpec)
    activity_events: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.period not in PERIODS:
            raise TenureError(f"unknown lifecycle period '{self.period}'", f"use one of {', '.join(PERIODS)}")
        if not isinstance(self.start, StartSpec):
            raise TenureError("start must be a StartSpec", "build it with StartSpec(kind, event_name)")
        object.__setattr__(self, "activity_events", _event_names(self.activity_events, "activity_events"))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data; ``start`` is written like the CLI flag (``event:NAME``)."""
        return {
            "period": self.period,
            "start": self.start.to_text(),
            "activity_events": list(self.activity_events),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LifecycleSpec:
        """Inverse of ``to_dict``; missing keys take their defaults, unknown keys are ignored."""
        return cls(
            period=data.get("period", "week"),
            start=StartSpec.from_text(str(data.get("start", "first_event"))),
            activity_events=tuple(data.get("activity_events", ())),
        )

    def to_query_params(self) -> dict[str, str]:
        """Flat string parameters for a shareable URL; event names are joined with commas."""
        params = {"period": self.period, "start": self.start.to_text()}
        if self.activity_events:
            params["activity"] = ",".join(self.activity_events)
        return params

    @classmethod
    def from_query_params(cls, params: dict[str, str]) -> LifecycleSpec:
        """Inverse of ``to_query_params``; unknown keys are ignored, bad values raise."""
        return cls(
            period=params.get("period", "week"),  # type: ignore[arg-type]
            start=StartSpec.from_text(params.get("start", "first_event")),
            activity_events=_events_from_text(params.get("activity", "")),
        )


def _activity_filter(names: tuple[str, ...], alias: str = "e") -> str:
    if not names:
        return ""
    return f" AND {alias}.event_name IN ({', '.join('?' for _ in names)})"


# An offset of a million weeks keeps the integer division a floor division for any date after
# the year -17000 (DuckDB's ``//`` truncates towards zero).
_WEEK_OFFSET = 1_000_000


def period_index_sql(time_sql: str, period: str) -> str:
    """SQL for the integer index of the UTC calendar period holding ``time_sql``.

    Consecutive periods differ by 1: days since 1970-01-01; ISO weeks (Monday to Sunday) since
    the week of 1970-01-05, a Monday; months as ``year * 12 + month - 1``.
    """
    if period == "day":
        return f"(CAST({time_sql} AS DATE) - DATE '1970-01-01')"
    if period == "week":
        return f"((CAST({time_sql} AS DATE) - DATE '1970-01-05' + {7 * _WEEK_OFFSET}) // 7 - {_WEEK_OFFSET})"
    return f"(year({time_sql}) * 12 + month({time_sql}) - 1)"


def _period_index(day: dt.date, period: str) -> int:
    """``period_index_sql`` in Python, for one date."""
    if period == "day":
        return (day - dt.date(1970, 1, 1)).days
    if period == "week":
        return (day - dt.date(1970, 1, 5)).days // 7
    return day.year * 12 + day.month - 1


# Period masks: the user's active periods, relative to the first period of the data, are bits
# of BIGINT words (period r is bit r % 62 of word r // 62; 62 bits keep every shift positive).
_WORD_BITS = 62


def _word(name: str, word: int) -> str:
    return f"{name}_{word}"


def _bit_sql(name: str, position: int) -> str:
    """SQL for 1 if bit ``position`` (a period relative to the first) of masks ``name`` is set."""
    word, bit = divmod(position, _WORD_BITS)
    return f"CAST(({_word(name, word)} >> {bit}) & 1 AS INTEGER)"


class _Frame(NamedTuple):
    """The periods a lifecycle query covers: the indexes of the first and the last."""

    first_index: int
    last_index: int

    @property
    def periods(self) -> int:
        return self.last_index - self.first_index + 1

    @property
    def words(self) -> int:
        return (self.periods - 1) // _WORD_BITS + 1


def _frame(store: Store, spec: LifecycleSpec) -> _Frame | None:
    """The period range: from the data's first period (or an earlier signup) to the data end's."""
    earliest = "min(event_time)"
    if spec.start.kind == "signup":
        earliest = "least(min(event_time), (SELECT min(signup_time) FROM users))"
    row = store.query_one(
        f"SELECT {period_index_sql(earliest, spec.period)}, {period_index_sql('max(event_time)', spec.period)} "
        "FROM events"
    )
    if not row or row[0] is None:
        return None
    return _Frame(first_index=int(row[0]), last_index=int(row[1]))


def _lifecycle_pieces_sql(
    store: Store, spec: LifecycleSpec, filters: Filters, frame: _Frame
) -> tuple[str, list[Any]]:
    """The CTEs shared by the table and the drill-down (a ``WITH`` clause's body).

    One pass over the events, grouped by ``user_key``, finds each user's first event (and first
    event of the start's name) and the bit masks of the periods they have an activity event in.
    Defines ``members(user_key, start_time, start_period, active_0.., pairs_0..)``: the
    population's users whose start is on or before the data's end, with ``start_period`` and the
    masks relative to ``frame.first_index``: ``active`` = periods the user is active in (the
    start period set, periods before it cleared), ``pairs`` = periods r with r and r - 1 active.
    """
    events = keyed_events_sql(store)
    base = frame.first_index
    words = frame.words
    # Placeholders in text order: the start event's name (outer select), the activity names
    # (inner select, once), the start event's name again (user_events), then the population's.
    params: list[Any] = []
    named = ""
    user_events = "SELECT user_key, first_time AS event_time FROM user_activity"
    if spec.start.kind == "event":
        named = ", min(event_time) FILTER (WHERE event_name = ?) AS named_time"
        params.append(spec.start.event_name)
    activity = "TRUE"
    if spec.activity_events:
        activity = f"e.event_name IN ({', '.join('?' for _ in spec.activity_events)})"
        params.extend(spec.activity_events)
    if spec.start.kind == "event":
        user_events = (
            "SELECT user_key, named_time AS event_time, CAST(? AS VARCHAR) AS event_name "
            "FROM user_activity WHERE named_time IS NOT NULL"
        )
        params.append(spec.start.event_name)
    position = f"({period_index_sql('e.event_time', spec.period)} - {base})"
    masks = ", ".join(
        f"bit_or(CASE WHEN is_activity AND position // {_WORD_BITS} = {word} "
        f"THEN CAST(1 AS BIGINT) << (position % {_WORD_BITS}) END) AS {_word('seen', word)}"
        for word in range(words)
    )
    population, population_params = population_sql(
        store, spec.start, filters, by_key=True, events="user_events"
    )
    params.extend(population_params)

    start_period = f"({period_index_sql('p.start_time', spec.period)} - {base})"
    cleared = []
    for word in range(words):
        # Bits below the start period are cleared; the start period's bit is set.
        low = f"least(greatest({start_period} - {word * _WORD_BITS}, 0), {_WORD_BITS})"
        keep = f"~((CAST(1 AS BIGINT) << {low}) - 1)"
        own = (
            f"CASE WHEN {start_period} // {_WORD_BITS} = {word} "
            f"THEN CAST(1 AS BIGINT) << ({start_period} % {_WORD_BITS}) ELSE 0 END"
        )
        cleared.append(f"(coalesce(a.{_word('seen', word)}, 0) & {keep}) | {own} AS {_word('active', word)}")
    pairs = []
    for word in range(words):
        carried = f" | ({_word('active', word - 1)} >> {_WORD_BITS - 1})" if word else ""
        pairs.append(
            f"{_word('active', word)} & (({_word('active', word)} << 1){carried}) AS {_word('pairs', word)}"
        )
    sql = f"""
user_activity AS MATERIALIZED (
    SELECT user_key, min(event_time) AS first_time{named}, {masks}
    FROM (
        SELECT e.user_key, e.event_time, e.event_name, {activity} AS is_activity, {position} AS position
        FROM {events} e
    )
    GROUP BY user_key
),
user_events AS ({user_events}),
population AS ({population}),
starts AS (
    SELECT p.user_key, p.start_time, {start_period} AS start_period, {", ".join(cleared)}
    FROM population p JOIN user_activity a ON a.user_key = p.user_key
    WHERE p.start_time <= (SELECT max(event_time) FROM events)
),
members AS MATERIALIZED (SELECT *, {", ".join(pairs)} FROM starts)"""
    return sql, params


def lifecycle_sql(
    store: Store, spec: LifecycleSpec, filters: Filters
) -> tuple[str, list[Any], _Frame | None]:
    """The table's DuckDB query, its bound parameters and the period range it covers.

    The query returns one row ``(starts, active, pairs)`` of lists indexed by the period
    relative to the range's first: users starting in it, users active in it, users active in it
    and the period before. None as the query when the store has no events.
    """
    frame = _frame(store, spec)
    if frame is None:
        return "", [], None
    pieces, params = _lifecycle_pieces_sql(store, spec, filters, frame)
    active = ", ".join(f"sum({_bit_sql('active', r)})" for r in range(frame.periods))
    pairs = ", ".join(f"sum({_bit_sql('pairs', r)})" for r in range(frame.periods))
    sql = f"""
WITH {pieces},
new_counts AS (
    SELECT list(users ORDER BY start_period) AS counts, list(start_period ORDER BY start_period) AS periods
    FROM (SELECT start_period, count(*) AS users FROM members GROUP BY start_period)
),
bit_sums AS (SELECT [{active}] AS active, [{pairs}] AS pairs FROM members)
SELECT n.counts AS new_counts, n.periods AS new_at, b.active, b.pairs
FROM bit_sums b CROSS JOIN new_counts n"""
    return sql, params, frame


_TABLE_DTYPES = {
    "period": object,
    "new": "int64",
    "returning": "int64",
    "resurrecting": "int64",
    "dormant": "int64",
    "active": "int64",
    "quick_ratio": "float64",
    "partial": bool,
}


def _period_starts(frame: _Frame, period: str) -> list[dt.date]:
    """The first day of each period of the range, in order."""
    if period == "day":
        origin = dt.date(1970, 1, 1)
        return [origin + dt.timedelta(days=index) for index in range(frame.first_index, frame.last_index + 1)]
    if period == "week":
        origin = dt.date(1970, 1, 5)
        return [
            origin + dt.timedelta(weeks=index) for index in range(frame.first_index, frame.last_index + 1)
        ]
    return [
        dt.date(index // 12, index % 12 + 1, 1) for index in range(frame.first_index, frame.last_index + 1)
    ]


def lifecycle_table(store: Store, spec: LifecycleSpec, filters: Filters) -> pd.DataFrame:
    """The per-period lifecycle (definitions in the module docstring), in one DuckDB query.

    Returns:
        One row per calendar period from the data's first period to the one holding the data's
        end, sorted, with columns ``period`` (date: the period's first day), ``new``,
        ``returning``, ``resurrecting``, ``dormant`` (a positive count), ``active``
        (new + returning + resurrecting), ``quick_ratio`` ((new + resurrecting) / dormant, NaN
        where dormant = 0) and ``partial`` (True for the last period: it has not ended).
        Empty when the store has no events.
    """
    sql, params, frame = lifecycle_sql(store, spec, filters)
    if frame is None:
        return pd.DataFrame({column: pd.Series(dtype=dtype) for column, dtype in _TABLE_DTYPES.items()})
    row = store.query_df(sql, params).iloc[0]
    periods = frame.periods
    new = np.zeros(periods, dtype=np.int64)
    if pd.api.types.is_list_like(row["new_at"]):  # NULL when the filters keep nobody
        new[np.asarray(row["new_at"], dtype=np.int64)] = np.asarray(row["new_counts"], dtype=np.int64)
    active = np.nan_to_num(np.asarray(row["active"], dtype=float)).astype(np.int64)
    pairs = np.nan_to_num(np.asarray(row["pairs"], dtype=float)).astype(np.int64)
    previous_active = np.concatenate([[0], active[:-1]])
    table = pd.DataFrame(
        {
            "period": _period_starts(frame, spec.period),
            "new": new,
            "returning": pairs,
            "resurrecting": active - new - pairs,
            "dormant": previous_active - pairs,
            "active": active,
        }
    )
    dormant = table["dormant"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        table["quick_ratio"] = np.where(
            dormant > 0, (table["new"] + table["resurrecting"]).to_numpy() / dormant, np.nan
        )
    table["partial"] = np.arange(periods) == periods - 1
    table["period"] = table["period"].astype(object)
    return table[list(TABLE_COLUMNS)].reset_index(drop=True)


def _as_date(value: dt.date | str | pd.Timestamp, name: str) -> dt.date:
    try:
        return pd.Timestamp(value).date()
    except (TypeError, ValueError) as error:
        raise TenureError(f"{name} '{value}' is not a date", "use YYYY-MM-DD") from error


def _user_ids_sql(store: Store, chosen: str) -> str:
    """Turn the ``user_key`` of the CTE ``chosen`` back into user ids (for drill-downs)."""
    return (
        f"(SELECT DISTINCT user_key, user_id FROM {keyed_events_sql(store)} "
        f"WHERE user_key IN (SELECT user_key FROM {chosen}))"
    )


def lifecycle_users(
    store: Store,
    spec: LifecycleSpec,
    filters: Filters,
    period: dt.date | str | pd.Timestamp,
    status: str,
) -> pd.DataFrame:
    """The users behind one bar of the table: the drill-down, from the same SQL pieces.

    Args:
        period: any day of the period (its first day, as in the table).
        status: ``new``, ``returning``, ``resurrecting`` or ``dormant``.

    Returns:
        Columns ``user_id, start_time``, sorted by user_id; as many rows as the table's count.
    """
    if status not in STATUSES:
        raise TenureError(f"unknown lifecycle status '{status}'", f"use one of {', '.join(STATUSES)}")
    day = _as_date(period, "period")
    frame = _frame(store, spec)
    columns = {"user_id": pd.Series(dtype=object), "start_time": pd.Series(dtype="datetime64[us]")}
    if frame is None:
        return pd.DataFrame(columns)
    position = _period_index(day, spec.period) - frame.first_index
    if not 0 <= position < frame.periods:
        raise TenureError(
            f"period {day} is outside the data",
            f"pick a {spec.period} from {_period_starts(frame, spec.period)[0]} to the data's end",
        )
    active = _bit_sql("active", position)
    pairs = _bit_sql("pairs", position)
    previous = _bit_sql("active", position - 1) if position else "0"
    conditions = {
        "new": f"start_period = {position}",
        "returning": f"{pairs} = 1",
        "resurrecting": f"{active} = 1 AND {pairs} = 0 AND start_period <> {position}",
        "dormant": f"{previous} = 1 AND {active} = 0",
    }
    pieces, params = _lifecycle_pieces_sql(store, spec, filters, frame)
    sql = f"""
WITH {pieces},
chosen AS (SELECT user_key, start_time FROM members WHERE {conditions[status]})
SELECT ids.user_id, c.start_time
FROM chosen c JOIN {_user_ids_sql(store, "chosen")} ids ON ids.user_key = c.user_key
ORDER BY ids.user_id"""
    return store.query_df(sql, params)


# --- Point-in-time stages -------------------------------------------------------------------------


@dataclass(frozen=True)
class StageSpec:
    """Thresholds of the point-in-time stages (definitions in the module docstring), in days.

    Args:
        new_days: N: a user is new while their start is less than N days before D; a return
            from dormancy less than N days before D makes them reactivated.
        at_risk_days: A: idle for at least A days.
        dormant_days: W: idle for at least W days (also the gap that makes a return).
        churned_days: C: idle for at least C days.
        revenue_days: the revenue share counts the revenue of the days D-revenue_days+1..D.
        start: how each user's start is found.
        activity_events: event names that make a day active; empty = any event.
    """

    new_days: int = 7
    at_risk_days: int = 7
    dormant_days: int = 14
    churned_days: int = 30
    revenue_days: int = 30
    start: StartSpec = field(default_factory=StartSpec)
    activity_events: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("new_days", "at_risk_days", "dormant_days", "churned_days", "revenue_days"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise TenureError(f"{name} must be a whole number of days, at least 1, not '{value}'")
            object.__setattr__(self, name, int(value))
        if not self.at_risk_days <= self.dormant_days <= self.churned_days:
            raise TenureError(
                f"thresholds out of order: at risk {self.at_risk_days}, dormant {self.dormant_days}, "
                f"churned {self.churned_days} days",
                "use at risk <= dormant <= churned",
            )
        if not isinstance(self.start, StartSpec):
            raise TenureError("start must be a StartSpec", "build it with StartSpec(kind, event_name)")
        object.__setattr__(self, "activity_events", _event_names(self.activity_events, "activity_events"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "new_days": self.new_days,
            "at_risk_days": self.at_risk_days,
            "dormant_days": self.dormant_days,
            "churned_days": self.churned_days,
            "revenue_days": self.revenue_days,
            "start": self.start.to_text(),
            "activity_events": list(self.activity_events),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageSpec:
        """Inverse of ``to_dict``; missing keys take their defaults, unknown keys are ignored."""
        return cls(
            **{key: _whole(data[key], key) for key in _THRESHOLDS if key in data},
            start=StartSpec.from_text(str(data.get("start", "first_event"))),
            activity_events=tuple(data.get("activity_events", ())),
        )

    def to_query_params(self) -> dict[str, str]:
        """Flat string parameters for a URL (``new``, ``at_risk``, ..., ``start``, ``activity``)."""
        params = {key.removesuffix("_days"): str(getattr(self, key)) for key in _THRESHOLDS}
        params["start"] = self.start.to_text()
        if self.activity_events:
            params["activity"] = ",".join(self.activity_events)
        return params

    @classmethod
    def from_query_params(cls, params: dict[str, str]) -> StageSpec:
        """Inverse of ``to_query_params``; unknown keys are ignored, bad values raise."""
        thresholds = {
            key: _whole(params[key.removesuffix("_days")], key)
            for key in _THRESHOLDS
            if params.get(key.removesuffix("_days"))
        }
        return cls(
            **thresholds,
            start=StartSpec.from_text(params.get("start", "first_event")),
            activity_events=_events_from_text(params.get("activity", "")),
        )


_THRESHOLDS = ("new_days", "at_risk_days", "dormant_days", "churned_days", "revenue_days")


def _whole(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError) as error:
        raise TenureError(f"{name} must be a whole number, not '{value}'", "use e.g. 7") from error


def _stage_case_sql(spec: StageSpec, day: str, last_day: str, last_return: str) -> str:
    """SQL for a user's stage at the end of ``day``, first match wins (docs/METRICS.md)."""
    return f"""CASE
        WHEN start_day > {day} THEN '{NOT_STARTED}'
        WHEN {day} - start_day < {spec.new_days} THEN 'new'
        WHEN {day} - {last_day} >= {spec.churned_days} THEN 'churned'
        WHEN {day} - {last_day} >= {spec.dormant_days} THEN 'dormant'
        WHEN {day} - {last_day} >= {spec.at_risk_days} THEN 'at_risk'
        WHEN {last_return} IS NOT NULL AND {day} - {last_return} < {spec.new_days} THEN 'reactivated'
        ELSE 'active' END"""


def _activity_gaps_sql(events: str, spec: StageSpec, before: str | None = None) -> str:
    """The CTEs ``activity_days(user_key, day)`` and ``gaps(user_key, day, gap)`` of the users in
    ``members(user_key, start_time, start_day, ...)``: their activity days (module docstring) and,
    per day, the days since the previous one (NULL for the first).

    Args:
        before: an SQL expression over the members row ``m``: only activity events before it
            count (each user's own as-of instant); None = every event.
    """
    cutoff = f" AND e.event_time < {before}" if before is not None else ""
    return f"""activity_days AS (
    SELECT user_key, start_day AS day FROM members
    UNION
    SELECT e.user_key, CAST(e.event_time AS DATE) AS day
    FROM {events} e JOIN members m ON m.user_key = e.user_key
    WHERE e.event_time >= m.start_time{cutoff}{_activity_filter(spec.activity_events)}
),
gaps AS (
    SELECT user_key, day, day - lag(day) OVER (PARTITION BY user_key ORDER BY day) AS gap
    FROM activity_days
)"""


def _stage_pieces_sql(
    store: Store, spec: StageSpec, filters: Filters, days: list[dt.date]
) -> tuple[str, list[Any]]:
    """The CTEs of stages at several dates (a ``WITH`` clause's body).

    Defines ``user_stages(user_key, start_time, start_day, last_day_0, stage_0, last_day_1,
    stage_1, ...)``: one row per population user, with their last activity day on or before
    ``days[i]`` and their stage at the end of that day.
    """
    events = keyed_events_sql(store)
    population, params = population_sql(store, spec.start, filters, by_key=True, events=events)
    dates = ", ".join(f"CAST(? AS DATE) AS d{i}" for i in range(len(days)))
    aggregates = []
    stages = []
    for i in range(len(days)):
        aggregates.append(
            f"max(a.day) FILTER (WHERE a.day <= s.d{i}) AS last_day_{i}, "
            f"max(a.day) FILTER (WHERE a.day <= s.d{i} AND a.gap >= {spec.dormant_days}) AS last_return_{i}"
        )
        stages.append(
            f"last_day_{i}, {_stage_case_sql(spec, f'd{i}', f'last_day_{i}', f'last_return_{i}')} AS stage_{i}"
        )
    sql = f"""
population AS ({population}),
as_of AS (SELECT {dates}),
members AS MATERIALIZED (
    SELECT user_key, start_time, CAST(start_time AS DATE) AS start_day FROM population
),
{_activity_gaps_sql(events, spec)},
user_days AS (
    SELECT a.user_key, {", ".join(aggregates)}
    FROM gaps a CROSS JOIN as_of s
    GROUP BY a.user_key
),
user_stages AS (
    SELECT m.user_key, m.start_time, m.start_day, {", ".join(stages)}
    FROM members m JOIN user_days u ON u.user_key = m.user_key CROSS JOIN as_of
)"""
    return sql, [*params, *days, *spec.activity_events]


def stages_at_sql(
    store: Store, spec: StageSpec, instants: str, instants_params: Sequence[Any] = ()
) -> tuple[str, list[Any]]:
    """A SELECT of ``(user_key, stage)``: each user's stage at their own as-of instant.

    The stages' definitions (module docstring) read at an instant T instead of the end of a day:
    the stage at the end of D, the UTC day of the last instant before T, counting only activity
    events before T. With T = D + 1 day 00:00 this is ``stage_table``'s stage at the end of D;
    with T inside a day (an assignment time), events of that day before T count and those after
    do not. A start at or before T counts (a user whose start is T itself, e.g. one assigned at
    their first event, is new); users with no start by T are ``not_started``. Used for the stage
    at assignment (core/whatif/segments.py).

    Args:
        instants: a SELECT of ``(user_key, as_of_time)``, one row per user.
        instants_params: its positional parameters.
    """
    events = keyed_events_sql(store)
    population, params = population_sql(store, spec.start, Filters(), by_key=True, events=events)
    day = "CAST(m.as_of_time - INTERVAL 1 MICROSECOND AS DATE)"
    case = _stage_case_sql(spec, day, "d.last_day", "d.last_return")
    sql = f"""
WITH population AS ({population}),
instants AS ({instants}),
members AS MATERIALIZED (
    SELECT i.user_key, p.start_time, CAST(p.start_time AS DATE) AS start_day, i.as_of_time
    FROM instants i JOIN population p ON p.user_key = i.user_key
    WHERE p.start_time <= i.as_of_time
),
{_activity_gaps_sql(events, spec, before="m.as_of_time")},
user_days AS (
    SELECT user_key, max(day) AS last_day,
        max(day) FILTER (WHERE gap >= {spec.dormant_days}) AS last_return
    FROM gaps GROUP BY user_key
),
staged AS (SELECT m.user_key, {case} AS stage FROM members m JOIN user_days d ON d.user_key = m.user_key)
SELECT i.user_key, coalesce(s.stage, '{NOT_STARTED}') AS stage
FROM instants i LEFT JOIN staged s ON s.user_key = i.user_key"""
    return sql, [*params, *instants_params, *spec.activity_events]


def stage_table(
    store: Store, spec: StageSpec, filters: Filters, as_of: dt.date | str | pd.Timestamp
) -> pd.DataFrame:
    """Users by stage at the end of ``as_of`` (UTC), with their share of recent revenue.

    Returns:
        One row per stage in ``STAGES`` order (zeros included): ``stage``, ``users``, ``share``
        (of all staged users), ``revenue`` (their revenue over the ``revenue_days`` days ending
        with ``as_of``, events of any name) and ``revenue_share`` (of all staged users' revenue
        in that window; NaN when it is 0). Users who have not started by then are not counted.
    """
    day = _as_date(as_of, "as_of")
    pieces, params = _stage_pieces_sql(store, spec, filters, [day])
    window_start = dt.datetime.combine(day + dt.timedelta(days=1 - spec.revenue_days), dt.time())
    window_end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time())
    sql = f"""
WITH {pieces},
staged AS (SELECT user_key, stage_0 AS stage FROM user_stages WHERE stage_0 <> '{NOT_STARTED}'),
revenue AS (
    SELECT e.user_key, sum(coalesce(e.revenue, 0)) AS revenue
    FROM {keyed_events_sql(store)} e
    WHERE e.event_time >= ? AND e.event_time < ? AND e.user_key IN (SELECT user_key FROM staged)
    GROUP BY e.user_key
)
SELECT s.stage, count(*) AS users, coalesce(sum(r.revenue), 0) AS revenue
FROM staged s LEFT JOIN revenue r ON r.user_key = s.user_key
GROUP BY s.stage"""
    counts = store.query_df(sql, [*params, window_start, window_end]).set_index("stage")
    frame = pd.DataFrame({"stage": list(STAGES)})
    frame["users"] = frame["stage"].map(counts["users"]).fillna(0).astype("int64")
    frame["revenue"] = frame["stage"].map(counts["revenue"]).fillna(0.0).astype("float64")
    total_users = int(frame["users"].sum())
    total_revenue = float(frame["revenue"].sum())
    frame["share"] = frame["users"] / total_users if total_users else np.nan
    frame["revenue_share"] = frame["revenue"] / total_revenue if total_revenue > 0 else np.nan
    return frame[list(STAGE_COLUMNS)]


def stage_transitions(
    store: Store,
    spec: StageSpec,
    filters: Filters,
    from_date: dt.date | str | pd.Timestamp,
    to_date: dt.date | str | pd.Timestamp,
) -> pd.DataFrame:
    """Users by (stage at the end of ``from_date``, stage at the end of ``to_date``).

    Every user who has started by ``to_date`` is counted once; ``from_stage`` is
    ``not_started`` for those who start after ``from_date``.

    Returns:
        Columns ``from_stage, to_stage, users``: every pair of ``(not_started, *STAGES)`` x
        ``STAGES`` (zeros included), rows in that order.
    """
    first = _as_date(from_date, "from date")
    second = _as_date(to_date, "to date")
    if first > second:
        raise TenureError(
            f"the first date {first} is after the second {second}", "pick the earlier date first"
        )
    pieces, params = _stage_pieces_sql(store, spec, filters, [first, second])
    sql = f"""
WITH {pieces}
SELECT stage_0 AS from_stage, stage_1 AS to_stage, count(*) AS users
FROM user_stages WHERE stage_1 <> '{NOT_STARTED}'
GROUP BY ALL"""
    counts = store.query_df(sql, params)
    grid = pd.MultiIndex.from_product([(NOT_STARTED, *STAGES), STAGES], names=["from_stage", "to_stage"])
    users = counts.set_index(["from_stage", "to_stage"])["users"].reindex(grid, fill_value=0)
    return users.astype("int64").reset_index()[list(TRANSITION_COLUMNS)]


def transition_matrix(transitions: pd.DataFrame) -> pd.DataFrame:
    """``stage_transitions``' frame as a matrix: rows = stage at the first date, columns = at the second."""
    matrix = transitions.pivot(index="from_stage", columns="to_stage", values="users")
    rows = [stage for stage in (NOT_STARTED, *STAGES) if stage in matrix.index]
    return matrix.reindex(index=rows, columns=list(STAGES)).fillna(0).astype("int64")


def stage_users(
    store: Store,
    spec: StageSpec,
    filters: Filters,
    as_of: dt.date | str | pd.Timestamp,
    stage: str,
) -> pd.DataFrame:
    """The users in one stage at the end of ``as_of``, from the same SQL as ``stage_table``.

    Returns:
        Columns ``user_id, start_time, last_active`` (their last activity day on or before
        ``as_of``), sorted by user_id.
    """
    if stage not in STAGES:
        raise TenureError(f"unknown stage '{stage}'", f"use one of {', '.join(STAGES)}")
    day = _as_date(as_of, "as_of")
    pieces, params = _stage_pieces_sql(store, spec, filters, [day])
    sql = f"""
WITH {pieces},
chosen AS (SELECT user_key, start_time, last_day_0 FROM user_stages WHERE stage_0 = ?)
SELECT ids.user_id, c.start_time, c.last_day_0 AS last_active
FROM chosen c JOIN {_user_ids_sql(store, "chosen")} ids ON ids.user_key = c.user_key
ORDER BY ids.user_id"""
    frame = store.query_df(sql, [*params, stage])
    frame["last_active"] = pd.to_datetime(frame["last_active"]).dt.date.astype(object)
    return frame
