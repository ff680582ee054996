"""Tests of core/evaluation.py against scikit-learn, scipy and plain pandas references."""

from __future__ import annotations

import doctest
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.calibration import calibration_curve
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    mean_absolute_error,
    mean_squared_error,
    roc_auc_score,
)
from sklearn.metrics import log_loss as sklearn_log_loss

import core.evaluation as evaluation
from core.errors import TenureError
from core.evaluation import (
    ChurnMetrics,
    IsotonicCalibrator,
    LtvMetrics,
    TemperatureCalibrator,
    backtest_dates,
    brier_score,
    decile_table,
    evaluate_churn,
    evaluate_ltv,
    expected_calibration_error,
    log_loss,
    logits_from_probabilities,
    mae,
    metrics_table,
    normalized_gini,
    pr_auc,
    reliability_table,
    rmse,
    roc_auc,
    spearman,
    top_decile_lift,
    top_share_captured,
    user_split,
    write_metrics_json,
)


def churn_data(seed: int, n: int = 2000, levels: int | None = 20) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities with many ties (probabilities rounded to ``levels`` values)."""
    rng = np.random.default_rng(seed)
    p = rng.beta(2, 3, n)
    if levels is not None:
        p = np.round(p * levels) / levels
    y = (rng.random(n) < p).astype(float)
    return y, p


def ltv_data(seed: int, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Zero-inflated actual values and predictions with ties."""
    rng = np.random.default_rng(seed)
    signal = rng.gamma(1.0, 10.0, n)
    actual = np.where(rng.random(n) < 0.6, 0.0, np.round(signal * rng.lognormal(0, 0.5, n), 1))
    predicted = np.round(signal + rng.normal(0, 5, n)).clip(0)
    return actual, predicted


def test_doctests() -> None:
    assert doctest.testmod(evaluation).failed == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_churn_metrics_match_sklearn(seed: int) -> None:
    y, p = churn_data(seed)
    assert len(np.unique(p)) < 25
    assert roc_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert pr_auc(y, p) == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert brier_score(y, p) == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    assert log_loss(y, p) == pytest.approx(sklearn_log_loss(y, p), abs=1e-12)


def test_churn_metrics_without_ties_and_shuffled() -> None:
    y, p = churn_data(3, n=500, levels=None)
    assert roc_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert pr_auc(y, p) == pytest.approx(average_precision_score(y, p), abs=1e-12)
    y2, p2 = churn_data(4, n=500)
    order = np.random.default_rng(0).permutation(500)
    assert pr_auc(y2, p2) == pytest.approx(pr_auc(y2[order], p2[order]), abs=1e-12)
    assert top_decile_lift(y2, p2) == pytest.approx(top_decile_lift(y2[order], p2[order]), abs=1e-12)


def test_log_loss_clips_certain_mistakes_like_sklearn() -> None:
    y = np.array([1.0, 0.0, 1.0, 0.0])
    p = np.array([0.0, 1.0, 1.0, 0.0])
    assert log_loss(y, p) == pytest.approx(sklearn_log_loss(y, p), rel=1e-12)
    assert log_loss(y, p) == pytest.approx(-math.log(np.finfo(float).eps) / 2, rel=1e-9)


def test_single_class_and_bad_inputs() -> None:
    ones = np.ones(5)
    p = np.linspace(0.1, 0.9, 5)
    assert math.isnan(roc_auc(ones, p))
    assert math.isnan(roc_auc(np.zeros(5), p))
    assert math.isnan(pr_auc(np.zeros(5), p))
    assert pr_auc(ones, p) == pytest.approx(1.0)
    assert math.isnan(top_decile_lift(np.zeros(5), p))
    metrics = evaluate_churn(np.zeros(5), p)
    assert math.isnan(metrics.roc_auc) and metrics.brier == pytest.approx(np.mean(p**2))
    with pytest.raises(TenureError):
        roc_auc([0, 1], [0.5])
    with pytest.raises(TenureError):
        brier_score([0, 2], [0.5, 0.5])
    with pytest.raises(TenureError):
        brier_score([0, 1], [0.5, 1.5])
    with pytest.raises(TenureError):
        log_loss([], [])
    with pytest.raises(TenureError):
        mae([1.0, np.nan], [1.0, 2.0])


