"""The ingest: formats, mapping, validation, rejects, atomicity, idempotence, the CLI, OBD."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

import core.ingest
import core.ingest_read
import core.schema
import core.store
from core.cli import main as cli_main
from core.errors import TenureError
from core.ingest import BadRowsError, IngestResult, ingest_file
from core.store import PROJECT_ROOT, Store

DATASETS = Path(core.store.PROJECT_ROOT).parent / "shared" / "datasets"

EVENTS_CSV = """user_id,event_time,event_name,revenue
u1,2024-01-01 10:00:00,signup,0
u1,2024-01-02 11:00:00,purchase,12.5
u2,2024-01-03 12:00:00,view,0
"""


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(tmp_path / "store.duckdb") as opened:
        yield opened


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def events(store: Store) -> pd.DataFrame:
    return store.query_df("SELECT * FROM events ORDER BY event_time, user_id, event_name")


def snapshot(store: Store) -> dict[str, list[tuple]]:
    """Every table's full contents, in a fixed order: equal snapshots mean an unchanged store."""
    contents = {}
    for table in store.table_names():
        with store.cursor() as cursor:
            rows = cursor.execute(f"SELECT * FROM {core.store.quote_identifier(table)}").fetchall()
        contents[table] = sorted(rows, key=repr)
    contents["columns"] = [(table, tuple(store.column_names(table))) for table in store.table_names()]
    return contents


# -- bad input ------------------------------------------------------------------------------


def test_missing_required_column_names_it_and_lists_the_files_columns(store, tmp_path):
    path = write(tmp_path, "no_name.csv", "user_id,event_time,amount\nu1,2024-01-01,3\n")
    with pytest.raises(TenureError) as caught:
        ingest_file(store, path, table="events")
    message = str(caught.value)
    assert str(path) in message
    assert "events.event_name" in message
    assert "user_id, event_time, amount" in message
    assert "--map" in message and "--set event_name=" in message


def test_unparseable_timestamp_reports_its_line(store, tmp_path):
    path = write(
        tmp_path,
        "bad_time.csv",
        "user_id,event_time,event_name\nu1,2024-01-01,view\nu2,2024-01-02,view\nu3,yesterday,view\n",
    )
    with pytest.raises(BadRowsError) as caught:
        ingest_file(store, path, table="events")
    message = str(caught.value)
    assert str(path) in message and "1 bad row" in message
    assert "line 4, event_time" in message and "'yesterday'" in message
    assert caught.value.bad_rows.to_dict("records") == [
        {
            "line": 4,
            "column": "event_time",
            "value": "yesterday",
            "reason": "event_time is not a recognised timestamp",
        }
    ]
    assert store.query_one("SELECT count(*) FROM events")[0] == 0


@pytest.mark.parametrize("rowid_column", [False, True])
def test_bad_value_past_the_sniffers_sample_keeps_its_line(store, tmp_path, rowid_column):
    """The sniffer samples the start of the file; a late bad value still gets its exact line,
    also when the file has a column of its own called rowid (read as text on the second read)."""
    path = tmp_path / "late_bad.csv"
    extra = ", i AS rowid" if rowid_column else ""
    with duckdb.connect() as connection:
        connection.execute(
            "COPY (SELECT 'u' || i AS user_id, TIMESTAMP '2024-01-01' + to_seconds(i) AS event_time, "
            f"'view' AS event_name, i % 7 AS revenue{extra} FROM range(60000) t(i)) TO ? (HEADER)",
            [str(path)],
        )
    with path.open("a") as stream:
        stream.write(
            "u_last,2024-02-01 00:00:00,view,not-a-number" + (",60000" if rowid_column else "") + "\n"
        )
    with pytest.raises(BadRowsError) as caught:
        ingest_file(store, path, table="events")
    assert "line 60002, revenue" in str(caught.value)
    assert caught.value.bad_rows["line"].tolist() == [60002]


def test_non_numeric_revenue(store, tmp_path):
    path = write(
        tmp_path, "bad_revenue.csv", "user_id,event_time,event_name,revenue\nu1,2024-01-01,buy,$12\n"
    )
    with pytest.raises(BadRowsError) as caught:
        ingest_file(store, path, table="events")
    assert "line 2, revenue: '$12' - revenue is not a number" in str(caught.value)


