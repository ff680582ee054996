"""A hand-made experiment store for the segment and power tests, with its ground truth in frames.

Users have a personal activity rate (so the pre-period predicts the window, as CUPED needs), a
country (or none: a NULL value, or no ``users`` row at all), and one planted effect: treatment
raises the purchase probability of BR users only. Events stop at a known data end so that the
late users' day 7 has not ended.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.store import Store

ORIGIN = dt.datetime(2026, 1, 1)
DATA_END_DAY = 44
COUNTRIES = ("US", "BR", "DE", "NZ", None, "no row")
COUNTRY_SHARES = (0.38, 0.3, 0.22, 0.04, 0.03, 0.03)
NONE_LABEL = "(none)"


@dataclass(frozen=True)
class BuiltExperiment:
    """What was written, for the independent computations of the tests."""

    path: Path
    events: pd.DataFrame
    assignments: pd.DataFrame
    segment: pd.Series  # user_id -> the segment label the review must give


def build_experiment_store(path: Path, users: int = 1600, seed: int = 11) -> BuiltExperiment:
    rng = np.random.default_rng(seed)
    ids = np.array([f"u{i:05d}" for i in range(users)])
    variant = np.where(np.arange(users) % 2 == 0, "control", "treatment")
    assigned = np.array([ORIGIN + dt.timedelta(days=float(d)) for d in rng.uniform(0, 40, users)])
    country = rng.choice(len(COUNTRIES), size=users, p=COUNTRY_SHARES)
    rate = rng.gamma(2.0, 0.4, users)  # events per day, persistent per user
    rows = []
    for index in range(users):
        count = int(rng.poisson(rate[index] * 65))
        offsets = rng.uniform(-20, 45, count)
        boosted = COUNTRIES[country[index]] == "BR" and variant[index] == "treatment"
        purchase_p = np.where((offsets >= 0) & boosted, 0.25, 0.08)
        is_purchase = rng.random(count) < purchase_p
        for offset, purchase in zip(offsets, is_purchase, strict=True):
            when = assigned[index] + dt.timedelta(days=float(offset))
            if when > ORIGIN + dt.timedelta(days=DATA_END_DAY):
                continue
            revenue = float(rng.gamma(2, 10)) if purchase else 0.0
            name = "purchase" if purchase else str(rng.choice(["view", "click"]))
            rows.append((ids[index], when, name, revenue, f"s{index}-{int(offset // 1.5)}"))
    rows.append(("sentinel", ORIGIN + dt.timedelta(days=DATA_END_DAY), "view", 0.0, "s-end"))
    events = pd.DataFrame(rows, columns=["user_id", "event_time", "event_name", "revenue", "session_id"])
    assignments = pd.DataFrame(
        {
            "user_id": ids,
            "experiment": "exp",
            "variant": variant,
            "assigned_time": assigned,
            "propensity": 0.5,
        }
    )
    labels = [COUNTRIES[c] for c in country]
    users_frame = pd.DataFrame({"user_id": ids, "country": labels})
    users_frame = users_frame[users_frame["country"] != "no row"]
    write_store(path, events, assignments, users_frame).close()
    segment = pd.Series(
        [NONE_LABEL if label in (None, "no row") else label for label in labels], index=ids, name="segment"
    )
    return BuiltExperiment(path, events, assignments, segment)


def write_store(
    path: Path | str, events: pd.DataFrame, assignments: pd.DataFrame, users: pd.DataFrame | None = None
) -> Store:
    """Write the frames into a new store and return it open (the caller closes it)."""
    store = Store(path)
    with store.transaction() as cursor:
        cursor.register("assignment_frame", assignments)
        cursor.execute(
            "INSERT INTO assignments (user_id, experiment, variant, assigned_time, propensity) "
            "SELECT user_id, experiment, variant, assigned_time, propensity FROM assignment_frame"
        )
        cursor.register("event_frame", events)
        cursor.execute(
            "INSERT INTO events (user_id, event_time, event_name, revenue, session_id) "
            "SELECT user_id, event_time, event_name, revenue, session_id FROM event_frame"
        )
        if users is not None:
            cursor.execute("ALTER TABLE users ADD COLUMN country VARCHAR")
            cursor.register("user_frame", users)
            cursor.execute("INSERT INTO users (user_id, country) SELECT user_id, country FROM user_frame")
    return store
