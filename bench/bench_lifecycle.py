"""Weekly lifecycle on large event logs: Tenure's DuckDB query against the same table in pandas.

Usage: python bench/bench_lifecycle.py [--events 10000000 100000000] [--repeat 3]

For each size it builds (once) a synthetic store under bench/data (bench/synthetic.py), times
``core.lifecycle.lifecycle_table`` (ISO weeks, start = first event, any event is activity), then
loads ``user_id, event_time`` into pandas (the columns a user's log has, not Tenure's internal key)
and times two pandas implementations of the same definition (docs/METRICS.md, "Lifecycle"): a
hand-optimised one (``pd.factorize`` + numpy) and an idiomatic one (``drop_duplicates``,
``groupby().shift``). All three tables must agree exactly; the script prints the times and the
speed-up over each. Loading into pandas is not counted against pandas.
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
from core.lifecycle import LifecycleSpec, lifecycle_table
from core.population import Filters
from core.store import Store

STATUSES = ["new", "returning", "resurrecting", "dormant"]
MONDAY = np.datetime64("1970-01-05", "D")


def _weeks(times: np.ndarray) -> np.ndarray:
    """ISO week index (weeks since the week of 1970-01-05) of each UTC timestamp."""
    return (times.astype("datetime64[D]") - MONDAY).astype(np.int64) // 7


def _frame(new, active, returning, first_week: int) -> pd.DataFrame:
    previous = np.concatenate([[0], active[:-1]])
    weeks = np.arange(first_week, first_week + len(active))
    return pd.DataFrame(
        {
            "period": (MONDAY + weeks * 7).astype("datetime64[ns]"),
            "new": new,
            "returning": returning,
            "resurrecting": active - new - returning,
            "dormant": previous - returning,
        }
    )


def pandas_lifecycle(events: pd.DataFrame) -> pd.DataFrame:
    """Weekly lifecycle, first-event start, any event: factorize + numpy."""
    codes, _ = pd.factorize(events["user_id"])
    weeks = _weeks(events["event_time"].to_numpy())
    first_week = int(weeks.min())
    periods = int(weeks.max()) - first_week + 1
    relative = weeks - first_week
    span = periods + 1  # a gap between users, so user u's last week + 1 is never user u+1's week 0
    pairs = np.unique(codes.astype(np.int64) * span + relative)  # sorted by user, then week
    week_of_pair = pairs % span
    user_of_pair = pairs // span
    first_of_user = np.concatenate([[True], user_of_pair[1:] != user_of_pair[:-1]])
    has_previous = np.concatenate([[False], pairs[1:] == pairs[:-1] + 1])
    active = np.bincount(week_of_pair, minlength=periods)
    returning = np.bincount(week_of_pair[has_previous], minlength=periods)
    new = np.bincount(week_of_pair[first_of_user], minlength=periods)
    return _frame(new, active, returning, first_week)


def idiomatic_pandas_lifecycle(events: pd.DataFrame) -> pd.DataFrame:
    """The same table written the way an analyst would: drop_duplicates, groupby-shift, value_counts."""
    df = pd.DataFrame({"user_id": events["user_id"], "week": _weeks(events["event_time"].to_numpy())})
    df = df.drop_duplicates().sort_values(["user_id", "week"])
    df["start"] = df.groupby("user_id")["week"].transform("min")
    df["previous"] = df.groupby("user_id")["week"].shift(1)
    df["next"] = df.groupby("user_id")["week"].shift(-1)
    first_week, last_week = int(df["week"].min()), int(df["week"].max())
    index = pd.RangeIndex(first_week, last_week + 1)
    new = df.loc[df["week"] == df["start"], "week"].value_counts().reindex(index, fill_value=0)
    returning = df.loc[df["previous"] == df["week"] - 1, "week"].value_counts().reindex(index, fill_value=0)
    active = df["week"].value_counts().reindex(index, fill_value=0)
    gone = df.loc[df["next"].isna() | (df["next"] > df["week"] + 1), "week"] + 1
    dormant = gone[gone <= last_week].value_counts().reindex(index, fill_value=0)
    table = _frame(new.to_numpy(), active.to_numpy(), returning.to_numpy(), first_week)
    assert (table["dormant"].to_numpy() == dormant.to_numpy()).all()
    return table


def bench(events: int, repeat: int) -> None:
    path = build_events_store(events)
    spec = LifecycleSpec(period="week")
    with Store(path, read_only=True) as store:
        lifecycle_table(store, spec, Filters())
        duckdb_seconds, table = best_of(repeat, lambda: lifecycle_table(store, spec, Filters()))
        frame = store.query_df("SELECT user_id, event_time FROM events")
    pandas_seconds, reference = best_of(max(1, repeat - 1), lambda: pandas_lifecycle(frame))
    idiomatic_seconds, idiomatic = best_of(max(1, repeat - 1), lambda: idiomatic_pandas_lifecycle(frame))
    ours = table[["period", *STATUSES]].assign(period=pd.to_datetime(table["period"]))
    for result in (reference, idiomatic):
        pd.testing.assert_frame_equal(ours.reset_index(drop=True), result, check_dtype=False)
    print(
        f"lifecycle(week)  events={events:>11,}  users={frame['user_id'].nunique():>9,}  "
        f"tenure(duckdb)={duckdb_seconds:7.3f}s  "
        f"pandas(factorize+numpy)={pandas_seconds:8.3f}s ({pandas_seconds / duckdb_seconds:5.1f}x)  "
        f"pandas(idiomatic)={idiomatic_seconds:8.3f}s ({idiomatic_seconds / duckdb_seconds:5.1f}x)  "
        f"(periods={len(ours):,}, results equal)"
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