def test_empty_user_id(store, tmp_path):
    path = write(
        tmp_path,
        "no_user.csv",
        "user_id,event_time,event_name\nu1,2024-01-01,view\n,2024-01-02,view\n   ,2024-01-02,x\n",
    )
    with pytest.raises(BadRowsError) as caught:
        ingest_file(store, path, table="events")
    assert "2 bad rows" in str(caught.value)
    assert caught.value.bad_rows[["line", "column"]].values.tolist() == [[3, "user_id"], [4, "user_id"]]


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("empty.csv", b"", "is empty"),
        ("header_only.csv", b"user_id,event_time,event_name\n", "has no data rows"),
        ("binary.csv", bytes(range(256)) * 8, "is not a CSV or Parquet file"),
        ("binary.csv.gz", gzip.compress(bytes(range(256)) * 40), "cannot be read as CSV"),
        ("fake.parquet", b"PAR1 this is not really parquet", "cannot be read as Parquet"),
    ],
)
def test_unreadable_files_are_named(store, tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(TenureError) as caught:
        ingest_file(store, path, table="events")
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_missing_file(store, tmp_path):
    with pytest.raises(TenureError, match="does not exist") as caught:
        ingest_file(store, tmp_path / "nowhere.csv", table="events")
    assert "nowhere.csv" in str(caught.value)


def test_unknown_table(store, tmp_path):
    path = write(tmp_path, "e.csv", EVENTS_CSV)
    with pytest.raises(TenureError, match="unknown table 'sessions'"):
        ingest_file(store, path, table="sessions")


@pytest.mark.parametrize(
    ("column_map", "constants", "expected"),
    [
        ({"uid": "user_id"}, None, "--map uid=user_id: .* has no column 'uid'; its columns are: user_id"),
        ({"user_id": "customer"}, None, "'customer' is not a column of events"),
        (None, {"colour": "red"}, "--set colour=red: 'colour' is not a column of events"),
        (None, {"event_name": "x"}, "already has a column for events.event_name"),
        ({"event_name": "event_name"}, {"event_name": "x"}, "already comes from the file's column"),
        (None, {"revenue": "lots"}, "--set revenue=lots: 'lots' is not a number"),
    ],
)
def test_bad_map_and_set(store, tmp_path, column_map, constants, expected):
    path = write(tmp_path, "e.csv", "user_id,event_time,event_name\nu1,2024-01-01,view\n")
    with pytest.raises(TenureError, match=expected):
        ingest_file(store, path, table="events", column_map=column_map, constants=constants)


def test_ambiguous_aliases_ask_for_a_map(store, tmp_path):
    path = write(
        tmp_path, "two_times.csv", "user_id,date,timestamp,event\nu1,2024-01-01,2024-01-01 10:00,view\n"
    )
    with pytest.raises(TenureError, match="--map date=event_time"):
        ingest_file(store, path, table="events")
    result = ingest_file(store, path, table="events", column_map={"timestamp": "event_time"})
    assert result.column_mapping["date"] == "properties"
    row = store.query_one("SELECT event_time, properties FROM events")
    assert row[0] == pd.Timestamp("2024-01-01 10:00").to_pydatetime()
    assert json.loads(row[1]) == {"date": "2024-01-01"}


# -- timestamps -----------------------------------------------------------------------------

TIMESTAMP_CASES = [
    ("iso_z", "2024-03-01T10:00:00Z", "2024-03-01 10:00:00"),
    ("iso_offset", "2024-03-01T10:00:00+02:00", "2024-03-01 08:00:00"),
    ("iso_negative_offset", "2024-03-01 10:00:00-05:30", "2024-03-01 15:30:00"),
    ("iso_naive", "2024-03-01 10:00:00", "2024-03-01 10:00:00"),
    ("iso_naive_t_fraction", "2024-03-01T10:00:00.250", "2024-03-01 10:00:00.250"),
    ("date", "2024-03-01", "2024-03-01 00:00:00"),
    ("yyyymmdd", "20240301", "2024-03-01 00:00:00"),
    ("yyyymmdd_quoted", '"20240301"', "2024-03-01 00:00:00"),
    ("epoch_seconds", "1709287200", "2024-03-01 10:00:00"),
    ("epoch_seconds_fraction", "1709287200.5", "2024-03-01 10:00:00.500"),
    ("epoch_milliseconds", "1709287200123", "2024-03-01 10:00:00.123"),
]


@pytest.mark.parametrize(
    ("case", "written", "expected"), TIMESTAMP_CASES, ids=[c[0] for c in TIMESTAMP_CASES]
)
def test_timestamp_formats_whole_column(store, tmp_path, case, written, expected):
    """A column of one format: the sniffer types it (timestamp, date, integer) and SQL converts."""
    path = write(
        tmp_path, f"{case}.csv", f"user_id,event_time,event_name\nu1,{written},view\nu2,{written},view\n"
    )
    ingest_file(store, path, table="events")
    times = store.query_df("SELECT event_time FROM events")["event_time"]
    assert (times == pd.Timestamp(expected)).all()


def test_timestamp_formats_mixed_in_one_text_column(store, tmp_path):
    """Mixed formats make the column text; every value is still read by the same rules."""
    rows = "".join(f"u{index},{written},view\n" for index, (_, written, _) in enumerate(TIMESTAMP_CASES))
    path = write(tmp_path, "mixed.csv", "user_id,event_time,event_name\n" + rows)
    ingest_file(store, path, table="events")
    loaded = store.query_df("SELECT user_id, event_time FROM events")
    got = dict(zip(loaded["user_id"], loaded["event_time"], strict=True))
    for index, (_, _, expected) in enumerate(TIMESTAMP_CASES):
        assert got[f"u{index}"] == pd.Timestamp(expected), TIMESTAMP_CASES[index]


def _plain_times_file(path: Path, rows: int = 30000) -> Path:
    """``rows`` events whose times have the plain form ``YYYY-MM-DD HH:MM:SS`` (more than the
    sniffer's sample of 20,480 rows)."""
    with duckdb.connect() as connection:
        connection.execute(
            "COPY (SELECT 'u' || i AS user_id, TIMESTAMP '2024-01-01' + to_seconds(i) AS event_time, "
            f"'view' AS event_name FROM range({rows}) t(i)) TO ? (HEADER)",
            [str(path)],
        )
    return path


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("2024-06-01T10:00:00+02:00", "2024-06-01 08:00:00"),
        ("2024-06-01 10:00:00+02", "2024-06-01 08:00:00"),
        ("2024-06-01 10:00:00Z", "2024-06-01 10:00:00"),
        ("2024-06-01 10:00:00.5", "2024-06-01 10:00:00.5"),
        ("2024-06-01T10:00:00", "2024-06-01 10:00:00"),
    ],
)
def test_a_late_time_in_another_form_is_read_exactly(store, tmp_path, caplog, written, expected):
    """Plain times are read with a strict format; a later value with a zone, a fraction or a "T"
    fails that read, and the load reads the times again as TIMESTAMPTZ, offset honoured."""
    path = _plain_times_file(tmp_path / "late_offset.csv")
    with path.open("a") as stream:
        stream.write(f"zoned,{written},view\n")
    with caplog.at_level("INFO", logger="core.ingest"):
        ingest_file(store, path, table="events")
    assert store.query_one("SELECT event_time FROM events WHERE user_id = 'zoned'")[0] == pd.Timestamp(
        expected
    )
    assert store.query_one("SELECT count(*) FROM events")[0] == 30001
    assert any("reading times as TIMESTAMPTZ" in record.message for record in caplog.records)


