"""What a store offers the what-if views: logged policies, experiments with propensities and, on a
simulated store, each policy's ground truth (the attributes a rule may use are
``core.whatif.segments.rule_attributes``).

Kept apart from the estimators so that the page can list its choices with a few cheap queries
before anything slow runs.
"""

from __future__ import annotations

import pandas as pd

from core.experiments.assignments import clean_assignments_sql, experiment_names
from core.store import Store

TRUTH_TABLE = "policy_values"
TRUTH_COLUMNS = ("policy", "click_rate", "retention_30d", "revenue_90d_per_user")


def logged_policies(store: Store) -> list[str]:
    """The policies that logged rows of ``recommendations``, by name."""
    frame = store.query_df(
        "SELECT DISTINCT policy FROM recommendations WHERE policy IS NOT NULL ORDER BY policy"
    )
    return [str(name) for name in frame["policy"]]


def experiments_with_propensities(store: Store) -> list[str]:
    """Experiments whose clean assigned users all have a recorded propensity: those the per-user
    what-if can answer for (a user without one is unsupported by every target)."""
    names = []
    for name in experiment_names(store):
        missing, users = store.query_one(
            f"SELECT count(*) FILTER (WHERE propensity IS NULL), count(*) FROM ({clean_assignments_sql()})",
            [name],
        )
        if users and not missing:
            names.append(name)
    return names


def policy_experiment(store: Store, policy: str, experiments: list[str]) -> str | None:
    """The first of ``experiments`` (those with propensities) that has ``policy`` as a variant and
    whose users have recommendations logged: its assignments answer "everyone gets ``policy``" per
    user (``click_rate:D`` in core/whatif/users.py); None when there is none."""
    if not experiments:
        return None
    row = store.query_one(
        "SELECT min(a.experiment) FROM assignments a WHERE a.variant = ? AND list_contains(?, a.experiment) "
        "AND EXISTS (SELECT 1 FROM recommendations r WHERE r.user_id = a.user_id)",
        [policy, list(experiments)],
    )
    return None if row is None or row[0] is None else str(row[0])


def policy_truth(store: Store) -> pd.DataFrame | None:
    """The simulator's ground truth per policy (``truth.policy_values``: click rate, day-30
    retention and 90-day revenue per user had every user got the policy); None on a store
    without it (any real data)."""
    present = store.query_one(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'truth' AND table_name = ?",
        [TRUTH_TABLE],
    )[0]
    if not present:
        return None
    columns = ", ".join(TRUTH_COLUMNS)
    return store.query_df(f"SELECT {columns} FROM truth.{TRUTH_TABLE} ORDER BY policy")
