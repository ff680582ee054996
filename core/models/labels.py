"""Churn and LTV labels: what each user of the population did in the horizon ``[T, T + H)``.

Definitions in core/models/spec.py (and docs/METRICS.md, "Labels and features"). The labels are
complete only when the data covers the whole horizon: ``T + H <= data end`` (the latest event
time in the store, whatever the filters). Otherwise a user silent after the data end would look
churned, so ``labels`` refuses unless ``allow_incomplete=True``.

Users are grouped by the integer ``events.user_key`` (core/schema.py); user ids are read back
from the events of the same keys.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import pandas as pd

from core.errors import TenureError
from core.models.spec import ModelSpec
from core.population import Filters, keyed_events_sql, population_sql
from core.schema import user_key_sql
from core.store import Store

_MICROSECONDS_PER_DAY = 86_400_000_000

LABEL_COLUMNS = ("user_id", "churned", "ltv_actual")


def activity_condition(spec: ModelSpec, alias: str = "e") -> tuple[str, list[Any]]:
    """SQL true for an activity event of ``spec`` (any event when ``activity_events`` is empty)."""
    if not spec.activity_events:
        return "TRUE", []
    placeholders = ", ".join("?" for _ in spec.activity_events)
    return f"{alias}.event_name IN ({placeholders})", list(spec.activity_events)


def model_users_sql(
    store: Store,
    spec: ModelSpec,
    filters: Filters | None = None,
    shard: tuple[int, int] | None = None,
    users: Collection[str] | None = None,
) -> tuple[str, list[Any], str]:
    """CTEs (a ``WITH`` body) defining ``model_users(user_key, user_id, start_time)``: the population.

    ``shard`` = (n, i) keeps only the users with ``user_key % n = i``: scoring a large population
    shard by shard bounds memory without changing any user's result.

    ``users`` (user ids; None = no restriction) keeps only the population users among them: a
    user's features and labels read that user's events only, so scoring a few users of a large
    store gives each of them the score a run over the whole population would. Ids that are not
    in the population (no start before T, or filtered out) stay out.

    Returns:
        (sql, params, events): ``events`` is the keyed events relation the CTEs read, for the
        caller's own queries.
    """
    events = keyed_events_sql(store)
    population, params = population_sql(store, spec.start, filters or Filters(), by_key=True, events=events)
    lookback = ""
    if spec.lookback_start is not None:
        activity, activity_params = activity_condition(spec)
        lookback = (
            f" AND p.user_key IN (SELECT e.user_key FROM {events} e "
            f"WHERE e.event_time >= ? AND e.event_time < ? AND {activity})"
        )
        lookback_params: list[Any] = [spec.lookback_start, spec.as_of, *activity_params]
    else:
        lookback_params = []
    shard_sql, shard_params = "", []
    if shard is not None:
        shard_sql = " AND p.user_key % ? = ?"
        shard_params = [int(shard[0]), int(shard[1])]
    users_sql, users_params = "", []
    if users is not None:
        keys = user_key_sql("ids.user_id")
        users_sql = f" AND p.user_key IN (SELECT {keys} FROM unnest(?::VARCHAR[]) ids(user_id))"
        users_params = [[str(user) for user in users]]
    sql = f"""
