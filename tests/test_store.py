"""The store's internal user key: every writer fills ``events.user_key = hash(user_id)``, and
stores from before the column get it when opened for writing."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from core.ingest import ingest_file
from core.population import keyed_events_sql
from core.store import Store


def key_counts(path: Path) -> tuple[int, int, int]:
    """Rows, rows without a key, rows whose key is not this DuckDB's hash of their user id."""
    with duckdb.connect(str(path), read_only=True) as connection:
        return connection.execute(
            "SELECT count(*), count(*) FILTER (user_key IS NULL), "
            "count(*) FILTER (user_key <> hash(user_id)) FROM events"
        ).fetchone()


def test_simulator_fills_keys(small_store_path):
    rows, missing, wrong = key_counts(small_store_path)
    assert rows > 0 and missing == 0 and wrong == 0


def test_ingest_fills_keys_and_never_maps_a_file_column_to_them(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(
        "user_id,event_time,event_name,user_key\n"
        "u1,2024-01-01 10:00:00,open,7\n"
        "u2,2024-01-02 10:00:00,open,7\n"
        "u1,2024-01-03 10:00:00,buy,7\n"
    )
    with Store(tmp_path / "store.duckdb") as store:
        ingest_file(store, path, table="events")
        # A user id set for every row (`--set user_id=u9`) is keyed as well.
        constant = tmp_path / "constant.csv"
        constant.write_text("event_time,event_name\n2024-01-04 10:00:00,open\n2024-01-05 10:00:00,open\n")
        ingest_file(store, constant, table="events", constants={"user_id": "u9"})
        properties = store.query_df(
            "SELECT DISTINCT properties->>'user_key' AS value FROM events WHERE user_id <> 'u9'"
        )
    assert properties["value"].tolist() == ["7"]
    rows, missing, wrong = key_counts(tmp_path / "store.duckdb")
    assert (rows, missing, wrong) == (5, 0, 0)


def test_transaction_fills_rows_inserted_without_a_key(tmp_path):
    path = tmp_path / "store.duckdb"
    with Store(path) as store, store.transaction() as cursor:
        cursor.execute(
            "INSERT INTO events (user_id, event_time, event_name) VALUES ('a', TIMESTAMP '2024-01-01', 'x')"
        )
    assert key_counts(path) == (1, 0, 0)


def test_store_from_before_the_key_gets_it_when_opened_for_writing(tmp_path):
    path = tmp_path / "store.duckdb"
    with Store(path) as store, store.transaction() as cursor:
        cursor.execute(
            "INSERT INTO events (user_id, event_time, event_name) "
            "SELECT 'u' || (range % 50), TIMESTAMP '2024-01-01' + to_days(range % 90), 'x' FROM range(500)"
        )
    with duckdb.connect(str(path)) as connection:
        connection.execute("ALTER TABLE events DROP COLUMN user_key")
    with Store(path, read_only=True) as store:
        assert keyed_events_sql(store) != "events"
    with Store(path):
        pass
    assert key_counts(path) == (500, 0, 0)
    with Store(path, read_only=True) as store:
        assert keyed_events_sql(store) == "events"


@pytest.mark.parametrize(
    "damage",
    ["UPDATE events SET user_key = NULL WHERE user_id = 'u3'", "UPDATE events SET user_key = user_key + 1"],
)
def test_missing_or_stale_keys_are_not_used_and_are_refilled(tmp_path, damage):
    path = tmp_path / "store.duckdb"
    with Store(path) as store, store.transaction() as cursor:
        cursor.execute(
            "INSERT INTO events (user_id, event_time, event_name) "
            "SELECT 'u' || (range % 50), TIMESTAMP '2024-01-01' + to_days(range % 90), 'x' FROM range(500)"
        )
    with duckdb.connect(str(path)) as connection:
        connection.execute(damage)
    with Store(path, read_only=True) as store:
        assert keyed_events_sql(store) != "events"
    with Store(path):
        pass
    assert key_counts(path) == (500, 0, 0)


def test_commit_gate_holds_reads_back_only_during_a_commit():
    """A commit waits for the reads under way and holds new ones back until it is done; reads
    never wait for each other; a thread's own open read does not block its commit."""
    import threading
    import time

    from core.store import _CommitGate

    gate = _CommitGate()
    order: list[str] = []
    with gate.reading(), gate.reading():  # two reads at once, no waiting
        committed = threading.Event()

        def commit() -> None:
            with gate.committing():
                order.append("commit")
            committed.set()

        writer = threading.Thread(target=commit)
        writer.start()
        time.sleep(0.2)
        assert not committed.is_set()  # waits for the reads under way

        def late_read() -> None:
            with gate.reading():
                order.append("late read")

        reader = threading.Thread(target=late_read)
        reader.start()
        time.sleep(0.2)
        assert order == []  # the new read waits for the pending commit
    writer.join(timeout=5)
    reader.join(timeout=5)
    assert order == ["commit", "late read"]
    with gate.reading(), gate.committing():  # the thread's own read does not block its commit
        order.append("own commit")
    assert order[-1] == "own commit"
