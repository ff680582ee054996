"""A model-based experiment metric: each user's predicted 90-day LTV, N days after assignment.

Observed revenue needs months before a long-run effect shows; a churn/LTV model trained on the
store (core/models/training.py) reads each user's behaviour shortly after assignment and predicts
their revenue over the next 90 days. The metric is only as good as the model: it is marked as
model-based wherever it is shown, and its difference between variants is a difference in
predictions, not in revenue (docs/METRICS.md, "A/B experiments: predicted LTV (model-based)").

Definitions (all times UTC, as in the store):

- **As-of rule** (``bucket="day"``, the default): a user assigned at time a gets
  ``as_of = date_trunc('day', a + N days) + 1 day``, the midnight that ends the UTC calendar
  day of ``a + N days``. So the model sees at least N and less than N + 1 days of each user's
  post-assignment behaviour (events with ``event_time < as_of``), and users assigned on the
  same day share one as-of instant. Every model kind scores every user at their own instant in
  one pass (``score_model_at_instants``). ``bucket="week"``: ``as_of = date_trunc('week', a + N days) + 7 days``, the
  Monday 00:00 that ends the ISO week of ``a + N days`` (N to less than N + 7 days seen; about a
  seventh of the instants).
- **ltv_pred**: the saved model's calibrated predicted revenue in ``[as_of, as_of + 90 days)``
  (``score_model``'s ``ltv_pred``). The model's horizon must be 90 days; another horizon is
  refused rather than relabelled, so the metric's name always means what it says.
- **Left out and counted** (``status``):
  - ``window_open``: ``as_of`` is after the data's end (the latest event time): the user's N
    days have not ended;
  - ``not_in_population``: the model's population at ``as_of`` does not hold the user (no
    start before ``as_of``: an assigned user without any event before it, or, for a model
    trained with a lookback, no activity in it). With the default population every assigned
    user with an event before ``as_of`` is scored; a user who is left out here cannot be given
    a prediction without inventing one.
- **Statistics**: Welch's t-test of the mean ``ltv_pred`` of each variant against the control
  (tea-tasting's ``Mean`` through ``core.experiments.analysis.compare``, on moment sums of the
  scored users); no CUPED (the metric has no pre-period).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from tea_tasting.experiment import ExperimentResult

from core.errors import TenureError
from core.experiments.analysis import Options, Review, adjusted_p_values, choose_control, compare
from core.experiments.assignments import clean_assignments_sql, experiment_users
from core.experiments.metrics import MAX_RETENTION_DAY, Design, MetricSpec
from core.models import registry
from core.models.artifacts import MODEL_FILE
from core.models.training import METRICS_FILE, model_kind, score_model_at_instants
from core.store import Store

LTV_METRIC = "predicted_ltv_90d"
LTV_HORIZON_DAYS = 90
USER_COLUMNS = ("user_id", "variant", "assigned_time", "as_of", "ltv_pred", "status")
STATUSES = ("scored", "window_open", "not_in_population")
BUCKETS = {"day": 1, "week": 7}
# The review's per-user metric the Welch comparison runs on: a mean, like ``revenue``.
_MEAN_METRIC = MetricSpec("revenue")

Progress = Callable[[float, str], None]


def model_horizon_days(model_dir: str | Path) -> int:
    """The horizon in days the saved model predicts: ``spec.horizon_days`` (GBM and sequence
    models) or ``config.horizon_days`` (BG/NBD) of ``model.json``, else the run's
    ``metrics.json`` one folder up."""
    directory = Path(model_dir)
    model_kind(directory)  # refuses a folder that is not a saved model
    document = json.loads((directory / MODEL_FILE).read_text(encoding="utf-8"))
    for section in ("spec", "config"):
        part = document.get(section)
        if isinstance(part, dict) and part.get("horizon_days") is not None:
            return int(part["horizon_days"])
    metrics = directory.parent / METRICS_FILE
    if metrics.is_file():
        horizon = json.loads(metrics.read_text(encoding="utf-8")).get("horizon_days")
        if horizon is not None:
            return int(horizon)
    raise TenureError(
        f"{directory / MODEL_FILE} does not say the model's horizon", "train the model again with this Tenure"
    )


def ltv_models(store: Store) -> list[str]:
    """Folders of registered models with a 90-day horizon that still exist, newest first: the
    models this metric can use."""
    models = registry.saved_models(store)
    chosen = models[pd.to_numeric(models["horizon_days"], errors="coerce") == LTV_HORIZON_DAYS]
    return [str(path) for path in chosen["path"]]


def check_ltv_model(model_dir: str | Path) -> str:
    """The model's kind, after refusing a model whose horizon is not ``LTV_HORIZON_DAYS``."""
    kind = model_kind(model_dir)
    horizon = model_horizon_days(model_dir)
    if horizon != LTV_HORIZON_DAYS:
        raise TenureError(
            f"the model in {model_dir} predicts a {horizon}-day horizon, not the {LTV_HORIZON_DAYS} days "
            f"of {LTV_METRIC}",
            f"train a model with --horizon {LTV_HORIZON_DAYS}d",
        )
    return kind


