"""Who is in an experiment, in which variant, since when; and whether the split can be trusted.

Every metric of a review is measured from each user's own assignment time, so the clean
assignment table is the root of every query here. A user assigned to more than one variant of the
same experiment saw both; they are left out of every figure and counted in a warning. A user
assigned to the same variant twice keeps their first assignment.

The sample ratio mismatch (SRM) check compares the users per variant with the split the
experiment intended (Kohavi, Tang & Xu 2020, ch. 21): a chi-square goodness-of-fit test, flagged
at p < 0.001. The intended split comes from ``assignments.propensity`` where it is filled in,
else an equal split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.errors import TenureError
from core.schema import user_key_sql
from core.store import Store

PER_USER_SPLIT = "the per-user assignment propensities"
SRM_ALPHA = 0.001
"""The SRM flag threshold: strict, since the check runs on every experiment every day."""


def clean_assignments_sql() -> str:
    """A SELECT of ``(user_id, user_key, variant, assigned_time, propensity)`` for one experiment.

    Binds one parameter, the experiment name. Users with several variants are dropped.
    """
    return (
        "SELECT user_id, "
        + user_key_sql()
        + " AS user_key, min(variant) AS variant, min(assigned_time) AS assigned_time, "
        "arg_min(propensity, assigned_time) AS propensity "
        "FROM assignments WHERE experiment = ? AND user_id IS NOT NULL AND assigned_time IS NOT NULL "
        "AND variant IS NOT NULL GROUP BY user_id HAVING min(variant) = max(variant)"
    )


@dataclass(frozen=True)
class ExperimentUsers:
    """The users of one experiment per variant and the sample ratio check.

    Attributes:
        experiment: its name.
        users: clean users per variant, in sort order.
        excluded_multiple: users assigned to more than one variant (left out).
        intended_share: the intended share of users per variant (sums to 1).
        split_source: where the intended split came from, in words.
        srm_p_value: the chi-square p-value of the observed counts against the intended split.
        first_assigned, last_assigned: the first and last assignment times.
    """

    experiment: str
    users: dict[str, int]
    excluded_multiple: int
    intended_share: dict[str, float]
    split_source: str
    srm_p_value: float
    first_assigned: pd.Timestamp
    last_assigned: pd.Timestamp

    @property
    def targeted(self) -> bool:
        """Propensities that differ between users: the arms are not comparable as they stand."""
        return self.split_source == PER_USER_SPLIT

    @property
    def srm_failed(self) -> bool:
        return bool(self.srm_p_value < SRM_ALPHA)

    @property
    def total_users(self) -> int:
        return sum(self.users.values())


def experiment_names(store: Store) -> list[str]:
    """Every experiment in ``assignments``, in sort order."""
    frame = store.query_df(
        "SELECT DISTINCT experiment FROM assignments WHERE experiment IS NOT NULL ORDER BY 1"
    )
    return frame["experiment"].tolist()


def experiment_users(store: Store, experiment: str) -> ExperimentUsers:
    """Counts, exclusions and the SRM check of ``experiment``."""
    # One pass over the experiment's rows: the clean users per variant, and (variant NULL) the
    # users seen in several variants.
    per_group = store.query_df(
        "WITH g AS (SELECT user_id, min(variant) AS low, max(variant) AS high, "
        "min(assigned_time) AS assigned_time, arg_min(propensity, assigned_time) AS propensity "
        "FROM assignments WHERE experiment = ? AND user_id IS NOT NULL AND assigned_time IS NOT NULL "
        "AND variant IS NOT NULL GROUP BY user_id) "
        "SELECT CASE WHEN low = high THEN low END AS variant, count(*) AS users, "
        "min(assigned_time) AS first_assigned, max(assigned_time) AS last_assigned, "
        "count(propensity) AS with_propensity, min(propensity) AS min_propensity, "
        "max(propensity) AS max_propensity, sum(propensity) AS sum_propensity "
        "FROM g GROUP BY 1 ORDER BY 1",
        [experiment],
    )
    several = per_group["variant"].isna()
    excluded = int(per_group.loc[several, "users"].sum())
    per_variant = per_group[~several].reset_index(drop=True)
    if per_variant.empty:
        known = experiment_names(store)
        raise TenureError(
            f"experiment '{experiment}' has no assigned users in the assignments table",
            f"choose one of: {', '.join(known)}" if known else "load an assignments file first",
        )
    users = {str(v): int(n) for v, n in zip(per_variant["variant"], per_variant["users"], strict=True)}
    share, source = _intended_share(per_variant)
    observed = np.array(list(users.values()), dtype=float)
    expected = np.array([share[v] for v in users]) * observed.sum()
    from scipy import stats  # here: the A/B command imports it while its query runs

    p_value = float(stats.chisquare(observed, expected).pvalue) if len(users) > 1 else float("nan")
    return ExperimentUsers(
        experiment=experiment,
        users=users,
        excluded_multiple=int(excluded),
        intended_share=share,
        split_source=source,
        srm_p_value=p_value,
        first_assigned=pd.Timestamp(per_variant["first_assigned"].min()),
        last_assigned=pd.Timestamp(per_variant["last_assigned"].max()),
    )


def _intended_share(per_variant: pd.DataFrame) -> tuple[dict[str, float], str]:
    """The split the experiment meant to make.

    - Every user has a propensity and it is constant within each variant: those propensities
      (normalised), e.g. a 90/10 rollout.
    - Two variants with per-user propensities (targeted assignment): the expected count of a
      variant is the sum over all users of their probability of getting it, i.e. its users'
      propensities plus one minus the other variant's users' propensities.
    - Otherwise an equal split.
    """
    variants = [str(v) for v in per_variant["variant"]]
    complete = bool((per_variant["with_propensity"] == per_variant["users"]).all())
    if complete:
        constant = np.allclose(per_variant["min_propensity"], per_variant["max_propensity"])
        if constant:
            raw = per_variant["min_propensity"].to_numpy(dtype=float)
            if raw.sum() > 0:
                return dict(zip(variants, raw / raw.sum(), strict=True)), "the assignment propensities"
        if len(variants) == 2:
            counts = per_variant["users"].to_numpy(dtype=float)
            sums = per_variant["sum_propensity"].to_numpy(dtype=float)
            expected = np.array([sums[0] + counts[1] - sums[1], sums[1] + counts[0] - sums[0]])
            return (
                dict(zip(variants, expected / expected.sum(), strict=True)),
                PER_USER_SPLIT,
            )
    equal = 1.0 / len(variants)
    return dict.fromkeys(variants, equal), "an equal split (no propensities recorded)"


def experiment_overview(store: Store) -> pd.DataFrame:
    """One row per experiment for the list view: users, variants, days running, SRM.

    ``status`` is *running* while users were still being assigned in the last two days of data,
    else *stopped*; ``days_running`` is from the first assignment to the data's end while it
    runs, to the last assignment once it stopped (a stopped test does not keep running).
    """
    data_end = store.data_end()
    rows = []
    for name in experiment_names(store):
        try:
            info = experiment_users(store, name)
        except TenureError:
            continue
        end = data_end if data_end is not None else info.last_assigned
        running = (end - info.last_assigned) <= pd.Timedelta(days=2)
        ran_until = end if running else info.last_assigned
        rows.append(
            {
                "experiment": name,
                "variants": len(info.users),
                "users": info.total_users,
                "excluded_multiple": info.excluded_multiple,
                "first_assigned": info.first_assigned,
                "last_assigned": info.last_assigned,
                "days_running": max((ran_until - info.first_assigned).total_seconds() / 86_400, 0.0),
                "status": "running" if running else "stopped",
                "srm_p_value": info.srm_p_value,
                "srm": "failed" if info.srm_failed else "passed",
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "experiment",
            "variants",
            "users",
            "excluded_multiple",
            "first_assigned",
            "last_assigned",
            "days_running",
            "status",
            "srm_p_value",
            "srm",
        ],
    )


def latest_assigning(overview: pd.DataFrame, among: list[str]) -> str | None:
    """Of ``among``, the experiment of ``experiment_overview`` that assigned users last (ties: the
    first listed): the one most likely to have users whose long-term outcome is not yet known,
    which is what an early read is for. None when none of them is in the overview."""
    rows = overview[overview["experiment"].isin(among)]
    if rows.empty:
        return None
    order = rows.assign(rank=rows["experiment"].map({name: index for index, name in enumerate(among)}))
    latest = order.sort_values(["last_assigned", "rank"], ascending=[False, True], kind="stable")
    return str(latest.iloc[0]["experiment"])
