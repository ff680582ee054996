"""Large synthetic event logs for benchmarks, built inside DuckDB in seconds.

The simulator (core/simulate.py) is the realistic dataset; for 10M and 100M events the
benchmarks need logs that build fast and deterministically, with the same shape where it matters
for the queries timed: many users, starts spread over a year, activity that thins out with time
(an exponential gap from the start whose scale differs by user, so some users stay for months).
"""

from __future__ import annotations

from pathlib import Path

import duckdb

BENCH_DATA_DIR = Path(__file__).resolve().parent / "data"
EVENTS_PER_USER = 50


def synthetic_events_sql(events: int, events_per_user: int = EVENTS_PER_USER) -> tuple[str, list[object]]:
    """A SELECT producing ``events`` rows in the canonical events shape.

    Users: ``events / events_per_user``; each user's start is uniform over 2025, and each event's
    offset from the start is exponential with a per-user mean between 1 and 60 days (capped at 400), so
    retention falls off like a real product's. Event 0 of each user sits at the start itself.
    """
    users = max(events // events_per_user, 1)
    sql = f"""
        WITH ids AS (SELECT range AS i FROM range({int(events)})),
        rows AS (
            SELECT
                i % {users} AS uid,
                i // {users} AS nth,
                hash(i % {users}, 1) AS user_hash,
                hash(i, 2) AS event_hash
            FROM ids
        )
        SELECT
            'u' || uid::VARCHAR AS user_id,
            TIMESTAMP '2025-01-01'
                + to_seconds((user_hash % 31536000)::BIGINT)
                + CASE WHEN nth = 0 THEN INTERVAL 0 SECOND ELSE to_seconds(least(
                    (-ln(((event_hash % 1000000) + 1) / 1000001.0)
                     * (86400 * (1 + (user_hash // 7) % 60)))::BIGINT, 400 * 86400)) END AS event_time,
            CASE event_hash % 10 WHEN 0 THEN 'purchase' WHEN 1 THEN 'click' WHEN 2 THEN 'click'
                ELSE 'view' END AS event_name,
            CASE WHEN event_hash % 10 = 0 THEN ((event_hash // 10) % 20000) / 100.0 ELSE 0 END AS revenue,
            'i' || ((event_hash // 1000) % 500)::VARCHAR AS item_id,
            's' || uid::VARCHAR || '-' || (nth // 5)::VARCHAR AS session_id
        FROM rows
    """
    return sql, []


def build_events_store(events: int, events_per_user: int = EVENTS_PER_USER) -> Path:
    """A store under bench/data holding ``events`` synthetic events (built once, then reused).

    ``events_per_user`` other than the default gives another file (its name says so).
    """
    from core.schema import user_key_sql
    from core.store import Store

    BENCH_DATA_DIR.mkdir(parents=True, exist_ok=True)
    suffix = "" if events_per_user == EVENTS_PER_USER else f"_per_user_{events_per_user}"
    path = BENCH_DATA_DIR / f"events_{events}{suffix}.duckdb"
    if path.exists():
        # Opening for writing brings a store built by an earlier version up to date (its user
        # index, core/user_index.py); the benchmarks then open it read-only.
        Store(path).close()
        return path
    building = path.with_suffix(".building")
    building.unlink(missing_ok=True)
    sql, params = synthetic_events_sql(events, events_per_user)
    with Store(building) as store, store.transaction() as cursor:
        cursor.execute(
            "INSERT INTO events (user_id, event_time, event_name, revenue, item_id, session_id, user_key) "
            f"SELECT *, {user_key_sql()} FROM ({sql})",
            params,
        )
    building.rename(path)
    return path


def write_events_csv(events: int) -> Path:
    """A CSV of ``events`` synthetic events under bench/data (built once, then reused)."""
    BENCH_DATA_DIR.mkdir(parents=True, exist_ok=True)
    path = BENCH_DATA_DIR / f"events_{events}.csv"
    if path.exists():
        return path
    sql, _ = synthetic_events_sql(events)
    connection = duckdb.connect()
    temporary = path.with_suffix(".partial")
    connection.execute(f"COPY ({sql}) TO '{temporary}' (HEADER, DELIMITER ',')")
    connection.close()
    temporary.rename(path)
    return path
