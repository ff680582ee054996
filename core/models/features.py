"""Behavioural features of each user at an as-of date T, from events strictly before T only.

Definitions (docs/METRICS.md, "Labels and features"), all times UTC; "days" are 86,400 s;
a window "last w days" is ``[T - w days, T)``; an **active day** is a UTC calendar day with at
least one event (so a 7-day window not starting at midnight can touch 8 calendar days); revenue
NULL counts as 0:

- ``days_since_start``: T - the user's start; ``days_since_last_event``: T - the last event
  before T (NaN when there is none: possible only with a signup start);
- ``events_{7,30,90}d``, ``events_total``: events (any name) in the window / before T;
- ``active_days_{7,30,90}d``, ``active_days_total``: active days in the window / before T;
- ``revenue_{30,90}d``, ``revenue_total``: summed revenue in the window / before T;
- ``purchases``: events with revenue > 0 before T;
- ``mean_gap_days``: mean gap between consecutive active days = (last active day - first active
  day) / (active days - 1), NaN with fewer than 2 active days;
- ``distinct_events``: distinct event names before T;
- ``share__<name>``: the user's events of that name / ``events_total`` (0 without events), for
  each name of the vocabulary: the most frequent event names before T over the whole store
  (at most ``MAX_EVENT_NAMES``, ties by name);
- ``attr__<column>__<value>``: 1 when the user's ``users`` row has that value, else 0, for the
  ``MAX_ATTRIBUTE_VALUES`` most common values of each ``users`` attribute column. Attributes
  are read as the ``users`` table holds them (it has no history): they must not describe
  anything that happened after T.

The vocabulary is fixed when a model is fitted and stored with it, so scoring builds the same
columns. Everything is computed in one DuckDB query grouped by the integer ``events.user_key``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, NamedTuple

import pandas as pd

from core.models.labels import model_users_at_instants_sql, model_users_sql
from core.models.spec import ModelSpec
from core.population import Filters, segment_attributes
from core.schema import user_key_sql
from core.store import Store, quote_identifier

FEATURE_VERSION = 1
MAX_EVENT_NAMES = 20
MAX_ATTRIBUTE_VALUES = 10
WINDOWS_DAYS = (7, 30, 90)
REVENUE_WINDOWS_DAYS = (30, 90)

_MICROSECONDS_PER_DAY = 86_400_000_000

BASE_FEATURES = (
    "days_since_start",
    "days_since_last_event",
    *(f"events_{days}d" for days in WINDOWS_DAYS),
    "events_total",
    *(f"active_days_{days}d" for days in WINDOWS_DAYS),
    "active_days_total",
    *(f"revenue_{days}d" for days in REVENUE_WINDOWS_DAYS),
    "revenue_total",
    "purchases",
    "mean_gap_days",
    "distinct_events",
)


@dataclass(frozen=True)
class FeatureVocabulary:
    """The categories that become columns: event names for shares, attribute values for one-hots."""

    event_names: tuple[str, ...] = ()
    attributes: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_names": list(self.event_names),
            "attributes": [[column, list(values)] for column, values in self.attributes],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureVocabulary:
        return cls(
            tuple(data.get("event_names", ())),
            tuple((column, tuple(values)) for column, values in data.get("attributes", ())),
        )

    def feature_names(self) -> list[str]:
        """All feature columns, in order: ``BASE_FEATURES``, event shares, attribute one-hots."""
        names = list(BASE_FEATURES)
        names += [_column_name("share", name) for name in self.event_names]
        names += [
            _column_name("attr", column, value) for column, values in self.attributes for value in values
        ]
        return _unique(names)


def _column_name(prefix: str, *parts: str) -> str:
    """A column name safe for LightGBM (letters, digits and underscores)."""
    return "__".join([prefix, *(re.sub(r"[^0-9A-Za-z_]+", "_", part) for part in parts)])


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        unique.append(name if count == 0 else f"{name}_{count}")
    return unique


def feature_vocabulary(store: Store, spec: ModelSpec) -> FeatureVocabulary:
    """The vocabulary at ``spec.as_of``: top event names before T and top attribute values."""
    names = store.query_df(
        "SELECT event_name, count(*) AS n FROM events WHERE event_time < ? AND event_name IS NOT NULL "
        "GROUP BY event_name ORDER BY n DESC, event_name LIMIT ?",
        [spec.as_of, MAX_EVENT_NAMES],
    )
    attributes = []
    for column in segment_attributes(store):
        values = store.query_df(
            f"SELECT CAST({quote_identifier(column)} AS VARCHAR) AS value, count(*) AS n FROM users "
            f"WHERE {quote_identifier(column)} IS NOT NULL GROUP BY value ORDER BY n DESC, value LIMIT ?",
            [MAX_ATTRIBUTE_VALUES],
        )
        if len(values):
            attributes.append((column, tuple(str(value) for value in values["value"])))
    return FeatureVocabulary(tuple(str(name) for name in names["event_name"]), tuple(attributes))


class _FeatureParts(NamedTuple):
    """The SQL pieces every feature query shares, around its own population and events."""

    stats: str
    stat_params: list[Any]
    columns: str
    column_params: list[Any]
    attribute_cte: str
    attribute_join: str


def _feature_parts(
    vocabulary: FeatureVocabulary,
    window_start: Callable[[int], tuple[str, list[Any]]],
    as_of: tuple[str, list[Any]],
) -> _FeatureParts:
    """The aggregates over ``before`` (alias-free, one row per event) and the final columns over
    ``model_users u``, ``stats s`` and ``attributes a``.

    Args:
        window_start: SQL (and parameters) for T - ``days``, as seen from a ``before`` row.
        as_of: SQL (and parameters) for T, as seen from a ``model_users`` row.
    """
    names = vocabulary.feature_names()
    stats: list[str] = []
    stat_params: list[Any] = []
    for days in WINDOWS_DAYS:
        start, params = window_start(days)
        stats.append(f"count(*) FILTER (WHERE event_time >= {start}) AS events_{days}d")
        stats.append(f"count(DISTINCT day) FILTER (WHERE event_time >= {start}) AS active_days_{days}d")
        stat_params += params * 2
    for days in REVENUE_WINDOWS_DAYS:
        start, params = window_start(days)
        stats.append(f"sum(revenue) FILTER (WHERE event_time >= {start}) AS revenue_{days}d")
        stat_params += params
    for index, name in enumerate(vocabulary.event_names):
        stats.append(f"count(*) FILTER (WHERE event_name = ?) AS name_{index}")
        stat_params.append(name)
    day = f"/ {_MICROSECONDS_PER_DAY}.0"
    as_of_sql, as_of_params = as_of
    select = [
        f"(epoch_us({as_of_sql}) - epoch_us(u.start_time)) {day}",
        f"(epoch_us({as_of_sql}) - epoch_us(s.last_time)) {day}",
        *(f"coalesce(s.events_{days}d, 0)" for days in WINDOWS_DAYS),
        "coalesce(s.events_total, 0)",
        *(f"coalesce(s.active_days_{days}d, 0)" for days in WINDOWS_DAYS),
        "coalesce(s.active_days_total, 0)",
        *(f"coalesce(s.revenue_{days}d, 0)" for days in REVENUE_WINDOWS_DAYS),
        "coalesce(s.revenue_total, 0)",
        "coalesce(s.purchases, 0)",
        f"CASE WHEN s.active_days_total >= 2 THEN (epoch_us(s.last_day) - epoch_us(s.first_day)) {day} "
        "/ (s.active_days_total - 1) END",
        "coalesce(s.distinct_events, 0)",
        *(
            f"CASE WHEN s.events_total > 0 THEN s.name_{index} / s.events_total ELSE 0 END"
            for index in range(len(vocabulary.event_names))
        ),
    ]
    select_params: list[Any] = [*as_of_params, *as_of_params]
    attribute_columns: list[str] = []
    for index, (column, values) in enumerate(vocabulary.attributes):
        attribute_columns.append(f"min(CAST({quote_identifier(column)} AS VARCHAR)) AS a_{index}")
        for value in values:
            select.append(f"CASE WHEN a.a_{index} = ? THEN 1 ELSE 0 END")
            select_params.append(value)
    attribute_cte = attribute_join = ""
    if attribute_columns:
        attribute_cte = (
            f",\nattributes AS (SELECT {user_key_sql()} AS user_key, {', '.join(attribute_columns)} "
            "FROM users GROUP BY user_id)"
        )
        attribute_join = " LEFT JOIN attributes a ON a.user_key = u.user_key"
    columns = ",\n    ".join(
        f"CAST({expression} AS DOUBLE) AS {name}" for expression, name in zip(select, names, strict=True)
    )
    stat_columns = (
        "max(event_time) AS last_time, min(day) AS first_day, max(day) AS last_day,\n"
        "        count(*) AS events_total, count(DISTINCT day) AS active_days_total,\n"
        "        sum(revenue) AS revenue_total, count(*) FILTER (WHERE revenue > 0) AS purchases,\n"
        "        count(DISTINCT event_name) AS distinct_events,\n        " + ",\n        ".join(stats)
    )
    return _FeatureParts(stat_columns, stat_params, columns, select_params, attribute_cte, attribute_join)


def behaviour_features_sql(
    store: Store,
    spec: ModelSpec,
    filters: Filters | None,
    vocabulary: FeatureVocabulary,
    shard: tuple[int, int] | None = None,
    users: Collection[str] | None = None,
) -> tuple[str, list[Any]]:
    """The one query of ``behaviour_features`` and its bound parameters."""
    population, params, events = model_users_sql(store, spec, filters, shard, users)
    as_of = spec.as_of
    parts = _feature_parts(
        vocabulary, lambda days: ("?", [as_of - dt.timedelta(days=days)]), ("CAST(? AS TIMESTAMP)", [as_of])
    )
    sql = f"""