@pytest.mark.parametrize("seed", [0, 5])
def test_reliability_table_matches_calibration_curve(seed: int) -> None:
    y, p = churn_data(seed, levels=None)
    p[:10] = [0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0, 0.4, 0.6]  # on bin edges
    table = reliability_table(y, p, bins=10)
    observed, predicted = calibration_curve(y, p, n_bins=10, strategy="uniform")
    filled = table[table["users"] > 0]
    np.testing.assert_allclose(filled["observed_rate"], observed, atol=1e-12)
    np.testing.assert_allclose(filled["mean_predicted"], predicted, atol=1e-12)
    assert table["users"].sum() == len(y)
    # the bins by hand: bin 0 = [0, 0.1], bin k = (k/10, (k+1)/10]
    edges = np.linspace(0, 1, 11)
    by_hand = pd.Series(np.maximum(np.ceil(p * 10 - 1e-12) - 1, 0)).value_counts().sort_index()
    by_hand.index = by_hand.index.astype(int)
    assert table.set_index("bin")["users"][by_hand.index].tolist() == by_hand.tolist()
    assert table.loc[1, "lower"] == edges[1]
    churned = int(filled["churned"].iloc[0])
    users = int(filled["users"].iloc[0])
    rate = churned / users
    z = stats.norm.ppf(0.975)
    centre = (rate + z**2 / (2 * users)) / (1 + z**2 / users)
    half = z * math.sqrt(rate * (1 - rate) / users + z**2 / (4 * users**2)) / (1 + z**2 / users)
    assert filled["ci_lower"].iloc[0] == pytest.approx(centre - half, abs=1e-12)
    assert filled["ci_upper"].iloc[0] == pytest.approx(centre + half, abs=1e-12)


