"""The what-if scenario view (core/whatif/scenario.py) and the page's catalog (core/whatif/catalog.py).

The base, the observed baseline and the projection are recomputed here with plain pandas/numpy
from the events written; the relative effects from hand-built results.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.errors import TenureError
from core.store import Store
from core.whatif import catalog, scenario
from core.whatif.policy_value import Estimate
from core.whatif.scenario import ASSUMPTION, ESTIMATED, BaselineSpec, Effect
from core.whatif.user_policies import UserPolicyValue

END = pd.Timestamp("2026-06-30 12:00")


def make_events(seed: int = 4, users: int = 300) -> pd.DataFrame:
    """Users active over 200 days before END, each with their own last day and spend."""
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(users):
        first = rng.uniform(20, 200)
        last = rng.uniform(0, first)
        for offset in np.sort(rng.uniform(last, first, rng.integers(1, 12))):
            revenue = float(rng.gamma(2.0, 5.0)) if rng.random() < 0.3 else 0.0
            rows.append((f"u{index:03d}", END - pd.Timedelta(days=float(offset)), "view", revenue))
    rows.append(("sentinel", END, "view", 0.0))
    rows.append(("sentinel", END - pd.Timedelta(days=220), "view", 0.0))
    return pd.DataFrame(rows, columns=["user_id", "event_time", "event_name", "revenue"])


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    return make_events()


@pytest.fixture(scope="module")
def store(events: pd.DataFrame) -> Store:
    store = Store(":memory:")
    with store.transaction() as cursor:
        cursor.register("frame", events)
        cursor.execute(
            "INSERT INTO events (user_id, event_time, event_name, revenue) "
            "SELECT user_id, event_time, event_name, revenue FROM frame"
        )
    return store


def test_current_base_is_every_user_with_an_event_in_the_last_days(store, events) -> None:
    expected = sorted(events.loc[events["event_time"] > END - pd.Timedelta(days=30), "user_id"].unique())
    assert scenario.current_base(store, 30)["user_id"].tolist() == expected
    assert len(scenario.current_base(store, 5)) < len(expected)


def test_observed_rates_match_pandas(store, events) -> None:
    t0 = END - pd.Timedelta(days=90)
    past = events[(events["event_time"] > t0 - pd.Timedelta(days=30)) & (events["event_time"] <= t0)]
    base = set(past["user_id"])
    later = events[(events["event_time"] > t0) & (events["event_time"] <= END) & events["user_id"].isin(base)]
    users, retained, revenue = scenario.observed_rates(store, BaselineSpec(90, 30))
    assert users == len(base)
    assert retained == pytest.approx(later["user_id"].nunique() / len(base))
    assert revenue == pytest.approx(later["revenue"].sum() / len(base))
    result = scenario.baseline(store, BaselineSpec(90, 30))
    assert result.source == scenario.OBSERVED
    assert len(result.users) == len(scenario.current_base(store, 30))
    # Each value is summed by DuckDB in parallel, in an order that varies: equal to the last bits.
    assert result.users["retained_prob"].to_numpy() == pytest.approx(
        np.full(len(result.users), retained), rel=1e-12
    )
    assert result.users["revenue"].to_numpy() == pytest.approx(np.full(len(result.users), revenue), rel=1e-12)


def test_observed_baseline_needs_enough_history(store) -> None:
    with pytest.raises(TenureError, match="fewer than the horizon"):
        scenario.observed_rates(store, BaselineSpec(200, 30))


def test_model_baseline_uses_scores_and_fills_unscored_users(store, monkeypatch) -> None:
    base = scenario.current_base(store, 30)["user_id"].tolist()
    scored = base[::2]
    churn = np.linspace(0.1, 0.9, len(scored))
    ltv = np.linspace(1.0, 50.0, len(scored))
    seen = {}

    def fake_score(store_arg, directory, as_of, filters=None, progress=None, device="auto", users=None):
        seen.update(directory=directory, as_of=as_of, users=list(users))
        return pd.DataFrame({"user_id": scored, "churn_prob": churn, "ltv_pred": ltv})

    monkeypatch.setattr(scenario, "score_model", fake_score)
    result = scenario.baseline(store, BaselineSpec(90, 30, "models/run/gbm"))
    assert seen["directory"] == "models/run/gbm" and seen["users"] == base
    assert pd.Timestamp(seen["as_of"]) == END
    assert result.filled == len(base) - len(scored)
    frame = result.users.set_index("user_id")
    assert frame.loc[scored, "retained_prob"].to_numpy() == pytest.approx(1 - churn)
    unscored = [user for user in base if user not in set(scored)]
    assert frame.loc[unscored, "revenue"].to_numpy() == pytest.approx(np.full(len(unscored), ltv.mean()))
    assert "could not score" in result.note


def test_projection_matches_numpy_with_caps_and_sources() -> None:
    rng = np.random.default_rng(2)
    users = pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(50)],
            "retained_prob": rng.uniform(0.5, 1.0, 50),
            "revenue": rng.gamma(2, 5, 50),
        }
    )
    retention = Effect(0.3, 0.1, 0.5, ESTIMATED)
    revenue = Effect(-0.2, -0.5, 0.1, ESTIMATED)
    frame = scenario.project(users, retention, revenue, reach=0.6).set_index(["strategy"])
    p, v = users["retained_prob"].to_numpy(), users["revenue"].to_numpy()
    retained = frame[frame["figure"].str.startswith("users retained")]
    assert retained.loc["current", "value"] == pytest.approx(p.sum())
    assert retained.loc["chosen", "value"] == pytest.approx(np.minimum(p * (1 + 0.6 * 0.3), 1).sum())
    assert retained.loc["chosen", "ci_low"] == pytest.approx(np.minimum(p * 1.06, 1).sum())
    assert retained.loc["chosen", "ci_high"] == pytest.approx(np.minimum(p * 1.3, 1).sum())
    assert retained.loc["difference", "value"] == pytest.approx(np.minimum(p * 1.18, 1).sum() - p.sum())
    money = frame[frame["figure"].str.startswith("revenue")]
    assert money.loc["chosen", "value"] == pytest.approx((v * 0.88).sum())
    assert money.loc["chosen", "ci_low"] == pytest.approx((v * 0.7).sum())
    assert set(frame["source"]) == {ESTIMATED}
    assumed = scenario.project(users, retention, Effect.assumed(0.1), reach=1.0)
    sources = assumed.set_index(["figure", "strategy"])["source"]
    assert sources.xs("current", level="strategy").eq(ESTIMATED).all()
    assert sources[(retained["figure"].iloc[0], "chosen")] == ESTIMATED
    assert sources[(money["figure"].iloc[0], "chosen")] == ASSUMPTION
    typed_reach = scenario.project(users, retention, revenue, reach=0.5, reach_source=ASSUMPTION)
    assert typed_reach.loc[typed_reach["strategy"] != "current", "source"].eq(ASSUMPTION).all()
    with pytest.raises(TenureError, match="reach"):
        scenario.project(users, retention, revenue, reach=1.5)


def test_scenario_lists_every_input_with_its_source() -> None:
    users = pd.DataFrame({"user_id": ["a", "b"], "retained_prob": [0.5, 0.7], "revenue": [10.0, 30.0]})
    base = scenario.Baseline(users, END, scenario.OBSERVED, "observed: test")
    result = scenario.scenario(base, Effect(0.1, 0.0, 0.2, ESTIMATED), Effect.assumed(0.05), 0.5, ASSUMPTION)
    inputs = result.inputs.set_index("input")
    assert inputs.loc["users in the current base", "value"] == 2
    assert inputs.loc["mean baseline revenue per user", "value"] == pytest.approx(20.0)
    assert inputs.loc["relative effect on revenue", "source"] == ASSUMPTION
    assert inputs.loc["share of the base reached", "source"] == ASSUMPTION
    assert set(result.inputs["source"]) <= {ESTIMATED, ASSUMPTION}
    assert set(result.projection["source"]) <= {ESTIMATED, ASSUMPTION}


def user_policy_value(target: str = "b") -> UserPolicyValue:
    """A hand-built result: target b, everyone a = 0.20, everyone b = 0.25, logged mean 0.22."""
    columns = ["policy", "estimator", "value", "se", "ci_low", "ci_high", "rows"]
    policies = pd.DataFrame(
        [
            ("everyone a", "aipw", 0.20, 0.01, 0.18, 0.22, 100),
            ("everyone b", "aipw", 0.25, 0.01, 0.23, 0.27, 100),
        ],
        columns=columns,
    )
    differences = pd.DataFrame([(f"{target} - a", "aipw", 0.05, 0.01, 0.03, 0.07, 100)], columns=columns)
    return UserPolicyValue(
        target=target,
        outcome="retention:30",
        rows=100,
        logged_value=0.22,
        ess=80.0,
        max_weight=3.0,
        unsupported=0,
        unsupported_share=0.0,
        incomplete=0,
        estimates=(Estimate("aipw", 0.25, 0.01, 0.23, 0.27, 100),),
        policies=policies,
        differences=differences,
        target_share={"b": 1.0},
        survival=pd.DataFrame(columns=["policy", "day", "survival"]),
    )


def test_relative_effect_against_logged_and_against_a_variant() -> None:
    result = user_policy_value()
    logged = scenario.relative_effect(result, "logged")
    assert (logged.relative, logged.ci_low, logged.ci_high) == pytest.approx(
        (0.25 / 0.22 - 1, 0.23 / 0.22 - 1, 0.27 / 0.22 - 1)
    )
    versus = scenario.relative_effect(result, "a")
    assert (versus.relative, versus.ci_low, versus.ci_high) == pytest.approx(
        (0.05 / 0.2, 0.03 / 0.2, 0.07 / 0.2)
    )
    assert versus.source == ESTIMATED
    same = scenario.relative_effect(result, "b")
    assert same.relative == 0 and same.ci_high == 0
    with pytest.raises(TenureError, match="no hajek estimate"):
        scenario.relative_effect(result, "a", "hajek")


def test_catalog_lists_policies_experiments_and_truth(small_store_path) -> None:
    with Store(small_store_path, read_only=True) as store:
        policies = catalog.logged_policies(store)
        expected = store.query_df("SELECT DISTINCT policy FROM recommendations ORDER BY 1")["policy"].tolist()
        assert policies == expected
        assert "rec_policy" in catalog.experiments_with_propensities(store)
        truth = catalog.policy_truth(store)
        assert truth is not None and set(truth["policy"]) == set(
            store.query_df("SELECT policy FROM truth.policy_values")["policy"]
        )
    assert catalog.policy_truth(Store(":memory:")) is None
