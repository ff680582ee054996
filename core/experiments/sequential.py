"""Always-valid (sequential) p-values and confidence intervals, for experiments looked at daily.

A fixed-horizon test is valid at one look, planned in advance. Looked at every day and stopped
at the first "significant" day, it declares far more false winners than its alpha (about one
A/A test in four with 30 daily looks at alpha = 0.05). The mixture sequential probability ratio
test (mSPRT, Johari, Koomen, Pekelis & Walsh) gives p-values and intervals that stay valid
however often one looks and whenever one stops: P(the interval ever excludes the true effect)
<= alpha over the whole experiment. The price is a wider interval at any single look.

Everything here takes the estimate of the difference (variant - control) and its variance at
each look, so it serves a difference of means, a delta-method ratio or a CUPED-adjusted effect.
Arrays hold one entry per look, in time order.

The guarantee is exact for normal estimates with known variances; with variances estimated
from the data (s^2 / n per arm) it holds asymptotically, which is the usual plug-in of the
mSPRT in practice (Johari et al. 2022). The mixing variance ``tau2`` must be fixed
before the experiment (see ``mixing_variance``).

No maintained library computes these from aggregates, so they are written here; the
fixed-horizon tests come from tea-tasting.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import brentq

from core.errors import TenureError


class AlwaysValidInterval(NamedTuple):
    """Always-valid confidence bounds, one entry per look.

    Attributes:
        low: lower bounds of the difference (variant - control).
        high: upper bounds of the difference.
    """

    low: np.ndarray
    high: np.ndarray


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise TenureError(f"alpha is {alpha}: it must be strictly between 0 and 1", "e.g. 0.05")


def _check_tau2(tau2: float) -> None:
    if not (math.isfinite(tau2) and tau2 > 0):
        raise TenureError(
            f"tau2 is {tau2}: the mixing variance must be a positive number",
            "choose it before the experiment with mixing_variance(variance at the planned sample size)",
        )


def _looks(diff: ArrayLike, var: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The looks as float arrays of one shape; refuse variances that are not positive and finite."""
    diff_array, var_array = np.broadcast_arrays(
        np.asarray(diff, dtype=np.float64), np.asarray(var, dtype=np.float64)
    )
    if not np.all(np.isfinite(diff_array)):
        raise TenureError("diff has values that are not finite numbers", "drop the looks without an estimate")
    if not np.all(np.isfinite(var_array) & (var_array > 0)):
        raise TenureError(
            "var has values that are not positive finite numbers",
            "a look where an arm has fewer than two users has no variance; start at a later look",
        )
    return diff_array, var_array


def log_likelihood_ratio(diff: ArrayLike, var: ArrayLike, tau2: float) -> np.ndarray:
    """log of the mixture likelihood ratio Lambda of "effect != 0" against "effect = 0".

    With the estimate diff ~ N(delta, var) and the mixture delta ~ N(0, tau2) under the
    alternative,

        Lambda = integral N(diff; delta, var) / N(diff; 0, var) dN(delta; 0, tau2)
               = sqrt(var / (var + tau2)) exp(tau2 diff^2 / (2 var (var + tau2))).

    Under "effect = 0", Lambda over the looks is a nonnegative martingale with mean 1, so by
    Ville's inequality P(Lambda ever >= 1/alpha) <= alpha. Returned in logs, which never
    overflow.

    Args:
        diff: estimated difference at each look.
        var: its variance at each look (se^2, e.g. s_c^2 / n_c + s_v^2 / n_v).
        tau2: mixing variance, fixed in advance.

    Returns:
        log Lambda per look.
    """
    _check_tau2(tau2)
    diff_array, var_array = _looks(diff, var)
    total = var_array + tau2
    return 0.5 * np.log(var_array / total) + tau2 * diff_array**2 / (2.0 * var_array * total)


def always_valid_p_value(diff: ArrayLike, var: ArrayLike, tau2: float) -> np.ndarray:
    """The mSPRT p-value at each look, min(1, 1 / Lambda), not yet made running.

    Args:
        diff: estimated difference (variant - control) at each look.
        var: its variance at each look.
        tau2: mixing variance, fixed in advance (``mixing_variance``).

    Returns:
        p-values in (0, 1]; ``running_p_value`` gives the always-valid sequence.

    References:
        R. Johari, P. Koomen, L. Pekelis, D. Walsh (2022), "Always valid inference: continuous
        monitoring of A/B tests", Operations Research 70(3), 1806-1821 (arXiv:1512.04922).

    Example:
        >>> [round(float(p), 4) for p in always_valid_p_value([0.0, 0.3], [0.01, 0.01], 0.05)]
        [1.0, 0.0576]
    """
    return np.exp(-np.maximum(log_likelihood_ratio(diff, var, tau2), 0.0))