def test_expected_calibration_error_against_pandas() -> None:
    y, p = churn_data(7, levels=None)
    frame = pd.DataFrame({"y": y, "p": p, "bin": pd.cut(p, np.linspace(0, 1, 11), include_lowest=True)})
    grouped = frame.groupby("bin", observed=True).agg(
        n=("y", "size"), rate=("y", "mean"), mean_p=("p", "mean")
    )
    reference = float((grouped["n"] / len(y) * (grouped["rate"] - grouped["mean_p"]).abs()).sum())
    assert expected_calibration_error(y, p) == pytest.approx(reference, abs=1e-12)
    assert expected_calibration_error([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.0


def top_reference(values: np.ndarray, scores: np.ndarray, share: float) -> float:
    """Expected sum of values over the top ceil(share n) scores under random tie order (pandas)."""
    k = math.ceil(round(share * len(values), 9))
    groups = (
        pd.DataFrame({"v": values, "s": scores})
        .groupby("s")
        .agg(total=("v", "sum"), users=("v", "size"))
        .sort_index(ascending=False)
    )
    before = groups["users"].cumsum() - groups["users"]
    taken = (k - before).clip(lower=0, upper=groups["users"])
    return float((groups["total"] * taken / groups["users"]).sum())


@pytest.mark.parametrize("seed", [0, 1])
def test_top_decile_lift_against_pandas(seed: int) -> None:
    y, p = churn_data(seed, n=1003)
    k = math.ceil(0.1 * 1003)
    expected = (top_reference(y, p, 0.1) / k) / y.mean()
    assert top_decile_lift(y, p) == pytest.approx(expected, rel=1e-12)
    y_unique, p_unique = churn_data(seed, n=1000, levels=None)
    top = pd.DataFrame({"y": y_unique, "p": p_unique}).nlargest(100, "p")
    assert top_decile_lift(y_unique, p_unique) == pytest.approx(top["y"].mean() / y_unique.mean(), rel=1e-12)
    # ties at the cut: 1 place left among 4 tied users, 2 of them churned -> weight 1/4 each
    y_tie = np.array([1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], dtype=float)
    p_tie = np.array([0.9, 0.5, 0.5, 0.5, 0.5] + [0.1] * 15)
    assert top_decile_lift(y_tie, p_tie) == pytest.approx(((1 + 2 / 4) / 2) / (3 / 20))


@pytest.mark.parametrize("seed", [0, 1])
def test_top_share_captured_against_pandas(seed: int) -> None:
    actual, predicted = ltv_data(seed, n=997)
    expected = top_reference(actual, predicted, 0.1) / actual.sum()
    assert top_share_captured(actual, predicted) == pytest.approx(expected, rel=1e-12)
    assert top_share_captured(actual, predicted, 0.25) == pytest.approx(
        top_reference(actual, predicted, 0.25) / actual.sum(), rel=1e-12
    )
    assert top_share_captured(actual, actual) >= top_share_captured(actual, predicted)
    assert math.isnan(top_share_captured(np.zeros(5), np.arange(5.0)))
    with pytest.raises(TenureError):
        top_share_captured(actual, predicted, 0)


def gini_quadratic(actual: np.ndarray, predicted: np.ndarray) -> float:
    """O(n^2) normalized Gini: each user's expected position when ties are in random order."""

    def gini(a: np.ndarray, p: np.ndarray) -> float:
        n = len(a)
        greater = (p[None, :] > p[:, None]).sum(axis=1)
        tied = (p[None, :] == p[:, None]).sum(axis=1)
        position = greater + (tied + 1) / 2
        # sum_i L_i = sum_j a_j (n - position_j + 1) / total
        return float((a * (n - position + 1)).sum() / a.sum() / n - (n + 1) / (2 * n))

    return gini(actual, predicted) / gini(actual, actual)


def gini_kaggle(actual: np.ndarray, predicted: np.ndarray) -> float:
    """The Kaggle reference code (row order breaks ties); equal to ours without ties."""

    def gini(a: np.ndarray, p: np.ndarray) -> float:
        frame = pd.DataFrame({"a": a, "p": p, "i": np.arange(len(a))}).sort_values(
            ["p", "i"], ascending=[False, True]
        )
        total = frame["a"].sum()
        return (frame["a"].cumsum().sum() / total - (len(a) + 1) / 2.0) / len(a)

    return gini(actual, predicted) / gini(actual, actual)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_normalized_gini_against_references(seed: int) -> None:
    actual, predicted = ltv_data(seed, n=800)
    assert len(np.unique(predicted)) < 400
    assert normalized_gini(actual, predicted) == pytest.approx(gini_quadratic(actual, predicted), abs=1e-12)
    unique_predicted = predicted + np.random.default_rng(seed).random(800) * 1e-3
    assert normalized_gini(actual, unique_predicted) == pytest.approx(
        gini_kaggle(actual, unique_predicted), abs=1e-12
    )


def test_normalized_gini_known_values() -> None:
    actual, _ = ltv_data(9, n=500)
    assert normalized_gini(actual, actual) == pytest.approx(1.0)
    assert normalized_gini(actual, actual * 3 + 7) == pytest.approx(1.0)
    assert normalized_gini(actual, -actual) < -0.5
    assert normalized_gini(actual, np.full(500, 2.0)) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(normalized_gini(np.full(5, 3.0), np.arange(5.0)))
    assert math.isnan(normalized_gini(np.zeros(5), np.arange(5.0)))
    shuffled = np.random.default_rng(0).permutation(500)
    assert normalized_gini(actual, actual[shuffled]) == pytest.approx(
        normalized_gini(actual[np.argsort(shuffled)], actual), abs=1e-12
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_ltv_metrics_against_sklearn_and_scipy(seed: int) -> None:
    actual, predicted = ltv_data(seed)
    assert spearman(actual, predicted) == pytest.approx(
        stats.spearmanr(actual, predicted).statistic, abs=1e-12
    )
    assert mae(actual, predicted) == pytest.approx(mean_absolute_error(actual, predicted), abs=1e-12)
    assert rmse(actual, predicted) == pytest.approx(
        math.sqrt(mean_squared_error(actual, predicted)), abs=1e-12
    )
    assert math.isnan(spearman(actual, np.ones_like(actual)))


def test_decile_table_against_pandas() -> None:
    actual, predicted = ltv_data(4, n=1005)
    predicted = predicted + np.random.default_rng(4).random(1005) * 1e-3  # no ties
    table = decile_table(actual, predicted)
    frame = pd.DataFrame({"a": actual, "p": predicted}).sort_values("p", ascending=False)
    frame["decile"] = np.ceil(10 * np.arange(1, 1006) / 1005).astype(int)
    reference = frame.groupby("decile").agg(
        users=("a", "size"), mean_predicted=("p", "mean"), mean_actual=("a", "mean")
    )
    assert table["decile"].tolist() == list(range(1, 11))
    assert table["users"].tolist() == reference["users"].tolist()
    assert set(table["users"]) == {100, 101}
    np.testing.assert_allclose(table["mean_predicted"], reference["mean_predicted"], rtol=1e-12)
    np.testing.assert_allclose(table["mean_actual"], reference["mean_actual"], rtol=1e-12)
    assert table["share_of_actual"].sum() == pytest.approx(1.0)
    assert table["mean_predicted"].is_monotonic_decreasing


def test_decile_table_keeps_ties_together() -> None:
    predicted = np.array([5.0, 5.0, 5.0, 1.0, 0.0, 0.0])
    actual = np.arange(6.0)
    table = decile_table(actual, predicted, groups=3)
    # average ranks 2, 2, 2, 4, 5.5, 5.5 -> groups ceil(3 r / 6) = 1, 1, 1, 2, 3, 3
    assert table["users"].tolist() == [3, 1, 2]
    assert table["mean_actual"].tolist() == [1.0, 3.0, 4.5]


def test_user_split_deterministic_and_share() -> None:
    ids = [f"user{i}" for i in range(20000)]
    mask = user_split(ids, seed=3)
    assert mask.dtype == bool and mask.shape == (20000,)
    assert np.array_equal(mask, user_split(ids, seed=3))
    assert abs(mask.mean() - 0.2) < 4 * math.sqrt(0.16 / 20000)
    order = np.random.default_rng(0).permutation(20000)
    assert np.array_equal(user_split([ids[i] for i in order], seed=3), mask[order])
    other = user_split(ids, seed=4)
    assert abs(other.mean() - 0.2) < 4 * math.sqrt(0.16 / 20000)
    assert (other != mask).mean() > 0.2
    assert np.array_equal(user_split(range(100), seed=1), user_split([str(i) for i in range(100)], seed=1))
    assert abs(user_split(ids, test_share=0.5).mean() - 0.5) < 0.02
    with pytest.raises(TenureError):
        user_split(ids, test_share=1.0)


def test_backtest_dates() -> None:
    dates = backtest_dates("2024-07-01", 90)
    assert dates.eval_as_of == pd.Timestamp("2024-07-01")
    assert dates.train_as_of == pd.Timestamp("2024-07-01") - pd.Timedelta(days=90)
    train, evaluate = backtest_dates(pd.Timestamp("2024-07-01 12:00"), pd.Timedelta(days=30))
    assert (evaluate - train) == pd.Timedelta(days=30)
    with pytest.raises(TenureError):
        backtest_dates("2024-07-01", 0)


def overconfident_scores(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from sigmoid(z) and logits 3 z reported by an over-confident model."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)
    return 3 * z, y


def test_temperature_calibration_improves_held_out_scores() -> None:
    logits_fit, y_fit = overconfident_scores(0, 4000)
    logits_test, y_test = overconfident_scores(1, 4000)
    calibrator = TemperatureCalibrator().fit(logits_fit, y_fit)
    assert calibrator.temperature_ == pytest.approx(3.0, rel=0.15)
    assert calibrator.log_loss_after_ < calibrator.log_loss_before_
    raw = 1 / (1 + np.exp(-logits_test))
    calibrated = calibrator.transform(logits_test)
    assert log_loss(y_test, calibrated) < log_loss(y_test, raw) - 0.05
    assert expected_calibration_error(y_test, calibrated) < 0.5 * expected_calibration_error(y_test, raw)
    assert roc_auc(y_test, calibrated) == pytest.approx(roc_auc(y_test, raw), abs=1e-12)
    # the fitted T minimises the validation log loss: a grid cannot beat it
    grid = np.linspace(0.5, 6, 200)
    losses = [sklearn_log_loss(y_fit, 1 / (1 + np.exp(-logits_fit / t))) for t in grid]
    assert calibrator.log_loss_after_ <= min(losses) + 1e-9
    restored = TemperatureCalibrator.from_dict(json.loads(json.dumps(calibrator.to_dict())))
    np.testing.assert_array_equal(restored.transform(logits_test), calibrated)
    assert logits_from_probabilities([0.25]).tolist() == pytest.approx([math.log(1 / 3)])


def test_temperature_calibrator_needs_fit() -> None:
    with pytest.raises(TenureError):
        TemperatureCalibrator().transform([0.0])
    with pytest.raises(TenureError):
        IsotonicCalibrator.from_dict({"kind": "temperature"})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_isotonic_matches_sklearn(seed: int) -> None:
    y, p = churn_data(seed, n=1500, levels=50 if seed != 2 else None)
    calibrator = IsotonicCalibrator().fit(p, y)
    reference = IsotonicRegression(out_of_bounds="clip").fit(p, y)
    new_points = np.r_[np.random.default_rng(seed).random(500), 0.0, 1.0, p[:50]]
    np.testing.assert_allclose(calibrator.transform(new_points), reference.predict(new_points), atol=1e-12)
    np.testing.assert_allclose(calibrator.transform(p), reference.predict(p), atol=1e-12)
    assert np.all(np.diff(calibrator.y_thresholds_) >= 0)
    restored = IsotonicCalibrator.from_dict(json.loads(json.dumps(calibrator.to_dict())))
    np.testing.assert_array_equal(restored.transform(new_points), calibrator.transform(new_points))


def test_isotonic_calibration_improves_held_out_ece() -> None:
    logits_fit, y_fit = overconfident_scores(2, 4000)
    logits_test, y_test = overconfident_scores(3, 4000)
    raw_fit, raw_test = 1 / (1 + np.exp(-logits_fit)), 1 / (1 + np.exp(-logits_test))
    calibrated = IsotonicCalibrator().fit(raw_fit, y_fit).transform(raw_test)
    assert expected_calibration_error(y_test, calibrated) < 0.5 * expected_calibration_error(y_test, raw_test)
    assert brier_score(y_test, calibrated) < brier_score(y_test, raw_test)


def test_evaluate_table_and_json(tmp_path) -> None:
    y, p = churn_data(0)
    actual, predicted = ltv_data(0)
    churn = evaluate_churn(y, p)
    ltv = evaluate_ltv(actual, predicted)
    assert isinstance(churn, ChurnMetrics) and isinstance(ltv, LtvMetrics)
    assert churn.roc_auc == pytest.approx(roc_auc_score(y, p))
    assert churn.churn_rate == pytest.approx(y.mean()) and churn.users == len(y)
    assert ltv.rmse == pytest.approx(math.sqrt(mean_squared_error(actual, predicted)))
    assert ltv.top10_share_captured == pytest.approx(top_share_captured(actual, predicted, 0.1))
    no_churner = evaluate_churn(np.zeros(len(p)), p)
    results = {"btyd": (churn, ltv), "churn_only": (no_churner, None)}
    table = metrics_table(results)
    assert table["model"].tolist() == ["btyd", "churn_only"]
    assert len(table.columns) == 1 + len(ChurnMetrics._fields) + len(LtvMetrics._fields)
    assert table.loc[0, "churn_pr_auc"] == pytest.approx(average_precision_score(y, p))
    assert table.loc[0, "ltv_mae"] == pytest.approx(mean_absolute_error(actual, predicted))
    assert math.isnan(table.loc[1, "ltv_mae"]) and math.isnan(table.loc[1, "churn_roc_auc"])
    path = tmp_path / "metrics.json"
    write_metrics_json(path, results, {"as_of": pd.Timestamp("2024-07-01"), "horizon_days": 90})
    document = json.loads(path.read_text())
    assert "NaN" not in path.read_text()
    assert document["as_of"] == "2024-07-01T00:00:00" and document["horizon_days"] == 90
    assert document["models"]["btyd"]["churn"]["roc_auc"] == pytest.approx(churn.roc_auc)
    assert document["models"]["churn_only"]["ltv"] is None
    assert document["models"]["churn_only"]["churn"]["roc_auc"] is None
    with pytest.raises(TenureError):
        write_metrics_json(path, results, {"models": 1})
