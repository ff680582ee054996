"""`python -m core`: the library's functions from the command line.

Each subcommand parses flags into the same specs the app builds, calls one ``core`` function and
prints its result. A ``TenureError`` (bad input) prints one line on stderr and exits with 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from core.cli_ab import register as register_ab
from core.cli_common import add_db_flag, key_value_pairs, print_frame, stderr_progress
from core.cli_funnel import register as register_funnel
from core.cli_lifecycle import register as register_lifecycle
from core.cli_models import register as register_models
from core.cli_registry import register as register_registry
from core.cli_surrogate import register as register_surrogate
from core.cli_survival import register as register_survival
from core.cli_whatif import register as register_whatif
from core.cli_whatif_users import register as register_whatif_users
from core.errors import TenureError

EXIT_BAD_INPUT = 2

# Subcommands defined next to their feature (core/cli_<feature>.py), each a register(commands).
FEATURE_COMMANDS: tuple = (
    register_ab,
    register_survival,
    register_lifecycle,
    register_funnel,
    register_models,
    register_registry,
    register_whatif,
    register_whatif_users,
    register_surrogate,
)


def _run_generate(args: argparse.Namespace) -> int:
    from core.datasets import build_dataset
    from core.store import resolve_db_path

    path = resolve_db_path(args.db)
    summary = build_dataset(
        args.dataset, path, users=args.users, seed=args.seed, force=args.force, progress=stderr_progress
    )
    print(summary)
    return 0


def _run_ingest(args: argparse.Namespace) -> int:
    from core.ingest import ingest_file
    from core.store import Store, resolve_db_path

    column_map = key_value_pairs(args.map, "--map")
    constants = key_value_pairs(args.set, "--set")
    with Store(resolve_db_path(args.db)) as store:
        result = ingest_file(
            store,
            Path(args.file),
            table=args.table,
            column_map=column_map,
            constants=constants,
            skip_bad_rows=args.skip_bad_rows,
            rejects_path=Path(args.rejects) if args.rejects else None,
        )
    print(result.summary())
    return 0


def _run_info(args: argparse.Namespace) -> int:
    from core.overview import store_info
    from core.store import Store, resolve_db_path

    with Store(resolve_db_path(args.db), read_only=True) as store:
        info = store_info(store)
    if args.format == "json":
        print(json.dumps(info.to_dict(), default=str, indent=2))
    else:
        print(info.to_text())
    return 0


def _run_retention(args: argparse.Namespace) -> int:
    import pandas as pd

    from core.population import Filters, StartSpec
    from core.retention import RetentionSpec, retention_table
    from core.store import Store, resolve_db_path

    start = StartSpec.from_text(args.start)
    spec = RetentionSpec(
        period=args.period,
        mode=args.mode,
        max_periods=args.max_periods,
        start=start,
        return_events=tuple(args.return_event or ()),
        calendar=args.calendar,
    )
    with Store(resolve_db_path(args.db), read_only=True) as store:
        table = retention_table(store, spec, Filters())
    complete = table.loc[~table["incomplete"], ["cohort", "period", "eligible", "retained", "rate"]]
    complete = complete.assign(cohort=pd.to_datetime(complete["cohort"]).dt.strftime("%Y-%m-%d"))
    print_frame(complete, args.format)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m core",
        description="Tenure: retention and lifetime-value analytics over a DuckDB event store.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    generate = commands.add_parser(
        "generate",
        help="build a store from a built-in dataset (the simulator, or the real CDNOW cohort)",
        description="Build a store from a built-in dataset. 'simulated' runs the seeded simulator "
        "of a consumer product with a recommender (ground truth in the store's 'truth' schema); "
        "'cdnow' loads the real CDNOW purchase cohort shipped in sample_data/.",
    )
    add_db_flag(generate)
    generate.add_argument(
        "--dataset",
        choices=["simulated", "cdnow"],
        default="simulated",
        help="which dataset (default: simulated)",
    )
    generate.add_argument(
        "--users", type=int, default=20_000, help="simulated users (default 20000; scales to 1000000)"
    )
    generate.add_argument(
        "--seed", type=int, default=7, help="random seed: the same seed gives the same data (default 7)"
    )
    generate.add_argument("--force", action="store_true", help="replace the store if it exists")
    generate.set_defaults(handler=_run_generate)

    ingest = commands.add_parser(
        "ingest",
        help="load a CSV or Parquet file into a table of the store, all or nothing",
        description="Load a CSV (any delimiter, optional gzip) or Parquet file into a canonical "
        "table. Everything is validated before anything is written; the load is one transaction.",
    )
    ingest.add_argument("file", help="the CSV, CSV.gz or Parquet file")
    ingest.add_argument(
        "--table",
        required=True,
        choices=["events", "users", "items", "assignments", "recommendations"],
        help="target table",
    )
    add_db_flag(ingest)
    ingest.add_argument(
        "--map",
        action="append",
        metavar="SRC=DST",
        help="use file column SRC as canonical column DST (repeatable); an empty DST (SRC=) keeps SRC as an "
        "extra column even where its name would map it automatically",
    )
    ingest.add_argument(
        "--set", action="append", metavar="COL=VALUE", help="fill missing column COL with VALUE (repeatable)"
    )
    ingest.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="load the good rows and write the bad ones to a rejects file instead of refusing the file",
    )
    ingest.add_argument(
        "--rejects", metavar="PATH", help="where to write rejected rows (default: FILE.rejects.csv)"
    )
    ingest.set_defaults(handler=_run_ingest)

    info = commands.add_parser("info", help="tables, row counts, date ranges and the load history of a store")
    add_db_flag(info)
    info.add_argument(
        "--format", choices=["text", "json"], default="text", help="output format (default text)"
    )
    info.set_defaults(handler=_run_info)

    retention = commands.add_parser(
        "retention",
        help="cohort retention table: one row per (cohort, period)",
        description="Prints cohort, period, eligible, retained, rate for every complete cell "
        "(cells whose period has not ended by the data's end are omitted). Definitions: docs/METRICS.md.",
    )
    add_db_flag(retention)
    retention.add_argument(
        "--period",
        choices=["day", "week", "month"],
        default="week",
        help="cohort and period length: day (1 day), week (7 days, ISO weeks), month (30 days, calendar months); default week",
    )
    retention.add_argument(
        "--mode",
        choices=["classic", "unbounded", "consecutive"],
        default="classic",
        help="classic: returned in period k; unbounded: in k or later; consecutive: in every period 1..k (default classic)",
    )
    retention.add_argument(
        "--max-periods", type=int, default=None, metavar="N", help="show periods 0..N only"
    )
    retention.add_argument(
        "--start",
        default="first_event",
        metavar="first_event|signup|event:NAME",
        help="what starts a user (default first_event)",
    )
    retention.add_argument(
        "--return-event",
        action="append",
        metavar="NAME",
        help="count only these events as a return (repeatable; default any event)",
    )
    retention.add_argument(
        "--calendar",
        action="store_true",
        help="periods are calendar days/weeks/months instead of P days from each user's own start",
    )
    retention.add_argument(
        "--format", choices=["csv", "json"], default="csv", help="output format (default csv)"
    )
    retention.set_defaults(handler=_run_retention)
    for register in FEATURE_COMMANDS:
        register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except TenureError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