def test_plain_times_are_staged_by_the_strict_read(tmp_path):
    path = _plain_times_file(tmp_path / "plain.csv")
    source = core.ingest_read.inspect_file(path)
    with duckdb.connect() as connection:
        sniffed, iso_times, _ = core.ingest_read.sniff_columns(connection, source)
        staged = core.ingest_read.stage_file(
            connection,
            source,
            sniffed,
            text_columns={"user_id", "event_name"},
            time_columns={"event_time"},
            iso_times=iso_times,
        )
        assert staged.types["event_time"] == "TIMESTAMP" and not staged.read_as_text
        first, last = connection.execute(
            f"SELECT min(event_time), max(event_time) FROM temp.{core.ingest_read.STAGING_TABLE}"
        ).fetchone()
    assert (first, last) == (
        pd.Timestamp("2024-01-01"),
        pd.Timestamp("2024-01-01") + pd.Timedelta(seconds=29999),
    )


@pytest.mark.parametrize("written", ["01/02/2024", "20241301", "1709287200123456", "March 1"])
def test_ambiguous_or_out_of_range_times_are_bad_rows(store, tmp_path, written):
    path = write(tmp_path, "odd.csv", f"user_id,event_time,event_name\nu1,{written},view\n")
    with pytest.raises(BadRowsError, match="line 2, event_time"):
        ingest_file(store, path, table="events")


# -- formats --------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "delimiter"), [("semi.csv", ";"), ("pipe.csv", "|"), ("tab.tsv", "\t")])
def test_delimiters(store, tmp_path, name, delimiter):
    path = write(tmp_path, name, EVENTS_CSV.replace(",", delimiter))
    result = ingest_file(store, path, table="events")
    assert result.rows_accepted == 3
    assert events(store)["revenue"].tolist() == [0, 12.5, 0]


def test_gzip_csv_even_without_gz_suffix(store, tmp_path):
    path = tmp_path / "events.dat"
    path.write_bytes(gzip.compress(EVENTS_CSV.encode()))
    assert ingest_file(store, path, table="events").rows_accepted == 3


def test_parquet_keeps_types_and_converts_zoned_times(store, tmp_path):
    path = tmp_path / "events.parquet"
    with duckdb.connect() as connection:
        connection.execute("SET TimeZone = 'UTC'")
        connection.execute(
            "COPY (SELECT * FROM (VALUES "
            "('007', TIMESTAMPTZ '2024-03-01 10:00:00+02', 'buy', 9.5, 3), "
            "('008', TIMESTAMPTZ '2024-03-02 00:00:00+00', 'view', NULL, 1)) "
            "t(customer_id, ts, action, amount, quantity)) TO ? (FORMAT parquet)",
            [str(path)],
        )
    result = ingest_file(store, path, table="events")
    assert result.rows_accepted == 2
    loaded = events(store)
    assert loaded["user_id"].tolist() == ["007", "008"]
    assert loaded["event_time"].tolist() == [pd.Timestamp("2024-03-01 08:00"), pd.Timestamp("2024-03-02")]
    assert loaded["revenue"].tolist() == [9.5, 0.0]
    assert [json.loads(text) for text in loaded["properties"]] == [{"quantity": 3}, {"quantity": 1}]


def test_parquet_bad_row_number(store, tmp_path):
    path = tmp_path / "bad.parquet"
    pd.DataFrame(
        {"user_id": ["a", "b", None], "event_time": ["2024-01-01"] * 3, "event_name": "x"}
    ).to_parquet(path)
    with pytest.raises(BadRowsError, match="line 3, user_id"):
        ingest_file(store, path, table="events")


# -- mapping --------------------------------------------------------------------------------


