"""Who counts: each user's start time and the global filters shared by every view.

A user's start is defined once here so that retention, survival, lifecycle and the models agree
(docs/METRICS.md, "Start"). The global filters (date range, segments) select users, never
events: a view over a filtered population still sees each selected user's whole history, so
filtering can not make a user look churned.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

from core.errors import TenureError
from core.schema import user_key_sql
from core.store import Store, quote_identifier

StartKind = Literal["first_event", "signup", "event"]
START_KINDS: tuple[str, ...] = ("first_event", "signup", "event")

# Columns of `users` that are not attributes one can segment by.
NON_ATTRIBUTE_COLUMNS = frozenset({"user_id", "signup_time"})


@dataclass(frozen=True)
class StartSpec:
    """How a user's start is found.

    - ``first_event``: the user's first event of any name over the whole history;
    - ``signup``: ``users.signup_time`` where the user has one, else the first event;
    - ``event``: the first event named ``event_name`` (users who never did it have no start).
    """

    kind: StartKind = "first_event"
    event_name: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in START_KINDS:
            raise TenureError(f"unknown start '{self.kind}'", f"use one of {', '.join(START_KINDS)}")
        if self.kind == "event" and not self.event_name:
            raise TenureError("start 'event' needs an event name", "name the start event")

    def to_text(self) -> str:
        """The one-word form shared by the CLI's ``--start``, URLs and saved specs: ``first_event``,
        ``signup`` or ``event:NAME``."""
        return f"event:{self.event_name}" if self.kind == "event" else self.kind

    @classmethod
    def from_text(cls, text: str) -> StartSpec:
        """Inverse of ``to_text``; an unknown kind raises ``TenureError``."""
        if text.startswith("event:"):
            return cls("event", text.removeprefix("event:"))
        return cls(text)  # type: ignore[arg-type]


def user_starts_sql(
    start: StartSpec, by_key: bool = False, events: str = "events", indexed: bool = False
) -> tuple[str, list[Any]]:
    """A SELECT of ``(user_id, start_time)``, one row per user who has a start.

    Args:
        by_key: name users by their integer key instead: a SELECT of ``(user_key, start_time)``
            (``users`` rows are matched through ``user_key_sql``).
        events: the events relation: ``events``, or ``keyed_events_sql(store)`` when ``by_key``.
        indexed: read first events from the user index (core/user_index.py), with each user's
            dense number as a third column ``user_no``; only for ``by_key`` and the first-event
            start, and only when ``user_index_ready``.
    """
    user = "user_key" if by_key else "user_id"
    if indexed:
        if not by_key or start.kind != "first_event":
            raise ValueError("the user index holds first events by user key only")
        return "SELECT user_key, first_time AS start_time, user_no FROM user_index", []
    if start.kind == "first_event":
        return f"SELECT {user}, min(event_time) AS start_time FROM {events} GROUP BY {user}", []
    if start.kind == "event":
        return (
            f"SELECT {user}, min(event_time) AS start_time FROM {events} WHERE event_name = ? GROUP BY {user}",
            [start.event_name],
        )
    return (
        f"SELECT f.{user}, coalesce(u.signup_time, f.first_time) AS start_time "
        f"FROM (SELECT {user}, min(event_time) AS first_time FROM {events} GROUP BY {user}) f "
        f"LEFT JOIN (SELECT {_users_key(by_key)} AS {user}, min(signup_time) AS signup_time "
        f"FROM users GROUP BY user_id) u USING ({user})",
        [],
    )


def _users_key(by_key: bool) -> str:
    """The SQL naming a user in the ``users`` table, to match events by id or by key."""
    return user_key_sql() if by_key else "user_id"


def keyed_events_sql(store: Store) -> str:
    """The events relation for queries by ``user_key``: the table itself when its keys can be used.

    That is when the column exists, every row has a key and the keys match this DuckDB's
    ``hash`` (one row tells: another hash function would give other keys for every row). Else
    (a read-only store written before the column existed, or by a writer that skipped it) the
    keys are computed in the query: the same results, as slow as grouping by ``user_id``.
    """
    if "user_key" in store.column_names("events"):
        unusable = store.query_one(
            f"SELECT EXISTS (SELECT 1 FROM events WHERE user_key IS NULL) "
            f"OR coalesce((SELECT user_key <> {user_key_sql()} FROM events LIMIT 1), false)"
        )
        if not unusable[0]:
            return "events"
        return f"(SELECT * REPLACE ({user_key_sql()} AS user_key) FROM events)"
    return f"(SELECT *, {user_key_sql()} AS user_key FROM events)"


@dataclass(frozen=True)
class Filters:
    """The sidebar's global filters.

    Args:
        start_date: keep users whose start is on or after this date.
        end_date: keep users whose start is on or before this date (inclusive).
        segments: ``(attribute, allowed values)`` pairs over ``users`` columns; a user must
            match every pair. Users without a ``users`` row match no segment filter.
    """

    start_date: dt.date | None = None
    end_date: dt.date | None = None
    segments: tuple[tuple[str, tuple[str, ...]], ...] = field(default_factory=tuple)

    @property
    def is_empty(self) -> bool:
        return self.start_date is None and self.end_date is None and not self.segments

    def to_query_params(self) -> dict[str, str]:
        """Flat string parameters for a shareable URL (see ``from_query_params``)."""
        params: dict[str, str] = {}
        if self.start_date:
            params["from"] = self.start_date.isoformat()
        if self.end_date:
            params["to"] = self.end_date.isoformat()
        for attribute, values in self.segments:
            params[f"seg.{attribute}"] = ",".join(values)
        return params

    @classmethod
    def from_query_params(cls, params: dict[str, str]) -> Filters:
        """Inverse of ``to_query_params``; unknown keys are ignored, bad dates raise."""

        def parse_date(key: str) -> dt.date | None:
            text = params.get(key)
            if not text:
                return None
            try:
                return dt.date.fromisoformat(text)
            except ValueError as error:
                raise TenureError(
                    f"URL parameter '{key}' is not a date: '{text}'", "use YYYY-MM-DD"
                ) from error

        segments = tuple(
            (key.removeprefix("seg."), tuple(value for value in text.split(",") if value))
            for key, text in sorted(params.items())
            if key.startswith("seg.") and text
        )
        return cls(parse_date("from"), parse_date("to"), segments)


def segment_attributes(store: Store) -> list[str]:
    """Columns of ``users`` one can segment by (country, channel, platform, plan, ...)."""
    return [c for c in store.column_names("users") if c not in NON_ATTRIBUTE_COLUMNS]


def population_sql(
    store: Store,
    start: StartSpec,
    filters: Filters,
    by_key: bool = False,
    events: str = "events",
    indexed: bool = False,
) -> tuple[str, list[Any]]:
    """A SELECT of ``(user_id, start_time)`` for the users the filters keep.

    Args:
        by_key: a SELECT of ``(user_key, start_time)`` instead (see ``user_starts_sql``).
        events: the events relation: ``events``, or ``keyed_events_sql(store)`` when ``by_key``.
        indexed: starts from the user index, with a third column ``user_no`` (see
            ``user_starts_sql``).
    """
    starts_sql, params = user_starts_sql(start, by_key, events, indexed)
    user = "user_key" if by_key else "user_id"
    conditions: list[str] = []
    if filters.start_date is not None:
        conditions.append("s.start_time >= ?")
        params.append(dt.datetime.combine(filters.start_date, dt.time()))
    if filters.end_date is not None:
        conditions.append("s.start_time < ?")
        params.append(dt.datetime.combine(filters.end_date + dt.timedelta(days=1), dt.time()))
    known = set(segment_attributes(store)) if filters.segments else set()
    for attribute, values in filters.segments:
        if attribute not in known:
            raise TenureError(
                f"segment attribute '{attribute}' is not a column of the users table",
                f"use one of: {', '.join(sorted(known)) or 'none (load a users table)'}",
            )
        if not values:
            continue
        placeholders = ", ".join("?" for _ in values)
        conditions.append(
            f"s.{user} IN (SELECT {_users_key(by_key)} FROM users "
            f"WHERE CAST({quote_identifier(attribute)} AS VARCHAR) IN ({placeholders}))"
        )
        params.extend(values)
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    number = ", s.user_no" if indexed else ""
    return f"SELECT s.{user}, s.start_time{number} FROM ({starts_sql}) s{where}", params
