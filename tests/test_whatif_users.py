"""Per-user what-if estimates (core/whatif/): estimators, outcome model, rules, survival, CLI.

Every number is checked against an independent computation: plain numpy formulas, a simulation
with a known truth (confounded assignment, known outcome functions), lifelines' weighted
Kaplan-Meier, pandas for the per-user outcomes, and the sample store's counterfactual truth.
"""

from __future__ import annotations

import datetime as dt
import doctest
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from experiment_helpers import write_store
from lifelines import KaplanMeierFitter
from scipy.special import expit

import core.whatif.rules
from core.cli import main
from core.errors import TenureError
from core.store import Store
from core.whatif.outcome_model import cross_fitted_predictions, ridge_fit, ridge_predict
from core.whatif.policy_value import from_terms, naive_difference, propensity_matrix, terms, weight_summary
from core.whatif.rules import (
    Rule,
    check_rule,
    parse_rule,
    read_rule,
    rule_from_query_param,
    rule_sql,
    rule_text_from_rows,
    rule_to_query_param,
)
from core.whatif.survival_ipw import survival_at, weighted_kaplan_meier
from core.whatif.user_policies import UserPolicySpec, evaluate_user_policy, value_from_data
from core.whatif.users import USER_COLUMNS, Outcome, UserData, parse_outcome, user_data

# --- estimators against plain numpy ---------------------------------------------------------


def test_estimators_match_plain_numpy() -> None:
    rng = np.random.default_rng(3)
    n = 50
    got = rng.random(n) < 0.4
    p = np.where(got, rng.uniform(0.2, 0.9, n), np.nan)
    y = rng.normal(2, 1, n)
    mu = rng.normal(2, 0.5, n)
    weight = np.where(got, 1 / np.where(got, p, 1), 0.0)

    ipw = from_terms("ipw", terms("ipw", y, weight))
    assert ipw.value == pytest.approx(sum(y[i] / p[i] for i in range(n) if got[i]) / n)
    assert ipw.se == pytest.approx(np.std(weight * y, ddof=1) / np.sqrt(n))
    assert ipw.ci_low == pytest.approx(ipw.value - 1.959964 * ipw.se, rel=1e-6)

    hajek = from_terms("hajek", terms("hajek", y, weight))
    expected = np.sum(y[got] / p[got]) / np.sum(1 / p[got])
    assert hajek.value == pytest.approx(expected)
    linearised = weight * (y - expected) / weight.mean()
    assert hajek.se == pytest.approx(np.std(linearised, ddof=1) / np.sqrt(n))

    aipw = from_terms("aipw", terms("aipw", y, weight, mu))
    by_hand = [mu[i] + ((y[i] - mu[i]) / p[i] if got[i] else 0.0) for i in range(n)]
    assert aipw.value == pytest.approx(np.mean(by_hand))
    assert aipw.se == pytest.approx(np.std(by_hand, ddof=1) / np.sqrt(n))
    assert aipw.rows == n

    ess, largest = weight_summary(weight)
    assert ess == pytest.approx(weight.sum() ** 2 / (weight**2).sum())
    assert largest == pytest.approx(1 / p[got].min())


def test_naive_difference_is_welch() -> None:
    y = np.array([1.0, 2, 3, 4, 10, 12, 9])
    got = np.array(["a", "a", "a", "a", "b", "b", "b"])
    estimate = naive_difference(y, got, "b", "a")
    assert estimate.value == pytest.approx(np.mean([10, 12, 9]) - 2.5)
    assert estimate.se == pytest.approx(
        np.sqrt(np.var([10, 12, 9], ddof=1) / 3 + np.var([1, 2, 3, 4], ddof=1) / 4)
    )