population AS ({population}),
eligible AS (
    SELECT p.user_key, p.start_time FROM population p
    WHERE p.start_time < ?{lookback}{shard_sql}{users_sql}
),
model_users AS MATERIALIZED (
    SELECT u.user_key, ids.user_id, u.start_time
    FROM eligible u
    JOIN (SELECT user_key, min(user_id) AS user_id FROM {events}
          WHERE user_key IN (SELECT user_key FROM eligible) GROUP BY user_key) ids
        ON ids.user_key = u.user_key
)"""
    return sql, [*params, spec.as_of, *lookback_params, *shard_params, *users_params], events


def instants_sql(instants: pd.DataFrame) -> tuple[str, list[Any]]:
    """A relation ``(user_id, as_of)`` of the distinct rows of ``instants``, bound as two lists:
    the users that one-pass scoring reads each at their own T (a row asked twice is one)."""
    return (
        "SELECT DISTINCT user_id, as_of "
        "FROM (SELECT unnest(?::VARCHAR[]) AS user_id, unnest(?::TIMESTAMP[]) AS as_of)",
        [
            instants["user_id"].astype(str).tolist(),
            [pd.Timestamp(moment).to_pydatetime() for moment in instants["as_of"]],
        ],
    )


def model_users_at_instants_sql(
    store: Store, spec: ModelSpec, instants: pd.DataFrame
) -> tuple[str, list[Any], str]:
    """CTEs (a ``WITH`` body) defining ``model_users(user_key, user_id, start_time, as_of)``: the
    rows of ``instants`` (``user_id``, ``as_of``) whose user is in the population at their own T.

    The population rule is ``model_users_sql``'s with each row's own T: a start (over all events,
    no filters) before T and, with a lookback, an activity event in ``[T - L, T)``. A user asked
    at two instants is two rows, told apart by ``as_of``; a row asked twice is one.

    Returns:
        (sql, params, events) as ``model_users_sql``.
    """
    events = keyed_events_sql(store)
    instants_relation, instant_params = instants_sql(instants)
    population, params = population_sql(store, spec.start, Filters(), by_key=True, events=events)
    lookback, lookback_params = "", []
    if spec.lookback_days is not None:
        activity, activity_params = activity_condition(spec, "e")
        lookback = (
            f" AND EXISTS (SELECT 1 FROM {events} e WHERE e.user_key = i.user_key "
            f"AND e.event_time >= i.as_of - to_microseconds(CAST(? AS BIGINT)) AND e.event_time < i.as_of "
            f"AND {activity})"
        )
        lookback_params = [round(spec.lookback_days * _MICROSECONDS_PER_DAY), *activity_params]
    sql = f"""
instants AS (SELECT user_id, as_of, {user_key_sql()} AS user_key FROM ({instants_relation})),
population AS ({population}),
model_users AS MATERIALIZED (
    SELECT i.user_key, i.user_id, p.start_time, i.as_of
    FROM instants i JOIN population p ON p.user_key = i.user_key
    WHERE p.start_time < i.as_of{lookback}
)"""
    return sql, [*instant_params, *params, *lookback_params], events


def labels_sql(store: Store, spec: ModelSpec, filters: Filters | None = None) -> tuple[str, list[Any]]:
    """The one query of ``labels`` and its bound parameters (columns ``LABEL_COLUMNS``)."""
    users, params, events = model_users_sql(store, spec, filters)
    activity, activity_params = activity_condition(spec)
    sql = f"""
WITH {users},
horizon AS (
    SELECT e.user_key,
        count(*) FILTER (WHERE {activity}) AS activity_events,
        sum(coalesce(e.revenue, 0)) AS revenue
    FROM {events} e
    WHERE e.event_time >= ? AND e.event_time < ?
    GROUP BY e.user_key
)
SELECT u.user_id,
    coalesce(h.activity_events, 0) = 0 AS churned,
    CAST(coalesce(h.revenue, 0) AS DOUBLE) AS ltv_actual
FROM model_users u LEFT JOIN horizon h ON h.user_key = u.user_key
ORDER BY u.user_id"""
    return sql, [*params, *activity_params, spec.as_of, spec.horizon_end]


def check_complete(store: Store, spec: ModelSpec) -> None:
    """Raise TenureError when the store's data ends before T + H (the labels would be incomplete)."""
    data_end = store.data_end()
    if data_end is None:
        raise TenureError("the store has no events", "load events before building labels")
    if spec.horizon_end > data_end.to_pydatetime():
        raise TenureError(
            f"the horizon {spec.as_of.isoformat()} + {spec.horizon_days} days ends at "
            f"{spec.horizon_end.isoformat()}, after the data's end {data_end.isoformat()}: "
            "the labels would be incomplete",
            f"choose an as-of date on or before {(data_end.to_pydatetime() - (spec.horizon_end - spec.as_of)).isoformat()} "
            "or a shorter horizon",
        )


def labels(
    store: Store, spec: ModelSpec, filters: Filters | None = None, allow_incomplete: bool = False
) -> pd.DataFrame:
    """Each population user's churn and LTV over ``[T, T + H)`` (definitions in core/models/spec.py).

    Args:
        store: the event store.
        spec: as-of date, horizon, activity events, lookback and start.
        filters: the global filters (they select users); None = everyone.
        allow_incomplete: build labels even when the data ends before T + H.

    Returns:
        DataFrame ``user_id, churned (bool), ltv_actual (float)``, one row per user of the
        population, sorted by ``user_id``.
    """
    if not allow_incomplete:
        check_complete(store, spec)
    sql, params = labels_sql(store, spec, filters)
    result = store.query_df(sql, params)
    result["churned"] = result["churned"].astype(bool)
    result["ltv_actual"] = result["ltv_actual"].astype(float)
    return result.reset_index(drop=True)