@pytest.mark.parametrize("user", ["userId", "user", "customer_id", "USER_ID"])
@pytest.mark.parametrize("time", ["timestamp", "time", "date", "ts"])
@pytest.mark.parametrize(
    ("event", "amount"), [("event", "amount"), ("event_type", "value"), ("action", "dollar_value")]
)
def test_aliases_map_by_themselves(store, tmp_path, user, time, event, amount):
    path = write(tmp_path, "aliases.csv", f"{user},{time},{event},{amount}\n00042,2024-01-01,purchase,3.25\n")
    result = ingest_file(store, path, table="events")
    assert result.column_mapping == {
        user: "user_id",
        time: "event_time",
        event: "event_name",
        amount: "revenue",
    }
    row = store.query_one("SELECT user_id, event_time, event_name, revenue, properties FROM events")
    assert row == ("00042", pd.Timestamp("2024-01-01").to_pydatetime(), "purchase", 3.25, None)


def test_time_aliases_go_to_each_tables_time_column(store, tmp_path):
    users = write(tmp_path, "users.csv", "user,date,country\nu1,2024-01-05,FR\n")
    ingest_file(store, users, table="users")
    assert store.query_one("SELECT signup_time, country FROM users") == (
        pd.Timestamp("2024-01-05").to_pydatetime(),
        "FR",
    )
    assignments = write(tmp_path, "ab.csv", "userId,experiment,variant,time\nu1,checkout,B,2024-01-06\n")
    ingest_file(store, assignments, table="assignments")
    assert (
        store.query_one("SELECT assigned_time FROM assignments")[0]
        == pd.Timestamp("2024-01-06").to_pydatetime()
    )


def test_map_overrides_and_set_fills(store, tmp_path):
    path = write(
        tmp_path, "orders.csv", "buyer,user,ordered_at,total\nb1,ignored,2024-01-01,10\nb2,x,2024-01-02,20\n"
    )
    result = ingest_file(
        store,
        path,
        table="events",
        column_map={"buyer": "user_id", "ordered_at": "event_time", "total": "revenue"},
        constants={"event_name": "purchase"},
    )
    assert result.column_mapping == {
        "buyer": "user_id",
        "ordered_at": "event_time",
        "total": "revenue",
        "user": "properties",
    }
    loaded = events(store)
    assert loaded["user_id"].tolist() == ["b1", "b2"]
    assert loaded["event_name"].tolist() == ["purchase", "purchase"]
    assert loaded["revenue"].tolist() == [10.0, 20.0]
    assert json.loads(loaded["properties"][0]) == {"user": "ignored"}


def test_extra_columns_become_user_columns_typed_from_the_file(store, tmp_path):
    path = write(tmp_path, "users.csv", "user_id,signup_time,country,seats\nu1,2024-01-01,FR,3\nu2,,DE,5\n")
    ingest_file(store, path, table="users")
    types = dict(
        store.query_df(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'users'"
        ).itertuples(index=False)
    )
    assert types["country"] == "VARCHAR" and types["seats"] == "BIGINT"
    assert store.query_one("SELECT sum(seats) FROM users")[0] == 8


def test_users_duplicated_in_the_file_are_bad_and_existing_users_are_replaced(store, tmp_path):
    first = write(
        tmp_path, "users1.csv", "user_id,signup_time,plan\nu1,2024-01-01,free\nu2,2024-01-02,free\n"
    )
    ingest_file(store, first, table="users")
    clash = write(
        tmp_path,
        "users2.csv",
        "user_id,signup_time,plan\nu3,2024-02-01,pro\nu3,2024-02-02,pro\nu3,2024-02-01,pro\n",
    )
    with pytest.raises(BadRowsError, match="user_id appears on 2 rows"):
        ingest_file(store, clash, table="users")
    update = write(
        tmp_path, "users3.csv", "user_id,signup_time,plan\nu2,2024-01-02,pro\nu4,2024-03-01,free\n"
    )
    ingest_file(store, update, table="users")
    users = store.query_df("SELECT user_id, plan FROM users ORDER BY user_id")
    assert users.values.tolist() == [["u1", "free"], ["u2", "pro"], ["u4", "free"]]


def test_recommendation_checks(store, tmp_path):
    path = write(
        tmp_path,
        "recs.csv",
        "timestamp,item_id,position,click,propensity_score\n"
        "2024-01-01,i1,1,0,0.5\n2024-01-01,i2,1.5,1,0.5\n2024-01-01,i3,2,1,1.5\n2024-01-01,i4,2,yes,0.1\n",
    )
    with pytest.raises(BadRowsError) as caught:
        ingest_file(store, path, table="recommendations")
    reasons = caught.value.bad_rows.set_index("line")["reason"].to_dict()
    assert reasons == {
        3: "position is not a whole number",
        4: "propensity is not between 0 and 1",
        5: "reward is not a number",
    }


# -- rejects --------------------------------------------------------------------------------


