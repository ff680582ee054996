"""The per-user ratio outcome ``click_rate:D`` of core/whatif (clicks per shown slot under a policy).

Checked against plain numpy (the delta-method ratio of the IPW and AIPW estimates), pandas (the
per-user clicks and slots), a simulation with a known click rate per variant, and the sample
store's counterfactual truth (``truth.policy_values.click_rate``).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from experiment_helpers import write_store
from test_whatif_users import DATA_END_DAY, ORIGIN

from core.cli import main
from core.errors import TenureError
from core.store import Store
from core.whatif.outcome_model import cross_fitted_predictions
from core.whatif.policy_value import naive_ratio_difference, ratio_terms
from core.whatif.user_policies import UserPolicySpec, evaluate_user_policy, value_from_data
from core.whatif.users import Outcome, UserData, parse_outcome, user_data

Z = 1.959963984540054


def ratio_data(seed: int, n: int = 1000) -> UserData:
    """Confounded assignment with a known click rate per variant.

    x is 0 or 1 (half each); P(b | x) = 0.2 + 0.6 x. Slots ~ Poisson(10 + 10 x) under either
    variant; each slot is clicked with probability 0.05 + 0.05 x under a and 0.1 + 0.1 x under b.
    True click rate per shown slot: a (0.5*10*0.05 + 0.5*20*0.1) / 15 = 0.08333, b 0.16667.
    Users with x = 1 see more slots, click more and get b more often: the logged ratio is biased.
    """
    rng = np.random.default_rng(seed)
    x = (rng.random(n) < 0.5).astype(float)
    p_b = 0.2 + 0.6 * x
    gets_b = rng.random(n) < p_b
    slots = rng.poisson(10 + 10 * x)
    clicks = rng.binomial(slots, np.where(gets_b, 0.1 + 0.1 * x, 0.05 + 0.05 * x))
    frame = pd.DataFrame(
        {
            "user_id": np.arange(n).astype(str),
            "variant": np.where(gets_b, "b", "a"),
            "assigned_time": pd.Timestamp("2026-01-01"),
            "propensity": np.where(gets_b, p_b, 1 - p_b),
            "outcome": clicks.astype(float),
            "eligible": True,
            "duration_days": rng.exponential(30, n),
            "churned": rng.random(n) < 0.7,
            "denominator": slots.astype(float),
            "target": "b",
            "x0": x,
        }
    )
    return UserData(frame, ("a", "b"), (), ("x0",), ("x",))


TRUE_RATE = {"a": (0.5 * 10 * 0.05 + 0.5 * 20 * 0.1) / 15, "b": (0.5 * 10 * 0.1 + 0.5 * 20 * 0.2) / 15}


def test_ratio_estimators_match_plain_numpy() -> None:
    data = ratio_data(5, n=300)
    spec = UserPolicySpec("sim", Outcome("click_rate", 30), variant="b", folds=3, seed=4, survival_days=())
    result = value_from_data(data, spec)
    frame = data.frame
    clicks, slots = frame["outcome"].to_numpy(), frame["denominator"].to_numpy()
    got_b = (frame["variant"] == "b").to_numpy()
    p = frame["propensity"].to_numpy()
    n = len(frame)

    rate = sum(clicks[i] / p[i] for i in range(n) if got_b[i]) / sum(
        slots[i] / p[i] for i in range(n) if got_b[i]
    )
    mean_weighted_slots = sum(slots[i] / p[i] for i in range(n) if got_b[i]) / n
    linear = [
        rate + ((clicks[i] - rate * slots[i]) / p[i] if got_b[i] else 0.0) / mean_weighted_slots
        for i in range(n)
    ]
    se = np.std(linear, ddof=1) / np.sqrt(n)
    for name in ("ipw", "hajek"):
        estimate = result.estimate(name)
        assert estimate.value == pytest.approx(rate)
        assert estimate.se == pytest.approx(se)
        assert estimate.ci_high == pytest.approx(rate + Z * se, rel=1e-6)

    features = frame[["x0"]].to_numpy()
    received = frame["variant"].to_numpy()
    mu_clicks = cross_fitted_predictions(features, received, clicks, ("a", "b"), 3, 4)[:, 1]
    mu_slots = cross_fitted_predictions(features, received, slots, ("a", "b"), 3, 4)[:, 1]
    numerator = [mu_clicks[i] + (got_b[i] / p[i]) * (clicks[i] - mu_clicks[i]) for i in range(n)]
    denominator = [mu_slots[i] + (got_b[i] / p[i]) * (slots[i] - mu_slots[i]) for i in range(n)]
    aipw_rate = np.mean(numerator) / np.mean(denominator)
    aipw_linear = [
        aipw_rate + (numerator[i] - aipw_rate * denominator[i]) / np.mean(denominator) for i in range(n)
    ]
    aipw = result.estimate("aipw")
    assert aipw.value == pytest.approx(aipw_rate)
    assert aipw.se == pytest.approx(np.std(aipw_linear, ddof=1) / np.sqrt(n))
    assert result.logged_value == pytest.approx(clicks.sum() / slots.sum())

    everyone_a = result.policies.set_index(["policy", "estimator"]).loc[("everyone a", "hajek")]
    got_a = ~got_b
    assert everyone_a["value"] == pytest.approx(
        np.sum(clicks[got_a] / p[got_a]) / np.sum(slots[got_a] / p[got_a])
    )
    difference = result.differences.set_index("estimator").loc["hajek"]
    assert difference["value"] == pytest.approx(rate - everyone_a["value"])


def test_naive_ratio_difference_is_the_per_group_delta_method() -> None:
    rng = np.random.default_rng(8)
    slots = rng.poisson(8, 400).astype(float) + 1
    clicks = rng.binomial(slots.astype(int), 0.1).astype(float)
    received = np.where(rng.random(400) < 0.4, "b", "a")
    estimate = naive_ratio_difference(clicks, slots, received, "b", "a")
    variance = 0.0
    rates = {}
    for group in ("a", "b"):
        y, s = clicks[received == group], slots[received == group]
        rates[group] = y.sum() / s.sum()
        variance += np.var(y - rates[group] * s, ddof=1) / (len(y) * s.mean() ** 2)
    assert estimate.value == pytest.approx(rates["b"] - rates["a"])
    assert estimate.se == pytest.approx(np.sqrt(variance), rel=0.01)
    assert np.isnan(ratio_terms(np.array([1.0, 2.0]), np.zeros(2))).all()


def test_ratio_intervals_cover_the_known_click_rate() -> None:
    spec = UserPolicySpec("sim", Outcome("click_rate", 30), variant="b", folds=2, survival_days=())
    seeds = range(60)
    covered = {"aipw": 0, "hajek": 0, "everyone a": 0, "difference": 0}
    naive = []
    for seed in seeds:
        result = value_from_data(ratio_data(seed), spec)
        for name in ("aipw", "hajek"):
            estimate = result.estimate(name)
            covered[name] += estimate.ci_low <= TRUE_RATE["b"] <= estimate.ci_high
        policies = result.policies.set_index(["policy", "estimator"])
        row = policies.loc[("everyone a", "aipw")]
        covered["everyone a"] += row["ci_low"] <= TRUE_RATE["a"] <= row["ci_high"]
        differences = result.differences.set_index("estimator")
        aipw = differences.loc["aipw"]
        covered["difference"] += aipw["ci_low"] <= TRUE_RATE["b"] - TRUE_RATE["a"] <= aipw["ci_high"]
        naive.append(differences.loc["naive", "value"])
    for name, hits in covered.items():
        assert 0.85 <= hits / len(seeds) <= 1.0, (name, hits)
    assert np.mean(naive) - (TRUE_RATE["b"] - TRUE_RATE["a"]) > 0.005, "the logged difference is confounded"


# --- per-user clicks and slots from the store against pandas -----------------------------------


@pytest.fixture(scope="module")
def click_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 users over 40 days, each with a few recommendation rows around their assignment."""
    rng = np.random.default_rng(31)
    ids = [f"u{i:04d}" for i in range(200)]
    n = len(ids)
    country = rng.choice(["US", "BR"], n)
    p_treat = np.where(country == "US", 0.7, 0.4)
    treated = rng.random(n) < p_treat
    assigned = [ORIGIN + dt.timedelta(days=float(d)) for d in rng.uniform(0, 36, n)]
    events = [(ids[i], assigned[i] + dt.timedelta(hours=1), "view", 0.0, f"s{i}") for i in range(n)]
    events.append(("sentinel", ORIGIN + dt.timedelta(days=DATA_END_DAY), "view", 0.0, "end"))
    recommendations = []
    for i in range(n):
        for offset in rng.uniform(-5, 40, rng.poisson(12)):
            when = assigned[i] + dt.timedelta(days=float(offset))
            if when <= ORIGIN + dt.timedelta(days=DATA_END_DAY):
                reward = float(rng.random() < (0.2 if treated[i] else 0.1))
                recommendations.append((ids[i], when, "x", "treatment" if treated[i] else "control", reward))
    assignments = pd.DataFrame(
        {
            "user_id": ids,
            "experiment": "exp",
            "variant": np.where(treated, "treatment", "control"),
            "assigned_time": assigned,
            "propensity": np.where(treated, p_treat, 1 - p_treat),
        }
    )
    frame = pd.DataFrame(events, columns=["user_id", "event_time", "event_name", "revenue", "session_id"])
    path = tmp_path_factory.mktemp("clicks") / "clicks.duckdb"
    store = write_store(path, frame, assignments, pd.DataFrame({"user_id": ids, "country": country}))
    logged = pd.DataFrame(recommendations, columns=["user_id", "rec_time", "item_id", "policy", "reward"])
    with store.transaction() as cursor:
        cursor.register("rec_frame", logged)
        cursor.execute(
            "INSERT INTO recommendations (user_id, rec_time, item_id, policy, reward) "
            "SELECT user_id, rec_time, item_id, policy, reward FROM rec_frame"
        )
    store.close()
    return path


