"""One experiment's review: every metric of every variant against the control.

The frequentist statistics come from tea-tasting, fed with aggregates computed in DuckDB
(``moments.py``): rates use its two-proportion z-test (unpooled variance, so the interval and the
p-value agree), means its Welch t-test, ratio metrics its delta method, and CUPED its covariate
adjustment on the pre-period value (Deng, Xu, Kohavi & Walker 2013). Holm or Benjamini-Hochberg
across all metrics and variants also come from tea-tasting. See docs/METRICS.md, "A/B experiments".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
import tea_tasting as tt
from scipy import stats
from tea_tasting.aggr import Aggregates
from tea_tasting.experiment import ExperimentResult, ExperimentResults

from core.errors import TenureError
from core.experiments.assignments import ExperimentUsers, experiment_users
from core.experiments.bayes import chance_to_beat_mean, chance_to_beat_rate
from core.experiments.cumulative import cumulative_from_moments
from core.experiments.metrics import Design, MetricSpec, covariate_columns, value_columns
from core.experiments.moments import DAILY_GROUPS, aggregates, moment_sums
from core.experiments.sequential import always_valid_interval, always_valid_p_value, mixing_variance
from core.store import Store

Correction = Literal["holm", "bh"]
CORRECTIONS: dict[str, str] = {"holm": "Holm", "bh": "Benjamini-Hochberg"}

CONTRACT_COLUMNS = [
    "metric",
    "variant",
    "control_value",
    "variant_value",
    "abs_diff",
    "rel_diff",
    "ci_low",
    "ci_high",
    "p_value",
    "p_adjusted",
]


@dataclass(frozen=True)
class Options:
    """How to analyse: the control, CUPED, the correction across tests, the level."""

    control: str | None = None
    cuped: bool = False
    correction: Correction = "holm"
    alpha: float = 0.05

    def __post_init__(self) -> None:
        if self.correction not in CORRECTIONS:
            raise TenureError(f"unknown correction '{self.correction}'", "use holm or bh")
        if not 0 < self.alpha < 0.5:
            raise TenureError(f"alpha {self.alpha} is out of range", "use a level such as 0.05")


@dataclass
class Review:
    """A whole review: who is in it, the metric table, and what the reader must be told."""

    design: Design
    options: Options
    users: ExperimentUsers
    control: str
    results: pd.DataFrame
    warnings: list[str] = field(default_factory=list)
    cumulative: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def trustworthy(self) -> bool:
        return not self.users.srm_failed


def choose_control(variants: list[str], requested: str | None) -> str:
    """The requested variant, else the one named ``control``, else the first in sort order."""
    if requested is not None:
        if requested not in variants:
            raise TenureError(f"--control '{requested}' is not a variant", f"variants: {', '.join(variants)}")
        return requested
    return "control" if "control" in variants else sorted(variants)[0]


def variant_moments(store: Store, design: Design, extra_group: list[str] | None = None) -> pd.DataFrame:
    """Moment sums per variant (``g0``) and per any further grouping (``g1``...)."""
    return moment_sums(store, design, ["variant", *(extra_group or [])])


def experiment_arms(
    store: Store, experiment: str, options: Options, users: ExperimentUsers | None = None
) -> tuple[ExperimentUsers, str]:
    """The experiment's users and its control; refused when there is nothing to compare."""
    users = users if users is not None else experiment_users(store, experiment)
    variants = list(users.users)
    if len(variants) < 2:
        raise TenureError(
            f"experiment '{experiment}' has one variant only ({variants[0]})",
            "a review compares at least two variants",
        )
    return users, choose_control(variants, options.control)