def test_skip_bad_rows_writes_rejects_and_loads_the_rest(store, tmp_path):
    path = write(
        tmp_path,
        "mixed.csv",
        "user_id,event_time,event_name,revenue\n"
        "u1,2024-01-01,view,0\n=HYPERLINK(1),never,view,0\nu3,2024-01-03,buy,abc\nu4,2024-01-04,view,1\n",
    )
    result = ingest_file(store, path, table="events", skip_bad_rows=True)
    assert (result.rows_accepted, result.rows_rejected) == (2, 2)
    assert result.rejects_path == tmp_path / "mixed.rejects.csv"
    assert result.summary() == "events: 2 rows loaded from mixed.csv (2 rejected -> mixed.rejects.csv)"
    rejects = pd.read_csv(result.rejects_path, dtype=str)
    assert rejects.columns.tolist() == ["user_id", "event_time", "event_name", "revenue", "line", "reason"]
    assert rejects["line"].tolist() == ["3", "4"]
    assert rejects["user_id"].tolist() == ["'=HYPERLINK(1)", "u3"]
    assert rejects["reason"].tolist() == [
        "event_time is not a recognised timestamp",
        "revenue is not a number",
    ]
    assert events(store)["user_id"].tolist() == ["u1", "u4"]
    history = store.query_df("SELECT * FROM load_history")
    assert history[["rows_accepted", "rows_rejected", "duplicates_dropped"]].values.tolist() == [[2, 2, 0]]


@pytest.mark.parametrize("extra", ["", "rowid"])
def test_rejects_of_a_typed_read_hold_the_fields_as_written(store, tmp_path, extra):
    """The file reads with its sniffed types (every value fits): a row missing its user is still
    bad, and the rejects file gives its fields back as the file writes them, not as typed."""
    header = "user_id,event_time,event_name,revenue" + (f",{extra}" if extra else "")
    rows = [
        "u1,2024-01-01T10:00:00Z,view,0",
        ",2024-01-02T08:30:00+02:00,view,0",
        "u3,2024-01-03T00:00:00Z,buy,12.50",
        ",2024-01-04T23:59:59Z,buy,7",
    ]
    if extra:
        rows = [f"{row},{number}" for number, row in enumerate(rows)]
    path = write(tmp_path, "typed.csv", "\n".join([header, *rows]) + "\n")
    result = ingest_file(store, path, table="events", skip_bad_rows=True)
    assert (result.rows_accepted, result.rows_rejected) == (2, 2)
    rejects = pd.read_csv(result.rejects_path, dtype=str, keep_default_na=False)
    expected = [row.split(",") for row in (rows[1], rows[3])]
    columns = header.split(",")
    assert rejects[columns].values.tolist() == expected
    assert rejects["line"].tolist() == ["3", "5"]
    assert set(rejects["reason"]) == {"user_id is empty"}


def test_rejects_path_can_be_chosen(store, tmp_path):
    path = write(tmp_path, "e.csv.gz", "user_id,event_time,event_name\nu1,bad,view\nu2,2024-01-01,view\n")
    target = tmp_path / "out" / "bad.csv"
    target.parent.mkdir()
    result = ingest_file(store, path, table="events", skip_bad_rows=True, rejects_path=target)
    assert result.rejects_path == target and target.exists()


# -- atomicity ------------------------------------------------------------------------------


def _store_with_history(store: Store, tmp_path: Path) -> dict:
    ingest_file(store, write(tmp_path, "first.csv", EVENTS_CSV), table="events")
    ingest_file(store, write(tmp_path, "people.csv", "user_id,signup_time\nu1,2024-01-01\n"), table="users")
    return snapshot(store)


def test_failed_validation_changes_nothing(store, tmp_path):
    before = _store_with_history(store, tmp_path)
    path = write(
        tmp_path, "bad.csv", "user_id,event_time,event_name,extra\nu9,2024-02-01,view,1\nu9,nope,view,2\n"
    )
    with pytest.raises(BadRowsError):
        ingest_file(store, path, table="events")
    users = write(tmp_path, "bad_users.csv", "user_id,signup_time,country\nu7,2024-01-01,FR\nu8,never,DE\n")
    with pytest.raises(BadRowsError):
        ingest_file(store, users, table="users")
    assert snapshot(store) == before


def test_exception_midway_rolls_back_everything(store, tmp_path, monkeypatch):
    before = _store_with_history(store, tmp_path)

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(core.ingest, "_record_load", broken)
    path = write(
        tmp_path, "more_users.csv", "user_id,signup_time,country\nu1,2024-05-01,FR\nu5,2024-05-02,DE\n"
    )
    with pytest.raises(RuntimeError, match="disk on fire"):
        ingest_file(store, path, table="users")
    events_path = write(tmp_path, "more.csv", "user_id,event_time,event_name,color\nu5,2024-05-01,view,red\n")
    with pytest.raises(RuntimeError, match="disk on fire"):
        ingest_file(store, events_path, table="events")
    assert snapshot(store) == before


