"""Ground truth from counterfactual runs of the simulator.

A counterfactual run is an ordinary run with a policy or a variant forced on every user. Since
every random draw is keyed by (user, day, purpose, slot), it uses the same random numbers as the
actual run wherever behaviour has not diverged (common random numbers), so differences between
runs are effects, not noise.

- ``user_outcomes``: Monte Carlo continuation of each user's state at an as-of date, with
  independent replications (re-keyed streams) of the following ``horizon`` days.
- ``experiment_effects``: every assigned user under control, then under treatment.
- ``policy_values``: every user under each recommendation policy.

Windows are judged by session start times; every event of a session lies within minutes of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.simulation.process import SECONDS_PER_DAY, World, run_days
from core.simulation.streams import replication_keys
from core.simulation.users import Cohort

EXPERIMENT_METRICS = ("conversion_14d", "retention_7d", "retention_30d", "revenue_30d")


@dataclass
class Outcomes:
    """Monte Carlo outcomes at one as-of date, for the users of one chunk who started before it."""

    user: np.ndarray
    churn_prob: np.ndarray
    expected_revenue: np.ndarray
    active_prob_by_week: np.ndarray


def user_outcomes(snapshot: Cohort, world: World, as_of_day: int) -> Outcomes:
    """Continue each user from ``snapshot`` (state at the start of ``as_of_day``) many times.

    Users already gone are certain to churn and to spend nothing; the others are replicated
    ``truth_replications`` times, each replication with its own random streams.
    """
    config = world.config
    replications, horizon = config.truth_replications, config.truth_horizon_days
    weeks = -(-horizon // 7)
    count = len(snapshot)
    churn = np.ones(count)
    revenue = np.zeros(count)
    by_week = np.zeros((count, weeks))
    alive = np.flatnonzero(snapshot.engagement > 0)
    if len(alive) and replications > 0:
        replica = snapshot.take(np.tile(alive, replications))
        replica.key = replication_keys(replica.key, np.repeat(np.arange(1, replications + 1), len(alive)))
        active = np.zeros((len(replica), weeks), bool)
        spent = np.zeros(len(replica))
        for day in run_days(replica, world, as_of_day, as_of_day + horizon, emit=False):
            sessions = day.sessions
            active[sessions.entry, (day.day - as_of_day) // 7] = True
            spent += np.bincount(sessions.entry, weights=sessions.revenue, minlength=len(replica))
        active = active.reshape(replications, len(alive), weeks)
        churn[alive] = 1.0 - active.any(axis=2).mean(axis=0)
        revenue[alive] = spent.reshape(replications, len(alive)).mean(axis=0)
        by_week[alive] = active.mean(axis=0)
    return Outcomes(snapshot.user, churn, revenue, by_week)


@dataclass
class PolicyTotals:
    """Sums over users under one forced policy, added up over chunks."""

    shown: int = 0
    clicks: int = 0
    retained_30d: int = 0
    eligible_30d: int = 0
    revenue_90d: float = 0.0
    eligible_90d: int = 0

    def add(self, other: PolicyTotals) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def policy_totals(cohort: Cohort, world: World, policy: int) -> PolicyTotals:
    """Every user of the cohort under ``policy``: clicks, day-30 retention, 90-day revenue."""
    config = world.config
    forced = cohort.take(np.arange(len(cohort)))
    forced.policy[:] = policy
    forced.reset(config.behaviour.onboarding_engagement)
    signup = np.full(len(forced), np.nan)
    retained = np.zeros(len(forced), bool)
    revenue = np.zeros(len(forced))
    totals = PolicyTotals()
    for day in run_days(forced, world, 0, config.days, emit=False):
        sessions = day.sessions
        totals.shown += day.shown_count
        totals.clicks += day.click_count
        first = (sessions.rank == 0) & (forced.arrival_day[sessions.entry] == day.day)
        signup[sessions.entry[first]] = sessions.seconds[first]
        elapsed = (sessions.seconds - signup[sessions.entry]) / SECONDS_PER_DAY
        retained[sessions.entry[(elapsed >= 30) & (elapsed < 31)]] = True
        early = elapsed < 90
        revenue += np.bincount(sessions.entry[early], weights=sessions.revenue[early], minlength=len(forced))
    end = config.days * SECONDS_PER_DAY
    eligible_30 = signup + 31 * SECONDS_PER_DAY <= end
    eligible_90 = signup + 90 * SECONDS_PER_DAY <= end
    totals.retained_30d = int(retained[eligible_30].sum())
    totals.eligible_30d = int(eligible_30.sum())
    totals.revenue_90d = float(revenue[eligible_90].sum())
    totals.eligible_90d = int(eligible_90.sum())
    return totals


@dataclass
class ExperimentTotals:
    """Per variant index, sums of each metric over assigned users, added up over chunks."""

    users: int = 0
    sums: dict[int, dict[str, float]] = field(
        default_factory=lambda: {variant: dict.fromkeys(EXPERIMENT_METRICS, 0.0) for variant in (0, 1)}
    )

    def add(self, other: ExperimentTotals) -> None:
        self.users += other.users
        for variant, metrics in other.sums.items():
            for metric, value in metrics.items():
                self.sums[variant][metric] += value


def experiment_totals(
    cohort: Cohort, world: World, members: np.ndarray, anchor: np.ndarray, onboarding: bool
) -> ExperimentTotals:
    """Assigned users ``members`` (anchored at their assignment time) under each variant.

    Only the onboarding checklist is an input of behaviour; the checkout button colour is not,
    so for it both counterfactual runs are one and the same run.
    """
    totals = ExperimentTotals(users=len(members))
    if len(members) == 0:
        return totals
    last_day = int(anchor.max() // SECONDS_PER_DAY) + 32
    runs = (0, 1) if onboarding else (0,)
    for variant in runs:
        forced = cohort.take(members)
        if onboarding:
            forced.onboarding[:] = variant
        forced.reset(world.config.behaviour.onboarding_engagement)
        sums = _experiment_sums(forced, world, anchor, last_day)
        for target in (variant,) if onboarding else (0, 1):
            totals.sums[target] = dict(sums)
    return totals


def _experiment_sums(forced: Cohort, world: World, anchor: np.ndarray, last_day: int) -> dict[str, float]:
    converted = np.zeros(len(forced), bool)
    retained_7 = np.zeros(len(forced), bool)
    retained_30 = np.zeros(len(forced), bool)
    revenue = 0.0
    first_day = int(forced.arrival_day.min())
    for day in run_days(forced, world, first_day, last_day, emit=False):
        sessions = day.sessions
        elapsed = (sessions.seconds - anchor[sessions.entry]) / SECONDS_PER_DAY
        converted[sessions.entry[(elapsed >= 0) & (elapsed < 14) & (sessions.purchases > 0)]] = True
        retained_7[sessions.entry[(elapsed >= 7) & (elapsed < 8)]] = True
        retained_30[sessions.entry[(elapsed >= 30) & (elapsed < 31)]] = True
        revenue += float(sessions.revenue[(elapsed >= 0) & (elapsed < 30)].sum())
    return {
        "conversion_14d": float(converted.sum()),
        "retention_7d": float(retained_7.sum()),
        "retention_30d": float(retained_30.sum()),
        "revenue_30d": revenue,
    }
