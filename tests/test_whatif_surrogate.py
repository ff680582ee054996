"""The surrogate index: per-user surrogates and outcomes against a pandas walk of the events, the
model and weighted means against scikit-learn / numpy, unbiasedness and coverage on synthetic
data where the surrogacy assumption holds, and the backtest's mechanics on the sample store
(where the assumption fails for rec_policy: see docs/METRICS.md)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge

from core.cli import main as cli_main
from core.errors import TenureError
from core.store import Store
from core.whatif.surrogate import feature_matrix, surrogate_backtest, surrogate_estimate
from core.whatif.surrogate_data import SURROGATES, parse_outcome, surrogate_frame
from core.whatif.surrogate_model import IndexInputs, model_quality, surrogate_index

ORIGIN = dt.datetime(2026, 1, 1)
AS_OF = ORIGIN + dt.timedelta(days=150)
DAY = dt.timedelta(days=1)


def _hand_built_store(seed: int = 5, users: int = 60) -> tuple[Store, pd.DataFrame, pd.DataFrame]:
    """Random events over 200 days (so some fall after AS_OF), assignments of half the users, one
    user in both variants, one assigned after AS_OF, and boundary events at start + N days and
    start + 90 days exactly."""
    rng = np.random.default_rng(seed)
    events, assignments = [], []
    for index in range(users):
        user = f"u{index:03d}"
        first = ORIGIN + dt.timedelta(days=float(rng.uniform(0, 140)))
        for _ in range(int(rng.poisson(25))):
            offset = float(rng.exponential(30))
            name = str(rng.choice(["view", "click", "purchase"], p=[0.6, 0.3, 0.1]))
            revenue = float(rng.gamma(2, 5)) if name == "purchase" else None
            session = f"s{index}-{int(offset // 2)}" if rng.uniform() < 0.9 else None
            events.append((user, first + dt.timedelta(days=offset), name, revenue, session))
        events.append((user, first, "view", None, f"s{index}-first"))
        if index % 2 == 0:
            assigned = first + dt.timedelta(days=float(rng.choice([0.0, rng.uniform(0, 10)])))
            variant = "b" if rng.uniform() < 0.4 else "a"
            assignments.append((user, "exp", variant, assigned, 0.4 if variant == "b" else 0.6))
            events.append((user, assigned + 14 * DAY, "click", None, "edge-14"))
            events.append((user, assigned + 90 * DAY, "view", None, "edge-90"))
            events.append((user, assigned + 91 * DAY, "purchase", 7.0, "edge-91"))
    assignments.append(("u001", "exp", "a", ORIGIN + 10 * DAY, 0.6))
    assignments.append(("u001", "exp", "b", ORIGIN + 11 * DAY, 0.4))  # in both: not assigned
    assignments.append(("u003", "exp", "b", AS_OF + DAY, 0.4))  # assigned after AS_OF
    event_frame = pd.DataFrame(
        events, columns=["user_id", "event_time", "event_name", "revenue", "session_id"]
    )
    assignment_frame = pd.DataFrame(
        assignments, columns=["user_id", "experiment", "variant", "assigned_time", "propensity"]
    )
    user_frame = pd.DataFrame(  # noqa: F841  (read by DuckDB by name)
        {
            "user_id": [f"u{i:03d}" for i in range(users)],
            "country": [["US", "DE", None][i % 3] for i in range(users)],
        }
    )
    store = Store(":memory:")
    with store.transaction() as cursor:
        cursor.execute("ALTER TABLE users ADD COLUMN country VARCHAR")
        cursor.execute("INSERT INTO users (user_id, country) SELECT user_id, country FROM user_frame")
        cursor.execute("INSERT INTO assignments BY NAME SELECT * FROM assignment_frame")
        cursor.execute("INSERT INTO events BY NAME SELECT * FROM event_frame")
    return store, event_frame, assignment_frame


@pytest.fixture(scope="module")
def hand_built() -> tuple[Store, pd.DataFrame, pd.DataFrame]:
    store, events, assignments = _hand_built_store()
    yield store, events, assignments
    store.close()


def _pandas_walk(
    events: pd.DataFrame,
    assignments: pd.DataFrame,
    as_of: dt.datetime,
    days: int,
    outcome_days: int,
    kind: str,
) -> pd.DataFrame:
    """Per user, by hand: start, surrogates over [start, start + days), the outcome."""
    seen = events[events["event_time"] <= as_of]
    known = assignments[assignments["assigned_time"] <= as_of]
    several = known.groupby("user_id")["variant"].nunique()
    clean = known[known["user_id"].isin(several[several == 1].index)].sort_values("assigned_time")
    clean = clean.groupby("user_id").first()
    rows = []
    for user, own in seen.groupby("user_id"):
        first = own["event_time"].min()
        start = clean.loc[user, "assigned_time"] if user in clean.index else first
        elapsed = (own["event_time"] - start) / pd.Timedelta(days=1)
        window = own[(elapsed >= 0) & (elapsed < days)]
        window_elapsed = elapsed[(elapsed >= 0) & (elapsed < days)]
        if kind == "retention":
            outcome = float(((elapsed >= outcome_days) & (elapsed < outcome_days + 1)).any())
            end = outcome_days + 1
        else:
            outcome = float(own.loc[(elapsed >= 0) & (elapsed < outcome_days), "revenue"].fillna(0).sum())
            end = outcome_days
        rows.append(
            {
                "user_id": user,
                "variant": clean.loc[user, "variant"] if user in clean.index else None,
                "sessions": float(window["session_id"].dropna().nunique()),
                "clicks": float((window["event_name"] == "click").sum()),
                "purchases": float((window["event_name"] == "purchase").sum()),
                "revenue": float(window["revenue"].fillna(0).sum()),
                "active_days": float(np.floor(window_elapsed).nunique()),
                "events": float(len(window)),
                "tenure_days": (start - first) / pd.Timedelta(days=1),
                "outcome": outcome,
                "surrogates_complete": start + pd.Timedelta(days=days) <= as_of,
                "outcome_observed": start + pd.Timedelta(days=end) <= as_of,
            }
        )
    return pd.DataFrame(rows).sort_values("user_id").reset_index(drop=True)


@pytest.mark.parametrize(("outcome", "days"), [("retention:90", 14), ("revenue:90", 7), ("retention:30", 7)])
def test_surrogates_and_outcomes_match_a_pandas_walk(outcome: str, days: int, hand_built) -> None:
    store, events, assignments = hand_built
    spec = parse_outcome(outcome)
    frame = surrogate_frame(store, "exp", spec, days, pd.Timestamp(AS_OF))
    expected = _pandas_walk(events, assignments, AS_OF, days, spec.days, spec.kind)
    assert frame["user_id"].tolist() == expected["user_id"].tolist()
    for column in [*SURROGATES, "tenure_days", "outcome"]:
        np.testing.assert_allclose(frame[column], expected[column], atol=1e-9, err_msg=column)
    for column in ["surrogates_complete", "outcome_observed"]:
        assert frame[column].tolist() == expected[column].tolist(), column
    assert frame["variant"].fillna("-").tolist() == expected["variant"].fillna("-").tolist()
    assert frame.loc[frame["user_id"] == "u001", "variant"].isna().all()  # in both variants
    assert frame.loc[frame["user_id"] == "u003", "variant"].isna().all()  # assigned after as_of
    assert (frame["tenure_days"] > 0).any()


def test_backtest_outcome_reads_later_events_but_surrogates_do_not(hand_built) -> None:
    store, events, assignments = hand_built
    spec = parse_outcome("revenue:90")
    later = pd.Timestamp(AS_OF + 60 * DAY)
    frame = surrogate_frame(store, "exp", spec, 14, pd.Timestamp(AS_OF), outcome_end=later)
    then = _pandas_walk(events, assignments, AS_OF, 14, 90, "revenue")
    now = _pandas_walk(events, assignments, later.to_pydatetime(), 14, 90, "revenue").set_index("user_id")
    for column in SURROGATES:
        np.testing.assert_allclose(frame[column], then[column], atol=1e-9)
    known = frame["outcome_known"].to_numpy()
    assert known.any() and (~frame["outcome_observed"] & frame["outcome_known"]).any()
    np.testing.assert_allclose(
        frame.loc[known, "outcome"], now.loc[frame.loc[known, "user_id"], "outcome"], atol=1e-9
    )


def test_feature_matrix_one_hot_and_logs() -> None:
    frame = pd.DataFrame(
        {
            **{s: [0.0, 3.0, 1.0] for s in SURROGATES},
            "tenure_days": [0.0, 2.0, 0.0],
            "country": ["US", None, "US"],
        }
    )
    features, names = feature_matrix(frame, ["country"])
    assert names[-1] == "country=US" and features.shape == (3, 2 * len(SURROGATES) + 2)
    np.testing.assert_allclose(features[:, 0], np.log1p([0.0, 3.0, 1.0]))
    np.testing.assert_allclose(features[:, len(SURROGATES)], [0.0, 1.0, 1.0])
    np.testing.assert_allclose(features[:, -1], [1.0, 0.0, 1.0])


def test_predictions_match_sklearn_ridge_and_means_match_numpy() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(size=(300, 4)) * [1.0, 3.0, 0.5, 2.0]
    outcome = train @ [0.5, -0.2, 1.0, 0.3] + rng.normal(size=300) + 2
    recent = rng.normal(size=(120, 4))
    variant = np.where(rng.uniform(size=120) < 0.5, "a", "b")
    propensity = rng.uniform(0.2, 0.8, size=120)
    inputs = IndexInputs(train, outcome, recent, variant, 1 / propensity, recent_actual=recent[:, 0])
    result = surrogate_index(inputs, ["a", "b"], "a", is_rate=False, resamples=50, penalty=3.0)
    scale = train.std(axis=0)
    reference = Ridge(alpha=3.0).fit((train - train.mean(0)) / scale, outcome)
    expected = np.maximum(reference.predict((recent - train.mean(0)) / scale), 0)
    np.testing.assert_allclose(result.predictions, expected, rtol=1e-9, atol=1e-9)
    for name in ("a", "b"):
        mask = variant == name
        row = result.estimates.set_index("variant").loc[name]
        assert row["estimate"] == pytest.approx(np.average(expected[mask], weights=1 / propensity[mask]))
        assert row["actual"] == pytest.approx(np.average(recent[mask, 0], weights=1 / propensity[mask]))
        assert row["users"] == mask.sum()
        assert row["ci_low"] < row["estimate"] < row["ci_high"]
    difference = result.differences.iloc[0]
    estimates = result.estimates.set_index("variant")["estimate"]
    assert difference["estimate"] == pytest.approx(estimates["b"] - estimates["a"])


def test_model_quality_r2_and_auc() -> None:
    outcome = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    predicted = np.array([0.1, 0.8, 0.4, 0.5, 0.9])
    quality = model_quality(outcome, predicted, is_rate=True)
    residual = ((outcome - predicted) ** 2).sum()
    assert quality["r2"] == pytest.approx(1 - residual / ((outcome - outcome.mean()) ** 2).sum())
    assert quality["auc"] == pytest.approx(5 / 6)  # 5 of the 6 (positive, negative) pairs in order


def _synthetic(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Users with an attribute x, a variant drawn with a propensity that depends on x, two
    surrogates moved by the variant, and an outcome that depends on the surrogates and x only."""
    x = (rng.uniform(size=n) < 0.4).astype(float)
    p_b = np.where(x == 1, 0.7, 0.3)
    is_b = rng.uniform(size=n) < p_b
    surrogates = np.column_stack(
        [1.0 + 0.8 * is_b + 1.5 * x + rng.normal(size=n), 2.0 - 0.5 * is_b + rng.normal(size=n)]
    )
    outcome = 1.0 + 2.0 * surrogates[:, 0] + 1.0 * surrogates[:, 1] + 3.0 * x + rng.normal(scale=2.0, size=n)
    propensity = np.where(is_b, p_b, 1 - p_b)
    return np.column_stack([surrogates, x]), outcome, np.where(is_b, "b", "a"), propensity


