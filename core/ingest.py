"""Loading a CSV or Parquet file into a canonical table, all or nothing.

One load, in order (docs/ARCHITECTURE.md, "Ingest"):

1. The file is checked (exists, not empty, CSV or Parquet by its first bytes) and its bytes are
   hashed (sha256, on a background thread while the file is read in step 2). The same bytes
   loaded into the same table before: nothing is added and the result says ``already_loaded``.
2. Inside one transaction of ``Store.transaction()`` (the single writer): the file's columns
   are mapped to the table's (aliases, ``column_map``, ``constants``), the file is read once into
   a staging temp table, and every check runs as set-based SQL over it: required values present,
   timestamps readable (core/timeparse.py), numbers numeric and in range; a CSV record with more
   or fewer fields than the header is a bad row too. Exact duplicate rows are dropped and
   counted (candidates by a hash of each row, then compared column by column); in ``users`` a
   user id on two different rows is a bad row.
3. Bad rows refuse the whole file (``BadRowsError``, with their lines and reasons), unless
   ``skip_bad_rows``: then the good rows load and the bad ones go to a rejects CSV.
4. The rows are inserted, a ``load_history`` row is written, and the transaction commits. Any
   failure before the commit (bad rows, an exception, a killed process) leaves the store as it
   was: readers on other cursors see the table before or after the load, never in between.

``users`` rows replace the rows of users already in the table (the user's latest attributes
win; columns the file lacks become NULL for those users). Columns that are not canonical go into
``events.properties`` / ``recommendations.context`` as JSON, and become new columns of
``users``, ``items`` and ``assignments`` (typed as the file has them).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from core.errors import TenureError
from core.export import to_safe_csv
from core.ingest_read import (
    STAGING_LINE,
    STAGING_TABLE,
    InputFile,
    RaggedRows,
    StagedFile,
    StrictTimesFailed,
    TypedReadFailed,
    inspect_file,
    sniff_columns,
    stage_file,
    stage_lines_as_text,
)
from core.schema import CANONICAL_TABLES, COLUMN_ALIASES, TIME_COLUMNS, TableSpec, user_key_sql
from core.store import Store, quote_identifier
from core.timeparse import TEXT_TYPES, TIMESTAMP_TYPES, ZONED_TIMESTAMP_TYPES, is_numeric_type, timestamp_sql

logger = logging.getLogger(__name__)

TIME_ALIAS_TARGET = "event_time"
# Aliases that only make sense for one table (the Open Bandit Dataset's names, for instance).
TABLE_ALIASES: dict[str, dict[str, str]] = {
    "recommendations": {"click": "reward", "propensity_score": "propensity"},
}
UNIT_INTERVAL_COLUMNS = frozenset({"propensity"})
# Source types whose every non-NULL value converts: no per-row check needed.
ALWAYS_VALID_TIME_TYPES = TIMESTAMP_TYPES | ZONED_TIMESTAMP_TYPES
DATA_SUFFIXES = frozenset({"csv", "tsv", "txt", "parquet", "pq"})
SHOWN_BAD_ROWS = 5
BAD_ROWS_KEPT = 1000
ROW_COLUMN = "(row)"
RAW_LINE_COLUMN = "raw_line"
STAGING = f"temp.{quote_identifier(STAGING_TABLE)}"
BAD_CELLS = "temp.ingest_bad_cells"
EXCLUDED = "temp.ingest_excluded"
ROW_GROUPS = "temp.ingest_row_groups"
FULL_ROW_GROUPS = "temp.ingest_full_row_groups"
# Up to this many rows sharing a staged (key) hash go straight to the column-by-column duplicate
# comparison (a window over them, a few hundredths of a second); more are first told apart by a
# hash of all their values, one more scan (0.065 s for 10M rows).
FULL_HASH_ABOVE_ROWS = 100_000
# Sniffed types of a time column that keep the time of day: such a column may key the row hash.
PRECISE_TIME_TYPES = frozenset({"TIMESTAMP", "TIMESTAMP WITH TIME ZONE"})
REPEATED_HASHES_VIEW = "ingest_repeated_hashes"


@dataclass(frozen=True)
class IngestResult:
    """What one load did.

    ``column_mapping`` maps each file column to where it went: a canonical column, the JSON
    column (``properties`` / ``context``) for extra columns of events and recommendations, or
    a column of its own name for extra columns of the other tables. ``load_id`` is the new
    ``load_history`` row, None when the file was already loaded.
    """

    table: str
    source: str
    content_hash: str
    rows_accepted: int
    rows_rejected: int
    duplicates_dropped: int
    already_loaded: bool
    rejects_path: Path | None
    load_id: int | None
    column_mapping: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for the CLI and the app."""
        if self.already_loaded:
            return f"{self.table}: {self.source} was already loaded (same content); nothing added"
        notes = []
        if self.rows_rejected:
            where = f" -> {self.rejects_path.name}" if self.rejects_path else ""
            notes.append(f"{self.rows_rejected:,} rejected{where}")
        if self.duplicates_dropped:
            plural = "s" if self.duplicates_dropped != 1 else ""
            notes.append(f"{self.duplicates_dropped:,} exact duplicate{plural} dropped")
        detail = f" ({', '.join(notes)})" if notes else ""
        plural = "s" if self.rows_accepted != 1 else ""
        return f"{self.table}: {self.rows_accepted:,} row{plural} loaded from {self.source}{detail}"


