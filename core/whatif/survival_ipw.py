"""Time to churn had every user got a policy's variant: inverse-propensity-weighted Kaplan-Meier.

Only the users who got the variant the policy assigns them tell us about that policy; weighting
each of them by 1 / p (p = their probability of getting it) makes them stand for everyone with
their features (Xie & Liu 2005). The weighted product-limit estimator, at each distinct churn
time t:

    S(t) = prod_{t_j <= t} (1 - d_w(t_j) / n_w(t_j)),

with d_w the summed weight of users who churned at t_j and n_w the summed weight of users still
at risk (duration >= t_j). Durations and churn come from core/whatif/users.py (the inactivity
rule, from each user's assignment, censored at the data's end). No interval is given: the
weighted Greenwood formula does not account for the weights' own variability.

References:
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
