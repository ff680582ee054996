"""How the ingest turns a file's time column into a naive UTC ``TIMESTAMP``, in SQL.

Everything happens in one vectorised SQL expression per column (no Python per row). The
expression depends on the type the column has in the staging table (the CSV sniffer's type, or
the Parquet type), and yields NULL where a value cannot be read; the ingest reports those rows
as bad, with their line numbers.

Rules, in the order they are tried (docs/METRICS.md repeats them):

1. Text in ISO 8601 form: ``2024-03-01``, ``2024-03-01 13:45``, ``2024-03-01T13:45:12.345``,
   with or without a zone (``Z``, ``+02:00``, ``-0530``, or a zone name such as
   ``Europe/Paris``). A value with a zone is converted to UTC; a value without one is taken to be
   UTC already. A date alone means midnight UTC. The session time zone of the loading cursor is
   set to UTC, so the machine's local zone never enters.
2. A number (an integer or decimal column, or text that reads as a number):

   - a positive integer of exactly 8 digits is a date ``YYYYMMDD`` at midnight (``20240301``);
     if it is not a calendar date (``20241301``) the row is bad. Epoch seconds of that size
     (1970-04-26 to 1973-03-03) are therefore not supported: they are far rarer than
     ``YYYYMMDD`` in exports;
   - otherwise, ``|n| < 10^11`` is epoch seconds (up to the year 5138; decimals keep their
     fraction);
   - otherwise, ``|n| < 10^14`` is epoch milliseconds (from 1973-03-03 to the year 5138);
   - anything larger (microseconds, nanoseconds) is not recognised: the row is bad.

   The rule is applied value by value, so a column may mix dates and epoch values.
3. Date and timestamp columns of a Parquet file are used as they are (a zoned timestamp is
   converted to UTC); timestamps with a precision other than microseconds are cast to
   microseconds.

Any other text (``01/02/2024``, ``March 1``) is not guessed at: day-first and month-first
orders cannot be told apart, so such rows are reported as bad and the user converts the column.
"""

from __future__ import annotations

EPOCH_SECONDS_LIMIT = 10**11
EPOCH_MILLISECONDS_LIMIT = 10**14
YYYYMMDD_MIN = 10_000_000
YYYYMMDD_MAX = 99_999_999

INTEGER_TYPES = frozenset(
    {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"}
)
FLOAT_TYPES = frozenset({"FLOAT", "DOUBLE", "REAL"})
TIMESTAMP_TYPES = frozenset({"TIMESTAMP", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS", "DATE"})
ZONED_TIMESTAMP_TYPES = frozenset({"TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ"})
TEXT_TYPES = frozenset({"VARCHAR"})


def is_numeric_type(sql_type: str) -> bool:
    return sql_type in INTEGER_TYPES or sql_type in FLOAT_TYPES or sql_type.startswith("DECIMAL")


def _utc(zoned: str) -> str:
    """The naive UTC timestamp of a ``TIMESTAMPTZ``: plain arithmetic on its epoch microseconds,
    much faster than a zone conversion."""
    return f"make_timestamp(epoch_us({zoned}))"


def _from_integer(value: str) -> str:
    """Timestamp from a BIGINT expression: YYYYMMDD, epoch seconds or epoch milliseconds."""
    return (
        f"CASE WHEN {value} BETWEEN {YYYYMMDD_MIN} AND {YYYYMMDD_MAX} "
        f"THEN CAST(try_strptime(CAST({value} AS VARCHAR), '%Y%m%d') AS TIMESTAMP) "
        f"WHEN abs({value}) < {EPOCH_SECONDS_LIMIT} THEN make_timestamp({value} * 1000000) "
        f"WHEN abs({value}) < {EPOCH_MILLISECONDS_LIMIT} THEN make_timestamp({value} * 1000) "
        "END"
    )


def _from_number(value: str) -> str:
    """Timestamp from a DOUBLE expression; integral values follow the integer rules."""
    return (
        f"CASE WHEN NOT isfinite({value}) THEN NULL "
        f"WHEN {value} = trunc({value}) AND abs({value}) < {EPOCH_MILLISECONDS_LIMIT} "
        f"THEN {_from_integer(f'CAST({value} AS BIGINT)')} "
        f"WHEN abs({value}) < {EPOCH_SECONDS_LIMIT} THEN make_timestamp(CAST(round({value} * 1e6) AS BIGINT)) "
        f"WHEN abs({value}) < {EPOCH_MILLISECONDS_LIMIT} "
        f"THEN make_timestamp(CAST(round({value} * 1e3) AS BIGINT)) "
        "END"
    )


def timestamp_sql(value: str, source_type: str) -> str:
    """SQL for the naive UTC timestamp of ``value`` (an SQL expression of type ``source_type``).

    The expression is NULL where the value is NULL or cannot be read by the rules above. The
    caller must have run ``SET TimeZone = 'UTC'`` on the cursor that evaluates it.
    """
    source_type = source_type.upper()
    if source_type in ZONED_TIMESTAMP_TYPES:
        return _utc(value)
    if source_type in TIMESTAMP_TYPES:
        return f"CAST({value} AS TIMESTAMP)"
    if source_type in INTEGER_TYPES:
        return _from_integer(f"TRY_CAST({value} AS BIGINT)")
    if is_numeric_type(source_type):
        return _from_number(f"CAST({value} AS DOUBLE)")
    if source_type in TEXT_TYPES:
        text = f"trim({value})"
        return (
            f"coalesce({_utc(f'TRY_CAST({text} AS TIMESTAMPTZ)')}, "
            f"{_from_number(f'TRY_CAST({text} AS DOUBLE)')})"
        )
    return "CAST(NULL AS TIMESTAMP)"
