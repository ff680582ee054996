"""Survival on a million users: Tenure's durations (one DuckDB query) against pandas, and
Kaplan-Meier + log-rank (lifelines, as Tenure calls it) against a plain numpy implementation.

Usage: python bench/bench_survival.py [--users 1000000] [--events-per-user 10] [--repeat 3]
       (or --events N to size the store by events: users = N / events-per-user)

It builds (once) a synthetic store under bench/data (bench/synthetic.py), then in the same run:
1. times ``core.survival.durations`` (inactivity 30 days, breakdown by monthly start cohort, user
   ids included) against a pandas implementation of the same rule over the loaded
   ``user_id, event_time`` columns (``pd.factorize`` + groupby min/max; loading not counted);
2. times Tenure's Kaplan-Meier (``kaplan_meier``: curves, bands, medians, RMST) plus the log-rank
   test across all groups (lifelines' ``multivariate_logrank_test``) against a numpy
   implementation of the Kaplan-Meier product-limit estimate and of the k-group log-rank statistic.
Results must agree (durations exactly, survival to 1e-9, log-rank statistic to 1e-6 relative);
the script prints times and ratios.
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
from core.store import Store
from core.survival import SurvivalSpec, durations, kaplan_meier

INACTIVITY_DAYS = 30
SPEC = SurvivalSpec(inactivity_days=INACTIVITY_DAYS, breakdown="cohort:month")


def pandas_durations(events: pd.DataFrame) -> pd.DataFrame:
    """The churn rule over raw events: first and last event per user, then the W-day test."""
    codes, user_ids = pd.factorize(events["user_id"])
    times = pd.Series(events["event_time"].to_numpy(dtype="datetime64[us]"))
    spans = times.groupby(codes).agg(["min", "max"])
    end = times.max()
    start, last = spans["min"], spans["max"]
    churned = last <= end - pd.Timedelta(days=INACTIVITY_DAYS)
    stop = last.where(churned, end)
    frame = pd.DataFrame(
        {
            "user_id": np.asarray(user_ids)[spans.index],
            "start_time": start.to_numpy(),
            "duration_days": (stop - start).to_numpy() / np.timedelta64(1, "D"),
            "churned": churned.to_numpy(),
            "group": start.dt.strftime("%Y-%m-01").to_numpy(),
        }
    )
    return frame.sort_values("user_id", ignore_index=True)


def numpy_kaplan_meier(duration: np.ndarray, churned: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Product-limit estimate at each distinct duration: S(t) = prod over t_j <= t of (1 - d_j / n_j)."""
    times, inverse = np.unique(duration, return_inverse=True)
    removed = np.bincount(inverse, minlength=len(times))
    deaths = np.bincount(inverse, weights=churned.astype(float), minlength=len(times))
    at_risk = len(duration) - np.concatenate([[0], np.cumsum(removed)[:-1]])
    return times, np.cumprod(1 - deaths / at_risk)


def numpy_log_rank(duration: np.ndarray, churned: np.ndarray, groups: np.ndarray) -> float:
    """The k-group log-rank chi-squared: (O - E)' V^-1 (O - E) over the first k - 1 groups."""
    labels, group_index = np.unique(groups, return_inverse=True)
    times, inverse = np.unique(duration, return_inverse=True)
    k, m = len(labels), len(times)
    removed = np.zeros((m, k))
    deaths = np.zeros((m, k))
    np.add.at(removed, (inverse, group_index), 1)
    np.add.at(deaths, (inverse, group_index), churned.astype(float))
    at_risk = removed.sum(axis=0) - np.vstack([np.zeros(k), np.cumsum(removed, axis=0)[:-1]])
    n = at_risk.sum(axis=1)
    d = deaths.sum(axis=1)
    share = at_risk / n[:, None]
    observed_minus_expected = (deaths - d[:, None] * share).sum(axis=0)
    factor = np.where(n > 1, d * (n - d) / np.maximum(n - 1, 1), 0.0)
    covariance = np.einsum("t,ti,tj->ij", factor, share, share)
    covariance = np.diag((factor[:, None] * share).sum(axis=0)) - covariance
    difference = observed_minus_expected[:-1]
    return float(difference @ np.linalg.solve(covariance[:-1, :-1], difference))


