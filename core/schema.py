"""The canonical tables of a Tenure store, in one place.

Every analysis, the ingest and the simulator rely on these names and types. Extra columns are
allowed: for tables with a JSON column (``events.properties``, ``recommendations.context``) the
ingest packs unknown columns into it; for the others it adds them as new columns (user attributes
such as ``country`` or ``plan`` live that way in ``users``).

All timestamps are naive ``TIMESTAMP`` values in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    """One canonical column: its DuckDB type, whether a load must provide it, and its default."""

    name: str
    sql_type: str
    required: bool = False
    default_sql: str | None = None


@dataclass(frozen=True)
class TableSpec:
    """A canonical table: its columns in order and the JSON column that collects extra fields.

    ``internal_columns`` are Tenure's own: created with the table, filled by the writers of the
    store, never read from a file, mapped to or shown as a column of a user's data.
    """

    name: str
    columns: tuple[Column, ...]
    extras_json_column: str | None = None
    internal_columns: tuple[Column, ...] = ()
    # The columns a load hashes to find candidate exact duplicates (empty: all of the file's
    # columns). Hashing a few cheap columns while the file is read costs less than hashing every
    # column; the rows that share their values are compared in full afterwards.
    duplicate_key: tuple[str, ...] = ()

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns if column.required)

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)


EVENTS = TableSpec(
    "events",
    (
        Column("user_id", "VARCHAR", required=True),
        Column("event_time", "TIMESTAMP", required=True),
        Column("event_name", "VARCHAR", required=True),
        Column("revenue", "DOUBLE", default_sql="0"),
        Column("item_id", "VARCHAR"),
        Column("session_id", "VARCHAR"),
        Column("properties", "JSON"),
    ),
    extras_json_column="properties",
    internal_columns=(Column("user_key", "UBIGINT"),),
    duplicate_key=("user_id", "event_time"),
)
"""``events.user_key`` is ``hash(user_id)`` (DuckDB's 64-bit hash, ``user_key_sql``): analyses that
group or join events by user (cohort retention) do it on this integer, several times faster than
on the text ``user_id``. Every writer fills it (the ingest, the simulator), ``Store.transaction``
fills rows inserted without one, and opening a store for writing adds and fills the column in
stores from before it existed. Readers use it only where every row has a key that matches this
DuckDB's ``hash`` (``core.population.keyed_events_sql``), else they hash ``user_id`` themselves.

Two distinct user ids with the same key would count as one user. With n users the chance that
any two of them share a key is about n^2 / 2^65 (the birthday bound): 3e-8 for a million users,
3e-4 for a hundred million. Ruling it out exactly would need every load to compare user ids
across the whole table, so it is not checked.
"""


def user_key_sql(user_id_sql: str = "user_id") -> str:
    """SQL for the user key (``events.user_key``) of the text user id ``user_id_sql``."""
    return f"hash({user_id_sql})"


USERS = TableSpec(
    "users",
    (
        Column("user_id", "VARCHAR", required=True),
        Column("signup_time", "TIMESTAMP"),
    ),
)

ITEMS = TableSpec(
    "items",
    (
        Column("item_id", "VARCHAR", required=True),
        Column("title", "VARCHAR"),
        Column("category", "VARCHAR"),
        Column("price", "DOUBLE"),
    ),
)

ASSIGNMENTS = TableSpec(
    "assignments",
    (
        Column("user_id", "VARCHAR", required=True),
        Column("experiment", "VARCHAR", required=True),
        Column("variant", "VARCHAR", required=True),
        Column("assigned_time", "TIMESTAMP", required=True),
        Column("propensity", "DOUBLE"),
    ),
)

RECOMMENDATIONS = TableSpec(
    "recommendations",
    (
        Column("rec_time", "TIMESTAMP", required=True),
        Column("request_id", "VARCHAR"),
        Column("user_id", "VARCHAR"),
        Column("policy", "VARCHAR"),
        Column("item_id", "VARCHAR", required=True),
        Column("position", "INTEGER"),
        Column("propensity", "DOUBLE"),
        Column("reward", "DOUBLE"),
        Column("context", "JSON"),
    ),
    extras_json_column="context",
)

CANONICAL_TABLES: dict[str, TableSpec] = {
    spec.name: spec for spec in (EVENTS, USERS, ITEMS, ASSIGNMENTS, RECOMMENDATIONS)
}

# The time column of each table: what "date range" means for it on the Data page and in `info`.
TIME_COLUMNS: dict[str, str] = {
    "events": "event_time",
    "users": "signup_time",
    "assignments": "assigned_time",
    "recommendations": "rec_time",
}

# Column names that people's exports commonly use, mapped to the canonical name. Keys are
# compared case-insensitively. `--map SRC=DST` overrides any of these.
COLUMN_ALIASES: dict[str, str] = {
    "userid": "user_id",
    "user": "user_id",
    "customer_id": "user_id",
    "customerid": "user_id",
    "timestamp": "event_time",
    "time": "event_time",
    "date": "event_time",
    "ts": "event_time",
    "event": "event_name",
    "event_type": "event_name",
    "action": "event_name",
    "amount": "revenue",
    "value": "revenue",
    "dollar_value": "revenue",
}

LOAD_HISTORY_DDL = """
CREATE TABLE IF NOT EXISTS load_history (
    load_id INTEGER PRIMARY KEY,
    source VARCHAR NOT NULL,
    table_name VARCHAR NOT NULL,
    content_hash VARCHAR NOT NULL,
    rows_accepted BIGINT NOT NULL,
    rows_rejected BIGINT NOT NULL,
    duplicates_dropped BIGINT NOT NULL,
    loaded_at TIMESTAMP NOT NULL
)
"""

# Key-value facts about the store: which dataset it holds, where the data comes from.
STORE_META_DDL = """
CREATE TABLE IF NOT EXISTS store_meta (key VARCHAR PRIMARY KEY, value VARCHAR)
"""

# Trained models, one row per model folder (core/models/registry.py). Created with the store's
# other tables; opening an older store for writing adds it, and readers of a store opened
# read-only that lacks it see no models.
MODEL_REGISTRY_DDL = """
CREATE TABLE IF NOT EXISTS model_registry (
    model_id VARCHAR PRIMARY KEY,
    run_dir VARCHAR NOT NULL,
    model_name VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    path VARCHAR NOT NULL,
    created_at TIMESTAMP,
    registered_at TIMESTAMP NOT NULL,
    as_of TIMESTAMP,
    horizon_days INTEGER,
    split VARCHAR,
    seed INTEGER,
    metrics JSON,
    filters JSON,
    data_version VARCHAR
)
"""


def create_table_sql(spec: TableSpec) -> str:
    """`CREATE TABLE IF NOT EXISTS` for a canonical table; required columns are NOT NULL."""
    parts = []
    for column in (*spec.columns, *spec.internal_columns):
        part = f'"{column.name}" {column.sql_type}'
        if column.default_sql is not None:
            part += f" DEFAULT {column.default_sql}"
        if column.required:
            part += " NOT NULL"
        parts.append(part)
    return f'CREATE TABLE IF NOT EXISTS "{spec.name}" ({", ".join(parts)})'