def test_propensity_matrix_two_variants_and_refusals() -> None:
    received = np.array(["a", "b", "a", "b"])
    matrix = propensity_matrix(received, np.array([0.8, 0.3, np.nan, 1.0]), ("a", "b"))
    np.testing.assert_allclose(matrix[0], [0.8, 0.2])
    np.testing.assert_allclose(matrix[1], [0.7, 0.3])
    assert np.isnan(matrix[2]).all()
    np.testing.assert_allclose(matrix[3], [0.0, 1.0])
    for bad in (0.0, 1.2, -0.1):
        with pytest.raises(TenureError, match=r"outside \(0, 1\]"):
            propensity_matrix(received, np.array([0.5, 0.5, bad, 0.5]), ("a", "b"))


def test_propensity_matrix_more_variants() -> None:
    received = np.array(["a", "b", "c", "a"])
    fixed = propensity_matrix(received, np.array([0.5, 0.25, 0.25, 0.5]), ("a", "b", "c"))
    np.testing.assert_allclose(fixed, [[0.5, 0.25, 0.25]] * 4)
    with pytest.raises(TenureError, match="3 variants"):
        propensity_matrix(received, np.array([0.5, 0.25, 0.25, 0.6]), ("a", "b", "c"))
    only_own = np.eye(3, dtype=bool)[[0, 1, 2, 0]]
    own = propensity_matrix(received, np.array([0.5, 0.25, 0.25, 0.6]), ("a", "b", "c"), needed=only_own)
    assert own[3, 0] == 0.6 and np.isnan(own[3, 1])


# --- the outcome model --------------------------------------------------------------------------


def test_ridge_without_penalty_is_least_squares() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(200, 3))
    y = 1 + x @ np.array([0.5, -2.0, 0.0]) + rng.normal(0, 0.1, 200)
    coefficients = ridge_fit(x, y, penalty=0.0)
    expected = np.linalg.lstsq(np.column_stack([np.ones(200), x]), y, rcond=None)[0]
    np.testing.assert_allclose(coefficients, expected, atol=1e-9)
    np.testing.assert_allclose(
        ridge_predict(coefficients, x[:3]), np.column_stack([np.ones(3), x[:3]]) @ expected
    )
    shrunk = ridge_fit(x, y, penalty=1e6)
    assert np.abs(shrunk[1:]).max() < 0.01


def test_cross_fitted_prediction_never_uses_the_users_own_outcome() -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(size=(120, 2))
    got = np.where(rng.random(120) < 0.5, "a", "b")
    y = x[:, 0] + rng.normal(size=120)
    first = cross_fitted_predictions(x, got, y, ("a", "b"), folds=3, seed=1)
    changed = y.copy()
    changed[7] += 1000.0
    second = cross_fitted_predictions(x, got, changed, ("a", "b"), folds=3, seed=1)
    np.testing.assert_allclose(first[7], second[7])
    assert not np.allclose(first, second)


# --- unbiasedness and coverage on simulated data with a known truth -----------------------------


TRUE_VALUE = {"a": 1.0, "b": 1.5 + 0.5}  # E[f_a(x)], E[f_b(x)] below


def simulated_data(seed: int, n: int = 1500) -> UserData:
    """Confounded assignment (p_b rises with x1, which also raises outcomes); known outcomes.

    f_a(x) = 1 + x1, f_b(x) = 1.5 + x1 + 0.5 x2^2 (E = 2.0), noise sd 1; x1, x2 standard normal.
    The outcome model only sees x1, x2 linearly (misspecified for b): AIPW must stay unbiased.
    """
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    p_b = np.clip(expit(1.2 * x1), 0.1, 0.9)
    gets_b = rng.random(n) < p_b
    outcome = np.where(gets_b, 1.5 + x1 + 0.5 * x2**2, 1 + x1) + rng.normal(size=n)
    frame = pd.DataFrame(
        {
            "user_id": np.arange(n).astype(str),
            "variant": np.where(gets_b, "b", "a"),
            "assigned_time": pd.Timestamp("2026-01-01"),
            "propensity": np.where(gets_b, p_b, 1 - p_b),
            "outcome": outcome,
            "eligible": True,
            "duration_days": rng.exponential(30, n),
            "churned": rng.random(n) < 0.7,
            "target": "b",
            "x0": x1,
            "x1": x2,
        }
    )
    return UserData(frame, ("a", "b"), (), ("x0", "x1"), ("x1", "x2"))


