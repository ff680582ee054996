"""The DuckDB event store: one file, one connection per process, a cursor per caller.

Concurrency design (see docs/ARCHITECTURE.md): DuckDB allows one process to open a file for
writing. The app therefore holds a single ``Store`` per file for the whole process; each reader
(a browser session's script run, a thread) takes its own cursor, and cursors read consistent
snapshots, so readers never block each other and never see a half-finished load. Writers go
through ``Store.transaction()``, which serialises them with a lock and wraps each load in one
transaction: it commits whole or rolls back whole.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from core.errors import TenureError
from core.schema import (
    CANONICAL_TABLES,
    LOAD_HISTORY_DDL,
    MODEL_REGISTRY_DDL,
    STORE_META_DDL,
    create_table_sql,
    user_key_sql,
)
from core.user_index import USER_INDEX_DDL, USER_INDEX_STATE_DDL, refresh_user_index

# Rows of ``events`` inserted without a user key, or keyed by a DuckDB whose hash differs.
_FILL_USER_KEYS = f"UPDATE events SET user_key = {user_key_sql()} WHERE user_key IS NULL"
_STALE_USER_KEYS = f"SELECT user_key <> {user_key_sql()} FROM events WHERE user_key IS NOT NULL LIMIT 1"

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DATA_DIR = PROJECT_ROOT / "sample_data"
DEFAULT_DB_PATH = SAMPLE_DATA_DIR / "tenure.duckdb"
DB_ENV_VAR = "TENURE_DB"


def resolve_db_path(db: str | os.PathLike[str] | None = None) -> Path:
    """The store to use: an explicit path, else ``$TENURE_DB``, else the bundled sample store."""
    if db:
        return Path(db)
    from_env = os.environ.get(DB_ENV_VAR)
    if from_env:
        return Path(from_env)
    return DEFAULT_DB_PATH


def quote_identifier(name: str) -> str:
    """Quote a table or column name for DuckDB SQL (doubling embedded quotes)."""
    return '"' + name.replace('"', '""') + '"'


class Store:
    """A Tenure store on one DuckDB file.

    Args:
        path: the DuckDB file; created with the canonical tables when it does not exist.
        read_only: open without write access (several processes may then read one file).
    """

    def __init__(self, path: str | os.PathLike[str], read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        if read_only and not self.path.exists():
            raise TenureError(
                f"store {self.path} does not exist",
                "build it with `python -m core generate` or load a file with `python -m core ingest`",
            )
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._connection = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as error:
            raise TenureError(
                f"cannot open store {self.path}: {error}",
                "another process may hold it open for writing; close it or use another --db",
            ) from error
        self._write_lock = threading.Lock()
        self._commit_gate = _CommitGate()
        if not read_only:
            self._create_schema()

    def _create_schema(self) -> None:
        """Create the canonical tables (and the internal ones: load history, meta, model registry);
        in a store from before ``events.user_key``, add and fill it.

        Keys written by a DuckDB whose ``hash`` differs from this one's are recomputed too.
        """
        with self._write_lock:
            cursor = self._connection.cursor()
            try:
                cursor.execute("BEGIN TRANSACTION")
                for spec in CANONICAL_TABLES.values():
                    cursor.execute(create_table_sql(spec))
                    for column in spec.internal_columns:
                        cursor.execute(
                            f"ALTER TABLE {quote_identifier(spec.name)} ADD COLUMN IF NOT EXISTS "
                            f"{quote_identifier(column.name)} {column.sql_type}"
                        )
                cursor.execute(LOAD_HISTORY_DDL)
                cursor.execute(STORE_META_DDL)
                cursor.execute(MODEL_REGISTRY_DDL)
                cursor.execute(USER_INDEX_DDL)
                cursor.execute(USER_INDEX_STATE_DDL)
                stale = cursor.execute(_STALE_USER_KEYS).fetchone()
                rekeyed = stale is not None and bool(stale[0])
                if rekeyed:
                    cursor.execute(f"UPDATE events SET user_key = {user_key_sql()}")
                cursor.execute(_FILL_USER_KEYS)
                refresh_user_index(cursor, rebuild=rekeyed)
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            finally:
                cursor.close()

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor of one's own: safe to use from this thread while others read or write.

        Its statements share the commit gate (``_CommitGate``): they never wait for one another,
        only for a load's ``COMMIT`` that is under way, so none of them sees part of a load.
        """
        with self._commit_gate.reading():
            cursor = self._connection.cursor()
            try:
                yield cursor
            finally:
                cursor.close()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The single writer: one transaction that commits whole or rolls back whole.

        Before committing, it fills ``events.user_key`` of rows inserted without one (a check
        that reads only the column's statistics when every row has a key) and brings the user
        index up to date with the rows added (core/user_index.py).
        """
        if self.read_only:
            raise TenureError(f"store {self.path} is open read-only", "open it for writing")
        with self._write_lock:
            cursor = self._connection.cursor()
            try:
                cursor.execute("BEGIN TRANSACTION")
                try:
                    yield cursor
                except BaseException:
                    cursor.execute("ROLLBACK")
                    raise
                try:
                    cursor.execute(_FILL_USER_KEYS)
                    refresh_user_index(cursor)
                except BaseException:
                    cursor.execute("ROLLBACK")
                    raise
                with self._commit_gate.committing():
                    cursor.execute("COMMIT")
            finally:
                cursor.close()

    def query_df(
        self,
        sql: str,
        params: Sequence[Any] | dict[str, Any] | None = None,
        settings: dict[str, int] | None = None,
    ) -> pd.DataFrame:
        """Run a read query with bound parameters and return a DataFrame.

        Args:
            settings: DuckDB settings for this query only (its cursor's), such as the
                ``perfect_ht_threshold`` of queries grouped by the user index's numbers.
        """
        with self.cursor() as cursor:
            for name, value in (settings or {}).items():
                if not name.isidentifier():
                    raise ValueError(f"not a setting name: {name!r}")
                cursor.execute(f"SET {name} = {int(value)}")
            return cursor.execute(sql, params or []).df()

    def query_one(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> tuple:
        with self.cursor() as cursor:
            row = cursor.execute(sql, params or []).fetchone()
        return row if row is not None else ()

    def table_names(self) -> list[str]:
        """Tables of the main schema, canonical ones first."""
        names = [
            row[0]
            for row in self.query_df(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'main' ORDER BY table_name"
            ).itertuples(index=False)
        ]
        canonical = [name for name in CANONICAL_TABLES if name in names]
        return canonical + [name for name in names if name not in canonical]

    def column_names(self, table: str) -> list[str]:
        frame = self.query_df(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'main' AND table_name = ? ORDER BY ordinal_position",
            [table],
        )
        return frame["column_name"].tolist()

    def version(self) -> str:
        """Changes whenever a load commits: the key for caches of query results."""
        row = self.query_one("SELECT count(*), coalesce(max(load_id), 0) FROM load_history")
        return f"{self.path.resolve()}:{row[0]}:{row[1]}"

    def meta(self) -> dict[str, str]:
        frame = self.query_df("SELECT key, value FROM store_meta")
        return dict(zip(frame["key"], frame["value"], strict=True))

    def set_meta(self, cursor: duckdb.DuckDBPyConnection, key: str, value: str) -> None:
        """Record a fact about the store inside the caller's transaction."""
        cursor.execute("INSERT OR REPLACE INTO store_meta (key, value) VALUES (?, ?)", [key, value])

    def data_end(self) -> pd.Timestamp | None:
        """The latest event time in the store: the end of observation for every metric."""
        row = self.query_one("SELECT max(event_time) FROM events")
        return pd.Timestamp(row[0]) if row and row[0] is not None else None


class _CommitGate:
    """Reads share the gate; a ``COMMIT`` takes it alone.

    DuckDB's commit of a large load is not always atomic for a statement that starts while it
    runs: a reader counting events during a 200,000-row load's commit once saw the load less one
    122,880-row group (tests/test_ingest_concurrency.py). So a commit waits for the reads under
    way and holds new ones back until it is done; reads never wait for each other, nor for a
    load's work before its commit. A thread's own reads do not hold back its commit, and a thread
    already reading may open another cursor while a commit waits (no deadlock on itself).
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._readers = 0
        self._committing = False
        self._local = threading.local()

    def _depth(self) -> int:
        return getattr(self._local, "depth", 0)

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._condition:
            if self._depth() == 0:
                while self._committing:
                    self._condition.wait()
            self._readers += 1
            self._local.depth = self._depth() + 1
        try:
            yield
        finally:
            with self._condition:
                self._readers -= 1
                self._local.depth = self._depth() - 1
                self._condition.notify_all()

    @contextmanager
    def committing(self) -> Iterator[None]:
        with self._condition:
            self._committing = True
            while self._readers - self._depth() > 0:
                self._condition.wait()
        try:
            yield
        finally:
            with self._condition:
                self._committing = False
                self._condition.notify_all()
