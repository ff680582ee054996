"""Ad hoc scoring of an uploaded events file: ``core.models.upload_scoring.score_upload`` end to end.

Usage: python bench/bench_score_upload.py [--events 1000000] [--repeat 3] [--batch-users 50000]

Writes (once) a synthetic events CSV under bench/data (bench/synthetic.py: 50 events per user),
trains a BG/NBD and a LightGBM model (200 trees) on a separate synthetic store of 200,000 events
at 2025-10-01 with a 90-day horizon, then times ``score_upload`` of the CSV with each model at
2026-01-01: reading and checking the file into a private in-memory store, the drift checks and
flags, and the scoring. Prints the best of ``--repeat`` runs per model (the target is under a
minute for 1M events on this 2-core CPU).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.synthetic import build_events_store, write_events_csv
from bench.timing import best_of
from core.models.spec import ModelSpec
from core.models.training import train_models
from core.models.upload_scoring import SCORE_BATCH_USERS, score_upload
from core.store import Store

TRAIN_EVENTS = 200_000
TRAIN_AS_OF = dt.datetime(2025, 10, 1)
SCORE_AS_OF = dt.datetime(2026, 1, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-users", type=int, default=SCORE_BATCH_USERS)
    args = parser.parse_args()
    csv_path = write_events_csv(args.events)
    size_mb = csv_path.stat().st_size / 1e6
    with tempfile.TemporaryDirectory() as folder:
        models = Path(folder)
        with Store(build_events_store(TRAIN_EVENTS), read_only=True) as store:
            train_models(store, ModelSpec(TRAIN_AS_OF), ["btyd", "gbm"], "users", 0, models)
        for kind in ("btyd", "gbm"):
            seconds, report = best_of(
                args.repeat,
                lambda kind=kind: score_upload(
                    csv_path, models / kind, SCORE_AS_OF, batch_users=args.batch_users
                ),
            )
            print(
                f"score --events  model={kind}  events={report.events.rows_accepted:,}  csv={size_mb:,.0f} MB  "
                f"users scored={len(report.scores):,}  batches={report.batches}  "
                f"flagged={report.flagged_users:,}  best of {args.repeat}={seconds:6.2f}s"
            )


if __name__ == "__main__":
    main()
