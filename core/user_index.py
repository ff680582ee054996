"""The user index: each user's first event and a dense number, kept up to date by every write.

Analyses over 10M+ events spend most of their time on per-user work: each user's first event (a
hash aggregate over every event), then each event joined to its user and grouped by user again.
Grouped by the 64-bit ``events.user_key``, both aggregates are hash aggregates. The index gives
each user a number 0..n-1 (``user_no``), stored, so DuckDB knows its range from the table's
statistics and groups by it with a perfect hash table (an array indexed by the number), and it
keeps ``min(event_time)`` per user so the first-event start needs no pass over the events. On the
10M-event benchmark, weekly cohort retention by first event took 0.30 s to 0.32 s with the index
against 0.46 s to 0.57 s without (docs/BENCHMARKS.md).

Definition: for every ``user_key`` of ``events``, one row ``(user_key, user_no, first_time)`` with
``first_time = min(event_time)`` over that user's events; ``user_no`` values are distinct and
cover 0..n-1. ``user_index_state.events_rows`` is the number of event rows the index describes.

Upkeep: ``Store.transaction`` calls ``refresh_user_index`` before every commit, and opening a store
for writing calls it too (stores from before the index get it then). A load appends rows, so the
refresh aggregates only the rows after ``events_rows`` (their row ids come after every committed
row's) and merges them in: new users get the next numbers, known users keep theirs and take the
earlier first time. A write that leaves the number of events as it was changes nothing (read
from the row count alone). When the committed rows are not the ones counted (rows deleted by a
writer outside Tenure), the index is rebuilt from all events.

Readers use it only when ``user_index_ready``: the index exists and counts as many event rows as
``events`` holds. A writer outside Tenure that appends events without a refresh makes it not
ready, and analyses fall back to computing first events themselves (same results, slower). One
that deletes and appends the same number of rows outside Tenure leaves the count equal, which is
not detected (DuckDB may renumber the row ids of a table with deleted rows when it checkpoints);
after such an edit, ``DELETE FROM user_index_state``: the next opening for writing rebuilds the
index.
"""

from __future__ import annotations

import math

import duckdb

USER_INDEX_DDL = """
CREATE TABLE IF NOT EXISTS user_index (user_key UBIGINT, user_no INTEGER, first_time TIMESTAMP)
"""
USER_INDEX_STATE_DDL = """
CREATE TABLE IF NOT EXISTS user_index_state (events_rows BIGINT NOT NULL)
"""
USER_INDEX_TABLES = ("user_index", "user_index_state")

_NEW_STARTS = "user_index_new"

# DuckDB uses a perfect hash aggregate only for groups whose range fits in this many bits (its
# default is 12). Each group takes its aggregate states times the threads in such a table, so the
# range is capped: beyond 2^21 users (2M) the grouping falls back to DuckDB's hash aggregate.
MAX_PERFECT_HASH_BITS = 21


def refresh_user_index(cursor: duckdb.DuckDBPyConnection, *, rebuild: bool = False) -> None:
    """Bring the index up to date with ``events`` inside the caller's transaction.

    Its tables exist already: ``Store`` creates them when it opens a store for writing.

    Args:
        rebuild: index all events again (after ``events.user_key`` was recomputed).
    """
    state = cursor.execute("SELECT max(events_rows) FROM user_index_state").fetchone()
    indexed = state[0] if state is not None else None
    total = cursor.execute("SELECT count(*) FROM events").fetchone()[0]
    if not rebuild and indexed == total:
        # Nothing added: a write that was not a load, read from the table's row count alone
        # (a count of row ids, below, takes 0.09 s on 100M events).
        return
    before = cursor.execute("SELECT count(*) FROM events WHERE rowid < ?", [indexed or 0]).fetchone()[0]
    since = indexed if not rebuild and indexed is not None and before == indexed else 0
    if since == 0:
        cursor.execute("DELETE FROM user_index")
    cursor.execute(
        f"CREATE OR REPLACE TEMP TABLE {_NEW_STARTS} AS "
        "SELECT user_key, min(event_time) AS first_time FROM events "
        "WHERE rowid >= ? AND user_key IS NOT NULL GROUP BY user_key",
        [since],
    )
    try:
        cursor.execute(
            f"UPDATE user_index SET first_time = n.first_time FROM temp.{_NEW_STARTS} n "
            "WHERE user_index.user_key = n.user_key AND n.first_time IS NOT NULL "
            "AND (user_index.first_time IS NULL OR n.first_time < user_index.first_time)"
        )
        cursor.execute(
            "INSERT INTO user_index (user_key, user_no, first_time) "
            "SELECT n.user_key, CAST(b.next_no + row_number() OVER () - 1 AS INTEGER), n.first_time "
            f"FROM temp.{_NEW_STARTS} n "
            "CROSS JOIN (SELECT coalesce(max(user_no) + 1, 0) AS next_no FROM user_index) b "
            "ANTI JOIN user_index i ON i.user_key = n.user_key"
        )
    finally:
        cursor.execute(f"DROP TABLE IF EXISTS temp.{_NEW_STARTS}")
    cursor.execute("DELETE FROM user_index_state")
    cursor.execute("INSERT INTO user_index_state VALUES (?)", [total])


def user_index_ready(cursor: duckdb.DuckDBPyConnection) -> bool:
    """Whether the index describes exactly the rows ``events`` holds now."""
    try:
        row = cursor.execute(
            "SELECT (SELECT max(events_rows) FROM user_index_state) = (SELECT count(*) FROM events)"
        ).fetchone()
    except duckdb.CatalogException:
        return False
    return bool(row is not None and row[0])


def perfect_hash_bits(cursor: duckdb.DuckDBPyConnection) -> int | None:
    """The ``perfect_ht_threshold`` that lets DuckDB group by ``user_no`` with a perfect hash
    table, or None when the index is too large for one (``MAX_PERFECT_HASH_BITS``)."""
    row = cursor.execute("SELECT count(*) FROM user_index").fetchone()
    users = int(row[0]) if row is not None else 0
    bits = max(12, math.ceil(math.log2(users + 1)))
    return bits if bits <= MAX_PERFECT_HASH_BITS else None