def always_valid_interval(
    diff: ArrayLike, var: ArrayLike, tau2: float, alpha: float = 0.05
) -> AlwaysValidInterval:
    """The mSPRT confidence interval at each look, not yet intersected over looks.

    The interval holds the effects delta0 that the mSPRT of "effect = delta0" does not reject,
    {delta0 : Lambda(diff - delta0) < 1/alpha}, that is diff +/- h with

        h^2 = (2 var (var + tau2) / tau2) (log(1/alpha) + 0.5 log((var + tau2) / var)).

    Args:
        diff: estimated difference (variant - control) at each look.
        var: its variance at each look.
        tau2: mixing variance, fixed in advance (``mixing_variance``).
        alpha: 1 - confidence level, over all looks together.

    Returns:
        ``AlwaysValidInterval(low, high)``; ``running_interval`` gives the always-valid sequence.

    References:
        Johari et al. (2022), as in ``always_valid_p_value``.
        S. R. Howard, A. Ramdas, J. McAuliffe, J. Sekhon (2021), "Time-uniform, nonparametric,
        nonasymptotic confidence sequences", Annals of Statistics 49(2), 1055-1080 (the
        normal-mixture boundary).

    Example:
        >>> low, high = always_valid_interval([0.3], [0.01], 0.05)
        >>> round(float(low[0]), 4), round(float(high[0]), 4)
        (-0.0056, 0.6056)
    """
    _check_tau2(tau2)
    _check_alpha(alpha)
    diff_array, var_array = _looks(diff, var)
    total = var_array + tau2
    half_width = np.sqrt(
        (2.0 * var_array * total / tau2) * (math.log(1.0 / alpha) + 0.5 * np.log(total / var_array))
    )
    return AlwaysValidInterval(diff_array - half_width, diff_array + half_width)


def _one_dimensional(name: str, values: np.ndarray) -> None:
    if values.ndim != 1:
        raise TenureError(f"{name} must hold one value per look (a 1-D array), got shape {values.shape}")


def running_p_value(diff: ArrayLike, var: ArrayLike, tau2: float) -> np.ndarray:
    """The always-valid p-value over looks: the running minimum of ``always_valid_p_value``.

    p_n = min over looks k <= n of min(1, 1 / Lambda_k). It never rises, so a result once
    significant stays significant, and P(p_n ever <= alpha) <= alpha under "no effect".

    Args:
        diff: estimated difference at each look, in time order (1-D).
        var: its variance at each look.
        tau2: mixing variance, fixed in advance.

    Returns:
        p-values, one per look, non-increasing.
    """
    p_values = always_valid_p_value(diff, var, tau2)
    _one_dimensional("diff", p_values)
    return np.minimum.accumulate(p_values)


def running_interval(
    diff: ArrayLike, var: ArrayLike, tau2: float, alpha: float = 0.05
) -> AlwaysValidInterval:
    """The always-valid confidence sequence: the intersection of the intervals of all looks so far.

    low_n = max over k <= n of low_k, high_n = min over k <= n of high_k. Intersecting keeps the
    guarantee (the true effect is in every interval at once with probability >= 1 - alpha) and
    never widens. An empty intersection (low > high) happens with probability <= alpha when the
    assumptions hold; it is returned as it is, not hidden, since it means the data disagree with
    the model (e.g. an effect that changed over time).

    Args:
        diff: estimated difference at each look, in time order (1-D).
        var: its variance at each look.
        tau2: mixing variance, fixed in advance.
        alpha: 1 - confidence level, over all looks together.

    Returns:
        ``AlwaysValidInterval(low, high)``, low non-decreasing, high non-increasing.
    """
    low, high = always_valid_interval(diff, var, tau2, alpha)
    _one_dimensional("diff", low)
    return AlwaysValidInterval(np.maximum.accumulate(low), np.minimum.accumulate(high))


def mixing_variance(final_var: float, alpha: float = 0.05) -> float:
    """The mixing variance tau2 that makes the interval narrowest at the planned final look.

    tau2 is the variance of the effects the test is tuned to find: any value fixed before the
    experiment keeps the guarantee, but a value chosen from the data at each look does not (the
    likelihood ratio is then no longer a martingale, and Ville's inequality no longer applies).
    So it is chosen from what is known in advance: ``final_var``, the variance of the estimate
    at the planned sample size (e.g. s_c^2 / N_c + s_v^2 / N_v with pre-experiment variances
    and the planned users per arm).

    With r = tau2 / var, the squared half-width is var * 2 (1 + 1/r) (L + 0.5 log(1 + r)),
    L = log(1/alpha). Its derivative in r is zero where

        r = 2 L + log(1 + r),

    which has one positive root (r - log(1 + r) increases on r > 0), a minimum: r = 8.21 at
    alpha = 0.05, so tau2 = 8.21 * final_var, a prior standard deviation of the effect of about
    2.9 final standard errors. This makes the interval at the planned end, the look at which a
    decision is expected, as narrow as the mSPRT allows: about 1.55 times as wide as the
    fixed-horizon 95% interval there. Earlier looks are valid too, only wider. Johari et al.
    (2022) instead fit tau2 to the effects of past experiments when there are enough of
    them; this choice needs none.

    Args:
        final_var: variance of the difference estimate at the planned final sample size (> 0).
        alpha: the alpha the intervals will use.

    Returns:
        tau2, in the units of the difference squared.

    Example:
        >>> round(mixing_variance(1.0), 3)
        8.212
    """
    _check_alpha(alpha)
    if not (math.isfinite(final_var) and final_var > 0):
        raise TenureError(
            f"final_var is {final_var}: the planned variance of the estimate must be a positive number",
            "compute it from the pre-experiment variance of the metric and the planned users per arm",
        )
    twice_log = 2.0 * math.log(1.0 / alpha)
    # f(r) = r - 2L - log(1 + r) is negative at r = 2L and positive at r = 2L + 2 log(1 + 2L) + 1.
    ratio = brentq(
        lambda r: r - twice_log - math.log1p(r),
        twice_log,
        twice_log + 2.0 * math.log1p(twice_log) + 1.0,
        xtol=1e-12,
    )
    return float(ratio * final_var)
