"""Time to churn had every user got a policy's variant: inverse-propensity-weighted Kaplan-Meier.

Only the users who got the variant the policy assigns them tell us about that policy; weighting
each of them by 1 / p (p = their probability of getting it) makes them stand for everyone with
their features (Xie & Liu 2005). The weighted product-limit estimator, at each distinct churn
time t:

    S(t) = prod_{t_j <= t} (1 - d_w(t_j) / n_w(t_j)),

with d_w the summed weight of users who churned at t_j and n_w the summed weight of users still
at risk (duration >= t_j). Durations and churn come from core/whatif/users.py (the inactivity
rule, from each user's assignment, censored at the data's end).

Interval (``survival_interval``): the weighted Greenwood formula treats the weights as fixed
counts and ignores that which users got the policy's variant (and so carry weight) is itself
random, so it is not used. Instead a nonparametric bootstrap over users: each resample draws
the n users with replacement (every user of the frame, weighted or not, so the number who carry
weight varies as it would in a new experiment), keeps each user's weight 1 / p as given (the
propensities were logged, not estimated), and recomputes the weighted product-limit curve; the
pointwise interval at day t is the alpha/2 and 1 - alpha/2 percentiles of the resampled S(t)
(Efron & Tibshirani 1993, ch. 13; Akritas 1986 for the bootstrap of Kaplan-Meier). All
resamples are computed at once as matrices (resamples x distinct times).

References:
    B. Efron, R. Tibshirani (1993), An Introduction to the Bootstrap, Chapman & Hall.
    M. G. Akritas (1986), "Bootstrapping the Kaplan-Meier estimator", JASA 81(396), 1032-1038.
    J. Xie, C. Liu (2005), "Adjusted Kaplan-Meier estimator and log-rank test with inverse
    probability of treatment weighting for survival data", Statistics in Medicine 24(20),
    3089-3110. E. L. Kaplan, P. Meier (1958), JASA 53(282), 457-481.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

CURVE_COLUMNS = ("day", "at_risk", "churned", "survival")
DEFAULT_SURVIVAL_DAYS: tuple[float, ...] = (7.0, 30.0, 90.0)
DEFAULT_SURVIVAL_RESAMPLES = 300
_CHUNK = 64


def weighted_kaplan_meier(durations: np.ndarray, churned: np.ndarray, weights: np.ndarray) -> pd.DataFrame:
    """The weighted product-limit curve at each distinct churn time (``CURVE_COLUMNS``).

    ``at_risk`` and ``churned`` are summed weights. Users with weight 0 drop out.
    """
    durations = np.asarray(durations, dtype=float)
    churned = np.asarray(churned, dtype=bool)
    weights = np.asarray(weights, dtype=float)
    keep = weights > 0
    durations, churned, weights = durations[keep], churned[keep], weights[keep]
    times, inverse = np.unique(durations, return_inverse=True)
    churned_weight = np.bincount(inverse, weights=weights * churned, minlength=len(times))
    leaving = np.bincount(inverse, weights=weights, minlength=len(times))
    at_risk = leaving[::-1].cumsum()[::-1]
    hit = churned_weight > 0
    times, at_risk, churned_weight = times[hit], at_risk[hit], churned_weight[hit]
    survival = np.cumprod(1.0 - churned_weight / at_risk)
    return pd.DataFrame({"day": times, "at_risk": at_risk, "churned": churned_weight, "survival": survival})


def survival_at(curve: pd.DataFrame, days: Sequence[float], longest: float) -> np.ndarray:
    """S(day) read off a curve: the survival after the last churn time <= day (1 before any);
    NaN after ``longest``, the longest follow-up, where the curve says nothing."""
    at = np.asarray(days, dtype=float)
    index = np.searchsorted(curve["day"].to_numpy(), at, side="right") - 1
    values = np.concatenate([[1.0], curve["survival"].to_numpy()])[index + 1]
    return np.where(at <= longest, values, np.nan)


def bootstrap_counts(users: int, resamples: int, seed: int) -> np.ndarray:
    """How often each of ``users`` users is drawn in each resample of ``users`` draws with
    replacement: an int array (resamples, users) whose rows each sum to ``users``."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, users, size=(resamples, users)) + users * np.arange(resamples)[:, None]
    return np.bincount(draws.ravel(), minlength=resamples * users).reshape(resamples, users)


def survival_interval(
    durations: np.ndarray,
    churned: np.ndarray,
    weights: np.ndarray,
    days: Sequence[float],
    counts: np.ndarray,
    alpha: float = 0.05,
) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise percentile bootstrap interval of the weighted S(day) (module docstring).

    Args:
        counts: ``bootstrap_counts(len(durations), ...)``: resample r gives user i the weight
            ``counts[r, i] * weights[i]``.

    Returns:
        (low, high) per day; NaN where fewer than half the resamples follow any weighted user
        up to that day.
    """
    durations = np.asarray(durations, dtype=float)
    churned = np.asarray(churned, dtype=bool)
    weights = np.asarray(weights, dtype=float)
    at = np.asarray(days, dtype=float)
    keep = weights > 0
    durations, churned, weights, counts = durations[keep], churned[keep], weights[keep], counts[:, keep]
    times, inverse = np.unique(durations, return_inverse=True)
    horizon = int(np.searchsorted(times, at.max(), side="right"))  # times that reach some day
    # the users whose time reaches some day, sorted by time: sums by time are np.add.reduceat
    early = np.flatnonzero(inverse < horizon)
    early = early[np.argsort(inverse[early], kind="stable")]
    starts = np.searchsorted(inverse[early], np.arange(horizon))
    column = np.searchsorted(times[:horizon], at, side="right") - 1
    values = []
    for chunk in range(0, counts.shape[0], _CHUNK):
        weight = counts[chunk : chunk + _CHUNK] * weights
        if horizon:
            leaving = np.add.reduceat(weight[:, early], starts, axis=1)
            dying = np.add.reduceat(weight[:, early] * churned[early], starts, axis=1)
        else:  # every day comes before the first time: S = 1
            leaving = dying = np.zeros((len(weight), 0))
        at_risk = weight.sum(axis=1, keepdims=True) - (np.cumsum(leaving, axis=1) - leaving)
        with np.errstate(divide="ignore", invalid="ignore"):
            hazard = np.where(at_risk > 0, dying / at_risk, 0.0)
            log_survival = np.cumsum(np.log1p(-np.minimum(hazard, 1.0)), axis=1)
        padded = np.concatenate([np.zeros((len(weight), 1)), log_survival], axis=1)
        survival = np.exp(padded[:, column + 1])
        longest = np.where(weight > 0, durations, -np.inf).max(axis=1)
        values.append(np.where(at[None, :] <= longest[:, None], survival, np.nan))
    resampled = np.concatenate(values)
    enough = np.isfinite(resampled).mean(axis=0) >= 0.5
    with np.errstate(all="ignore"):
        low = np.nanquantile(np.where(enough, resampled, 0.0), alpha / 2, axis=0)
        high = np.nanquantile(np.where(enough, resampled, 0.0), 1 - alpha / 2, axis=0)
    return np.where(enough, low, np.nan), np.where(enough, high, np.nan)
