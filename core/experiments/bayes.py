"""Bayesian chance to beat control and expected loss, from an experiment's summary statistics.

Two posteriors, both exact or in closed form (no Monte Carlo, so the same numbers come back on
every run):

- **Rates** (0/1 metrics: converted, retained): each arm's rate has a Beta(1, 1) (uniform) prior
  and a Binomial likelihood, so its posterior is Beta(1 + successes, 1 + failures). The chance
  that the variant's rate is higher and the expected losses use the closed-form sum of Evan
  Miller (2015), which is exact for integer Beta parameters.
- **Means** (revenue, event counts, ratio metrics, CUPED-adjusted effects): a flat prior on the
  difference and a normal likelihood for its estimate give the posterior N(diff, se^2). It takes
  the estimate and its standard error, not the raw data, so it serves any estimator whose
  sampling distribution is close to normal (difference of means, delta method, CUPED).

"Expected loss" of a choice is what one expects to give up by making it: the mean of the
posterior of (other arm - chosen arm) where positive, zero elsewhere, in the metric's units
(a rate difference for rates). A common decision rule ships the variant when its expected loss
is below a threshold the team cares about (Stucchio 2015).

No maintained library computes these from aggregates with a stated prior, so they are written
here; the frequentist tests of the same metrics come from tea-tasting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import betaln, ndtr

from core.errors import TenureError

RATE_PRIOR = "Beta(1, 1) (uniform) on each arm's rate; posterior Beta(1 + successes, 1 + failures)"
MEAN_PRIOR = "flat (improper uniform) prior on the difference; posterior N(diff, se^2)"

# Terms of the closed-form sum computed at once; bounds memory for arms with millions of users.
_SUM_CHUNK = 1_000_000


@dataclass(frozen=True)
class BayesResult:
    """The Bayesian summary of one metric, variant against control.

    Attributes:
        chance_to_beat: posterior probability that the variant's value is higher than control's.
        expected_loss_variant: E[max(control - variant, 0)], what choosing the variant is
            expected to cost (in the metric's units).
        expected_loss_control: E[max(variant - control, 0)], what keeping control is expected
            to cost.
        prior: the prior in words, to show beside the numbers.
    """

    chance_to_beat: float
    expected_loss_variant: float
    expected_loss_control: float
    prior: str


def _check_arm(name: str, successes: int, n: int) -> None:
    """Refuse counts that are not a Binomial sample: n >= 1 trials, 0 <= successes <= n."""
    for label, value in ((f"{name}_successes", successes), (f"{name}_n", n)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TenureError(
                f"{label} must be a whole number of users, got {value!r}",
                "pass counts of users (successes and users exposed), not rates",
            )
    if n < 1:
        raise TenureError(
            f"{name}_n is {n}: the {name} arm has no users",
            "wait until both arms have exposed users before comparing them",
        )
    if not 0 <= successes <= n:
        raise TenureError(
            f"{name}_successes is {successes}, outside 0..{name}_n = {n}",
            "successes count users who converted among the arm's exposed users",
        )


def _sum_x_beats_y(a: int, b: int, c: int, d: int) -> float:
    """P(X > Y), X ~ Beta(a, b), Y ~ Beta(c, d) independent, by a sum of ``a`` terms.

    sum_{i=0}^{a-1} B(c + i, b + d) / ((b + i) B(1 + i, b) B(c, d)), exact for integer ``a``
    (Miller 2015). Every term is positive, so the sum has no cancellation.
    """
    total = 0.0
    for start in range(0, a, _SUM_CHUNK):
        i = np.arange(start, min(a, start + _SUM_CHUNK), dtype=np.float64)
        log_terms = betaln(c + i, b + d) - np.log(b + i) - betaln(1.0 + i, b) - betaln(c, d)
        total += float(np.exp(log_terms).sum())
    return total


def _beta_beats(a: int, b: int, c: int, d: int) -> float:
    """P(X > Y), X ~ Beta(a, b), Y ~ Beta(c, d), integer parameters, by the shortest sum.

    Four equivalent sums, over a, c, d or b terms: P(X > Y) = S(a, b, c, d) = 1 - S(c, d, a, b)
    (continuous, so ties have probability 0) and, since X > Y exactly when 1 - Y > 1 - X with
    1 - X ~ Beta(b, a), = S(d, c, b, a) = 1 - S(b, a, d, c). Picking the smallest keeps the
    cost at the smaller of the arms' success and failure counts.
    """
    shortest = min(a, b, c, d)
    if shortest == a:
        value = _sum_x_beats_y(a, b, c, d)
    elif shortest == c:
        value = 1.0 - _sum_x_beats_y(c, d, a, b)
    elif shortest == d:
        value = _sum_x_beats_y(d, c, b, a)
    else:
        value = 1.0 - _sum_x_beats_y(b, a, d, c)
    return min(1.0, max(0.0, value))


def chance_to_beat_rate(
    control_successes: int,
    control_n: int,
    variant_successes: int,
    variant_n: int,
) -> BayesResult:
    """Chance that the variant's rate beats control's, and the expected losses, Beta-Binomial.

    With the Beta(1, 1) prior, control's rate C ~ Beta(a, b) = Beta(1 + s_c, 1 + n_c - s_c)
    and the variant's V ~ Beta(c, d) = Beta(1 + s_v, 1 + n_v - s_v), independent. Then

        chance_to_beat        = P(V > C)                        (closed-form sum, Miller 2015)
        expected_loss_variant = E[max(C - V, 0)] = a/(a+b) P(C' > V) - c/(c+d) P(C > V')
        expected_loss_control = E[max(V - C, 0)] = expected_loss_variant + E[V] - E[C]

    where C' ~ Beta(a + 1, b) and V' ~ Beta(c + 1, d): x times the Beta(a, b) density is
    a/(a+b) times the Beta(a + 1, b) density, so E[C 1{C > V}] = E[C] P(C' > V) (Stucchio 2015).
    The uniform prior adds one success and one failure to each arm: it matters only for arms
    of a few dozen users, where no method says much.

    Args:
        control_successes: users of the control arm with the outcome (e.g. converted).
        control_n: users exposed in the control arm (at least 1).
        variant_successes: users of the variant arm with the outcome.
        variant_n: users exposed in the variant arm (at least 1).

    Returns:
        BayesResult with losses as differences of rates (0.01 = one percentage point).

    Raises:
        TenureError: an arm with no users, successes outside 0..n, or counts that are not
            whole numbers.

    References:
        E. Miller (2015), "Formulas for Bayesian A/B testing",
        https://www.evanmiller.org/bayesian-ab-testing.html.
        C. Stucchio (2015), "Bayesian A/B testing at VWO", VWO technical whitepaper.

    Example:
        >>> result = chance_to_beat_rate(100, 1000, 100, 1000)
        >>> round(result.chance_to_beat, 6)
        0.5
        >>> round(chance_to_beat_rate(100, 1000, 130, 1000).chance_to_beat, 3)
        0.982
    """
    _check_arm("control", control_successes, control_n)
    _check_arm("variant", variant_successes, variant_n)
    a, b = 1 + int(control_successes), 1 + int(control_n - control_successes)
    c, d = 1 + int(variant_successes), 1 + int(variant_n - variant_successes)
    mean_control, mean_variant = a / (a + b), c / (c + d)
    chance = _beta_beats(c, d, a, b)
    loss_variant = mean_control * _beta_beats(a + 1, b, c, d) - mean_variant * _beta_beats(a, b, c + 1, d)
    loss_variant = max(0.0, loss_variant)
    loss_control = max(0.0, loss_variant + mean_variant - mean_control)
    return BayesResult(chance, loss_variant, loss_control, RATE_PRIOR)


def chance_to_beat_mean(diff: float, se: float) -> BayesResult:
    """Chance that the variant beats control, and the expected losses, from a normal posterior.

    With a flat prior on the true difference delta and an estimate ``diff`` ~ N(delta, se^2),
    the posterior is delta ~ N(diff, se^2). With z = diff / se, Phi and phi the standard normal
    distribution and density:

        chance_to_beat        = P(delta > 0)        = Phi(z)
        expected_loss_variant = E[max(-delta, 0)]   = se phi(z) - diff Phi(-z)
        expected_loss_control = E[max(delta, 0)]    = se phi(z) + diff Phi(z)

    (E[max(X, 0)] = m Phi(m / s) + s phi(m / s) for X ~ N(m, s^2).) With the flat prior the
    chance to beat is 1 - the one-sided p-value of the z test, so the two never disagree on
    direction; what the Bayesian view adds is the expected loss, in the metric's units.

    Args:
        diff: estimated difference, variant minus control, in the metric's units (a difference
            of means, a delta-method ratio difference, a CUPED-adjusted effect).
        se: its standard error (> 0).

    Returns:
        BayesResult with losses in the metric's units.

    Raises:
        TenureError: a standard error that is not a positive finite number, or a non-finite
            difference.

    References:
        C. Stucchio (2015), "Bayesian A/B testing at VWO", VWO technical whitepaper.
        A. Gelman et al. (2013), "Bayesian Data Analysis", 3rd ed., sec. 2.5 (normal
        likelihood, flat prior).

    Example:
        >>> result = chance_to_beat_mean(0.0, 1.0)
        >>> result.chance_to_beat, round(result.expected_loss_variant, 4)
        (0.5, 0.3989)
    """
    if not math.isfinite(diff):
        raise TenureError(f"diff is {diff}: the estimated difference is not a number", None)
    if not (math.isfinite(se) and se > 0):
        raise TenureError(
            f"se is {se}: the standard error of the difference must be a positive number",
            "an arm with fewer than two users or no variation has no standard error; wait for more data",
        )
    z = diff / se
    density = math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    loss_variant = max(0.0, se * density - diff * float(ndtr(-z)))
    loss_control = max(0.0, se * density + diff * float(ndtr(z)))
    return BayesResult(float(ndtr(z)), loss_variant, loss_control, MEAN_PRIOR)