def _assigned_users(store: Store, experiment: str, days: int, bucket: str) -> pd.DataFrame:
    """Every clean assigned user with their as-of instant (module docstring)."""
    if bucket not in BUCKETS:
        raise TenureError(f"unknown as-of bucket '{bucket}'", f"use one of {', '.join(BUCKETS)}")
    return store.query_df(
        f"SELECT user_id, variant, assigned_time, "
        f"date_trunc('{bucket}', assigned_time + to_days(CAST(? AS INTEGER))) + to_days({BUCKETS[bucket]}) "
        f"AS as_of FROM ({clean_assignments_sql()}) ORDER BY as_of, user_id",
        [int(days), experiment],
    )


def predicted_ltv(
    store: Store,
    experiment: str,
    model_dir: str | Path,
    days: int,
    progress: Progress | None = None,
    bucket: str = "day",
) -> pd.DataFrame:
    """Each clean assigned user's predicted 90-day LTV as of their as-of instant.

    Args:
        store: the event store.
        experiment: the experiment's name in ``assignments``.
        model_dir: a saved model folder (``DIR/<model>`` written by ``train``), any kind.
        days: N, the days after assignment the model waits for (module docstring).
        progress: called with (fraction done, message) before and after the scoring.
        bucket: ``day`` or ``week``: the as-of rule (module docstring).

    Returns:
        DataFrame ``USER_COLUMNS``, one row per clean assigned user, sorted by ``as_of`` then
        ``user_id``; ``ltv_pred`` is NaN unless ``status`` is ``scored``.
    """
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_RETENTION_DAY:
        raise TenureError(
            f"days {days!r} must be a whole number of days from 1 to {MAX_RETENTION_DAY}", "use e.g. 14"
        )
    check_ltv_model(model_dir)
    users = _assigned_users(store, experiment, days, bucket)
    if users.empty:
        experiment_users(store, experiment)  # raises the review's error naming the experiments
    users = score_at_instants(store, model_dir, users, ("ltv_pred",), progress)
    return users[list(USER_COLUMNS)].reset_index(drop=True)


def score_at_instants(
    store: Store,
    model_dir: str | Path,
    users: pd.DataFrame,
    columns: tuple[str, ...] = ("ltv_pred",),
    progress: Progress | None = None,
) -> pd.DataFrame:
    """``users`` (``user_id``, ``as_of``) with the model's ``columns`` (of ``score_model``'s
    output) and a ``status`` added. Every model kind scores every user at their own instant in
    one pass (``score_model_at_instants``), so the cost does not grow with the number of distinct
    instants: users scored at their own assignment day would otherwise cost a run per day.

    ``status`` (module docstring): ``scored``; ``window_open`` (``as_of`` after the data's end,
    not scored); ``not_in_population`` (no score at ``as_of`` for ``columns[0]``). ``columns``
    are NaN unless scored.
    ``progress`` is called before and after the scoring.
    """
    users = users.copy()
    data_end = store.data_end()
    for column in columns:
        users[column] = np.nan
    users["status"] = "window_open"
    as_of = pd.to_datetime(users["as_of"])
    closed = as_of <= data_end if data_end is not None else pd.Series(False, index=users.index)
    users.loc[closed, "status"] = "not_in_population"
    if not closed.any():
        return users
    if progress is not None:
        progress(0.0, f"scoring {int(closed.sum()):,} users, each at their own as-of")
    batch = score_model_at_instants(
        store, model_dir, pd.DataFrame({"user_id": users.loc[closed, "user_id"], "as_of": as_of[closed]})
    )
    keys = pd.MultiIndex.from_arrays([users["user_id"].astype(str), as_of])
    scored = batch.set_index([batch["user_id"].astype(str), pd.to_datetime(batch["as_of"])])
    for column in columns:
        users.loc[closed, column] = scored[column].reindex(keys[closed.to_numpy()]).to_numpy(dtype=float)
    found = users.loc[closed, columns[0]].notna()
    users.loc[closed, "status"] = np.where(found, "scored", "not_in_population")
    if progress is not None:
        progress(1.0, f"scored {int((users['status'] == 'scored').sum())} users")
    return users


def _moment_rows(users: pd.DataFrame) -> dict[str, pd.Series]:
    """Per variant, the moment sums ``compare`` reads for one mean metric (``m0``) without a
    pre-period (``pre_m0`` = 0, so CUPED can never apply)."""
    scored = users[users["status"] == "scored"]
    value = scored["ltv_pred"].astype(float)
    grouped = pd.DataFrame({"variant": scored["variant"], "m0": value, "m0_sq": value * value}).groupby(
        "variant"
    )
    sums = grouped.agg(n0=("m0", "size"), s__m0=("m0", "sum"), ss__m0__m0=("m0_sq", "sum"))
    rows: dict[str, pd.Series] = {}
    for variant in users["variant"].unique():
        row = (
            sums.loc[variant]
            if variant in sums.index
            else pd.Series({"n0": 0, "s__m0": 0.0, "ss__m0__m0": 0.0})
        )
        rows[str(variant)] = pd.concat(
            [row, pd.Series({"s__pre_m0": 0.0, "ss__m0__pre_m0": 0.0, "ss__pre_m0__pre_m0": 0.0})]
        )
    return rows


