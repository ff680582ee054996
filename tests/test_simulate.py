"""The simulator: determinism, the shape of the data, experiments, policies and ground truth.

Numeric checks compare the store with plain pandas computations on its tables, never with
numbers copied from the simulator's own output.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from core.errors import TenureError
from core.simulate import SimulationConfig, simulate_store

TABLES = (
    "events",
    "users",
    "items",
    "assignments",
    "recommendations",
    "truth.user_outcomes",
    "truth.experiment_effects",
    "truth.policy_values",
    "truth.parameters",
)


def _build(directory: Path, name: str, config: SimulationConfig) -> Path:
    path = directory / f"{name}.duckdb"
    simulate_store(path, config)
    return path


def _tables(path: Path) -> dict[str, pd.DataFrame]:
    with duckdb.connect(str(path), read_only=True) as connection:
        return {table: connection.execute(f"SELECT * FROM {table}").df() for table in TABLES}


def _read(path: Path, sql: str) -> pd.DataFrame:
    with duckdb.connect(str(path), read_only=True) as connection:
        return connection.execute(sql).df()


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A moderate store (5,000 users) on which the shape of the data is checked."""
    return _build(tmp_path_factory.mktemp("simulate"), "moderate", SimulationConfig(users=5_000, seed=11))


@pytest.fixture(scope="module")
def events(store_path: Path) -> pd.DataFrame:
    return _read(store_path, "SELECT user_id, event_time, event_name, revenue, item_id FROM events")


def test_same_config_gives_identical_tables_and_another_seed_does_not(tmp_path: Path) -> None:
    config = SimulationConfig(users=1_500, seed=5)
    first = _tables(_build(tmp_path, "first", config))
    second = _tables(_build(tmp_path, "second", config))
    for table in TABLES:
        pd.testing.assert_frame_equal(first[table], second[table], obj=table)
    other = _tables(_build(tmp_path, "other", SimulationConfig(users=1_500, seed=6)))
    assert not first["events"].equals(other["events"])
    assert not first["users"].equals(other["users"])


def test_data_does_not_depend_on_chunk_size(tmp_path: Path) -> None:
    whole = _tables(_build(tmp_path, "whole", SimulationConfig(users=1_200, seed=2)))
    chunked = _tables(_build(tmp_path, "chunked", SimulationConfig(users=1_200, seed=2, chunk_users=500)))
    for table in ("events", "users", "assignments", "recommendations", "truth.user_outcomes"):
        pd.testing.assert_frame_equal(_sorted(whole[table]), _sorted(chunked[table]), obj=table)


def test_bad_parameters_are_reported(tmp_path: Path) -> None:
    with pytest.raises(TenureError, match="users"):
        simulate_store(tmp_path / "empty.duckdb", SimulationConfig(users=0))


def test_canonical_tables_meta_and_load_history(store_path: Path, events: pd.DataFrame) -> None:
    users = _read(store_path, "SELECT * FROM users")
    assert list(users.columns) == ["user_id", "signup_time", "country", "channel", "platform", "plan"]
    assert len(users) == 5_000 and users.user_id.is_unique
    first_event = events.groupby("user_id").event_time.min()
    pd.testing.assert_series_equal(
        users.set_index("user_id").signup_time.sort_index(),
        first_event.sort_index(),
        check_names=False,
    )
    assert users.plan.value_counts().idxmax() == "free"
    assert set(events.event_name) == {
        "app_open",
        "view",
        "click",
        "add_to_cart",
        "purchase",
        "recommendation_click",
    }
    purchases = events[events.event_name == "purchase"]
    assert (purchases.revenue > 0).all() and (events[events.event_name != "purchase"].revenue == 0).all()
    assert purchases.item_id.notna().all()
    items = _read(store_path, "SELECT * FROM items")
    assert 300 <= len(items) <= 1000 and (items.price > 0).all() and items.title.str.contains(" ").all()
    start = pd.Timestamp("2025-07-01")
    assert events.event_time.min() >= start and events.event_time.max() < start + pd.Timedelta(days=365)
    meta = dict(_read(store_path, "SELECT key, value FROM store_meta").itertuples(index=False))
    assert meta["dataset"] == "simulated" and "simulated" in meta["source"].lower()
    history = _read(store_path, "SELECT * FROM load_history")
    assert len(history) == 1 and history.rows_accepted[0] == len(events)
    assert history.source[0] == "simulator users=5000 seed=11" and len(history.content_hash[0]) == 64


