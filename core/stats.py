"""Statistics computed from aggregates: the database counts, these functions finish the job.

Every function here takes small arrays of counts (one entry per cell of a chart), never raw
events, so the same code serves a sample store and a warehouse-sized one.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import ndtri

from core.errors import TenureError


class Interval(NamedTuple):
    """A two-sided confidence interval, element-wise over the input arrays.

    Attributes:
        lower: lower bounds, in [0, 1]; NaN where the number of trials is 0.
        upper: upper bounds, in [0, 1]; NaN where the number of trials is 0.
    """

    lower: np.ndarray
    upper: np.ndarray


def wilson_interval(successes: ArrayLike, n: ArrayLike, confidence: float = 0.95) -> Interval:
    """Wilson score interval for a binomial proportion, vectorised.

    With ``p = successes / n`` and ``z`` the ``(1 + confidence) / 2`` quantile of the standard
    normal distribution, the bounds are

        (p + z^2 / (2n) -/+ z * sqrt(p (1 - p) / n + z^2 / (4 n^2))) / (1 + z^2 / n).

    Unlike the normal ("Wald") interval it stays inside [0, 1] and keeps close to its nominal
    coverage for small ``n`` and for rates near 0 or 1, which is where retention cells live
    (small late cohorts, rates of a few percent). Cells with ``n == 0`` get NaN bounds.

    Args:
        successes: number of successes per cell (e.g. retained users); 0 <= successes <= n.
        n: number of trials per cell (e.g. eligible users).
        confidence: two-sided confidence level, strictly between 0 and 1.

    Returns:
        ``Interval(lower, upper)``: float arrays of the broadcast shape of the inputs.

    References:
        E. B. Wilson (1927), "Probable inference, the law of succession, and statistical
        inference", Journal of the American Statistical Association 22(158), 209-212.
        L. D. Brown, T. T. Cai, A. DasGupta (2001), "Interval estimation for a binomial
        proportion", Statistical Science 16(2), 101-133, eq. (4).

    Example:
        >>> lower, upper = wilson_interval([8, 0], [10, 0])
        >>> [round(float(lower[0]), 4), round(float(upper[0]), 4)]
        [0.4902, 0.9433]
        >>> bool(np.isnan(lower[1]))
        True
    """
    if not 0 < confidence < 1:
        raise TenureError(f"confidence {confidence} is not between 0 and 1", "use e.g. 0.95")
    successes_array = np.asarray(successes, dtype=float)
    trials = np.asarray(n, dtype=float)
    if np.any(trials < 0) or np.any(successes_array < 0) or np.any(successes_array > trials):
        raise TenureError("Wilson interval needs 0 <= successes <= n for every cell")
    z = float(ndtri(0.5 + confidence / 2))
    z2 = z * z
    with np.errstate(divide="ignore", invalid="ignore"):
        proportion = successes_array / trials
        denominator = 1 + z2 / trials
        centre = (proportion + z2 / (2 * trials)) / denominator
        half_width = (z / denominator) * np.sqrt(
            proportion * (1 - proportion) / trials + z2 / (4 * trials * trials)
        )
    # At 0 and n successes the bounds are exactly 0 and 1; pin them against rounding.
    lower = np.where(successes_array == 0, 0.0, np.clip(centre - half_width, 0.0, 1.0))
    upper = np.where(successes_array == trials, 1.0, np.clip(centre + half_width, 0.0, 1.0))
    empty = trials == 0
    lower = np.where(empty, np.nan, lower)
    upper = np.where(empty, np.nan, upper)
    return Interval(lower, upper)