def test_estimates_are_unbiased_and_intervals_cover_on_simulated_data() -> None:
    spec = UserPolicySpec("sim", Outcome("revenue", 1), variant="b", folds=2, survival_days=())
    truth_b, truth_difference = TRUE_VALUE["b"], TRUE_VALUE["b"] - TRUE_VALUE["a"]
    values: dict[str, list[float]] = {"aipw": [], "ipw": [], "hajek": [], "naive": []}
    covered: dict[str, int] = {"aipw": 0, "ipw": 0, "hajek": 0, "difference": 0}
    seeds = range(100)
    for seed in seeds:
        result = value_from_data(simulated_data(seed), spec)
        for estimate in result.estimates:
            values[estimate.estimator].append(estimate.value)
            covered[estimate.estimator] += estimate.ci_low <= truth_b <= estimate.ci_high
        differences = result.differences.set_index("estimator")
        values["naive"].append(differences.loc["naive", "value"])
        aipw_difference = differences.loc["aipw"]
        covered["difference"] += aipw_difference["ci_low"] <= truth_difference <= aipw_difference["ci_high"]
    for name in ("aipw", "ipw", "hajek"):
        spread = np.std(values[name], ddof=1) / np.sqrt(len(seeds))
        assert abs(np.mean(values[name]) - truth_b) < 4 * spread + 0.01, (name, np.mean(values[name]))
    for name, hits in covered.items():
        assert 0.88 <= hits / len(seeds) <= 0.99, (name, hits)
    assert np.mean(values["naive"]) - truth_difference > 0.5, "the naive difference is confounded"
    assert np.std(values["aipw"]) < np.std(values["ipw"]), "the outcome model narrows the spread"


# --- weighted survival ------------------------------------------------------------------------


def test_weighted_kaplan_meier_matches_lifelines_and_replicated_rows() -> None:
    rng = np.random.default_rng(8)
    n = 300
    durations = np.round(rng.exponential(20, n), 1)
    churned = rng.random(n) < 0.6
    weights = rng.uniform(0.5, 4, n)
    curve = weighted_kaplan_meier(durations, churned, weights)
    fitter = KaplanMeierFitter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitter.fit(durations, churned, weights=weights)
    reference = fitter.survival_function_at_times(curve["day"].to_numpy()).to_numpy()
    np.testing.assert_allclose(curve["survival"].to_numpy(), reference, rtol=1e-9)

    counts = rng.integers(0, 4, n)
    replicated = KaplanMeierFitter().fit(np.repeat(durations, counts), np.repeat(churned, counts))
    integer_curve = weighted_kaplan_meier(durations, churned, counts.astype(float))
    days = np.array([0.5, 5, 17.3, 40, 80])
    longest = durations[counts > 0].max()
    expected = replicated.survival_function_at_times(days).to_numpy()
    np.testing.assert_allclose(
        survival_at(integer_curve, days, longest)[days <= longest], expected[days <= longest]
    )
    assert np.isnan(survival_at(integer_curve, [longest + 1], longest)).all()


# --- rules ----------------------------------------------------------------------------------------