KILLED_LOAD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import core.ingest
    from core.store import Store

    real_record = core.ingest._record_load

    def record_then_hang(*args, **kwargs):
        real_record(*args, **kwargs)
        print("INSIDE", flush=True)
        time.sleep(120)

    core.ingest._record_load = record_then_hang
    store = Store(sys.argv[1])
    core.ingest.ingest_file(store, Path(sys.argv[2]), table=sys.argv[3])
    """
)


@pytest.mark.parametrize("table", ["events", "users"])
def test_killed_process_mid_transaction_leaves_the_store_unchanged(tmp_path, table):
    db = tmp_path / "killed.duckdb"
    with Store(db) as store:
        before = _store_with_history(store, tmp_path)
    path = tmp_path / "big.csv"
    with duckdb.connect() as connection:
        connection.execute(
            "COPY (SELECT 'k' || i AS user_id, TIMESTAMP '2024-01-01' + to_seconds(i) AS signup_time, "
            "TIMESTAMP '2024-01-01' + to_seconds(i) AS event_time, 'view' AS event_name, 'x' AS plan "
            "FROM range(50000) t(i)) TO ? (HEADER)",
            [str(path)],
        )
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_LOAD, str(db), str(path), table],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert line.strip() == "INSIDE", process.stderr.read()
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    with Store(db) as reopened:
        assert snapshot(reopened) == before


# -- idempotence and duplicates -------------------------------------------------------------


def test_same_content_twice_adds_nothing(store, tmp_path):
    path = write(tmp_path, "e.csv", EVENTS_CSV)
    first = ingest_file(store, path, table="events")
    copy = write(tmp_path, "renamed_copy.csv", EVENTS_CSV)
    second = ingest_file(store, copy, table="events")
    assert first.load_id == 1 and not first.already_loaded
    assert second.already_loaded and second.rows_accepted == 0 and second.load_id is None
    assert second.content_hash == first.content_hash
    assert "already loaded" in second.summary()
    assert store.query_one("SELECT count(*) FROM events")[0] == 3
    assert store.query_one("SELECT count(*) FROM load_history")[0] == 1


def test_exact_duplicates_are_dropped_and_counted(store, tmp_path):
    path = write(
        tmp_path,
        "dups.csv",
        "user_id,event_time,event_name,revenue\n"
        "u1,2024-01-01,buy,5\nu1,2024-01-01,buy,5\nu1,2024-01-01,buy,6\nu1,2024-01-01,buy,5\nu2,2024-01-01,buy,5\n",
    )
    result = ingest_file(store, path, table="events")
    assert (result.rows_accepted, result.duplicates_dropped) == (3, 2)
    assert result.summary() == "events: 3 rows loaded from dups.csv (2 exact duplicates dropped)"
    assert sorted(events(store)["revenue"].tolist()) == [5, 5, 6]
    history = store.query_one(
        "SELECT load_id, source, table_name, rows_accepted, duplicates_dropped FROM load_history"
    )
    assert history == (1, "dups.csv", "events", 3, 2)


@pytest.mark.parametrize("full_hash_above_rows", [0, core.ingest.FULL_HASH_ABOVE_ROWS])
def test_duplicates_among_rows_sharing_user_and_time(store, tmp_path, monkeypatch, full_hash_above_rows):
    # Two distinct times and few users: most rows share the staged hash's key (user, time), and
    # only the copies equal in every column may go. The reference is pandas' drop_duplicates.
    # With the threshold at 0 the rows sharing a key are first hashed over all their values.
    monkeypatch.setattr(core.ingest, "FULL_HASH_ABOVE_ROWS", full_hash_above_rows)
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(
        {
            "user_id": rng.choice(["u1", "u2", "u3"], 1500),
            "event_time": rng.choice(["2024-01-01 10:00:00", "2024-01-02 11:30:00"], 1500),
            "event_name": rng.choice(["view", "buy"], 1500),
            "revenue": rng.integers(0, 40, 1500),
            "item_id": rng.choice([f"i{number}" for number in range(30)], 1500),
        }
    )
    path = tmp_path / "days.csv"
    frame.to_csv(path, index=False)
    expected = len(frame.drop_duplicates())
    assert 0 < len(frame) - expected < len(frame) // 2
    result = ingest_file(store, path, table="events")
    assert (result.rows_accepted, result.duplicates_dropped) == (expected, len(frame) - expected)
    loaded = store.query_df(
        "SELECT user_id, strftime(event_time, '%Y-%m-%d %H:%M:%S') AS event_time, event_name, "
        "CAST(revenue AS BIGINT) AS revenue, item_id FROM events"
    )
    pd.testing.assert_frame_equal(
        loaded.sort_values(list(loaded.columns), ignore_index=True),
        frame.drop_duplicates().sort_values(list(frame.columns), ignore_index=True),
        check_dtype=False,
    )


@pytest.mark.parametrize(
    ("time_type", "key"),
    [
        ("TIMESTAMP", ("who", "when")),
        ("TIMESTAMP WITH TIME ZONE", ("who", "when")),
        ("DATE", ()),  # many rows of one user share a day: hash every column
        ("BIGINT", ()),  # epoch seconds or YYYYMMDD: cannot tell
    ],
)
def test_staged_row_hash_is_keyed_by_user_and_precise_time(time_type, key):
    spec = core.schema.CANONICAL_TABLES["events"]
    plan = core.ingest.plan_columns(
        spec, ["who", "when", "event_name"], {"who": "user_id", "when": "event_time"}, {}, Path("e.csv")
    )
    sniffed = {"who": "VARCHAR", "when": time_type, "event_name": "VARCHAR"}
    assert core.ingest._duplicate_key_columns(spec, plan, sniffed) == key


def test_duplicates_when_the_user_is_a_constant(store, tmp_path):
    path = write(
        tmp_path,
        "one_user.csv",
        "ts,action,amount\n2024-01-01 10:00:00,buy,5\n2024-01-01 10:00:00,buy,5\n"
        "2024-01-01 10:00:00,buy,6\n2024-01-01 11:00:00,buy,5\n",
    )
    result = ingest_file(store, path, table="events", constants={"user_id": "shop"})
    assert (result.rows_accepted, result.duplicates_dropped) == (3, 1)


def test_result_is_frozen(store, tmp_path):
    result = ingest_file(
        store, write(tmp_path, "e.csv", EVENTS_CSV), table="events", source_name="orders export"
    )
    assert isinstance(result, IngestResult) and result.source == "orders export"
    with pytest.raises(AttributeError):
        result.rows_accepted = 0


# -- the CLI --------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "core", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60
    )


def test_cli_bad_file_exits_2_with_one_line(tmp_path):
    path = write(tmp_path, "bad.csv", "user_id,event_time,event_name\nu1,whenever,view\n")
    done = run_cli("ingest", str(path), "--table", "events", "--db", str(tmp_path / "cli.duckdb"))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "line 2" in lines[0]


def test_cli_success_prints_the_summary(tmp_path):
    path = write(tmp_path, "orders.csv", "customer_id,date,amount\nc1,20240101,3\n")
    done = run_cli(
        "ingest",
        str(path),
        "--table",
        "events",
        "--db",
        str(tmp_path / "cli.duckdb"),
        "--set",
        "event_name=purchase",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "events: 1 row loaded from orders.csv"


# -- Open Bandit Dataset --------------------------------------------------------------------


@pytest.mark.parametrize(("policy", "readme_mean"), [("random", 0.0038), ("bts", 0.0042)])
def test_open_bandit_dataset_loads_into_recommendations(store, policy, readme_mean):
    path = DATASETS / "obd" / policy / "all.csv.gz"
    if not path.exists():
        pytest.skip(f"Open Bandit Dataset sample not found at {path} (see /work/shared/datasets/README.md)")
    raw = pd.read_csv(path)
    result = ingest_file(store, path, table="recommendations", constants={"policy": policy})
    assert result.rows_accepted == len(raw) == 10_000
    assert result.column_mapping["click"] == "reward"
    assert result.column_mapping["propensity_score"] == "propensity"
    assert result.column_mapping["user-item_affinity_79"] == "context"
    count, mean_reward, policies, users, requests = store.query_one(
        "SELECT count(*), avg(reward), list(DISTINCT policy), count(user_id), count(request_id) FROM recommendations"
    )
    assert count == 10_000 and policies == [policy] and users == 0 and requests == 0
    assert mean_reward == pytest.approx(raw["click"].mean())
    assert round(mean_reward, 4) == readme_mean
    first_time = store.query_one("SELECT min(rec_time) FROM recommendations")[0]
    expected = pd.to_datetime(raw["timestamp"], utc=True).min().tz_localize(None)
    assert pd.Timestamp(first_time) == expected
    context = json.loads(store.query_one("SELECT context FROM recommendations LIMIT 1")[0])
    assert {"user_feature_0", "user-item_affinity_0"} <= set(context)


def test_a_file_column_named_rowid_keeps_lines_right(store, tmp_path):
    path = write(
        tmp_path, "rowid.csv", "rowid,user_id,event_time,event_name\n7,u1,2024-01-01,a\n8,u2,never,b\n"
    )
    with pytest.raises(BadRowsError, match="line 3, event_time"):
        ingest_file(store, path, table="events")
    result = ingest_file(store, path, table="events", skip_bad_rows=True)
    assert result.rows_accepted == 1
    assert json.loads(store.query_one("SELECT properties FROM events")[0]) == {"rowid": 7}


MALFORMED_CSV = (
    "user_id,event_time,event_name,revenue\n"
    "m1,2024-01-01 10:00:00,view,1\n"
    "m2,2024-01-02 10:00:00,view,2,surplus\n"
    "m3,2024-01-03 10:00:00,view,\n"
    "m4,2024-01-04 10:00:00,view\n"
    "\n"
    'm5,"2024-01-05 10:00:00","two\nlines",5\n'
    "m6,whenever,view,6\n"
    "m7,2024-01-07 10:00:00,view,7\n"
)
MALFORMED_REJECTS = [
    {
        "line": "3",
        "reason": "expected 4 fields (as the header), found 5",
        "raw_line": "m2,2024-01-02 10:00:00,view,2,surplus",
    },
    {
        "line": "5",
        "reason": "expected 4 fields (as the header), found 3",
        "raw_line": "m4,2024-01-04 10:00:00,view",
    },
    {"line": "7", "reason": "event_time is not a recognised timestamp", "raw_line": None},
]


@pytest.mark.parametrize("name", ["malformed.csv", "malformed.csv.gz"])
def test_rows_of_the_wrong_width_are_bad_rows_with_their_lines(store, tmp_path, name):
    """Too many and too few fields are bad rows; lines after them (past a blank line and a value
    spanning two lines) keep their numbers; a row ending in an empty field is not short."""
    before = _store_with_history(store, tmp_path)
    path = write(tmp_path, name, MALFORMED_CSV)
    with pytest.raises(BadRowsError) as caught:
        ingest_file(store, path, table="events")
    message = str(caught.value)
    assert str(path) in message and "3 bad rows, nothing loaded" in message
    assert "line 3, (row): 'm2,2024-01-02 10:00:00,view,2,surplus' - expected 4 fields" in message
    assert caught.value.bad_rows[["line", "column"]].values.tolist() == [
        [3, "(row)"],
        [5, "(row)"],
        [7, "event_time"],
    ]
    assert snapshot(store) == before
    result = ingest_file(store, path, table="events", skip_bad_rows=True)
    assert (result.rows_accepted, result.rows_rejected) == (4, 3)
    loaded = store.query_df(
        "SELECT user_id, event_time, event_name, revenue FROM events WHERE user_id IN "
        "('m1', 'm3', 'm5', 'm7') ORDER BY user_id"
    )
    assert loaded["user_id"].tolist() == ["m1", "m3", "m5", "m7"]
    assert loaded["event_name"].tolist() == ["view", "view", "two\nlines", "view"]
    assert loaded["revenue"].tolist() == [1.0, 0.0, 5.0, 7.0]
    assert loaded["event_time"].tolist() == [pd.Timestamp(f"2024-01-0{day} 10:00:00") for day in (1, 3, 5, 7)]
    assert store.query_one("SELECT count(*) FROM events WHERE user_id IN ('m2', 'm4', 'm6')")[0] == 0
    rejects = pd.read_csv(result.rejects_path, dtype=str, keep_default_na=False, na_values=[""])
    assert rejects.columns.tolist() == [
        "user_id",
        "event_time",
        "event_name",
        "revenue",
        "line",
        "reason",
        "raw_line",
    ]
    as_records = rejects[["line", "reason", "raw_line"]].astype(object).where(rejects.notna(), None)
    assert as_records.to_dict("records") == MALFORMED_REJECTS
    assert rejects["user_id"].isna().tolist() == [True, True, False]
    assert rejects.loc[2, ["user_id", "event_time"]].tolist() == ["m6", "whenever"]
    history = store.query_df("SELECT rows_accepted, rows_rejected FROM load_history WHERE source = ?", [name])
    assert history.values.tolist() == [[4, 3]]


def test_cli_refuses_rows_of_the_wrong_width_with_exit_2(tmp_path):
    path = write(tmp_path, "ragged.csv", MALFORMED_CSV)
    database = tmp_path / "cli.duckdb"
    done = run_cli("ingest", str(path), "--table", "events", "--db", str(database))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and str(path) in lines[0] and "3 bad rows" in lines[0] and "line 5, (row)" in lines[0]
    )
    done = run_cli("ingest", str(path), "--table", "events", "--db", str(database), "--skip-bad-rows")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "events: 4 rows loaded from ragged.csv (3 rejected -> ragged.rejects.csv)"


def test_rows_of_unequal_width_past_the_sniffers_sample(store, tmp_path):
    large = tmp_path / "ragged_large.csv"
    with duckdb.connect() as connection:
        connection.execute(
            "COPY (SELECT 'u' || i AS user_id, DATE '2024-01-01' AS event_time, 'view' AS event_name "
            "FROM range(30000) t(i)) TO ? (HEADER)",
            [str(large)],
        )
    with large.open("a") as stream:
        stream.write("u_last,2024-01-01,view,surplus\nu_end,2024-01-02,view\n")
    with pytest.raises(BadRowsError, match="1 bad row, nothing loaded; line 30002, \\(row\\)") as caught:
        ingest_file(store, large, table="events")
    assert str(large) in str(caught.value)
    result = ingest_file(store, large, table="events", skip_bad_rows=True)
    assert (result.rows_accepted, result.rows_rejected) == (30001, 1)
    assert store.query_one("SELECT max(event_time), count(DISTINCT user_id) FROM events") == (
        pd.Timestamp("2024-01-02").to_pydatetime(),
        30001,
    )


def test_an_empty_map_target_keeps_a_column_that_would_map_by_itself(store, tmp_path):
    """``--map amount=`` keeps ``amount`` as an extra column (here: revenue is not money)."""
    path = write(tmp_path, "points.csv", "user_id,timestamp,event,amount\nu1,2024-01-01,earn,30\n")
    result = ingest_file(store, path, table="events", column_map={"amount": ""})
    assert result.column_mapping["amount"] == "properties"
    row = store.query_one("SELECT revenue, properties FROM events")
    assert row[0] == 0.0
    assert json.loads(row[1]) == {"amount": 30}


def test_cli_map_with_an_empty_target(tmp_path):
    path = write(tmp_path, "points.csv", "user_id,timestamp,event,amount\nu1,2024-01-01,earn,30\n")
    db = tmp_path / "cli.duckdb"
    assert cli_main(["ingest", str(path), "--table", "events", "--db", str(db), "--map", "amount="]) == 0
    with Store(db, read_only=True) as reopened:
        assert reopened.query_one("SELECT revenue FROM events")[0] == 0.0