def tenure_km_log_rank(frame: pd.DataFrame):
    from lifelines.statistics import multivariate_logrank_test

    km = kaplan_meier(frame, SPEC)
    test = multivariate_logrank_test(frame["duration_days"], frame["group"], frame["churned"])
    return km, float(test.test_statistic)


def numpy_km_log_rank(frame: pd.DataFrame) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], float]:
    duration = frame["duration_days"].to_numpy()
    churned = frame["churned"].to_numpy()
    groups = frame["group"].to_numpy()
    order = np.argsort(groups, kind="stable")
    labels, starts = np.unique(groups[order], return_index=True)
    bounds = [*starts[1:], len(order)]
    curves = {
        str(label): numpy_kaplan_meier(duration[order[lo:hi]], churned[order[lo:hi]])
        for label, lo, hi in zip(labels, starts, bounds, strict=True)
    }
    return curves, numpy_log_rank(duration, churned, groups)


def bench(events: int, events_per_user: int, repeat: int) -> None:
    path = build_events_store(events, events_per_user)
    with Store(path, read_only=True) as store:
        durations(store, SPEC, Filters())
        tenure_seconds, ours = best_of(repeat, lambda: durations(store, SPEC, Filters()))
        raw = store.query_df("SELECT user_id, event_time FROM events")
    pandas_seconds, reference = best_of(max(1, repeat - 1), lambda: pandas_durations(raw))
    assert list(ours["user_id"]) == list(reference["user_id"])
    assert np.array_equal(ours["duration_days"].to_numpy(), reference["duration_days"].to_numpy())
    assert np.array_equal(ours["churned"].to_numpy(), reference["churned"].to_numpy())
    assert list(ours["group"]) == list(reference["group"])
    users = len(ours)
    print(
        f"durations  events={events:>11,}  users={users:>9,}  tenure(duckdb)={tenure_seconds:6.3f}s  "
        f"pandas={pandas_seconds:6.3f}s ({pandas_seconds / tenure_seconds:4.1f}x)  "
        f"churned={int(ours['churned'].sum()):,}  censored={int((~ours['churned']).sum()):,}  (results equal)"
    )
    km_seconds, (km, statistic) = best_of(max(1, repeat - 1), lambda: tenure_km_log_rank(ours))
    numpy_seconds, (curves, numpy_statistic) = best_of(max(1, repeat - 1), lambda: numpy_km_log_rank(ours))
    for group, (times, survival) in curves.items():
        curve = km.curve[km.curve["group"] == group]
        np.testing.assert_array_equal(curve["day"].to_numpy(), times)
        np.testing.assert_allclose(curve["survival"].to_numpy(), survival, rtol=0, atol=1e-9)
    assert abs(statistic - numpy_statistic) <= 1e-6 * abs(numpy_statistic), (statistic, numpy_statistic)
    print(
        f"KM+logrank users={users:>9,}  groups={len(curves)}  tenure(lifelines)={km_seconds:6.3f}s  "
        f"numpy={numpy_seconds:6.3f}s (lifelines/numpy {km_seconds / numpy_seconds:4.2f})  "
        f"chi2={statistic:,.1f}  (results equal)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000, help="users in the store (default 1000000)")
    parser.add_argument(
        "--events", type=int, default=None, help="events in the store instead (users = events / per user)"
    )
    parser.add_argument("--events-per-user", type=int, default=10, help="events per user (default 10)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the best is reported (default 3)")
    args = parser.parse_args()
    events = args.events if args.events is not None else args.users * args.events_per_user
    bench(events, args.events_per_user, args.repeat)


if __name__ == "__main__":
    main()
