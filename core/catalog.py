"""What the store holds, for the widgets that offer choices over it.

Catalogue reads, not analyses: the bounds of the date filter, the values of a segment attribute,
the event names, a table's first rows. Kept here so that pages never write SQL.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from core.errors import TenureError
from core.schema import CANONICAL_TABLES
from core.store import Store, quote_identifier


def event_span(store: Store) -> tuple[dt.date | None, dt.date | None]:
    """The first and last day with an event (None, None for an empty store)."""
    first, last = store.query_one("SELECT min(event_time), max(event_time) FROM events")
    return (
        pd.Timestamp(first).date() if first is not None else None,
        pd.Timestamp(last).date() if last is not None else None,
    )


def segment_values(store: Store, attribute: str, limit: int = 500) -> list[str]:
    """The distinct values of a ``users`` attribute, as text, sorted, at most ``limit``."""
    if attribute not in store.column_names("users"):
        raise TenureError(f"'{attribute}' is not a column of the users table", "pick another attribute")
    column = quote_identifier(attribute)
    frame = store.query_df(
        f"SELECT DISTINCT CAST({column} AS VARCHAR) AS value FROM users "
        f"WHERE {column} IS NOT NULL ORDER BY value LIMIT ?",
        [limit],
    )
    return frame["value"].tolist()


def event_names(store: Store) -> list[str]:
    """Event names, most frequent first."""
    frame = store.query_df(
        "SELECT event_name, count(*) AS n FROM events GROUP BY event_name ORDER BY n DESC, event_name"
    )
    return frame["event_name"].tolist()


def preview(store: Store, table: str, rows: int = 20) -> pd.DataFrame:
    """The first ``rows`` rows of a table of the main schema, as loaded: without Tenure's internal
    columns (``events.user_key``), which are no part of the user's data."""
    if table not in store.table_names():
        raise TenureError(f"no table '{table}' in store {store.path}", "pick a table listed on the Data page")
    spec = CANONICAL_TABLES.get(table)
    internal = {column.name for column in spec.internal_columns} if spec else set()
    columns = [name for name in store.column_names(table) if name not in internal]
    selected = ", ".join(quote_identifier(name) for name in columns)
    return store.query_df(f"SELECT {selected} FROM {quote_identifier(table)} LIMIT ?", [rows])
