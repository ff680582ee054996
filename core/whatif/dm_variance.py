"""The direct method's interval with the reward model's own error in it.

DM averages the reward model's predictions, so its error has two parts: which requests happen to
be in the log (the request bootstrap measures it, with the model held fixed) and which rows the
model happened to be fitted on (the bootstrap cannot see it; with few rewards it dominates). The
second part is measured by refitting:

1. Each cross-fitted model (fold f, fitted on n_f rows of the other fold) is refitted ``refits``
   times (3) on random subsamples of its training rows, each request kept with probability s
   (0.5: half samples), with the same settings and the same bins.
2. Each refit gives fold f's DM contribution T_f = (1/n) sum over fold f's evaluated rows of
   sum_a pi_e(a | x, p) q(x, a, p), scored on ``weighted_cells`` (at most 20,000 cells drawn in
   proportion to their weight in T_f, all of them when fewer; the same cells for every refit,
   so their noise adds to the variance on average and never takes from it).
3. A subsample of m of n rows varies around the full fit about (n - m) / m times as much as the
   full fit varies between samples of n rows (subsampling: Politis, Romano & Wolf 1999,
   "Subsampling", ch. 2, for statistics converging at the square-root rate; exact for a mean),
   so the model variance of T_f is var(T_f over refits) * s / (1 - s) (with half samples,
   var(T_f over refits) itself: the classical half-sample variance, which needs no assumption on
   how fast the model's error shrinks), and the folds' models, fitted on disjoint rows, add:
   V_model = sum_f V_f.
4. The interval is DM +- t * sqrt(V_sampling + V_model), V_sampling the variance of the request
   bootstrap's DM values, t the Student quantile with the Welch-Satterthwaite degrees of freedom
   (V_total^2 / sum_f V_f^2 / (refits - 1); the bootstrap's part counted as exact), since V_model
   rests on a few refits.

What it does not cover: a model that is wrong the same way in every refit (a feature the log does
not hold, such as a hidden taste the logging policy used) is biased, not variable; no interval
built from the log alone sees that. The disagreement between DM and DR is the warning for it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

MAX_CELLS = 20_000


class WeightedCells(NamedTuple):
    """Cells (context, item, position codes) and weights with sum(weight * q) estimating the sum
    over a fold's evaluated rows of sum_a pi_e(a | x, p) q(x, a, p)."""

    context: np.ndarray
    item: np.ndarray
    position: np.ndarray
    weight: np.ndarray


def weighted_cells(
    rows_per_cell: pd.DataFrame, probabilities: np.ndarray, seed: int, limit: int = MAX_CELLS
) -> WeightedCells:
    """The cells that DM's sum needs for one fold, exact or a sample of them.

    Args:
        rows_per_cell: the fold's evaluated rows per (context, position): columns context,
            position, rows.
        probabilities: the target's (1 or C, K, P) array.
        seed: seeds the sample when there are more than ``limit`` cells.
        limit: above this many cells with a positive weight, ``limit`` cells are drawn with
            probability proportional to their weight (with replacement), each weighted
            total / limit: an unbiased estimate of the sum for any q (importance sampling).
    """
    context = rows_per_cell["context"].to_numpy(dtype=np.int64)
    position = rows_per_cell["position"].to_numpy(dtype=np.int64)
    pi = probabilities[context if probabilities.shape[0] > 1 else np.zeros_like(context), :, position]
    weight = rows_per_cell["rows"].to_numpy(dtype=np.float64)[:, None] * pi
    pair, item = np.nonzero(weight > 0)
    weight = weight[pair, item]
    if len(weight) > limit:
        total = weight.sum()
        chosen = np.random.default_rng(seed).choice(len(weight), size=limit, p=weight / total)
        pair, item, weight = pair[chosen], item[chosen], np.full(limit, total / limit)
    return WeightedCells(context[pair], item, position[pair], weight)


def subsample_variance(contributions: np.ndarray, share: float) -> float:
    """Model variance of a full fit from refits on subsamples keeping ``share`` of its rows:
    var(contributions) * share / (1 - share) (step 3 of the module docstring)."""
    contributions = np.asarray(contributions, dtype=np.float64)
    if len(contributions) < 2 or not 0.0 < share < 1.0:
        return 0.0
    return float(contributions.var(ddof=1) * share / (1.0 - share))


def dm_interval(
    value: float, sampling_draws: np.ndarray, model_variances: list[float], refits: int, level: float
) -> tuple[float, float, float]:
    """(low, high, degrees of freedom) of DM +- t * sqrt(V_sampling + V_model) (step 4)."""
    draws = np.asarray(sampling_draws, dtype=np.float64)
    draws = draws[np.isfinite(draws)]
    sampling = float(draws.var(ddof=1)) if len(draws) > 1 else 0.0
    model = float(sum(model_variances))
    total = sampling + model
    spread = sum(part**2 for part in model_variances) / max(refits - 1, 1)
    freedom = total**2 / spread if spread > 0 else np.inf
    half_width = stats.t.ppf((1.0 + level) / 2.0, freedom) * np.sqrt(total)
    return value - half_width, value + half_width, float(freedom)
