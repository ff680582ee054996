"""The Lifecycle and Stickiness pages, run headless with AppTest on the tiny store.

Expected numbers come from direct DuckDB queries on the store file, not from ``core``.
"""

from __future__ import annotations

from pathlib import Path

from app_helpers import count, metric_value, open_page, table_with
from streamlit.testing.v1 import AppTest

LIFECYCLE = "pages/explore/lifecycle.py"
STICKINESS = "pages/explore/stickiness.py"


def test_lifecycle_page_renders_and_counts_every_user_new_once(app: AppTest, tiny_store: Path) -> None:
    open_page(app, LIFECYCLE)
    assert [title.value for title in app.title] == ["Lifecycle"]
    table = table_with(app, "period", "new", "returning", "resurrecting", "dormant")
    assert table["new"].sum() == count(tiny_store, "SELECT count(DISTINCT user_id) FROM events")
    first_week = count(
        tiny_store,
        "SELECT count(*) FROM (SELECT user_id, min(event_time) AS s FROM events GROUP BY user_id) "
        "WHERE date_trunc('week', s) = (SELECT date_trunc('week', min(event_time)) FROM events)",
    )
    assert table["new"].iloc[0] == first_week
    assert bool(table["partial"].iloc[-1])
    stages = table_with(app, "stage", "users", "revenue_share")
    last_day = count(tiny_store, "SELECT CAST(max(event_time) AS DATE) FROM events")
    started = count(
        tiny_store,
        "SELECT count(DISTINCT user_id) FROM events WHERE CAST(event_time AS DATE) <= ?",
        [last_day],
    )
    assert stages["users"].sum() == started
    assert len(app.get("plotly_chart")) >= 4
    assert app.query_params.get("period") == "week"


def test_lifecycle_control_change_rerenders(app: AppTest, tiny_store: Path) -> None:
    open_page(app, LIFECYCLE)
    app.selectbox(key="lc_period").select("month").run()
    assert not app.exception, app.exception
    table = table_with(app, "period", "new", "returning", "resurrecting", "dormant")
    months = count(
        tiny_store,
        "SELECT date_diff('month', date_trunc('month', min(event_time)), date_trunc('month', max(event_time))) + 1 FROM events",
    )
    assert len(table) == months
    assert app.query_params.get("period") == "month"
    app.selectbox(key="lc_drill_period").select(table["period"].iloc[0]).run()
    app.segmented_control(key="lc_drill_status").set_value("new").run()
    assert not app.exception, app.exception
    users = table_with(app, "user_id", "start_time")
    assert len(users) == table["new"].iloc[0]


def test_lifecycle_url_controls(app: AppTest) -> None:
    app.query_params["period"] = "day"
    app.query_params["churned"] = "45"
    app.query_params["stage_at"] = "2025-10-01"
    app.switch_page(LIFECYCLE).run()
    assert not app.exception, app.exception
    assert app.selectbox(key="lc_period").value == "day"
    assert app.number_input(key="lc_churned").value == 45
    assert app.query_params.get("churned") == "45"
    assert app.query_params.get("stage_at") == "2025-10-01"


def test_lifecycle_date_outside_the_data_is_clamped(app: AppTest, tiny_store: Path) -> None:
    app.query_params["stage_at"] = "2031-01-01"
    app.switch_page(LIFECYCLE).run()
    assert not app.exception, app.exception
    last_day = count(tiny_store, "SELECT CAST(max(event_time) AS DATE) FROM events")
    assert app.date_input(key="lc_as_of").value == last_day
    assert any(
        "'As of' 2031-01-01 lies outside the data" in box.value
        and f"{last_day.isoformat()} is used" in box.value
        for box in app.info
    )


def test_lifecycle_date_that_is_not_a_date_warns_in_words(app: AppTest) -> None:
    app.query_params["stage_from"] = "yesterday"
    app.switch_page(LIFECYCLE).run()
    assert not app.exception, app.exception
    assert [warning.value for warning in app.warning] == [
        "URL parameter 'stage_from=yesterday' was ignored: stage_from must be a date written YYYY-MM-DD"
    ]


def test_stickiness_page_renders_and_matches_direct_count(app: AppTest, tiny_store: Path) -> None:
    open_page(app, STICKINESS)
    assert [title.value for title in app.title] == ["Stickiness"]
    histogram = table_with(app, "span_start", "active_units", "users")
    last_week = count(
        tiny_store,
        "SELECT count(DISTINCT user_id) FROM events WHERE CAST(event_time AS DATE) "
        "BETWEEN (SELECT CAST(max(event_time) AS DATE) - 6 FROM events) AND (SELECT CAST(max(event_time) AS DATE) FROM events)",
    )
    assert histogram["users"].sum() == last_week
    assert metric_value(app, "WAU (last day)") == f"{last_week:,}"


def test_stickiness_control_change_rerenders(app: AppTest, tiny_store: Path) -> None:
    open_page(app, STICKINESS)
    app.selectbox(key="st_event").select("purchase").run()
    app.selectbox(key="st_span").select("month").run()
    assert not app.exception, app.exception
    histogram = table_with(app, "span_start", "active_units", "users")
    months = count(
        tiny_store,
        "SELECT count(*) FROM (SELECT DISTINCT user_id, date_trunc('month', event_time) FROM events WHERE event_name = 'purchase')",
    )
    assert histogram["users"].sum() == months
    assert app.query_params.get("span") == "month" and app.query_params.get("event") == "purchase"
