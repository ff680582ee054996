"""The Funnels page, run headless with AppTest on the tiny store (session_start, view, purchase).

Expected numbers come from direct DuckDB queries on the store file, not from ``core``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from app_helpers import APP, TIMEOUT, count, metric_value, table_with
from model_helpers import copy_store
from streamlit.testing.v1 import AppTest

from core.store import Store

PAGE = "pages/explore/funnels.py"

# A two-step ordered funnel written directly: users with a view at or after one of their
# session_start events and at most 7 days later.
TWO_STEPS = """
SELECT count(DISTINCT s.user_id) FROM events s JOIN events v
  ON v.user_id = s.user_id AND v.event_name = ? AND v.event_time >= s.event_time
 AND v.event_time <= s.event_time + INTERVAL (?) DAY
WHERE s.event_name = ?
"""


def open_funnels(app: AppTest, **params: str) -> AppTest:
    app.run()
    assert not app.exception, app.exception
    for key, value in params.items():
        app.query_params[key] = value
    app.switch_page(PAGE).run()
    assert not app.exception, app.exception
    return app


def test_funnel_counts_match_direct_queries(app: AppTest, tiny_store: Path) -> None:
    open_funnels(app, steps="session_start,view", window="7d", order="ordered")
    assert app.multiselect(key="fun_steps").value == ["session_start", "view"]
    starters = count(
        tiny_store, "SELECT count(DISTINCT user_id) FROM events WHERE event_name = 'session_start'"
    )
    converted = count(tiny_store, TWO_STEPS, ["view", 7, "session_start"])
    assert 0 < converted < starters
    assert metric_value(app, "Entered the funnel") == f"{starters:,}"
    assert metric_value(app, "Completed") == f"{converted:,}"
    table = table_with(app, "step", "event_name", "users", "conversion_from_start")
    assert table["users"].tolist() == [starters, converted]
    assert app.query_params.get("steps") == "session_start,view"


def test_changing_a_control_rerenders(app: AppTest, tiny_store: Path) -> None:
    open_funnels(app, steps="session_start,view", window="7d")
    app.text_input(key="fun_window").set_value("1d").run()
    assert not app.exception, app.exception
    converted = count(tiny_store, TWO_STEPS, ["view", 1, "session_start"])
    assert metric_value(app, "Completed") == f"{converted:,}"
    assert app.query_params.get("window") == "1d"
    app.selectbox(key="fun_by").set_value("country").run()
    assert not app.exception, app.exception
    segments = table_with(app, "group", "step", "users")
    assert sorted(segments["group"].unique()) == ["DE", "FR", "US"]
    assert segments[segments["step"] == 2]["users"].sum() == converted
    app.selectbox(key="fun_drop_step").set_value(2).run()
    assert not app.exception, app.exception
    dropped = table_with(app, "user_id", "level", "first_step_time")
    starters = count(
        tiny_store, "SELECT count(DISTINCT user_id) FROM events WHERE event_name = 'session_start'"
    )
    assert len(dropped) == starters - converted


def test_fewer_than_two_steps_and_lifecycle_tab(app: AppTest, tiny_store: Path) -> None:
    open_funnels(app, steps="view")
    assert any("at least two steps" in info.value for info in app.info)
    users = count(tiny_store, "SELECT count(DISTINCT user_id) FROM events")
    lifecycle = table_with(app, "step", "event_name", "users", "lower_from_start")
    assert lifecycle["event_name"].tolist()[0] == "acquired"
    assert lifecycle["users"].iloc[0] == users
    purchasers = count(tiny_store, "SELECT count(DISTINCT user_id) FROM events WHERE event_name = 'purchase'")
    assert lifecycle["users"].iloc[3] <= purchasers


def test_empty_population_is_explained(app: AppTest) -> None:
    app.query_params["from"] = "2031-01-01"  # global filters are read from the URL at session start
    open_funnels(app, steps="session_start,view")
    assert not app.exception, app.exception
    assert any("No user" in info.value or "No users" in info.value for info in app.info)


def test_lifecycle_funnel_settings_come_from_and_go_to_the_url(app: AppTest, tiny_store: Path) -> None:
    open_funnels(app, life_key="view", life_activation="3")
    assert app.selectbox(key="life_key").value == "view"
    assert app.number_input(key="life_activation").value == 3
    activated = count(
        tiny_store,
        "SELECT count(DISTINCT e.user_id) FROM events e JOIN "
        "(SELECT user_id, min(event_time) AS start FROM events GROUP BY user_id) s USING (user_id) "
        "WHERE e.event_name = 'view' AND e.event_time >= s.start AND e.event_time <= s.start + INTERVAL 3 DAY",
    )
    lifecycle = next(
        frame.value for frame in app.dataframe if "activated" in set(frame.value.get("event_name", []))
    )
    assert lifecycle.set_index("event_name").loc["activated", "users"] == activated
    assert app.query_params.get("life_key") == "view"
    assert app.query_params.get("life_activation") == "3"
    assert "life_loyal" not in app.query_params  # defaults stay out of the link


def test_one_walk_serves_every_view(app: AppTest, monkeypatch) -> None:
    """A cold visit walks the events once for the table, the overall funnel, the step times,
    their histogram, the users who dropped and conversion by week; another drop-off step or
    another breakdown reuses it."""
    from core import funnels

    walks: list[funnels.FunnelSpec] = []
    walk = funnels.walk_funnel

    def counted(store, spec, filters):  # type: ignore[no-untyped-def]
        walks.append(spec)
        return walk(store, spec, filters)

    monkeypatch.setattr(funnels, "walk_funnel", counted)
    # A window no other test asks for, so nothing is cached yet.
    open_funnels(app, steps="session_start,view,purchase", window="13d", order="ordered", by="country")
    assert len(walks) == 1, walks
    assert {"group", "step", "users"} <= set(table_with(app, "group", "step", "users").columns)
    assert not table_with(app, "step", "median_seconds").empty
    assert not table_with(app, "week", "step", "users").empty
    app.selectbox(key="fun_drop_step").set_value(3).run()
    assert not app.exception, app.exception
    assert len(walks) == 1, walks
    app.selectbox(key="fun_by").set_value("plan").run()
    assert not app.exception, app.exception
    assert len(walks) == 1, walks
    plans = table_with(app, "group", "step", "users", "conversion_from_start")
    assert set(plans["group"]) == {"free", "pro"}
    assert plans[plans["step"] == 1]["users"].sum() == metric_count(app, "Entered the funnel")


def metric_count(app: AppTest, label: str) -> int:
    return int(metric_value(app, label).replace(",", ""))


def test_experiment_breakdown_from_the_url(
    small_store_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The funnel compares an experiment's variants, like Survival (docs/METRICS.md, Breakdown)."""
    store_path = copy_store(small_store_path, tmp_path / "store.duckdb")
    monkeypatch.setenv("TENURE_DB", str(store_path))
    app = open_funnels(
        AppTest.from_file(APP, default_timeout=TIMEOUT),
        steps="app_open,view",
        window="1d",
        by="experiment:checkout_button_color",
    )
    assert not app.warning, [warning.value for warning in app.warning]
    assert app.selectbox(key="fun_by").value == "experiment:checkout_button_color"
    segments = table_with(app, "group", "step", "users")
    variants = count(
        store_path,
        "SELECT count(DISTINCT variant) FROM assignments WHERE experiment = 'checkout_button_color'",
    )
    assigned_groups = set(segments["group"]) - {"(none)", "(several)"}
    assert len(assigned_groups) == variants > 1


def test_a_store_with_one_event_name_says_why_there_is_no_funnel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "one_name.duckdb"
    with Store(path) as store, store.transaction() as cursor:
        cursor.execute(
            "INSERT INTO events (user_id, event_time, event_name, revenue) "
            "SELECT 'u' || (i % 7), TIMESTAMP '2025-01-01' + to_days(CAST(i AS INTEGER)), 'purchase', 10 "
            "FROM range(40) t(i)"
        )
    monkeypatch.setenv("TENURE_DB", str(path))
    app = open_funnels(AppTest.from_file(APP, default_timeout=TIMEOUT))
    assert any("one event name ('purchase')" in box.value for box in app.info), [
        box.value for box in app.info
    ]
