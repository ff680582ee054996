"""Evaluation of churn and lifetime-value models: splits, metrics, calibration.

Every model predicts, per user, ``churn_prob`` (the probability of no activity in [T, T + H)) and
``ltv_pred`` (revenue in [T, T + H)); see docs/METRICS.md, "Churn and lifetime value models".
This module scores those predictions against the observed labels, puts every model side by side
(``metrics_table``, ``write_metrics_json``) and recalibrates churn probabilities on validation data
(``TemperatureCalibrator``, ``IsotonicCalibrator``).

Conventions shared by the functions below:
- Inputs are 1-D array-likes of equal, non-zero length, one entry per user; churn labels are 0/1
  (1 = churned). Problems a user can fix (lengths differ, labels not 0/1, probabilities outside
  [0, 1], no users) raise ``TenureError``.
- A metric that is undefined for the data (ROC AUC with a single class, average precision with no
  positive, lift with no churner, Gini or captured share with zero total value, Spearman with a
  constant input) is NaN, not an error, so a table of several models still renders; NaN is written
  as ``null`` in ``metrics.json``.
- Ties in scores never depend on the order of the input rows: rank-based metrics use average ranks,
  and "top x%" metrics take the expected value over a uniformly random order of tied users.

Everything is numpy/scipy/pandas; tables are DataFrames with documented columns and scalars are
NamedTuples with named fields.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import optimize, stats
from scipy.special import expit

from core.errors import TenureError
from core.stats import wilson_interval

DEFAULT_BINS = 10
DEFAULT_TOP_SHARE = 0.1
LOG_LOSS_EPS = float(np.finfo(float).eps)


# ---------------------------------------------------------------------------------------------
# Input checks


def _as_vector(values: ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise TenureError(f"{name} must be one value per user (1-D), got shape {array.shape}")
    if array.size == 0:
        raise TenureError(f"{name} is empty", "evaluate on at least one user")
    if not np.all(np.isfinite(array)):
        raise TenureError(f"{name} holds NaN or infinite values", "drop or fill those users first")
    return array


def _pair(first: ArrayLike, second: ArrayLike, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    a = _as_vector(first, names[0])
    b = _as_vector(second, names[1])
    if a.size != b.size:
        raise TenureError(f"{names[0]} has {a.size} values but {names[1]} has {b.size}")
    return a, b


def _labels_and_scores(y: ArrayLike, score: ArrayLike, probabilities: bool) -> tuple[np.ndarray, np.ndarray]:
    labels, scores = _pair(y, score, ("y", "p" if probabilities else "score"))
    if not np.all((labels == 0) | (labels == 1)):
        raise TenureError("churn labels must be 0 or 1", "1 = churned, 0 = retained")
    if probabilities and (np.any(scores < 0) or np.any(scores > 1)):
        raise TenureError("probabilities must lie in [0, 1]", "pass churn_prob, not a logit or a score")
    return labels, scores


def _check_share(share: float) -> None:
    if not 0 < share <= 1:
        raise TenureError(f"share {share} is not in (0, 1]", "use e.g. 0.1 for the top 10%")


# ---------------------------------------------------------------------------------------------
# Splits


class BacktestDates(NamedTuple):
    """As-of dates of a backtest.

    Attributes:
        train_as_of: T - H. Features from events before it, labels from [T - H, T).
        eval_as_of: T. Features from events before it, labels from [T, T + H).
    """

    train_as_of: pd.Timestamp
    eval_as_of: pd.Timestamp


def user_split(user_ids: Iterable[Any], test_share: float = 0.2, seed: int = 0) -> np.ndarray:
    """Assign users to the test set by a seeded hash of their id.

    A user is in the test set when ``u < test_share``, with

        u = int.from_bytes(blake2b(f"{seed}:{user_id}".encode("utf-8"), digest_size=8).digest(), "big") / 2^64,

    a number uniform on [0, 1) for distinct ids. The assignment of a user depends only on its id
    (as ``str``) and the seed: it does not change with the order of the input, with other users
    being added or removed, or across machines and library versions (BLAKE2b is fixed by RFC 7693).
    The test share is therefore Binomial(n, test_share) / n, not exactly ``test_share``: within
    about 2 * sqrt(0.16 / n) of 0.2 (0.25 percentage points for 100,000 users).

    Args:
        user_ids: one id per user (any type; compared through ``str``).
        test_share: expected share of users in the test set, in (0, 1).
        seed: changes the assignment; the same seed gives the same split.

    Returns:
        Boolean array, True where the user is in the test set, in the order of ``user_ids``.

    References:
        J.-P. Aumasson, S. Neves, Z. Wilcox-O'Hearn, C. Winnerlein (2013), "BLAKE2: simpler, smaller,
        fast as MD5"; RFC 7693.

    Example:
        >>> user_split(["a", "b", "c"], seed=1).tolist() == user_split(["c", "a", "b"], seed=1)[[1, 2, 0]].tolist()
        True
    """
    if not 0 < test_share < 1:
        raise TenureError(f"test_share {test_share} is not between 0 and 1", "use e.g. 0.2")
    threshold = test_share * 2.0**64
    prefix = f"{int(seed)}:"
    return np.fromiter(
        (
            int.from_bytes(
                hashlib.blake2b((prefix + str(user_id)).encode("utf-8"), digest_size=8).digest(), "big"
            )
            < threshold
            for user_id in user_ids
        ),
        dtype=bool,
    )


def backtest_dates(as_of: datetime | str, horizon_days: int | float | timedelta) -> BacktestDates:
    """As-of dates for a backtest at T with horizon H: train at T - H, evaluate at T.

    The model is fitted with as-of date T - H, so its churn and LTV labels come from
    [T - H, T) and use no event at or after T; it is then evaluated on the users and labels of
    as-of date T (features before T, labels in [T, T + H)). The evaluation needs data up to T + H.
    Times are naive UTC, as everywhere in Tenure.

    Args:
        as_of: the evaluation as-of date T.
        horizon_days: the horizon H, in days (or a ``timedelta``); must be positive.

    Returns:
        ``BacktestDates(train_as_of=T - H, eval_as_of=T)``.

    Example:
        >>> backtest_dates("2024-07-01", 90).train_as_of
        Timestamp('2024-04-02 00:00:00')
    """
    horizon = horizon_days if isinstance(horizon_days, timedelta) else timedelta(days=float(horizon_days))
    if horizon <= timedelta(0):
        raise TenureError(f"horizon {horizon} is not positive", "use e.g. 90 days")
    eval_as_of = pd.Timestamp(as_of)
    if eval_as_of.tzinfo is not None:
        eval_as_of = eval_as_of.tz_convert("UTC").tz_localize(None)
    return BacktestDates(train_as_of=eval_as_of - horizon, eval_as_of=eval_as_of)


# ---------------------------------------------------------------------------------------------
# Churn metrics


def roc_auc(y: ArrayLike, score: ArrayLike) -> float:
    """Area under the ROC curve, from the Mann-Whitney U statistic.

    With ``n1`` churners, ``n0`` non-churners and ``R1`` the sum of the churners' ranks among all
    scores (ties get the average of the ranks they span),

        AUC = (R1 - n1 (n1 + 1) / 2) / (n1 n0),

    the probability that a random churner scores above a random non-churner, ties counting 1/2;
    equal to the trapezoidal area under the ROC curve. NaN when only one class is present.

    References:
        D. J. Hand, R. J. Till (2001), "A simple generalisation of the area under the ROC curve for
        multiple class classification problems", Machine Learning 45, 171-186, eq. (3).
        J. A. Hanley, B. J. McNeil (1982), Radiology 143(1), 29-36.

    Example:
        >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        0.75
    """
    labels, scores = _labels_and_scores(y, score, probabilities=False)
    positives = float(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        return math.nan
    ranks = stats.rankdata(scores, method="average")
    rank_sum = float(ranks[labels == 1].sum())
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def pr_auc(y: ArrayLike, score: ArrayLike) -> float:
    """Average precision: the step-wise area under the precision-recall curve.

    Sort users by score, highest first; at each distinct score s_k (a threshold "score >= s_k"),
    P_k and R_k are the precision and recall of the users at or above it. Then

        AP = sum_k (R_k - R_{k-1}) P_k,   R_0 = 0,

    without interpolation; tied users enter together at one threshold, so the order of rows does
    not matter. Same definition as scikit-learn's ``average_precision_score``. NaN when there is
    no churner.

    References:
        M. Zhu (2004), "Recall, precision and average precision", University of Waterloo;
        scikit-learn user guide, "Precision, recall and F-measures" (average precision).

    Example:
        >>> round(pr_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 4)
        0.8333
    """
    labels, scores = _labels_and_scores(y, score, probabilities=False)
    positives = float(labels.sum())
    if positives == 0:
        return math.nan
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores = scores[order]
    true_positives = np.cumsum(labels[order])
    last_of_tie = np.r_[np.flatnonzero(np.diff(sorted_scores) != 0), sorted_scores.size - 1]
    selected = last_of_tie + 1.0
    precision = true_positives[last_of_tie] / selected
    recall = true_positives[last_of_tie] / positives
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def brier_score(y: ArrayLike, p: ArrayLike) -> float:
    """Brier score: mean squared difference between probability and outcome.

        Brier = (1/n) sum_i (p_i - y_i)^2,   0 is perfect, 0.25 is a constant 0.5.

    References:
        G. W. Brier (1950), "Verification of forecasts expressed in terms of probability",
        Monthly Weather Review 78(1), 1-3.

    Example:
        >>> round(brier_score([0, 1], [0.2, 0.6]), 4)
        0.1
    """
    labels, probabilities = _labels_and_scores(y, p, probabilities=True)
    return float(np.mean((probabilities - labels) ** 2))


def log_loss(y: ArrayLike, p: ArrayLike, eps: float = LOG_LOSS_EPS) -> float:
    """Mean negative log-likelihood of the outcomes (natural log), probabilities clipped.

        LogLoss = -(1/n) sum_i [y_i ln q_i + (1 - y_i) ln(1 - q_i)],   q_i = clip(p_i, eps, 1 - eps).

    The default ``eps`` is the double-precision machine epsilon (2.22e-16), as scikit-learn's
    ``log_loss`` uses, so a confident wrong answer costs at most -ln(eps) = 36.04.

    References:
        C. M. Bishop (2006), "Pattern Recognition and Machine Learning", eq. (4.90) (cross-entropy).

    Example:
        >>> round(log_loss([0, 1], [0.2, 0.6]), 4)
        0.367
    """
    if not 0 < eps < 0.5:
        raise TenureError(f"eps {eps} is not in (0, 0.5)")
    labels, probabilities = _labels_and_scores(y, p, probabilities=True)
    clipped = np.clip(probabilities, eps, 1 - eps)
    return float(-np.mean(labels * np.log(clipped) + (1 - labels) * np.log1p(-clipped)))


def _bin_index(probabilities: np.ndarray, bins: int) -> np.ndarray:
    if int(bins) != bins or bins < 1:
        raise TenureError(f"bins {bins} is not a positive whole number", "use e.g. 10")
    inner_edges = np.linspace(0.0, 1.0, int(bins) + 1)[1:-1]
    return np.searchsorted(inner_edges, probabilities, side="left")


def reliability_table(
    y: ArrayLike, p: ArrayLike, bins: int = DEFAULT_BINS, confidence: float = 0.95
) -> pd.DataFrame:
    """Reliability diagram data: observed churn rate against mean predicted probability per bin.

    Bins are equal-width on [0, 1]: bin 0 is [0, 1/B], bin k >= 1 is (k/B, (k+1)/B] (edges from
    ``numpy.linspace(0, 1, B + 1)``; the same binning as scikit-learn's ``calibration_curve`` with
    ``strategy="uniform"``). Every bin is listed, empty ones with NaN means and intervals.

    Args:
        y: churn labels (1 = churned).
        p: predicted churn probabilities in [0, 1].
        bins: number of bins B.
        confidence: level of the Wilson interval of the observed rate.

    Returns:
        DataFrame, one row per bin, columns: ``bin`` (0..B-1), ``lower``, ``upper`` (bin edges),
        ``users``, ``churned``, ``mean_predicted``, ``observed_rate`` (churned / users),
        ``ci_lower``, ``ci_upper`` (Wilson interval of the observed rate,
        ``core.stats.wilson_interval``).

    References:
        M. H. DeGroot, S. E. Fienberg (1983), "The comparison and evaluation of forecasters",
        The Statistician 32, 12-22; C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger (2017), "On
        calibration of modern neural networks", ICML, section 2.

    Example:
        >>> table = reliability_table([0, 1, 1], [0.05, 0.95, 0.95], bins=2)
        >>> table[["bin", "users", "observed_rate"]].values.tolist()
        [[0.0, 1.0, 0.0], [1.0, 2.0, 1.0]]
    """
    labels, probabilities = _labels_and_scores(y, p, probabilities=True)
    index = _bin_index(probabilities, bins)
    bins = int(bins)
    users = np.bincount(index, minlength=bins).astype(float)
    churned = np.bincount(index, weights=labels, minlength=bins)
    predicted_sum = np.bincount(index, weights=probabilities, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_predicted = np.where(users > 0, predicted_sum / users, np.nan)
        observed_rate = np.where(users > 0, churned / users, np.nan)
    interval = wilson_interval(churned, users, confidence)
    edges = np.linspace(0.0, 1.0, bins + 1)
    return pd.DataFrame(
        {
            "bin": np.arange(bins),
            "lower": edges[:-1],
            "upper": edges[1:],
            "users": users.astype(np.int64),
            "churned": churned.round().astype(np.int64),
            "mean_predicted": mean_predicted,
            "observed_rate": observed_rate,
            "ci_lower": interval.lower,
            "ci_upper": interval.upper,
        }
    )


def expected_calibration_error(y: ArrayLike, p: ArrayLike, bins: int = DEFAULT_BINS) -> float:
    """Expected calibration error over equal-width probability bins, weighted by users.

        ECE = sum_k (n_k / n) |observed_rate_k - mean_predicted_k|,

    over the non-empty bins of ``reliability_table`` (bin 0 = [0, 1/B], bin k = (k/B, (k+1)/B]).
    0 for a perfectly calibrated model on that binning; it depends on B and, with few users per
    bin, is biased upwards by noise.

    References:
        M. P. Naeini, G. F. Cooper, M. Hauskrecht (2015), "Obtaining well calibrated probabilities
        using Bayesian binning", AAAI; C. Guo et al. (2017), "On calibration of modern neural
        networks", ICML, eq. (3).

    Example:
        >>> round(expected_calibration_error([0, 1, 1, 0], [0.2, 0.2, 0.9, 0.9], bins=2), 4)
        0.35
    """
    table = reliability_table(y, p, bins)
    filled = table[table["users"] > 0]
    weights = filled["users"] / filled["users"].sum()
    return float((weights * (filled["observed_rate"] - filled["mean_predicted"]).abs()).sum())


def _top_share_sum(values: np.ndarray, scores: np.ndarray, share: float) -> tuple[float, float]:
    """Expected sum of ``values`` over the top ``k = ceil(share n)`` scores, and ``k``.

    Users strictly above the k-th highest score count fully; the m users tied at that score fill
    the r remaining places, each counted with weight r / m (the expected value under a uniformly
    random order of tied users).
    """
    _check_share(share)
    count = values.size
    selected = max(1, math.ceil(share * count - 1e-9))
    cut = np.sort(scores)[::-1][selected - 1]
    above = scores > cut
    tied = scores == cut
    remaining = selected - int(above.sum())
    total = float(values[above].sum()) + remaining / int(tied.sum()) * float(values[tied].sum())
    return total, float(selected)


def top_decile_lift(y: ArrayLike, score: ArrayLike, share: float = DEFAULT_TOP_SHARE) -> float:
    """Churn rate among the users with the highest scores, divided by the overall churn rate.

        lift = (churners in top k / k) / (churners / n),   k = ceil(share * n).

    Ties at the cut: users strictly above the k-th highest score count fully, and the m users tied
    at it fill the r remaining places with weight r / m each, which is the expected lift under a
    random order of tied users (no dependence on row order). 1 means no better than random; the
    maximum is 1 / max(share, churn rate). NaN when nobody churned.

    References:
        G. Piatetsky-Shapiro, S. Steingold (2000), "Measuring lift quality in database marketing",
        SIGKDD Explorations 2(2), 76-80.

    Example:
        >>> top_decile_lift([1, 0, 0, 0, 0, 0, 0, 0, 0, 0], [0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
        10.0
    """
    labels, scores = _labels_and_scores(y, score, probabilities=False)
    overall = float(labels.mean())
    if overall == 0:
        return math.nan
    churners, selected = _top_share_sum(labels, scores, share)
    return (churners / selected) / overall


# ---------------------------------------------------------------------------------------------
# LTV metrics


def _gini_sum(actual: np.ndarray, predicted: np.ndarray) -> float:
    count = actual.size
    order = np.argsort(-predicted, kind="mergesort")
    sorted_predicted = predicted[order]
    group = np.r_[0, np.cumsum(np.diff(sorted_predicted) != 0)]
    group_mean = pd.Series(actual[order]).groupby(group).transform("mean").to_numpy()
    lorenz = np.cumsum(group_mean) / actual.sum()
    return float(lorenz.sum() / count - (count + 1) / (2 * count))


def normalized_gini(actual: ArrayLike, predicted: ArrayLike) -> float:
    """Normalized Gini coefficient of the actual values ordered by the predictions.

    Sort users by predicted value, highest first, and let L_i be the share of total actual value
    held by the first i users (the cumulative-gains curve). Then

        G(actual, predicted) = (1/n) sum_{i=1..n} L_i - (n + 1) / (2n),
        normalized Gini = G(actual, predicted) / G(actual, actual),

    the definition of the Kaggle insurance competitions (Allstate, Liberty Mutual, Porto Seguro):
    1 when the prediction orders users exactly as their actual values, about 0 for a random or
    constant ordering, negative for an ordering worse than random (not necessarily -1). Only the
    order of the predictions matters. Ties in ``predicted``: each tied group's actual values are
    replaced by the group mean before the cumulative sum, i.e. the curve passes straight through
    the group, which is the expected value of G over random orders of tied users (the Kaggle
    reference code instead keeps the row order). NaN when G(actual, actual) is 0 or the total
    actual value is not positive.

    References:
        Kaggle, "Liberty Mutual Group: Property Inspection Prediction" (2015) and "Porto Seguro's
        Safe Driver Prediction" (2017), evaluation: normalized Gini; E. W. Frees, G. Meyers,
        A. D. Cummings (2011), "Summarizing insurance scores using a Gini index", JASA 106(495).

    Example:
        >>> normalized_gini([1, 2, 3, 10], [1, 2, 3, 4])
        1.0
        >>> normalized_gini([1, 2, 3, 10], [5, 5, 5, 5])
        0.0
    """
    actual_values, predicted_values = _pair(actual, predicted, ("actual", "predicted"))
    if actual_values.sum() <= 0:
        return math.nan
    best = _gini_sum(actual_values, actual_values)
    if best == 0:
        return math.nan
    return _gini_sum(actual_values, predicted_values) / best


def spearman(actual: ArrayLike, predicted: ArrayLike) -> float:
    """Spearman rank correlation: the Pearson correlation of the average ranks.

        rho = cov(rank(actual), rank(predicted)) / (sd(rank(actual)) sd(rank(predicted))),

    ties getting the average of the ranks they span (``scipy.stats.spearmanr``). NaN when either
    input is constant.

    References:
        C. Spearman (1904), "The proof and measurement of association between two things",
        American Journal of Psychology 15(1), 72-101.

    Example:
        >>> round(spearman([1, 2, 3, 4], [10, 20, 30, 25]), 4)
        0.8
    """
    actual_values, predicted_values = _pair(actual, predicted, ("actual", "predicted"))
    if np.ptp(actual_values) == 0 or np.ptp(predicted_values) == 0:
        return math.nan
    return float(stats.spearmanr(actual_values, predicted_values).statistic)


def mae(actual: ArrayLike, predicted: ArrayLike) -> float:
    """Mean absolute error, in the revenue unit: (1/n) sum_i |predicted_i - actual_i|.

    References:
        R. J. Hyndman, A. B. Koehler (2006), "Another look at measures of forecast accuracy",
        International Journal of Forecasting 22(4), 679-688.

    Example:
        >>> mae([1, 2, 3], [2, 2, 5])
        1.0
    """
    actual_values, predicted_values = _pair(actual, predicted, ("actual", "predicted"))
    return float(np.mean(np.abs(predicted_values - actual_values)))


def rmse(actual: ArrayLike, predicted: ArrayLike) -> float:
    """Root mean squared error, in the revenue unit: sqrt((1/n) sum_i (predicted_i - actual_i)^2).

    References:
        R. J. Hyndman, A. B. Koehler (2006), International Journal of Forecasting 22(4), 679-688.

    Example:
        >>> rmse([0, 0], [3, 4])
        3.5355339059327378
    """
    actual_values, predicted_values = _pair(actual, predicted, ("actual", "predicted"))
    return float(np.sqrt(np.mean((predicted_values - actual_values) ** 2)))


def decile_table(actual: ArrayLike, predicted: ArrayLike, groups: int = 10) -> pd.DataFrame:
    """Decile chart: mean predicted and mean actual value per decile of the prediction.

    Decile 1 holds the highest predictions. With r_i the rank of user i by predicted value,
    highest first, ties getting the average of the ranks they span, the decile is

        decile_i = clip(ceil(groups * r_i / n), 1, groups),

    so without ties deciles hold n/10 users (rounded, sizes differing by at most one) and tied
    users always share a decile (sizes may then differ more). Empty deciles are not listed.

    Args:
        actual: observed values (e.g. revenue in [T, T + H)).
        predicted: predicted values.
        groups: number of groups (10 for deciles).

    Returns:
        DataFrame, one row per non-empty decile, ordered 1..groups, columns: ``decile``, ``users``,
        ``mean_predicted``, ``mean_actual``, ``total_actual``, ``share_of_actual`` (total_actual /
        total of actual over all users; NaN when that total is 0).

    References:
        G. Linoff, M. Berry (2011), "Data Mining Techniques", 3rd ed., Wiley, ch. 5 (lift and
        gains charts).

    Example:
        >>> decile_table([5, 0, 1, 2], [4, 1, 2, 3], groups=2)["mean_actual"].tolist()
        [3.5, 0.5]
    """
    actual_values, predicted_values = _pair(actual, predicted, ("actual", "predicted"))
    if int(groups) != groups or groups < 1:
        raise TenureError(f"groups {groups} is not a positive whole number", "use 10 for deciles")
    groups = int(groups)
    count = actual_values.size
    ranks = stats.rankdata(-predicted_values, method="average")
    decile = np.clip(np.ceil(groups * ranks / count - 1e-9), 1, groups).astype(np.int64)
    frame = pd.DataFrame({"decile": decile, "predicted": predicted_values, "actual": actual_values})
    table = (
        frame.groupby("decile", sort=True)
        .agg(
            users=("actual", "size"),
            mean_predicted=("predicted", "mean"),
            mean_actual=("actual", "mean"),
            total_actual=("actual", "sum"),
        )
        .reset_index()
    )
    total = float(actual_values.sum())
    table["share_of_actual"] = table["total_actual"] / total if total != 0 else math.nan
    return table


def top_share_captured(actual: ArrayLike, predicted: ArrayLike, share: float = DEFAULT_TOP_SHARE) -> float:
    """Share of the total actual value held by the users with the highest predictions.

        captured = (sum of actual over the top k predicted users) / (sum of actual),
        k = ceil(share * n).

    Ties at the cut follow the rule of ``top_decile_lift`` (users tied at the k-th highest
    prediction fill the remaining places with equal fractional weight). Compare with ``share``
    (random ordering) and with the same figure for a perfect ordering. NaN when the total actual
    value is not positive.

    References:
        G. Linoff, M. Berry (2011), "Data Mining Techniques", ch. 5 (cumulative gains).

    Example:
        >>> top_share_captured([10, 0, 0, 0, 0, 0, 0, 0, 0, 10], [9, 1, 1, 1, 1, 1, 1, 1, 1, 1])
        0.5
    """
    actual_values, predicted_values = _pair(actual, predicted, ("actual", "predicted"))
    total = float(actual_values.sum())
    if total <= 0:
        _check_share(share)
        return math.nan
    captured, _ = _top_share_sum(actual_values, predicted_values, share)
    return captured / total


# ---------------------------------------------------------------------------------------------
# Metric sets and the side-by-side table


class ChurnMetrics(NamedTuple):
    """Churn metrics of one model on one set of users.

    Attributes:
        users: number of users scored.
        churn_rate: observed share of churners.
        roc_auc: ``roc_auc`` (NaN with a single class).
        pr_auc: average precision, ``pr_auc`` (NaN without churners).
        brier: ``brier_score``.
        log_loss: ``log_loss`` (clipped at machine epsilon).
        ece: ``expected_calibration_error`` over 10 equal-width bins.
        top_decile_lift: ``top_decile_lift`` of the top 10% (NaN without churners).
    """

    users: int
    churn_rate: float
    roc_auc: float
    pr_auc: float
    brier: float
    log_loss: float
    ece: float
    top_decile_lift: float


class LtvMetrics(NamedTuple):
    """Lifetime-value metrics of one model on one set of users.

    Attributes:
        users: number of users scored.
        mean_actual: mean observed value.
        mean_predicted: mean predicted value.
        normalized_gini: ``normalized_gini``.
        spearman: ``spearman``.
        mae: ``mae``.
        rmse: ``rmse``.
        top10_share_captured: ``top_share_captured`` with share 0.1.
    """

    users: int
    mean_actual: float
    mean_predicted: float
    normalized_gini: float
    spearman: float
    mae: float
    rmse: float
    top10_share_captured: float


def evaluate_churn(y: ArrayLike, p: ArrayLike, bins: int = DEFAULT_BINS) -> ChurnMetrics:
    """All churn metrics of ``ChurnMetrics`` for labels ``y`` (1 = churned) and probabilities ``p``.

    Example:
        >>> round(evaluate_churn([0, 1], [0.2, 0.6]).brier, 4)
        0.1
    """
    labels, probabilities = _labels_and_scores(y, p, probabilities=True)
    return ChurnMetrics(
        users=int(labels.size),
        churn_rate=float(labels.mean()),
        roc_auc=roc_auc(labels, probabilities),
        pr_auc=pr_auc(labels, probabilities),
        brier=brier_score(labels, probabilities),
        log_loss=log_loss(labels, probabilities),
        ece=expected_calibration_error(labels, probabilities, bins),
        top_decile_lift=top_decile_lift(labels, probabilities),
    )


def evaluate_ltv(actual: ArrayLike, predicted: ArrayLike) -> LtvMetrics:
    """All LTV metrics of ``LtvMetrics`` for observed and predicted values.

    Example:
        >>> evaluate_ltv([1, 2, 3, 10], [1, 2, 3, 4]).normalized_gini
        1.0
    """
    actual_values, predicted_values = _pair(actual, predicted, ("actual", "predicted"))
    return LtvMetrics(
        users=int(actual_values.size),
        mean_actual=float(actual_values.mean()),
        mean_predicted=float(predicted_values.mean()),
        normalized_gini=normalized_gini(actual_values, predicted_values),
        spearman=spearman(actual_values, predicted_values),
        mae=mae(actual_values, predicted_values),
        rmse=rmse(actual_values, predicted_values),
        top10_share_captured=top_share_captured(actual_values, predicted_values, 0.1),
    )


ModelResults = Mapping[str, tuple[ChurnMetrics | None, LtvMetrics | None]]


def metrics_table(results: ModelResults) -> pd.DataFrame:
    """Every metric of every model side by side.

    Args:
        results: model name -> (``ChurnMetrics`` or None, ``LtvMetrics`` or None); None where a
            model does not predict that target.

    Returns:
        DataFrame, one row per model in the order given, columns ``model``, then ``churn_<field>``
        for every field of ``ChurnMetrics`` and ``ltv_<field>`` for every field of ``LtvMetrics``
        (NaN where a model has no such metrics).

    Example:
        >>> table = metrics_table({"m": (evaluate_churn([0, 1], [0.2, 0.6]), None)})
        >>> round(float(table.loc[0, "churn_brier"]), 4), bool(table["ltv_mae"].isna().all())
        (0.1, True)
    """
    rows = []
    for model, (churn, ltv) in results.items():
        row: dict[str, Any] = {"model": model}
        for prefix, fields, metrics in (
            ("churn_", ChurnMetrics._fields, churn),
            ("ltv_", LtvMetrics._fields, ltv),
        ):
            for field in fields:
                row[prefix + field] = math.nan if metrics is None else getattr(metrics, field)
        rows.append(row)
    columns = (
        ["model"] + ["churn_" + f for f in ChurnMetrics._fields] + ["ltv_" + f for f in LtvMetrics._fields]
    )
    table = pd.DataFrame(rows, columns=columns)
    numeric = columns[1:]
    table[numeric] = table[numeric].astype(float)
    return table


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, (datetime, pd.Timestamp)):
        return pd.Timestamp(value).isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value


def write_metrics_json(
    path: str | Path, results: ModelResults, extra: Mapping[str, Any] | None = None
) -> dict:
    """Write every model's metrics to a plain JSON file (``metrics.json``).

    The document is ``{"models": {name: {"churn": {field: value} | null, "ltv": {...} | null}},
    **extra}``: NaN and infinities become ``null``, numpy numbers plain numbers, timestamps ISO
    8601 strings, timedeltas seconds. ``extra`` holds the run's context (as-of date, horizon,
    split, seed) and may not use the key ``models``.

    Returns:
        The document written.
    """
    extra = dict(extra or {})
    if "models" in extra:
        raise TenureError("extra may not contain the key 'models'", "rename that entry")
    document = {
        "models": {
            model: {
                "churn": None if churn is None else churn._asdict(),
                "ltv": None if ltv is None else ltv._asdict(),
            }
            for model, (churn, ltv) in results.items()
        },
        **extra,
    }
    document = _plain(document)
    Path(path).write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return document


# ---------------------------------------------------------------------------------------------
# Calibration


def logits_from_probabilities(p: ArrayLike, eps: float = 1e-12) -> np.ndarray:
    """Log-odds ln(q / (1 - q)) of probabilities clipped to q = clip(p, eps, 1 - eps).

    For models that output probabilities: temperature scaling works on logits.

    Example:
        >>> logits_from_probabilities([0.5]).tolist()
        [0.0]
    """
    probabilities = _as_vector(p, "p")
    clipped = np.clip(probabilities, eps, 1 - eps)
    return np.log(clipped) - np.log1p(-clipped)


class TemperatureCalibrator:
    """Temperature scaling: calibrated probability = sigmoid(logit / T), one T > 0 for all users.

    ``fit`` chooses T by minimising the log loss of the validation labels,

        T = argmin_T -(1/n) sum_i [y_i ln s(z_i / T) + (1 - y_i) ln(1 - s(z_i / T))],

    over ln T in [ln 0.01, ln 100] (``scipy.optimize.minimize_scalar``, bounded). T > 1 softens
    over-confident scores, T < 1 sharpens under-confident ones; the ranking (ROC AUC) is unchanged.
    Fit on validation users, never on the users the model was fitted on or is evaluated on.

    Attributes:
        temperature_: the fitted T.
        log_loss_before_, log_loss_after_: validation log loss at T = 1 and at the fitted T.
        n_: number of validation users.

    References:
        C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger (2017), "On calibration of modern neural
        networks", ICML, section 4.2.

    Example:
        >>> calibrator = TemperatureCalibrator().fit([-4.0, -4.0, 4.0, 4.0], [0, 1, 1, 1])
        >>> bool(calibrator.temperature_ > 1)
        True
    """

    kind = "temperature"
    bounds = (math.log(0.01), math.log(100.0))

    def fit(self, logits: ArrayLike, y: ArrayLike) -> TemperatureCalibrator:
        labels, values = _labels_and_scores(y, logits, probabilities=False)

        def loss(log_temperature: float) -> float:
            z = values / math.exp(log_temperature)
            # -[y ln s(z) + (1 - y) ln(1 - s(z))] = logaddexp(0, z) - y z
            return float(np.mean(np.logaddexp(0.0, z) - labels * z))

        result = optimize.minimize_scalar(loss, bounds=self.bounds, method="bounded", options={"xatol": 1e-8})
        self.temperature_ = float(math.exp(result.x))
        self.log_loss_before_ = loss(0.0)
        self.log_loss_after_ = float(result.fun)
        self.n_ = int(labels.size)
        return self

    def transform(self, logits: ArrayLike) -> np.ndarray:
        """Calibrated probabilities sigmoid(logits / temperature_)."""
        if not hasattr(self, "temperature_"):
            raise TenureError("the temperature calibrator is not fitted", "call fit(logits, y) first")
        return expit(_as_vector(logits, "logits") / self.temperature_)

    def to_dict(self) -> dict:
        """Plain-data form for JSON."""
        return {
            "kind": self.kind,
            "temperature": self.temperature_,
            "log_loss_before": self.log_loss_before_,
            "log_loss_after": self.log_loss_after_,
            "n": self.n_,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TemperatureCalibrator:
        """Rebuild a fitted calibrator from ``to_dict``'s output."""
        if data.get("kind") != cls.kind:
            raise TenureError(f"not a temperature calibrator: kind {data.get('kind')!r}")
        calibrator = cls()
        calibrator.temperature_ = float(data["temperature"])
        calibrator.log_loss_before_ = float(data["log_loss_before"])
        calibrator.log_loss_after_ = float(data["log_loss_after"])
        calibrator.n_ = int(data["n"])
        return calibrator


def _pool_adjacent_violators(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted least-squares non-decreasing fit of ``values`` (already in x order)."""
    block_value: list[float] = []
    block_weight: list[float] = []
    block_size: list[int] = []
    for value, weight in zip(values.tolist(), weights.tolist(), strict=True):
        block_value.append(value)
        block_weight.append(weight)
        block_size.append(1)
        while len(block_value) > 1 and block_value[-2] > block_value[-1]:
            merged_weight = block_weight[-2] + block_weight[-1]
            merged_value = (
                block_value[-2] * block_weight[-2] + block_value[-1] * block_weight[-1]
            ) / merged_weight
            merged_size = block_size[-2] + block_size[-1]
            del block_value[-1], block_weight[-1], block_size[-1]
            block_value[-1], block_weight[-1], block_size[-1] = merged_value, merged_weight, merged_size
    return np.repeat(block_value, block_size)


class IsotonicCalibrator:
    """Isotonic calibration: the non-decreasing map of probabilities closest to the labels.

    ``fit`` sorts the validation users by predicted probability, merges users with equal
    probability into one point (their mean label, weighted by their count), and finds the
    non-decreasing sequence f minimising sum_j w_j (f_j - ybar_j)^2 by pool-adjacent-violators.
    ``transform`` interpolates linearly between the fitted points (x_j, f_j) and clips outside
    [min x, max x] to the end values, as scikit-learn's ``IsotonicRegression(out_of_bounds="clip")``.
    Flexible but step-shaped; it needs more validation users than temperature scaling and can
    tie users that the model ranked apart (ROC AUC may change slightly).

    Attributes:
        x_thresholds_: the distinct validation probabilities, increasing.
        y_thresholds_: the fitted calibrated probability at each of them.
        n_: number of validation users.

    References:
        M. Ayer, H. D. Brunk, G. M. Ewing, W. T. Reid, E. Silverman (1955), "An empirical
        distribution function for sampling with incomplete information", Annals of Mathematical
        Statistics 26(4), 641-647; B. Zadrozny, C. Elkan (2002), "Transforming classifier scores
        into accurate multiclass probability estimates", KDD.

    Example:
        >>> IsotonicCalibrator().fit([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1]).y_thresholds_.tolist()
        [0.0, 0.5, 0.5, 1.0]
    """

    kind = "isotonic"

    def fit(self, p: ArrayLike, y: ArrayLike) -> IsotonicCalibrator:
        labels, probabilities = _labels_and_scores(y, p, probabilities=True)
        x_values, inverse, counts = np.unique(probabilities, return_inverse=True, return_counts=True)
        mean_label = np.bincount(inverse, weights=labels) / counts
        self.x_thresholds_ = x_values
        self.y_thresholds_ = _pool_adjacent_violators(mean_label, counts.astype(float))
        self.n_ = int(labels.size)
        return self

    def transform(self, p: ArrayLike) -> np.ndarray:
        """Calibrated probabilities by linear interpolation between the fitted points."""
        if not hasattr(self, "x_thresholds_"):
            raise TenureError("the isotonic calibrator is not fitted", "call fit(p, y) first")
        return np.interp(_as_vector(p, "p"), self.x_thresholds_, self.y_thresholds_)

    def to_dict(self) -> dict:
        """Plain-data form for JSON."""
        return {
            "kind": self.kind,
            "x_thresholds": self.x_thresholds_.tolist(),
            "y_thresholds": self.y_thresholds_.tolist(),
            "n": self.n_,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IsotonicCalibrator:
        """Rebuild a fitted calibrator from ``to_dict``'s output."""
        if data.get("kind") != cls.kind:
            raise TenureError(f"not an isotonic calibrator: kind {data.get('kind')!r}")
        calibrator = cls()
        calibrator.x_thresholds_ = np.asarray(data["x_thresholds"], dtype=float)
        calibrator.y_thresholds_ = np.asarray(data["y_thresholds"], dtype=float)
        calibrator.n_ = int(data["n"])
        return calibrator