def test_unbiased_and_covering_when_surrogacy_holds() -> None:
    # E[Y | do(V)] = 1 + 2 (1 + 0.8 b + 1.5 E[x]) + (2 - 0.5 b) + 3 E[x], E[x] = 0.4.
    truth = {"a": 1 + 2 * (1 + 0.6) + 2 + 1.2, "b": 1 + 2 * (1.8 + 0.6) + 1.5 + 1.2}
    truth_difference = truth["b"] - truth["a"]
    errors, covered = [], []
    for seed in range(120):
        rng = np.random.default_rng(seed)
        train_features, train_outcome, _, _ = _synthetic(rng, 800)
        recent_features, _, variant, propensity = _synthetic(rng, 600)
        inputs = IndexInputs(train_features, train_outcome, recent_features, variant, 1 / propensity)
        result = surrogate_index(
            inputs, ["a", "b"], "a", is_rate=False, resamples=200, seed=seed, penalty=1e-6
        )
        rows = result.estimates.set_index("variant")
        difference = result.differences.iloc[0]
        errors.append([rows.loc["a", "estimate"] - truth["a"], difference["estimate"] - truth_difference])
        covered.append(
            [
                rows.loc["a", "ci_low"] <= truth["a"] <= rows.loc["a", "ci_high"],
                rows.loc["b", "ci_low"] <= truth["b"] <= rows.loc["b", "ci_high"],
                difference["ci_low"] <= truth_difference <= difference["ci_high"],
            ]
        )
    errors = np.array(errors)
    # Unbiased: the mean error over seeds is within 3 standard errors of 0.
    assert (np.abs(errors.mean(axis=0)) < 3 * errors.std(axis=0) / np.sqrt(len(errors))).all()
    coverage = np.array(covered).mean(axis=0)
    assert ((coverage > 0.89) & (coverage < 0.99)).all(), coverage


