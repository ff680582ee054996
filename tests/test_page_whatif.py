"""The What-if page, run headless with AppTest over the small simulated store (800 users: a
recommendations log of two policies, the targeted ``rec_policy`` experiment with propensities and
the simulator's ground truth). Expected numbers come from direct DuckDB queries on the store file,
and, for rules on segments, from ``evaluate_user_policy`` called directly with the same rule."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import test_whatif_segments
from app_helpers import APP, TIMEOUT, count, metric_value, open_page, open_tab, table_with
from model_helpers import copy_store
from streamlit.testing.v1 import AppTest

from core.models import registry
from core.store import Store
from core.whatif.rules import parse_rule
from core.whatif.segments import CHURN_RISK_DECILE, LIFECYCLE_STAGE, rule_attributes, stages_at_assignment
from core.whatif.surrogate import surrogate_backtest, surrogate_estimate
from core.whatif.user_policies import UserPolicySpec, evaluate_user_policy
from core.whatif.users import parse_outcome

PAGE = "pages/whatif/whatif.py"
TRUTH = "simulator ground truth"
# The rule-segment tests' store (experiment ``risk``) and tiny GBM run, as fixtures of this module.
risk_store = test_whatif_segments.risk_store
risk_model = test_whatif_segments.risk_model
# A fast click-rate run: one estimator, few resamples.
FAST = {"estimators": "ipw", "resamples": "20"}


@pytest.fixture(scope="module")
def page_store_path(small_store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the shared small store: the app keeps the store it opens read-write for the rest
    of this process, and DuckDB then refuses other tests' read-only opens of the same file."""
    return copy_store(small_store_path, tmp_path_factory.mktemp("whatif_page") / "store.duckdb")


