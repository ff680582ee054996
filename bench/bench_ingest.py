"""Ingest of a large events CSV: Tenure's validated, all-or-nothing load against DuckDB's bare reader.

Usage: python bench/bench_ingest.py [--events 10000000] [--repeat 3]

Writes (once) a synthetic CSV under bench/data, then times, each into a fresh store file:
- the baseline: ``CREATE TABLE events AS SELECT * FROM read_csv(FILE)``, nothing else;
- ``core.ingest.ingest_file``: content hash, column mapping, timestamp parsing, validation,
  duplicate dropping, one transaction and the load history.
Runs alternate (bare, ingest, bare, ...); it prints the best of each and their ratio
(the target is at most 1.5x).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.synthetic import BENCH_DATA_DIR, write_events_csv
from core.ingest import ingest_file
from core.store import Store


def fresh_path(name: str) -> Path:
    path = BENCH_DATA_DIR / name
    for leftover in (path, Path(f"{path}.wal")):
        leftover.unlink(missing_ok=True)
    return path


def bare_read_csv(csv_path: Path) -> float:
    target = fresh_path("bench_bare.duckdb")
    connection = duckdb.connect(str(target))
    started = time.perf_counter()
    connection.execute("CREATE TABLE events AS SELECT * FROM read_csv(?)", [str(csv_path)])
    elapsed = time.perf_counter() - started
    connection.close()
    target.unlink()
    return elapsed


def tenure_ingest(csv_path: Path) -> tuple[float, int]:
    target = fresh_path("bench_ingest.duckdb")
    with Store(target) as store:
        started = time.perf_counter()
        result = ingest_file(store, csv_path, table="events")
        elapsed = time.perf_counter() - started
    target.unlink()
    return elapsed, result.rows_accepted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    csv_path = write_events_csv(args.events)
    size_mb = csv_path.stat().st_size / 1e6
    bare_runs: list[float] = []
    ingest_runs: list[tuple[float, int]] = []
    for _ in range(args.repeat):
        # Alternate the two so that load on the machine falls on both alike.
        bare_runs.append(bare_read_csv(csv_path))
        ingest_runs.append(tenure_ingest(csv_path))
    bare = min(bare_runs)
    ours = min(seconds for seconds, _ in ingest_runs)
    rows = ingest_runs[0][1]
    print(
        f"ingest  events={args.events:,}  csv={size_mb:,.0f} MB  bare read_csv={bare:6.2f}s  "
        f"tenure ingest={ours:6.2f}s  ratio={ours / bare:4.2f}x  rows loaded={rows:,}  "
        f"({rows / ours / 1e6:.2f}M rows/s)"
    )


if __name__ == "__main__":
    main()
