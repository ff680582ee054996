"""A 5-step ordered funnel on large event logs: Tenure's DuckDB query against pandas.

Usage: python bench/bench_funnels.py [--events 10000000 100000000] [--repeat 3]

For each size it builds (once) the synthetic store of bench/synthetic.py, then (once) a copy under
bench/data whose event names are rewritten from a hash of (user, time) into six names
(visit, signup, search, add_to_cart, checkout, purchase), so that a 5-step funnel has something to
walk. It times ``core.funnels.funnel_table`` (ordered, 7-day window, no exclusion), loads
``user_id, event_time, event_name`` into pandas (not counted) and times a vectorised pandas
implementation of the same definition: per step a ``merge_asof`` by user onto the latest valid end
of the previous step, keeping the matches within the window of that try's first step. Both must
give the same users per step; the script prints the times and the ratio.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.synthetic import BENCH_DATA_DIR, build_events_store
from bench.timing import best_of
from core.funnels import FunnelSpec, funnel_table
from core.population import Filters
from core.store import Store

NAMES = ("visit", "signup", "search", "add_to_cart", "checkout", "purchase")
STEPS = NAMES[:5]
WINDOW = dt.timedelta(days=7)


def build_funnel_store(events: int) -> Path:
    """The synthetic store with six hashed event names (built once, then reused)."""
    source = build_events_store(events)
    path = BENCH_DATA_DIR / f"funnel_events_{events}.duckdb"
    if path.exists():
        return path
    building = path.with_suffix(".building")
    building.unlink(missing_ok=True)
    names = ", ".join(f"'{name}'" for name in NAMES)
    with Store(building) as store, store.transaction() as cursor:
        cursor.execute(f"ATTACH '{source}' AS source (READ_ONLY)")
        cursor.execute(
            "INSERT INTO events (user_id, event_time, event_name, revenue, item_id, session_id, user_key) "
            f"SELECT user_id, event_time, [{names}][1 + (hash(user_id, event_time) % {len(NAMES)})::INTEGER], "
            "revenue, item_id, session_id, user_key FROM source.events"
        )
    building.rename(path)
    return path


def pandas_funnel(events: pd.DataFrame, steps: tuple[str, ...], window: dt.timedelta) -> list[int]:
    """Users reaching each step of an ordered funnel (docs/METRICS.md), vectorised pandas.

    Positions follow the tie order: time, then the step index. A step-j event continues the
    latest step j-1 end strictly before it (``merge_asof``, by user) when it is within the window
    of that try's first step.
    """
    codes = pd.Series(np.arange(1, len(steps) + 1), index=list(steps))
    frame = events[events["event_name"].isin(steps)]
    user, _ = pd.factorize(frame["user_id"])
    micros = frame["event_time"].to_numpy(dtype="datetime64[us]").astype(np.int64)
    code = codes.reindex(frame["event_name"]).to_numpy()
    table = pd.DataFrame({"user": user, "t": micros, "code": code, "pos": micros * 16 + code})
    window_us = int(window / dt.timedelta(microseconds=1))
    ends = table.loc[table["code"] == 1, ["user", "pos", "t"]].assign(anchor=lambda f: f["t"])
    counts = [ends["user"].nunique()]
    for step in range(2, len(steps) + 1):
        candidates = table.loc[table["code"] == step, ["user", "pos", "t"]].sort_values("pos")
        previous = ends[["user", "pos", "anchor"]].sort_values("pos")
        joined = pd.merge_asof(
            candidates, previous, on="pos", by="user", direction="backward", allow_exact_matches=False
        )
        ends = joined[joined["t"] - joined["anchor"] <= window_us]
        counts.append(ends["user"].nunique())
    return counts


def bench(events: int, repeat: int) -> None:
    path = build_funnel_store(events)
    spec = FunnelSpec(STEPS, WINDOW, "ordered")
    with Store(path, read_only=True) as store:
        funnel_table(store, spec, Filters())
        duckdb_seconds, table = best_of(repeat, lambda: funnel_table(store, spec, Filters()))
        frame = store.query_df("SELECT user_id, event_time, event_name FROM events")
    pandas_seconds, reference = best_of(max(1, repeat - 1), lambda: pandas_funnel(frame, STEPS, WINDOW))
    ours = table["users"].tolist()
    assert ours == reference, (ours, reference)
    print(
        f"funnel(5 steps, ordered, 7d)  events={events:>11,}  users={frame['user_id'].nunique():>9,}  "
        f"tenure(duckdb)={duckdb_seconds:7.3f}s  pandas(merge_asof)={pandas_seconds:8.3f}s "
        f"({pandas_seconds / duckdb_seconds:5.1f}x)  users per step={ours} (results equal)"
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