@pytest.mark.parametrize("text", ["click_rate:10", "click_rate:all"])
def test_clicks_and_slots_match_pandas(click_store: Path, text: str) -> None:
    outcome = parse_outcome(text)
    with Store(click_store, read_only=True) as store:
        data = user_data(store, "exp", outcome)
        logged = store.query_df("SELECT user_id, rec_time, reward FROM recommendations")
        assignments = store.query_df("SELECT user_id, assigned_time FROM assignments")
    joined = logged.merge(assignments, on="user_id")
    elapsed = (joined["rec_time"] - joined["assigned_time"]).dt.total_seconds() / 86400
    inside = (elapsed >= 0) & ((elapsed < outcome.days) if outcome.days else True)
    window = joined[inside].groupby("user_id")["reward"].agg(["sum", "count"])
    ours = data.frame.set_index("user_id")
    expected = window.reindex(ours.index).fillna(0.0)
    np.testing.assert_allclose(ours["outcome"], expected["sum"])
    np.testing.assert_allclose(ours["denominator"], expected["count"])
    data_end = ORIGIN + dt.timedelta(days=DATA_END_DAY)
    ends = assignments.set_index("user_id").reindex(ours.index)["assigned_time"] + pd.Timedelta(
        days=outcome.days
    )
    assert (ours["eligible"] == (ends <= data_end)).all()
    if outcome.days:
        assert 0 < (~ours["eligible"]).sum() < len(ours)