def review(
    store: Store,
    design: Design,
    options: Options | None = None,
    daily: pd.DataFrame | None = None,
    users: ExperimentUsers | None = None,
) -> Review:
    """Analyse every metric of ``design`` for every variant against the control.

    ``daily`` and ``users``: ``moments.moment_sums(store, design)`` and
    ``experiment_users(store, design.experiment)`` when the caller has already run them (the
    command line runs both while the statistics stack imports). CUPED needs the pre-period.
    """
    options = options or Options()
    if options.cuped and not design.pre_period:
        raise TenureError("CUPED needs the pre-period", "measure it: Design(..., pre_period=True)")
    users, control = experiment_arms(store, design.experiment, options, users)
    if daily is None:
        daily = moment_sums(store, design, DAILY_GROUPS)
    by_variant = {
        str(variant): part.drop(columns=["g0", "g1"]).sum()
        for variant, part in daily.groupby("g0", sort=True)
    }
    results = compare(by_variant, design, options, control)
    cumulative = cumulative_from_moments(daily, design, control, options.alpha, cuped=options.cuped)
    results = _with_running_sequential(results, cumulative)
    notes = _warnings(users, design, results)
    partial = int(daily["partial_users"].sum()) if "partial_users" in daily else 0
    windowed = [spec.label(design.days) for spec in design.metrics if spec.kind != "retention"]
    if partial and windowed:
        notes.append(
            f"{partial:,} users were assigned less than {design.days} days before the data's end: for "
            f"{', '.join(windowed)} they count what they did so far (a partial window). Shorten the window or "
            "wait for more data to compare whole windows."
        )
    return Review(design, options, users, control, results, notes, cumulative)


def _with_running_sequential(results: pd.DataFrame, cumulative: pd.DataFrame) -> pd.DataFrame:
    """The always-valid figures of the table are the last day of the cumulative view (a look
    every day since the first assignment), where that view estimates the same effect (the same
    CUPED choice); elsewhere (ratio metrics with CUPED) they stay those of a single look."""
    if cumulative.empty or results.empty:
        return results
    last = cumulative.groupby(["metric", "variant"], sort=False).tail(1).set_index(["metric", "variant"])
    results = results.copy()
    for position, row in results.iterrows():
        key = (row["metric"], row["variant"])
        if key in last.index and bool(last.loc[key, "cuped"]) == bool(row["cuped"]):
            for column in ("seq_ci_low", "seq_ci_high", "seq_p_value"):
                results.at[position, column] = last.loc[key, column]
    return results


def compare(by_variant: dict[str, pd.Series], design: Design, options: Options, control: str) -> pd.DataFrame:
    """The metric table from moment sums per variant (also used per segment and per day)."""
    rows: list[dict[str, object]] = []
    raw: dict[str, ExperimentResult] = {}
    for variant in sorted(v for v in by_variant if v != control):
        per_metric: dict[str, object] = {}
        for index, spec in enumerate(design.metrics):
            control_aggr = aggregates(by_variant[control], index, spec)
            variant_aggr = aggregates(by_variant[variant], index, spec)
            row = analyse_metric(spec, index, control_aggr, variant_aggr, options)
            row.update(metric=spec.name, variant=variant)
            rows.append(row)
            per_metric[spec.name] = row["_result"]
        raw[variant] = ExperimentResult(per_metric)
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=CONTRACT_COLUMNS)
    table["p_adjusted"] = adjusted_p_values(raw, control, options)
    table = table.drop(columns=["_result"])
    extra = [c for c in table.columns if c not in CONTRACT_COLUMNS]
    return table[CONTRACT_COLUMNS + extra]


def analyse_metric(
    spec: MetricSpec, index: int, control: Aggregates, variant: Aggregates, options: Options
) -> dict[str, object]:
    """One metric, one variant: the effect, its interval and test, via tea-tasting."""
    confidence = 1 - options.alpha
    values = value_columns(index, spec)
    covariates = covariate_columns(index, spec) if options.cuped else []
    if covariates and not _informative(covariates, control + variant):
        covariates = []
    metric = _tea_metric(spec, values, covariates, confidence)
    empty = control.count() < 2 or variant.count() < 2
    if empty:
        result = None
    else:
        with np.errstate(all="ignore"):
            result = metric.analyze_aggregates(control, variant)
    se = _standard_error(metric, control, variant) if result is not None else float("nan")
    row: dict[str, object] = {
        "control_users": control.count(),
        "variant_users": variant.count(),
        "control_value": _field(result, "control"),
        "variant_value": _field(result, "treatment"),
        "abs_diff": _field(result, "effect_size"),
        "rel_diff": _field(result, "rel_effect_size"),
        "ci_low": _field(result, "effect_size_ci_lower"),
        "ci_high": _field(result, "effect_size_ci_upper"),
        "rel_ci_low": _field(result, "rel_effect_size_ci_lower"),
        "rel_ci_high": _field(result, "rel_effect_size_ci_upper"),
        "p_value": _field(result, "pvalue"),
        "se": se,
        "test": _test_name(spec, bool(covariates)),
        "cuped": bool(covariates),
        "variance_reduction": float("nan"),
        "_result": result,
    }
    row.update(_bayes(spec, metric, control, variant, row))
    row.update(_always_valid(row, options.alpha))
    if covariates and result is not None:
        plain = _tea_metric(spec, values, [], confidence, force_mean=True)
        plain_se = _standard_error(plain, control, variant)
        if plain_se > 0 and math.isfinite(se):
            row["variance_reduction"] = 1 - (se / plain_se) ** 2
    return row


