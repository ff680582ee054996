"""The simulator's ground truth used as a model: the ceiling of churn and LTV metrics on a simulated store.

A simulated store keeps, in ``truth.user_outcomes`` (core/simulation/truth.py), each user's true
probability of no activity and expected revenue over a horizon from an as-of date, estimated by
Monte Carlo continuations of the user's hidden state. Scored like a model's predictions against
the observed labels, they give the best churn ROC AUC and LTV Gini any model could expect: the
observed outcome is one draw of a random future, and no model knows more than the user's state.

Definitions (docs/METRICS.md, "Churn and LTV benchmark and its oracle"):

- ``churn_prob`` = ``truth.user_outcomes.churn_prob``: P(no session in ``[T, T + H)``). Every
  simulated session has events, so this is the spec's churn only when any event counts as
  activity (``activity_events`` empty); other specs are refused.
- ``ltv_pred`` = ``truth.user_outcomes.expected_revenue``: E[revenue in ``[T, T + H)``].
- The truth exists only at the as-of dates and horizon the simulator was run with (by default the
  period end minus 90 and 180 days, horizon 90 days); ``truth_dates`` lists them.
"""

from __future__ import annotations

import pandas as pd

from core.errors import TenureError
from core.models.spec import ModelSpec
from core.store import Store

TRUTH_SCHEMA = "truth"
TRUTH_TABLE = "user_outcomes"
ORACLE_COLUMNS = ("user_id", "churn_prob", "ltv_pred")


def has_truth(store: Store) -> bool:
    """True when the store holds ``truth.user_outcomes`` (a store built by the simulator)."""
    row = store.query_one(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
        [TRUTH_SCHEMA, TRUTH_TABLE],
    )
    return bool(row and row[0])


def _require_truth(store: Store) -> None:
    if not has_truth(store):
        raise TenureError(
            f"the store {store.path} has no {TRUTH_SCHEMA}.{TRUTH_TABLE} table: only simulated stores "
            "carry ground truth",
            "use a store built by 'python -m core generate --dataset simulated'",
        )


def truth_dates(store: Store) -> pd.DataFrame:
    """The (as-of date, horizon) pairs of ``truth.user_outcomes``.

    Returns:
        DataFrame ``as_of`` (naive UTC timestamp), ``horizon_days``, ``users``, sorted by date.
    """
    _require_truth(store)
    return store.query_df(
        f"SELECT as_of, horizon_days, count(*) AS users FROM {TRUTH_SCHEMA}.{TRUTH_TABLE} "
        "GROUP BY as_of, horizon_days ORDER BY as_of, horizon_days"
    )


def oracle_predictions(store: Store, spec: ModelSpec) -> pd.DataFrame:
    """The true churn probability and expected LTV of each user at ``spec.as_of`` (module docstring).

    Args:
        store: a simulated store (it must hold ``truth.user_outcomes``).
        spec: as-of date T and horizon H; they must match a pair of ``truth_dates``, and any
            event must count as activity.

    Returns:
        DataFrame ``ORACLE_COLUMNS``: one row per user who arrived before T (the simulator's
        snapshot at T; the caller joins it to its own evaluation users), sorted by ``user_id``.
    """
    _require_truth(store)
    if spec.activity_events:
        raise TenureError(
            f"the simulator's truth counts any session as activity, not only {list(spec.activity_events)}",
            "compare with the oracle only for specs where any event is activity",
        )
    frame = store.query_df(
        f"SELECT user_id, churn_prob, expected_revenue AS ltv_pred FROM {TRUTH_SCHEMA}.{TRUTH_TABLE} "
        "WHERE as_of = ? AND horizon_days = ? ORDER BY user_id",
        [spec.as_of, spec.horizon_days],
    )
    if len(frame) == 0:
        available = truth_dates(store)
        pairs = ", ".join(
            f"{pd.Timestamp(row.as_of).isoformat()} / {int(row.horizon_days)} days"
            for row in available.itertuples(index=False)
        )
        raise TenureError(
            f"{TRUTH_SCHEMA}.{TRUTH_TABLE} has no rows at as-of {spec.as_of.isoformat()} with horizon "
            f"{spec.horizon_days} days",
            f"use one of: {pairs or 'none'}",
        )
    return frame[list(ORACLE_COLUMNS)].reset_index(drop=True)
