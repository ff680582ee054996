"""Cohort retention on large event logs: Tenure's DuckDB query against the same table in pandas.

Usage: python bench/bench_retention.py [--events 10000000 100000000] [--repeat 3]

For each size it builds (once) a synthetic store under bench/data, times
``core.retention.retention_table`` (weekly classic retention, periods from each user's own
start, the incomplete-period rule), then loads ``user_id, event_time`` into pandas (the columns
a user's log has, not Tenure's internal key) and times two pandas implementations of the same
definition: a hand-optimised one (``pd.factorize`` + numpy) and an idiomatic one (groupby-transform,
``drop_duplicates``, merges). All three tables must agree exactly; the script prints the times and
the speed-up over each. Loading into pandas is not counted against pandas.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.synthetic import build_events_store
from bench.timing import best_of
from core.population import Filters
from core.retention import RetentionSpec, retention_table
from core.store import Store

PERIOD_DAYS = 7
MAX_PERIODS = 52


def pandas_retention(events: pd.DataFrame, data_end: pd.Timestamp) -> pd.DataFrame:
    """Weekly classic retention, the docs/METRICS.md definition, in vectorised pandas."""
    period = pd.Timedelta(days=PERIOD_DAYS)
    codes, _ = pd.factorize(events["user_id"])
    times = events["event_time"].to_numpy(dtype="datetime64[us]")
    start_per_user = pd.Series(times).groupby(codes).min()
    start = start_per_user.to_numpy()[codes]
    k = (times - start) // period.to_timedelta64()
    starts = pd.DatetimeIndex(start_per_user.to_numpy())
    cohort_per_user = (starts.normalize() - pd.to_timedelta(starts.day_of_week, unit="D")).to_numpy()
    complete_periods = (data_end.to_datetime64() - start_per_user.to_numpy()) // period.to_timedelta64()
    complete_periods = np.asarray(complete_periods, dtype=np.int64)
    active = pd.DataFrame({"user": codes, "k": k})
    active = active[active["k"] <= MAX_PERIODS].drop_duplicates()
    active = active[active["k"] < complete_periods[active["user"].to_numpy()]]
    active["cohort"] = cohort_per_user[active["user"].to_numpy()]
    retained = active.groupby(["cohort", "k"]).size().rename("retained")
    users = pd.DataFrame({"cohort": cohort_per_user, "complete": complete_periods})
    per_cohort = users.groupby(["cohort", "complete"]).size().rename("n").reset_index()
    rows = []
    for k_value in range(MAX_PERIODS + 1):
        eligible = per_cohort[per_cohort["complete"] >= k_value + 1].groupby("cohort")["n"].sum()
        rows.append(
            pd.DataFrame({"cohort": eligible.index, "period": k_value, "eligible": eligible.to_numpy()})
        )
    table = pd.concat(rows, ignore_index=True)
    table = table.merge(
        retained.reset_index().rename(columns={"k": "period"}), on=["cohort", "period"], how="left"
    )
    table["retained"] = table["retained"].fillna(0).astype(np.int64)
    table["rate"] = table["retained"] / table["eligible"]
    return table.sort_values(["cohort", "period"], ignore_index=True)


def idiomatic_pandas_retention(events: pd.DataFrame, data_end: pd.Timestamp) -> pd.DataFrame:
    """The same table written the way an analyst would: groupby-transform, drop_duplicates, merge."""
    period = pd.Timedelta(days=PERIOD_DAYS)
    df = events[["user_id", "event_time"]].copy()
    df["start"] = df.groupby("user_id")["event_time"].transform("min")
    df["period"] = (df["event_time"] - df["start"]) // period
    df["cohort"] = df["start"].dt.to_period("W-SUN").dt.start_time
    df["complete"] = (data_end - df["start"]) // period
    users = df.drop_duplicates("user_id")[["cohort", "complete"]]
    active = df[(df["period"] <= MAX_PERIODS) & (df["period"] < df["complete"])]
    active = active.drop_duplicates(["user_id", "cohort", "period"])
    retained = active.groupby(["cohort", "period"]).size().rename("retained").reset_index()
    grid = pd.DataFrame({"period": np.arange(MAX_PERIODS + 1)})
    eligible = users.merge(grid, how="cross")
    eligible = eligible[eligible["period"] < eligible["complete"]]
    eligible = eligible.groupby(["cohort", "period"]).size().rename("eligible").reset_index()
    table = eligible.merge(retained, on=["cohort", "period"], how="left")
    table["retained"] = table["retained"].fillna(0).astype(np.int64)
    table["rate"] = table["retained"] / table["eligible"]
    return table.sort_values(["cohort", "period"], ignore_index=True)


def bench(events: int, repeat: int) -> None:
    path = build_events_store(events)
    spec = RetentionSpec(period="week", mode="classic", max_periods=MAX_PERIODS)
    with Store(path, read_only=True) as store:
        retention_table(store, spec, Filters())
        duckdb_seconds, table = best_of(repeat, lambda: retention_table(store, spec, Filters()))
        data_end = store.data_end()
        frame = store.query_df("SELECT user_id, event_time FROM events")
    pandas_seconds, reference = best_of(max(1, repeat - 1), lambda: pandas_retention(frame, data_end))
    idiomatic_seconds, idiomatic = best_of(
        max(1, repeat - 1), lambda: idiomatic_pandas_retention(frame, data_end)
    )
    ours = table[~table["incomplete"]][["cohort", "period", "eligible", "retained"]].reset_index(drop=True)
    ours["cohort"] = pd.to_datetime(ours["cohort"])
    for result in (reference, idiomatic):
        theirs = result[["cohort", "period", "eligible", "retained"]].reset_index(drop=True)
        theirs["cohort"] = pd.to_datetime(theirs["cohort"])
        pd.testing.assert_frame_equal(ours, theirs, check_dtype=False)
    print(
        f"retention  events={events:>11,}  users={frame['user_id'].nunique():>9,}  "
        f"tenure(duckdb)={duckdb_seconds:7.3f}s  "
        f"pandas(factorize+numpy)={pandas_seconds:8.3f}s ({pandas_seconds / duckdb_seconds:5.1f}x)  "
        f"pandas(idiomatic)={idiomatic_seconds:8.3f}s ({idiomatic_seconds / duckdb_seconds:5.1f}x)  "
        f"(cells={len(ours):,}, results equal)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[10_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for events in args.events:
        bench(events, args.repeat)


if __name__ == "__main__":
    main()
