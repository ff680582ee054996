"""`python -m core survival` end to end: the contract's columns, and the library's numbers."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter

from core.population import Filters
from core.store import PROJECT_ROOT, Store
from core.survival import SurvivalSpec, durations


def run_cli(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "core", "survival", *arguments],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_durations_csv(small_store_path):
    result = run_cli("--db", str(small_store_path), "--inactivity", "2w", "--by", "plan", "--durations")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "user_id,duration_days,churned,group"
    printed = pd.read_csv(io.StringIO(result.stdout), dtype={"group": str})
    with Store(small_store_path, read_only=True) as store:
        expected = durations(store, SurvivalSpec(inactivity_days=14, breakdown="plan"), Filters())
    assert list(printed["user_id"]) == list(expected["user_id"])
    np.testing.assert_allclose(printed["duration_days"], expected["duration_days"], rtol=1e-12)
    assert list(printed["churned"]) == list(expected["churned"])
    assert list(printed["group"]) == list(expected["group"])


def test_km_table_csv_matches_lifelines(small_store_path):
    result = run_cli("--db", str(small_store_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "group,day,at_risk,survival,lower,upper"
    printed = pd.read_csv(io.StringIO(result.stdout))
    assert set(printed["group"]) == {"all"}
    with Store(small_store_path, read_only=True) as store:
        frame = durations(store, SurvivalSpec(), Filters())
    times = frame["duration_days"].to_numpy()
    fitter = KaplanMeierFitter().fit(times, frame["churned"].to_numpy())
    distinct = np.unique(times)
    np.testing.assert_allclose(printed["day"], distinct, rtol=1e-12)
    np.testing.assert_allclose(printed["survival"], fitter.survival_function_at_times(distinct), rtol=1e-9)
    np.testing.assert_allclose(
        printed["lower"], fitter.confidence_interval_.loc[distinct].iloc[:, 0], rtol=1e-9
    )
    assert list(printed["at_risk"]) == [int((times >= day).sum()) for day in distinct]


def test_km_table_json_by_experiment_with_terminal_event(small_store_path):
    result = run_cli(
        "--db",
        str(small_store_path),
        "--terminal-event",
        "purchase",
        "--by",
        "experiment:rec_policy",
        "--format",
        "json",
    )
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert records and all(
        set(record) == {"group", "day", "at_risk", "survival", "lower", "upper"} for record in records
    )
    with Store(small_store_path, read_only=True) as store:
        groups = set(
            store.query_df("SELECT DISTINCT variant FROM assignments WHERE experiment = 'rec_policy'")[
                "variant"
            ]
        )
    assert {record["group"] for record in records} <= groups | {"(none)", "(several)"}


@pytest.mark.parametrize("value", ["soon", "0d", "-3d"])
def test_bad_inactivity_exits_2(small_store_path, value):
    result = run_cli("--db", str(small_store_path), f"--inactivity={value}")
    assert result.returncode == 2
    assert result.stderr.startswith("error: --inactivity") and len(result.stderr.splitlines()) == 1


def test_bad_breakdown_exits_2(small_store_path):
    result = run_cli("--db", str(small_store_path), "--by", "shoe_size")
    assert result.returncode == 2 and "not a column of the users table" in result.stderr


def test_help_documents_every_flag():
    result = run_cli("--help")
    assert result.returncode == 0
    for flag in ("--db", "--inactivity", "--terminal-event", "--start", "--by", "--durations", "--format"):
        assert flag in result.stdout