def test_rule_parsing() -> None:
    rule = parse_rule(
        "# mobile first\nattribute,value,variant\n platform , ios ,b\n\nplan,pro,b\n*,*,a\n", "r.csv"
    )
    assert rule.default == "a"
    assert [(c.attribute, c.value, c.variant, c.line) for c in rule.conditions] == [
        ("platform", "ios", "b", 3),
        ("plan", "pro", "b", 5),
    ]
    assert parse_rule("attribute,value,variant\n*,*,b\n").conditions == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("platform,ios,b\n*,*,a\n", "header"),
        ("attribute,value,variant\nplatform,ios,b\n", "no default row"),
        ("attribute,value,variant\n*,*,a\nplatform,ios,b\n", "line 3: a row after the default"),
        ("attribute,value,variant\nplatform,*,b\n*,*,a\n", r"line 2: '\*' is only allowed"),
        ("attribute,value,variant\nplatform,ios\n*,*,a\n", "line 2: expected three"),
        ("attribute,value,variant\nplatform,,b\n*,*,a\n", "line 2: expected three"),
    ],
)
def test_rule_parsing_refuses_bad_files(text: str, message: str) -> None:
    with pytest.raises(TenureError, match=message):
        parse_rule(text, "r.csv")


def test_read_rule_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TenureError, match="cannot read rule file"):
        read_rule(tmp_path / "nope.csv")


# --- a hand-made store: per-user outcomes, rules and estimates against pandas ------------------

ORIGIN = dt.datetime(2026, 1, 1)
DATA_END_DAY = 40


@pytest.fixture(scope="module")
def policy_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """400 users with a country; treatment's propensity depends on it; events over 40 days."""
    rng = np.random.default_rng(21)
    n = 400
    ids = [f"u{i:04d}" for i in range(n)]
    country = rng.choice(["US", "BR", "DE"], n)
    p_treat = pd.Series(country).map({"US": 0.8, "BR": 0.3, "DE": 0.5}).to_numpy()
    treated = rng.random(n) < p_treat
    assigned = [ORIGIN + dt.timedelta(days=float(d)) for d in rng.uniform(0, 36, n)]
    rows = []
    for i in range(n):
        rate = 0.6 if treated[i] else 0.4
        for offset in np.sort(rng.uniform(-10, 40, rng.poisson(rate * 50))):
            when = assigned[i] + dt.timedelta(days=float(offset))
            if when <= ORIGIN + dt.timedelta(days=DATA_END_DAY):
                revenue = float(rng.gamma(2, 5)) if rng.random() < 0.1 else 0.0
                rows.append((ids[i], when, "view", revenue, f"s{i}-{int(offset)}"))
    rows.append(("sentinel", ORIGIN + dt.timedelta(days=DATA_END_DAY), "view", 0.0, "end"))
    events = pd.DataFrame(rows, columns=["user_id", "event_time", "event_name", "revenue", "session_id"])
    assignments = pd.DataFrame(
        {
            "user_id": ids,
            "experiment": "exp",
            "variant": np.where(treated, "treatment", "control"),
            "assigned_time": assigned,
            "propensity": np.where(treated, p_treat, 1 - p_treat),
        }
    )
    path = tmp_path_factory.mktemp("whatif") / "policy.duckdb"
    write_store(path, events, assignments, pd.DataFrame({"user_id": ids, "country": country})).close()
    return path


def _independent_outcomes(path: Path, outcome: Outcome) -> pd.DataFrame:
    """Per user with pandas: the outcome and whether its window has ended."""
    with Store(path, read_only=True) as store:
        events = store.query_df("SELECT user_id, event_time, revenue FROM events")
        assignments = store.query_df("SELECT user_id, variant, assigned_time, propensity FROM assignments")
        country = store.query_df("SELECT user_id, country FROM users")
    end = events["event_time"].max()
    joined = events.merge(assignments, on="user_id")
    joined["e"] = (joined["event_time"] - joined["assigned_time"]).dt.total_seconds() / 86400
    if outcome.kind == "retention":
        hit = joined[(joined["e"] >= outcome.days) & (joined["e"] < outcome.days + 1)]
        values = pd.Series(1.0, index=hit["user_id"].unique())
    else:
        window = joined[(joined["e"] >= 0) & (joined["e"] < outcome.days)]
        values = window.groupby("user_id")["revenue"].sum()
    frame = assignments.merge(country, on="user_id").set_index("user_id").sort_index()
    frame["outcome"] = values.reindex(frame.index).fillna(0.0)
    ends = frame["assigned_time"] + pd.to_timedelta(outcome.window_end_days, unit="D")
    frame["eligible"] = ends <= end
    return frame


