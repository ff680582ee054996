"""The seeded simulator behind the default sample dataset: a consumer product with a recommender.

``simulate_store(path, config)`` builds a fresh store: the canonical tables (events, users with
country / channel / platform / plan, items, assignments, recommendations), one ``load_history``
row, ``store_meta`` marking the data as simulated, and the ground truth in the ``truth`` schema,
which no analysis reads (see ``core/simulation/truth.py``):

- ``truth.user_outcomes``: per user and as-of date, the true probability of no activity and the
  expected revenue over the horizon, and the probability of activity in each week of it;
- ``truth.experiment_effects``: true effects of ``onboarding_checklist`` (a real lift in
  conversion and retention) and ``checkout_button_color`` (no effect at all);
- ``truth.policy_values``: click rate, day-30 retention and 90-day revenue per user of each
  recommendation policy (``popularity`` wins clicks, ``personalised`` wins retention);
- ``truth.parameters``: every knob of the run.

Users are simulated in chunks of ``chunk_users`` with vectorised numpy (see
``core/simulation/process.py``); the data depends only on the configuration. The as-of dates of
``truth.user_outcomes`` are midnights: the period end (``start + days``) minus 90 and 180 days.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from core.errors import TenureError
from core.schema import user_key_sql
from core.simulation.catalog import CATEGORY_NAMES, Catalog, build_catalog
from core.simulation.config import (
    CHANNELS,
    COUNTRIES,
    ENGAGEMENT_BUCKETS,
    EVENT_NAMES,
    PLANS,
    PLATFORMS,
    POLICIES,
    VARIANTS,
    Behaviour,
    SimulationConfig,
)
from core.simulation.process import SECONDS_PER_DAY, Day, World, run_days
from core.simulation.streams import Purpose, counter, uniform
from core.simulation.truth import (
    EXPERIMENT_METRICS,
    ExperimentTotals,
    PolicyTotals,
    experiment_totals,
    policy_totals,
    user_outcomes,
)
from core.simulation.users import Cohort, build_cohort
from core.store import Store

__all__ = ["Behaviour", "SimulationConfig", "simulate_store"]

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[float, str], None]

SOURCE_SENTENCE = (
    "Simulated data from Tenure's seeded simulator: synthetic users, sessions and purchases of a "
    "consumer product with two recommendation policies and two A/B experiments; not real people."
)
FLUSH_ROWS = 1_000_000
MEMORY_LIMIT = "1GB"
ATTRIBUTES = (("country", COUNTRIES), ("channel", CHANNELS), ("platform", PLATFORMS), ("plan", PLANS))


def _sql_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{value}'" for value in values) + "]"


INSERT_EVENTS = f"""
INSERT INTO events (user_id, event_time, event_name, revenue, item_id, session_id, properties, user_key)
SELECT printf('u%07d', user_number), event_time, {_sql_list(EVENT_NAMES)}[code + 1], revenue,
       CASE WHEN item >= 0 THEN printf('i%04d', item) END,
       printf('s%07d-%03d-%d', user_number, day, session_rank),
       CASE WHEN quantity > 0 THEN json_object('quantity', quantity) END,
       {user_key_sql("printf('u%07d', user_number)")}
FROM event_frame
"""

INSERT_RECOMMENDATIONS = f"""
INSERT INTO recommendations
    (rec_time, request_id, user_id, policy, item_id, position, propensity, reward, context)
SELECT rec_time, printf('r%07d-%03d-%d', user_number, day, session_rank), printf('u%07d', user_number),
       {_sql_list(POLICIES)}[policy + 1], printf('i%04d', item), position, propensity, reward,
       json_object('country', {_sql_list(COUNTRIES)}[country + 1],
                   'platform', {_sql_list(PLATFORMS)}[platform + 1],
                   'plan', {_sql_list(PLANS)}[plan + 1],
                   'engagement', {_sql_list(ENGAGEMENT_BUCKETS)}[bucket + 1])