@pytest.fixture
def whatif_app(page_store_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("TENURE_DB", str(page_store_path))
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


def test_long_term_estimates_sit_next_to_the_ground_truth(whatif_app: AppTest, page_store_path: Path) -> None:
    at = open_page(whatif_app, PAGE)
    assert [title.value for title in at.title] == ["What-if"]
    assert any("simulated" in box.value for box in at.info)
    assert at.selectbox(key="wi_experiment").value == "rec_policy"
    # The Click rate tab opens first: the long-term controls are drawn, nothing is estimated.
    assert not any("estimator" in frame.value.columns for frame in at.dataframe)
    assert at.query_params.get("tab") == "click-rate"
    at = open_tab(at, "wi_tab", "Long-term outcomes")
    assert at.query_params.get("tab") == "long-term"
    variants = ["personalised", "popularity"]
    retention = [truth(page_store_path, v, "retention_30d") for v in variants]
    table = long_term_table(at, retention[0])
    for variant, value in zip(variants, retention, strict=True):
        assert table.loc[table["policy"] == f"everyone {variant}", TRUTH].tolist() == [value] * 3
    logged = table[table["policy"] == "logged"]
    assert len(logged) == 1 and pd.isna(logged[TRUTH].item())
    revenue = long_term_table(at, truth(page_store_path, "popularity", "revenue_90d_per_user"))
    assert set(revenue["estimator"]) == {"aipw", "ipw", "hajek", "mean"}
    assert metric_value(at, "Share without support") == "0.0%"
    assert len(at.get("plotly_chart")) == 3, (
        "both outcomes and the survival curve; the closed Scenario tab waits"
    )
    assert at.query_params.get("experiment") == "rec_policy"
    assert at.query_params.get("retention_day") == "30"


def test_click_rate_runs_on_the_button(whatif_app: AppTest, page_store_path: Path) -> None:
    at = open_with_url(
        whatif_app, {**FAST, "log": "popularity", "target": "policy", "target_policy": "popularity"}
    )
    assert at.multiselect(key="wi_estimators").value == ["ipw"]
    assert not any(metric.label == "Rows evaluated" for metric in at.metric)
    at.button(key="wi_click_run").click().run()
    assert not at.exception, at.exception
    rows = count(page_store_path, "SELECT count(*) FROM recommendations WHERE policy = 'popularity'")
    rate = count(page_store_path, "SELECT avg(reward) FROM recommendations WHERE policy = 'popularity'")
    assert metric_value(at, "Rows evaluated") == f"{rows:,}"
    assert metric_value(at, "Logged click rate") == f"{rate:.2%}"
    table = table_with(at, "policy", "estimator", "value", "ci_low", "ci_high", TRUTH)
    assert table["estimator"].tolist() == ["ipw"]
    assert table[TRUTH].item() == pytest.approx(truth(page_store_path, "popularity", "click_rate"))
    assert table["ci_low"].item() <= table["value"].item() <= table["ci_high"].item()
    assert at.query_params.get("target_policy") == "popularity"


def test_click_rate_of_a_variant_policy_shows_the_user_level_estimate(
    whatif_app: AppTest, page_store_path: Path
) -> None:
    spec = UserPolicySpec("rec_policy", parse_outcome("click_rate:all"), variant="personalised")
    with Store(page_store_path) as store:  # read-write, as the app opens it in this process
        expected = evaluate_user_policy(store, spec)
    at = open_with_url(
        whatif_app, {**FAST, "log": "popularity", "target": "policy", "target_policy": "personalised"}
    )
    at.button(key="wi_click_run").click().run()
    assert not at.exception, at.exception
    aipw = expected.estimate("aipw")
    assert metric_value(at, "User-level click rate") == f"{aipw.value:.2%}"
    assert metric_value(at, "User-level 95% interval") == f"{aipw.ci_low:.2%} to {aipw.ci_high:.2%}"
    user_level = "everyone personalised (user-level)"
    tables = [frame.value for frame in at.dataframe if "policy" in frame.value.columns]
    (table,) = [frame for frame in tables if (frame["policy"] == user_level).all()]
    shown = table.set_index("estimator")
    for estimate in expected.estimates:
        assert shown.loc[estimate.estimator, "value"] == pytest.approx(estimate.value)
        assert shown.loc[estimate.estimator, "ci_low"] == pytest.approx(estimate.ci_low)
    assert table[TRUTH].unique().tolist() == [
        pytest.approx(truth(page_store_path, "personalised", "click_rate"))
    ]
    assert any("context-dependent" in caption.value for caption in at.caption)


def test_early_read_shows_the_surrogate_estimate_beside_its_backtest(
    whatif_app: AppTest, page_store_path: Path
) -> None:
    with Store(page_store_path) as store:  # read-write, as the app opens it in this process
        expected = surrogate_estimate(store, "rec_policy", "retention:90", 7)
        expected_backtest = surrogate_backtest(store, "rec_policy", "retention:90", 7)
    at = open_with_url(
        whatif_app,
        {
            "early_experiment": "rec_policy",
            "early_outcome": "retention",
            "early_days": "90",
            "early_window": "7",
        },
    )
    assert not table_or_none(at, "older_actual")
    at.button(key="wi_early_run").click().run()
    assert not at.exception, at.exception
    shown = table_with(at, "variant", "estimate", "ci_low", "ci_high", "older_actual")
    pd.testing.assert_frame_equal(shown.reset_index(drop=True), expected.estimates.reset_index(drop=True))
    backtest = table_with(at, "quantity", "actual", "inside")
    pd.testing.assert_frame_equal(backtest.reset_index(drop=True), expected_backtest.reset_index(drop=True))
    assert at.query_params.get("early_window") == "7"


def test_early_read_defaults_to_the_experiment_that_assigned_last(
    whatif_app: AppTest, page_store_path: Path
) -> None:
    """Stopped tests have every outcome observed; the latest-assigning one can have recent users."""
    latest = count(
        page_store_path,
        "SELECT experiment FROM assignments WHERE propensity IS NOT NULL "
        "GROUP BY experiment ORDER BY max(assigned_time) DESC LIMIT 1",
    )
    at = open_with_url(whatif_app, {"tab": "early-read"})
    choice = at.selectbox(key="wi_early_experiment")
    assert choice.options[0] != latest, "the store must list another experiment first"
    assert choice.value == latest
    at.button(key="wi_early_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [error.value for error in at.error]


def table_or_none(at: AppTest, column: str) -> pd.DataFrame | None:
    return next((frame.value for frame in at.dataframe if column in frame.value.columns), None)


def test_rule_and_scenario_assumptions_come_from_the_url(whatif_app: AppTest, page_store_path: Path) -> None:
    at = open_with_url(
        whatif_app,
        {
            "policy": "rule",
            "rule": "platform,ios,personalised;*,*,popularity",
            "effect": "assumption",
            "assume_ret": "10",
            "assume_rev": "-5",
            "reach": "50",
            "tab": "scenario",
        },
    )
    assert at.session_state["wi_tab"] == "Scenario"
    assert at.radio(key="wi_mode").value == "rule"
    assert any("rule" in table.value["policy"].tolist() for table in at.dataframe if "policy" in table.value)
    inputs = table_with(at, "input", "value", "source", "note").set_index("input")
    base = count(
        page_store_path,
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
    # Another tab: the scenario's controls keep their values, and its projection is not measured.
    at = open_tab(at, "wi_tab", "Click rate")
    assert at.slider(key="wi_reach").value == 50
    assert not any("figure" in frame.value.columns for frame in at.dataframe)
    assert at.query_params.get("reach") == "50" and at.query_params.get("tab") == "click-rate"


def test_a_bad_tab_in_the_url_warns_and_opens_the_first(whatif_app: AppTest) -> None:
    at = open_with_url(whatif_app, {"tab": "nonsense"})
    assert any("tab=nonsense" in box.value for box in at.warning)
    assert at.session_state["wi_tab"] == "Click rate"


def test_store_without_log_or_experiments_says_what_to_load(app: AppTest) -> None:
    at = open_page(app, PAGE)
    texts = [box.value for box in at.info]
    assert any("no recommendations log" in text for text in texts)
    assert any("propensity" in text for text in texts)
    assert not any("simulated" in text for text in texts)


# --- Rules on segments: experiment ``risk`` (150 users assigned on three days, propensities 0.3/0.6)


@pytest.fixture(scope="module")
def segment_store(risk_store: Path, risk_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``risk`` store with the tiny GBM run registered, so the page offers it."""
    path = copy_store(risk_store, tmp_path_factory.mktemp("segment_page") / "segments.duckdb")
    with Store(path) as store:
        registry.register(store, risk_model.parent)
    return path


def open_segment_rule(
    segment_store: Path, monkeypatch: pytest.MonkeyPatch, params: dict[str, str]
) -> AppTest:
    monkeypatch.setenv("TENURE_DB", str(segment_store))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    return open_with_url(
        at, {"experiment": "risk", "policy": "rule", "retention_day": "30", "tab": "long-term", **params}
    )


def rule_estimate(at: AppTest, target: str) -> float:
    """The rule's aipw estimate of day-30 retention, as the page shows it."""
    for frame in at.dataframe:
        table = frame.value
        if {"policy", "estimator", TRUTH} <= set(table.columns):
            rows = table[(table["policy"] == target) & (table["estimator"] == "aipw")]
            return float(rows["value"].iloc[0])
    raise AssertionError("no long-term table")


def direct_estimate(path: Path, rule_text: str, model_dir: str | None = None) -> float:
    """``evaluate_user_policy`` of the rule, computed before the page runs. The store is opened
    read-write, as the app (which keeps it open in this process) does: DuckDB refuses a second
    configuration of one file."""
    rule = parse_rule("attribute,value,variant\n" + rule_text.replace(";", "\n"))
    spec = UserPolicySpec(
        "risk", parse_outcome("retention:30"), rule=rule, model_dir=model_dir, survival_resamples=0
    )
    with Store(path) as store:
        return evaluate_user_policy(store, spec).estimate("aipw").value


def test_lifecycle_stage_rule_runs_as_evaluate_user_policy(
    segment_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Store(segment_store) as store:
        stages = stages_at_assignment(store, "risk")[LIFECYCLE_STAGE].value_counts()
    stage = stages.index[0]
    assert 0 < stages.iloc[0] < stages.sum()
    text = f"{LIFECYCLE_STAGE},{stage},b;*,*,a"
    expected = direct_estimate(segment_store, text)
    at = open_segment_rule(segment_store, monkeypatch, {"rule": text})
    assert at.selectbox(key="wi_risk_model").value == "none"
    offered = table_with(at, "attribute", "value_count", "values").set_index("attribute")
    assert offered.loc[LIFECYCLE_STAGE, "value_count"] == len(stages)
    assert stage in offered.loc[LIFECYCLE_STAGE, "values"].split(", ")
    assert {"country", "platform"} <= set(offered.index) and CHURN_RISK_DECILE not in offered.index
    assert not at.error, [e.value for e in at.error]
    assert rule_estimate(at, "rule") == pytest.approx(expected, rel=1e-12)
    survival = table_with(at, "policy", "day", "survival", "ci_low", "ci_high")
    assert sorted(survival["day"].unique()) == [7.0, 30.0, 90.0]
    assert (survival["ci_low"] <= survival["survival"]).all() and (
        survival["survival"] <= survival["ci_high"]
    ).all()
    assert at.query_params.get("rule") == text


def test_churn_risk_model_offers_deciles_to_the_rule(
    segment_store: Path, risk_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Store(segment_store) as store:
        (model,) = registry.saved_model_paths(store)
        (model_id,) = registry.saved_models(store)["model_id"]
        deciles = rule_attributes(store, "risk", model)[CHURN_RISK_DECILE]
    assert Path(model) == risk_model.resolve() and len(deciles) > 1
    text = f"{CHURN_RISK_DECILE},{deciles[-1]},b;*,*,a"
    expected = direct_estimate(segment_store, text, model)
    at = open_segment_rule(segment_store, monkeypatch, {"risk_model": model, "rule": text})
    chooser = at.selectbox(key="wi_risk_model")  # named by its registry id, as on the Models page
    assert chooser.options == ["none", model_id] and chooser.value == model
    offered = table_with(at, "attribute", "value_count", "values").set_index("attribute")
    assert offered.loc[CHURN_RISK_DECILE, "values"] == ", ".join(deciles[:12])
    assert not at.error, [e.value for e in at.error]
    assert rule_estimate(at, "rule") == pytest.approx(expected, rel=1e-12)
    assert at.query_params.get("risk_model") == model


def test_scenario_baseline_names_the_model_by_its_registry_id(
    segment_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Store(segment_store) as store:
        (model,) = registry.saved_model_paths(store)
        (model_id,) = registry.saved_models(store)["model_id"]
    at = open_segment_rule(segment_store, monkeypatch, {"tab": "scenario", "horizon": "90"})
    assert not at.exception, at.exception
    baseline = at.selectbox(key="wi_baseline")
    assert baseline.options == ["Observed one horizon earlier", f"Model scores: {model_id}"]
    assert baseline.value == "observed"
    baseline.set_value(model).run()
    assert at.query_params.get("baseline") == model


def test_risk_model_that_scores_nobody_says_why(
    segment_store: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Users assigned at their first event have no history at their assignment day: the page says
    so instead of offering an empty decile list without a word."""
    path = copy_store(segment_store, tmp_path / "arrivals.duckdb")
    with Store(path) as store:
        (model,) = registry.saved_model_paths(store)
        with store.transaction() as cursor:
            cursor.execute(
                "INSERT INTO assignments (user_id, experiment, variant, assigned_time, propensity) "
                "SELECT e.user_id, 'arrivals', CASE WHEN hash(e.user_id) % 2 = 0 THEN 'a' ELSE 'b' END, "
                "min(e.event_time), 0.5 FROM events e LEFT JOIN users u USING (user_id) GROUP BY e.user_id "
                "HAVING min(e.event_time) >= '2026-01-01' AND min(e.event_time) < '2026-01-08' "
                "AND coalesce(min(u.signup_time) >= date_trunc('day', min(e.event_time)), true)"
            )
        assert store.query_one("SELECT count(*) FROM assignments WHERE experiment = 'arrivals'")[0] > 10
        assert rule_attributes(store, "arrivals", model)[CHURN_RISK_DECILE] == []
    monkeypatch.setenv("TENURE_DB", str(path))
    at = open_with_url(
        AppTest.from_file(APP, default_timeout=TIMEOUT),
        {"experiment": "arrivals", "policy": "rule", "tab": "long-term", "risk_model": model},
    )
    assert not at.exception, at.exception
    notes = [info.value for info in at.info if "scores nobody" in info.value]
    assert len(notes) == 1 and "arrivals" in notes[0]


def test_closed_long_term_tab_does_not_score_churn_risk(
    segment_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shared link with a churn-risk rule that opens on another tab must not pay for the model
    pass over every assigned user: it waits until the Long-term tab opens."""
    import streamlit as st

    from core.whatif import segments

    st.cache_data.clear()
    calls: list[tuple] = []
    original = segments.churn_risk_at_assignment

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(segments, "churn_risk_at_assignment", counted)
    with Store(segment_store) as store:
        (model,) = registry.saved_model_paths(store)
    text = f"{CHURN_RISK_DECILE},10,b;*,*,a"
    at = open_segment_rule(
        segment_store, monkeypatch, {"risk_model": model, "rule": text, "tab": "click-rate"}
    )
    assert calls == []
    assert at.query_params.get("risk_model") == model and at.query_params.get("rule") == text
    at = open_tab(at, "wi_tab", "Long-term outcomes")
    assert len(calls) == 1
    offered = table_with(at, "attribute", "value_count", "values").set_index("attribute")
    assert offered.loc[CHURN_RISK_DECILE, "value_count"] > 1
    assert at.query_params.get("rule") == text
