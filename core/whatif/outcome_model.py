"""Cross-fitted outcome models mu_V(x): each user's expected outcome under variant V.

AIPW adds a model's prediction to the inverse-propensity correction; the correction keeps the
estimate unbiased however wrong the model is, *provided the prediction for a user was not fitted
on that user's own outcome*. Cross-fitting (Chernozhukov et al. 2018) guarantees it: users are
split into ``folds`` random folds; the model that predicts fold k is fitted on the other folds
only, separately for each variant on the users who got it.

The model is a ridge regression in plain numpy on standardised features with an unpenalised
intercept: fast, deterministic, and good enough here because the features (one-hot user
attributes, log pre-period activity) enter roughly additively; a better model only narrows the
interval, it never moves the estimate's expectation.

References:
    V. Chernozhukov, D. Chetverikov, M. Demirer, E. Duflo, C. Hansen, W. Newey, J. Robins
    (2018), "Double/debiased machine learning for treatment and structural parameters",
    The Econometrics Journal 21(1), C1-C68.
"""

from __future__ import annotations

import numpy as np

from core.errors import TenureError

DEFAULT_FOLDS = 5
DEFAULT_PENALTY = 1.0


def ridge_fit(features: np.ndarray, outcome: np.ndarray, penalty: float = DEFAULT_PENALTY) -> np.ndarray:
    """Coefficients ``[intercept, b1..bk]`` of a ridge regression on standardised features.

    Minimises ``sum (y - a - x_std b)^2 + penalty * |b|^2``; constant columns get 0. Returns the
    coefficients on the *original* scale, so ``predict = a + x @ b``.
    """
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale[scale == 0] = 1.0
    standard = (features - mean) / scale
    centred = outcome - outcome.mean()
    gram = standard.T @ standard + penalty * np.eye(standard.shape[1])
    slope = np.linalg.solve(gram, standard.T @ centred) / scale
    intercept = outcome.mean() - mean @ slope
    return np.concatenate([[intercept], slope])


def ridge_predict(coefficients: np.ndarray, features: np.ndarray) -> np.ndarray:
    return coefficients[0] + features @ coefficients[1:]


def fold_labels(count: int, folds: int, seed: int) -> np.ndarray:
    """A random fold (0..folds-1) per user, as equal in size as possible."""
    if not 2 <= folds <= 20:
        raise TenureError(f"{folds} cross-fitting folds", "use 2 to 20 folds (default 5)")
    rng = np.random.default_rng(seed)
    return rng.permutation(np.arange(count) % folds)


def cross_fitted_predictions(
    features: np.ndarray,
    received: np.ndarray,
    outcome: np.ndarray,
    variants: tuple[str, ...],
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    penalty: float = DEFAULT_PENALTY,
) -> np.ndarray:
    """An (users x variants) matrix: column j is mu_{variants[j]}(x), cross-fitted.

    Args:
        features: (users x k) pre-assignment features.
        received: the variant each user got.
        outcome: each user's outcome (finite).
        folds: cross-fitting folds; the prediction for a user never uses their own outcome.
        seed: the fold split's seed.

    A fold's training users who got variant V may be too few to fit (fewer than two): their
    prediction falls back to the mean outcome of V's training users, or of all training users.
    """
    labels = fold_labels(len(outcome), folds, seed)
    predictions = np.zeros((len(outcome), len(variants)))
    features = np.asarray(features, dtype=float).reshape(len(outcome), -1)
    for fold in range(folds):
        held_out = labels == fold
        for column, variant in enumerate(variants):
            train = ~held_out & (received == variant)
            if train.sum() >= 2:
                coefficients = ridge_fit(features[train], outcome[train], penalty)
                predictions[held_out, column] = ridge_predict(coefficients, features[held_out])
            else:
                pool = outcome[train] if train.any() else outcome[~held_out]
                predictions[held_out, column] = pool.mean() if len(pool) else 0.0
    return predictions
