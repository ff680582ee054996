"""The app's pages, run headless with Streamlit's AppTest against a tiny store built here.

Expected numbers come from direct DuckDB queries on the store file, not from ``core``.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pandas as pd
import pytest
from app_helpers import APP, TIMEOUT, count, metric_value, open_page, table_with
from streamlit.testing.v1 import AppTest

from core.population import Filters
from core.retention import RetentionSpec, retention_curve
from core.store import Store

APP_DIR = Path(__file__).resolve().parents[1]


def test_home_shows_headline_figures(app: AppTest, tiny_store: Path) -> None:
    app.run()
    assert not app.exception, app.exception
    users = count(tiny_store, "SELECT count(DISTINCT user_id) FROM events")
    events = count(tiny_store, "SELECT count(*) FROM events")
    assert metric_value(app, "Users") == f"{users:,}"
    assert metric_value(app, "Events") == f"{events:,}"
    assert any(title.value == "tiny" or "tiny" in title.value.lower() for title in app.title)
    linked = [link.proto.page for link in app.get("page_link")]
    views = sorted(
        path.stem for path in APP_DIR.glob("pages/*/*.py") if path.parent.name not in ("home", "shared")
    )
    assert sorted(linked) == views and len(views) == 10


def test_url_filters_are_applied(app: AppTest, tiny_store: Path) -> None:
    app.query_params["seg.country"] = "US"
    app.query_params["from"] = "2025-09-10"
    app.run()
    assert not app.exception, app.exception
    expected = count(
        tiny_store,
        "SELECT count(*) FROM (SELECT user_id, min(event_time) AS start FROM events GROUP BY user_id) s "
        "JOIN users u USING (user_id) WHERE u.country = 'US' AND s.start >= TIMESTAMP '2025-09-10'",
    )
    assert 0 < expected < 60
    assert metric_value(app, "Users") == f"{expected:,}"
    assert app.multiselect(key="filter_seg.country").value == ["US"]
    assert app.date_input(key="filter_from").value == dt.date(2025, 9, 10)
    assert app.query_params.get("seg.country") == "US"


def test_bad_url_parameter_warns_without_crashing(app: AppTest) -> None:
    app.query_params["from"] = "not-a-date"
    app.query_params["seg.nosuch"] = "x"
    app.run()
    assert not app.exception, app.exception
    warnings = " ".join(warning.value for warning in app.warning)
    assert "from" in warnings
    assert "nosuch" in warnings
    assert app.metric


def test_filters_persist_across_pages(app: AppTest) -> None:
    app.run()
    app.multiselect(key="filter_seg.plan").select("pro").run()
    assert not app.exception, app.exception
    app.switch_page("pages/explore/retention.py").run()
    assert not app.exception, app.exception
    assert app.multiselect(key="filter_seg.plan").value == ["pro"]
    assert app.query_params.get("seg.plan") == "pro"


def test_retention_page_renders_and_rerenders(app: AppTest) -> None:
    open_page(app, "pages/explore/retention.py")
    assert [title.value for title in app.title] == ["Retention"]
    assert not app.error
    app.selectbox(key="ret_period").select("day").run()
    assert not app.exception, app.exception
    assert app.query_params.get("period") == "day"
    app.selectbox(key="ret_mode").select("unbounded").run()
    app.selectbox(key="ret_by").select("country").run()
    app.toggle(key="ret_calendar").set_value(True).run()
    app.multiselect(key="ret_return").select("purchase").run()
    assert not app.exception, app.exception
    assert not app.error
    assert app.query_params.get("return") == "purchase"
    assert app.query_params.get("by") == "country"


def test_retention_controls_come_from_the_url(app: AppTest) -> None:
    app.query_params["period"] = "month"
    app.query_params["mode"] = "consecutive"
    app.query_params["start"] = "event:purchase"
    app.query_params["seg.plan"] = "pro"
    app.switch_page("pages/explore/retention.py").run()
    assert not app.exception, app.exception
    assert app.selectbox(key="ret_period").value == "month"
    assert app.selectbox(key="ret_mode").value == "consecutive"
    assert app.selectbox(key="ret_start").value == "event"
    assert app.selectbox(key="ret_start_event").value == "purchase"
    assert app.multiselect(key="filter_seg.plan").value == ["pro"]
    assert app.query_params.get("period") == "month"


def test_retention_curves_break_down_by_experiment_variant(
    small_store_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A private copy: the app keeps its store open in this process, in read-write mode.
    path = Path(shutil.copy(small_store_path, tmp_path / "experiments.duckdb"))
    with Store(path) as store:
        experiment = store.query_one("SELECT min(experiment) FROM assignments")[0]
        spec = RetentionSpec(period="week", max_periods=8)
        expected = retention_curve(store, spec, Filters(), by=f"experiment:{experiment}")
        variants = set(
            store.query_df("SELECT DISTINCT variant FROM assignments WHERE experiment = ?", [experiment])[
                "variant"
            ]
        )
    monkeypatch.setenv("TENURE_DB", str(path))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["by"] = f"experiment:{experiment}"
    at.query_params["max_periods"] = "8"
    at.switch_page("pages/explore/retention.py").run()
    assert not at.exception, at.exception
    assert not at.warning, [box.value for box in at.warning]
    assert at.selectbox(key="ret_by").value == f"experiment:{experiment}"
    assert f"**By variant in {experiment}**" in [text.value for text in at.markdown]
    curve = table_with(at, "segment", "period", "eligible", "retained", "rate")
    assert variants <= set(curve["segment"])
    pd.testing.assert_frame_equal(curve.reset_index(drop=True), expected, check_dtype=False)


@pytest.mark.parametrize("start", ["first_event", "signup"])
@pytest.mark.parametrize(
    "page, key", [("pages/explore/retention.py", "ret_start"), ("pages/explore/lifecycle.py", "lc_start")]
)
def test_the_start_the_app_writes_reads_back_without_a_warning(
    app: AppTest, page: str, key: str, start: str
) -> None:
    app.query_params["start"] = start
    app.switch_page(page).run()
    assert not app.exception, app.exception
    assert not app.warning, [warning.value for warning in app.warning]
    assert app.selectbox(key=key).value == start


def test_an_unknown_start_event_falls_back_to_the_default_start(app: AppTest) -> None:
    app.query_params["start"] = "event:nosuch"
    app.switch_page("pages/explore/retention.py").run()
    assert not app.exception, app.exception
    assert app.selectbox(key="ret_start").value == "first_event"
    assert len(app.warning) == 1 and "nosuch" in app.warning[0].value
    assert app.query_params.get("start") == "first_event"


def test_upload_without_a_user_column_points_at_the_page_controls(app: AppTest, tiny_store: Path) -> None:
    before = count(tiny_store, "SELECT count(*) FROM events")
    open_page(app, "pages/data/data.py")
    no_user = b"ts,action,amount\n2025-09-01 10:00:00,view,0\n"
    app.file_uploader(key="data_upload").set_value(("no_user.csv", no_user, "text/csv")).run()
    app.selectbox(key="data_table").select("events").run()
    app.button(key="data_load").click().run()
    assert not app.exception, app.exception
    errors = " ".join(error.value for error in app.error)
    assert "no_user.csv has no column for events.user_id" in errors
    assert "'Column mapping'" in errors and "'Constants for missing columns'" in errors
    assert "--map" not in errors and "--set" not in errors, "the page's own controls, not the CLI flags"
    assert count(tiny_store, "SELECT count(*) FROM events") == before


def test_skipped_rows_download_under_the_name_the_summary_gives(
    tiny_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "copy.duckdb"
    store.write_bytes(tiny_store.read_bytes())
    monkeypatch.setenv("TENURE_DB", str(store))
    app = AppTest.from_file(str(APP_DIR / "app.py"), default_timeout=120)
    open_page(app, "pages/data/data.py")
    mixed = b"user_id,event_time,event_name\nz1,2025-09-01 10:00:00,view\nz2,never,view\n"
    app.file_uploader(key="data_upload").set_value(("mixed.csv", mixed, "text/csv")).run()
    app.selectbox(key="data_table").select("events").run()
    app.checkbox(key="data_skip_bad").check().run()
    app.button(key="data_load").click().run()
    assert not app.exception, app.exception
    assert [box.value for box in app.success] == [
        "events: 1 row loaded from mixed.csv (1 rejected -> mixed.csv.rejects.csv)"
    ]
    rejects = [
        button for button in app.get("download_button") if button.proto.label == "Download rejected rows"
    ]
    assert len(rejects) == 1
    last_load = app.session_state["_data_last_load"]  # what _last_load draws from
    assert last_load["rejects_name"] == "mixed.csv.rejects.csv"
    assert "line" in last_load["rejects"] and "never" in last_load["rejects"]


def _seeded_controls_script() -> None:
    import streamlit as st

    from pages.shared import ui

    ui.start_run()
    ui.seed_control("pick", "c", options=["a", "b", "c"])
    ui.seed_control("many", ["a"], options=["a", "b", "c"])
    st.selectbox("Pick", ["a", "b", "c"], key="pick")
    st.multiselect("Many", ["a", "b", "c"], key="many")


def test_values_no_longer_offered_fall_back_to_the_pages_default(tiny_store: Path, monkeypatch) -> None:
    """Values remembered from another dataset (an event name, an attribute this store lacks) give
    way to the page's default, not to the widget's first option, and a multiselect keeps only its
    offered entries."""
    monkeypatch.setenv("TENURE_DB", str(tiny_store))
    app = AppTest.from_function(_seeded_controls_script)
    app.session_state["_tenure_remembered"] = {"pick": "gone", "many": ["b", "gone"]}
    app.run()
    assert not app.exception, app.exception
    assert app.selectbox(key="pick").value == "c"
    assert app.multiselect(key="many").value == ["b"]


def test_retention_drill_down_lists_the_cell(app: AppTest, tiny_store: Path) -> None:
    open_page(app, "pages/explore/retention.py")
    cohort = app.selectbox(key="drill_cohort").value
    users = table_with(app, "user_id", "start_time")
    table = table_with(app, "cohort", "period", "retained")
    cell = table[(table["cohort"] == cohort) & (table["period"] == 1)].iloc[0]
    assert len(users) == cell["retained"]
    # Independent check: week-1 returners of the cohort's first user list, from the raw events.
    returned = count(
        tiny_store,
        "WITH s AS (SELECT user_id, min(event_time) AS start FROM events GROUP BY user_id) "
        "SELECT count(DISTINCT e.user_id) FROM events e JOIN s USING (user_id) "
        "WHERE CAST(date_trunc('week', s.start) AS DATE) = ? "
        "AND e.event_time >= s.start + INTERVAL 7 DAY AND e.event_time < s.start + INTERVAL 14 DAY",
        [cohort],
    )
    assert len(users) == returned


def test_data_page_lists_tables(app: AppTest, tiny_store: Path) -> None:
    open_page(app, "pages/data/data.py")
    tables = table_with(app, "table", "rows")
    events = count(tiny_store, "SELECT count(*) FROM events")
    rows = dict(zip(tables["table"], tables["rows"], strict=True))
    assert rows["events"] == events
    assert rows["users"] == 60
    preview = table_with(app, "user_id", "event_time", "event_name")
    assert "user_key" not in preview.columns, "the internal key is no part of the user's data"


def test_bad_upload_shows_an_error_naming_the_file(app: AppTest, tiny_store: Path) -> None:
    before = count(tiny_store, "SELECT count(*) FROM events")
    history_before = count(tiny_store, "SELECT count(*) FROM load_history")
    open_page(app, "pages/data/data.py")
    bad = b"user_id,event_time,event_name\nu1,2025-09-01 10:00:00,view\nu2,not a time,view\n"
    app.file_uploader(key="data_upload").set_value(("orders_bad.csv", bad, "text/csv")).run()
    assert not app.exception, app.exception
    app.selectbox(key="data_table").select("events").run()
    app.button(key="data_load").click().run()
    assert not app.exception, app.exception
    errors = " ".join(error.value for error in app.error)
    assert "orders_bad.csv" in errors
    assert "Skip bad rows" in errors and "--skip-bad-rows" not in errors, (
        "the app's own choice, not the CLI flag"
    )
    assert count(tiny_store, "SELECT count(*) FROM events") == before
    assert count(tiny_store, "SELECT count(*) FROM load_history") == history_before
