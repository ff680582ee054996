"""Funnels: how many users go through an ordered list of events within a conversion window, and
the built-in lifecycle funnel (acquired -> activated -> engaged -> converted -> repeat -> loyal).

Definitions (docs/METRICS.md, "Funnels"):

- **Steps**: 2 to 10 distinct event names ``s_1 .. s_k``. A name may appear only once (a
  repeated purchase is the lifecycle funnel's ``repeat`` stage).
- **Tie order**: each user's events are ordered by time, and events at the same instant in the
  funnel's step order (``s_1`` before ``s_2`` ...; events of other names after the steps). So
  events at the same instant can satisfy consecutive steps in the funnel's order
  (``t_1 <= t_2 <= ...``), never against it, and one event satisfies at most one step.
- **Try**: a step-1 event (the anchor, time ``t_1``) followed by events of steps 2, 3, ... in the
  tie order. It may use a step event only if that event's time is at most ``t_1 + window`` and
  strictly before the first exclusion event at or after ``t_1`` (when an exclusion is set).
- **Order** ``ordered``: other events may come between consecutive steps; ``strict``: each step
  must be the user's very next event (of any name, in the tie order) after the previous step;
  ``any``: the steps may happen in any order: a try is any event of a step name at ``t_a`` (the
  first event of the try), and step j is reached when every name ``s_1 .. s_j`` has an event in
  ``[t_a, t_a + window]`` before the first exclusion at or after ``t_a`` (the anchor itself counts).
- **Level** of a user: the longest try over all the user's tries (ClickHouse ``windowFunnel``'s
  rule); a user **reached** step j when the level is at least j. Exclusion ends a try at the
  last step before it; a later try that starts at or after the exclusion can still go deeper.
- **Population**: the users the global filters keep (``core.population``); each selected user's
  whole history counts. Users without a step-1 event (``any``: without any step event) are not
  in the funnel.
- **Conversion** from the start ``users_j / users_1`` and from the previous step
  ``users_j / users_{j-1}``, each with a 95% Wilson score interval; step 1 is 1 by definition.
- **Time between steps** j-1 -> j (ordered and strict): measured on the user's first event
  completing step j in a try (the earliest, in the tie order): the time since the step j-1 event
  of that try, which is the latest step j-1 event before it that completes step j-1 in a try with
  the latest possible anchor. Not defined for ``any``.
- **Week**: the ISO week (Monday, UTC) of the user's first step-1 event (``any``: first step
  event) at f; conversion over time groups users by it and counts the level reached with step
  events at or before f + window only (``window_level``), so every week had the same time to
  convert. A week is complete when its end plus the window is not after the data's end.

How it runs: one DuckDB query walks the funnel (``walk_funnel``) into one row per entered user
(level, first step-1 time, step gaps, breakdown group); every view is a small aggregate over
that walk (``FunnelWalk``), so a page showing them all walks the events once. Events are kept
as ``(user_key, t, code)`` with ``t`` in epoch microseconds and ``code`` the step index. For ``ordered`` mode the longest try is found
in one forward pass per step, an ASOF join: a step-j event continues the latest step j-1 event
before it that ends a valid try, whose anchor is the latest possible and so has the most room
left in the window (the state ClickHouse's ``windowFunnel`` keeps). ``strict`` joins each step
to the event right before it (a row number per user); ``any`` uses one window pass giving, for
every event, the next time of each step name at or after it. Users are grouped by the integer
``user_key``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from dataclasses import dataclass
from typing import Any, Literal

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from core.breakdown import Breakdown, group_sql, parse_breakdown
from core.durations import format_duration, parse_duration
from core.errors import TenureError
from core.population import Filters, StartSpec, keyed_events_sql, population_sql
from core.stats import wilson_interval
from core.store import Store

Order = Literal["strict", "ordered", "any"]
ORDERS: tuple[str, ...] = ("strict", "ordered", "any")
MIN_STEPS = 2
MAX_STEPS = 10
DEFAULT_WINDOW = dt.timedelta(days=7)
OUTCOMES: tuple[str, ...] = ("reached", "dropped")

TABLE_COLUMNS = (
    "step",
    "event_name",
    "users",
    "conversion_from_start",
    "conversion_from_previous",
    "lower_from_start",
    "upper_from_start",
    "lower_from_previous",
    "upper_from_previous",
)
STEP_TIME_COLUMNS = ("step", "event_name", "users", "median_seconds", "q1_seconds", "q3_seconds")
HISTOGRAM_COLUMNS = ("step", "event_name", "bin", "lower_seconds", "upper_seconds", "users")
OVER_TIME_COLUMNS = (
    "week",
    "step",
    "event_name",
    "users",
    "conversion_from_start",
    "lower_from_start",
    "upper_from_start",
    "complete",
)
USER_COLUMNS = ("user_id", "level", "first_step_time")

# Bins of the time-between-steps histogram: lower bounds in seconds, labels.
TIME_BINS: tuple[tuple[int, str], ...] = (
    (0, "< 1 min"),
    (60, "1-10 min"),
    (600, "10-60 min"),
    (3_600, "1-6 h"),
    (21_600, "6-24 h"),
    (86_400, "1-3 d"),
    (259_200, "3-7 d"),
    (604_800, "7-14 d"),
    (1_209_600, "14-30 d"),
    (2_592_000, ">= 30 d"),
)

_MICROSECONDS = 1_000_000
_MICROSECONDS_PER_DAY = 86_400 * _MICROSECONDS
# Positions in the tie order: t * 16 + code (codes 1..10 for steps, then 14 and 15; see _levels_sql).
_POSITION_FACTOR = 16
_OTHER_CODE = 15
_EXCLUSION_CODE = 0
_STRICT_EXCLUSION_CODE = 14
_NO_DEADLINE = "9223372036854775807"


@dataclass(frozen=True)
class FunnelSpec:
    """What a funnel asks for (definitions in the module docstring).

    Args:
        steps: 2..10 distinct event names, in funnel order.
        window: the conversion window, measured from each try's first step (inclusive).
        order: ``ordered``, ``strict`` or ``any``.
        exclusion: an event name that ends a try (steps at or after it no longer count), or None.
        breakdown: ``core.breakdown`` text (``country``, ``cohort:week``, ``experiment:NAME``), or
            None for one funnel.
    """

    steps: tuple[str, ...]
    window: dt.timedelta = DEFAULT_WINDOW
    order: Order = "ordered"
    exclusion: str | None = None
    breakdown: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.steps, str):
            raise TenureError(
                f"steps must be a list of event names, not the string '{self.steps}'",
                "write steps=('view', 'purchase')",
            )
        steps = tuple(str(name).strip() for name in self.steps)
        object.__setattr__(self, "steps", steps)
        if len(steps) < MIN_STEPS or len(steps) > MAX_STEPS:
            raise TenureError(
                f"a funnel needs {MIN_STEPS} to {MAX_STEPS} steps, got {len(steps)}",
                "choose between 2 and 10 event names",
            )
        if any(not name for name in steps):
            raise TenureError("a funnel step has an empty event name", "name every step")
        repeated = sorted({name for name in steps if steps.count(name) > 1})
        if repeated:
            raise TenureError(
                f"event name(s) {', '.join(repeated)} appear more than once in the funnel",
                "use each event name once (a second purchase is the lifecycle funnel's 'repeat' stage)",
            )
        if not isinstance(self.window, dt.timedelta) or self.window <= dt.timedelta(0):
            raise TenureError(f"the funnel window must be a positive length of time, not '{self.window}'")
        if self.order not in ORDERS:
            raise TenureError(f"unknown funnel order '{self.order}'", f"use one of {', '.join(ORDERS)}")
        exclusion = (self.exclusion or "").strip() or None
        if exclusion is not None and exclusion in steps:
            raise TenureError(
                f"the exclusion event '{exclusion}' is also a step", "exclude an event that is not a step"
            )
        object.__setattr__(self, "exclusion", exclusion)
        breakdown = parse_breakdown(self.breakdown)
        object.__setattr__(self, "breakdown", breakdown.to_text() if breakdown else None)

    @property
    def parsed_breakdown(self) -> Breakdown | None:
        return parse_breakdown(self.breakdown)

    @property
    def window_us(self) -> int:
        return int(self.window / dt.timedelta(microseconds=1))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data; the window is written like the CLI flag (``7d``)."""
        return {
            "steps": list(self.steps),
            "window": format_duration(self.window),
            "order": self.order,
            "exclusion": self.exclusion,
            "breakdown": self.breakdown,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FunnelSpec:
        """Inverse of ``to_dict``; missing keys take their defaults, unknown keys are ignored."""
        return cls(
            steps=tuple(data.get("steps", ())),
            window=parse_duration(str(data.get("window", "7d")), "window"),
            order=data.get("order", "ordered"),
            exclusion=data.get("exclusion"),
            breakdown=data.get("breakdown"),
        )

    def to_query_params(self) -> dict[str, str]:
        """Flat string parameters for a shareable URL; steps are joined with commas."""
        params = {"steps": ",".join(self.steps), "window": format_duration(self.window), "order": self.order}
        if self.exclusion:
            params["exclude"] = self.exclusion
        if self.breakdown:
            params["by"] = self.breakdown
        return params

    @classmethod
    def from_query_params(cls, params: dict[str, str]) -> FunnelSpec:
        """Inverse of ``to_query_params``; unknown keys are ignored, bad values raise."""
        return cls(
            steps=tuple(name for name in params.get("steps", "").split(",") if name.strip()),
            window=parse_duration(params.get("window", "7d"), "window"),
            order=params.get("order", "ordered"),  # type: ignore[arg-type]
            exclusion=params.get("exclude") or None,
            breakdown=params.get("by") or None,
        )


def _check_names(store: Store, names: list[str]) -> None:
    """Event names the store has never seen are a typo more often than a real zero: say so."""
    known = set(store.query_df("SELECT DISTINCT event_name FROM events")["event_name"].astype(str))
    unknown = [name for name in names if name not in known]
    if unknown:
        raise TenureError(
            f"no event named {', '.join(repr(name) for name in unknown)} in this store",
            f"use one of: {', '.join(sorted(known)[:30]) or 'none (load events first)'}",
        )


def _population_pieces(
    store: Store, filters: Filters, breakdown: Breakdown | None, events: str
) -> tuple[str, list[Any], str, list[Any]]:
    """The ``population`` and ``groups`` CTE bodies with their parameters.

    ``population`` is every user with an event when the filters are empty (no join needed).
    """
    population, params = population_sql(store, StartSpec(), filters, by_key=True, events=events)
    if breakdown is None:
        return population, params, 'SELECT NULL::UBIGINT AS user_key, NULL AS "group" WHERE FALSE', []
    groups, group_params = group_sql(store, breakdown, "SELECT * FROM population", by_key=True)
    return population, params, groups, group_params


def _levels_sql(store: Store, spec: FunnelSpec, filters: Filters) -> tuple[str, list[Any]]:
    """The CTEs every funnel result is built from (a ``WITH`` clause's body).

    Defines ``funnel_users(user_key, level, first_time, gap_2 .. gap_k)``: one row per user of
    the population who entered the funnel; ``level`` 1..k, ``first_time`` the first step-1 (``any``:
    first step) event as epoch microseconds, ``gap_j`` the microseconds from step j-1 to step j
    (module docstring; NULL when step j is not reached, and for ``any``), and
    ``population(user_key, start_time)``, ``groups(user_key, "group")``.
    """
    _check_names(store, [*spec.steps, *([spec.exclusion] if spec.exclusion else [])])
    events = keyed_events_sql(store)
    k = len(spec.steps)
    population, params, groups, group_params = _population_pieces(
        store, filters, spec.parsed_breakdown, events
    )
    needs_population = not filters.is_empty or spec.breakdown is not None
    population_filter = ""
    if not filters.is_empty:
        population_filter = " AND e.user_key IN (SELECT user_key FROM population)"
    # Codes: 1..k the steps; the exclusion 0 (ordered, any: never a step) or 14 (strict: after the
    # steps at the same instant); 15 every other event (strict only).
    exclusion_code = _STRICT_EXCLUSION_CODE if spec.order == "strict" else _EXCLUSION_CODE
    code = (
        f"coalesce(list_position(?::VARCHAR[], e.event_name), "
        f"CASE WHEN e.event_name = ? THEN {exclusion_code} ELSE {_OTHER_CODE} END)"
    )
    name_params: list[Any] = [list(spec.steps), spec.exclusion]
    name_filter = ""
    if spec.order != "strict":
        name_filter = " AND e.event_name IN (SELECT unnest(?::VARCHAR[]))"
        name_params.append([*spec.steps, *([spec.exclusion] if spec.exclusion else [])])
    window = spec.window_us
    sql = f"""
population AS {"MATERIALIZED " if needs_population else ""}({population}),
groups AS ({groups}),
funnel_events AS MATERIALIZED (
    SELECT e.user_key, epoch_us(e.event_time) AS t, {code}::UTINYINT AS code
    FROM {events} e
    WHERE TRUE{name_filter}{population_filter}
),"""
    params = [*params, *group_params, *name_params]
    if spec.exclusion is not None:
        sql += f"\nexclusions AS (SELECT user_key, t FROM funnel_events WHERE code = {exclusion_code}),"
    if spec.order == "any":
        sql += _any_order_sql(spec)
        return sql, params

    def deadline(anchor: str) -> str:
        if spec.exclusion is None:
            return f"{anchor} + {window}"
        return f"least({anchor} + {window}, coalesce(x.t - 1, {_NO_DEADLINE}))"

    exclusion_join = ""
    if spec.exclusion is not None:
        exclusion_join = " ASOF LEFT JOIN exclusions x ON x.user_key = a.user_key AND x.t >= a.t"
    if spec.order == "ordered":
        sql += f"""
chain_1 AS MATERIALIZED (
    SELECT a.user_key, a.t * {_POSITION_FACTOR} + 1 AS pos, a.t, {deadline("a.t")} AS deadline,
        NULL::BIGINT AS gap
    FROM funnel_events a{exclusion_join}
    WHERE a.code = 1
),"""
        for step in range(2, k + 1):
            sql += f"""
chain_{step} AS MATERIALIZED (
    SELECT e.user_key, e.pos, e.t, p.deadline, e.t - p.t AS gap
    FROM (SELECT user_key, t, t * {_POSITION_FACTOR} + {step} AS pos FROM funnel_events WHERE code = {step}) e
    ASOF JOIN chain_{step - 1} p ON p.user_key = e.user_key AND p.pos < e.pos
    WHERE e.t <= p.deadline
),"""
    else:
        sql += f"""
ranked_events AS MATERIALIZED (
    SELECT user_key, t, code, row_number() OVER (PARTITION BY user_key ORDER BY t, code) AS pos
    FROM funnel_events
),
chain_1 AS MATERIALIZED (
    SELECT a.user_key, a.pos, a.t, {deadline("a.t")} AS deadline, NULL::BIGINT AS gap
    FROM ranked_events a{exclusion_join}
    WHERE a.code = 1
),"""
        for step in range(2, k + 1):
            sql += f"""
chain_{step} AS MATERIALIZED (
    SELECT e.user_key, e.pos, e.t, p.deadline, e.t - p.t AS gap
    FROM ranked_events e JOIN chain_{step - 1} p ON p.user_key = e.user_key AND p.pos = e.pos - 1
    WHERE e.code = {step} AND e.t <= p.deadline
),"""
    levels = " UNION ALL ".join(
        f"SELECT user_key, {step} AS level, pos, t, gap FROM chain_{step}" for step in range(1, k + 1)
    )
    gaps = ", ".join(
        f"arg_min(gap, pos) FILTER (WHERE level = {step}) AS gap_{step}" for step in range(2, k + 1)
    )
    # window_level: the deepest step whose event is within the window of the user's first step-1
    # event (a chain row's t is its last step's time; the steps before it are earlier).
    sql += f"""
funnel_users AS MATERIALIZED (
    SELECT l.user_key, max(l.level) AS level, min(l.t) FILTER (WHERE l.level = 1) AS first_time,
        max(l.level) FILTER (WHERE l.t <= f.first_anchor + {window}) AS window_level, {gaps}
    FROM ({levels}) l
    JOIN (SELECT user_key, min(t) AS first_anchor FROM chain_1 GROUP BY user_key) f ON f.user_key = l.user_key
    GROUP BY l.user_key
)"""
    return sql, params


def _any_order_sql(spec: FunnelSpec) -> str:
    """``funnel_users`` for ``any`` order: one window pass gives each event the next time of every
    step name at or after its instant; each step event is then a try's first event."""
    k = len(spec.steps)
    window = spec.window_us
    frame = "OVER (PARTITION BY user_key ORDER BY t RANGE BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING)"
    nexts = ", ".join(
        f"min(CASE WHEN code = {step} THEN t END) {frame} AS next_{step}" for step in range(1, k + 1)
    )
    exclusion = ""
    deadline = f"t + {window}"
    if spec.exclusion is not None:
        exclusion = f", min(CASE WHEN code = {_EXCLUSION_CODE} THEN t END) {frame} AS next_exclusion"
        deadline = f"least(t + {window}, coalesce(next_exclusion - 1, {_NO_DEADLINE}))"
    # The window of the user's first step event bounds the tries counted in window_level.
    first_window_end = f"first_step + {window}"

    def level_by(last_allowed: str) -> str:
        def reached(step: int) -> str:
            return f"(code = {step} OR coalesce(next_{step} <= {last_allowed}, false))"

        cases = " ".join(f"WHEN NOT {reached(step)} THEN {step - 1}" for step in range(1, k + 1))
        return f"CASE {cases} ELSE {k} END"

    level = level_by(deadline)
    window_level = (
        f"CASE WHEN t <= {first_window_end} THEN {level_by(f'least({deadline}, {first_window_end})')} END"
    )
    gaps = ", ".join(f"NULL::BIGINT AS gap_{step}" for step in range(2, k + 1))
    first_step = "min(CASE WHEN code >= 1 THEN t END) OVER (PARTITION BY user_key) AS first_step"
    return f"""
next_steps AS (SELECT user_key, t, code, {nexts}{exclusion}, {first_step} FROM funnel_events),
try_levels AS (
    SELECT user_key, t, {level} AS level, {window_level} AS window_level FROM next_steps WHERE code >= 1
),
funnel_users AS MATERIALIZED (
    SELECT user_key, max(level) AS level, min(t) AS first_time, max(window_level) AS window_level, {gaps}
    FROM try_levels
    GROUP BY user_key
    HAVING max(level) >= 1
)"""


def _group_select(grouped: bool) -> tuple[str, str]:
    """(select list prefix, group-by prefix) to carry the walk's breakdown group into a query."""
    return ('u."group", ', '"group", ') if grouped else ("", "")


def _step_counts_sql(levels: str, steps: int, grouped: bool) -> str:
    """``[group,] step, users`` from a SELECT of ``([group,] level)`` per user: users with level >= step.

    Every step 1..``steps`` gets a row (zeros included) for every group that has a user.
    """
    if not grouped:
        return f"""
SELECT s.step, count(u.level) AS users
FROM (SELECT unnest(range(1, {steps + 1})) AS step) s
LEFT JOIN ({levels}) u ON u.level >= s.step
GROUP BY s.step ORDER BY s.step"""
    return f"""
SELECT gr."group", s.step, count(u.level) AS users
FROM (SELECT DISTINCT "group" FROM ({levels})) gr
CROSS JOIN (SELECT unnest(range(1, {steps + 1})) AS step) s
LEFT JOIN ({levels}) u ON u."group" = gr."group" AND u.level >= s.step
GROUP BY gr."group", s.step ORDER BY gr."group", s.step"""


def _conversion_columns(frame: pd.DataFrame, keys: list[str], confidence: float = 0.95) -> pd.DataFrame:
    """Adds conversion from the start and from the previous step, with Wilson intervals."""
    frame = frame.sort_values([*keys, "step"]).reset_index(drop=True)
    users = frame["users"].to_numpy(dtype=np.int64)
    if keys:
        grouped = frame.groupby(keys, sort=False)["users"]
        first = grouped.transform("first").to_numpy(dtype=np.int64)
        previous = grouped.shift(1).to_numpy(dtype=float)
    else:
        first = np.full(len(frame), users[0] if len(users) else 0)
        previous = np.concatenate([[np.nan], users[:-1].astype(float)])
    is_first = frame["step"].to_numpy() == 1
    previous = np.where(is_first, users, previous).astype(np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        frame["conversion_from_start"] = np.where(first > 0, users / first, np.nan)
        frame["conversion_from_previous"] = np.where(previous > 0, users / previous, np.nan)
    from_start = wilson_interval(users, first, confidence)
    from_previous = wilson_interval(users, previous, confidence)
    # Step 1 converts from itself with certainty: no interval around 1.
    for column, values in (
        ("lower_from_start", from_start.lower),
        ("upper_from_start", from_start.upper),
        ("lower_from_previous", from_previous.lower),
        ("upper_from_previous", from_previous.upper),
    ):
        frame[column] = np.where(is_first & (users > 0), 1.0, values)
    return frame


def _empty(columns: tuple[str, ...], keys: list[str]) -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series(dtype=object) for column in [*keys, *columns]})


