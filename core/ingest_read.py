"""Reading an input file for the ingest: checks, content hash, and one read into a staging table.

The file is read once, by DuckDB's own readers (``read_csv`` with its dialect and type sniffer,
``read_parquet``), into a temporary table of the loading cursor. Each staged row knows its line
in the file (``StagedFile.line_sql``): for a CSV the header is line 1 and the first record
line 2 (a quoted value spanning several lines counts as one line, and blank lines, which the
reader skips, are not counted); for Parquet it is the row number plus one, so the two read alike.

Types: CSV columns keep the sniffer's types, except that text-like canonical columns (ids,
names) are read as text so ``00042`` stays ``00042``, and the time column is read as
``TIMESTAMPTZ`` when the sniffer found ISO timestamps (an offset on any row is then honoured).
If a later row does not fit a sniffed type (the sniffer samples the file), the load starts over
and reads every column as text, so the values are validated one by one and the bad rows are
reported with their lines rather than failing the whole read.

Rows with more or fewer fields than the header make DuckDB's reader fail. The load then starts
over with a slower read that keeps every record (``RaggedRows``): each column as text, short rows
padded, surplus fields in extra columns, and each record's field count stored, so a record of
the wrong width becomes a bad row like any other and the lines of all rows stay as above.
(DuckDB's own rejects table is not used for this: its line numbers count blank lines, which the
line numbers here do not.)
"""

from __future__ import annotations

import hashlib
import re
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from core.errors import TenureError
from core.store import quote_identifier

