"""The user index (core/user_index.py) against pandas' first event per user, through every write.

Each check recomputes ``min(event_time)`` per user from the events with pandas and compares it to
the index, and checks that the users' numbers are 0..n-1 with none repeated.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pytest

import core.user_index
from core.ingest import BadRowsError, ingest_file
from core.population import Filters
from core.retention import RetentionSpec, _user_pieces_sql, retention_table
from core.store import Store
from core.user_index import perfect_hash_bits, user_index_ready

FIRST_LOAD = """user_id,event_time,event_name
a,2024-01-05 10:00:00,open
a,2024-01-09 10:00:00,view
b,2024-01-06 08:00:00,open
c,2024-02-01 12:00:00,open
"""

# a gets an earlier first event, d and e are new, c only a later one.
SECOND_LOAD = """user_id,event_time,event_name
a,2024-01-01 09:00:00,open
d,2024-01-20 10:00:00,open
e,2024-03-01 10:00:00,open
c,2024-03-02 12:00:00,view
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def store_with_first_load(tmp_path: Path) -> Path:
    """A store file holding FIRST_LOAD, loaded by the ingest."""
    path = tmp_path / "store.duckdb"
    with Store(path) as store:
        ingest_file(store, write(tmp_path, "first.csv", FIRST_LOAD), table="events")
    return path


