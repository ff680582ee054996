"""What if every user had got variant V, or the variant a targeting rule gives them?

``evaluate_user_policy`` answers with off-policy estimates from one experiment's logged
assignments and their propensities (definitions in core/whatif/policy_value.py and
docs/METRICS.md, "What-if: per-user outcomes under a policy or rule"):

1. one query gives every clean assigned user's variant, propensity, outcome (from their own
   assignment time), pre-assignment features and the variant the target assigns them
   (core/whatif/users.py);
2. users whose outcome window has not ended are left out and counted (``incomplete``); users the
   target gives a variant they had probability 0 of getting, or whose propensity is missing, are
   *unsupported*: no logged user stands for them, so they are left out too and their share is
   reported (``unsupported_share``): the estimate is about the supported users only;
3. cross-fitted outcome models per variant (core/whatif/outcome_model.py) feed AIPW; a ratio
   outcome (``click_rate:D``, clicks per shown slot) has a model of its numerator and one of its
   denominator, and every estimate is the delta-method ratio of the two (``ratio_terms``);
4. the target's value by AIPW, IPW and Hajek; every "everyone gets W" policy's value; the
   target's difference from each, and, for a variant target, the naive difference of logged
   means (what an A/B table shows, confounded when assignment was targeted);
5. the inverse-propensity-weighted survival of time to churn under each policy
   (core/whatif/survival_ipw.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd

from core.errors import TenureError
from core.store import Store
from core.whatif.outcome_model import DEFAULT_FOLDS, cross_fitted_predictions
from core.whatif.policy_value import (
    DEFAULT_ALPHA,
    ESTIMATORS,
    Estimate,
    from_terms,
    naive_difference,
    naive_ratio_difference,
    propensity_matrix,
    ratio_terms,
    terms,
    weight_summary,
)
from core.whatif.rules import Rule, check_rule, everyone_sql, rule_sql
from core.whatif.segments import CHURN_RISK_DECILE, Progress, segment_values
from core.whatif.survival_ipw import (
    DEFAULT_SURVIVAL_DAYS,
    DEFAULT_SURVIVAL_RESAMPLES,
    bootstrap_counts,
    survival_at,
    survival_interval,
    weighted_kaplan_meier,
)
from core.whatif.users import Outcome, UserData, experiment_variants, user_data

ESTIMATE_COLUMNS = ("policy", "estimator", "value", "se", "ci_low", "ci_high", "rows")
SURVIVAL_COLUMNS = ("policy", "day", "survival", "ci_low", "ci_high")


@dataclass(frozen=True)
class UserPolicySpec:
    """One what-if question.

    Attributes:
        experiment: the experiment whose logged assignments answer it.
        outcome: the per-user outcome.
        variant: "everyone gets this variant" (exactly one of variant and rule).
        rule: a targeting rule (core/whatif/rules.py).
        folds: cross-fitting folds of the outcome model.
        seed: the fold split's seed.
        alpha: 1 - the intervals' coverage.
        survival_days: the days at which the weighted survival is read.
        survival_resamples: bootstrap resamples of the survival's interval (0: no interval).
        model_dir: a saved model folder (``DIR/<model>``): scores the ``churn_risk_decile`` a
            rule may use (core/whatif/segments.py); None when the rule uses none.
    """

    experiment: str
    outcome: Outcome
    variant: str | None = None
    rule: Rule | None = None
    folds: int = DEFAULT_FOLDS
    seed: int = 0
    alpha: float = DEFAULT_ALPHA
    survival_days: tuple[float, ...] = DEFAULT_SURVIVAL_DAYS
    model_dir: str | None = None
    survival_resamples: int = DEFAULT_SURVIVAL_RESAMPLES

    def __post_init__(self) -> None:
        if (self.variant is None) == (self.rule is None):
            raise TenureError("give either a variant or a rule", "use --variant V or --rule FILE, not both")
        if isinstance(self.survival_resamples, bool) or int(self.survival_resamples) < 0:
            raise TenureError(
                f"survival_resamples {self.survival_resamples} is not a whole number >= 0",
                "use e.g. 300, or 0 for no survival interval",
            )
        if not 0 < self.alpha < 1:
            raise TenureError(f"alpha {self.alpha} is not between 0 and 1", "use e.g. 0.05 for 95% intervals")

    @property
    def target(self) -> str:
        return self.variant if self.variant is not None else self.rule.name  # type: ignore[union-attr]


class UserPolicyValue(NamedTuple):
    """The answer of ``evaluate_user_policy``.

    Attributes:
        target: the variant or the rule's name.
        outcome: the outcome's name (``retention:30``).
        rows: the users the target's estimates use (complete window, supported).
        logged_value: the mean outcome as logged, over every user with a complete window (for a
            ratio outcome the pooled ratio: sum of clicks over sum of slots).
        ess: (sum w)^2 / sum w^2 of the target's weights w = 1[got target's variant] / p.
        max_weight: the largest of those weights.
        unsupported: users with a complete window the target gives a variant they had
            probability 0 (or no recorded propensity) of getting.
        unsupported_share: ``unsupported`` over the users with a complete window.
        incomplete: users left out because their window had not ended.
        estimates: the target's value by aipw, ipw and hajek, in that order.
        policies: ``ESTIMATE_COLUMNS``: the value of "everyone gets W" for each variant W.
        differences: ``ESTIMATE_COLUMNS``: target minus everyone-W per estimator (policy column
            ``TARGET - W``), and, for a variant target, the ``naive`` difference of logged means.
        target_share: per variant, the share of the target's users it gives that variant.
        survival: ``SURVIVAL_COLUMNS``: weighted survival of time to churn under the target and
            each everyone-W policy, with its pointwise bootstrap interval (``ci_low``,
            ``ci_high``; NaN when ``survival_resamples`` is 0).
    """

    target: str
    outcome: str
    rows: int
    logged_value: float
    ess: float
    max_weight: float
    unsupported: int
    unsupported_share: float
    incomplete: int
    estimates: tuple[Estimate, ...]
    policies: pd.DataFrame
    differences: pd.DataFrame
    target_share: dict[str, float]
    survival: pd.DataFrame

    def estimate(self, estimator: str) -> Estimate:
        return next(e for e in self.estimates if e.estimator == estimator)


def evaluate_user_policy(
    store: Store,
    spec: UserPolicySpec,
    progress: Progress | None = None,
    segments: pd.DataFrame | None = None,
) -> UserPolicyValue:
    """Estimate the target's value (steps in the module docstring).

    ``progress`` is called with (fraction, message) while a rule's churn-risk deciles are
    scored (one model pass over every assignment day: the slow part when a rule uses them).
    ``segments``: ``segments.segment_values`` of the experiment with at least the rule's
    segment columns, when the caller already has them (several outcomes of one rule).
    """
    variants = experiment_variants(store, spec.experiment)
    if spec.variant is not None:
        segments = None
        if spec.variant not in variants:
            raise TenureError(
                f"'{spec.variant}' is not a variant of experiment '{spec.experiment}'",
                f"use one of: {', '.join(variants)}",
            )
        target_sql = everyone_sql(spec.variant)
    else:
        assert spec.rule is not None
        if not spec.rule.segments:
            segments = None
        else:
            _check_model(spec)
            if segments is None or not set(spec.rule.segments) <= set(segments.columns):
                segments = segment_values(
                    store, spec.experiment, spec.rule.segments, spec.model_dir, progress
                )
            segments = segments[["user_id", *spec.rule.segments]]
        check_rule(store, spec.rule, spec.experiment, variants, segments)
        target_sql = rule_sql(spec.rule)
    data = user_data(store, spec.experiment, spec.outcome, target_sql, segments=segments)
    return value_from_data(data, spec)


def _check_model(spec: UserPolicySpec) -> None:
    """Refuse a rule on churn-risk deciles without a model, before any work is done."""
    assert spec.rule is not None
    if CHURN_RISK_DECILE in spec.rule.segments and spec.model_dir is None:
        line = next(c.line for c in spec.rule.conditions if c.attribute == CHURN_RISK_DECILE)
        raise TenureError(
            f"{spec.rule.name} line {line}: {CHURN_RISK_DECILE} needs a trained model to score users at "
            "assignment",
            "pass --model DIR (a model folder written by 'python -m core train', e.g. RUN/gbm)",
        )


def value_from_data(data: UserData, spec: UserPolicySpec) -> UserPolicyValue:
    """The estimates from an already-built per-user frame (``evaluate_user_policy``'s second half)."""
    frame = data.frame
    variants = data.variants
    received = frame["variant"].astype(str).to_numpy()
    target = frame["target"].astype(str).to_numpy()
    probabilities = propensity_matrix(received, frame["propensity"].to_numpy(dtype=float), variants)
    target_column = pd.Categorical(target, categories=list(variants)).codes.astype(int)
    if (target_column < 0).any():
        raise TenureError(
            f"'{spec.target}' gives variants that are not in experiment '{spec.experiment}'",
            f"use only: {', '.join(variants)}",
        )
    p_target = probabilities[np.arange(len(frame)), target_column]
    supported_all = np.isfinite(p_target) & (p_target > 0)

    eligible = frame["eligible"].to_numpy(dtype=bool)
    outcome = frame["outcome"].to_numpy(dtype=float)[eligible]
    got = received[eligible]
    chosen = target[eligible]
    p_chosen = p_target[eligible]
    probabilities_eligible = probabilities[eligible]
    supported = supported_all[eligible]
    if not supported.any():
        raise TenureError(
            f"no user of experiment '{spec.experiment}' with a complete {spec.outcome.name} window "
            f"is supported by '{spec.target}'",
            "every user's propensity is missing, or the target gives variants nobody could have got",
        )
    denominator = frame["denominator"].to_numpy(dtype=float)[eligible] if spec.outcome.is_ratio else None
    if denominator is not None and not (denominator[supported] > 0).any():
        raise TenureError(
            f"no recommendation was shown to a user of experiment '{spec.experiment}' in the "
            f"{spec.outcome.name} window",
            "load the recommendations log (user_id, rec_time) of this experiment's users",
        )
    features = frame.loc[eligible, list(data.features)].to_numpy(dtype=float)
    predictions = cross_fitted_predictions(features, got, outcome, variants, spec.folds, spec.seed)
    denominator_predictions = (
        cross_fitted_predictions(features, got, denominator, variants, spec.folds, spec.seed)
        if denominator is not None
        else None
    )
    target_columns = target_column[eligible]

    def policy_terms(
        mask: np.ndarray, policy: np.ndarray, p: np.ndarray, columns: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Per estimator, the users' terms under ``policy`` (model column ``columns`` per user)."""
        weight = (got[mask] == policy[mask]) / p[mask]
        rows = np.flatnonzero(mask)
        mu = predictions[rows, columns[mask]]
        if denominator is None or denominator_predictions is None:
            return {name: terms(name, outcome[mask], weight, mu) for name in ESTIMATORS}
        mu_slots = denominator_predictions[rows, columns[mask]]
        return {
            name: ratio_terms(
                terms(name, outcome[mask], weight, mu), terms(name, denominator[mask], weight, mu_slots)
            )
            for name in ESTIMATORS
        }

    target_terms = policy_terms(supported, chosen, p_chosen, target_columns)
    weight = (got[supported] == chosen[supported]) / p_chosen[supported]
    ess, max_weight = weight_summary(weight)
    estimates = tuple(from_terms(name, target_terms[name], spec.alpha) for name in ESTIMATORS)

    policy_rows: list[tuple] = []
    difference_rows: list[tuple] = []
    for column, variant in enumerate(variants):
        everyone = np.full(len(outcome), variant)
        p_variant = probabilities_eligible[:, column]
        ok = np.isfinite(p_variant) & (p_variant > 0)
        columns = np.full(len(outcome), column)
        variant_terms = policy_terms(ok, everyone, p_variant, columns)
        for name in ESTIMATORS:
            policy_rows.append((f"everyone {variant}", *from_terms(name, variant_terms[name], spec.alpha)))
        if spec.variant == variant:
            continue
        both = ok & supported
        if not both.any():
            continue
        ours = policy_terms(both, chosen, p_chosen, target_columns)
        theirs = policy_terms(both, everyone, p_variant, columns)
        label = f"{spec.target} - {variant}"
        for name in ESTIMATORS:
            difference_rows.append((label, *from_terms(name, ours[name] - theirs[name], spec.alpha)))
        if spec.variant is not None:
            naive = (
                naive_difference(outcome, got, spec.variant, variant, spec.alpha)
                if denominator is None
                else naive_ratio_difference(outcome, denominator, got, spec.variant, variant, spec.alpha)
            )
            difference_rows.append((label, *naive))

    shares = pd.Series(chosen[supported]).value_counts(normalize=True)
    return UserPolicyValue(
        target=spec.target,
        outcome=spec.outcome.name,
        rows=int(supported.sum()),
        logged_value=_logged_value(outcome, denominator),
        ess=ess,
        max_weight=max_weight,
        unsupported=int((~supported).sum()),
        unsupported_share=float((~supported).mean()),
        incomplete=data.incomplete,
        estimates=estimates,
        policies=pd.DataFrame(policy_rows, columns=list(ESTIMATE_COLUMNS)),
        differences=pd.DataFrame(difference_rows, columns=list(ESTIMATE_COLUMNS)),
        target_share={str(k): float(v) for k, v in shares.items()},
        survival=_survival(
            frame, variants, received, target, target_column, probabilities, supported_all, spec
        ),
    )


def _logged_value(outcome: np.ndarray, denominator: np.ndarray | None) -> float:
    """The logged mean outcome, or for a ratio outcome the pooled ratio (NaN without users)."""
    if denominator is not None:
        slots = float(denominator.sum())
        return float(outcome.sum()) / slots if slots > 0 else float("nan")
    return float(outcome.mean()) if len(outcome) else float("nan")


def _survival(
    frame: pd.DataFrame,
    variants: tuple[str, ...],
    received: np.ndarray,
    target: np.ndarray,
    target_column: np.ndarray,
    probabilities: np.ndarray,
    supported: np.ndarray,
    spec: UserPolicySpec,
) -> pd.DataFrame:
    """Weighted survival at ``spec.survival_days`` under the target and each everyone-W policy.

    Uses every supported user (complete outcome window or not: Kaplan-Meier handles censoring).
    The interval's resamples are the same for every policy (one draw of users, seeded by
    ``spec.seed``).
    """
    durations = frame["duration_days"].to_numpy(dtype=float)
    churned = frame["churned"].to_numpy(dtype=bool)
    days = list(spec.survival_days)
    if not days:
        return pd.DataFrame(columns=list(SURVIVAL_COLUMNS))
    name = f"everyone {spec.variant}" if spec.variant is not None else spec.target
    policies = [(name, target, probabilities[np.arange(len(frame)), target_column], supported)]
    for column, variant in enumerate(variants):
        p = probabilities[:, column]
        ok = np.isfinite(p) & (p > 0)
        if spec.variant != variant:
            policies.append((f"everyone {variant}", np.full(len(frame), variant), p, ok))
    counts = bootstrap_counts(len(frame), spec.survival_resamples, spec.seed)
    rows = []
    for name, policy, p, ok in policies:
        weight = np.where(ok & (received == policy), 1.0 / np.where(ok, p, 1.0), 0.0)
        if not (weight > 0).any():
            continue
        curve = weighted_kaplan_meier(durations, churned, weight)
        values = survival_at(curve, days, float(durations[weight > 0].max()))
        low = high = np.full(len(days), np.nan)
        if spec.survival_resamples:
            low, high = survival_interval(durations, churned, weight, days, counts, spec.alpha)
        rows += [
            (name, day, float(value), float(lo), float(hi))
            for day, value, lo, hi in zip(days, values, low, high, strict=True)
        ]
    return pd.DataFrame(rows, columns=list(SURVIVAL_COLUMNS))
