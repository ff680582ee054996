"""The sequence models' inputs: each user's last N events before T as padded arrays, in DuckDB.

Definitions (docs/METRICS.md, "Sequence models"), all times UTC, events strictly before T only:

- the **history** of a user is their last ``max_events`` events before T, oldest first (ties in
  time broken by event name, item and revenue, so the order is reproducible);
- per event: the event name's index in the vocabulary, the item's index, ``log1p(revenue)``
  (revenue below 0 counts as 0), whether revenue > 0, ``log1p`` of the hours since the user's
  previous event (0 for their first), ``log1p`` of the hours from the event to T, whether it is
  the user's first event ever, the weekday (Monday 0) and the hour of day;
- position 0 of every row is a start token that holds no event, so a user without events
  before T (possible with a signup start) still has one position to read;
- the **static features** are the gradient-boosting model's behavioural features
  (core/models/features.py) through ``sign(x) * log1p(|x|)``, standardised by the fitted
  users' mean and standard deviation, missing values then set to 0;
- **weeks active** (the survival target): the number of whole weeks w in 0..W-1
  (W = ceil(H / 7)) with an activity event in ``[T + 7w days, T + H)``; 0 for a churned user.

Vocabularies are fixed at fit time and saved with the model: event names (at most
``MAX_EVENT_VOCABULARY``, most frequent first) and items (at most ``MAX_ITEM_VOCABULARY``), both
counted over events before the fit as-of date. Index 0 is padding; 1 an unknown event name; for
items 1 means no item and 2 an unknown item.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.models.features import FeatureVocabulary, behaviour_features, behaviour_features_at_instants
from core.models.labels import activity_condition, labels, model_users_at_instants_sql, model_users_sql
from core.models.spec import ModelSpec
from core.population import Filters
from core.store import Store

MAX_EVENT_VOCABULARY = 200
MAX_ITEM_VOCABULARY = 5_000
NUMERIC_FEATURES = ("log_revenue", "has_revenue", "log_gap_hours", "log_hours_to_as_of", "first_event")
EVENT_OFFSET = 2  # 0 padding, 1 unknown
ITEM_OFFSET = 3  # 0 padding, 1 no item, 2 unknown item
_HOUR_US = 3_600_000_000.0


@dataclass(frozen=True)
class SequenceVocabulary:
    """Event names and items that get their own embedding; everything else is 'unknown'."""

    event_names: tuple[str, ...]
    items: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"event_names": list(self.event_names), "items": list(self.items)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SequenceVocabulary:
        return cls(
            tuple(str(name) for name in data["event_names"]), tuple(str(item) for item in data["items"])
        )

    @property
    def event_slots(self) -> int:
        return len(self.event_names) + EVENT_OFFSET

    @property
    def item_slots(self) -> int:
        return len(self.items) + ITEM_OFFSET


def sequence_vocabulary(store: Store, spec: ModelSpec) -> SequenceVocabulary:
    """The most frequent event names and items before ``spec.as_of`` (ties by name)."""
    names = store.query_df(
        "SELECT event_name, count(*) AS n FROM events WHERE event_time < ? AND event_name IS NOT NULL "
        "GROUP BY event_name ORDER BY n DESC, event_name LIMIT ?",
        [spec.as_of, MAX_EVENT_VOCABULARY],
    )
    items = store.query_df(
        "SELECT item_id, count(*) AS n FROM events WHERE event_time < ? AND item_id IS NOT NULL "
        "GROUP BY item_id ORDER BY n DESC, item_id LIMIT ?",
        [spec.as_of, MAX_ITEM_VOCABULARY],
    )
    return SequenceVocabulary(
        tuple(str(name) for name in names["event_name"]), tuple(str(item) for item in items["item_id"])
    )


def horizon_weeks(horizon_days: int) -> int:
    """W: the number of weekly hazards that cover a horizon of ``horizon_days``."""
    return math.ceil(horizon_days / 7)


@dataclass
class SequenceInputs:
    """Padded per-user arrays, rows in ``user_ids`` order (sorted by user id).

    Shapes: ``events``, ``items``, ``weekday``, ``hour``: [users, max_events + 1] int64;
    ``numeric``: [users, max_events + 1, len(NUMERIC_FEATURES)] float32; ``lengths``: events
    per row (without the start token); ``static``: [users, features] float64, untransformed.
    Targets (``churned``, ``ltv``, ``weeks_active``) are filled only when labels were asked for.
    """

    user_ids: np.ndarray
    lengths: np.ndarray
    events: np.ndarray
    items: np.ndarray
    weekday: np.ndarray
    hour: np.ndarray
    numeric: np.ndarray
    static: np.ndarray
    churned: np.ndarray | None = None
    ltv: np.ndarray | None = None
    weeks_active: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.user_ids)

    def subset(self, rows: np.ndarray) -> SequenceInputs:
        """The rows ``rows`` (a boolean mask or integer positions) of every array."""

        def pick(array: np.ndarray | None) -> np.ndarray | None:
            return None if array is None else array[rows]

        return SequenceInputs(
            self.user_ids[rows],
            self.lengths[rows],
            self.events[rows],
            self.items[rows],
            self.weekday[rows],
            self.hour[rows],
            self.numeric[rows],
            self.static[rows],
            pick(self.churned),
            pick(self.ltv),
            pick(self.weeks_active),
        )


def _history_select(events: str, users: str) -> str:
    """The ``before`` CTE and the final SELECT of a history query.

    ``users`` names a relation ``(user_key, user_id, as_of)``: one history per row, each with
    its own T. Parameters: ``max_events`` twice.
    """
    return f"""before AS (
    SELECT u.user_key, u.as_of, e.event_time, e.event_name, e.item_id,
        greatest(coalesce(e.revenue, 0), 0) AS revenue,
        row_number() OVER recent AS rn,
        lead(e.event_time) OVER recent AS previous_time,
        count(*) OVER (PARTITION BY u.user_key, u.as_of) AS n
    FROM {events} e JOIN {users} u ON u.user_key = e.user_key
    WHERE e.event_time < u.as_of
    WINDOW recent AS (
        PARTITION BY u.user_key, u.as_of
        ORDER BY e.event_time DESC, e.event_name DESC NULLS LAST, e.item_id DESC NULLS LAST,
            e.revenue DESC NULLS LAST
    )
)
SELECT u.user_id, u.as_of, least(b.n, ?) - b.rn AS position, b.event_time, b.event_name, b.item_id,
    b.revenue, (epoch_us(u.as_of) - epoch_us(b.event_time)) / {_HOUR_US} AS hours_to_as_of,
    (epoch_us(b.event_time) - epoch_us(b.previous_time)) / {_HOUR_US} AS gap_hours,
    isodow(b.event_time) - 1 AS weekday, hour(b.event_time) AS hour