@dataclass(frozen=True)
class FunnelWalk:
    """A funnel walked once: one row per user who entered it, which every view of it aggregates.

    Walking is the costly part (a pass over the events per step); the views (the table with and
    without the breakdown, times between steps, their histogram, conversion by week, the users
    behind a step) each read only these per-user rows. A page that shows them all walks once.

    ``users`` columns: ``user_key``; ``level`` 1..k; ``first_time``, the first step-1 event
    (``any``: first step event) in epoch microseconds; ``window_level``, the level counting only
    step events within the window of that first event; ``gap_2 .. gap_k``, the microseconds from
    step j-1 to step j (NULL when not reached, and for ``any``). ``groups`` (with a breakdown):
    ``user_key, group`` for the same users (every user of the population has one group). The
    walk does not depend on the breakdown, so another breakdown reads the groups again
    (``by_breakdown``), not the events. ``data_end_us``: the store's data end (epoch
    microseconds), which tells the weeks whose window has not run out.
    """

    spec: FunnelSpec
    users: pa.Table
    groups: pa.Table | None = None
    data_end_us: int | None = None

    @property
    def grouped(self) -> bool:
        return self.groups is not None

    def by_breakdown(self, store: Store, breakdown: str | None, filters: Filters) -> FunnelWalk:
        """This walk with each user's group under ``breakdown`` (None: no groups): one query of
        the users' groups, where walking again would read every step's events."""
        spec = dataclasses.replace(self.spec, breakdown=breakdown)
        if spec.breakdown is None:
            return dataclasses.replace(self, spec=spec, groups=None)
        population, params, groups, group_params = _population_pieces(
            store, filters, spec.parsed_breakdown, keyed_events_sql(store)
        )
        sql = (
            f"WITH population AS ({population}), groups AS ({groups}) "
            f'SELECT g.user_key, g."group" FROM groups g WHERE g.user_key IN (SELECT user_key FROM {_WALK_VIEW})'
        )
        with store.cursor() as cursor:
            cursor.register(_WALK_VIEW, self.users)
            group_table = cursor.sql(sql, params=[*params, *group_params]).to_arrow_table()
        return dataclasses.replace(self, spec=spec, groups=group_table)

    def _query(self, sql: str) -> pd.DataFrame:
        """``sql`` over the walk, seen as ``funnel_users`` (with its ``group`` column, NULL
        without groups), on a cursor of its own of the process's scratch database."""
        with _scratch_database().cursor() as connection:
            connection.register("walk_users", self.users)
            view = 'SELECT *, NULL::VARCHAR AS "group" FROM walk_users'
            if self.groups is not None:
                connection.register("walk_groups", self.groups)
                view = 'SELECT u.*, g."group" FROM walk_users u LEFT JOIN walk_groups g USING (user_key)'
            connection.execute(f"CREATE TEMP VIEW funnel_users AS {view}")
            return connection.execute(sql).df()

    def table(self, confidence: float = 0.95, *, by_group: bool = True) -> pd.DataFrame:
        """Users reaching each step, and conversion with Wilson intervals.

        Args:
            by_group: one funnel per breakdown group (when the spec has a breakdown); False
                gives the funnel of all entered users.

        Returns:
            One row per (group,) step 1..k with columns ``[group,] step, event_name, users,
            conversion_from_start, conversion_from_previous, lower_from_start, upper_from_start,
            lower_from_previous, upper_from_previous``. Rates are fractions 0..1; NaN where the
            denominator is 0. Without groups the frame always has k rows (zeros when no user
            entered the funnel); with them, a group appears when at least one of its users entered.
        """
        grouped = by_group and self.grouped
        group_column, _ = _group_select(grouped)
        levels = f"SELECT {group_column}u.level FROM funnel_users u"
        frame = self._query(_step_counts_sql(levels, len(self.spec.steps), grouped))
        keys = ["group"] if grouped else []
        frame["users"] = frame["users"].astype("int64")
        frame["step"] = frame["step"].astype("int64")
        frame["event_name"] = [self.spec.steps[step - 1] for step in frame["step"]]
        if frame.empty:
            return _empty(TABLE_COLUMNS, keys)
        return _conversion_columns(frame, keys, confidence)[[*keys, *TABLE_COLUMNS]]

    def _step_gaps_sql(self, grouped: bool) -> str:
        """SELECT of ``[group,] step, seconds``: one row per user and reached step j >= 2."""
        group_column, _ = _group_select(grouped)
        return " UNION ALL ".join(
            f"SELECT {group_column}{step} AS step, u.gap_{step} / {_MICROSECONDS} AS seconds "
            f"FROM funnel_users u WHERE u.gap_{step} IS NOT NULL"
            for step in range(2, len(self.spec.steps) + 1)
        )

    def step_times(self) -> pd.DataFrame:
        """Time between consecutive steps (ordered and strict orders; empty for ``any``).

        Returns:
            One row per (group,) step j = 2..k that some user reached: ``[group,] step,
            event_name, users`` (users who reached j), ``median_seconds``, ``q1_seconds``,
            ``q3_seconds`` (the 25th and 75th percentiles, interpolated), of the time from step
            j-1 to step j.
        """
        keys = ["group"] if self.grouped else []
        if self.spec.order == "any":
            return _empty(STEP_TIME_COLUMNS, keys)
        _, group_key = _group_select(self.grouped)
        frame = self._query(f"""
SELECT {group_key}step, count(*) AS users, quantile_cont(seconds, 0.5) AS median_seconds,
    quantile_cont(seconds, 0.25) AS q1_seconds, quantile_cont(seconds, 0.75) AS q3_seconds
FROM ({self._step_gaps_sql(self.grouped)})
GROUP BY ALL ORDER BY {group_key}step""")
        if frame.empty:
            return _empty(STEP_TIME_COLUMNS, keys)
        frame["step"] = frame["step"].astype("int64")
        frame["users"] = frame["users"].astype("int64")
        frame["event_name"] = [self.spec.steps[step - 1] for step in frame["step"]]
        return frame[[*keys, *STEP_TIME_COLUMNS]].reset_index(drop=True)

    def step_time_histogram(self) -> pd.DataFrame:
        """How the time from step j-1 to step j is spread, in the bins of ``TIME_BINS``.

        Returns:
            ``step, event_name, bin`` (label), ``lower_seconds``, ``upper_seconds`` (None for the
            last bin), ``users``: every bin of every step 2..k, zeros included (all entered users,
            whatever the breakdown).
        """
        if self.spec.order == "any":
            return _empty(HISTOGRAM_COLUMNS, [])
        bin_index = "CASE " + " ".join(
            f"WHEN seconds < {TIME_BINS[index][0]} THEN {index}" for index in range(1, len(TIME_BINS))
        )
        counts = self._query(f"""
SELECT step, {bin_index} ELSE {len(TIME_BINS)} END AS bin_index, count(*) AS users
FROM ({self._step_gaps_sql(False)})
GROUP BY ALL""")
        found = {(int(row.step), int(row.bin_index)): int(row.users) for row in counts.itertuples()}
        rows = []
        for step in range(2, len(self.spec.steps) + 1):
            for index, (lower, label) in enumerate(TIME_BINS, start=1):
                upper = TIME_BINS[index][0] if index < len(TIME_BINS) else None
                rows.append(
                    (step, self.spec.steps[step - 1], label, lower, upper, found.get((step, index), 0))
                )
        return pd.DataFrame(rows, columns=list(HISTOGRAM_COLUMNS))

    def conversion_over_time(self, confidence: float = 0.95) -> pd.DataFrame:
        """Conversion within the window of each user's first step-1 event, by the ISO week
        (Monday, UTC) of that event.

        Each user counts the steps reached with every step event within the window of their
        first step-1 event (``window_level``), so every week's users had the same time to convert;
        the whole-history level would favour older weeks, whose users had more tries. A week is
        ``complete`` when its last instant plus the window is not after the data's end: before
        that, some of its users could still convert.

        Returns:
            ``week`` (date), ``step``, ``event_name``, ``users`` (of that week's users, those who
            reached the step), ``conversion_from_start`` and its Wilson interval
            ``lower_from_start``, ``upper_from_start``, ``complete``; sorted by week then step
            (all entered users, whatever the breakdown).
        """
        k = len(self.spec.steps)
        frame = self._query(f"""
WITH weekly AS (
    SELECT CAST(date_trunc('week', make_timestamp(first_time)) AS DATE) AS week, window_level AS level,
        count(*) AS users
    FROM funnel_users GROUP BY ALL
)
SELECT w.week, s.step, sum(w.users) FILTER (WHERE w.level >= s.step) AS users
FROM (SELECT DISTINCT week FROM weekly) wk CROSS JOIN (SELECT unnest(range(1, {k + 1})) AS step) s
JOIN weekly w ON w.week = wk.week
GROUP BY ALL ORDER BY w.week, s.step""")
        if frame.empty:
            return _empty(OVER_TIME_COLUMNS, [])
        frame["users"] = frame["users"].fillna(0).astype("int64")
        frame["step"] = frame["step"].astype("int64")
        frame["week"] = pd.to_datetime(frame["week"]).dt.date
        frame["event_name"] = [self.spec.steps[step - 1] for step in frame["step"]]
        frame = _conversion_columns(frame, ["week"], confidence)
        frame["complete"] = self._complete_weeks(frame["week"])
        return frame[list(OVER_TIME_COLUMNS)]

    def _complete_weeks(self, weeks: pd.Series) -> np.ndarray:
        """Whether every user of each week had the whole window before the data's end."""
        if self.data_end_us is None:
            return np.zeros(len(weeks), dtype=bool)
        week_end_us = (pd.to_datetime(weeks) + pd.Timedelta(days=7)).to_numpy(dtype="datetime64[us]")
        return week_end_us.astype(np.int64) + self.spec.window_us <= self.data_end_us + 1

    def step_users(self, store: Store, step: int, outcome: str = "reached") -> pd.DataFrame:
        """The users behind one step: who reached it, or who dropped before it.

        Args:
            store: the store the walk came from (its events name the users).
            step: 1..k.
            outcome: ``reached``: users whose level is at least ``step``; ``dropped``: users who
                reached step ``step - 1`` but not ``step`` (``step`` >= 2), the drop-off the bar
                chart shows between the two steps.

        Returns:
            Columns ``user_id, level, first_step_time`` (UTC timestamp of the first step-1
            event), sorted by user_id.
        """
        k = len(self.spec.steps)
        if isinstance(step, bool) or not isinstance(step, int | np.integer) or not 1 <= step <= k:
            raise TenureError(f"step {step} is out of range", f"use a step from 1 to {k}")
        if outcome not in OUTCOMES:
            raise TenureError(f"unknown outcome '{outcome}'", f"use one of {', '.join(OUTCOMES)}")
        if outcome == "dropped" and step == 1:
            raise TenureError(
                "nobody drops before step 1", "ask for the users who dropped at step 2 or later"
            )
        condition = f"u.level >= {int(step)}" if outcome == "reached" else f"u.level = {int(step) - 1}"
        sql = f"""
WITH chosen AS (SELECT user_key, level, first_time FROM {_WALK_VIEW} u WHERE {condition})
SELECT ids.user_id, c.level, make_timestamp(c.first_time) AS first_step_time
FROM chosen c JOIN (
    SELECT DISTINCT user_key, user_id FROM {keyed_events_sql(store)}
    WHERE user_key IN (SELECT user_key FROM chosen)
) ids ON ids.user_key = c.user_key
ORDER BY ids.user_id"""
        with store.cursor() as cursor:
            cursor.register(_WALK_VIEW, self.users)
            frame = cursor.execute(sql).df()
        frame["level"] = frame["level"].astype("int64")
        return frame[list(USER_COLUMNS)]