WITH {population},
before AS (
    SELECT e.user_key, e.event_time, e.event_name, coalesce(e.revenue, 0) AS revenue,
        date_trunc('day', e.event_time) AS day
    FROM {events} e
    WHERE e.event_time < ? AND e.user_key IN (SELECT user_key FROM model_users)
),
stats AS (
    SELECT user_key,
        {parts.stats}
    FROM before GROUP BY user_key
){parts.attribute_cte}
SELECT u.user_id,
    {parts.columns}
FROM model_users u LEFT JOIN stats s ON s.user_key = u.user_key{parts.attribute_join}
ORDER BY u.user_id"""
    return sql, [*params, as_of, *parts.stat_params, *parts.column_params]


def behaviour_features_at_instants_sql(
    store: Store, spec: ModelSpec, vocabulary: FeatureVocabulary, instants: pd.DataFrame
) -> tuple[str, list[Any]]:
    """The one query of ``behaviour_features_at_instants`` and its bound parameters; the
    population at each row's own T is ``model_users_at_instants_sql``'s."""
    users, params, events = model_users_at_instants_sql(store, spec, instants)
    parts = _feature_parts(
        vocabulary, lambda days: (f"(as_of - to_days(CAST({int(days)} AS INTEGER)))", []), ("u.as_of", [])
    )
    sql = f"""