def first_events(connection: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """The reference: each user's first event, computed by pandas from the rows of events."""
    events = connection.execute("SELECT user_key, event_time FROM events").df()
    return (
        events.groupby("user_key")["event_time"]
        .min()
        .rename("first_time")
        .reset_index()
        .sort_values("user_key", ignore_index=True)
    )


def index_rows(connection: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return connection.execute("SELECT user_key, user_no, first_time FROM user_index ORDER BY user_key").df()


def assert_index_matches_events(path: Path) -> pd.DataFrame:
    with duckdb.connect(str(path), read_only=True) as connection:
        assert user_index_ready(connection)
        index = index_rows(connection)
        expected = first_events(connection)
    pd.testing.assert_frame_equal(
        index[["user_key", "first_time"]], expected, check_dtype=False, check_index_type=False
    )
    assert sorted(index["user_no"]) == list(range(len(index)))
    return index


def numbers_by_user(path: Path) -> dict[str, int]:
    with duckdb.connect(str(path), read_only=True) as connection:
        rows = connection.execute(
            "SELECT DISTINCT e.user_id, i.user_no FROM events e JOIN user_index i USING (user_key)"
        ).fetchall()
    return dict(rows)


def test_loads_keep_the_index_equal_to_the_events(tmp_path):
    path = store_with_first_load(tmp_path)
    assert len(assert_index_matches_events(path)) == 3
    before = numbers_by_user(path)
    with Store(path) as store:
        ingest_file(store, write(tmp_path, "second.csv", SECOND_LOAD), table="events")
    index = assert_index_matches_events(path)
    assert len(index) == 5
    after = numbers_by_user(path)
    # Known users keep their numbers; new ones take the next free ones.
    assert {user: after[user] for user in before} == before
    assert sorted(after[user] for user in ("d", "e")) == [3, 4]
    with duckdb.connect(str(path), read_only=True) as connection:
        first_of_a = connection.execute(
            "SELECT i.first_time FROM user_index i JOIN (SELECT DISTINCT user_key FROM events "
            "WHERE user_id = 'a') e USING (user_key)"
        ).fetchone()[0]
    assert first_of_a == pd.Timestamp("2024-01-01 09:00:00")


def test_a_refused_load_leaves_the_index_as_it_was(tmp_path):
    path = store_with_first_load(tmp_path)
    before = assert_index_matches_events(path)
    bad = SECOND_LOAD + "f,not a time,open\n"
    with Store(path) as store, pytest.raises(BadRowsError):
        ingest_file(store, write(tmp_path, "bad.csv", bad), table="events")
    pd.testing.assert_frame_equal(assert_index_matches_events(path), before)


def test_every_write_through_a_transaction_refreshes_it(tmp_path):
    path = store_with_first_load(tmp_path)
    with Store(path) as store, store.transaction() as cursor:
        # A writer that gives no user key: the transaction fills it, then the index.
        cursor.execute(
            "INSERT INTO events (user_id, event_time, event_name) "
            "VALUES ('b', '2023-12-31 23:00:00', 'open'), ('z', '2024-05-01 00:00:00', 'open')"
        )
    index = assert_index_matches_events(path)
    assert len(index) == 4


def test_an_append_from_outside_is_seen_and_repaired_on_the_next_open(tmp_path):
    path = store_with_first_load(tmp_path)
    with duckdb.connect(str(path)) as connection:
        connection.execute(
            "INSERT INTO events (user_id, event_time, event_name, user_key) "
            "VALUES ('a', '2023-06-01 00:00:00', 'open', hash('a'))"
        )
        assert not user_index_ready(connection)
    with Store(path, read_only=True) as store:
        # Not ready: retention finds first events itself.
        assert _user_pieces_sql(store, RetentionSpec(), Filters()).user_column == "user_key"
        scanned = retention_table(store, RetentionSpec(period="month"), Filters())
    with Store(path):
        pass  # opening for writing brings the index up to date
    assert_index_matches_events(path)
    with Store(path, read_only=True) as store:
        assert _user_pieces_sql(store, RetentionSpec(), Filters()).user_column == "user_no"
        pd.testing.assert_frame_equal(
            retention_table(store, RetentionSpec(period="month"), Filters()), scanned
        )


def test_a_delete_from_outside_rebuilds_the_index(tmp_path):
    path = store_with_first_load(tmp_path)
    with duckdb.connect(str(path)) as connection:
        # a's first event goes, and c's only one: a starts later and c is no user any more.
        connection.execute(
            "DELETE FROM events WHERE (user_id = 'a' AND event_time = '2024-01-05 10:00:00') OR user_id = 'c'"
        )
        assert not user_index_ready(connection)
    with Store(path) as store:
        # The next write sees committed rows that are not the ones counted, and rebuilds.
        ingest_file(store, write(tmp_path, "second.csv", SECOND_LOAD), table="events")
    index = assert_index_matches_events(path)
    assert len(index) == 5  # a, b, c (back from the second load), d, e


def test_an_outside_delete_and_append_of_as_many_rows_is_repaired_as_documented(tmp_path):
    path = store_with_first_load(tmp_path)
    with duckdb.connect(str(path)) as connection:
        # b's only event goes and a new user's comes: the row count is unchanged, so the index
        # still looks ready; the remedy core/user_index.py gives is to drop its state row.
        connection.execute("DELETE FROM events WHERE user_id = 'b'")
        connection.execute(
            "INSERT INTO events (user_id, event_time, event_name, user_key) "
            "VALUES ('y', '2024-04-01 00:00:00', 'open', hash('y'))"
        )
        assert user_index_ready(connection)
        connection.execute("DELETE FROM user_index_state")
        assert not user_index_ready(connection)
    with Store(path):
        pass
    index = assert_index_matches_events(path)
    assert len(index) == 3


def test_keys_from_another_hash_are_recomputed_and_reindexed(tmp_path):
    path = store_with_first_load(tmp_path)
    with duckdb.connect(str(path)) as connection:
        # As if written by a DuckDB whose hash differs; the index counts the same rows.
        connection.execute("UPDATE events SET user_key = user_key // 2")
        connection.execute("UPDATE user_index SET user_key = user_key // 2")
    with Store(path):
        pass
    assert_index_matches_events(path)
    with duckdb.connect(str(path), read_only=True) as connection:
        assert connection.execute("SELECT bool_and(user_key = hash(user_id)) FROM events").fetchone()[0]


def test_a_store_from_before_the_index_gets_it_when_opened_for_writing(tmp_path):
    path = store_with_first_load(tmp_path)
    with duckdb.connect(str(path)) as connection:
        connection.execute("DROP TABLE user_index")
        connection.execute("DROP TABLE user_index_state")
    with Store(path, read_only=True) as store:
        with store.cursor() as cursor:
            assert not user_index_ready(cursor)
        assert not retention_table(store, RetentionSpec(), Filters()).empty
    with Store(path):
        pass
    assert len(assert_index_matches_events(path)) == 3


def test_perfect_hash_threshold_fits_the_users_or_is_left_alone(tmp_path, monkeypatch):
    path = store_with_first_load(tmp_path)
    with Store(path) as store:
        ingest_file(store, write(tmp_path, "second.csv", SECOND_LOAD), table="events")
        with store.cursor() as cursor:
            assert perfect_hash_bits(cursor) == 12  # DuckDB's default covers 5 users
        spec = RetentionSpec(period="day", max_periods=70)
        expected = retention_table(store, spec, Filters())
        assert _user_pieces_sql(store, spec, Filters()).settings == {"perfect_ht_threshold": 12}
        monkeypatch.setattr(core.user_index, "MAX_PERFECT_HASH_BITS", 2)
        with store.cursor() as cursor:
            assert perfect_hash_bits(cursor) is None
        assert _user_pieces_sql(store, spec, Filters()).settings == {}
        pd.testing.assert_frame_equal(retention_table(store, spec, Filters()), expected)


@pytest.mark.parametrize(("users", "bits"), [(0, 12), (4095, 12), (4096, 13), (200_000, 18), (2**21 - 1, 21)])
def test_perfect_hash_bits_cover_the_numbers(tmp_path, users, bits):
    with duckdb.connect() as connection:
        connection.execute(core.user_index.USER_INDEX_DDL)
        connection.execute(
            "INSERT INTO user_index SELECT range, CAST(range AS INTEGER), NULL FROM range(?)", [users]
        )
        assert perfect_hash_bits(connection) == bits
        # Numbers 0..users-1 need exactly that many bits.
        assert users == 0 or (users - 1).bit_length() <= bits