class BadRowsError(TenureError):
    """Rows of the file that cannot be loaded; ``bad_rows`` has columns line, column, value, reason.

    ``bad_rows`` holds at most the first 1,000 problems (one row per bad value), ordered by line.
    """

    def __init__(self, message: str, hint: str | None, bad_rows: pd.DataFrame) -> None:
        super().__init__(message, hint)
        self.bad_rows = bad_rows

    def with_skip(self, how: str) -> BadRowsError:
        """The same refusal, its hint naming how to skip the bad rows where the user is (the
        command line's flag by default; a page's own checkbox)."""
        return BadRowsError(self.message, bad_rows_hint(how), self.bad_rows)


class MissingColumnsError(TenureError):
    """Required columns the file has none for. The hint names the command line's flags by
    default; ``with_hint`` names a page's own controls (its column mapping)."""

    def __init__(self, message: str, missing: list[str]) -> None:
        super().__init__(
            message,
            f"name the file's column with --map FILE_COLUMN={missing[0]}, "
            f"or fill it for every row with --set {missing[0]}=VALUE",
        )
        self.missing = missing

    def with_hint(self, hint: str) -> TenureError:
        return TenureError(self.message, hint)


def bad_rows_hint(how: str) -> str:
    """What to do about refused rows; ``how`` says how to load only the good ones."""
    return f"fix those rows, or {how} (the bad ones go to a rejects file)"


@dataclass(frozen=True)
class ColumnPlan:
    """Where each canonical column comes from: a file column or a constant; and the extras."""

    mapping: dict[str, str]  # canonical column -> file column
    constants: dict[str, str]  # canonical column -> value
    extras: tuple[str, ...]  # file columns that are not canonical


@dataclass(frozen=True)
class Check:
    """A condition that makes a row bad, for one column, with the reason shown to the user."""

    column: str
    bad_sql: str
    value_sql: str
    reason: str
    reason_sql: str | None = None  # a reason computed per row, in place of ``reason``


def ingest_file(
    store: Store,
    path: Path,
    *,
    table: str,
    column_map: dict[str, str] | None = None,
    constants: dict[str, str] | None = None,
    skip_bad_rows: bool = False,
    rejects_path: Path | None = None,
    source_name: str | None = None,
) -> IngestResult:
    """Load a CSV (any delimiter, optionally gzip) or Parquet file into ``table``, all or nothing.

    Args:
        store: the store to load into (opened for writing).
        path: the file.
        table: a canonical table: events, users, items, assignments or recommendations.
        column_map: file column -> canonical column, overriding the automatic mapping; an empty
            canonical column keeps the file column as an extra column (no automatic mapping).
        constants: canonical column -> value, for a column the file lacks (``event_name=purchase``).
        skip_bad_rows: load the good rows and write the bad ones to ``rejects_path`` instead of
            refusing the file.
        rejects_path: where the rejected rows go (default ``FILE.rejects.csv`` next to the file).
        source_name: the name recorded in ``load_history`` (default the file's name).

    Returns:
        An ``IngestResult``; ``already_loaded`` when the same bytes were loaded into this table.

    Raises:
        BadRowsError: rows that cannot be loaded (and ``skip_bad_rows`` is off).
        TenureError: the file is missing, empty, unreadable or lacks a required column.
    """
    path = Path(path)
    if table not in CANONICAL_TABLES:
        raise TenureError(f"unknown table '{table}'", f"use one of {', '.join(CANONICAL_TABLES)}")
    spec = CANONICAL_TABLES[table]
    source = inspect_file(path)
    source_label = source_name or path.name
    if skip_bad_rows and rejects_path is None:
        rejects_path = default_rejects_path(path)
    # At most four reads: typed, with plain times read strictly; typed, times as TIMESTAMPTZ (a
    # time with a zone, a "T" or a fraction); all text (a value past the sniffer's sample does not
    # fit its type); keeping records of the wrong width (all text). Each retry rolls the last one
    # back; the strict read of a file in another form fails on its first row.
    read_as_text = ragged = False
    strict_times = True
    while True:
        try:
            outcome = _load(
                store,
                source,
                spec,
                source_label,
                column_map,
                constants,
                skip_bad_rows,
                read_as_text=read_as_text,
                ragged=ragged,
                strict_times=strict_times,
            )
            break
        except StrictTimesFailed:
            logger.info("%s: a time is not in the plain form; reading times as TIMESTAMPTZ", path)
            strict_times = False
        except TypedReadFailed:
            logger.info("%s: a value does not fit its sniffed type; reading every column as text", path)
            read_as_text = True
        except RaggedRows:
            logger.info("%s: rows of the wrong width; reading again to report them as bad rows", path)
            ragged = True
    if outcome.already_loaded:
        return IngestResult(table, source_label, source.content_hash, 0, 0, 0, True, None, None, {})
    if outcome.rejects is not None and rejects_path is not None:
        rejects_path.write_text(to_safe_csv(outcome.rejects), encoding="utf-8")
    result = IngestResult(
        table,
        source_label,
        source.content_hash,
        outcome.accepted,
        outcome.rejected,
        outcome.duplicates,
        False,
        rejects_path if outcome.rejects is not None else None,
        outcome.load_id,
        outcome.column_mapping,
    )
    logger.info(result.summary())
    return result


