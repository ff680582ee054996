"""Points of the ROC and precision-recall curves, and LTV deciles, of models' evaluation predictions.

Definitions (docs/METRICS.md, "Comparing models"): users are ranked by predicted churn
probability; each distinct score s is a threshold "flag users with churn_prob >= s". At each
threshold, with TP, FP the churners and non-churners flagged, P and N all churners and
non-churners:

- ROC: false positive rate FP / N against true positive rate (recall) TP / P, from (0, 0) at
  threshold +inf to (1, 1); its trapezoidal area is ``core.evaluation.roc_auc``.
- PR: recall TP / P against precision TP / (TP + FP), from (recall 0, precision 1) at threshold
  +inf; the step-wise area sum (R_k - R_{k-1}) P_k is ``core.evaluation.pr_auc``.

Tied users enter together at one threshold. The points are those of scikit-learn's
``roc_curve(drop_intermediate=False)`` and ``precision_recall_curve`` (reversed).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from core.errors import TenureError
from core.evaluation import decile_table

ROC_COLUMNS = ("threshold", "fpr", "tpr")
PR_COLUMNS = ("threshold", "recall", "precision")


def _counts(y: ArrayLike, score: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Distinct thresholds (descending) and the true and false positives at or above each."""
    labels = np.asarray(y, dtype=float).ravel()
    scores = np.asarray(score, dtype=float).ravel()
    if labels.shape != scores.shape:
        raise TenureError(f"{labels.size} labels but {scores.size} scores", "pass one score per user")
    if not np.isin(labels, (0.0, 1.0)).all():
        raise TenureError("churn labels must be 0 or 1", "check the 'churned' column")
    if np.isnan(scores).any():
        raise TenureError("a churn probability is missing", "check the 'churn_prob' column")
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores = scores[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(sorted_scores) != 0), sorted_scores.size - 1].astype(int)
    true_positives = np.cumsum(labels[order])[last_of_tie] if labels.size else np.array([])
    false_positives = last_of_tie + 1.0 - true_positives
    positives = float(labels.sum())
    return sorted_scores[last_of_tie], true_positives, false_positives, positives, labels.size - positives


def roc_points(y: ArrayLike, score: ArrayLike) -> pd.DataFrame:
    """ROC curve points (module docstring), one row per threshold, highest first.

    Returns:
        DataFrame ``threshold, fpr, tpr`` starting at (+inf, 0, 0) and ending at (lowest score,
        1, 1); empty when the users are all churners or all non-churners (the curve is undefined).

    Example:
        >>> roc_points([0, 1, 1], [0.2, 0.9, 0.5])[["fpr", "tpr"]].values.tolist()
        [[0.0, 0.0], [0.0, 0.5], [0.0, 1.0], [1.0, 1.0]]
    """
    thresholds, true_positives, false_positives, positives, negatives = _counts(y, score)
    if positives == 0 or negatives == 0:
        return pd.DataFrame({name: pd.Series(dtype=float) for name in ROC_COLUMNS})
    return pd.DataFrame(
        {
            "threshold": np.r_[np.inf, thresholds],
            "fpr": np.r_[0.0, false_positives / negatives],
            "tpr": np.r_[0.0, true_positives / positives],
        }
    )


def pr_points(y: ArrayLike, score: ArrayLike) -> pd.DataFrame:
    """Precision-recall curve points (module docstring), one row per threshold, highest first.

    Returns:
        DataFrame ``threshold, recall, precision`` starting at (+inf, 0, 1); empty when there is
        no churner (recall is undefined).

    Example:
        >>> pr_points([0, 1, 1], [0.2, 0.9, 0.5])[["recall", "precision"]].values.round(3).tolist()
        [[0.0, 1.0], [0.5, 1.0], [1.0, 1.0], [1.0, 0.667]]
    """
    thresholds, true_positives, false_positives, positives, _ = _counts(y, score)
    if positives == 0:
        return pd.DataFrame({name: pd.Series(dtype=float) for name in PR_COLUMNS})
    return pd.DataFrame(
        {
            "threshold": np.r_[np.inf, thresholds],
            "recall": np.r_[0.0, true_positives / positives],
            "precision": np.r_[1.0, true_positives / (true_positives + false_positives)],
        }
    )


def _per_model(predictions: pd.DataFrame, by: str, build) -> pd.DataFrame:
    frames = [build(group).assign(**{by: name}) for name, group in predictions.groupby(by, sort=False)]
    if not frames:
        return pd.DataFrame()
    frame = pd.concat(frames, ignore_index=True)
    return frame[[by, *(column for column in frame.columns if column != by)]]


def roc_by_model(predictions: pd.DataFrame, by: str = "model") -> pd.DataFrame:
    """``roc_points`` of ``churned`` and ``churn_prob`` for each value of column ``by``."""
    return _per_model(predictions, by, lambda group: roc_points(group["churned"], group["churn_prob"]))


def pr_by_model(predictions: pd.DataFrame, by: str = "model") -> pd.DataFrame:
    """``pr_points`` of ``churned`` and ``churn_prob`` for each value of column ``by``."""
    return _per_model(predictions, by, lambda group: pr_points(group["churned"], group["churn_prob"]))


def deciles_by_model(predictions: pd.DataFrame, by: str = "model") -> pd.DataFrame:
    """``core.evaluation.decile_table`` of ``ltv_actual`` by ``ltv_pred`` for each value of ``by``."""
    return _per_model(predictions, by, lambda group: decile_table(group["ltv_actual"], group["ltv_pred"]))
