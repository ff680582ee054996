"""An early read of an experiment's long-term effect: the surrogate index.

Day-90 retention or 90-day revenue of users assigned last month is not observed for months. The
surrogate index (Athey, Chetty, Imbens & Kang 2019) predicts it from what each user did in their
first N days (the surrogates: sessions, clicks, purchases, revenue, active days, events), with a
model trained on OLDER users whose long-term outcome is observed, and estimates each variant's
long-term value as the (inverse-propensity-weighted) mean of the predictions over the RECENT
assigned users. Definitions: docs/METRICS.md, "What-if: surrogate index"; the query:
core/whatif/surrogate_data.py; the model and intervals: core/whatif/surrogate_model.py.

It is valid when the treatment acts on the long-term outcome only through the surrogates (the
surrogacy assumption) and the link from surrogates to outcome is the same for older and recent
users (comparability). Neither can be checked on the recent users themselves, so
``surrogate_backtest`` replays the method as the data stood ``back_days`` earlier and compares its
estimates with the outcomes observed since.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from core.errors import TenureError
from core.experiments.analysis import choose_control
from core.experiments.assignments import experiment_names
from core.store import Store
from core.whatif.surrogate_data import (
    SURROGATES,
    LongTermOutcome,
    attribute_columns,
    parse_outcome,
    surrogate_frame,
)
from core.whatif.surrogate_model import (
    DEFAULT_RESAMPLES,
    IndexInputs,
    model_quality,
    surrogate_index,
    weighted_mean,
)

DEFAULT_SURROGATE_DAYS = 14
DEFAULT_BACK_DAYS = 120
MIN_TRAINING_USERS = 100
MAX_LEVELS = 30
"""One-hot levels kept per user attribute (the most common; the rest share the all-zero level)."""
BACKTEST_COLUMNS = (
    "quantity",
    "variant",
    "estimate",
    "ci_low",
    "ci_high",
    "actual",
    "actual_ci_low",
    "actual_ci_high",
    "inside",
    "users",
)


class SurrogateResult(NamedTuple):
    """The surrogate index estimate of one experiment's long-term outcome.

    Attributes:
        experiment, outcome: what was estimated (``outcome`` as ``retention:90`` / ``revenue:90``).
        surrogate_days: N, the surrogates' window.
        as_of: the data's end used.
        estimates: per variant: variant, estimate, ci_low, ci_high, users (recent users),
            older_users and older_actual (the experiment's users whose outcome is observed, and
            its weighted mean among them: the observed long-term value of earlier cohorts).
        differences: per variant other than the control: variant, control, estimate, ci_low, ci_high.
        control: the control variant.
        model_quality: users, r2 (and auc for a rate) of cross-fitted predictions of the
            training users (each predicted by a model that never saw them).
        training_users: users whose outcome is observed (the model's training set).
        weighting: ``inverse propensity`` or ``none`` (the experiment records no propensities).
        warnings: sentences for the reader.
    """

    experiment: str
    outcome: str
    surrogate_days: int
    as_of: pd.Timestamp
    estimates: pd.DataFrame
    differences: pd.DataFrame
    control: str
    model_quality: dict[str, float]
    training_users: int
    weighting: str
    warnings: list[str]


def feature_matrix(frame: pd.DataFrame, attributes: list[str]) -> tuple[np.ndarray, list[str]]:
    """The model's inputs and their names: log(1 + surrogate), 1[surrogate > 0] for each surrogate,
    log(1 + tenure days), and each attribute one-hot over its ``MAX_LEVELS`` most common values
    (other values and NULL: all zero)."""
    counts = frame[list(SURROGATES)].to_numpy(dtype=float)
    columns = [np.log1p(counts), (counts > 0).astype(float), np.log1p(frame[["tenure_days"]].to_numpy(float))]
    names = [f"log1p_{s}" for s in SURROGATES] + [f"any_{s}" for s in SURROGATES] + ["log1p_tenure_days"]
    for attribute in attributes:
        values = frame[attribute]
        levels = values.value_counts().index[:MAX_LEVELS]
        columns.append(np.column_stack([(values == level).to_numpy(float) for level in levels]))
        names += [f"{attribute}={level}" for level in levels]
    return np.column_stack(columns), names


def _weights(frame: pd.DataFrame) -> tuple[np.ndarray, str]:
    """1 / propensity when every user has one, else 1 (a plain mean); bad propensities refused."""
    propensity = frame["propensity"].to_numpy(dtype=float)
    if len(propensity) == 0 or np.isnan(propensity).any():
        return np.ones(len(propensity)), "none"
    if ((propensity <= 0) | (propensity > 1)).any():
        raise TenureError(
            "assignments.propensity: some users have a propensity outside (0, 1]",
            "a propensity is the probability of the variant the user got: fix those rows",
        )
    return 1.0 / propensity, "inverse propensity"


def _resolve(
    store: Store,
    experiment: str,
    outcome: str | LongTermOutcome,
    surrogate_days: int,
    as_of: pd.Timestamp | str | None,
    resamples: int,
) -> tuple[LongTermOutcome, pd.Timestamp]:
    """The parsed outcome and the data's end to use; every argument checked."""
    outcome = parse_outcome(outcome) if isinstance(outcome, str) else outcome
    if not 1 <= surrogate_days < outcome.window_end_days:
        raise TenureError(
            f"surrogate days {surrogate_days} must be at least 1 and shorter than the outcome's window "
            f"({outcome.window_end_days} days)",
            "use 7 or 14",
        )
    if resamples < 10:
        raise TenureError(f"{resamples} bootstrap resamples are too few for an interval", "use 200")
    known = experiment_names(store)
    if experiment not in known:
        raise TenureError(
            f"experiment '{experiment}' has no assigned users in the assignments table",
            f"choose one of: {', '.join(known)}" if known else "load an assignments file first",
        )
    data_end = store.data_end()
    if data_end is None:
        raise TenureError("the store has no events", "load an events file first")
    if as_of is None:
        return outcome, data_end
    try:
        chosen = pd.Timestamp(as_of)
    except ValueError as error:
        raise TenureError(f"as-of '{as_of}' is not a date", "use YYYY-MM-DD or an ISO timestamp") from error
    return outcome, min(chosen, data_end)


def _split(
    frame: pd.DataFrame, outcome: LongTermOutcome, as_of: pd.Timestamp
) -> tuple[np.ndarray, np.ndarray]:
    """(training users, recent assigned users), refused when either is too small to use."""
    train = frame["outcome_observed"].to_numpy(bool)
    recent = frame["variant"].notna().to_numpy() & frame["surrogates_complete"].to_numpy(bool) & ~train
    if train.sum() < MIN_TRAINING_USERS:
        raise TenureError(
            f"only {int(train.sum())} users had their {outcome.label()} observed by {as_of:%Y-%m-%d}",
            f"the model needs at least {MIN_TRAINING_USERS}: use a later date or a shorter outcome",
        )
    if not recent.any():
        raise TenureError(
            f"no assigned user's {outcome.label()} is still unobserved with complete surrogates "
            f"at {as_of:%Y-%m-%d}",
            "every assigned user's outcome is already observed: read it directly on the Experiments "
            f"page or with python -m core ab --metrics {outcome.name}; an early read is for an "
            "experiment that assigned users recently, or for an earlier --as-of on the command line",
        )
    return train, recent


class _Estimated(NamedTuple):
    """What ``surrogate_estimate`` and ``surrogate_backtest`` share (fields as in SurrogateResult;
    ``older``: the training users' rows)."""

    estimates: pd.DataFrame
    differences: pd.DataFrame
    control: str
    model_quality: dict[str, float]
    training_users: int
    weighting: str
    warnings: list[str]
    older: pd.DataFrame


def _estimate(
    frame: pd.DataFrame,
    outcome: LongTermOutcome,
    as_of: pd.Timestamp,
    attributes: list[str],
    control: str | None,
    resamples: int,
    seed: int,
    alpha: float,
    with_actual: bool,
) -> _Estimated:
    train, recent = _split(frame, outcome, as_of)
    features, _ = feature_matrix(frame, attributes)
    outcome_values = frame["outcome"].to_numpy(dtype=float)
    assigned = frame["variant"].notna().to_numpy()
    variants = sorted(str(v) for v in frame.loc[assigned, "variant"].unique())
    chosen = choose_control(variants, control)
    recent_frame = frame[recent]
    weights, weighting = _weights(recent_frame)
    inputs = IndexInputs(
        train_features=features[train],
        train_outcome=outcome_values[train],
        recent_features=features[recent],
        recent_variant=recent_frame["variant"].astype(str).to_numpy(),
        recent_weight=weights,
        recent_actual=outcome_values[recent] if with_actual else None,
    )
    result = surrogate_index(
        inputs, variants, chosen, outcome.is_rate, resamples=resamples, seed=seed, alpha=alpha
    )
    quality = model_quality(outcome_values[train], result.held_out, outcome.is_rate)
    warnings = [
        f"variant '{v}' has no recent user: no estimate"
        for v, users in zip(result.estimates["variant"], result.estimates["users"], strict=True)
        if users == 0
    ]
    return _Estimated(
        result.estimates,
        result.differences,
        chosen,
        quality,
        int(train.sum()),
        weighting,
        warnings,
        frame[train],
    )


def surrogate_estimate(
    store: Store,
    experiment: str,
    outcome: str | LongTermOutcome = "retention:90",
    surrogate_days: int = DEFAULT_SURROGATE_DAYS,
    as_of: pd.Timestamp | str | None = None,
    seed: int = 0,
    resamples: int = DEFAULT_RESAMPLES,
    control: str | None = None,
    alpha: float = 0.05,
) -> SurrogateResult:
    """Each variant's long-term value among the recent users of ``experiment``, by the surrogate index.

    Args:
        outcome: ``retention:D`` (day-D retention) or ``revenue:D`` (revenue per user over D days).
        surrogate_days: N, the window of the surrogates (7 or 14 are usual).
        as_of: the data's end to use (default the latest event; later dates are capped to it).
        seed, resamples: the bootstrap's seed and number of resamples.
        control: the variant differences are taken from (default: ``control``, else the first).
        alpha: 1 - the intervals' level.

    Raises:
        TenureError: an unknown experiment or outcome, too few training users, no recent user.
    """
    outcome, as_of = _resolve(store, experiment, outcome, surrogate_days, as_of, resamples)
    attributes = attribute_columns(store)
    frame = surrogate_frame(store, experiment, outcome, surrogate_days, as_of)
    fitted = _estimate(frame, outcome, as_of, attributes, control, resamples, seed, alpha, with_actual=False)
    estimates = fitted.estimates
    older = fitted.older[fitted.older["variant"].notna()]
    older_weights, _ = _weights(older)
    older_values = older["outcome"].to_numpy(dtype=float)
    older_variant = older["variant"].astype(str).to_numpy()
    estimates["older_users"] = [int((older_variant == v).sum()) for v in estimates["variant"]]
    estimates["older_actual"] = [
        weighted_mean(older_values, older_weights * (older_variant == v)) for v in estimates["variant"]
    ]
    return SurrogateResult(
        experiment=experiment,
        outcome=outcome.name,
        surrogate_days=surrogate_days,
        as_of=as_of,
        estimates=estimates,
        differences=fitted.differences,
        control=fitted.control,
        model_quality=fitted.model_quality,
        training_users=fitted.training_users,
        weighting=fitted.weighting,
        warnings=fitted.warnings,
    )


def surrogate_backtest(
    store: Store,
    experiment: str,
    outcome: str | LongTermOutcome = "retention:90",
    surrogate_days: int = DEFAULT_SURROGATE_DAYS,
    back_days: int = DEFAULT_BACK_DAYS,
    seed: int = 0,
    resamples: int = DEFAULT_RESAMPLES,
    control: str | None = None,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """The surrogate index replayed as the data stood ``back_days`` before its end, against what
    has been observed since.

    At the pretend end E' = data end - back_days, the model is trained on users whose outcome was
    observed by E' and the estimate is made for the assigned users whose outcome was not yet
    observed then (surrogates complete by E') but is observed by the data's end. Their actual
    outcome, weighted the same way, is the value the estimate should have found.

    Returns:
        One row per variant (``quantity`` = value) and per difference from the control
        (``quantity`` = difference, ``variant`` = its name): ``BACKTEST_COLUMNS``, where
        estimate/ci_* are the surrogate estimate and its interval as of E', actual/actual_ci_*
        the observed weighted mean and its bootstrap interval over the same users, inside =
        ci_low <= actual <= ci_high, users = recent users (of both arms for a difference).
        ``attrs`` holds as_of (E'), data_end, training_users, model_quality, weighting.

    Raises:
        TenureError: as ``surrogate_estimate``; also when no user fits the backtest.
    """
    outcome, data_end = _resolve(store, experiment, outcome, surrogate_days, None, resamples)
    if back_days < 1:
        raise TenureError(f"back days {back_days} must be at least 1", f"for example {DEFAULT_BACK_DAYS}")
    as_of = data_end - pd.Timedelta(days=back_days)
    frame = surrogate_frame(store, experiment, outcome, surrogate_days, as_of, outcome_end=data_end)
    unknown = ~frame["outcome_observed"] & ~frame["outcome_known"]
    # Recent users at E' whose outcome is still unknown today cannot be checked: left out.
    frame = frame[~unknown].reset_index(drop=True)
    fitted = _estimate(
        frame, outcome, as_of, attribute_columns(store), control, resamples, seed, alpha, with_actual=True
    )
    estimates, differences, chosen = fitted.estimates, fitted.differences, fitted.control
    values = estimates.assign(quantity="value")
    users = dict(zip(estimates["variant"], estimates["users"], strict=True))
    diffs = differences.assign(
        quantity="difference",
        variant=[f"{v} - {chosen}" for v in differences["variant"]],
        users=[users[v] + users[chosen] for v in differences["variant"]],
    )
    table = pd.concat([values, diffs], ignore_index=True)
    table["inside"] = (table["ci_low"] <= table["actual"]) & (table["actual"] <= table["ci_high"])
    table = table[list(BACKTEST_COLUMNS)]
    table.attrs.update(
        {
            "as_of": as_of,
            "data_end": data_end,
            "training_users": fitted.training_users,
            "model_quality": fitted.model_quality,
            "weighting": fitted.weighting,
            "outcome": outcome.name,
            "surrogate_days": surrogate_days,
        }
    )
    return table