@pytest.mark.parametrize("text", ["retention:7", "revenue:10"])
def test_user_outcomes_match_pandas(policy_store: Path, text: str) -> None:
    outcome = parse_outcome(text)
    with Store(policy_store, read_only=True) as store:
        data = user_data(store, "exp", outcome)
    ours = data.frame.set_index("user_id")
    expected = _independent_outcomes(policy_store, outcome)
    assert list(data.frame.columns[: len(USER_COLUMNS)]) == list(USER_COLUMNS)
    assert ours.index.tolist() == expected.index.tolist()
    np.testing.assert_allclose(ours["outcome"], expected["outcome"], atol=1e-9)
    assert (ours["eligible"] == expected["eligible"]).all()
    assert 0 < (~ours["eligible"]).sum() < len(ours)
    assert data.variants == ("control", "treatment")
    assert "country=US" in data.feature_names
    us = data.feature_names.index("country=US")
    np.testing.assert_array_equal(ours[data.features[us]], (expected["country"] == "US").astype(float))


def test_rule_value_matches_numpy(policy_store: Path, tmp_path: Path) -> None:
    rule_file = tmp_path / "us_only.csv"
    rule_file.write_text("attribute,value,variant\ncountry,US,treatment\n*,*,control\n")
    rule = read_rule(rule_file)
    spec = UserPolicySpec("exp", parse_outcome("revenue:10"), rule=rule, folds=2)
    with Store(policy_store, read_only=True) as store:
        result = evaluate_user_policy(store, spec)
    frame = _independent_outcomes(policy_store, spec.outcome)
    frame = frame[frame["eligible"]]
    target = np.where(frame["country"] == "US", "treatment", "control")
    p_target = np.where(frame["variant"] == target, frame["propensity"], 1 - frame["propensity"])
    weight = (frame["variant"] == target) / p_target
    y = frame["outcome"].to_numpy()
    assert result.target == "us_only.csv"
    assert result.rows == len(frame)
    assert result.logged_value == pytest.approx(y.mean())
    assert result.estimate("ipw").value == pytest.approx(np.mean(weight * y))
    assert result.estimate("hajek").value == pytest.approx(np.sum(weight * y) / np.sum(weight))
    assert result.ess == pytest.approx(weight.sum() ** 2 / (weight**2).sum())
    assert result.max_weight == pytest.approx(weight.max())
    assert result.unsupported_share == 0.0
    assert result.target_share["treatment"] == pytest.approx(np.mean(target == "treatment"))
    assert set(result.differences["policy"]) == {"us_only.csv - control", "us_only.csv - treatment"}


def test_rule_sql_is_first_match(policy_store: Path) -> None:
    rule = parse_rule(
        "attribute,value,variant\ncountry,US,treatment\ncountry,BR,control\ncountry,US,control\n*,*,treatment\n"
    )
    expression, params = rule_sql(rule)
    with Store(policy_store, read_only=True) as store:
        got = store.query_df(
            f"SELECT user_id, country, {expression} AS target FROM users u ORDER BY user_id", params
        )
    expected = got["country"].map({"US": "treatment", "BR": "control"}).fillna("treatment")
    assert (got["target"] == expected).all()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("attribute,value,variant\nplanet,US,treatment\n*,*,control\n", "'planet' is not a column"),
        (
            "attribute,value,variant\ncountry,us,treatment\n*,*,control\n",
            "no user of experiment 'exp' has country = 'us'",
        ),
        ("attribute,value,variant\ncountry,US,red\n*,*,control\n", "'red' is not a variant"),
        ("attribute,value,variant\n*,*,blue\n", "default row: 'blue' is not a variant"),
    ],
)
def test_check_rule_refuses(policy_store: Path, text: str, message: str) -> None:
    with Store(policy_store, read_only=True) as store, pytest.raises(TenureError, match=message):
        check_rule(store, parse_rule(text, "r.csv"), "exp", ("control", "treatment"))


