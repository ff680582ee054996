"""ROC and precision-recall points and LTV deciles (core/models/curves.py) against scikit-learn
and plain numpy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    auc,
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from core.errors import TenureError
from core.models import curves


def _sample(seed: int, users: int, tied: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, users)
    score = np.clip(0.35 * y + rng.normal(0.4, 0.25, users), 0, 1)
    return y, (np.round(score, 1) if tied else score)


@pytest.mark.parametrize(("seed", "tied"), [(0, False), (1, True), (2, True)])
def test_roc_points_are_sklearns(seed: int, tied: bool) -> None:
    y, score = _sample(seed, 400, tied)
    points = curves.roc_points(y, score)
    fpr, tpr, thresholds = roc_curve(y, score, drop_intermediate=False)
    np.testing.assert_allclose(points["fpr"], fpr)
    np.testing.assert_allclose(points["tpr"], tpr)
    np.testing.assert_array_equal(points["threshold"], thresholds)
    assert auc(points["fpr"], points["tpr"]) == pytest.approx(roc_auc_score(y, score))


@pytest.mark.parametrize(("seed", "tied"), [(3, False), (4, True)])
def test_pr_points_are_sklearns_reversed(seed: int, tied: bool) -> None:
    y, score = _sample(seed, 300, tied)
    points = curves.pr_points(y, score)
    precision, recall, thresholds = precision_recall_curve(y, score)
    np.testing.assert_allclose(points["precision"], precision[::-1])
    np.testing.assert_allclose(points["recall"], recall[::-1])
    np.testing.assert_array_equal(points["threshold"].iloc[1:], thresholds[::-1])
    assert np.isinf(points["threshold"].iloc[0])
    step_area = float(np.sum(np.diff(points["recall"]) * points["precision"].iloc[1:]))
    assert step_area == pytest.approx(average_precision_score(y, score))


def test_curves_are_empty_when_undefined_and_bad_input_is_named() -> None:
    assert curves.roc_points([1, 1, 1], [0.2, 0.3, 0.4]).empty
    assert curves.roc_points([0, 0], [0.2, 0.3]).empty
    assert curves.pr_points([0, 0], [0.2, 0.3]).empty
    assert not curves.pr_points([1, 1], [0.2, 0.3]).empty
    with pytest.raises(TenureError, match="0 or 1"):
        curves.roc_points([0, 2], [0.1, 0.2])
    with pytest.raises(TenureError, match="2 labels but 3 scores"):
        curves.pr_points([0, 1], [0.1, 0.2, 0.3])


def test_by_model_frames_hold_each_models_curve() -> None:
    first_y, first_score = _sample(5, 120, False)
    second_y, second_score = _sample(6, 80, True)
    predictions = pd.DataFrame(
        {
            "model_id": ["a"] * 120 + ["b"] * 80,
            "churned": np.r_[first_y, second_y],
            "churn_prob": np.r_[first_score, second_score],
        }
    )
    roc = curves.roc_by_model(predictions, by="model_id")
    assert list(roc.columns) == ["model_id", "threshold", "fpr", "tpr"]
    fpr, tpr, _ = roc_curve(second_y, second_score, drop_intermediate=False)
    np.testing.assert_allclose(roc.loc[roc["model_id"] == "b", "fpr"], fpr)
    np.testing.assert_allclose(roc.loc[roc["model_id"] == "b", "tpr"], tpr)
    pr = curves.pr_by_model(predictions, by="model_id")
    precision, _, _ = precision_recall_curve(first_y, first_score)
    np.testing.assert_allclose(pr.loc[pr["model_id"] == "a", "precision"], precision[::-1])


def test_deciles_by_model_split_users_into_tenths_by_prediction() -> None:
    rng = np.random.default_rng(7)
    predicted = rng.gamma(2.0, 10.0, 200)
    actual = predicted * rng.uniform(0.5, 1.5, 200)
    predictions = pd.DataFrame(
        {
            "model_id": ["m"] * 200,
            "ltv_pred": predicted,
            "ltv_actual": actual,
            "churned": 0,
            "churn_prob": 0.5,
        }
    )
    table = curves.deciles_by_model(predictions, by="model_id")
    order = np.argsort(-predicted)
    groups = np.array_split(order, 10)
    assert table["decile"].tolist() == list(range(1, 11))
    assert (table["users"] == 20).all()
    np.testing.assert_allclose(table["mean_predicted"], [predicted[group].mean() for group in groups])
    np.testing.assert_allclose(table["mean_actual"], [actual[group].mean() for group in groups])