@dataclass(frozen=True)
class _LoadOutcome:
    already_loaded: bool
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    load_id: int | None = None
    column_mapping: dict[str, str] = field(default_factory=dict)
    rejects: pd.DataFrame | None = None


def _load(
    store: Store,
    source: InputFile,
    spec: TableSpec,
    source_label: str,
    column_map: dict[str, str] | None,
    constants: dict[str, str] | None,
    skip_bad_rows: bool,
    *,
    read_as_text: bool,
    ragged: bool = False,
    strict_times: bool = True,
) -> _LoadOutcome:
    """The transaction of one load: stage, validate, insert, record; all or nothing."""
    path = source.path
    with store.transaction() as cursor:
        cursor.execute("SET TimeZone = 'UTC'")
        sniffed, iso_times, uneven = sniff_columns(cursor, source)
        if uneven and not ragged:
            raise RaggedRows(f"{path}: the sniffer found rows of the wrong width")
        try:
            plan = plan_columns(spec, [name for name, _ in sniffed], column_map or {}, constants or {}, path)
        except TenureError:
            if _loaded_before(cursor, source, spec.name):
                return _LoadOutcome(already_loaded=True)
            raise
        staged = stage_file(
            cursor,
            source,
            sniffed,
            text_columns=_text_file_columns(spec, plan),
            time_columns={plan.mapping[name] for name in _time_columns(spec) if name in plan.mapping},
            iso_times=iso_times,
            read_as_text=read_as_text,
            ragged=ragged,
            strict_times=strict_times,
            hash_columns=_duplicate_key_columns(spec, plan, dict(sniffed)),
        )
        if _loaded_before(cursor, source, spec.name):
            return _LoadOutcome(already_loaded=True)
        if staged.rows == 0:
            raise TenureError(f"{path} has no data rows", "the file holds a header only; export it again")
        loader = _TableLoad(cursor, spec, plan, staged, source)
        loader.check_constants()
        bad_lines, duplicates = loader.validate()
        if bad_lines and not skip_bad_rows:
            raise loader.bad_rows_error(bad_lines)
        rejects = loader.rejected_rows() if bad_lines else None
        accepted = loader.insert(excluding=bad_lines + duplicates)
        load_id = _record_load(cursor, source_label, spec.name, source, accepted, bad_lines, duplicates)
        return _LoadOutcome(False, accepted, bad_lines, duplicates, load_id, loader.column_mapping(), rejects)


def _loaded_before(cursor: duckdb.DuckDBPyConnection, source: InputFile, table: str) -> bool:
    """Whether the same bytes were loaded into ``table`` before (waits for the file's hash).

    Asked once the file is staged, so that the hash runs beside the read.
    """
    earlier = cursor.execute(
        "SELECT load_id FROM load_history WHERE content_hash = ? AND table_name = ?",
        [source.content_hash, table],
    ).fetchone()
    if earlier is not None:
        logger.info("%s already loaded into %s as load %s", source.path, table, earlier[0])
    return earlier is not None


def default_rejects_path(path: Path) -> Path:
    """``FILE.rejects.csv`` next to the input: ``events.csv.gz`` -> ``events.rejects.csv``."""
    name = path.name.removesuffix(".gz")
    stem, dot, suffix = name.rpartition(".")
    if dot and suffix.lower() in DATA_SUFFIXES:
        name = stem
    return path.with_name(f"{name}.rejects.csv")


def _record_load(
    cursor: duckdb.DuckDBPyConnection,
    source_label: str,
    table: str,
    source: InputFile,
    accepted: int,
    rejected: int,
    duplicates: int,
) -> int:
    """Write the load's ``load_history`` row (the last statement before the commit)."""
    load_id = cursor.execute("SELECT coalesce(max(load_id), 0) + 1 FROM load_history").fetchone()[0]
    cursor.execute(
        "INSERT INTO load_history (load_id, source, table_name, content_hash, rows_accepted, "
        "rows_rejected, duplicates_dropped, loaded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            load_id,
            source_label,
            table,
            source.content_hash,
            accepted,
            rejected,
            duplicates,
            datetime.now(UTC).replace(tzinfo=None),
        ],
    )
    return int(load_id)


def table_aliases(spec: TableSpec) -> dict[str, str]:
    """Lower-case alias -> canonical column for ``spec``: the shared aliases, with time aliases
    pointed at the table's own time column, plus the table's own aliases."""
    aliases: dict[str, str] = {}
    for alias, canonical in COLUMN_ALIASES.items():
        if canonical == TIME_ALIAS_TARGET:
            canonical = TIME_COLUMNS.get(spec.name, "")
        if canonical in spec.column_names:
            aliases[alias.lower()] = canonical
    aliases.update(TABLE_ALIASES.get(spec.name, {}))
    return aliases


