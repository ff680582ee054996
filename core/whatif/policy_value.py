"""The value of a policy ("who gets which variant") from assignments with known propensities.

A policy pi gives each user a variant pi(x). Its value is the mean outcome had every user got
the variant pi assigns, estimated from what was logged: user i got A_i with probability
p_{A_i}(x_i) (``assignments.propensity``) and we saw Y_i. With the target's variant T_i = pi(x_i),
its probability p_i = p_{T_i}(x_i), the weight w_i = 1[A_i = T_i] / p_i and an outcome model
mu_i = mu_{T_i}(x_i) (cross-fitted, core/whatif/outcome_model.py), over the n users used:

- ``ipw`` (Horvitz-Thompson): mean(w_i Y_i). Unbiased when the propensities are right.
- ``hajek`` (self-normalised IPW): sum(w_i Y_i) / sum(w_i). Slightly biased, often less variable;
  always within the outcome's range.
- ``aipw`` (augmented IPW, doubly robust): mean(mu_i + w_i (Y_i - mu_i)). Unbiased when the
  propensities are right, whatever the model; the better the model, the narrower the interval.

Every estimate is the mean of per-user terms phi_i (for ``hajek`` its linearisation
value + w_i (Y_i - value) / mean(w)), so its standard error is the influence-function one,
sd(phi) / sqrt(n), and the interval is value +- z_{1-alpha/2} se. The difference of two policies
is the mean of the differences of their terms over the same users, with the same interval: the
two estimates share users, so their errors are correlated and this accounts for it.

A ratio outcome (clicks per shown slot: user i has clicks Y_i and slots S_i) is valued as a ratio
of means, R = E[Y] / E[S] under the policy, so a user shown more slots weighs more, as in the
pooled click rate. Each estimator above is applied to Y and to S (same weights; for aipw a
cross-fitted model of each), giving per-user terms a_i and b_i, and R = mean(a) / mean(b). Its
linearisation (delta method) phi_i = R + (a_i - R b_i) / mean(b) has mean R and gives the
interval as above. For a ratio, ipw and hajek coincide (the normalisation cancels):
R = sum(w_i Y_i) / sum(w_i S_i).

The propensities of the variants a user did not get: with two variants, 1 - the propensity of
the one they got; with more, the propensity of variant V where it is the same for every user who
got V (a fixed split), else unknown and refused.

References:
    D. G. Horvitz, D. J. Thompson (1952), "A generalization of sampling without replacement from
    a finite universe", JASA 47(260), 663-685. J. Hajek (1971), comment in Foundations of
    Statistical Inference, Holt, Rinehart and Winston. J. M. Robins, A. Rotnitzky, L. P. Zhao
    (1994), "Estimation of regression coefficients when some regressors are not always
    observed", JASA 89(427), 846-866. M. Dudik, J. Langford, L. Li (2011), "Doubly robust policy
    evaluation and learning", ICML. A. Deng, U. Knoblich, J. Lu (2018), "Applying the delta
    method in metric analytics: a practical guide with novel ideas", KDD (ratio metrics).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
from scipy.special import ndtri

from core.errors import TenureError

Estimator = Literal["ipw", "hajek", "aipw"]
ESTIMATORS: tuple[str, ...] = ("aipw", "ipw", "hajek")
DEFAULT_ALPHA = 0.05


class Estimate(NamedTuple):
    """One estimate with its interval.

    Attributes:
        estimator: ipw, hajek or aipw (or ``naive`` for a difference of logged means).
        value: the estimate.
        se: its standard error (influence function; Welch for ``naive``).
        ci_low, ci_high: the two-sided 1 - alpha normal interval.
        rows: the users it is computed on.
    """

    estimator: str
    value: float
    se: float
    ci_low: float
    ci_high: float
    rows: int


def propensity_matrix(
    received: np.ndarray, propensity: np.ndarray, variants: tuple[str, ...], needed: np.ndarray | None = None
) -> np.ndarray:
    """An (users x variants) matrix of P(user gets variant V); NaN where it is not known.

    Args:
        received: the variant each user got.
        propensity: the probability of the variant they got (NaN where missing).
        variants: every variant of the experiment.
        needed: (users x variants) booleans: where a probability is needed (default: everywhere).
            With more than two variants, a needed probability of a variant not received must be
            recoverable (a fixed split) or the call is refused.

    Raises:
        TenureError: a recorded propensity outside (0, 1]; an unknown probability that is needed.
    """
    received = np.asarray(received).astype(str)
    propensity = np.asarray(propensity, dtype=float)
    recorded = ~np.isnan(propensity)
    bad = recorded & ~((propensity > 0) & (propensity <= 1))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise TenureError(
            f"assignments.propensity: {int(bad.sum())} users have a propensity outside (0, 1] "
            f"(e.g. {propensity[first]:g})",
            "a propensity is the probability of the variant the user got: fix those rows",
        )
    matrix = np.full((len(received), len(variants)), np.nan)
    for column, variant in enumerate(variants):
        got = received == variant
        matrix[got, column] = propensity[got]
    if len(variants) == 2:
        for column in range(2):
            other = received == variants[1 - column]
            matrix[other, column] = 1.0 - propensity[other]
        return matrix
    want = np.ones_like(matrix, dtype=bool) if needed is None else np.asarray(needed, dtype=bool)
    for column, variant in enumerate(variants):
        got = received == variant
        missing = want[:, column] & ~got & recorded
        if not missing.any():
            continue
        values = propensity[got]
        fixed = len(values) > 0 and not np.isnan(values).any() and np.ptp(values) == 0
        if not fixed:
            raise TenureError(
                f"the experiment has {len(variants)} variants and the probability of getting "
                f"'{variant}' is not recorded for users who got another variant",
                "with more than two variants the propensities must be one fixed split, or evaluate "
                "a policy that keeps every user's variant",
            )
        matrix[missing, column] = values[0]
    return matrix


def naive_difference(
    outcome: np.ndarray, received: np.ndarray, variant: str, other: str, alpha: float = DEFAULT_ALPHA
) -> Estimate:
    """mean(Y | got variant) - mean(Y | got other), Welch standard error.

    What a plain A/B comparison reports; confounded when assignment was targeted.
    """
    first = outcome[received == variant]
    second = outcome[received == other]
    if len(first) < 2 or len(second) < 2:
        return Estimate("naive", float("nan"), float("nan"), float("nan"), float("nan"), 0)
    value = float(first.mean() - second.mean())
    se = float(np.sqrt(first.var(ddof=1) / len(first) + second.var(ddof=1) / len(second)))
    return _interval("naive", value, se, len(first) + len(second), alpha)


def terms(
    estimator: str, outcome: np.ndarray, weight: np.ndarray, prediction: np.ndarray | None = None
) -> np.ndarray:
    """The per-user terms phi_i whose mean is the estimate (see the module docstring).

    Args:
        outcome: Y_i.
        weight: w_i = 1[A_i = T_i] / p_i.
        prediction: mu_i (aipw only).
    """
    if estimator == "ipw":
        return weight * outcome
    if estimator == "hajek":
        mean_weight = weight.mean()
        if mean_weight <= 0:
            return np.full(len(outcome), np.nan)
        value = (weight * outcome).sum() / weight.sum()
        return value + weight * (outcome - value) / mean_weight
    if estimator == "aipw":
        if prediction is None:
            raise ValueError("aipw needs the outcome model's predictions")
        return prediction + weight * (outcome - prediction)
    raise TenureError(f"unknown estimator '{estimator}'", f"use one of: {', '.join(ESTIMATORS)}")


def ratio_terms(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """The linearised terms of mean(numerator) / mean(denominator) (delta method).

    Args:
        numerator: per-user terms a_i of the numerator's estimate (``terms`` of the clicks).
        denominator: per-user terms b_i of the denominator's estimate (``terms`` of the slots).

    Returns:
        phi_i = R + (a_i - R b_i) / mean(b), whose mean is R = mean(a) / mean(b); NaN when
        mean(b) is not positive (no slot under the policy).

    Example:
        >>> ratio_terms(np.array([1.0, 3.0]), np.array([2.0, 2.0])).tolist()
        [0.5, 1.5]
    """
    scale = float(denominator.mean()) if len(denominator) else 0.0
    if not scale > 0:
        return np.full(len(numerator), np.nan)
    value = float(numerator.mean()) / scale
    return value + (numerator - value * denominator) / scale


def naive_ratio_difference(
    outcome: np.ndarray,
    denominator: np.ndarray,
    received: np.ndarray,
    variant: str,
    other: str,
    alpha: float = DEFAULT_ALPHA,
) -> Estimate:
    """sum(Y) / sum(S) among users who got ``variant`` minus the same among those who got ``other``.

    The logged pooled ratios (what an A/B table of a ratio metric shows; confounded when
    assignment was targeted), with the delta-method interval over the users of both groups.
    """
    both = (received == variant) | (received == other)
    first = (received[both] == variant).astype(float)
    second = 1.0 - first
    if first.sum() < 2 or second.sum() < 2:
        return Estimate("naive", float("nan"), float("nan"), float("nan"), float("nan"), 0)
    clicks, slots = outcome[both], denominator[both]
    phi = ratio_terms(first * clicks, first * slots) - ratio_terms(second * clicks, second * slots)
    return from_terms("naive", phi, alpha)


def from_terms(estimator: str, phi: np.ndarray, alpha: float = DEFAULT_ALPHA) -> Estimate:
    """The mean of the terms with the influence-function interval."""
    count = len(phi)
    if count < 2 or not np.isfinite(phi).all():
        value = float(phi.mean()) if count else float("nan")
        return Estimate(estimator, value, float("nan"), float("nan"), float("nan"), count)
    return _interval(estimator, float(phi.mean()), float(phi.std(ddof=1) / np.sqrt(count)), count, alpha)


def _interval(estimator: str, value: float, se: float, rows: int, alpha: float) -> Estimate:
    z = float(ndtri(1 - alpha / 2))
    return Estimate(estimator, value, se, value - z * se, value + z * se, rows)


def weight_summary(weight: np.ndarray) -> tuple[float, float]:
    """Effective sample size (sum w)^2 / sum w^2 and the largest weight (0, 0 without weight)."""
    squares = float((weight**2).sum())
    if squares == 0:
        return 0.0, 0.0
    return float(weight.sum() ** 2 / squares), float(weight.max())
