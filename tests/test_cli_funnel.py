"""`python -m core funnel` end to end: the contract columns, and the library's numbers."""

from __future__ import annotations

import datetime as dt
import io
import json
import subprocess
import sys

import pandas as pd
import pytest

from core.funnels import FunnelSpec, funnel_table
from core.population import Filters
from core.store import PROJECT_ROOT, Store
from tests.test_funnels import tie_heavy_events, write_events

CONTRACT = ["step", "event_name", "users", "conversion_from_start", "conversion_from_previous"]


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli_funnel") / "store.duckdb"
    write_events(path, tie_heavy_events(seed=8, users=90))
    return path


def run_cli(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "core", "funnel", *arguments],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def expected(path, spec: FunnelSpec) -> pd.DataFrame:
    with Store(path, read_only=True) as store:
        return funnel_table(store, spec, Filters())


def test_csv_contract(store_path):
    result = run_cli("--db", str(store_path), "--steps", "a,b,c", "--window", "30m")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == ",".join(CONTRACT)
    printed = pd.read_csv(io.StringIO(result.stdout))
    table = expected(store_path, FunnelSpec(("a", "b", "c"), dt.timedelta(minutes=30)))
    assert printed["step"].tolist() == [1, 2, 3]
    assert printed["event_name"].tolist() == ["a", "b", "c"]
    assert printed["users"].tolist() == table["users"].tolist()
    assert printed["conversion_from_start"].tolist() == pytest.approx(table["conversion_from_start"].tolist())
    assert printed["conversion_from_previous"].tolist() == pytest.approx(
        table["conversion_from_previous"].tolist()
    )
    assert 0 < printed["users"].iloc[-1] < printed["users"].iloc[0]


@pytest.mark.parametrize("order", ["strict", "any"])
def test_json_with_order_and_exclusion(store_path, order):
    result = run_cli(
        "--db",
        str(store_path),
        "--steps",
        "a,b",
        "--window",
        "1h",
        "--order",
        order,
        "--exclude",
        "x",
        "--format",
        "json",
    )
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert list(records[0]) == CONTRACT
    table = expected(store_path, FunnelSpec(("a", "b"), dt.timedelta(hours=1), order, "x"))
    assert [record["users"] for record in records] == table["users"].tolist()


def test_default_window_is_seven_days(store_path):
    result = run_cli("--db", str(store_path), "--steps", "a,d")
    printed = pd.read_csv(io.StringIO(result.stdout))
    assert printed["users"].tolist() == expected(store_path, FunnelSpec(("a", "d")))["users"].tolist()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--window", "soon"], "--window 'soon' is not a length of time"),
        (["--window", "0d"], "must be longer than zero"),
        (["--order", "sideways"], "invalid choice"),
        (["--steps", "a"], "2 to 10 steps"),
        (["--steps", "a,nope"], "no event named 'nope'"),
    ],
)
def test_bad_input_exits_2(store_path, arguments, message):
    base = {"--steps": "a,b"}
    flags = dict(zip(arguments[::2], arguments[1::2], strict=True))
    merged = {**base, **flags}
    result = run_cli("--db", str(store_path), *[part for pair in merged.items() for part in pair])
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_help_documents_every_flag():
    result = run_cli("--help")
    assert result.returncode == 0
    for flag in ("--db", "--steps", "--window", "--order", "--format", "--exclude", "--by"):
        assert flag in result.stdout