def _find_file_column(name: str, columns: list[str]) -> str | None:
    if name in columns:
        return name
    matches = [column for column in columns if column.lower() == name.lower()]
    return matches[0] if len(matches) == 1 else None


def _canonical_name(name: str, spec: TableSpec) -> str | None:
    matches = [column for column in spec.column_names if column == name.strip().lower()]
    return matches[0] if matches else None


def plan_columns(
    spec: TableSpec, columns: list[str], column_map: dict[str, str], constants: dict[str, str], path: Path
) -> ColumnPlan:
    """Decide which file column feeds each canonical column.

    Precedence: ``column_map`` entries (an empty target keeps that file column as an extra), then
    a file column named like the canonical column (case-insensitive), then an alias. Two file columns that both alias one canonical column are
    ambiguous: the user picks one with ``--map``. Columns left over are extras.
    """
    listed = ", ".join(columns)
    canonical_list = ", ".join(spec.column_names)
    mapping: dict[str, str] = {}
    kept: set[str] = set()  # file columns the user keeps as extras (``--map SRC=``)
    for source_name, target_name in column_map.items():
        file_column = _find_file_column(source_name.strip(), columns)
        if file_column is None:
            raise TenureError(
                f"--map {source_name}={target_name}: {path} has no column '{source_name}'; "
                f"its columns are: {listed}",
                "use one of the file's column names on the left of --map",
            )
        if not target_name.strip():
            kept.add(file_column)
            continue
        canonical = _canonical_name(target_name, spec)
        if canonical is None:
            raise TenureError(
                f"--map {source_name}={target_name}: '{target_name}' is not a column of {spec.name}",
                f"map to one of: {canonical_list}",
            )
        if canonical in mapping:
            raise TenureError(
                f"--map: both '{mapping[canonical]}' and '{file_column}' are mapped to {spec.name}.{canonical}",
                "map only one file column to each table column",
            )
        mapping[canonical] = file_column
    fixed: dict[str, str] = {}
    for target_name, value in constants.items():
        canonical = _canonical_name(target_name, spec)
        if canonical is None:
            raise TenureError(
                f"--set {target_name}={value}: '{target_name}' is not a column of {spec.name}",
                f"set one of: {canonical_list}",
            )
        if canonical in mapping:
            raise TenureError(
                f"--set {target_name}={value}: {spec.name}.{canonical} already comes from the file's "
                f"column '{mapping[canonical]}' (--map)",
                "drop either the --map or the --set",
            )
        fixed[canonical] = value
    aliases = table_aliases(spec)
    taken = set(mapping.values()) | kept
    candidates: dict[str, dict[int, list[str]]] = {}
    for column in columns:
        if column in taken:
            continue
        lower = column.lower()
        if lower in spec.column_names:
            candidates.setdefault(lower, {}).setdefault(0, []).append(column)
        elif lower in aliases:
            candidates.setdefault(aliases[lower], {}).setdefault(1, []).append(column)
    for canonical, by_rank in candidates.items():
        if canonical in mapping:
            continue
        best = by_rank[min(by_rank)]
        if canonical in fixed:
            raise TenureError(
                f"--set {canonical}={fixed[canonical]}: {path} already has a column for "
                f"{spec.name}.{canonical} ('{best[0]}')",
                "drop the --set to use the file's column",
            )
        if len(best) > 1:
            raise TenureError(
                f"{path}: columns {', '.join(repr(name) for name in best)} could each be "
                f"{spec.name}.{canonical}",
                f"choose one with --map {best[0]}={canonical}",
            )
        mapping[canonical] = best[0]
    missing = [name for name in spec.required if name not in mapping and name not in fixed]
    if missing:
        names = ", ".join(f"{spec.name}.{name}" for name in missing)
        raise MissingColumnsError(
            f"{path} has no column for {names} (required); its columns are: {listed}", missing
        )
    used = set(mapping.values())
    extras = tuple(column for column in columns if column not in used)
    ordered = {name: mapping[name] for name in spec.column_names if name in mapping}
    return ColumnPlan(ordered, fixed, extras)


def _duplicate_key_columns(
    spec: TableSpec, plan: ColumnPlan, sniffed_types: dict[str, str]
) -> tuple[str, ...]:
    """The file columns for the staged row hash: those of the table's ``duplicate_key``, when
    its time columns hold times to the second or finer; else none (the hash covers every column).

    Times read as dates (or numbers, which may be ``YYYYMMDD``) leave many distinct rows of one
    user on one key: a 3M-row file of dates loaded 0.2 s slower with the key than with every
    column hashed, where a 10M-row file of timestamps loads 0.15 s faster.
    """
    columns = tuple(plan.mapping[name] for name in spec.duplicate_key if name in plan.mapping)
    times = [
        plan.mapping[name]
        for name in _time_columns(spec)
        if name in spec.duplicate_key and name in plan.mapping
    ]
    if any(sniffed_types.get(column) not in PRECISE_TIME_TYPES for column in times):
        return ()
    return columns


def _time_columns(spec: TableSpec) -> list[str]:
    return [column.name for column in spec.columns if column.sql_type == "TIMESTAMP"]


