"""The What-if page, run headless with AppTest over the small simulated store (800 users: a
recommendations log of two policies, the targeted ``rec_policy`` experiment with propensities and
the simulator's ground truth). Expected numbers come from direct DuckDB queries on the store file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from app_helpers import APP, TIMEOUT, count, metric_value, open_page, table_with
from streamlit.testing.v1 import AppTest

PAGE = "pages/whatif/whatif.py"
TRUTH = "simulator ground truth"
# A fast click-rate run: one estimator, few resamples.
FAST = {"estimators": "ipw", "resamples": "20"}


@pytest.fixture
def whatif_app(small_store_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("TENURE_DB", str(small_store_path))
    return AppTest.from_file(APP, default_timeout=TIMEOUT)


def open_with_url(at: AppTest, params: dict[str, str]) -> AppTest:
    """Open the page first with these URL parameters, as a shared link does."""
    at.query_params.update(params)
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def truth(path: Path, policy: str, column: str) -> float:
    return count(path, f"SELECT {column} FROM truth.policy_values WHERE policy = ?", [policy])


def long_term_table(at: AppTest, outcome_truth: float) -> pd.DataFrame:
    for frame in at.dataframe:
        table = frame.value
        if {"policy", "estimator", TRUTH} <= set(table.columns) and (table[TRUTH] == outcome_truth).any():
            return table
    raise AssertionError("no long-term table with that truth")


def test_long_term_estimates_sit_next_to_the_ground_truth(
    whatif_app: AppTest, small_store_path: Path
) -> None:
    at = open_page(whatif_app, PAGE)
    assert [title.value for title in at.title] == ["What-if"]
    assert any("simulated" in box.value for box in at.info)
    assert at.selectbox(key="wi_experiment").value == "rec_policy"
    variants = ["personalised", "popularity"]
    retention = [truth(small_store_path, v, "retention_30d") for v in variants]
    table = long_term_table(at, retention[0])
    for variant, value in zip(variants, retention, strict=True):
        assert table.loc[table["policy"] == f"everyone {variant}", TRUTH].tolist() == [value] * 3
    logged = table[table["policy"] == "logged"]
    assert len(logged) == 1 and pd.isna(logged[TRUTH].item())
    revenue = long_term_table(at, truth(small_store_path, "popularity", "revenue_90d_per_user"))
    assert set(revenue["estimator"]) == {"aipw", "ipw", "hajek", "mean"}
    assert metric_value(at, "Share without support") == "0.0%"
    assert len(at.get("plotly_chart")) >= 4
    assert at.query_params.get("experiment") == "rec_policy"
    assert at.query_params.get("retention_day") == "30"


def test_click_rate_runs_on_the_button(whatif_app: AppTest, small_store_path: Path) -> None:
    at = open_with_url(
        whatif_app, {**FAST, "log": "popularity", "target": "policy", "target_policy": "popularity"}
    )
    assert at.multiselect(key="wi_estimators").value == ["ipw"]
    assert not any(metric.label == "Rows evaluated" for metric in at.metric)
    at.button(key="wi_click_run").click().run()
    assert not at.exception, at.exception
    rows = count(small_store_path, "SELECT count(*) FROM recommendations WHERE policy = 'popularity'")
    rate = count(small_store_path, "SELECT avg(reward) FROM recommendations WHERE policy = 'popularity'")
    assert metric_value(at, "Rows evaluated") == f"{rows:,}"
    assert metric_value(at, "Logged click rate") == f"{rate:.2%}"
    table = table_with(at, "policy", "estimator", "value", "ci_low", "ci_high", TRUTH)
    assert table["estimator"].tolist() == ["ipw"]
    assert table[TRUTH].item() == pytest.approx(truth(small_store_path, "popularity", "click_rate"))
    assert table["ci_low"].item() <= table["value"].item() <= table["ci_high"].item()
    assert at.query_params.get("target_policy") == "popularity"


def test_rule_and_scenario_assumptions_come_from_the_url(whatif_app: AppTest, small_store_path: Path) -> None:
    at = open_with_url(
        whatif_app,
        {
            "policy": "rule",
            "rule": "platform,ios,personalised;*,*,popularity",
            "effect": "assumption",
            "assume_ret": "10",
            "assume_rev": "-5",
            "reach": "50",
        },
    )
    assert at.radio(key="wi_mode").value == "rule"
    assert any("rule" in table.value["policy"].tolist() for table in at.dataframe if "policy" in table.value)
    inputs = table_with(at, "input", "value", "source", "note").set_index("input")
    base = count(
        small_store_path,
        "SELECT count(DISTINCT user_id) FROM events "
        "WHERE event_time > (SELECT max(event_time) FROM events) - INTERVAL 30 DAY",
    )
    assert inputs.loc["users in the current base", "value"] == base
    assert inputs.loc["relative effect on retention", "source"] == "assumption"
    assert inputs.loc["share of the base reached", "value"] == 0.5
    projection = table_with(at, "figure", "strategy", "value", "source")
    retained = projection[projection["figure"].str.startswith("users retained")].set_index("strategy")
    assert retained.loc["current", "source"] == "estimated"
    assert retained.loc["chosen", "source"] == "assumption"
    assert retained.loc["chosen", "value"] == pytest.approx(retained.loc["current", "value"] * 1.05)
    assert at.query_params.get("rule") == "platform,ios,personalised;*,*,popularity"
    assert at.query_params.get("reach") == "50"


def test_store_without_log_or_experiments_says_what_to_load(app: AppTest) -> None:
    at = open_page(app, PAGE)
    texts = [box.value for box in at.info]
    assert any("no recommendations log" in text for text in texts)
    assert any("propensity" in text for text in texts)
    assert not any("simulated" in text for text in texts)
