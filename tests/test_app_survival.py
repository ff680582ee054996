"""The Survival page, run headless with AppTest over the tiny hand-made store of app_helpers."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pytest
from app_helpers import metric_value, open_page, table_with
from lifelines import KaplanMeierFitter
from streamlit.testing.v1 import AppTest

PAGE = "pages/explore/survival.py"


def direct_durations(path: Path, inactivity_days: float) -> tuple[np.ndarray, np.ndarray]:
    """Durations by the docs/METRICS.md rule, straight from the store file in plain SQL."""
    with duckdb.connect(str(path)) as connection:
        rows = connection.execute(
            """
            WITH spans AS (SELECT user_id, min(event_time) AS first, max(event_time) AS last FROM events GROUP BY user_id),
            bounds AS (SELECT max(event_time) AS data_end FROM events)
            SELECT CASE WHEN last <= data_end - to_microseconds(CAST(? * 86400e6 AS BIGINT))
                        THEN date_diff('microsecond', first, last) ELSE date_diff('microsecond', first, data_end) END / 86400e6,
                   last <= data_end - to_microseconds(CAST(? * 86400e6 AS BIGINT))
            FROM spans, bounds
            """,
            [inactivity_days, inactivity_days],
        ).fetchall()
    return np.array([row[0] for row in rows]), np.array([row[1] for row in rows])


def test_survival_page_renders_with_figure_and_at_risk_table(app: AppTest, tiny_store: Path) -> None:
    open_page(app, PAGE)
    assert [title.value for title in app.title] == ["Survival"]
    assert len(app.get("plotly_chart")) >= 1
    durations, churned = direct_durations(tiny_store, 30)
    assert metric_value(app, "Users") == f"{len(durations):,}"
    assert metric_value(app, "Churned") == f"{int(churned.sum()):,}"
    at_risk = table_with(app, "group", "day 0")
    assert at_risk["day 0"].iloc[0] == len(durations)
    medians = table_with(app, "group", "users", "median")
    fitter = KaplanMeierFitter().fit(durations, churned)
    assert medians["median"].iloc[0] == pytest.approx(fitter.median_survival_time_, rel=1e-9)
    survival_at = table_with(app, "group", "day", "survival", "lower", "upper")
    assert survival_at.set_index("day").loc[30.0, "survival"] == pytest.approx(float(fitter.predict(30.0)))
    assert app.query_params.get("inactivity") == "30"


def test_changing_controls_rerenders(app: AppTest, tiny_store: Path) -> None:
    open_page(app, PAGE)
    app.number_input(key="surv_inactivity").set_value(7.0).run()
    assert not app.exception, app.exception
    _, churned = direct_durations(tiny_store, 7)
    assert metric_value(app, "Churned") == f"{int(churned.sum()):,}"
    app.selectbox(key="surv_by").set_value("country").run()
    assert not app.exception, app.exception
    medians = table_with(app, "group", "users", "median")
    assert sorted(medians["group"]) == ["DE", "FR", "US"]
    assert len(table_with(app, "group_a", "group_b", "statistic", "p_value")) == 3
    app.number_input(key="surv_horizon").set_value(30.0).run()
    assert not app.exception, app.exception
    assert any(metric.label == "RMST difference (days)" for metric in app.metric)
    assert app.query_params.get("by") == "country" and app.query_params.get("inactivity") == "7"


def test_cox_section_and_url_controls(app: AppTest) -> None:
    app.query_params["cox"] = "plan"
    app.query_params["first_week"] = "1"
    app.query_params["by"] = "cohort:month"
    app.switch_page(PAGE).run()
    assert not app.exception, app.exception
    assert app.selectbox(key="surv_by").value == "cohort:month"
    hazards = table_with(app, "covariate", "hazard_ratio", "lower", "upper", "ph_fails")
    assert "plan=pro" in set(hazards["covariate"]) or "plan=free" in set(hazards["covariate"])
    # In this store every active day has exactly one event: active days duplicate events.
    assert "first_week_events" in set(hazards["covariate"])
    assert "first_week_active_days" not in set(hazards["covariate"])
    assert any("first_week_active_days is a linear combination" in warning.value for warning in app.warning)
    assert any(metric.label == "Concordance index" for metric in app.metric)


def test_bad_url_value_warns_and_empty_population(app: AppTest) -> None:
    app.query_params["inactivity"] = "soon"
    app.query_params["from"] = "2099-01-01"
    app.switch_page(PAGE).run()
    assert not app.exception, app.exception
    assert any("inactivity=soon" in warning.value for warning in app.warning)
    assert any("No users match" in info.value for info in app.info)


def test_signup_start_from_the_url(app: AppTest, tiny_store: Path) -> None:
    """Durations then run from users.signup_time (every tiny-store user has one, before their first event)."""
    app.query_params["start"] = "signup"
    app.switch_page(PAGE).run()
    assert not app.exception, app.exception
    assert not app.warning, [warning.value for warning in app.warning]
    assert app.selectbox(key="surv_start").value == "signup"
    with duckdb.connect(str(tiny_store)) as connection:
        rows = connection.execute(
            """
            WITH spans AS (SELECT user_id, max(event_time) AS last FROM events GROUP BY user_id),
            bounds AS (SELECT max(event_time) AS data_end FROM events)
            SELECT date_diff('microsecond', u.signup_time,
                       CASE WHEN s.last <= b.data_end - INTERVAL 30 DAY THEN s.last ELSE b.data_end END) / 86400e6,
                   s.last <= b.data_end - INTERVAL 30 DAY
            FROM spans s JOIN users u USING (user_id), bounds b
            """
        ).fetchall()
    durations = np.array([row[0] for row in rows])
    churned = np.array([row[1] for row in rows])
    fitter = KaplanMeierFitter().fit(durations, churned)
    survival_at = table_with(app, "group", "day", "survival", "lower", "upper")
    assert survival_at.set_index("day").loc[30.0, "survival"] == pytest.approx(float(fitter.predict(30.0)))
    assert app.query_params.get("start") == "signup"


def test_a_terminal_event_that_starts_most_users_is_flagged(app: AppTest, tiny_store: Path) -> None:
    with duckdb.connect(str(tiny_store)) as connection:
        name, at_start, users = connection.execute(
            """
            WITH firsts AS (SELECT user_id, min(event_time) AS first FROM events GROUP BY user_id),
            names AS (
                SELECT e.event_name, count(DISTINCT e.user_id) AS users
                FROM events e JOIN firsts f ON f.user_id = e.user_id AND e.event_time = f.first
                GROUP BY e.event_name
            )
            SELECT event_name, users, (SELECT count(*) FROM firsts) FROM names ORDER BY users DESC, event_name LIMIT 1
            """
        ).fetchone()
    assert at_start * 4 >= users, "the tiny store must start a quarter of its users with one event name"
    app.query_params["terminal"] = name
    app.switch_page(PAGE).run()
    assert not app.exception, app.exception
    flagged = [warning.value for warning in app.warning if "churn at their start" in warning.value]
    assert len(flagged) == 1 and flagged[0].startswith(
        f"{at_start:,} of {users:,} users churn at their start"
    )

    app.selectbox(key="surv_terminal").select("").run()
    assert not any("churn at their start" in warning.value for warning in app.warning)
