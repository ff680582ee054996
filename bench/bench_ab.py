"""An A/B review of a million assigned users: Tenure's `ab` path against pandas + scipy.

Usage: python bench/bench_ab.py [--users 1000000] [--events-per-user 10] [--repeat 3]

It builds (once) a synthetic store under bench/data (bench/synthetic.py) and assigns every user
to experiment ``bench_ab`` (variant by hash, 50/50, assigned at their first event plus a
user-specific delay of 0 to 9 days), then times, in the same run:

- Tenure: ``core.experiments.analysis.review`` with five metrics (conversion to purchase within
  14 days, day-7 retention, revenue and events per user, revenue per session), with CUPED: one
  DuckDB query for the per-user values and their moment sums, then tea-tasting on the aggregates;
  without CUPED (no pre-period, as the command measures it then); plus the command end to end
  (process start included), both as the issue states it (``python -m core ab --db --experiment``:
  the default metrics, no CUPED) and with the five metrics and ``--cuped``;
- pandas: the same per-user values from the assigned users' events (merge, masks, groupby), then
  the two-proportion z-test or scipy's Welch test per metric, without CUPED. Loading the events
  into pandas is not counted.

The two must agree on every variant mean; the script prints the times and the ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.synthetic import build_events_store
from bench.timing import best_of, timings_of
from core.experiments.analysis import Options, review
from core.experiments.metrics import Design, parse_metrics
from core.store import Store

EXPERIMENT = "bench_ab"
METRICS = "conversion:purchase,retention:7,revenue,events,revenue_per_session"
DAYS = 14


def ensure_assignments(path: Path) -> None:
    """Assign every user of the store once (idempotent)."""
    with Store(path) as store:
        if store.query_one("SELECT count(*) FROM assignments WHERE experiment = ?", [EXPERIMENT])[0]:
            return
        with store.transaction() as cursor:
            cursor.execute(
                "INSERT INTO assignments (user_id, experiment, variant, assigned_time, propensity) "
                "SELECT user_id, ?, CASE WHEN hash(user_id, 7) % 2 = 0 THEN 'control' ELSE 'treatment' END, "
                "min(event_time) + to_seconds((hash(user_id, 8) % 777600)::BIGINT), 0.5 "
                "FROM events GROUP BY user_id",
                [EXPERIMENT],
            )


def pandas_review(events: pd.DataFrame, assignments: pd.DataFrame, data_end: pd.Timestamp) -> pd.DataFrame:
    """Per-variant means and Welch p-values of the five metrics, in vectorised pandas."""
    joined = events.merge(assignments, on="user_id")
    elapsed = (joined["event_time"] - joined["assigned_time"]).dt.total_seconds() / 86_400
    window = (elapsed >= 0) & (elapsed < DAYS)
    per_user = pd.DataFrame(index=assignments["user_id"])
    joined["conv"] = (window & (joined["event_name"] == "purchase")).astype(float)
    joined["ret"] = ((elapsed >= 7) & (elapsed < 8)).astype(float)
    joined["rev"] = joined["revenue"].where(window, 0.0)
    joined["evt"] = window.astype(float)
    grouped = joined.groupby("user_id")
    per_user = grouped[["conv", "ret"]].max().join(grouped[["rev", "evt"]].sum())
    per_user["sessions"] = joined[window].groupby("user_id")["session_id"].nunique()
    per_user = (
        assignments.set_index("user_id")[["variant", "assigned_time"]]
        .join(per_user)
        .fillna({"conv": 0.0, "ret": 0.0, "rev": 0.0, "evt": 0.0, "sessions": 0.0})
    )
    complete = per_user["assigned_time"] + pd.Timedelta(days=8) <= data_end
    rows = []
    for metric, column, mask in (
        ("conversion:purchase", "conv", None),
        ("retention:7", "ret", complete),
        ("revenue", "rev", None),
        ("events", "evt", None),
    ):
        part = per_user if mask is None else per_user[mask]
        c = part.loc[part["variant"] == "control", column]
        t = part.loc[part["variant"] == "treatment", column]
        if metric.startswith(("conversion", "retention")):  # two-proportion z, unpooled
            se = np.sqrt(c.mean() * (1 - c.mean()) / len(c) + t.mean() * (1 - t.mean()) / len(t))
            p_value = 2 * stats.norm.sf(abs(t.mean() - c.mean()) / se)
        else:
            p_value = stats.ttest_ind(t, c, equal_var=False).pvalue
        rows.append((metric, c.mean(), t.mean(), p_value))
    c = per_user[per_user["variant"] == "control"]
    t = per_user[per_user["variant"] == "treatment"]
    rows.append(
        (
            "revenue_per_session",
            c["rev"].sum() / c["sessions"].sum(),
            t["rev"].sum() / t["sessions"].sum(),
            np.nan,
        )
    )
    return pd.DataFrame(rows, columns=["metric", "control_value", "variant_value", "p_value"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--events-per-user", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    path = build_events_store(args.users * args.events_per_user, args.events_per_user)
    ensure_assignments(path)
    print(f"store {path.name} ready in {time.perf_counter() - started:.1f} s")
    design = Design(EXPERIMENT, tuple(parse_metrics(METRICS)), days=DAYS)
    with Store(path, read_only=True) as store:
        assigned = store.query_one("SELECT count(*) FROM assignments WHERE experiment = ?", [EXPERIMENT])[0]
        seconds, result = best_of(args.repeat, lambda: review(store, design, Options(cuped=True)))
        after_only = dataclasses.replace(design, pre_period=False)  # what `ab` measures without --cuped
        plain_seconds, plain = best_of(args.repeat, lambda: review(store, after_only, Options()))
        events = store.query_df("SELECT user_id, event_time, event_name, revenue, session_id FROM events")
        assignments = store.query_df(
            "SELECT user_id, variant, assigned_time FROM assignments WHERE experiment = ?", [EXPERIMENT]
        )
        data_end = store.data_end()
    pandas_seconds, reference = best_of(args.repeat, lambda: pandas_review(events, assignments, data_end))
    ours = plain.results.set_index("metric")
    for row in reference.itertuples():
        assert np.isclose(ours.loc[row.metric, "control_value"], row.control_value, rtol=1e-9), row
        assert np.isclose(ours.loc[row.metric, "variant_value"], row.variant_value, rtol=1e-9), row
        if np.isfinite(row.p_value):
            assert np.isclose(ours.loc[row.metric, "p_value"], row.p_value, rtol=1e-6, atol=1e-12), row
    plain_cli = [sys.executable, "-m", "core", "ab", "--db", str(path), "--experiment", EXPERIMENT]
    cli = [*plain_cli, "--metrics", METRICS, "--days", str(DAYS), "--cuped"]
    cli_seconds, _ = timings_of(args.repeat, lambda: subprocess.run(cli, check=True, capture_output=True))
    plain_cli_seconds, _ = timings_of(
        args.repeat, lambda: subprocess.run(plain_cli, check=True, capture_output=True)
    )
    print(f"assigned users: {assigned:,}; events: {args.users * args.events_per_user:,}")
    print(f"Tenure review, 5 metrics, CUPED:    {seconds:.2f} s")
    print(f"Tenure review, 5 metrics, no CUPED: {plain_seconds:.2f} s")
    print(
        f"pandas + scipy, no CUPED:           {pandas_seconds:.2f} s  ->  ratio {pandas_seconds / plain_seconds:.1f}x"
    )
    print(f"`python -m core ab` (default metrics) end to end:  {_spread(plain_cli_seconds)}")
    print(f"`python -m core ab --metrics (5) --cuped` end to end: {_spread(cli_seconds)}")
    print(
        result.results[
            ["metric", "abs_diff", "ci_low", "ci_high", "p_value", "variance_reduction"]
        ].to_string()
    )


def _spread(timings: list[float]) -> str:
    """Best and slowest of the runs: the command's target is in seconds, not a ratio."""
    return f"{min(timings):.2f} s (slowest of {len(timings)}: {max(timings):.2f} s)"


if __name__ == "__main__":
    main()
