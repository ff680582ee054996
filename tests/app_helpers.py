"""Shared by the page tests: a tiny hand-made store and helpers to read an AppTest's output.

Expected numbers in page tests come from direct DuckDB queries on the store file, not from ``core``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pytest
from streamlit.testing.v1 import AppTest

from core.store import Store

APP = str(Path(__file__).resolve().parents[1] / "app.py")
TIMEOUT = 120
COUNTRIES = ("US", "DE", "FR")
PLANS = ("free", "pro")
EVENT_NAMES = ("session_start", "view", "purchase")


def build_tiny_store(path: Path) -> None:
    """60 users starting over six weeks of 2025, each active on a deterministic set of later days."""
    origin = dt.datetime(2025, 9, 1, 9, 0)
    users = []
    events = []
    for index in range(60):
        user_id = f"u{index:03d}"
        start = origin + dt.timedelta(days=index % 42, hours=index % 5)
        users.append((user_id, start, COUNTRIES[index % 3], PLANS[index % 2]))
        last_day = 10 if index % 5 == 0 else 60
        for day in range(0, last_day, 1 + index % 11):
            when = start + dt.timedelta(days=day, minutes=index)
            name = EVENT_NAMES[(index + day) % 3]
            revenue = 9.5 if name == "purchase" and index % 4 == 0 else 0.0
            events.append((user_id, when, name, revenue))
    with Store(path) as store, store.transaction() as cursor:
        cursor.execute("ALTER TABLE users ADD COLUMN country VARCHAR")
        cursor.execute("ALTER TABLE users ADD COLUMN plan VARCHAR")
        cursor.executemany(
            "INSERT INTO users (user_id, signup_time, country, plan) VALUES (?, ?, ?, ?)", users
        )
        cursor.executemany(
            "INSERT INTO events (user_id, event_time, event_name, revenue) VALUES (?, ?, ?, ?)", events
        )
        store.set_meta(cursor, "dataset", "tiny")
        store.set_meta(cursor, "source", "A tiny hand-made store for the page tests.")


def count(path: Path, sql: str, params: list | None = None) -> int:
    """One number straight from the store file (the app may hold it open: same config, shared)."""
    with duckdb.connect(str(path)) as connection:
        return connection.execute(sql, params or []).fetchone()[0]


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("app") / "tiny.duckdb"
    build_tiny_store(path)
    return path


@pytest.fixture
def app(tiny_store: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("TENURE_DB", str(tiny_store))
    return AppTest.from_file(APP, default_timeout=TIMEOUT)


def metric_value(at: AppTest, label: str) -> str:
    matches = [metric.value for metric in at.metric if metric.label == label]
    assert matches, f"no metric '{label}' among {[metric.label for metric in at.metric]}"
    return matches[0]


def table_with(at: AppTest, *columns: str):
    """The first shown table having these columns (st.dataframe keys are not kept by AppTest)."""
    for frame in at.dataframe:
        if set(columns) <= set(frame.value.columns):
            return frame.value
    raise AssertionError(f"no table with columns {columns}")


def open_tab(at: AppTest, key: str, label: str) -> AppTest:
    """Select tab ``label`` of the lazy ``st.tabs`` with ``key`` (AppTest cannot click a tab)."""
    at.session_state[key] = label
    at.run()
    assert not at.exception, at.exception
    return at


def open_page(at: AppTest, page: str) -> AppTest:
    at.run()
    assert not at.exception, at.exception
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at
