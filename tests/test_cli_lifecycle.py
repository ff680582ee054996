"""`python -m core lifecycle` and `stickiness` end to end: the contract columns and the library's numbers."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import pandas as pd
import pytest

from core.lifecycle import LifecycleSpec, lifecycle_table
from core.population import Filters, StartSpec
from core.stickiness import StickinessSpec, active_users_series
from core.store import PROJECT_ROOT, Store
from tests.test_retention import generate_data, write_store


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "store.duckdb"
    write_store(path, *generate_data(seed=4, n_users=120))
    return path


def run_cli(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "core", *arguments],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("period", ["day", "week", "month"])
def test_lifecycle_csv_contract(store_path, period):
    result = run_cli("lifecycle", "--db", str(store_path), "--period", period)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "period,new,returning,resurrecting,dormant"
    printed = pd.read_csv(io.StringIO(result.stdout), dtype={"period": str})
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", value) for value in printed["period"])
    with Store(store_path, read_only=True) as store:
        expected = lifecycle_table(store, LifecycleSpec(period=period), Filters())
    assert list(printed["period"]) == [day.isoformat() for day in expected["period"]]
    for column in ("new", "returning", "resurrecting", "dormant"):
        assert printed[column].tolist() == expected[column].tolist()
    assert (printed["dormant"] >= 0).all() and printed["dormant"].sum() > 0


def test_lifecycle_json_with_options(store_path):
    result = run_cli(
        "lifecycle",
        "--db",
        str(store_path),
        "--start",
        "signup",
        "--event",
        "purchase",
        "--event",
        "view",
        "--format",
        "json",
    )
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert records and all(
        list(record) == ["period", "new", "returning", "resurrecting", "dormant"] for record in records
    )
    spec = LifecycleSpec(start=StartSpec("signup"), activity_events=("purchase", "view"))
    with Store(store_path, read_only=True) as store:
        expected = lifecycle_table(store, spec, Filters())
    assert [record["resurrecting"] for record in records] == expected["resurrecting"].tolist()


def test_stickiness_series(store_path):
    result = run_cli("stickiness", "--db", str(store_path), "--event", "view", "--series")
    assert result.returncode == 0, result.stderr
    printed = pd.read_csv(io.StringIO(result.stdout))
    assert list(printed.columns) == ["day", "dau", "wau", "mau", "dau_mau", "full_window"]
    with Store(store_path, read_only=True) as store:
        expected = active_users_series(store, StickinessSpec(event="view"), Filters())
    assert printed["mau"].tolist() == expected["mau"].tolist()


def test_stickiness_histogram_columns(store_path):
    result = run_cli("stickiness", "--db", str(store_path), "--span", "4w")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "span_start,span_end,active_units,users,share,partial"


@pytest.mark.parametrize(
    "arguments",
    [
        ["lifecycle", "--period", "year"],
        ["lifecycle", "--start", "nonsense"],
        ["lifecycle", "--start", "event:"],
        ["lifecycle", "--format", "xml"],
        ["stickiness", "--span", "2w"],
    ],
)
def test_bad_input_exits_2(store_path, arguments):
    result = run_cli(*arguments, "--db", str(store_path))
    assert result.returncode == 2
    assert result.stderr.strip()
    assert "Traceback" not in result.stderr


def test_missing_store_exits_2(tmp_path):
    result = run_cli("lifecycle", "--db", str(tmp_path / "missing.duckdb"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "does not exist" in result.stderr


def test_help_documents_every_flag():
    for command, flags in (
        ("lifecycle", ("--db", "--period", "--start", "--event", "--format")),
        ("stickiness", ("--db", "--event", "--span", "--series", "--format")),
    ):
        result = run_cli(command, "--help")
        assert result.returncode == 0
        for flag in flags:
            assert flag in result.stdout