HASH_BLOCK_BYTES = 1 << 20
STAGING_TABLE = "ingest_staging"
STAGING_LINE = "__tenure_line"
STAGING_ROW_HASH = "__tenure_row_hash"
STAGING_FIELDS = "__tenure_fields"
STAGING_SURPLUS = "__tenure_surplus_"
WIDTH_ERRORS = ("TOO MANY COLUMNS", "MISSING COLUMNS")
WIDTH_ERROR_TEXT = "Expected Number of Columns"
# Read as NULL in place of the empty string, so that an empty field ('') differs from padding (NULL).
NO_NULL_TEXT = "\x00"
GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
ISO_DATE_FORMATS = (None, "%Y-%m-%d")
CSV_DELIMITERS = (",", ";", "|", "\t")
ISO_TIME_TYPES = frozenset({"TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "DATE"})
# The plain form most exports write a time in. Read as TIMESTAMP with exactly this format, a value
# with a zone, a "T" or a fraction fails the read, where DuckDB's own TIMESTAMP reader would drop
# an offset; the load then reads the time as TIMESTAMPTZ. Parsing the plain form is 0.5 s to 0.8 s
# cheaper on 10M rows (docs/BENCHMARKS.md, "Ingest").
STRICT_TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
_FAILED_COLUMN = re.compile(r'Error when converting column "((?:[^"]|"")*)"')
# hashlib releases the GIL on large blocks: the hash runs beside DuckDB's read of the same file.
_HASHING = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tenure-ingest-hash")


@dataclass(frozen=True)
class InputFile:
    """A checked input file: its format and the sha256 of its bytes (computed in the background)."""

    path: Path
    file_format: str  # "csv" or "parquet"
    compression: str  # "none" or "gzip"
    digest: Future[str] = field(repr=False, compare=False)

    @property
    def content_hash(self) -> str:
        """The sha256 of the file's bytes, hex; waits for the background hash to finish."""
        return self.digest.result()


@dataclass(frozen=True)
class StagedFile:
    """What the staging table holds: the file's columns, their types, and how it was read."""

    columns: tuple[str, ...]
    types: dict[str, str]
    rows: int
    read_as_text: bool
    line_sql: str  # the line of a staged row, as SQL over the alias ``s``
    row_hash_sql: str  # a hash of the staged row's key values (``hash_columns``), over ``s``
    widths: RowWidths | None = None  # set when the file has rows of the wrong width
    hash_columns: tuple[str, ...] = ()  # the file columns ``row_hash_sql`` covers; () = all


@dataclass(frozen=True)
class RowWidths:
    """How to tell a staged record of the wrong width (a file read after ``RaggedRows``)."""

    expected: int  # the header's number of fields
    fields_sql: str  # the record's number of fields, over the alias ``s``
    text_sql: str  # the record's fields joined again with the file's delimiter, over ``s``


def inspect_file(path: Path) -> InputFile:
    """Check that ``path`` is a readable, non-empty CSV or Parquet file and start hashing its bytes.

    The format is told from the first bytes, not the file name: gzip, Parquet, else text (a CSV
    candidate; a NUL byte in the first block means it is some other binary file). The sha256
    runs on a background thread, streamed in 1 MiB blocks so a large file never sits in memory;
    ``InputFile.content_hash`` waits for it.
    """
    if not path.exists():
        raise TenureError(f"file {path} does not exist", "check the path")
    if not path.is_file():
        raise TenureError(f"{path} is not a file", "give the path of a CSV or Parquet file")
    try:
        with path.open("rb") as stream:
            first_block = stream.read(HASH_BLOCK_BYTES)
    except OSError as error:
        raise _unreadable(path, error) from error
    if not first_block:
        raise TenureError(f"file {path} is empty", "export the data again with a header row and data rows")
    if first_block.startswith(PARQUET_MAGIC):
        file_format, compression = "parquet", "none"
    elif first_block.startswith(GZIP_MAGIC):
        file_format, compression = "csv", "gzip"
    elif b"\x00" in first_block:
        raise TenureError(
            f"{path} is not a CSV or Parquet file",
            "give a CSV (optionally gzip-compressed) or a Parquet file",
        )
    else:
        file_format, compression = "csv", "none"
    return InputFile(path, file_format, compression, _HASHING.submit(_sha256, path))


def _unreadable(path: Path, error: OSError) -> TenureError:
    return TenureError(f"cannot read {path}: {error.strerror or error}", "check its permissions")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as stream:
            while block := stream.read(HASH_BLOCK_BYTES):
                digest.update(block)
    except OSError as error:
        raise _unreadable(path, error) from error
    return digest.hexdigest()


def _duckdb_reason(error: duckdb.Error) -> str:
    """The first two lines of a DuckDB error on one line, without its category prefix."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()][:2]
    if not lines:
        return type(error).__name__
    lines[0] = lines[0].split(": ", 1)[1] if ": " in lines[0] else lines[0]
    return " ".join(lines)


def _sniff_csv(
    cursor: duckdb.DuckDBPyConnection, source: InputFile
) -> tuple[list[tuple[str, str]], bool, bool]:
    """The CSV's columns with sniffed types, whether its dates and timestamps are ISO, and whether
    the columns could be found only by ignoring rows of the wrong width (read it ``ragged``)."""
    try:
        row = cursor.execute(
            "SELECT Columns, DateFormat, TimestampFormat FROM sniff_csv(?, header = true, skip = 0, compression = ?)",
            [str(source.path), source.compression],
        ).fetchone()
    except duckdb.Error as error:
        raise TenureError(
            f"{source.path} cannot be read as CSV: {_duckdb_reason(error)}",
            "give a CSV with a header row (any delimiter, optionally gzip-compressed) or a Parquet file",
        ) from error
    if row is None:
        raise TenureError(f"{source.path} cannot be read as CSV", "give a CSV with a header row")
    columns = [(column["name"], column["type"]) for column in row[0]]
    if len(columns) == 1 and any(candidate in columns[0][0] for candidate in CSV_DELIMITERS):
        tolerant = _sniff_tolerant(cursor, source)
        if tolerant is not None and len(tolerant[0]["columns"]) > 1:
            return [(column["name"], column["type"]) for column in tolerant[0]["columns"]], False, True
        _explain_unsplit_header(cursor, source, columns[0][0])
    iso = row[1] in ISO_DATE_FORMATS and row[2] is None
    return columns, iso, False


def _sniff_tolerant(cursor: duckdb.DuckDBPyConnection, source: InputFile) -> tuple[dict, dict] | None:
    """The sniffer's columns and dialect when rows of the wrong width are ignored; None if it fails.

    Returns ({"columns": [...]}, {"delim": ..., "quote": ..., "escape": ...}).
    """
    try:
        row = cursor.execute(
            "SELECT Columns, Delimiter, Quote, Escape FROM sniff_csv(?, header = true, skip = 0, "
            "compression = ?, ignore_errors = true)",
            [str(source.path), source.compression],
        ).fetchone()
    except duckdb.Error:
        return None
    if row is None:
        return None
    dialect = {
        name: "" if value == "(empty)" else value
        for name, value in zip(("delim", "quote", "escape"), row[1:], strict=True)
    }
    return {"columns": row[0]}, dialect


def _explain_unsplit_header(cursor: duckdb.DuckDBPyConnection, source: InputFile, header: str) -> None:
    """A header the sniffer left whole although it holds a delimiter: rows of unequal width.

    Reading with that delimiter makes DuckDB name the first row that does not fit.
    """
    delimiter = next((candidate for candidate in CSV_DELIMITERS if candidate in header), None)
    if delimiter is None:
        return
    try:
        cursor.execute(
            "SELECT count(*) FROM read_csv(?, header = true, skip = 0, compression = ?, delim = ?, "
            "all_varchar = true)",
            [str(source.path), source.compression, delimiter],
        ).fetchone()
    except duckdb.InvalidInputException as error:
        raise TenureError(
            f"{source.path} cannot be read as CSV: {_duckdb_reason(error)}",
            "every row needs as many fields as the header",
        ) from error


def _describe_parquet(cursor: duckdb.DuckDBPyConnection, source: InputFile) -> list[tuple[str, str]]:
    try:
        described = cursor.execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(source.path)]).fetchall()
    except duckdb.Error as error:
        raise TenureError(
            f"{source.path} cannot be read as Parquet: {_duckdb_reason(error)}", "export the file again"
        ) from error
    return [(name, sql_type) for name, sql_type, *_ in described]


def file_columns(cursor: duckdb.DuckDBPyConnection, source: InputFile) -> tuple[list[tuple[str, str]], bool]:
    """The file's columns and types as its reader sees them, without reading the whole file.

    Returns the (name, type) pairs and whether the time values, if any, are ISO (for Parquet
    always true: its types are exact).
    """
    columns, iso, _ = sniff_columns(cursor, source)
    return columns, iso


def sniff_columns(
    cursor: duckdb.DuckDBPyConnection, source: InputFile
) -> tuple[list[tuple[str, str]], bool, bool]:
    """``file_columns``, and whether the file is known to have rows of the wrong width already."""
    if source.file_format == "parquet":
        return _describe_parquet(cursor, source), True, False
    return _sniff_csv(cursor, source)


class RaggedRows(Exception):
    """Rows with more or fewer fields than the header: read the file again keeping every record.

    The failed statement aborts the transaction, so the caller rolls back and loads again with
    ``ragged``.
    """


class StrictTimesFailed(Exception):
    """A time value is not in ``STRICT_TIMESTAMP_FORMAT``: read the time columns as ``TIMESTAMPTZ``.

    The failed statement aborts the transaction, so the caller rolls back and loads again with
    ``strict_times`` off.
    """


class TypedReadFailed(Exception):
    """A value past the sniffer's sample does not fit the sniffed type: read the file as text.

    The failed statement aborts the transaction, so the caller rolls back and loads again with
    ``read_as_text``.
    """


def stage_file(
    cursor: duckdb.DuckDBPyConnection,
    source: InputFile,
    sniffed: list[tuple[str, str]],
    *,
    text_columns: set[str],
    time_columns: set[str],
    iso_times: bool,
    read_as_text: bool = False,
    ragged: bool = False,
    strict_times: bool = True,
    hash_columns: tuple[str, ...] = (),
) -> StagedFile:
    """Read the whole file once into the temporary table ``STAGING_TABLE``.

    Args:
        sniffed: the file's columns and types from ``file_columns``.
        text_columns: file columns to read as text whatever they look like (ids, names).
        time_columns: file columns holding the table's time; read as ``TIMESTAMPTZ`` when the
            sniffer saw ISO values, as text when it guessed another date format.
        iso_times: whether the sniffer's date and timestamp formats were ISO.
        read_as_text: read every CSV column as text (after ``TypedReadFailed``).
        ragged: keep the records of the wrong width, every column as text (after ``RaggedRows``).
        strict_times: read a time column the sniffer saw as a plain ``TIMESTAMP`` with
            ``STRICT_TIMESTAMP_FORMAT`` (off after ``StrictTimesFailed``).
        hash_columns: the file columns each staged row's hash covers (the table's
            ``duplicate_key``); empty: every column.

    Raises:
        StrictTimesFailed: a time value is not in ``STRICT_TIMESTAMP_FORMAT``.
        TypedReadFailed: a CSV value does not fit its sniffed type.
        RaggedRows: a CSV record has more or fewer fields than the header.
        TenureError: the file cannot be parsed at all.
    """
    if source.file_format == "parquet":
        return _create_staging(
            cursor,
            source,
            "read_parquet(?)",
            [str(source.path)],
            read_as_text=False,
            hash_columns=hash_columns,
        )
    if ragged:
        return _stage_ragged(cursor, source, [name for name, _ in sniffed])
    if read_as_text:
        return _stage_as_text(cursor, source, hash_columns=hash_columns)
    sniffed_types = dict(sniffed)
    strict = strict_times and iso_times and _plain_times(sniffed_types, time_columns)
    types: dict[str, str] = {name: "VARCHAR" for name in text_columns}
    for name in time_columns:
        if sniffed_types[name] in ISO_TIME_TYPES:
            types[name] = ("TIMESTAMP" if strict else "TIMESTAMPTZ") if iso_times else "VARCHAR"
    time_format = f", timestampformat = '{STRICT_TIMESTAMP_FORMAT}'" if strict else ""
    typed_sql = f"read_csv(?, header = true, skip = 0, compression = ?, types = ?{time_format})"
    try:
        return _create_staging(
            cursor,
            source,
            typed_sql,
            [str(source.path), source.compression, types],
            read_as_text=False,
            hash_columns=hash_columns,
        )
    except duckdb.ConversionException as error:
        failed = _FAILED_COLUMN.search(str(error))
        if strict and failed is not None and failed.group(1).replace('""', '"') in time_columns:
            raise StrictTimesFailed(str(error)) from error
        raise TypedReadFailed(str(error)) from error


def _plain_times(sniffed_types: dict[str, str], time_columns: set[str]) -> bool:
    """Whether the strict format may be tried: every time column sniffed as a plain ``TIMESTAMP``
    and no other column of that type (``timestampformat`` applies to all of them)."""
    timestamps = {name for name, sql_type in sniffed_types.items() if sql_type == "TIMESTAMP"}
    return bool(time_columns) and timestamps == set(time_columns)


def _create_staging(
    cursor: duckdb.DuckDBPyConnection,
    source: InputFile,
    read_sql: str,
    params: list,
    *,
    read_as_text: bool,
    widths: RowWidths | None = None,
    table: str = STAGING_TABLE,
    hash_columns: tuple[str, ...] = (),
) -> StagedFile:
    """``CREATE TEMP TABLE`` from the reader, and the SQL of each staged row's line.

    The line comes from the row id: a table filled by one statement keeps the reader's order, so
    row ids count the records (transaction-local row ids start at a large offset, hence the
    ``min(rowid)``). Numbering rows with a window instead would serialise the read; it is used
    only when the file has a column of its own called ``rowid``.

    Each row's hash over ``hash_columns`` (all the file's columns when empty or when one of them
    is missing) is stored as it is read (``STAGING_ROW_HASH``), while the values are in cache:
    the duplicate checks then group by one number.
    """
    line_offset = 2 if source.file_format == "csv" else 1
    staging = quote_identifier(table)
    line = quote_identifier(STAGING_LINE)
    cursor.execute(f"DROP TABLE IF EXISTS temp.{staging}")
    try:
        described = cursor.execute(f"DESCRIBE SELECT * FROM {read_sql}", params).fetchall()
        names_rowid = any(name.lower() == "rowid" for name, *_ in described)
        numbering = f"row_number() OVER () + {line_offset - 1} AS {line}, " if names_rowid else ""
        names = [name for name, *_ in described]
        if not set(hash_columns) <= set(names):
            hash_columns = ()
        file_values = ", ".join(quote_identifier(name) for name in hash_columns or names)
        row_hash = f"hash({file_values}) AS {quote_identifier(STAGING_ROW_HASH)}"
        cursor.execute(
            f"CREATE TEMP TABLE {staging} AS SELECT {numbering}*, {row_hash} FROM {read_sql}", params
        )
    except (duckdb.InvalidInputException, duckdb.IOException, duckdb.ConversionException) as error:
        if isinstance(error, duckdb.ConversionException) and not read_as_text:
            raise
        if source.file_format == "csv" and widths is None and WIDTH_ERROR_TEXT in str(error):
            raise RaggedRows(str(error)) from error
        kind = "CSV" if source.file_format == "csv" else "Parquet"
        raise TenureError(
            f"{source.path} cannot be read as {kind}: {_duckdb_reason(error)}",
            "fix the file (every row needs as many fields as the header) or export it again",
        ) from error
    types = {name: sql_type for name, sql_type, *_ in described}
    if widths is not None:
        types = {name: sql_type for name, sql_type in types.items() if not name.startswith("__tenure_")}
    # A file column called rowid hides the row id (and may be text): its rows are numbered above.
    first_row = "0" if names_rowid else "coalesce(min(rowid), 0)"
    rows, first_row_id = cursor.execute(f"SELECT count(*), {first_row} FROM temp.{staging}").fetchone()
    line_sql = f"s.{line}" if names_rowid else f"(s.rowid - {int(first_row_id) - line_offset})"
    row_hash_sql = f"s.{quote_identifier(STAGING_ROW_HASH)}"
    return StagedFile(
        tuple(types), types, int(rows), read_as_text, line_sql, row_hash_sql, widths, tuple(hash_columns)
    )


def _stage_as_text(
    cursor: duckdb.DuckDBPyConnection,
    source: InputFile,
    *,
    table: str = STAGING_TABLE,
    hash_columns: tuple[str, ...] = (),
) -> StagedFile:
    """Stage a CSV with every column read as text, as the file writes it."""
    return _create_staging(
        cursor,
        source,
        "read_csv(?, header = true, skip = 0, compression = ?, all_varchar = true)",
        [str(source.path), source.compression],
        read_as_text=True,
        table=table,
        hash_columns=hash_columns,
    )


REJECTS_TEXT_TABLE = "ingest_rejects_text"


def stage_lines_as_text(cursor: duckdb.DuckDBPyConnection, source: InputFile, lines_sql: str) -> str:
    """A temporary table of the CSV records whose line is in ``lines_sql``, every field as the
    file writes it (``0`` stays ``0``, a time keeps its format), with their line in
    ``STAGING_LINE``; returns its name.

    The rejects file uses it when the staging table holds typed values. The file is read again
    with every column as text by ``_create_staging`` (the same reader and dialect, so the same
    records in the same order, numbered alike), then only the wanted lines are kept.
    """
    table = quote_identifier(REJECTS_TEXT_TABLE)
    all_text = "ingest_rejects_all_text"
    try:
        staged = _stage_as_text(cursor, source, table=all_text)
        columns = ", ".join(f"s.{quote_identifier(name)}" for name in staged.columns)
        cursor.execute(
            f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT {staged.line_sql} AS {quote_identifier(STAGING_LINE)}, "
            f"{columns} FROM temp.{quote_identifier(all_text)} AS s WHERE {staged.line_sql} IN ({lines_sql})"
        )
    finally:
        cursor.execute(f"DROP TABLE IF EXISTS temp.{quote_identifier(all_text)}")
    return f"temp.{table}"


def _stage_ragged(cursor: duckdb.DuckDBPyConnection, source: InputFile, names: list[str]) -> StagedFile:
    """Stage every record of a CSV with rows of the wrong width, each with its number of fields.

    A first pass (on a connection of its own, so that a failure leaves the load's transaction
    alone) reads with DuckDB's rejects table to learn the widest record, and refuses the file if
    it has errors other than widths (an unclosed quote, a bad encoding). The second pass reads
    single-threaded (DuckDB pads short rows only so when values may span lines) with that many
    text columns: short rows padded with NULL, while an empty field reads as '' (then NULL again,
    as in a normal read).
    """
    tolerant = _sniff_tolerant(cursor, source)
    if tolerant is None:
        raise TenureError(
            f"{source.path} cannot be read as CSV", "every row needs as many fields as the header"
        )
    dialect = tolerant[1]
    dialect_sql = "delim = ?, quote = ?, escape = ?"
    dialect_params = [dialect["delim"], dialect["quote"], dialect["escape"]]
    widest = _widest_record(source, len(names), dialect_sql, dialect_params)
    raw = [f"{STAGING_SURPLUS}{index}" for index in range(widest)]
    columns = {name: "VARCHAR" for name in raw}
    fields = " + ".join(f"({quote_identifier(name)} IS NOT NULL)::INTEGER" for name in raw)
    selected = [
        f"nullif({quote_identifier(raw[index])}, '') AS {quote_identifier(name)}"
        for index, name in enumerate(names)
    ]
    selected += [quote_identifier(name) for name in raw[len(names) :]]
    read_sql = (
        f"(SELECT {', '.join(selected)}, {fields} AS {quote_identifier(STAGING_FIELDS)} FROM read_csv(?, "
        f"auto_detect = false, header = true, skip = 0, compression = ?, {dialect_sql}, columns = ?, "
        "null_padding = true, parallel = false, nullstr = ?))"
    )
    params = [str(source.path), source.compression, *dialect_params, columns, NO_NULL_TEXT]
    fields_sql = f"s.{quote_identifier(STAGING_FIELDS)}"
    texts = [f"s.{quote_identifier(name)}" for name in names] + [
        f"s.{quote_identifier(name)}" for name in raw[len(names) :]
    ]
    widths = RowWidths(len(names), fields_sql, _joined_fields_sql(texts, fields_sql, dialect))
    return _create_staging(cursor, source, read_sql, params, read_as_text=True, widths=widths)


def _widest_record(source: InputFile, width: int, dialect_sql: str, dialect_params: list) -> int:
    """The most fields on one record of the file (at least ``width``); refuses other read errors."""
    with duckdb.connect() as probe:
        try:
            probe.execute(
                f"SELECT count(*) FROM read_csv(?, header = true, skip = 0, compression = ?, {dialect_sql}, "
                "all_varchar = true, ignore_errors = true, store_rejects = true, "
                "rejects_table = 'width_rejects', rejects_scan = 'width_scans')",
                [str(source.path), source.compression, *dialect_params],
            ).fetchall()  # the whole result: the rejects table is written when the scan ends
            other = probe.execute(
                "SELECT line, error_message FROM width_rejects WHERE error_type::VARCHAR NOT IN ? "
                "ORDER BY line LIMIT 1",
                [list(WIDTH_ERRORS)],
            ).fetchone()
            messages = probe.execute(
                "SELECT DISTINCT error_message FROM width_rejects WHERE error_type::VARCHAR = 'TOO MANY COLUMNS'"
            ).fetchall()
        except duckdb.Error as error:
            raise TenureError(
                f"{source.path} cannot be read as CSV: {_duckdb_reason(error)}",
                "fix the file or export it again",
            ) from error
    if other is not None:
        raise TenureError(
            f"{source.path} cannot be read as CSV: record {other[0]}: {other[1]}",
            "fix the file or export it again",
        )
    found = [int(match.group(1)) for (message,) in messages if (match := re.search(r"Found: (\d+)", message))]
    return max([width, *found])


def _joined_fields_sql(texts: list[str], fields_sql: str, dialect: dict[str, str]) -> str:
    """A staged record's fields joined with the delimiter, quoted where needed, as it was written."""
    delim, quote = dialect["delim"], dialect["quote"] or '"'
    special = [delim, quote, "\n", "\r"]

    def field(text: str) -> str:
        value = f"coalesce({text}, '')"
        needs_quote = " OR ".join(f"contains({value}, {_sql_text(mark)})" for mark in special)
        quoted = f"{_sql_text(quote)} || replace({value}, {_sql_text(quote)}, {_sql_text(quote * 2)}) || {_sql_text(quote)}"
        return f"CASE WHEN {needs_quote} THEN {quoted} ELSE {value} END"

    parts = ", ".join(
        f"CASE WHEN {fields_sql} > {index} THEN {field(text)} END" for index, text in enumerate(texts)
    )
    return f"concat_ws({_sql_text(delim)}, {parts})"


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
