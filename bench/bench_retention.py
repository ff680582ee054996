"""Cohort retention on large event logs: Tenure's DuckDB query against the same table in pandas.

Usage: python bench/bench_retention.py [--events 10000000 100000000] [--repeat 3]

For each size it builds (once) a synthetic store under bench/data, times
``core.retention.retention_table`` (weekly classic retention, periods from each user's own
start, the incomplete-period rule), then loads ``user_id, event_time`` into pandas and times a
vectorised pandas implementation of the same definition. The two tables must agree exactly; the
script prints both times and their ratio. Loading into pandas is not counted against pandas.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.synthetic import build_events_store
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
    cohort_per_user = (starts.normalize() - pd.to_timedelta(starts.weekday, unit="D")).to_numpy()
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


def best_of(repeat: int, work) -> tuple[float, object]:
    timings = []
    result = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = work()
        timings.append(time.perf_counter() - started)
    return min(timings), result


def bench(events: int, repeat: int) -> None:
    path = build_events_store(events)
    spec = RetentionSpec(period="week", mode="classic", max_periods=MAX_PERIODS)
    with Store(path, read_only=True) as store:
        retention_table(store, spec, Filters())
        duckdb_seconds, table = best_of(repeat, lambda: retention_table(store, spec, Filters()))
        data_end = store.data_end()
        frame = store.query_df("SELECT user_id, event_time FROM events")
    pandas_seconds, reference = best_of(max(1, repeat - 1), lambda: pandas_retention(frame, data_end))
    ours = table[~table["incomplete"]][["cohort", "period", "eligible", "retained"]].reset_index(drop=True)
    ours["cohort"] = pd.to_datetime(ours["cohort"])
    theirs = reference[["cohort", "period", "eligible", "retained"]].reset_index(drop=True)
    theirs["cohort"] = pd.to_datetime(theirs["cohort"])
    pd.testing.assert_frame_equal(ours, theirs, check_dtype=False)
    print(
        f"retention  events={events:>11,}  users={frame['user_id'].nunique():>9,}  "
        f"tenure(duckdb)={duckdb_seconds:7.3f}s  pandas={pandas_seconds:8.3f}s  "
        f"speed-up={pandas_seconds / duckdb_seconds:6.1f}x  (cells={len(ours):,}, results equal)"
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