def _informative(covariates: list[str], pooled: Aggregates) -> bool:
    """CUPED needs a pre-period that varies: users assigned at their first visit have none
    (every covariate is 0), and a ratio's pre-period denominator must not average 0."""
    if any(not pooled.var(c) > 0 for c in covariates):
        return False
    return not (len(covariates) == 2 and not pooled.mean(covariates[1]) > 0)


def _tea_metric(
    spec: MetricSpec, values: list[str], covariates: list[str], confidence: float, force_mean: bool = False
) -> tt.metrics.MetricBase:
    """The tea-tasting metric; ``force_mean`` gives rates the z-test on sample variances that
    CUPED uses, so its variance reduction compares like with like."""
    if spec.is_ratio:
        return tt.RatioOfMeans(
            values[0],
            values[1],
            covariates[0] if covariates else None,
            covariates[1] if covariates else None,
            confidence_level=confidence,
            equal_var=False,
            use_t=True,
        )
    if spec.is_rate and not covariates and not force_mean:
        return tt.Proportion(
            values[0], method="norm", correction=False, equal_var=False, confidence_level=confidence
        )
    return tt.Mean(
        values[0],
        covariates[0] if covariates else None,
        confidence_level=confidence,
        equal_var=False,
        use_t=not spec.is_rate,
    )


def _standard_error(metric: tt.metrics.MetricBase, control: Aggregates, variant: Aggregates) -> float:
    """The standard error of the absolute difference the test used.

    For rates without CUPED: sqrt(p_c(1-p_c)/n_c + p_v(1-p_v)/n_v). Else the variance of the
    (CUPED-adjusted, linearised) per-user metric in each arm over its count, as tea-tasting's
    ``RatioOfMeans`` computes it.
    """
    if isinstance(metric, tt.Proportion):
        p_c, p_v = control.mean(metric.column), variant.mean(metric.column)
        return math.sqrt(p_c * (1 - p_c) / control.count() + p_v * (1 - p_v) / variant.count())
    control, variant = control.with_zero_div(), variant.with_zero_div()
    coefficient = metric._covariate_coef(control + variant)
    variance = (
        metric._metric_var(control, coefficient) / control.count()
        + metric._metric_var(variant, coefficient) / variant.count()
    )
    return float(math.sqrt(variance)) if variance >= 0 else float("nan")


def _bayes(
    spec: MetricSpec, metric: tt.metrics.MetricBase, control: Aggregates, variant: Aggregates, row: dict
) -> dict[str, object]:
    """Chance to beat control and expected losses (``bayes.py``): Beta-Binomial for plain rates,
    a normal posterior of the (possibly CUPED-adjusted or delta-method) difference otherwise."""
    empty = {"chance_to_beat": float("nan"), "expected_loss": float("nan"), "prior": ""}
    diff, se = float(row["abs_diff"]), float(row["se"])
    if not (math.isfinite(diff) and math.isfinite(se)):
        return empty
    if isinstance(metric, tt.Proportion):
        column = metric.column
        result = chance_to_beat_rate(
            round(control.mean(column) * control.count()),
            control.count(),
            round(variant.mean(column) * variant.count()),
            variant.count(),
        )
    elif se > 0:
        result = chance_to_beat_mean(diff, se)
    else:
        return empty
    return {
        "chance_to_beat": result.chance_to_beat,
        "expected_loss": result.expected_loss_variant,
        "prior": result.prior,
    }


