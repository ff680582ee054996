"""What a store offers the what-if views: logged policies, experiments with propensities, the
attributes a rule may use and, on a simulated store, each policy's ground truth.

Kept apart from the estimators so that the page can list its choices with a few cheap queries
before anything slow runs.
"""

from __future__ import annotations

import pandas as pd

from core.experiments.assignments import clean_assignments_sql, experiment_names
from core.store import Store
from core.whatif import rules
from core.whatif.users import attribute_columns

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


def rule_attribute_names(store: Store, experiment: str) -> list[str]:
    """The attributes a rule row may name: the ``users`` columns, plus any derived attribute the
    rules module offers for this experiment (``rules.rule_attributes`` where it exists)."""
    names = list(attribute_columns(store))
    derived = getattr(rules, "rule_attributes", None)
    if derived is not None:
        offered = derived(store, experiment)
        if isinstance(offered, pd.DataFrame):
            offered = [column for column in offered.columns if column != "user_id"]
        elif isinstance(offered, dict):
            offered = list(offered)
        names += [str(name) for name in offered if str(name) not in names]
    return names


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
