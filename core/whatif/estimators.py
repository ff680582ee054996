"""Off-policy estimators of a target's value and their bootstrap intervals, from per-request sums.

Every estimator here is a ratio of sums over rows, so it can be computed from a handful of sums
per request (the bootstrap's unit), which DuckDB produces however large the log is:

- IPW   = sum(w r) / n                              (Horvitz-Thompson; Precup et al. 2000)
- SNIPW = sum(w r) / sum(w)                         (self-normalised; Swaminathan & Joachims 2015)
- DM    = sum(dm) / n,  dm = sum_a pi_e(a|x) q(x,a)  (direct method)
- DR    = DM + sum(w (r - q)) / n                    (Dudik, Langford & Li 2011)
- SNDR  = DM + sum(w (r - q)) / sum(w)               (self-normalised DR; Kallus & Uehara 2019)

with w = pi_e(a|x) / pi_0(a|x), n the number of rows (shown slots) and q(x, a) the reward model's
prediction for the logged item. The value is an expected reward per shown slot.

Intervals: percentile bootstrap over requests. A resample draws multinomial counts over the R
requests (R draws with replacement); the sums are counts @ per-request sums, so 200 resamples
are a few matrix products, not a loop over rows. The reward model is held fixed (not refitted per
resample), as is usual for DM/DR intervals.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

ESTIMATORS = ("ipw", "snipw", "dm", "dr", "sndr")
SUM_FIELDS = ("rows", "weight", "weighted_reward", "weighted_residual", "direct")
CELLS_PER_CHUNK = 20_000_000


class RequestSums(NamedTuple):
    """Per-request sums (one entry per request), the inputs of every estimator.

    Fields: rows (shown slots), weight (sum w), weighted_reward (sum w r), weighted_residual
    (sum w (r - q)), direct (sum over the rows of sum_a pi_e(a|x) q(x, a)).
    """

    rows: np.ndarray
    weight: np.ndarray
    weighted_reward: np.ndarray
    weighted_residual: np.ndarray
    direct: np.ndarray

    def matrix(self) -> np.ndarray:
        return np.column_stack([np.asarray(getattr(self, name), dtype=np.float64) for name in SUM_FIELDS])


def request_sums(
    request: np.ndarray, reward: np.ndarray, weight: np.ndarray, q_logged: np.ndarray, direct: np.ndarray
) -> RequestSums:
    """Per-row arrays -> per-request sums (numpy; DuckDB does the same for large logs)."""
    _, index = np.unique(np.asarray(request), return_inverse=True)
    reward, weight = np.asarray(reward, float), np.asarray(weight, float)

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(index, weights=np.asarray(values, dtype=np.float64))

    return RequestSums(
        total(np.ones_like(reward)),
        total(weight),
        total(weight * reward),
        total(weight * (reward - np.asarray(q_logged, float))),
        total(direct),
    )


def from_totals(totals: np.ndarray, estimators: tuple[str, ...] = ESTIMATORS) -> np.ndarray:
    """Estimates from summed columns (SUM_FIELDS order; shape (..., 5)) -> shape (..., len(estimators))."""
    rows, weight, weighted_reward, weighted_residual, direct = np.moveaxis(np.asarray(totals, float), -1, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        dm = direct / rows
        values = {
            "ipw": weighted_reward / rows,
            "snipw": weighted_reward / weight,
            "dm": dm,
            "dr": dm + weighted_residual / rows,
            "sndr": dm + weighted_residual / weight,
        }
    return np.stack([values[name] for name in estimators], axis=-1)


def bootstrap(
    sums: RequestSums,
    estimators: tuple[str, ...] = ESTIMATORS,
    resamples: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """Point estimates and percentile bootstrap intervals over requests.

    Returns:
        DataFrame with columns estimator, value, ci_low, ci_high (one row per estimator).
    """
    matrix = sums.matrix()
    n_requests = len(matrix)
    point = from_totals(matrix.sum(axis=0), estimators)
    rng = np.random.default_rng(seed)
    chunk = max(1, CELLS_PER_CHUNK // max(n_requests, 1))
    draws = []
    probabilities = np.full(n_requests, 1.0 / n_requests)
    for start in range(0, resamples, chunk):
        counts = rng.multinomial(n_requests, probabilities, size=min(chunk, resamples - start))
        draws.append(from_totals(counts.astype(np.float64) @ matrix, estimators))
    samples = np.concatenate(draws, axis=0) if draws else np.empty((0, len(estimators)))
    tail = (1.0 - level) / 2.0 * 100.0
    with np.errstate(all="ignore"):
        low = np.nanpercentile(samples, tail, axis=0) if len(samples) else np.full(len(estimators), np.nan)
        high = (
            np.nanpercentile(samples, 100.0 - tail, axis=0)
            if len(samples)
            else np.full(len(estimators), np.nan)
        )
    return pd.DataFrame({"estimator": list(estimators), "value": point, "ci_low": low, "ci_high": high})