def _always_valid(row: dict, alpha: float) -> dict[str, float]:
    """The mSPRT interval and p-value at this look (``sequential.py``), with the mixing variance
    tuned to this sample: valid for someone who has looked at every earlier day as well."""
    diff, se = float(row["abs_diff"]), float(row["se"])
    if not (math.isfinite(diff) and math.isfinite(se) and se > 0):
        return {"seq_ci_low": float("nan"), "seq_ci_high": float("nan"), "seq_p_value": float("nan")}
    tau2 = mixing_variance(se**2, alpha)
    interval = always_valid_interval([diff], [se**2], tau2, alpha)
    p_value = always_valid_p_value([diff], [se**2], tau2)
    return {
        "seq_ci_low": float(interval.low[0]),
        "seq_ci_high": float(interval.high[0]),
        "seq_p_value": float(p_value[0]),
    }


def _field(result: object, name: str) -> float:
    return float(getattr(result, name)) if result is not None else float("nan")


def _test_name(spec: MetricSpec, cuped: bool) -> str:
    if spec.is_ratio:
        return "Welch t, delta method" + (", CUPED" if cuped else "")
    if spec.is_rate:
        return "z, CUPED regression" if cuped else "two-proportion z"
    return "Welch t" + (", CUPED" if cuped else "")


def adjusted_p_values(raw: dict[str, ExperimentResult], control: str, options: Options) -> list[float]:
    """Holm (family-wise) or Benjamini-Hochberg (false discovery rate) over every test of the
    table, in the table's row order; tests without a p-value are left out and stay empty."""
    results = ExperimentResults({(control, variant): result for variant, result in raw.items()})
    usable = [
        name
        for result in raw.values()
        for name, value in result.items()
        if value is not None and math.isfinite(value.pvalue)
    ]
    adjusted: dict[tuple[str, str], float] = {}
    if usable:
        trimmed = ExperimentResults(
            {
                key: ExperimentResult({n: v for n, v in result.items() if n in usable and v is not None})
                for key, result in results.items()
            }
        )
        if options.correction == "holm":
            corrected = tt.adjust_fwer(
                trimmed, alpha=options.alpha, arbitrary_dependence=True, method="bonferroni"
            )
        else:
            corrected = tt.adjust_fdr(trimmed, alpha=options.alpha, arbitrary_dependence=False)
        for (_, variant), result in corrected.items():
            for name, value in result.items():
                adjusted[(variant, name)] = float(value["pvalue_adj"])
    return [adjusted.get((variant, name), float("nan")) for variant, result in raw.items() for name in result]


def _warnings(users: ExperimentUsers, design: Design, results: pd.DataFrame) -> list[str]:
    notes: list[str] = []
    if users.srm_failed:
        notes.append(
            f"Sample ratio mismatch: the users per variant ({_counts(users)}) differ from the intended split "
            f"({_shares(users)}, from {users.split_source}) with p = {users.srm_p_value:.2g} < 0.001. "
            "Assignment or logging is broken: the results below cannot be trusted."
        )
    if users.targeted:
        notes.append(
            "Assignment probabilities differ between users (the propensity column): the variants were given to "
            "different kinds of users, so a plain comparison is confounded; a causal reading needs "
            "inverse-propensity weighting (python -m core whatif-users --experiment NAME --variant V)."
        )
    if users.excluded_multiple:
        notes.append(
            f"{users.excluded_multiple:,} users were assigned to more than one variant and are left out of every figure."
        )
    for index, spec in enumerate(design.metrics):
        if spec.kind == "retention":
            counted = results.loc[results["metric"] == spec.name, ["control_users", "variant_users"]]
            if counted.empty:
                continue
            in_review = int(counted.iloc[0]["control_users"] + counted["variant_users"].sum())
            left_out = users.total_users - in_review
            if left_out > 0:
                notes.append(
                    f"{spec.label(design.days)}: {left_out:,} users assigned less than {spec.retention_day + 1} days "
                    "before the data's end are left out (their day has not ended)."
                )
        del index
    return notes


def _counts(users: ExperimentUsers) -> str:
    return ", ".join(f"{variant} {count:,}" for variant, count in users.users.items())


def _shares(users: ExperimentUsers) -> str:
    return ", ".join(f"{variant} {share:.1%}" for variant, share in users.intended_share.items())


def srm_chi_square(observed: list[int], shares: list[float]) -> float:
    """The SRM p-value for given counts and intended shares (also used by the planning view)."""
    expected = np.asarray(shares, dtype=float) / np.sum(shares) * np.sum(observed)
    return float(stats.chisquare(np.asarray(observed, dtype=float), expected).pvalue)
