"""`python -m core retention` end to end: the printed table is the library's complete cells."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import pandas as pd
import pytest

from core.population import Filters
from core.retention import RetentionSpec, retention_table
from core.store import PROJECT_ROOT, Store
from tests.test_retention import generate_data, write_store


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "store.duckdb"
    write_store(path, *generate_data(seed=3, n_users=120))
    return path


def run_cli(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "core", *arguments],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def expected_cells(path, spec: RetentionSpec) -> pd.DataFrame:
    with Store(path, read_only=True) as store:
        table = retention_table(store, spec, Filters())
    return table[~table["incomplete"]].reset_index(drop=True)


def test_csv_output(store_path):
    result = run_cli("retention", "--db", str(store_path), "--period", "week", "--format", "csv")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "cohort,period,eligible,retained,rate"
    printed = pd.read_csv(io.StringIO(result.stdout), dtype={"cohort": str})
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", value) for value in printed["cohort"])
    expected = expected_cells(store_path, RetentionSpec(period="week"))
    assert len(printed) == len(expected)
    assert printed["rate"].notna().all() and (printed["eligible"] > 0).all()
    assert list(printed["cohort"]) == [value.isoformat() for value in expected["cohort"]]
    assert list(printed["retained"]) == list(expected["retained"])
    assert list(printed["eligible"]) == list(expected["eligible"])


def test_json_output_with_options(store_path):
    result = run_cli(
        "retention",
        "--db",
        str(store_path),
        "--period",
        "day",
        "--mode",
        "consecutive",
        "--max-periods",
        "5",
        "--return-event",
        "view",
        "--format",
        "json",
    )
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert records and all(
        set(record) == {"cohort", "period", "eligible", "retained", "rate"} for record in records
    )
    expected = expected_cells(
        store_path, RetentionSpec(period="day", mode="consecutive", max_periods=5, return_events=("view",))
    )
    assert [record["retained"] for record in records] == list(expected["retained"])
    assert [record["cohort"] for record in records] == [value.isoformat() for value in expected["cohort"]]
    assert max(record["period"] for record in records) <= 5


def test_missing_store_exits_2_with_one_line(tmp_path):
    result = run_cli("retention", "--db", str(tmp_path / "missing.duckdb"))
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "missing.duckdb" in result.stderr
