"""The surrogate index in numpy: a ridge regression of the long-term outcome on the surrogates,
its cross-fitted quality, and the weighted means of its predictions with a bootstrap that refits.

Model: ordinary ridge on standardised columns (the intercept is not penalised), fitted on users
whose long-term outcome is observed. Ridge rather than gradient boosting because its closed form
makes refitting it in every bootstrap resample cheap, so the intervals carry the model's own
uncertainty; on the sample store both reach the same held-out R^2 (docs/BENCHMARKS.md).
Predictions of a rate are clipped to [0, 1], of revenue to >= 0.

Estimate of variant V over the recent users i (those whose outcome is not yet observed), with
h(x_i) the predicted outcome and w_i = 1[A_i = V] / p_i (p_i the propensity of the variant the
user got; 1 when the experiment records none):

    value(V) = sum_i w_i h(x_i) / sum_i w_i     (a weighted mean, Hajek's form),

and the difference of V and the control is value(V) - value(control).

Intervals: percentile bootstrap. Each resample draws multinomial counts over the training users
(the model is refitted with them as weights) and, independently, over the recent users (the
weighted means use them as extra weights), so the interval covers both the model's estimation
error and the sampling of the recent users. It does not cover a failure of the surrogacy
assumption (the treatment acting on the long-term outcome other than through the surrogates):
only the backtest can show that.

References:
    S. Athey, R. Chetty, G. W. Imbens, H. Kang (2019), "The surrogate index: combining short-term
    proxies to estimate long-term treatment effects more rapidly and precisely", NBER working
    paper 26463, eq. (6)-(8) (the index and its estimator). A. E. Hoerl, R. W. Kennard (1970),
    "Ridge regression", Technometrics 12(1). J. Hajek (1971), comment in Foundations of
    Statistical Inference (the self-normalised weighted mean). B. Efron, R. Tibshirani (1993),
    An Introduction to the Bootstrap, ch. 13 (percentile intervals).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from core.evaluation import roc_auc

DEFAULT_PENALTY = 1.0
DEFAULT_RESAMPLES = 200
DEFAULT_FOLDS = 5


def _with_intercept(features: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return np.column_stack([np.ones(len(features)), (features - mean) / scale])


def _resampled_solutions(
    design: np.ndarray, outcome: np.ndarray, counts: np.ndarray, penalty: float, block: int = 16384
) -> np.ndarray:
    """Ridge coefficients argmin_b sum_i c_i (y_i - d_i b)^2 + penalty |b[1:]|^2 for every row c
    of ``counts`` (resamples x users) as weights: (resamples x columns). The intercept (column
    0) is not penalised.

    The weighted Gram matrices of all resamples are one matrix product, counts @ (the users'
    outer products d_i d_i', upper triangle), taken over blocks of users to bound the memory:
    far faster than a loop of small products, whose thread start-up dominates on a busy machine.
    """
    columns = design.shape[1]
    upper = np.triu_indices(columns)
    triangle = np.zeros((len(counts), len(upper[0])))
    for start in range(0, len(design), block):
        rows = design[start : start + block]
        triangle += counts[:, start : start + block] @ (rows[:, upper[0]] * rows[:, upper[1]])
    grams = np.zeros((len(counts), columns, columns))
    grams[:, upper[0], upper[1]] = triangle
    grams[:, upper[1], upper[0]] = triangle
    diagonal = np.arange(1, columns)
    grams[:, diagonal, diagonal] += penalty
    moments = counts @ (design * outcome[:, None])
    return np.linalg.solve(grams, moments[:, :, None])[:, :, 0]


def clip_prediction(values: np.ndarray, is_rate: bool) -> np.ndarray:
    """Keep predictions in the outcome's range: [0, 1] for a rate, >= 0 for revenue."""
    return np.clip(values, 0.0, 1.0) if is_rate else np.maximum(values, 0.0)


def model_quality(outcome: np.ndarray, predicted: np.ndarray, is_rate: bool) -> dict[str, float]:
    """Held-out quality: R^2 = 1 - SSE / SST (both outcomes), ROC AUC (rates), and the users."""
    residual = float(((outcome - predicted) ** 2).sum())
    total = float(((outcome - outcome.mean()) ** 2).sum())
    quality = {"users": float(len(outcome)), "r2": 1.0 - residual / total if total > 0 else float("nan")}
    if is_rate:
        quality["auc"] = roc_auc(outcome, predicted)
    return quality


def weighted_mean(values: np.ndarray, weights: np.ndarray) -> float:
    """sum w v / sum w; NaN when the weights sum to 0."""
    total = float(weights.sum())
    return float((weights * values).sum() / total) if total > 0 else float("nan")


class IndexInputs(NamedTuple):
    """What the estimator needs, as arrays.

    Attributes:
        train_features, train_outcome: users whose long-term outcome is observed.
        recent_features: the experiment's users whose outcome is not yet observed.
        recent_variant: each recent user's variant.
        recent_weight: 1 / propensity of the variant they got (1 without propensities).
        recent_actual: their actual outcome when it is known (the backtest), else None.
    """

    train_features: np.ndarray
    train_outcome: np.ndarray
    recent_features: np.ndarray
    recent_variant: np.ndarray
    recent_weight: np.ndarray
    recent_actual: np.ndarray | None = None


class IndexResult(NamedTuple):
    """Per variant and per difference from the control.

    Attributes:
        estimates: variant, estimate, ci_low, ci_high, users (+ actual, actual_ci_low,
            actual_ci_high when the actual outcome was given).
        differences: variant, control, estimate, ci_low, ci_high (+ the same actual columns).
        predictions: the point model's (clipped) prediction for each recent user.
        held_out: each training user's cross-fitted prediction (by the model fitted without
            their fold; ``folds`` folds at random): what ``model_quality`` scores.
    """

    estimates: pd.DataFrame
    differences: pd.DataFrame
    predictions: np.ndarray
    held_out: np.ndarray


def _percentiles(draws: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(all="ignore"):
        low = np.nanpercentile(draws, 100 * alpha / 2, axis=0)
        high = np.nanpercentile(draws, 100 * (1 - alpha / 2), axis=0)
    return low, high


def _variant_means(values: np.ndarray, weight_by_variant: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(resamples x variants) weighted means; ``values`` is (users,) or (users x resamples).

    ``counts`` (resamples x users) multiply the weights: a resample's draws of each user.
    """
    means = np.empty((len(counts), weight_by_variant.shape[1]))
    for j in range(weight_by_variant.shape[1]):
        weights = counts * weight_by_variant[:, j][None, :]
        numerator = weights @ values if values.ndim == 1 else np.einsum("bi,ib->b", weights, values)
        with np.errstate(all="ignore"):
            means[:, j] = numerator / weights.sum(axis=1)
    return means


def surrogate_index(
    inputs: IndexInputs,
    variants: list[str],
    control: str,
    is_rate: bool,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    alpha: float = 0.05,
    penalty: float = DEFAULT_PENALTY,
    folds: int = DEFAULT_FOLDS,
) -> IndexResult:
    """The surrogate index estimate of each variant's long-term value, with bootstrap intervals.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> s = rng.normal(size=(400, 1)); y = 2 * s[:, 0] + 1
        >>> inputs = IndexInputs(s, y, np.array([[0.0], [1.0]]), np.array(["a", "b"]), np.ones(2))
        >>> result = surrogate_index(inputs, ["a", "b"], "a", is_rate=False, resamples=20)
        >>> [round(v, 1) for v in result.estimates["estimate"]]
        [1.0, 3.0]
    """
    features, outcome = inputs.train_features, inputs.train_outcome
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    rng = np.random.default_rng(seed)
    n_train, n_recent = len(outcome), len(inputs.recent_features)
    fold = rng.permutation(n_train) % folds
    train_counts = rng.multinomial(n_train, np.full(n_train, 1.0 / n_train), size=resamples)
    recent_counts = rng.multinomial(n_recent, np.full(n_recent, 1.0 / n_recent), size=resamples).astype(float)
    # One solve for every model: row 0 the point model (every user once), then one per
    # cross-fitting fold (the users outside it), then one refit per resample. The standardisation
    # stays the full data's: a fixed linear map (no outcome in it) that only sets the penalty's scale.
    kept = np.stack([fold != k for k in range(folds)])
    weights = np.vstack([np.ones((1, n_train)), kept, train_counts]).astype(float)
    design = _with_intercept(features, mean, scale)
    coefficients = _resampled_solutions(design, outcome, weights, penalty)
    held_out = clip_prediction(np.einsum("ij,ij->i", design, coefficients[1 + fold]), is_rate)
    all_predictions = clip_prediction(
        _with_intercept(inputs.recent_features, mean, scale)
        @ coefficients[[0, *range(1 + folds, len(weights))]].T,
        is_rate,
    )
    predictions, resampled_predictions = all_predictions[:, 0], all_predictions[:, 1:]  # users x resamples
    members = np.column_stack([inputs.recent_variant == v for v in variants]).astype(float)
    weight_by_variant = members * inputs.recent_weight[:, None]  # users x variants
    point = _variant_means(predictions, weight_by_variant, np.ones((1, n_recent)))[0]
    draws = _variant_means(resampled_predictions, weight_by_variant, recent_counts)
    low, high = _percentiles(draws, alpha)

    estimates = pd.DataFrame(
        {
            "variant": variants,
            "estimate": point,
            "ci_low": low,
            "ci_high": high,
            "users": members.sum(axis=0).astype(int),
        }
    )
    others = [j for j, v in enumerate(variants) if v != control]
    reference = variants.index(control)
    difference_draws = draws[:, others] - draws[:, [reference]]
    diff_low, diff_high = _percentiles(difference_draws, alpha)
    differences = pd.DataFrame(
        {
            "variant": [variants[j] for j in others],
            "control": control,
            "estimate": point[others] - point[reference],
            "ci_low": diff_low,
            "ci_high": diff_high,
        }
    )
    if inputs.recent_actual is not None:
        actual = np.asarray(inputs.recent_actual, dtype=float)
        actual_point = _variant_means(actual, weight_by_variant, np.ones((1, n_recent)))[0]
        actual_draws = _variant_means(actual, weight_by_variant, recent_counts)
        estimates["actual"] = actual_point
        estimates["actual_ci_low"], estimates["actual_ci_high"] = _percentiles(actual_draws, alpha)
        differences["actual"] = actual_point[others] - actual_point[reference]
        differences["actual_ci_low"], differences["actual_ci_high"] = _percentiles(
            actual_draws[:, others] - actual_draws[:, [reference]], alpha
        )
    return IndexResult(estimates, differences, predictions, held_out)
