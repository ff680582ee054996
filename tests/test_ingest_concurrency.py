"""Readers on their own cursors while a load runs: they never wait and never see half a load."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import duckdb

from core.ingest import ingest_file
from core.store import Store

LOAD_ROWS = 200_000
READERS = 3


def test_readers_see_before_or_after_and_keep_going(tmp_path: Path):
    path = tmp_path / "events.csv"
    with duckdb.connect() as connection:
        connection.execute(
            "COPY (SELECT 'u' || (i % 5000) AS user_id, TIMESTAMP '2024-01-01' + to_seconds(i * 13) AS event_time, "
            "['view', 'click', 'purchase'][1 + i % 3] AS event_name, (i % 11) * 1.5 AS revenue, "
            "'s' || (i // 9) AS session_id, i % 4 AS device FROM range(?) t(i)) TO ? (HEADER)",
            [LOAD_ROWS, str(path)],
        )
    seed = tmp_path / "seed.csv"
    seed.write_text("user_id,event_time,event_name\nu0,2023-12-31,signup\nu1,2023-12-31,signup\n")
    with Store(tmp_path / "store.duckdb") as store:
        before = ingest_file(store, seed, table="events").rows_accepted
        after = before + LOAD_ROWS
        load_started = threading.Event()
        load_done = threading.Event()
        stop = threading.Event()
        seen: list[list[tuple[float, int]]] = [[] for _ in range(READERS)]
        errors: list[BaseException] = []
        window: dict[str, float] = {}

        def read(slot: int) -> None:
            # As the app reads: a cursor per query (docs/ARCHITECTURE.md, "A cursor per caller").
            try:
                while not stop.is_set():
                    with store.cursor() as cursor:
                        count = cursor.execute("SELECT count(*) FROM events").fetchone()[0]
                    seen[slot].append((time.perf_counter(), count))
            except BaseException as error:
                errors.append(error)

        def load() -> None:
            try:
                load_started.set()
                window["start"] = time.perf_counter()
                result = ingest_file(store, path, table="events")
                window["end"] = time.perf_counter()
                assert result.rows_accepted == LOAD_ROWS
            except BaseException as error:
                errors.append(error)
            finally:
                load_done.set()

        readers = [threading.Thread(target=read, args=(slot,)) for slot in range(READERS)]
        for reader in readers:
            reader.start()
        loader = threading.Thread(target=load)
        loader.start()
        load_done.wait(timeout=120)
        time.sleep(0.2)
        stop.set()
        loader.join(timeout=30)
        for reader in readers:
            reader.join(timeout=30)

    assert not errors, errors
    counts = {count for reads in seen for _, count in reads}
    assert counts <= {before, after}, sorted(counts)
    assert after in counts
    for reads in seen:
        during = [count for moment, count in reads if window["start"] < moment < window["end"]]
        assert len(during) >= 3, f"a reader completed only {len(during)} counts during the load"
        assert set(during) <= {before, after}