def test_unweighted_mean_is_biased_when_assignment_depends_on_x() -> None:
    """The weights matter: without them the same estimate misses the truth of variant a."""
    truth_a = 1 + 2 * 1.6 + 2 + 1.2
    rng = np.random.default_rng(1)
    train_features, train_outcome, _, _ = _synthetic(rng, 20_000)
    recent_features, _, variant, propensity = _synthetic(rng, 20_000)
    weighted = surrogate_index(
        IndexInputs(train_features, train_outcome, recent_features, variant, 1 / propensity),
        ["a", "b"],
        "a",
        is_rate=False,
        resamples=20,
    )
    plain = surrogate_index(
        IndexInputs(train_features, train_outcome, recent_features, variant, np.ones(len(variant))),
        ["a", "b"],
        "a",
        is_rate=False,
        resamples=20,
    )
    assert abs(weighted.estimates["estimate"][0] - truth_a) < 0.1
    assert plain.estimates["estimate"][0] - truth_a < -0.5  # x (which raises Y) is rarer in a


def test_errors_name_the_problem(hand_built) -> None:
    store, _, _ = hand_built
    with pytest.raises(TenureError, match="experiment 'nope'"):
        surrogate_estimate(store, "nope", "retention:90")
    with pytest.raises(TenureError, match="surrogate days"):
        surrogate_estimate(store, "exp", "retention:7", surrogate_days=14)
    with pytest.raises(TenureError, match="not retention:D"):
        parse_outcome("conversion:90")
    with pytest.raises(TenureError, match="observed"):
        surrogate_estimate(store, "exp", "retention:90", as_of=ORIGIN + 20 * DAY)