def _text_file_columns(spec: TableSpec, plan: ColumnPlan) -> set[str]:
    """File columns that feed text canonical columns: read as text so ``007`` stays ``007``."""
    return {
        plan.mapping[column.name]
        for column in spec.columns
        if column.sql_type == "VARCHAR" and column.name in plan.mapping
    }


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class _TableLoad:
    """The SQL of one load: value expressions, checks, and the insert, over the staging table."""

    def __init__(
        self,
        cursor: duckdb.DuckDBPyConnection,
        spec: TableSpec,
        plan: ColumnPlan,
        staged: StagedFile,
        source: InputFile,
    ) -> None:
        self.cursor = cursor
        self.spec = spec
        self.plan = plan
        self.staged_types = staged.types
        self.line = staged.line_sql
        self.row_hash = staged.row_hash_sql
        # When the staged hash covers only the table's duplicate key, rows sharing it are told
        # apart by a hash of all their values before the column-by-column comparison.
        partial = bool(staged.hash_columns) and set(staged.hash_columns) != set(staged.types)
        self.full_row_hash = (
            f"hash({', '.join(f's.{quote_identifier(name)}' for name in staged.types)})" if partial else None
        )
        self.source = source
        self.params: dict[str, Any] = {}
        self.values: dict[str, str] = {}
        self.checks: list[Check] = []
        self.constant_checks: list[tuple[str, Check]] = []
        self.new_columns: list[tuple[str, str]] = []
        self.extra_targets: dict[str, str] = {}
        existing = cursor.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'main' AND table_name = ? ORDER BY ordinal_position",
            [spec.name],
        ).fetchall()
        self.existing_types = {name.lower(): (name, sql_type) for name, sql_type in existing}
        self.widths = staged.widths
        self.read_as_text = staged.read_as_text
        self._build()
        if self.widths is not None:
            self._check_widths()

    # -- building expressions -------------------------------------------------------------

    def _source(self, canonical: str) -> tuple[str, str] | None:
        """The SQL and type of the value feeding ``canonical``: a staging column or a constant."""
        if canonical in self.plan.mapping:
            file_column = self.plan.mapping[canonical]
            return f"s.{quote_identifier(file_column)}", self.staged_types[file_column]
        if canonical in self.plan.constants:
            name = f"set_{len(self.params)}"
            self.params[name] = self.plan.constants[canonical]
            return f"CAST(${name} AS VARCHAR)", "VARCHAR"
        return None

    def _build(self) -> None:
        for column in self.spec.columns:
            if column.name == self.spec.extras_json_column:
                continue
            found = self._source(column.name)
            if found is None:
                continue
            source_sql, source_type = found
            value_sql, checks = self._column_sql(
                column.name, column.sql_type, column.required, source_sql, source_type
            )
            self.values[column.name] = value_sql
            if column.name in self.plan.constants:
                self.constant_checks.extend((self.plan.constants[column.name], check) for check in checks)
            else:
                self.checks.extend(checks)
        if self.spec.extras_json_column is not None:
            self._build_json_column(self.spec.extras_json_column)
        else:
            self._build_extra_columns()

    def _column_sql(
        self, name: str, sql_type: str, required: bool, source_sql: str, source_type: str
    ) -> tuple[str, list[Check]]:
        """The typed value of canonical column ``name`` and the checks that make a row bad."""
        is_text = source_type in TEXT_TYPES
        raw = f"CAST({source_sql} AS VARCHAR)"
        # trim() runs only on values that are empty or start with a control character or a space
        # (they sort before '!'): on every row it is costly.
        present = (
            f"({source_sql} IS NOT NULL AND NOT ({source_sql} < '!' AND trim({source_sql}) = ''))"
            if is_text
            else f"({source_sql} IS NOT NULL)"
        )
        checks: list[Check] = []
        if required:
            checks.append(Check(name, f"NOT {present}", raw, f"{name} is empty"))
        if sql_type == "VARCHAR":
            return raw, checks
        if sql_type == "TIMESTAMP":
            value = timestamp_sql(source_sql, source_type)
            if source_type in ALWAYS_VALID_TIME_TYPES:
                return value, checks
            checks.append(
                Check(name, f"{present} AND ({value}) IS NULL", raw, f"{name} is not a recognised timestamp")
            )
            return value, checks
        if sql_type == "JSON":
            checks.append(
                Check(
                    name,
                    f"{present} AND NOT coalesce(json_valid({raw}), false)",
                    raw,
                    f"{name} is not valid JSON",
                )
            )
            return f"CAST({raw} AS JSON)", checks
        if is_text:
            number = f"TRY_CAST(trim({source_sql}) AS DOUBLE)"
        elif is_numeric_type(source_type) or source_type == "BOOLEAN":
            number = f"CAST({source_sql} AS DOUBLE)"
        else:
            number = "CAST(NULL AS DOUBLE)"
        checks.append(
            Check(
                name, f"{present} AND NOT coalesce(isfinite({number}), false)", raw, f"{name} is not a number"
            )
        )
        if sql_type == "INTEGER":
            checks.append(
                Check(
                    name,
                    f"{present} AND coalesce({number} <> trunc({number}) OR abs({number}) > 2147483647, false)",
                    raw,
                    f"{name} is not a whole number",
                )
            )
            return f"CAST({number} AS INTEGER)", checks
        if name in UNIT_INTERVAL_COLUMNS:
            checks.append(
                Check(
                    name,
                    f"{present} AND coalesce(NOT ({number} BETWEEN 0 AND 1), false)",
                    raw,
                    f"{name} is not between 0 and 1",
                )
            )
        default = self.spec.column(name).default_sql
        if default is not None:
            return f"coalesce({number}, {default})", checks
        return number, checks

    def _build_json_column(self, json_column: str) -> None:
        """Extra columns packed into one JSON object; merged into the file's own JSON column."""
        packed = None
        if self.plan.extras:
            fields = ", ".join(
                f"{quote_identifier(name)} := s.{quote_identifier(name)}" for name in self.plan.extras
            )
            packed = f"to_json(struct_pack({fields}))"
            for name in self.plan.extras:
                self.extra_targets[name] = json_column
        found = self._source(json_column)
        if found is None:
            if packed is not None:
                self.values[json_column] = packed
            return
        value, checks = self._column_sql(json_column, "JSON", False, *found)
        self.checks.extend(checks)
        self.values[json_column] = f"json_merge_patch({value}, {packed})" if packed else value

    def _build_extra_columns(self) -> None:
        """Extra columns of users, items, assignments: existing columns, or new ones typed as the file."""
        for name in self.plan.extras:
            source_sql = f"s.{quote_identifier(name)}"
            source_type = self.staged_types[name]
            if name.lower() in self.existing_types:
                target, target_type = self.existing_types[name.lower()]
                value = f"TRY_CAST({source_sql} AS {target_type})"
                self.checks.append(
                    Check(
                        target,
                        f"{source_sql} IS NOT NULL AND {value} IS NULL",
                        f"CAST({source_sql} AS VARCHAR)",
                        f"{name} does not fit the table's {target_type} column",
                    )
                )
            else:
                target, target_type = name, source_type
                if target_type == "TIMESTAMP WITH TIME ZONE":
                    target_type = "TIMESTAMP"
                value = timestamp_sql(source_sql, source_type) if target_type == "TIMESTAMP" else source_sql
                self.new_columns.append((target, target_type))
            self.values[target] = value
            self.extra_targets[name] = target

    def _check_widths(self) -> None:
        """A record of the wrong width is one bad cell (its fields are not where the header says);
        the other checks look only at records of the right width."""
        widths = self.widths
        right = f"{widths.fields_sql} = {widths.expected}"
        self.checks = [
            Check(
                check.column,
                f"({right} AND ({check.bad_sql}))",
                check.value_sql,
                check.reason,
                check.reason_sql,
            )
            for check in self.checks
        ]
        self.checks.append(
            Check(
                ROW_COLUMN,
                f"{widths.fields_sql} <> {widths.expected}",
                widths.text_sql,
                "",
                f"'expected {widths.expected} fields (as the header), found ' || {widths.fields_sql}",
            )
        )

    # -- validation -----------------------------------------------------------------------

    def check_constants(self) -> None:
        """A ``--set`` value is checked once, before any row."""
        for value, check in self.constant_checks:
            bad = self.cursor.execute(f"SELECT {check.bad_sql}", self._params_for(check.bad_sql)).fetchone()[
                0
            ]
            if bad:
                raise TenureError(
                    f"--set {check.column}={value}: {check.reason.replace(check.column, repr(value), 1)}",
                    "give a value of the column's type",
                )

    def _params_for(self, sql: str) -> dict[str, Any]:
        """The ``--set`` values that ``sql`` refers to (DuckDB wants exactly those)."""
        return {name: value for name, value in self.params.items() if re.search(rf"\${name}\b", sql)}

    def validate(self) -> tuple[int, int]:
        """Find the bad rows and the exact duplicates; returns (bad row count, duplicate count).

        Two cheap scans: one counts the bad rows, one finds the row hashes (stored at staging)
        that are seen more than once. When the staged hash covers only the table's duplicate key
        (an event's user and time) and more than ``FULL_HASH_ABOVE_ROWS`` rows share one, those
        rows are hashed again over all their values, and only the repeats of that hash remain
        candidates (fewer rows go straight to the comparison). Only when those find
        something do the slower queries run: bad cells go to ``ingest_bad_cells`` (line,
        column, value, reason), and the lines to leave out of the insert (bad rows, and every
        copy of a duplicate but the first) to ``ingest_excluded``.
        """
        self.cursor.execute(
            f"CREATE OR REPLACE TEMP TABLE {BAD_CELLS.removeprefix('temp.')} "
            f"(line BIGINT, {quote_identifier('column')} VARCHAR, value VARCHAR, reason VARCHAR)"
        )
        self.cursor.execute(f"CREATE OR REPLACE TEMP TABLE {EXCLUDED.removeprefix('temp.')} (line BIGINT)")
        any_bad = " OR ".join(f"({check.bad_sql})" for check in self.checks) or "false"
        bad_sql = f"SELECT count_if({any_bad}) > 0 FROM {STAGING} AS s"
        any_bad_rows = self.cursor.execute(bad_sql, self._params_for(bad_sql)).fetchone()[0]
        repeating_rows = self._store_repeated_hashes(self.row_hash, "true", ROW_GROUPS)
        candidates = f"{self.row_hash} IN (SELECT row_hash FROM {ROW_GROUPS})"
        if repeating_rows > FULL_HASH_ABOVE_ROWS and self.full_row_hash is not None:
            repeating_rows = self._store_repeated_hashes(self.full_row_hash, candidates, FULL_ROW_GROUPS)
            candidates += f" AND {self.full_row_hash} IN (SELECT row_hash FROM {FULL_ROW_GROUPS})"
        any_repeats = repeating_rows > 0
        if any_bad_rows:
            cells = " UNION ALL ".join(
                f"SELECT {self.line}, {_literal(check.column)}, {check.value_sql}, "
                f"{check.reason_sql or _literal(check.reason)} "
                f"FROM {STAGING} AS s WHERE {check.bad_sql}"
                for check in self.checks
            )
            self.cursor.execute(f"INSERT INTO {BAD_CELLS} {cells}", self._params_for(cells))
        duplicates = self._find_duplicates(candidates, skip_bad=any_bad_rows) if any_repeats else 0
        if self.spec.name == "users":
            self._find_conflicting_users()
        bad = self.cursor.execute(f"SELECT count(DISTINCT line) FROM {BAD_CELLS}").fetchone()[0]
        self.cursor.execute(f"INSERT INTO {EXCLUDED} SELECT DISTINCT line FROM {BAD_CELLS}")
        return int(bad), duplicates

    def _store_repeated_hashes(self, hash_sql: str, where: str, table: str) -> int:
        """Fill ``table`` with the values of ``hash_sql`` (over the staged rows that match
        ``where``) seen more than once; returns how many rows have such a value.

        numpy sorts the 64-bit hashes and compares neighbours: 0.3 s for 10M rows, where
        DuckDB's ``GROUP BY ... HAVING count(*) > 1`` over 10M distinct keys took 0.9 s to 1.8 s
        (measured), a sixth of the whole load. Vectorised, no loop over rows; the fetched array
        is sorted in place (a sorted copy cost 0.08 s more), 8 bytes a row.
        """
        fetched = self.cursor.execute(
            f"SELECT {hash_sql} AS row_hash FROM {STAGING} AS s WHERE {where}"
        ).fetchnumpy()
        hashes = np.asarray(fetched["row_hash"], dtype=np.uint64)
        hashes.sort()
        same_as_previous = hashes[1:] == hashes[:-1]
        repeated = np.unique(hashes[1:][same_as_previous])
        # Rows whose hash equals a neighbour's in the sorted order: every row of a repeated hash.
        repeating_rows = int(np.count_nonzero(same_as_previous)) + len(repeated)
        self.cursor.register(REPEATED_HASHES_VIEW, pd.DataFrame({"row_hash": repeated}))
        try:
            self.cursor.execute(
                f"CREATE OR REPLACE TEMP TABLE {table.removeprefix('temp.')} AS "
                f"SELECT CAST(row_hash AS UBIGINT) AS row_hash FROM {REPEATED_HASHES_VIEW}"
            )
        finally:
            self.cursor.unregister(REPEATED_HASHES_VIEW)
        return repeating_rows

    def _file_columns_sql(self) -> str:
        return ", ".join(f"s.{quote_identifier(name)}" for name in self.staged_types)

    def _find_duplicates(self, candidates: str, *, skip_bad: bool) -> int:
        """Rows equal in every file column to an earlier good row; their lines join the excluded.

        Only the rows that match ``candidates`` (their hashes repeat) are compared column by
        column.
        """
        columns = self._file_columns_sql()
        good = f"{self.line} NOT IN (SELECT line FROM {BAD_CELLS})" if skip_bad else "true"
        self.cursor.execute(
            f"INSERT INTO {EXCLUDED} SELECT line FROM ("
            f"SELECT {self.line} AS line, row_number() OVER (PARTITION BY {columns} ORDER BY {self.line}) AS copy "
            f"FROM {STAGING} AS s WHERE {good} "
            f"AND {candidates}) WHERE copy > 1"
        )
        return int(self.cursor.execute(f"SELECT count(*) FROM {EXCLUDED}").fetchone()[0])

    def _find_conflicting_users(self) -> None:
        """In ``users``, one user id on two rows that differ: both rows are bad."""
        user_id = self.values["user_id"]
        sql = (
            f"INSERT INTO {BAD_CELLS} SELECT line, 'user_id', user_id, "
            "'user_id appears on ' || copies || ' rows of the file with different values (first on line ' "
            "|| first_line || ')' FROM ("
            f"SELECT {self.line} AS line, {user_id} AS user_id, count(*) OVER (PARTITION BY {user_id}) AS copies, "
            f"min({self.line}) OVER (PARTITION BY {user_id}) AS first_line FROM {STAGING} AS s "
            f"WHERE {self.line} NOT IN (SELECT line FROM {BAD_CELLS}) AND {self.line} NOT IN (SELECT line FROM {EXCLUDED})"
            ") WHERE copies > 1 AND user_id IS NOT NULL"
        )
        self.cursor.execute(sql, self._params_for(sql))

    def bad_rows_frame(self, limit: int = BAD_ROWS_KEPT) -> pd.DataFrame:
        frame = self.cursor.execute(
            f"SELECT line, {quote_identifier('column')}, value, reason FROM {BAD_CELLS} "
            f"ORDER BY line, {quote_identifier('column')} LIMIT {int(limit)}"
        ).df()
        return frame.astype({"line": "int64"})

    def bad_rows_error(self, bad_lines: int) -> BadRowsError:
        frame = self.bad_rows_frame()
        shown = "; ".join(
            f"line {row.line}, {row.column}: {_short(row.value)} - {row.reason}"
            for row in frame.head(SHOWN_BAD_ROWS).itertuples(index=False)
        )
        plural = "s" if bad_lines != 1 else ""
        more = ", ..." if bad_lines > SHOWN_BAD_ROWS else ""
        return BadRowsError(
            f"{self.source.path}: {bad_lines:,} bad row{plural}, nothing loaded; {shown}{more}",
            bad_rows_hint("load the good rows with --skip-bad-rows"),
            frame,
        )

    def rejected_rows(self) -> pd.DataFrame:
        """The bad rows as the file has them, with their line and every reason.

        When the file has records of the wrong width, those records leave the file's columns
        empty and a last column ``raw_line`` holds their fields joined again with the delimiter.
        """
        if self.source.file_format == "csv" and not self.read_as_text and self.widths is None:
            return self._rejected_rows_as_written()
        columns = ", ".join(
            f"CAST(s.{quote_identifier(name)} AS VARCHAR) AS {quote_identifier(name)}"
            for name in self.staged_types
        )
        raw_line = ""
        if self.widths is not None:
            right = f"{self.widths.fields_sql} = {self.widths.expected}"
            columns = ", ".join(
                f"CASE WHEN {right} THEN CAST(s.{quote_identifier(name)} AS VARCHAR) END AS {quote_identifier(name)}"
                for name in self.staged_types
            )
            raw_line = f", CASE WHEN NOT {right} THEN {self.widths.text_sql} END AS {quote_identifier(RAW_LINE_COLUMN)}"
        return self.cursor.execute(
            f"SELECT {columns}, {self.line} AS line, reasons.reason{raw_line} FROM {STAGING} AS s JOIN ("
            f"SELECT line, string_agg(reason, '; ' ORDER BY {quote_identifier('column')}) AS reason "
            f"FROM {BAD_CELLS} GROUP BY line"
            f") AS reasons ON reasons.line = {self.line} ORDER BY {self.line}"
        ).df()

    def _rejected_rows_as_written(self) -> pd.DataFrame:
        """``rejected_rows`` of a CSV staged with types: the fields come from a second read of
        the bad lines as text, so the rejects file holds them as the file writes them."""
        text = stage_lines_as_text(self.cursor, self.source, f"SELECT line FROM {BAD_CELLS}")
        line = quote_identifier(STAGING_LINE)
        columns = ", ".join(f"t.{quote_identifier(name)}" for name in self.staged_types)
        try:
            return self.cursor.execute(
                f"SELECT {columns}, t.{line} AS line, reasons.reason FROM {text} AS t JOIN ("
                f"SELECT line, string_agg(reason, '; ' ORDER BY {quote_identifier('column')}) AS reason "
                f"FROM {BAD_CELLS} GROUP BY line"
                f") AS reasons ON reasons.line = t.{line} ORDER BY t.{line}"
            ).df()
        finally:
            self.cursor.execute(f"DROP TABLE IF EXISTS {text}")

    # -- writing --------------------------------------------------------------------------

    def insert(self, *, excluding: int) -> int:
        """Insert the good rows; returns how many. ``users`` rows replace existing users."""
        table = quote_identifier(self.spec.name)
        for name, sql_type in self.new_columns:
            self.cursor.execute(f"ALTER TABLE {table} ADD COLUMN {quote_identifier(name)} {sql_type}")
        where = f"WHERE {self.line} NOT IN (SELECT line FROM {EXCLUDED})" if excluding else ""
        if self.spec.name == "users":
            delete_sql = f"DELETE FROM {table} WHERE user_id IN (SELECT {self.values['user_id']} FROM {STAGING} AS s {where})"
            self.cursor.execute(delete_sql, self._params_for(delete_sql))
        columns = dict(self.values)
        if self.spec.name == "events":
            columns["user_key"] = user_key_sql(columns["user_id"])
        targets = ", ".join(quote_identifier(name) for name in columns)
        values = ", ".join(columns.values())
        insert_sql = f"INSERT INTO {table} ({targets}) SELECT {values} FROM {STAGING} AS s {where}"
        inserted = self.cursor.execute(insert_sql, self._params_for(insert_sql)).fetchone()[0]
        return int(inserted)

    def column_mapping(self) -> dict[str, str]:
        mapping = {file_column: canonical for canonical, file_column in self.plan.mapping.items()}
        mapping.update(self.extra_targets)
        return mapping


def _short(value: object, limit: int = 40) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "(empty)"
    text = str(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return repr(text)