FROM before b JOIN {users} u ON u.user_key = b.user_key AND u.as_of = b.as_of
WHERE b.rn <= ?"""


def history_sql(
    store: Store,
    spec: ModelSpec,
    filters: Filters | None,
    max_events: int,
    shard: tuple[int, int] | None,
    users: Collection[str] | None = None,
) -> tuple[str, list[Any]]:
    """One row per kept event: ``user_id, as_of, position`` (0 = oldest kept) and the raw event
    fields, for the population at ``spec.as_of``."""
    population, params, events = model_users_sql(store, spec, filters, shard, users)
    sql = f"""
WITH {population},
model_users_at AS (SELECT *, CAST(? AS TIMESTAMP) AS as_of FROM model_users),
{_history_select(events, "model_users_at")}"""
    return sql, [*params, spec.as_of, max_events, max_events]


def history_at_instants_sql(
    store: Store, spec: ModelSpec, instants: pd.DataFrame, max_events: int
) -> tuple[str, list[Any]]:
    """``history_sql`` for each ``instants`` row (``user_id``, ``as_of``) at its own T, in one
    query; a user asked at two instants has two histories."""
    population, params, events = model_users_at_instants_sql(store, spec, instants)
    sql = f"""
WITH {population},
{_history_select(events, "model_users")}"""
    return sql, [*params, max_events, max_events]


def weeks_active_sql(
    store: Store, spec: ModelSpec, filters: Filters | None, shard: tuple[int, int] | None = None
) -> tuple[str, list[Any]]:
    """``user_id, weeks_active`` (module docstring) for the population at ``spec.as_of``."""
    users, params, events = model_users_sql(store, spec, filters, shard)
    activity, activity_params = activity_condition(spec)
    weeks = horizon_weeks(spec.horizon_days)
    sql = f"""
WITH {users},
last_active AS (
    SELECT e.user_key, max(e.event_time) AS last_time
    FROM {events} e
    WHERE e.event_time >= ? AND e.event_time < ? AND {activity}
        AND e.user_key IN (SELECT user_key FROM model_users)
    GROUP BY e.user_key
)
SELECT u.user_id,
    CAST(CASE WHEN l.last_time IS NULL THEN 0
        ELSE least(floor((epoch_us(l.last_time) - epoch_us(CAST(? AS TIMESTAMP)))
            / (7 * 24 * {_HOUR_US})) + 1, ?) END AS INTEGER) AS weeks_active
