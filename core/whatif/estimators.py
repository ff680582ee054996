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

Intervals: percentile bootstrap over requests. A resample draws R requests with replacement (R
uniform integers, counted with one ``bincount``: multinomial counts over the R requests); the sums
are counts @ per-request sums, so 200 resamples are a few matrix products, not a loop over rows.
The reward model is held fixed in these resamples; DM's interval adds the model's own variance,
measured by refitting it (``core.whatif.dm_variance``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

ESTIMATORS = ("ipw", "snipw", "dm", "dr", "sndr")
SUM_FIELDS = ("rows", "weight", "weighted_reward", "weighted_residual", "direct")
CELLS_PER_CHUNK = 5_000_000


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


def resample_counts(rng: np.random.Generator, n_units: int, resamples: int) -> np.ndarray:
    """(resamples, n_units) counts: each row is how often each unit was drawn in n_units draws with
    replacement, i.e. one multinomial(n_units, uniform) vector.

    Counting drawn indices with ``bincount`` has the same distribution as ``Generator.multinomial``
    and is an order of magnitude faster with hundreds of thousands of units; one row at a time
    keeps the counted array in cache. The indices are asked for as 32-bit integers whenever the
    units fit: numpy draws the same values for a 32- and a 64-bit result in that range, and
    returns the 32-bit ones three times as fast.
    """
    dtype = np.uint32 if n_units < 2**32 else np.int64
    counts = np.empty((resamples, n_units))
    for row in range(resamples):
        counts[row] = np.bincount(rng.integers(0, n_units, size=n_units, dtype=dtype), minlength=n_units)
    return counts


def bootstrap_draws(
    sums: RequestSums, estimators: tuple[str, ...] = ESTIMATORS, resamples: int = 200, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Point estimates (len(estimators),) and the bootstrap resamples' estimates (resamples,
    len(estimators)), resampling whole requests."""
    matrix = sums.matrix()
    n_requests = len(matrix)
    point = from_totals(matrix.sum(axis=0), estimators)
    rng = np.random.default_rng(seed)
    chunk = max(1, CELLS_PER_CHUNK // max(n_requests, 1))
    draws = [np.empty((0, len(estimators)))]
    for start in range(0, resamples if n_requests else 0, chunk):
        counts = resample_counts(rng, n_requests, min(chunk, resamples - start))
        draws.append(from_totals(counts @ matrix, estimators))
    return point, np.concatenate(draws, axis=0)


def percentile_interval(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Per column, the (1 - level) / 2 and (1 + level) / 2 percentiles of ``samples`` (NaN when
    there are none)."""
    if not len(samples):
        empty = np.full(samples.shape[1], np.nan)
        return empty, empty.copy()
    tail = (1.0 - level) / 2.0 * 100.0
    with np.errstate(all="ignore"):
        return np.nanpercentile(samples, tail, axis=0), np.nanpercentile(samples, 100.0 - tail, axis=0)


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
    point, samples = bootstrap_draws(sums, estimators, resamples, seed)
    low, high = percentile_interval(samples, level)
    return pd.DataFrame({"estimator": list(estimators), "value": point, "ci_low": low, "ci_high": high})