def _retention(events: pd.DataFrame, day: int) -> float:
    """Day-N retention from first event, over users whose day N has elapsed by the data's end."""
    start = events.groupby("user_id").event_time.min()
    end = events.event_time.max()
    eligible = start[start + pd.Timedelta(days=day + 1) <= end]
    offset = events.event_time - events.user_id.map(start)
    window = (offset >= pd.Timedelta(days=day)) & (offset < pd.Timedelta(days=day + 1))
    retained = set(events.user_id[window])
    return float(np.mean([user in retained for user in eligible.index]))


def test_retention_has_the_target_shape(events: pd.DataFrame) -> None:
    assert 0.35 <= _retention(events, 1) <= 0.45
    assert 0.10 <= _retention(events, 30) <= 0.20
    assert _retention(events, 120) > 0.03


def test_spend_is_heavy_tailed(events: pd.DataFrame) -> None:
    revenue = events.groupby("user_id").revenue.sum().sort_values(ascending=False)
    assert 0.05 <= (revenue > 0).mean() <= 0.20
    assert revenue.head(len(revenue) // 100).sum() / revenue.sum() > 0.20


def test_weekends_are_busier(events: pd.DataFrame) -> None:
    daily = events.groupby(events.event_time.dt.floor("D")).size()
    daily = daily[daily.index >= pd.Timestamp("2025-10-01")]
    weekend = daily.index.day_of_week >= 5
    assert daily[weekend].mean() > 1.15 * daily[~weekend].mean()


def test_experiments_are_logged_and_balanced(store_path: Path) -> None:
    assignments = _read(store_path, "SELECT * FROM assignments")
    signups = _read(store_path, "SELECT user_id, signup_time FROM users").set_index("user_id").signup_time
    for experiment in ("onboarding_checklist", "checkout_button_color"):
        rows = assignments[assignments.experiment == experiment]
        assert set(rows.variant) == {"control", "treatment"} and rows.user_id.is_unique
        assert (rows.propensity == 0.5).all()
        share = (rows.variant == "treatment").mean()
        assert abs(share - 0.5) < 4 * np.sqrt(0.25 / len(rows))
    onboarding = assignments[assignments.experiment == "onboarding_checklist"]
    arrival = onboarding.user_id.map(signups)
    assert (onboarding.assigned_time == arrival).all()
    assert arrival.min() >= pd.Timestamp("2025-09-29") and arrival.max() < pd.Timestamp("2025-11-28")
    checkout = assignments[assignments.experiment == "checkout_button_color"]
    assert checkout.assigned_time.min() >= pd.Timestamp("2026-01-17")
    active = _read(
        store_path,
        "SELECT count(*) AS n FROM assignments a JOIN events e ON e.user_id = a.user_id "
        "AND e.event_time = a.assigned_time WHERE a.experiment = 'checkout_button_color'",
    )
    assert active.n[0] >= len(checkout)


def test_experiment_truth(store_path: Path) -> None:
    effects = _read(store_path, "SELECT * FROM truth.experiment_effects").set_index(["experiment", "metric"])
    onboarding = effects.loc["onboarding_checklist"]
    assert set(onboarding.index) == {"conversion_14d", "retention_7d", "retention_30d", "revenue_30d"}
    assert (onboarding.treatment_value > onboarding.control_value).all()
    np.testing.assert_allclose(onboarding.effect, onboarding.treatment_value - onboarding.control_value)
    assert np.abs(effects.loc["checkout_button_color"].effect).max() < 1e-12


def test_policy_propensities_match_assignment_frequencies(store_path: Path) -> None:
    frame = _read(
        store_path,
        "SELECT u.platform, a.variant, a.propensity FROM assignments a JOIN users u USING (user_id) "
        "WHERE a.experiment = 'rec_policy'",
    )
    assert len(frame) == 5_000
    for (platform, variant), rows in frame.groupby(["platform", "variant"]):
        assert rows.propensity.nunique() == 1, (platform, variant)
        probability = rows.propensity.iloc[0]
        count = (frame.platform == platform).sum()
        observed = len(rows) / count
        assert abs(observed - probability) < 4 * np.sqrt(probability * (1 - probability) / count)
    personalised = frame[frame.variant == "personalised"].groupby("platform").propensity.first()
    assert personalised["ios"] > personalised["android"] > personalised["web"]


def test_recommendation_propensities_are_the_logging_distribution(store_path: Path) -> None:
    shown = _read(
        store_path,
        "SELECT request_id, user_id, policy, item_id, position, propensity, reward FROM recommendations",
    )
    assert shown.propensity.between(0, 1, inclusive="right").all()
    assert set(shown.position) == {1, 2, 3} and set(shown.reward) <= {0.0, 1.0}
    assert (shown.groupby("request_id").size() == 3).all()
    # Each user meets one fixed distribution per policy: an item's propensity is constant, and
    # how often it is shown matches it (popularity: one distribution for everyone).
    assert (shown.groupby(["user_id", "item_id"]).propensity.nunique() == 1).all()
    popularity = shown[shown.policy == "popularity"]
    assert (popularity.groupby("item_id").propensity.nunique() == 1).all()
    heavy_users = shown[shown.policy == "personalised"].user_id.value_counts().index[:3]
    samples = [popularity] + [shown[shown.user_id == user] for user in heavy_users]
    for sample in samples:
        propensity = sample.groupby("item_id").propensity.first()
        assert propensity.sum() <= 1.0 + 1e-9
        frequency = sample.item_id.value_counts(normalize=True)
        top = frequency.index[:10]
        tolerance = 4 * np.sqrt(propensity[top] * (1 - propensity[top]) / len(sample)) + 1e-3
        assert (np.abs(frequency[top] - propensity[top]) < tolerance).all()


def test_recommendation_clicks_are_events(store_path: Path, events: pd.DataFrame) -> None:
    clicks = _read(store_path, "SELECT count(*) AS n FROM recommendations WHERE reward = 1").n[0]
    assert clicks == (events.event_name == "recommendation_click").sum() > 0


def test_click_winner_is_not_the_retention_winner(store_path: Path) -> None:
    values = _read(store_path, "SELECT * FROM truth.policy_values").set_index("policy")
    assert values.loc["popularity", "click_rate"] > values.loc["personalised", "click_rate"]
    assert values.loc["personalised", "retention_30d"] > values.loc["popularity", "retention_30d"]
    assert (
        values.loc["personalised", "revenue_90d_per_user"] > values.loc["popularity", "revenue_90d_per_user"]
    )


def test_user_outcomes_agree_with_what_happened(store_path: Path, events: pd.DataFrame) -> None:
    outcomes = _read(store_path, "SELECT * FROM truth.user_outcomes")
    assert outcomes.churn_prob.between(0, 1).all() and (outcomes.expected_revenue >= 0).all()
    assert set(outcomes.horizon_days) == {90}
    start = events.groupby("user_id").event_time.min()
    for as_of, rows in outcomes.groupby("as_of"):
        assert set(rows.user_id) == set(start[start < as_of].index)
        window = events[(events.event_time >= as_of) & (events.event_time < as_of + pd.Timedelta(days=90))]
        churned = ~rows.user_id.isin(set(window.user_id))
        assert abs(churned.mean() - rows.churn_prob.mean()) < 0.03
        spent = window.groupby("user_id").revenue.sum().reindex(rows.user_id, fill_value=0.0)
        assert spent.sum() == pytest.approx(rows.expected_revenue.sum(), rel=0.35)
    weeks = _read(
        store_path, "SELECT DISTINCT json_array_length(active_prob_by_week) AS n FROM truth.user_outcomes"
    )
    assert weeks.n.tolist() == [13]


def test_truth_lives_in_its_own_schema(store_path: Path) -> None:
    tables = _read(store_path, "SELECT table_schema, table_name FROM information_schema.tables")
    truth = set(tables.table_name[tables.table_schema == "truth"])
    main = set(tables.table_name[tables.table_schema == "main"])
    assert truth == {"user_outcomes", "experiment_effects", "policy_values", "parameters"}
    assert not truth & main
    parameters = dict(_read(store_path, "SELECT key, value FROM truth.parameters").itertuples(index=False))
    assert parameters["users"] == "5000" and parameters["seed"] == "11"


def test_small_store_fixture(small_store_path: Path) -> None:
    counts = _read(
        small_store_path, "SELECT (SELECT count(*) FROM users) AS users, (SELECT count(*) FROM events) AS n"
    )
    assert counts.users[0] == 800 and counts.n[0] > 10_000