def test_unsupported_users_are_left_out_and_counted(tmp_path: Path) -> None:
    """A user who got control with probability 1 could never have got treatment."""
    ids = [f"u{i}" for i in range(6)]
    assigned = [ORIGIN] * 6
    events = pd.DataFrame(
        {
            "user_id": ids * 2,
            "event_time": [ORIGIN + dt.timedelta(hours=1)] * 6 + [ORIGIN + dt.timedelta(days=5)] * 6,
            "event_name": "view",
            "revenue": [1.0, 2, 3, 4, 5, 6] + [0.0] * 6,
            "session_id": "s",
        }
    )
    assignments = pd.DataFrame(
        {
            "user_id": ids,
            "experiment": "exp",
            "variant": ["treatment", "treatment", "control", "control", "control", "control"],
            "assigned_time": assigned,
            "propensity": [0.5, 0.5, 0.5, 0.5, 1.0, None],
        }
    )
    path = tmp_path / "unsupported.duckdb"
    write_store(path, events, assignments).close()
    spec = UserPolicySpec("exp", parse_outcome("revenue:2"), variant="treatment", folds=2)
    with Store(path, read_only=True) as store:
        result = evaluate_user_policy(store, spec)
    assert result.unsupported == 2 and result.unsupported_share == pytest.approx(2 / 6)
    assert result.rows == 4
    assert result.estimate("ipw").value == pytest.approx((1 / 0.5 + 2 / 0.5) / 4)
    assert result.logged_value == pytest.approx(3.5)


def test_outcome_parsing() -> None:
    assert parse_outcome(" Retention:0 ") == Outcome("retention", 0)
    assert parse_outcome("events:14").window_end_days == 14
    assert parse_outcome("retention:30").window_end_days == 31
    for bad in ("revenue", "revenue:0", "retention:x", "conversion:3", "events:-1"):
        with pytest.raises(TenureError):
            parse_outcome(bad)


def test_spec_needs_exactly_one_target() -> None:
    rule = Rule("r", (), "a")
    with pytest.raises(TenureError, match="either a variant or a rule"):
        UserPolicySpec("exp", Outcome("events", 7), variant="a", rule=rule)
    with pytest.raises(TenureError, match="either a variant or a rule"):
        UserPolicySpec("exp", Outcome("events", 7))


# --- the command line -----------------------------------------------------------------------------


def test_cli_json_contract(policy_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["whatif-users", "--db", str(policy_store), "--experiment", "exp", "--outcome", "revenue:10"]
    assert main([*base, "--variant", "treatment", "--format", "json", "--folds", "2"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert list(payload) == [
        "target",
        "rows",
        "logged_value",
        "ess",
        "max_weight",
        "unsupported_share",
        "estimates",
    ]
    assert payload["target"] == "treatment"
    assert [e["estimator"] for e in payload["estimates"]] == ["aipw", "ipw", "hajek"]
    assert set(payload["estimates"][0]) == {"estimator", "value", "ci_low", "ci_high"}
    low, value, high = (payload["estimates"][0][k] for k in ("ci_low", "value", "ci_high"))
    assert low < value < high

    assert main([*base, "--variant", "treatment", "--format", "json", "--estimator", "ipw", "--details"]) == 0
    detailed = json.loads(capsys.readouterr().out)
    assert [e["estimator"] for e in detailed["estimates"]] == ["ipw"]
    assert detailed["estimates"][0]["value"] == pytest.approx(payload["estimates"][1]["value"])
    assert {"policies", "differences", "survival", "incomplete"} <= set(detailed)
    assert "naive" in {row["estimator"] for row in detailed["differences"]}
    assert {row["policy"] for row in detailed["survival"]} == {"everyone treatment", "everyone control"}

    assert main([*base, "--variant", "control"]) == 0
    assert "aipw:" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra",
    [
        ["--variant", "purple", "--outcome", "revenue:10"],
        ["--variant", "control", "--outcome", "revenue"],
        ["--variant", "control", "--outcome", "revenue:10", "--folds", "1"],
        ["--rule", "/nonexistent/rule.csv", "--outcome", "revenue:10"],
    ],
)
def test_cli_bad_input_exits_2(
    policy_store: Path, capsys: pytest.CaptureFixture[str], extra: list[str]
) -> None:
    assert main(["whatif-users", "--db", str(policy_store), "--experiment", "exp", *extra]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error


def test_cli_refuses_both_targets(policy_store: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "whatif-users",
                "--db",
                str(policy_store),
                "--experiment",
                "exp",
                "--variant",
                "control",
                "--rule",
                "r.csv",
                "--outcome",
                "events:3",
            ]
        )
    assert exit_info.value.code == 2


def test_cli_unknown_experiment(policy_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "whatif-users",
                "--db",
                str(policy_store),
                "--experiment",
                "nope",
                "--variant",
                "a",
                "--outcome",
                "events:3",
            ]
        )
        == 2
    )
    assert "experiment 'nope'" in capsys.readouterr().err


