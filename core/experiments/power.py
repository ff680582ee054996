"""Planning an experiment: the minimum detectable effect and the users (and days) a test needs.

The inputs of a power calculation are the metric's mean and variance, and the traffic. Guessing
them is where plans go wrong, so they are measured from the store: the metric exactly as a review
would compute it (``metrics.per_user_sql``: each user's window from their own assignment), over
the users of an existing experiment, all arms pooled (or one arm, e.g. the control, to leave a
shipped effect out of the variance). The traffic is that experiment's assigned users per day.
The statistics are tea-tasting's power analysis (``solve_power_from_aggregates``), fed with the
same DuckDB moment sums as the review:

- rates (conversion, retention): ``tt.Mean`` on the 0/1 value with the normal approximation,
  the power counterpart of the review's unpooled two-proportion z-test;
- means (revenue, events): ``tt.Mean`` with Student's t (noncentral t under the alternative);
- ratio metrics: ``tt.RatioOfMeans`` (delta method);
- with CUPED, the pre-period covariate enters the metric (``tt.Mean(value, covariate)``), so the
  variance is the residual variance sigma^2 (1 - rho^2) the adjusted test will have
  (Deng, Xu, Kohavi & Walker 2013).

For a two-arm test with n users per arm the answer is close to the textbook
n = 2 (z_{1-alpha/2} + z_{power})^2 sigma^2 / delta^2 (van Belle 2008, ch. 2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import tea_tasting as tt
from tea_tasting.aggr import Aggregates

from core.errors import TenureError
from core.experiments.analysis import variant_moments
from core.experiments.assignments import experiment_users
from core.experiments.metrics import Design, MetricSpec, covariate_columns, value_columns
from core.experiments.moments import aggregates
from core.store import Store

DEFAULT_DAYS_GRID = (7, 14, 28, 56)
DEFAULT_POWER = 0.8
DEFAULT_ALPHA = 0.05

BASELINE_COLUMNS = ["metric", "users", "mean", "sd", "variance_reduction"]
MDE_COLUMNS = ["metric", "days", "users_per_arm", "mean", "mde_abs", "mde_rel", "cuped"]
SAMPLE_SIZE_COLUMNS = [
    "metric",
    "mean",
    "rel_effect",
    "abs_effect",
    "users_per_arm",
    "total_users",
    "days",
    "cuped",
]


@dataclass(frozen=True)
class PowerSettings:
    """The test the plan is for.

    Attributes:
        power: the chance of detecting a true effect of the planned size (default 80%).
        alpha: the two-sided significance level (default 5%).
        cuped: plan for the CUPED-adjusted test (uses the pre-period covariate's variance reduction).
        arms: arms sharing the traffic equally (control included); each variant is compared with the
            control, so one comparison uses two arms' users.
    """

    power: float = DEFAULT_POWER
    alpha: float = DEFAULT_ALPHA
    cuped: bool = False
    arms: int = 2

    def __post_init__(self) -> None:
        if not 0.5 <= self.power < 1:
            raise TenureError(f"power {self.power} is out of range", "use a power such as 0.8 (50% to 99%)")
        if not 0 < self.alpha < 0.5:
            raise TenureError(f"alpha {self.alpha} is out of range", "use a level such as 0.05")
        if self.arms < 2:
            raise TenureError(f"{self.arms} arms", "an experiment has at least two arms")


@dataclass(frozen=True)
class Baseline:
    """What the store says about each metric before any change: its moments and the traffic.

    Attributes:
        design: the metrics and their window.
        population: in words, whose values were measured.
        moments: pooled moment sums (one row, the columns of ``moments.moments_sql``).
        daily_users: users entering the experiment per day (assigned users over the days from the
            first to the last assignment, at least one day).
    """

    design: Design
    population: str
    moments: pd.Series
    daily_users: float

    def aggregates(self, index: int) -> Aggregates:
        return aggregates(self.moments, index, self.design.metrics[index])

    def table(self) -> pd.DataFrame:
        """Per metric: users measured, mean, standard deviation, CUPED's variance reduction
        (the share of variance the pre-period explains, rho^2; NaN without a usable pre-period)."""
        rows = []
        for index, spec in enumerate(self.design.metrics):
            data = self.aggregates(index)
            plain = _variance(_tea_metric(spec, index, cuped=False), data)
            adjusted = (
                _variance(_tea_metric(spec, index, cuped=True), data)
                if _usable_covariate(spec, index, data)
                else float("nan")
            )
            rows.append(
                {
                    "metric": spec.name,
                    "users": data.count(),
                    "mean": _mean(spec, index, data),
                    "sd": math.sqrt(plain) if plain >= 0 else float("nan"),
                    "variance_reduction": 1 - adjusted / plain if plain > 0 else float("nan"),
                }
            )
        return pd.DataFrame(rows, columns=BASELINE_COLUMNS)


def measure_baseline(store: Store, design: Design, variant: str | None = None) -> Baseline:
    """Moments of every metric of ``design`` over the users of ``design.experiment``.

    Args:
        variant: measure one arm only (e.g. the control); None pools every arm, which includes
            any effect the experiment had in the variance (slightly conservative).
    """
    users = experiment_users(store, design.experiment)
    if variant is not None and variant not in users.users:
        raise TenureError(
            f"variant '{variant}' is not an arm of '{design.experiment}'", f"arms: {', '.join(users.users)}"
        )
    moments = variant_moments(store, design)
    moments["g0"] = moments["g0"].astype(str)
    chosen = moments if variant is None else moments[moments["g0"] == variant]
    sums = chosen.drop(columns=["g0"]).astype(float).sum(axis=0)
    span_days = (users.last_assigned - users.first_assigned).total_seconds() / 86_400
    who = f"the users of '{design.experiment}'" + (f" in arm '{variant}'" if variant else ", all arms pooled")
    return Baseline(design, who, sums, users.total_users / max(span_days, 1.0))


def minimum_detectable_effects(
    baseline: Baseline, users_per_arm: Sequence[int], settings: PowerSettings | None = None
) -> pd.DataFrame:
    """The smallest true effect each metric's test detects with the chosen power.

    One row per metric and size: ``mde_abs`` in the metric's unit, ``mde_rel`` relative to the
    baseline mean (``days`` is NaN: see ``mde_by_days``).
    """
    settings = settings or PowerSettings()
    rows = []
    for index, spec in enumerate(baseline.design.metrics):
        data = baseline.aggregates(index)
        cuped = settings.cuped and _usable_covariate(spec, index, data)
        for n in users_per_arm:
            if n < 2:
                raise TenureError(f"{n} users per arm", "plan for at least 2 users per arm")
            mde = _solve(spec, index, data, settings, cuped, "effect_size", n_obs=2 * int(n))
            mean = _mean(spec, index, data)
            rows.append(
                {
                    "metric": spec.name,
                    "days": float("nan"),
                    "users_per_arm": int(n),
                    "mean": mean,
                    "mde_abs": mde,
                    "mde_rel": mde / mean if mean else float("nan"),
                    "cuped": cuped,
                }
            )
    return pd.DataFrame(rows, columns=MDE_COLUMNS)


def mde_by_days(
    baseline: Baseline,
    days: Sequence[int] = DEFAULT_DAYS_GRID,
    settings: PowerSettings | None = None,
    daily_users: float | None = None,
) -> pd.DataFrame:
    """The minimum detectable effect after running for each number of days.

    Users per arm = daily users x days / arms (``daily_users`` defaults to the baseline's
    observed traffic). Each user's metric window (``design.horizon_days``) still has to end
    after the last day of enrolment before the review reads the metric.
    """
    settings = settings or PowerSettings()
    traffic = baseline.daily_users if daily_users is None else float(daily_users)
    if not traffic > 0:
        raise TenureError(f"daily users {traffic}", "give a positive number of users per day")
    per_arm = [max(int(traffic * d / settings.arms), 2) for d in days]
    table = minimum_detectable_effects(baseline, per_arm, settings)
    table["days"] = np.tile(np.asarray(days, dtype=float), len(baseline.design.metrics))
    return table


def users_needed(
    baseline: Baseline,
    rel_effect: float,
    settings: PowerSettings | None = None,
    daily_users: float | None = None,
) -> pd.DataFrame:
    """Users per arm, in all, and days of enrolment to detect a relative effect ``rel_effect``
    (e.g. 0.05 for +5%) on each metric with the chosen power."""
    settings = settings or PowerSettings()
    if rel_effect == 0 or not math.isfinite(rel_effect):
        raise TenureError(f"relative effect {rel_effect}", "give a non-zero effect such as 0.05 for +5%")
    traffic = baseline.daily_users if daily_users is None else float(daily_users)
    rows = []
    for index, spec in enumerate(baseline.design.metrics):
        data = baseline.aggregates(index)
        cuped = settings.cuped and _usable_covariate(spec, index, data)
        mean = _mean(spec, index, data)
        total = _solve(spec, index, data, settings, cuped, "n_obs", rel_effect=rel_effect)
        per_arm = math.ceil(total / 2) if math.isfinite(total) else float("nan")
        everyone = per_arm * settings.arms if math.isfinite(total) else float("nan")
        rows.append(
            {
                "metric": spec.name,
                "mean": mean,
                "rel_effect": rel_effect,
                "abs_effect": rel_effect * mean,
                "users_per_arm": per_arm,
                "total_users": everyone,
                "days": math.ceil(everyone / traffic)
                if traffic > 0 and math.isfinite(everyone)
                else float("nan"),
                "cuped": cuped,
            }
        )
    return pd.DataFrame(rows, columns=SAMPLE_SIZE_COLUMNS)


def _tea_metric(
    spec: MetricSpec, index: int, cuped: bool, normal: bool = False, **power: object
) -> tt.metrics.RatioOfMeans:
    """``normal`` forces the normal approximation (Student's t otherwise, except for rates)."""
    values = value_columns(index, spec)
    covariates = covariate_columns(index, spec) if cuped else [None, None]
    if spec.is_ratio:
        return tt.RatioOfMeans(
            values[0], values[1], covariates[0], covariates[1], equal_var=False, use_t=not normal, **power
        )  # type: ignore[arg-type]
    use_t = not (spec.is_rate or normal)
    return tt.Mean(values[0], covariates[0], equal_var=False, use_t=use_t, **power)  # type: ignore[arg-type]


def _solve(
    spec: MetricSpec,
    index: int,
    data: Aggregates,
    settings: PowerSettings,
    cuped: bool,
    parameter: str,
    n_obs: int | None = None,
    rel_effect: float | None = None,
) -> float:
    """One tea-tasting power solve; NaN where the metric does not vary."""
    if data.count() < 2 or not _variance(_tea_metric(spec, index, cuped), data) > 0:
        return float("nan")
    solve = {
        "alpha": settings.alpha,
        "power": settings.power,
        "ratio": 1,
        "n_obs": n_obs,
        "rel_effect_size": rel_effect,
    }
    try:
        result = _tea_metric(spec, index, cuped, **solve).solve_power_from_aggregates(data, parameter)  # type: ignore[arg-type]
    except ValueError:
        # scipy's noncentral t returns NaN far in its tail (e.g. nct(df, 13).cdf(-1.96)), which
        # stops the root search; where that happens the sample is large and t equals the normal.
        result = _tea_metric(spec, index, cuped, normal=True, **solve).solve_power_from_aggregates(
            data, parameter
        )  # type: ignore[arg-type]
    return float(getattr(result[0], parameter))


def _variance(metric: tt.metrics.RatioOfMeans, data: Aggregates) -> float:
    """The per-user variance of the (linearised, covariate-adjusted) metric the test uses."""
    data = data.with_zero_div()
    return float(metric._metric_var(data, metric._covariate_coef(data)))


def _mean(spec: MetricSpec, index: int, data: Aggregates) -> float:
    values = value_columns(index, spec)
    if spec.is_ratio:
        denominator = data.mean(values[1])
        return data.mean(values[0]) / denominator if denominator else float("nan")
    return data.mean(values[0])


def _usable_covariate(spec: MetricSpec, index: int, data: Aggregates) -> bool:
    """CUPED needs a pre-period that varies (and a ratio's denominator that is not all 0)."""
    covariates = covariate_columns(index, spec)
    if any(not data.var(c) > 0 for c in covariates):
        return False
    return not (spec.is_ratio and not data.mean(covariates[1]) > 0)