@functools.cache
def _scratch_database() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB for aggregating walks, opened once per process: opening one takes 50 to
    100 ms, a cursor of it (a connection of its own, safe from any thread) almost nothing."""
    return duckdb.connect()


# The walk's name on a store cursor (the drill-down joins it with the store's events).
_WALK_VIEW = "tenure_funnel_walk"


def walk_funnel(store: Store, spec: FunnelSpec, filters: Filters) -> FunnelWalk:
    """Walk every user's events through the funnel once, then add the breakdown's groups (see
    ``FunnelWalk``)."""
    plain = dataclasses.replace(spec, breakdown=None)
    pieces, params = _levels_sql(store, plain, filters)
    with store.cursor() as cursor:
        users = cursor.sql(f"WITH {pieces}\nSELECT * FROM funnel_users", params=params).to_arrow_table()
    data_end = store.data_end()
    data_end_us = None if data_end is None else int(data_end.value // 1000)
    return FunnelWalk(plain, users, data_end_us=data_end_us).by_breakdown(store, spec.breakdown, filters)


def funnel_table(store: Store, spec: FunnelSpec, filters: Filters, confidence: float = 0.95) -> pd.DataFrame:
    """Users reaching each step, and conversion with Wilson intervals (``FunnelWalk.table``)."""
    return walk_funnel(store, spec, filters).table(confidence)


def funnel_users(
    store: Store, spec: FunnelSpec, filters: Filters, step: int, outcome: str = "reached"
) -> pd.DataFrame:
    """The users behind one step (``FunnelWalk.step_users``)."""
    return walk_funnel(store, spec, filters).step_users(store, step, outcome)


def step_times(store: Store, spec: FunnelSpec, filters: Filters) -> pd.DataFrame:
    """Time between consecutive steps (``FunnelWalk.step_times``)."""
    return walk_funnel(store, spec, filters).step_times()


def step_time_histogram(store: Store, spec: FunnelSpec, filters: Filters) -> pd.DataFrame:
    """How the time between steps is spread (``FunnelWalk.step_time_histogram``)."""
    return walk_funnel(store, spec, filters).step_time_histogram()


def conversion_over_time(
    store: Store, spec: FunnelSpec, filters: Filters, confidence: float = 0.95
) -> pd.DataFrame:
    """Conversion by the ISO week of each user's first step-1 event (``FunnelWalk.conversion_over_time``)."""
    return walk_funnel(store, spec, filters).conversion_over_time(confidence)