FROM model_users u LEFT JOIN last_active l ON l.user_key = u.user_key
ORDER BY u.user_id"""
    return sql, [*params, spec.as_of, spec.horizon_end, *activity_params, spec.as_of, weeks]


def _indices(values: pd.Series, vocabulary: tuple[str, ...], offset: int, missing: int) -> np.ndarray:
    """Vocabulary index + ``offset``; 1 less than ``offset`` for unknown values, ``missing`` for NULL."""
    codes = pd.Index(list(vocabulary), dtype=object).get_indexer(values.astype(object)).astype(np.int64)
    indices = np.where(codes >= 0, codes + offset, offset - 1)
    return np.where(values.isna().to_numpy(), missing, indices)


def _inputs(
    user_ids: np.ndarray,
    static: pd.DataFrame,
    history: pd.DataFrame,
    rows: np.ndarray,
    vocabulary: SequenceVocabulary,
    max_events: int,
) -> SequenceInputs:
    """The padded arrays of ``SequenceInputs``: ``history`` row i goes to input row ``rows[i]``."""
    width = max_events + 1
    shape = (len(user_ids), width)
    events = np.zeros(shape, dtype=np.int64)
    items = np.zeros(shape, dtype=np.int64)
    weekday = np.zeros(shape, dtype=np.int64)
    hour = np.zeros(shape, dtype=np.int64)
    numeric = np.zeros((*shape, len(NUMERIC_FEATURES)), dtype=np.float32)
    lengths = np.zeros(len(user_ids), dtype=np.int64)
    if len(history):
        columns = history["position"].to_numpy(dtype=np.int64) + 1
        events[rows, columns] = _indices(history["event_name"], vocabulary.event_names, EVENT_OFFSET, 1)
        items[rows, columns] = _indices(history["item_id"], vocabulary.items, ITEM_OFFSET, 1)
        weekday[rows, columns] = history["weekday"].to_numpy(dtype=np.int64)
        hour[rows, columns] = history["hour"].to_numpy(dtype=np.int64)
        revenue = history["revenue"].to_numpy(dtype=float)
        gap = history["gap_hours"].to_numpy(dtype=float)
        numeric[rows, columns] = np.column_stack(
            [
                np.log1p(revenue),
                (revenue > 0).astype(float),
                np.log1p(np.nan_to_num(np.maximum(gap, 0.0), nan=0.0)),
                np.log1p(np.maximum(history["hours_to_as_of"].to_numpy(dtype=float), 0.0)),
                np.isnan(gap).astype(float),
            ]
        ).astype(np.float32)
        np.maximum.at(lengths, rows, columns)
    return SequenceInputs(
        user_ids, lengths, events, items, weekday, hour, numeric, static.to_numpy(dtype=float)
    )


def build_inputs(
    store: Store,
    spec: ModelSpec,
    filters: Filters | None,
    vocabulary: SequenceVocabulary,
    feature_vocabulary: FeatureVocabulary,
    max_events: int,
    *,
    with_labels: bool = False,
    shard: tuple[int, int] | None = None,
    users: Collection[str] | None = None,
) -> SequenceInputs:
    """Every population user's history and static features at ``spec.as_of`` (module docstring);
    ``users``: only the population users among these ids (``model_users_sql``)."""
    static = behaviour_features(store, spec, filters, feature_vocabulary, shard, users)
    user_ids = static["user_id"].astype(str).to_numpy()
    sql, params = history_sql(store, spec, filters, max_events, shard, users)
    history = store.query_df(sql, params)
    rows = pd.Index(user_ids).get_indexer(history["user_id"].astype(str))
    inputs = _inputs(
        user_ids, static[feature_vocabulary.feature_names()], history, rows, vocabulary, max_events
    )
    if with_labels:
        targets = labels(store, spec, filters)
        sql, params = weeks_active_sql(store, spec, filters, shard)
        weeks = store.query_df(sql, params)
        targets = targets.merge(weeks, on="user_id", how="inner", validate="one_to_one")
        order = pd.Index(targets["user_id"].astype(str)).get_indexer(user_ids)
        inputs.churned = targets["churned"].to_numpy(dtype=np.float32)[order]
        inputs.ltv = targets["ltv_actual"].to_numpy(dtype=np.float32)[order]
        inputs.weeks_active = targets["weeks_active"].to_numpy(dtype=np.int64)[order]
    return inputs


def build_inputs_at_instants(
    store: Store,
    spec: ModelSpec,
    instants: pd.DataFrame,
    vocabulary: SequenceVocabulary,
    feature_vocabulary: FeatureVocabulary,
    max_events: int,
) -> SequenceInputs:
    """``build_inputs`` for each ``instants`` row (``user_id``, ``as_of``) at its own T: two
    queries for every instant, where a run per instant read the store once each.

    Rows whose user is not in the population at their T are left out. Input rows are sorted by
    as_of then user_id; ``extra["as_of"]`` holds each row's T.
    """
    static = behaviour_features_at_instants(store, spec, feature_vocabulary, instants)
    user_ids = static["user_id"].astype(str).to_numpy()
    as_of = pd.to_datetime(static["as_of"]).to_numpy()
    sql, params = history_at_instants_sql(store, spec, instants, max_events)
    history = store.query_df(sql, params)
    keys = pd.MultiIndex.from_arrays([user_ids, as_of])
    rows = keys.get_indexer(
        pd.MultiIndex.from_arrays(
            [history["user_id"].astype(str).to_numpy(), pd.to_datetime(history["as_of"]).to_numpy()]
        )
    )
    inputs = _inputs(
        user_ids, static[feature_vocabulary.feature_names()], history, rows, vocabulary, max_events
    )
    inputs.extra["as_of"] = as_of
    return inputs
