"""Cohort retention: who comes back, period after period, counted so that unfinished periods never
look like churn.

Definitions (docs/METRICS.md, "Retention"):

- **Start**: a user's start time, per ``StartSpec`` (first event, signup, or first event of a
  chosen name; core/population.py). Users without a start are not counted.
- **Return event**: any event, or only events whose name is in ``return_events`` (empty = any).
  Events before the user's start never count.
- **Cohort**: users grouped by the calendar period (UTC day; ISO week starting Monday; calendar
  month) that contains their start. ``cohort`` is the first day of that period, a date.
- **Period k** of a user with start ``s``: the interval ``[s + k*P, s + (k+1)*P)`` with
  ``P`` = 1, 7 or 30 days for ``period`` = day, week, month. An event exactly at ``s + k*P``
  belongs to period k. With ``calendar=True``, period k is instead the k-th calendar period after
  the cohort's own (calendar days, ISO weeks, calendar months: the difference of their indexes);
  period 0 then runs from the start to the end of the cohort's calendar period.
- **Retained in period k** (k >= 1), by ``mode``:
  ``classic``: at least one return event in period k;
  ``unbounded``: at least one return event in period k or any later period (up to the data end);
  ``consecutive``: at least one return event in every period 1, 2, ..., k.
  Period 0 is the start period: every user of the cohort is retained in period 0.
- **Data end**: the latest event time in the store, ``max(event_time)`` over all events, whatever
  the filters. Period k of a user is **complete** when it ends on or before the data end
  (``s + (k+1)*P <= data end``; with ``calendar=True``, the start of the calendar period after
  period k is on or before the data end). A user whose period k is not complete is neither
  retained nor lost in k: they leave the cell's denominator (right censoring).
- **Cell (cohort, k)**: ``cohort_size`` = users of the cohort; ``eligible`` = users of the cohort
  whose period k is complete; ``excluded`` = ``cohort_size - eligible``; ``retained`` = eligible
  users retained in k; ``rate`` = ``retained / eligible``. A cell with ``eligible == 0`` is
  ``incomplete`` (rate NaN): it is shown as not yet known, never as a low rate.
- **Periods shown**: 0..``max_periods``. When ``max_periods`` is None the cap is 365 days,
  52 weeks or 24 months (``DEFAULT_MAX_PERIODS``), lowered to the last period that is complete
  for at least one user of the population, so the table carries no column that is empty everywhere.
- **Overall curve**: pooled over cohorts: for each k, the sum of ``retained`` over the sum of
  ``eligible`` (every user whose period k is complete counts once), with a 95% Wilson score
  interval (core/stats.py). A breakdown (core/breakdown.py) gives the same curve per group: per
  value of a ``users`` column (users without a ``users`` row, or with a NULL value, form the
  segment "(none)") or per variant of an experiment (``experiment:NAME``).

All counting runs in DuckDB: each user's period index is an integer division of epoch
differences, returns are reduced to distinct (user, period) pairs (or, for ``unbounded``, to each
user's last return), and eligibility comes from a histogram of each user's number of complete
periods with a running sum, so no users x periods grid is ever built. Users are grouped and
joined by their integer ``events.user_key`` (core/schema.py), several times faster than by the
text ``user_id``; only the drill-down turns keys back into user ids. With the first-event start,
starts come from the user index (core/user_index.py) and returns are grouped by its dense user
numbers, with a perfect hash table.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from core.breakdown import group_sql, parse_breakdown
from core.errors import TenureError
from core.population import Filters, StartSpec, keyed_events_sql, population_sql
from core.stats import wilson_interval
from core.store import Store
from core.user_index import perfect_hash_bits, user_index_ready

Period = Literal["day", "week", "month"]
Mode = Literal["classic", "unbounded", "consecutive"]

PERIODS: tuple[str, ...] = ("day", "week", "month")
MODES: tuple[str, ...] = ("classic", "unbounded", "consecutive")
PERIOD_DAYS: dict[str, int] = {"day": 1, "week": 7, "month": 30}
DEFAULT_MAX_PERIODS: dict[str, int] = {"day": 365, "week": 52, "month": 24}
MISSING_SEGMENT = "(none)"

_MICROSECONDS_PER_DAY = 86_400_000_000

TABLE_COLUMNS = (
    "cohort",
    "period",
    "cohort_size",
    "eligible",
    "retained",
    "rate",
    "excluded",
    "incomplete",
)
CURVE_COLUMNS = ("period", "eligible", "retained", "rate", "lower", "upper")


@dataclass(frozen=True)
class RetentionSpec:
    """What a retention view asks for (definitions in the module docstring).

    Args:
        period: cohort grouping and period length: ``day``, ``week`` or ``month``.
        mode: ``classic``, ``unbounded`` or ``consecutive``.
        max_periods: show periods 0..max_periods; None = 365 days / 52 weeks / 24 months,
            lowered to the last period complete for any user.
        start: how each user's start is found.
        return_events: event names that count as a return; empty = any event.
        calendar: periods are calendar periods after the cohort's instead of multiples of P
            from each user's own start.
    """

    period: Period = "week"
    mode: Mode = "classic"
    max_periods: int | None = None
    start: StartSpec = field(default_factory=StartSpec)
    return_events: tuple[str, ...] = ()
    calendar: bool = False

    def __post_init__(self) -> None:
        if self.period not in PERIODS:
            raise TenureError(f"unknown retention period '{self.period}'", f"use one of {', '.join(PERIODS)}")
        if self.mode not in MODES:
            raise TenureError(f"unknown retention mode '{self.mode}'", f"use one of {', '.join(MODES)}")
        if self.max_periods is not None and (
            isinstance(self.max_periods, bool) or not isinstance(self.max_periods, int | np.integer)
        ):
            raise TenureError(f"max_periods must be a whole number, not '{self.max_periods}'", "use e.g. 12")
        if self.max_periods is not None and self.max_periods < 0:
            raise TenureError(f"max_periods is negative ({self.max_periods})", "use 0 or more")
        if not isinstance(self.start, StartSpec):
            raise TenureError("start must be a StartSpec", "build it with StartSpec(kind, event_name)")
        if isinstance(self.return_events, str):
            raise TenureError(
                f"return_events must be a tuple of names, not the string '{self.return_events}'",
                "write return_events=('purchase',)",
            )
        object.__setattr__(self, "return_events", tuple(str(name) for name in self.return_events))
        object.__setattr__(self, "calendar", bool(self.calendar))

    @property
    def period_cap(self) -> int:
        """The largest period index asked for: ``max_periods`` or the period's default cap."""
        return int(self.max_periods) if self.max_periods is not None else DEFAULT_MAX_PERIODS[self.period]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data; ``start`` is written like the CLI flag (``event:NAME``)."""
        return {
            "period": self.period,
            "mode": self.mode,
            "max_periods": None if self.max_periods is None else int(self.max_periods),
            "start": self.start.to_text(),
            "return_events": list(self.return_events),
            "calendar": self.calendar,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RetentionSpec:
        """Inverse of ``to_dict``; missing keys take their defaults, unknown keys are ignored."""
        max_periods = data.get("max_periods")
        return cls(
            period=data.get("period", "week"),
            mode=data.get("mode", "classic"),
            max_periods=None if max_periods is None else _parse_int(max_periods, "max_periods"),
            start=StartSpec.from_text(str(data.get("start", "first_event"))),
            return_events=tuple(data.get("return_events", ())),
            calendar=bool(data.get("calendar", False)),
        )

    def to_query_params(self) -> dict[str, str]:
        """Flat string parameters for a shareable URL (see ``from_query_params``).

        Return events are joined with commas, so names containing commas do not round-trip.
        """
        params = {"period": self.period, "mode": self.mode, "start": self.start.to_text()}
        if self.max_periods is not None:
            params["max_periods"] = str(int(self.max_periods))
        if self.return_events:
            params["return"] = ",".join(self.return_events)
        if self.calendar:
            params["calendar"] = "1"
        return params

    @classmethod
    def from_query_params(cls, params: dict[str, str]) -> RetentionSpec:
        """Inverse of ``to_query_params``; unknown keys are ignored, bad values raise."""
        max_periods = params.get("max_periods")
        return cls(
            period=params.get("period", "week"),  # type: ignore[arg-type]
            mode=params.get("mode", "classic"),  # type: ignore[arg-type]
            max_periods=_parse_int(max_periods, "max_periods") if max_periods else None,
            start=StartSpec.from_text(params.get("start", "first_event")),
            return_events=tuple(name for name in params.get("return", "").split(",") if name),
            calendar=params.get("calendar", "0").lower() in ("1", "true", "yes"),
        )


def _parse_int(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError) as error:
        raise TenureError(f"{name} must be a whole number, not '{value}'", "use e.g. 12") from error


def _calendar_index_sql(time_sql: str, period: str) -> str:
    """The integer index of the calendar period containing ``time_sql`` (consecutive periods differ by 1)."""
    if period == "day":
        return f"(CAST({time_sql} AS DATE) - DATE '1970-01-01')"
    if period == "week":
        # 1970-01-05 is a Monday: ISO week starts are whole multiples of 7 days from it.
        return f"((CAST(date_trunc('week', {time_sql}) AS DATE) - DATE '1970-01-05') // 7)"
    return f"(year({time_sql}) * 12 + month({time_sql}) - 1)"


# Bits of one period mask word: periods k = 62*w + b are bit b of word w (a BIGINT has 63
# value bits; 62 keeps ``mask + 1`` from overflowing in the streak computation). 64-bit words
# aggregate faster than 128-bit ones, and one word covers the default 52 weeks and 24 months.
_WORD_BITS = 62
_WORD_TYPE = "BIGINT"


def _mask_column(word: int) -> str:
    return f"mask_{word}"


def _period_bit_sql(alias: str, period: int) -> str:
    """SQL for 1 if ``period`` is set in the masks of row ``alias``, else 0 (NULL masks read as 0)."""
    word, bit = divmod(period, _WORD_BITS)
    return f"coalesce(CAST(({alias}.{_mask_column(word)} >> {bit}) & 1 AS INTEGER), 0)"


@dataclass(frozen=True)
class _Query:
    """SQL (the shared CTEs of ``_user_pieces_sql`` or a whole query built on them), its
    parameters, the column that joins ``cohort_users`` to ``user_returns``, and the DuckDB
    settings the query runs with (``Store.query_df(..., settings=)``)."""

    sql: str
    params: list[Any]
    user_column: str = "user_key"
    settings: dict[str, int] = field(default_factory=dict)


def _user_pieces_sql(
    store: Store, spec: RetentionSpec, filters: Filters, segment_by: str | None = None
) -> _Query:
    """The CTEs shared by the table, the curve and the drill-down (a ``WITH`` clause's body).

    Defines:
      - ``cohort_users(user_key, [user_no,] start_time, cohort, start_index, complete_periods,
        last_period [, segment])``: one row per user of the population; ``complete_periods`` =
        how many of the user's periods 0, 1, ... are complete by the data end (period k is
        complete iff ``k < complete_periods``); ``last_period`` = the last complete period, at
        most the cap.
      - ``user_returns(USER, ...)``, one row per user with at least one return after the start
        period, where USER is ``_Query.user_column``: for ``classic``, bit masks ``mask_0,
        mask_1, ...`` of the complete periods 1..cap with a return (period k is bit ``k % 62``
        of ``mask_{k // 62}``); for ``consecutive``, those masks and ``reached`` = the length of
        the run of periods 1, 2, ... with a return; for ``unbounded``, ``reached`` = the period of
        the last return, at most the user's last complete period and the cap.

    With the first-event start and a ready user index (core/user_index.py), starts come from
    the index, and the period masks are grouped by the users' dense numbers (``user_no``, the
    ``user_column`` then) with a perfect hash table: the join's build side reads the index
    directly, so that DuckDB knows the numbers' range from its statistics.
    """
    events = keyed_events_sql(store)
    settings: dict[str, int] = {}
    indexed = False
    if spec.start.kind == "first_event" and events == "events":
        with store.cursor() as cursor:
            if user_index_ready(cursor):
                indexed = True
                bits = perfect_hash_bits(cursor)
                if bits is not None:
                    settings["perfect_ht_threshold"] = bits
    population, params = population_sql(
        store, spec.start, filters, by_key=True, events=events, indexed=indexed
    )
    cap = spec.period_cap
    if spec.calendar:
        start_index = _calendar_index_sql("p.start_time", spec.period)
        complete_periods = f"greatest({_calendar_index_sql('b.data_end', spec.period)} - {start_index}, 0)"
        event_period = f"({_calendar_index_sql('e.event_time', spec.period)} - u.start_index)"
    else:
        period_us = PERIOD_DAYS[spec.period] * _MICROSECONDS_PER_DAY
        start_index = "epoch_us(p.start_time)"
        complete_periods = (
            f"CASE WHEN b.data_end >= p.start_time "
            f"THEN (epoch_us(b.data_end) - epoch_us(p.start_time)) // {period_us} ELSE 0 END"
        )
        event_period = f"((epoch_us(e.event_time) - u.start_index) // {period_us})"

    segment_select = segment_join = ""
    group_params: list[Any] = []
    if segment_by is not None:
        breakdown = parse_breakdown(segment_by)
        assert breakdown is not None
        groups, group_params = group_sql(
            store, breakdown, "SELECT user_key, start_time FROM population", by_key=True
        )
        segment_select = f""", coalesce(seg."group", '{MISSING_SEGMENT}') AS segment"""
        segment_join = f" LEFT JOIN ({groups}) seg ON seg.user_key = p.user_key"

    event_filter = ""
    if spec.return_events:
        event_filter = f" AND e.event_name IN ({', '.join('?' for _ in spec.return_events)})"

    user_no = ", p.user_no" if indexed else ""
    # Not materialised when indexed: a scan of the index keeps its statistics (see `users`).
    materialized = " NOT MATERIALIZED" if indexed else ""
    sql = f"""
population AS{materialized} ({population}),
bounds AS (SELECT max(event_time) AS data_end FROM events),
cohort_users AS MATERIALIZED (
    SELECT p.user_key{user_no}, p.start_time,
        CAST(date_trunc('{spec.period}', p.start_time) AS DATE) AS cohort,
        {start_index} AS start_index,
        {complete_periods} AS complete_periods,
        least({complete_periods} - 1, {cap}) AS last_period{segment_select}
    FROM population p CROSS JOIN bounds b{segment_join}
),"""
    params = [*params, *group_params, *spec.return_events]
    if spec.mode == "unbounded":
        # The last return decides: retained in every period up to the one holding it.
        sql += f"""
last_returns AS (
    SELECT e.user_key, max(e.event_time) AS event_time
    FROM {events} e
    WHERE TRUE{event_filter}
    GROUP BY e.user_key
),
user_returns AS (
    SELECT u.user_key, least({event_period}, u.last_period) AS reached
    FROM cohort_users u JOIN last_returns e ON e.user_key = u.user_key
    WHERE e.event_time >= u.start_time
)"""
        return _Query(sql, params, "user_key", settings)

    words = cap // _WORD_BITS + 1
    if words == 1:
        masks = f"bit_or(CAST(1 AS {_WORD_TYPE}) << CAST(period AS {_WORD_TYPE})) AS {_mask_column(0)}"
    else:
        masks = ", ".join(
            f"bit_or(CASE WHEN period // {_WORD_BITS} = {word} THEN CAST(1 AS {_WORD_TYPE}) "
            f"<< CAST(period % {_WORD_BITS} AS {_WORD_TYPE}) END) AS {_mask_column(word)}"
            for word in range(words)
        )
    user = "user_no" if indexed else "user_key"
    # The index's users are joined from the population itself, not from the materialised
    # cohort_users, whose rows carry no statistics: only then is the aggregate a perfect hash.
    users = (
        f"(SELECT p.user_key, p.user_no, {start_index} AS start_index, "
        f"least({complete_periods} - 1, {cap}) AS last_period FROM population p CROSS JOIN bounds b)"
        if indexed
        else "cohort_users"
    )
    # Period k >= 1 lies after the start, so no return before the start can pass this filter.
    sql += f"""
returns AS (
    SELECT u.{user}, {event_period} AS period
    FROM {events} e JOIN {users} u ON e.user_key = u.user_key
    WHERE {event_period} BETWEEN 1 AND u.last_period{event_filter}
),
period_masks AS (SELECT {user}, {masks} FROM returns GROUP BY {user}),"""
    if spec.mode == "classic":
        sql += "\nuser_returns AS (SELECT * FROM period_masks)"
        return _Query(sql, params, user, settings)
    # Run of set bits from period 1: with bit 0 forced on, the trailing ones of a word number
    # bit_count(m XOR (m + 1)) - 1; a full word (62 ones) continues into the next one.
    run = "0"
    for word in reversed(range(words)):
        mask = f"(coalesce({_mask_column(word)}, 0){' | 1' if word == 0 else ''})"
        ones = f"(bit_count(xor({mask}, {mask} + 1)) - 1)"
        run = f"(CASE WHEN {ones} = {_WORD_BITS} THEN {_WORD_BITS} + {run} ELSE {ones} END)"
    sql += f"\nuser_returns AS (SELECT *, {run} - 1 AS reached FROM period_masks)"
    return _Query(sql, params, user, settings)


def _retained_sql(spec: RetentionSpec, period: int, alias: str = "r") -> str:
    """SQL for 1 if the user of ``user_returns`` row ``alias`` is retained in ``period`` (k >= 1)."""
    if spec.mode == "classic":
        return _period_bit_sql(alias, period)
    return f"CAST(coalesce({alias}.reached, 0) >= {period} AS INTEGER)"


def _cells_sql(store: Store, spec: RetentionSpec, filters: Filters, segment_by: str | None = None) -> _Query:
    """The table's query; with ``segment_by`` it has a leading ``segment`` column."""
    shared = _user_pieces_sql(store, spec, filters, segment_by)
    pieces, user = shared.sql, shared.user_column
    keys = ["segment", "cohort"] if segment_by is not None else ["cohort"]
    cap = spec.period_cap

    def qualified(alias: str) -> str:
        return ", ".join(f"{alias}.{key}" for key in keys)

    def joined(left: str, right: str) -> str:
        return " AND ".join(f"{left}.{key} = {right}.{key}" for key in keys)

    if spec.max_periods is None:
        last_period = (
            f"SELECT least({cap}, greatest(coalesce(max(complete_periods), 0) - 1, 0)) "
            "AS last_period FROM cohort_users"
        )
    else:
        last_period = f"SELECT {cap} AS last_period"
    if spec.mode == "classic":
        # One sum per period over each cohort's users: the bits of their period masks.
        if cap >= 1:
            sums = ", ".join(f"sum({_period_bit_sql('r', k)})" for k in range(1, cap + 1))
            retained_cells = (
                f"SELECT {', '.join(keys)}, unnest(range(1, {cap + 1})) AS period, unnest(counts) AS retained "
                f"FROM (SELECT {qualified('u')}, [{sums}] AS counts "
                f"FROM cohort_users u JOIN user_returns r ON r.{user} = u.{user} GROUP BY ALL)"
            )
        else:
            retained_cells = (
                f"SELECT {qualified('u')}, 0 AS period, 0 AS retained FROM cohort_users u WHERE FALSE"
            )
        retained_value = "coalesce(rc.retained, 0)"
    else:
        # `reached` is each user's last retained period: users retained in k are those whose
        # last retained period is k or more, a running sum from the highest period down.
        retained_cells = (
            f"SELECT {qualified('u')}, r.reached AS period, count(*) AS retained "
            f"FROM cohort_users u JOIN user_returns r ON r.{user} = u.{user} "
            f"WHERE r.reached >= 1 GROUP BY ALL"
        )
        retained_value = (
            f"coalesce(sum(rc.retained) OVER (PARTITION BY {qualified('g')} "
            "ORDER BY g.period DESC ROWS UNBOUNDED PRECEDING), 0)"
        )
    sql = f"""
WITH {pieces},
period_cap AS ({last_period}),
cohorts AS (SELECT {", ".join(keys)}, count(*) AS cohort_size FROM cohort_users GROUP BY ALL),
grid AS (
    SELECT {qualified("c")}, c.cohort_size, unnest(range(0, period_cap.last_period + 1)) AS period
    FROM cohorts c CROSS JOIN period_cap
),
complete_histogram AS (
    SELECT {", ".join(keys)}, complete_periods AS period, count(*) AS users
    FROM cohort_users GROUP BY ALL
),
retained_cells AS ({retained_cells}),
cells AS (
    SELECT {qualified("g")}, g.period, g.cohort_size,
        g.cohort_size - sum(coalesce(h.users, 0))
            OVER (PARTITION BY {qualified("g")} ORDER BY g.period ROWS UNBOUNDED PRECEDING) AS eligible,
        {retained_value} AS retained_in_period
    FROM grid g
    LEFT JOIN complete_histogram h ON {joined("h", "g")} AND h.period = g.period
    LEFT JOIN retained_cells rc ON {joined("rc", "g")} AND rc.period = g.period
)
SELECT {", ".join(keys)}, period, cohort_size, eligible,
    CASE WHEN period = 0 THEN eligible ELSE retained_in_period END AS retained
FROM cells
ORDER BY {", ".join(keys)}, period"""
    return _Query(sql, shared.params, user, shared.settings)


def retention_sql(store: Store, spec: RetentionSpec, filters: Filters) -> tuple[str, list[Any]]:
    """The cohort table's DuckDB query and its bound parameters.

    Returns columns ``cohort, period, cohort_size, eligible, retained`` (integers; the rate and
    flags are derived in ``retention_table``), one row per cohort and period 0..cap.
    """
    query = _cells_sql(store, spec, filters)
    return query.sql, query.params


def _finish_table(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for column in ("period", "cohort_size", "eligible", "retained"):
        frame[column] = frame[column].astype("int64")
    frame["cohort"] = pd.to_datetime(frame["cohort"]).dt.date.astype(object)
    eligible = frame["eligible"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        frame["rate"] = np.where(eligible > 0, frame["retained"].to_numpy() / eligible, np.nan)
    frame["excluded"] = frame["cohort_size"] - frame["eligible"]
    frame["incomplete"] = eligible == 0
    return frame


def retention_table(store: Store, spec: RetentionSpec, filters: Filters) -> pd.DataFrame:
    """The cohort retention table (definitions in the module docstring).

    Returns:
        One row per cohort and period 0..cap (incomplete cells included), sorted by cohort then
        period, with columns ``cohort`` (date: first day of the cohort's calendar period),
        ``period`` (k), ``cohort_size``, ``eligible``, ``retained``, ``rate`` (NaN when
        incomplete), ``excluded`` (``cohort_size - eligible``) and ``incomplete``
        (``eligible == 0``).
    """
    query = _cells_sql(store, spec, filters)
    frame = store.query_df(query.sql, query.params, settings=query.settings)
    if frame.empty:
        return pd.DataFrame({column: pd.Series(dtype=_TABLE_DTYPES[column]) for column in TABLE_COLUMNS})
    return _finish_table(frame)[list(TABLE_COLUMNS)].reset_index(drop=True)


_TABLE_DTYPES = {
    "cohort": object,
    "period": "int64",
    "cohort_size": "int64",
    "eligible": "int64",
    "retained": "int64",
    "rate": "float64",
    "excluded": "int64",
    "incomplete": bool,
}


def retention_curve(
    store: Store,
    spec: RetentionSpec,
    filters: Filters,
    by: str | None = None,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """The overall retention curve, pooled over cohorts, optionally one curve per segment.

    For each period k: ``eligible`` = users whose period k is complete, ``retained`` = those of
    them retained in k (both summed over all cohorts), ``rate = retained / eligible`` and the
    Wilson score interval ``lower``, ``upper`` at ``confidence`` (NaN where ``eligible == 0``).

    Args:
        by: a breakdown (core/breakdown.py): a column of ``users`` (values cast to text; users
            without a value form the segment "(none)"), ``experiment:NAME`` (the user's variant;
            "(none)" when never assigned, "(several)" when assigned more than one) or
            ``cohort:PERIOD``; None for one overall curve.

    Returns:
        Columns ``[segment,] period, eligible, retained, rate, lower, upper``, sorted by
        segment then period.
    """
    if by is not None and not str(by).strip():
        by = None
    cells = _cells_sql(store, spec, filters, segment_by=by)
    keys = "segment, period" if by is not None else "period"
    sql = (
        f"SELECT {keys}, sum(eligible) AS eligible, sum(retained) AS retained "
        f"FROM ({cells.sql}) GROUP BY {keys} ORDER BY {keys}"
    )
    frame = store.query_df(sql, cells.params, settings=cells.settings)
    columns = (["segment"] if by is not None else []) + list(CURVE_COLUMNS)
    if frame.empty:
        return pd.DataFrame(
            {column: pd.Series(dtype=object if column == "segment" else float) for column in columns}
        )
    for column in ("period", "eligible", "retained"):
        frame[column] = frame[column].astype("int64")
    eligible = frame["eligible"].to_numpy()
    retained = frame["retained"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        frame["rate"] = np.where(eligible > 0, retained / eligible, np.nan)
    interval = wilson_interval(retained, eligible, confidence)
    frame["lower"] = interval.lower
    frame["upper"] = interval.upper
    return frame[columns].reset_index(drop=True)


def retention_users(
    store: Store,
    spec: RetentionSpec,
    filters: Filters,
    cohort: dt.date | str | pd.Timestamp,
    period: int,
    retained: bool | None = None,
) -> pd.DataFrame:
    """The users behind one cell of the table: the drill-down, from the same SQL pieces.

    Args:
        cohort: the cell's cohort (its first day).
        period: the cell's period k, 0..cap.
        retained: True = the cell's retained users, False = its eligible users who were not
            retained, None = all its eligible users. Users whose period k is not complete are
            never listed (they are not in the cell).

    Returns:
        Columns ``user_id, start_time``, sorted by user_id; as many rows as the cell's
        ``retained``, ``eligible - retained`` or ``eligible``.
    """
    try:
        cohort_date = pd.Timestamp(cohort).date()
    except (TypeError, ValueError) as error:
        raise TenureError(f"cohort '{cohort}' is not a date", "use YYYY-MM-DD") from error
    if (
        isinstance(period, bool)
        or not isinstance(period, int | np.integer)
        or not 0 <= period <= spec.period_cap
    ):
        raise TenureError(
            f"period {period} is out of range", f"use a whole number from 0 to {spec.period_cap}"
        )
    shared = _user_pieces_sql(store, spec, filters)
    pieces, params, user = shared.sql, shared.params, shared.user_column
    condition = "TRUE"
    if retained is not None:
        is_retained = "1" if period == 0 else _retained_sql(spec, int(period))
        condition = f"{is_retained} = {1 if retained else 0}"
    sql = f"""
WITH {pieces},
cell_users AS (
    SELECT u.user_key, u.start_time
    FROM cohort_users u LEFT JOIN user_returns r ON r.{user} = u.{user}
    WHERE u.cohort = ? AND u.complete_periods > ? AND {condition}
)
SELECT ids.user_id, c.start_time
FROM cell_users c JOIN (
    SELECT DISTINCT user_key, user_id FROM {keyed_events_sql(store)}
    WHERE user_key IN (SELECT user_key FROM cell_users)
) ids ON ids.user_key = c.user_key
ORDER BY ids.user_id"""
    return store.query_df(sql, [*params, cohort_date, int(period)], settings=shared.settings)