WITH {users},
before AS (
    SELECT e.user_key, u.as_of, e.event_time, e.event_name, coalesce(e.revenue, 0) AS revenue,
        date_trunc('day', e.event_time) AS day
    FROM {events} e JOIN model_users u ON e.user_key = u.user_key
    WHERE e.event_time < u.as_of
),
stats AS (
    SELECT user_key, as_of,
        {parts.stats}
    FROM before GROUP BY user_key, as_of
){parts.attribute_cte}
SELECT u.user_id, u.as_of,
    {parts.columns}
FROM model_users u LEFT JOIN stats s ON s.user_key = u.user_key AND s.as_of = u.as_of{parts.attribute_join}
ORDER BY u.as_of, u.user_id"""
    return sql, [*params, *parts.stat_params, *parts.column_params]


def behaviour_features_at_instants(
    store: Store, spec: ModelSpec, vocabulary: FeatureVocabulary, instants: pd.DataFrame
) -> pd.DataFrame:
    """Each ``instants`` row's (``user_id``, ``as_of``) features at its own as-of T, in one query.

    The same features ``behaviour_features`` gives a user at that T (one scan of the events for
    every instant, where one run per instant scanned them once each: scoring users at their own
    assignment day took a run per day). Rows whose user is not in the population at their T are
    left out, as there.

    Returns:
        DataFrame ``user_id, as_of`` then ``vocabulary.feature_names()``, sorted by as_of, user_id.
    """
    if instants.empty:
        return pd.DataFrame(columns=["user_id", "as_of", *vocabulary.feature_names()])
    sql, params = behaviour_features_at_instants_sql(store, spec, vocabulary, instants)
    return store.query_df(sql, params).reset_index(drop=True)


def behaviour_features(
    store: Store,
    spec: ModelSpec,
    filters: Filters | None = None,
    vocabulary: FeatureVocabulary | None = None,
    shard: tuple[int, int] | None = None,
    users: Collection[str] | None = None,
) -> pd.DataFrame:
    """Each population user's features at ``spec.as_of`` (module docstring), from events before T.

    Args:
        store: the event store.
        spec: the as-of date and population (horizon and labels are not used).
        filters: the global filters (they select users); None = everyone.
        vocabulary: the event names and attribute values to make columns of; None = the
            vocabulary at ``spec.as_of`` (``feature_vocabulary``).
        shard: (n, i): only the users with ``user_key % n = i`` (``model_users_sql``).
        users: only the population users among these ids (``model_users_sql``); None = all.

    Returns:
        DataFrame ``user_id`` then ``vocabulary.feature_names()`` (all float), one row per user
        of the population, sorted by ``user_id``.
    """
    if vocabulary is None:
        vocabulary = feature_vocabulary(store, spec)
    sql, params = behaviour_features_sql(store, spec, filters, vocabulary, shard, users)
    return store.query_df(sql, params).reset_index(drop=True)