FROM recommendation_frame
"""

TRUTH_DDL = (
    "CREATE SCHEMA IF NOT EXISTS truth",
    """CREATE TABLE truth.user_outcomes (user_id VARCHAR, as_of TIMESTAMP, horizon_days INTEGER,
        churn_prob DOUBLE, expected_revenue DOUBLE, active_prob_by_week JSON)""",
    """CREATE TABLE truth.experiment_effects (experiment VARCHAR, metric VARCHAR,
        control_value DOUBLE, treatment_value DOUBLE, effect DOUBLE)""",
    """CREATE TABLE truth.policy_values (policy VARCHAR, click_rate DOUBLE, retention_30d DOUBLE,
        revenue_90d_per_user DOUBLE)""",
    "CREATE TABLE truth.parameters (key VARCHAR, value VARCHAR)",
)


@dataclass
class _Totals:
    """What the chunks add up to: row counts and the truth sums."""

    events: int = 0
    recommendations: int = 0
    policies: dict[int, PolicyTotals] = field(default_factory=lambda: {0: PolicyTotals(), 1: PolicyTotals()})
    experiments: dict[str, ExperimentTotals] = field(
        default_factory=lambda: {
            "onboarding_checklist": ExperimentTotals(),
            "checkout_button_color": ExperimentTotals(),
        }
    )


def simulate_store(path: Path, config: SimulationConfig, progress: ProgressCallback | None = None) -> str:
    """Build a fresh simulated store at ``path``; returns a one-line summary.

    The file must not exist yet: the simulator writes whole datasets, never into existing data.
    """
    _validate(config)
    path = Path(path)
    if path.exists():
        raise TenureError(f"store {path} already exists", "simulate into a new file")
    report = progress or (lambda fraction, message: None)
    catalog = build_catalog(config.items, config.seed, config.behaviour)
    world = World.build(config, catalog)
    chunks = [
        (first, min(first + config.chunk_users, config.users))
        for first in range(0, config.users, config.chunk_users)
    ]
    totals = _Totals()
    with Store(path) as store:
        with store.cursor() as cursor:
            # The build owns this fresh store: cap DuckDB's buffers so memory stays bounded.
            cursor.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
        with store.transaction() as cursor:
            _prepare(cursor, catalog)
        for index, (first, last) in enumerate(chunks):

            def chunk_progress(share: float, message: str, index: int = index) -> None:
                report((index + share) / len(chunks), f"chunk {index + 1}/{len(chunks)}: {message}")

            _simulate_chunk(store, world, first, last, totals, chunk_progress)
        with store.transaction() as cursor:
            _write_summary_truth(cursor, config, totals)
            store.set_meta(cursor, "dataset", "simulated")
            store.set_meta(cursor, "source", SOURCE_SENTENCE)
            cursor.execute(
                "INSERT INTO load_history VALUES (1, ?, 'events', ?, ?, 0, 0, ?)",
                [
                    f"simulator users={config.users} seed={config.seed}",
                    hashlib.sha256(repr(config).encode()).hexdigest(),
                    totals.events,
                    dt.datetime.now(dt.UTC).replace(tzinfo=None),
                ],
            )
    report(1.0, "done")
    summary = (
        f"{config.users:,} users, {totals.events:,} events, {totals.recommendations:,} recommendations, "
        f"{catalog.size:,} items over {config.days} days from {config.start.isoformat()} (seed {config.seed})"
    )
    logger.info("simulated store %s: %s", path, summary)
    return summary


def _validate(config: SimulationConfig) -> None:
    checks = (
        ("users", config.users >= 1 and config.users < 10_000_000, "between 1 and 9,999,999"),
        ("days", 32 <= config.days < 1000, "between 32 and 999"),
        ("chunk_users", config.chunk_users >= 1, "at least 1"),
        ("items", 1 <= config.items < 10_000, "between 1 and 9,999"),
        ("slots", 1 <= config.slots <= 16, "between 1 and 16"),
        ("truth_replications", config.truth_replications >= 1, "at least 1"),
    )
    for name, valid, expected in checks:
        if not valid:
            raise TenureError(
                f"simulation parameter {name}={getattr(config, name)} is out of range", expected
            )


def _prepare(cursor: duckdb.DuckDBPyConnection, catalog: Catalog) -> None:
    for name, _ in ATTRIBUTES:
        cursor.execute(f"ALTER TABLE users ADD COLUMN {name} VARCHAR")
    for statement in TRUTH_DDL:
        cursor.execute(statement)
    item_frame = pa.table(
        {
            "item": np.arange(catalog.size),
            "title": list(catalog.titles),
            "category": np.asarray(CATEGORY_NAMES)[catalog.category],
            "price": catalog.price,
        }
    )
    cursor.register("item_frame", item_frame)
    cursor.execute(
        "INSERT INTO items (item_id, title, category, price) "
        "SELECT printf('i%04d', item), title, category, price FROM item_frame"
    )
    cursor.unregister("item_frame")


def _simulate_chunk(
    store: Store,
    world: World,
    first: int,
    last: int,
    totals: _Totals,
    report: ProgressCallback,
) -> None:
    """The actual run of users ``first`` to ``last - 1``, then the truth for them."""
    config = world.config
    cohort = build_cohort(config, first, last)
    start_us = _microseconds(config.start)
    signup = np.full(len(cohort), np.nan)
    checkout = np.full(len(cohort), np.nan)
    checkout_low, checkout_high = config.checkout_window
    as_of_days = sorted({config.days - back for back in config.truth_as_of_days if 0 < back < config.days})
    snapshots: dict[int, Cohort] = {}
    buffered: list[Day] = []
    buffered_rows = 0
    report(0.0, "simulating users")
    with store.transaction() as cursor:
        for day in run_days(cohort, world, 0, config.days, emit=True):
            sessions = day.sessions
            opening = sessions.rank == 0
            arriving = opening & (cohort.arrival_day[sessions.entry] == day.day)
            signup[sessions.entry[arriving]] = sessions.seconds[arriving]
            if checkout_low <= day.day < checkout_high:
                entering = opening & np.isnan(checkout[sessions.entry])
                checkout[sessions.entry[entering]] = sessions.seconds[entering]
            if day.day + 1 in as_of_days:
                snapshots[day.day + 1] = cohort.take(np.flatnonzero(cohort.arrival_day <= day.day))
            if day.events is not None:
                buffered.append(day)
                buffered_rows += len(day.events.code)
            if buffered_rows >= FLUSH_ROWS:
                _flush(cursor, cohort, buffered, start_us, totals)
                buffered, buffered_rows = [], 0
            if day.day % 30 == 0:
                report(0.5 * day.day / config.days, f"simulating day {day.day} of {config.days}")
        _flush(cursor, cohort, buffered, start_us, totals)
        _write_users(cursor, cohort, signup, checkout, start_us)

    report(0.5, "ground truth: user outcomes")
    with store.transaction() as cursor:
        for as_of_day, snapshot in snapshots.items():
            outcomes = user_outcomes(snapshot, world, as_of_day)
            frame = pa.table(
                {
                    "user_number": outcomes.user,
                    "churn_prob": outcomes.churn_prob,
                    "expected_revenue": outcomes.expected_revenue,
                    "by_week": pa.array(list(outcomes.active_prob_by_week), type=pa.list_(pa.float64())),
                }
            )
            cursor.register("outcome_frame", frame)
            cursor.execute(
                "INSERT INTO truth.user_outcomes SELECT printf('u%07d', user_number), ?, ?, churn_prob, "
                "expected_revenue, to_json(by_week) FROM outcome_frame",
                [_timestamp(config, as_of_day), config.truth_horizon_days],
            )
            cursor.unregister("outcome_frame")
    report(0.7, "ground truth: policies")
    for policy in (0, 1):
        totals.policies[policy].add(policy_totals(cohort, world, policy))
    report(0.9, "ground truth: experiments")
    onboarded = np.flatnonzero(cohort.onboarding >= 0)
    totals.experiments["onboarding_checklist"].add(
        experiment_totals(cohort, world, onboarded, signup[onboarded], onboarding=True)
    )
    entered = np.flatnonzero(~np.isnan(checkout))
    totals.experiments["checkout_button_color"].add(
        experiment_totals(cohort, world, entered, checkout[entered], onboarding=False)
    )


def _microseconds(day: dt.date) -> int:
    return int(np.datetime64(day, "us").astype(np.int64))


def _timestamp(config: SimulationConfig, day: int) -> dt.datetime:
    return dt.datetime.combine(config.start, dt.time()) + dt.timedelta(days=day)


def _to_time(start_us: int, seconds: np.ndarray) -> np.ndarray:
    return (start_us + np.round(seconds * 1e6).astype(np.int64)).astype("datetime64[us]")


def _flush(
    cursor: duckdb.DuckDBPyConnection, cohort: Cohort, days: list[Day], start_us: int, totals: _Totals
) -> None:
    """Insert the buffered days' events and recommendations in two bulk statements."""
    if not days:
        return
    events = [day.events for day in days if day.events is not None]
    shown = [day.shown for day in days if day.shown is not None]
    entry = np.concatenate([e.entry for e in events])
    seconds = np.concatenate([e.seconds for e in events])
    event_frame = pa.table(
        {
            "user_number": cohort.user[entry],
            "event_time": _to_time(start_us, seconds),
            "code": np.concatenate([e.code for e in events]),
            "revenue": np.concatenate([e.revenue for e in events]),
            "item": np.concatenate([e.item for e in events]),
            "day": (seconds // SECONDS_PER_DAY).astype(np.int32),
            "session_rank": np.concatenate([e.rank for e in events]),
            "quantity": np.concatenate([e.quantity for e in events]),
        }
    )
    cursor.register("event_frame", event_frame)
    cursor.execute(INSERT_EVENTS)
    cursor.unregister("event_frame")
    totals.events += len(entry)

    entry = np.concatenate([s.entry for s in shown])
    seconds = np.concatenate([s.seconds for s in shown])
    recommendation_frame = pa.table(
        {
            "rec_time": _to_time(start_us, seconds),
            "user_number": cohort.user[entry],
            "day": (seconds // SECONDS_PER_DAY).astype(np.int32),
            "session_rank": np.concatenate([s.rank for s in shown]),
            "policy": cohort.policy[entry],
            "item": np.concatenate([s.item for s in shown]),
            "position": np.concatenate([s.position for s in shown]).astype(np.int32),
            "propensity": np.concatenate([s.propensity for s in shown]),
            "reward": np.concatenate([s.reward for s in shown]),
            "country": cohort.country[entry],
            "platform": cohort.platform[entry],
            "plan": cohort.plan[entry],
            "bucket": np.concatenate([s.bucket for s in shown]),
        }
    )
    cursor.register("recommendation_frame", recommendation_frame)
    cursor.execute(INSERT_RECOMMENDATIONS)
    cursor.unregister("recommendation_frame")
    totals.recommendations += len(entry)


def _write_users(
    cursor: duckdb.DuckDBPyConnection, cohort: Cohort, signup: np.ndarray, checkout: np.ndarray, start_us: int
) -> None:
    """Users with their attributes, and their assignments to the policy and the experiments."""
    signup_time = _to_time(start_us, signup)
    columns = {name: np.asarray(values)[getattr(cohort, name)] for name, values in ATTRIBUTES}
    user_frame = pa.table({"user_number": cohort.user, "signup_time": signup_time, **columns})
    cursor.register("user_frame", user_frame)
    cursor.execute(
        "INSERT INTO users (user_id, signup_time, country, channel, platform, plan) "
        "SELECT printf('u%07d', user_number), signup_time, country, channel, platform, plan FROM user_frame"
    )
    cursor.unregister("user_frame")

    onboarded = cohort.onboarding >= 0
    entered = ~np.isnan(checkout)
    checkout_variant = (uniform(cohort.key, counter(0, Purpose.CHECKOUT)) < 0.5).astype(np.int8)
    parts = [
        (
            cohort.user,
            "rec_policy",
            np.asarray(POLICIES)[cohort.policy],
            signup_time,
            cohort.policy_propensity,
        ),
        (
            cohort.user[onboarded],
            "onboarding_checklist",
            np.asarray(VARIANTS)[cohort.onboarding[onboarded]],
            signup_time[onboarded],
            np.full(onboarded.sum(), 0.5),
        ),
        (
            cohort.user[entered],
            "checkout_button_color",
            np.asarray(VARIANTS)[checkout_variant[entered]],
            _to_time(start_us, checkout[entered]),
            np.full(entered.sum(), 0.5),
        ),
    ]
    assignment_frame = pa.table(
        {
            "user_number": np.concatenate([part[0] for part in parts]),
            "experiment": np.concatenate([np.full(len(part[0]), part[1]) for part in parts]),
            "variant": np.concatenate([part[2] for part in parts]),
            "assigned_time": np.concatenate([part[3] for part in parts]),
            "propensity": np.concatenate([part[4] for part in parts]),
        }
    )
    cursor.register("assignment_frame", assignment_frame)
    cursor.execute(
        "INSERT INTO assignments (user_id, experiment, variant, assigned_time, propensity) "
        "SELECT printf('u%07d', user_number), experiment, variant, assigned_time, propensity "
        "FROM assignment_frame"
    )
    cursor.unregister("assignment_frame")


def _write_summary_truth(
    cursor: duckdb.DuckDBPyConnection, config: SimulationConfig, totals: _Totals
) -> None:
    for index, name in enumerate(POLICIES):
        policy = totals.policies[index]
        cursor.execute(
            "INSERT INTO truth.policy_values VALUES (?, ?, ?, ?)",
            [
                name,
                policy.clicks / policy.shown if policy.shown else None,
                policy.retained_30d / policy.eligible_30d if policy.eligible_30d else None,
                policy.revenue_90d / policy.eligible_90d if policy.eligible_90d else None,
            ],
        )
    for experiment, sums in totals.experiments.items():
        if sums.users == 0:
            continue
        for metric in EXPERIMENT_METRICS:
            control = sums.sums[0][metric] / sums.users
            treatment = sums.sums[1][metric] / sums.users
            cursor.execute(
                "INSERT INTO truth.experiment_effects VALUES (?, ?, ?, ?, ?)",
                [experiment, metric, control, treatment, treatment - control],
            )
    cursor.executemany("INSERT INTO truth.parameters VALUES (?, ?)", list(config.parameters().items()))