# --- The lifecycle funnel --------------------------------------------------------------------------

LIFECYCLE_STAGES: tuple[str, ...] = ("acquired", "activated", "engaged", "converted", "repeat", "loyal")


@dataclass(frozen=True)
class LifecycleFunnelSpec:
    """The lifecycle funnel's parameters (each stage requires all earlier stages).

    Args:
        key_event: the event that activates a user; None = any event after the start instant.
        activation_days: activated = the key event within this many days of the start.
        active_days: engaged = at least this many distinct active UTC days ...
        engagement_days: ... within this many days of the start.
        purchase_event: the event that counts as a purchase (converted: one; repeat: two).
        loyal_weeks: loyal = active in at least this many ...
        loyal_of_weeks: ... of this many last complete ISO weeks before the data's end.
        breakdown: ``core.breakdown`` text, or None.
    """

    key_event: str | None = None
    activation_days: int = 7
    active_days: int = 3
    engagement_days: int = 30
    purchase_event: str = "purchase"
    loyal_weeks: int = 3
    loyal_of_weeks: int = 4
    breakdown: str | None = None

    def __post_init__(self) -> None:
        for name in ("activation_days", "active_days", "engagement_days", "loyal_weeks", "loyal_of_weeks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise TenureError(f"{name} must be a whole number of at least 1, not '{value}'")
        if self.active_days > self.engagement_days:
            raise TenureError(
                f"active_days ({self.active_days}) cannot exceed engagement_days ({self.engagement_days})"
            )
        if self.loyal_weeks > self.loyal_of_weeks:
            raise TenureError(
                f"loyal_weeks ({self.loyal_weeks}) cannot exceed loyal_of_weeks ({self.loyal_of_weeks})"
            )
        if not self.purchase_event:
            raise TenureError("the lifecycle funnel needs a purchase event name", "for example purchase")
        object.__setattr__(self, "key_event", self.key_event or None)
        breakdown = parse_breakdown(self.breakdown)
        object.__setattr__(self, "breakdown", breakdown.to_text() if breakdown else None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key_event": self.key_event,
            "activation_days": int(self.activation_days),
            "active_days": int(self.active_days),
            "engagement_days": int(self.engagement_days),
            "purchase_event": self.purchase_event,
            "loyal_weeks": int(self.loyal_weeks),
            "loyal_of_weeks": int(self.loyal_of_weeks),
            "breakdown": self.breakdown,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LifecycleFunnelSpec:
        defaults = cls().to_dict()
        merged = {**defaults, **{key: value for key, value in data.items() if key in defaults}}
        return cls(**merged)


def lifecycle_funnel_sql(store: Store, spec: LifecycleFunnelSpec, filters: Filters) -> tuple[str, list[Any]]:
    """The lifecycle funnel's query: ``[group,] step, users`` for the six stages."""
    events = keyed_events_sql(store)
    breakdown = parse_breakdown(spec.breakdown)
    population, params, groups, group_params = _population_pieces(store, filters, breakdown, events)
    key_condition = "e.event_name = ?" if spec.key_event else "e.event_time > e.start_time"
    key_params = [spec.key_event] if spec.key_event else []
    grouped = breakdown is not None
    group_column = 'g."group", ' if grouped else ""
    group_join = " JOIN groups g ON g.user_key = u.user_key" if grouped else ""
    sql = f"""
WITH population AS MATERIALIZED ({population}),
groups AS ({groups}),
bounds AS (
    SELECT CAST(date_trunc('week', max(event_time)) AS TIMESTAMP) AS last_week_end FROM events
),
user_events AS MATERIALIZED (
    SELECT p.user_key, p.start_time, e.event_time, e.event_name
    FROM population p JOIN {events} e ON e.user_key = p.user_key
),
per_user AS (
    SELECT e.user_key,
        coalesce(bool_or({key_condition} AND e.event_time >= e.start_time
            AND e.event_time <= e.start_time + to_days(?)), false) AS activated,
        count(DISTINCT CAST(e.event_time AS DATE)) FILTER (
            WHERE e.event_time >= e.start_time AND e.event_time < e.start_time + to_days(?)) AS engaged_days,
        count(*) FILTER (WHERE e.event_name = ?) AS purchases,
        count(DISTINCT date_trunc('week', e.event_time)) FILTER (
            WHERE e.event_time >= b.last_week_end - to_days(?) AND e.event_time < b.last_week_end) AS recent_weeks
    FROM user_events e CROSS JOIN bounds b
    GROUP BY e.user_key
),
levels AS (
    SELECT user_key,
        CASE WHEN NOT activated THEN 1
            WHEN engaged_days < ? THEN 2
            WHEN purchases < 1 THEN 3
            WHEN purchases < 2 THEN 4
            WHEN recent_weeks < ? THEN 5
            ELSE 6 END AS level
    FROM per_user
),
user_levels AS MATERIALIZED (SELECT {group_column}u.level FROM levels u{group_join})
{_step_counts_sql("SELECT * FROM user_levels", len(LIFECYCLE_STAGES), grouped)}"""
    params = [
        *params,
        *group_params,
        *key_params,
        int(spec.activation_days),
        int(spec.engagement_days),
        spec.purchase_event,
        7 * int(spec.loyal_of_weeks),
        int(spec.active_days),
        int(spec.loyal_weeks),
    ]
    return sql, params


def lifecycle_funnel(
    store: Store, spec: LifecycleFunnelSpec, filters: Filters, confidence: float = 0.95
) -> pd.DataFrame:
    """The lifecycle funnel with the columns of ``funnel_table`` (``event_name`` holds the stage).

    Stages (each requires the previous ones; start = first event, docs/METRICS.md):
    acquired: in the population; activated: the key event (or any later event) within
    ``activation_days`` of the start, inclusive; engaged: at least ``active_days`` distinct UTC
    days with an event in ``[start, start + engagement_days)``; converted: at least one purchase
    event; repeat: at least two purchase events; loyal: events in at least ``loyal_weeks`` of the
    ``loyal_of_weeks`` ISO weeks that end on or before the Monday that starts the data's last week.
    """
    names = [spec.purchase_event, *([spec.key_event] if spec.key_event else [])]
    _check_names(store, names)
    sql, params = lifecycle_funnel_sql(store, spec, filters)
    frame = store.query_df(sql, params)
    keys = ["group"] if spec.breakdown else []
    frame["users"] = frame["users"].astype("int64")
    frame["step"] = frame["step"].astype("int64")
    frame["event_name"] = [LIFECYCLE_STAGES[step - 1] for step in frame["step"]]
    if frame.empty:
        return _empty(TABLE_COLUMNS, keys)
    return _conversion_columns(frame, keys, confidence)[[*keys, *TABLE_COLUMNS]]