def test_sample_estimate_rec_policy(sample_store: Store) -> None:
    result = surrogate_estimate(sample_store, "rec_policy", "retention:90", surrogate_days=14, resamples=100)
    rows = result.estimates.set_index("variant")
    assert result.weighting == "inverse propensity" and result.control == "personalised"
    assert set(rows.index) == {"personalised", "popularity"}
    assert (rows["ci_low"] < rows["estimate"]).all() and (rows["estimate"] < rows["ci_high"]).all()
    assert result.model_quality["auc"] > 0.7  # the first 14 days rank day-90 returners well
    # Recent users: assigned, their 14 days over, their day 90 not, by the data's end.
    end = sample_store.data_end()
    assigned = sample_store.query_df(
        "SELECT variant, assigned_time, propensity FROM assignments WHERE experiment = 'rec_policy'"
    )
    recent = assigned[
        (assigned["assigned_time"] + pd.Timedelta(days=14) <= end)
        & (assigned["assigned_time"] + pd.Timedelta(days=91) > end)
    ]
    assert rows["users"].to_dict() == recent["variant"].value_counts().to_dict()
    with pytest.raises(
        TenureError, match="every assigned user's outcome is already observed: read it directly"
    ):
        surrogate_estimate(sample_store, "onboarding_checklist", "retention:90", resamples=10)