def ltv_comparison(
    users: pd.DataFrame,
    experiment: str,
    control: str,
    options: Options,
    model_dir: str | Path,
    kind: str,
    days: int,
    bucket: str = "day",
) -> pd.DataFrame:
    """The review table's rows for ``predicted_ltv`` output ``users`` (see ``ltv_review``)."""
    design = Design(experiment, (_MEAN_METRIC,), days=int(days))
    table = compare(_moment_rows(users), design, dataclasses.replace(options, cuped=False), control)
    table["metric"] = LTV_METRIC
    left_out = []
    for variant in table["variant"]:
        pair = users[users["variant"].isin([control, variant])]
        left_out.append(
            {status: int((pair["status"] == status).sum()) for status in STATUSES if status != "scored"}
        )
    table["model_based"] = True
    table["model_dir"] = str(model_dir)
    table["model_kind"] = kind
    table["as_of_days"] = int(days)
    table["as_of_bucket"] = bucket
    table["window_open"] = [counts["window_open"] for counts in left_out]
    table["not_in_population"] = [counts["not_in_population"] for counts in left_out]
    return table


def ltv_review(
    store: Store,
    experiment: str,
    model_dir: str | Path,
    days: int,
    options: Options | None = None,
    progress: Progress | None = None,
    bucket: str = "day",
) -> pd.DataFrame:
    """Each variant against the control on the mean predicted 90-day LTV (module docstring).

    Returns:
        The columns of ``review().results`` (``CONTRACT_COLUMNS``, then counts, relative
        interval, standard error, test), one row per variant other than the control, with
        ``metric`` = ``predicted_ltv_90d`` and ``p_adjusted`` over these rows only; then
        ``model_based`` (True), ``model_dir``, ``model_kind``, ``as_of_days`` (N),
        ``as_of_bucket`` (the as-of rule) and the users
        of the control and the variant left out: ``window_open``, ``not_in_population``.
    """
    options = options or Options()
    kind = check_ltv_model(model_dir)
    users = predicted_ltv(store, experiment, model_dir, days, progress, bucket)
    control = choose_control(sorted(users["variant"].astype(str).unique()), options.control)
    return ltv_comparison(users, experiment, control, options, model_dir, kind, days, bucket)


class _PValue(NamedTuple):
    """A test result as the multiple-comparison adjustment reads it: its p-value only."""

    pvalue: float


def with_ltv_rows(
    store: Store, review: Review, model_dir: str | Path, progress: Progress | None = None
) -> Review:
    """``review`` with the predicted-LTV rows appended (as of the review's N = ``design.days``)
    and ``p_adjusted`` of every row recomputed over the one family of all rows.

    The predicted LTV is one more test the reader sees beside the others, so it joins their
    Holm (or Benjamini-Hochberg) family: adding it can only raise the other rows' adjusted
    p-values, never hide a test from the correction.
    """
    kind = check_ltv_model(model_dir)
    design = review.design
    users = predicted_ltv(store, design.experiment, model_dir, design.days, progress)
    rows = ltv_comparison(
        users, design.experiment, review.control, review.options, model_dir, kind, design.days
    )
    results = pd.concat([review.results.assign(model_based=False), rows], ignore_index=True)
    raw: dict[str, dict[str, _PValue | None]] = {}
    for variant, metric, p_value in zip(
        results["variant"], results["metric"], results["p_value"], strict=True
    ):
        usable = p_value is not None and math.isfinite(float(p_value))
        raw.setdefault(str(variant), {})[str(metric)] = _PValue(float(p_value)) if usable else None
    adjusted = adjusted_p_values(
        {variant: ExperimentResult(tests) for variant, tests in raw.items()}, review.control, review.options
    )
    order = [(variant, metric) for variant, tests in raw.items() for metric in tests]
    by_test = dict(zip(order, adjusted, strict=True))
    results["p_adjusted"] = [
        by_test[(str(v), str(m))] for v, m in zip(results["variant"], results["metric"], strict=True)
    ]
    return dataclasses.replace(
        review, results=results, warnings=[*review.warnings, *_notes(users, model_dir, kind)]
    )


def _notes(users: pd.DataFrame, model_dir: str | Path, kind: str) -> list[str]:
    """What the reader of a review with the predicted-LTV rows must be told."""
    notes = [
        f"{LTV_METRIC} is model-based: the {kind} model in {model_dir} predicts each user's revenue in the "
        f"{LTV_HORIZON_DAYS} days after the end of the day of assignment + N days; a difference between "
        "variants is a difference in predictions, not in revenue."
    ]
    window_open = int((users["status"] == "window_open").sum())
    if window_open:
        notes.append(
            f"{LTV_METRIC}: {window_open:,} users whose as-of instant is after the data's end are left out "
            "(their N days have not ended)."
        )
    absent = int((users["status"] == "not_in_population").sum())
    if absent:
        notes.append(
            f"{LTV_METRIC}: {absent:,} users are not in the model's population at their as-of instant "
            "(no start before it) and are left out."
        )
    return notes