def test_cli_click_rate_json(click_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["whatif-users", "--db", str(click_store), "--experiment", "exp", "--variant", "treatment",
         "--outcome", "click_rate:all", "--format", "json", "--details"]
    )  # fmt: skip
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    with Store(click_store, read_only=True) as store:
        spec = UserPolicySpec("exp", parse_outcome("click_rate:all"), variant="treatment")
        result = evaluate_user_policy(store, spec)
    assert payload["outcome"] == "click_rate:all"
    assert [e["estimator"] for e in payload["estimates"]] == ["aipw", "ipw", "hajek"]
    assert payload["estimates"][0]["value"] == pytest.approx(result.estimate("aipw").value)
    assert {row["estimator"] for row in payload["differences"]} == {"aipw", "ipw", "hajek", "naive"}


def test_click_rate_parsing_and_refusals() -> None:
    assert parse_outcome("click_rate:30") == Outcome("click_rate", 30)
    assert parse_outcome(" Click_Rate:ALL ").name == "click_rate:all"
    assert parse_outcome("click_rate:7").is_ratio and not parse_outcome("events:7").is_ratio
    for bad in ("click_rate:0", "click_rate", "click_rate:-3", "retention:all"):
        with pytest.raises(TenureError):
            parse_outcome(bad)
    with Store(":memory:") as store:
        with store.transaction() as cursor:
            cursor.execute(
                "INSERT INTO assignments (user_id, experiment, variant, assigned_time, propensity) VALUES "
                "('u1', 'e', 'a', '2026-01-01', 0.5), ('u2', 'e', 'b', '2026-01-01', 0.5)"
            )
            cursor.execute(
                "INSERT INTO events (user_id, event_time, event_name) VALUES ('u1', '2026-02-01', 'v')"
            )
        spec = UserPolicySpec("e", parse_outcome("click_rate:all"), variant="a", folds=2, survival_days=())
        with pytest.raises(TenureError, match="no recommendation was shown"):
            evaluate_user_policy(store, spec)


# --- the sample store against the simulator's counterfactual truth ------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["popularity", "personalised"])
def test_sample_click_rate_against_truth(variant: str) -> None:
    """truth.policy_values.click_rate: every user under one policy, clicks / slots shown over the
    whole simulated period: ``click_rate:all`` is that definition."""
    path = Path(__file__).resolve().parents[1] / "sample_data" / "tenure.duckdb"
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make sample-data` (make test builds it)")
    with Store(path, read_only=True) as store:
        truth = store.query_df("SELECT policy, click_rate FROM truth.policy_values").set_index("policy")
        spec = UserPolicySpec(
            "rec_policy", parse_outcome("click_rate:all"), variant=variant, survival_days=()
        )
        result = evaluate_user_policy(store, spec)
    true_rate = truth.loc[variant, "click_rate"]
    for name in ("aipw", "hajek"):
        estimate = result.estimate(name)
        assert estimate.ci_low <= true_rate <= estimate.ci_high, (name, estimate, true_rate)
    assert result.incomplete == 0 and result.unsupported == 0