# --- the sample store: estimates against the simulator's counterfactual truth --------------------


@pytest.fixture(scope="module")
def sample_store() -> Store:
    path = Path(__file__).resolve().parents[1] / "sample_data" / "tenure.duckdb"
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make sample-data` (make test builds it)")
    with Store(path, read_only=True) as store:
        yield store


@pytest.mark.slow
@pytest.mark.parametrize(
    ("text", "column"), [("retention:30", "retention_30d"), ("revenue:90", "revenue_90d_per_user")]
)
def test_sample_policy_values_against_truth(sample_store: Store, text: str, column: str) -> None:
    truth = sample_store.query_df(f"SELECT policy, {column} AS value FROM truth.policy_values").set_index(
        "policy"
    )["value"]
    spec = UserPolicySpec("rec_policy", parse_outcome(text), variant="personalised")
    result = evaluate_user_policy(sample_store, spec)
    policies = result.policies[result.policies["estimator"] == "aipw"].set_index("policy")
    for policy in ("popularity", "personalised"):
        row = policies.loc[f"everyone {policy}"]
        assert row["ci_low"] <= truth[policy] <= row["ci_high"], (policy, row.to_dict(), truth[policy])
    differences = result.differences.set_index("estimator")
    true_difference = truth["personalised"] - truth["popularity"]
    aipw = differences.loc["aipw"]
    assert aipw["ci_low"] <= true_difference <= aipw["ci_high"]
    if text == "retention:30":
        naive = differences.loc["naive", "value"]
        assert abs(naive - true_difference) > 1.5 * abs(aipw["value"] - true_difference), (
            naive,
            aipw["value"],
        )


def test_rule_from_editor_rows_round_trips_through_the_url() -> None:
    """Editor rows (with the blanks a table editor leaves) -> CSV text -> URL form -> the same rule."""
    edited = pd.DataFrame(
        [("plan", " pro ", "b"), (np.nan, np.nan, np.nan), ("country", "US, CA", "b"), ("*", "*", "a")],
        columns=["attribute", "value", "variant"],
    )
    text = rule_text_from_rows(edited.itertuples(index=False))
    rule = parse_rule(text)
    assert [(c.attribute, c.value, c.variant) for c in rule.conditions] == [
        ("plan", "pro", "b"),
        ("country", "US, CA", "b"),
    ]
    assert rule.default == "a"
    linked = rule_from_query_param(rule_to_query_param(text))
    assert linked.to_text() == rule.to_text()
    with pytest.raises(TenureError, match="URL parameter 'rule'"):
        rule_from_query_param("plan,pro,b")  # no default row


def test_rules_doctests() -> None:
    assert doctest.testmod(core.whatif.rules).failed == 0
