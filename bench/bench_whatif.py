"""What-if (off-policy) estimates: accuracy on the Open Bandit Dataset and speed on the sample.

Usage: python bench/bench_whatif.py [--obd /work/shared/datasets/obd] [--db sample_data/tenure.duckdb]
       [--seed 0] [--skip-obd] [--skip-sample] [--skip-speed] [--targets uniform,popularity,...]

1. OBD: loads the random and the bts logs (10,000 rows each) into one in-memory store (policies
   ``random`` and ``bts``), then estimates bts's click rate from the random log (target
   ``policy:bts``) and random's from the bts log (target ``policy:random``) with every estimator;
   the truth is the other log's mean click (each policy was run live).
2. Sample: times ``python -m core whatif --target policy:popularity --log-policy personalised``
   on the simulated store's personalised log (about 518k rows), and compares with the popularity
   log's click rate and ``truth.policy_values``.
3. Speed: for each target (uniform, popularity, greedy, policy:popularity by default), the whole
   log with all five estimators, in process: the seconds of each step of ``evaluate`` (open_log,
   target, reward_models, dm_refits, per_request, support, bootstrap), the total wall and CPU time.
   LightGBM is imported before the first target, so the totals leave out its import (about 2 s).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.ingest import ingest_file
from core.store import Store
from core.whatif.evaluate import WhatIfSpec, evaluate


def _table(result, truth: float) -> str:
    lines = [
        f"  rows {result.rows}, logged value {result.logged_value:.5f}, ESS {result.ess:.0f}, "
        f"max weight {result.max_weight:.1f}, unsupported {result.unsupported_share:.3f}"
    ]
    for row in result.estimates.itertuples():
        inside = "yes" if row.ci_low <= truth <= row.ci_high else "no"
        lines.append(
            f"  {row.estimator:5s} {row.value:.5f} [{row.ci_low:.5f}, {row.ci_high:.5f}] truth {truth:.5f} inside {inside}"
        )
    for warning in result.warnings:
        lines.append(f"  warning: {warning}")
    return "\n".join(lines)


def bench_obd(folder: Path, seed: int) -> None:
    with Store(":memory:") as store:
        means = {}
        for policy in ("random", "bts"):
            ingest_file(
                store, folder / policy / "all.csv.gz", table="recommendations", constants={"policy": policy}
            )
            means[policy] = store.query_one(
                "SELECT avg(reward) FROM recommendations WHERE policy = ?", [policy]
            )[0]
        for log_policy, target in (("random", "bts"), ("bts", "random")):
            started = time.perf_counter()
            result = evaluate(store, WhatIfSpec(target=f"policy:{target}", log_policy=log_policy, seed=seed))
            seconds = time.perf_counter() - started
            print(f"OBD: policy:{target} from the {log_policy} log ({seconds:.1f} s)")
            print(_table(result, means[target]))


def bench_sample(db: Path, seed: int) -> None:
    with Store(db, read_only=True) as store:
        truth = store.query_one("SELECT click_rate FROM truth.policy_values WHERE policy = 'popularity'")[0]
        observed = store.query_one("SELECT avg(reward) FROM recommendations WHERE policy = 'popularity'")[0]
        started = time.perf_counter()
        result = evaluate(store, WhatIfSpec(target="policy:popularity", log_policy="personalised", seed=seed))
        seconds = time.perf_counter() - started
    print(f"sample: policy:popularity from the personalised log: {seconds:.1f} s")
    print(f"  popularity's own log: {observed:.5f}; truth.policy_values.click_rate: {truth:.5f}")
    print(_table(result, truth))


def bench_speed(db: Path, seed: int, targets: list[str]) -> None:
    import lightgbm  # noqa: F401  (imported once, as in a running app)

    print("speed: whole log, all five estimators (seconds)")
    with Store(db, read_only=True) as store:
        for target in targets:
            timings: dict[str, float] = {}
            started, cpu = time.perf_counter(), time.process_time()
            result = evaluate(store, WhatIfSpec(target=target, seed=seed), timings)
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu
            steps = ", ".join(f"{step} {seconds:.2f}" for step, seconds in timings.items())
            print(f"  {target}: total {wall:.2f} wall, {cpu:.2f} CPU ({steps})")
            for row in result.estimates.itertuples():
                print(f"    {row.estimator:5s} {row.value:.5f} [{row.ci_low:.5f}, {row.ci_high:.5f}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--obd", type=Path, default=Path("/work/shared/datasets/obd"))
    parser.add_argument("--db", type=Path, default=Path("sample_data/tenure.duckdb"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-obd", action="store_true")
    parser.add_argument("--skip-sample", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--targets", default="uniform,popularity,greedy,policy:popularity")
    args = parser.parse_args()
    if not args.skip_obd:
        bench_obd(args.obd, args.seed)
    if not args.skip_sample:
        bench_sample(args.db, args.seed)
    if not args.skip_speed:
        bench_speed(args.db, args.seed, args.targets.split(","))


if __name__ == "__main__":
    main()