def test_sample_backtest_actuals_match_the_events(sample_store: Store) -> None:
    """The backtest's actual values are the weighted day-90 retention of the users recent at the
    pretend end, computed here from the raw events."""
    table = surrogate_backtest(sample_store, "rec_policy", "retention:90", 14, back_days=120, resamples=100)
    as_of = table.attrs["as_of"]
    rows = sample_store.query_df(
        "SELECT a.user_id, a.variant, a.propensity, a.assigned_time, e.event_time FROM assignments a "
        "LEFT JOIN events e ON e.user_id = a.user_id AND e.event_time >= a.assigned_time + INTERVAL 90 DAY "
        "AND e.event_time < a.assigned_time + INTERVAL 91 DAY WHERE a.experiment = 'rec_policy' "
        "AND a.assigned_time + INTERVAL 14 DAY <= ? AND a.assigned_time + INTERVAL 91 DAY > ?",
        [as_of.to_pydatetime(), as_of.to_pydatetime()],
    )
    users = rows.groupby("user_id").agg(
        variant=("variant", "first"), propensity=("propensity", "first"), retained=("event_time", "count")
    )
    users["retained"] = (users["retained"] > 0).astype(float)
    values = table[table["quantity"] == "value"].set_index("variant")
    actual = {}
    for variant, own in users.groupby("variant"):
        actual[variant] = np.average(own["retained"], weights=1 / own["propensity"])
        assert values.loc[variant, "actual"] == pytest.approx(actual[variant])
        assert values.loc[variant, "users"] == len(own)
        assert values.loc[variant, "actual_ci_low"] < actual[variant] < values.loc[variant, "actual_ci_high"]
    difference = table[table["quantity"] == "difference"].iloc[0]
    assert difference["actual"] == pytest.approx(actual["popularity"] - actual["personalised"])
    inside = (table["ci_low"] <= table["actual"]) & (table["actual"] <= table["ci_high"])
    assert table["inside"].tolist() == inside.tolist()
    assert table.attrs["training_users"] > 1000


def test_cli_surrogate(sample_store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(
        ["surrogate", "--db", str(sample_store.path), "--experiment", "rec_policy", "--outcome", "revenue:90",
         "--resamples", "50", "--backtest", "--format", "csv"]
    )  # fmt: skip
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("quantity,variant,estimate,ci_low,ci_high,actual")
    assert len(lines) == 4
    assert cli_main(["surrogate", "--db", str(sample_store.path), "--experiment", "nope"]) == 2
