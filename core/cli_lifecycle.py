"""`python -m core lifecycle` and `python -m core stickiness`: the lifecycle and stickiness tables.

Definitions: docs/METRICS.md, "Lifecycle" and "Stickiness".
"""

from __future__ import annotations

import argparse

from core.cli_common import add_db_flag, add_format_flag, print_frame

LIFECYCLE_COLUMNS = ["period", "new", "returning", "resurrecting", "dormant"]


def _run_lifecycle(args: argparse.Namespace) -> int:
    import pandas as pd

    from core.lifecycle import LifecycleSpec, lifecycle_table
    from core.population import Filters
    from core.store import Store, resolve_db_path

    spec = LifecycleSpec.from_query_params(
        {"period": args.period, "start": args.start, "activity": ",".join(args.event or ())}
    )
    with Store(resolve_db_path(args.db), read_only=True) as store:
        table = lifecycle_table(store, spec, Filters())
    table = table[LIFECYCLE_COLUMNS].assign(period=pd.to_datetime(table["period"]).dt.strftime("%Y-%m-%d"))
    print_frame(table, args.format)
    return 0


def _run_stickiness(args: argparse.Namespace) -> int:
    import pandas as pd

    from core.population import Filters
    from core.stickiness import StickinessSpec, active_users_series, stickiness_histogram
    from core.store import Store, resolve_db_path

    spec = StickinessSpec(event=args.event, span=args.span)
    with Store(resolve_db_path(args.db), read_only=True) as store:
        if args.series:
            frame = active_users_series(store, spec, Filters())
            columns = ["day"]
        else:
            frame = stickiness_histogram(store, spec, Filters())
            columns = ["span_start", "span_end"]
    frame = frame.assign(
        **{column: pd.to_datetime(frame[column]).dt.strftime("%Y-%m-%d") for column in columns}
    )
    print_frame(frame, args.format)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``lifecycle`` and ``stickiness`` subcommands."""
    lifecycle = commands.add_parser(
        "lifecycle",
        help="users per period: new, returning, resurrecting, dormant",
        description="Prints period (first day, YYYY-MM-DD), new, returning, resurrecting, dormant "
        "(a positive count) for every UTC calendar period from the data's first to the one holding "
        "the data's end; that last period is partial. Definitions: docs/METRICS.md, 'Lifecycle'.",
    )
    add_db_flag(lifecycle)
    lifecycle.add_argument(
        "--period",
        choices=["day", "week", "month"],
        default="week",
        help="UTC day, ISO week from Monday, or calendar month (default week)",
    )
    lifecycle.add_argument(
        "--start",
        default="first_event",
        metavar="first_event|signup|event:NAME",
        help="what starts a user (default first_event)",
    )
    lifecycle.add_argument(
        "--event",
        action="append",
        metavar="NAME",
        help="count only these events as activity (repeatable; default any event)",
    )
    add_format_flag(lifecycle)
    lifecycle.set_defaults(handler=_run_lifecycle)

    stickiness = commands.add_parser(
        "stickiness",
        help="users by number of active days (or weeks) in a span; or DAU/WAU/MAU per day",
        description="Prints span_start, span_end, active_units, users, share, partial: the users "
        "active on k days (k weeks for --span 4w) of each span. With --series, prints day, dau, "
        "wau, mau, dau_mau, full_window instead. Definitions: docs/METRICS.md, 'Stickiness'.",
    )
    add_db_flag(stickiness)
    stickiness.add_argument(
        "--event", metavar="NAME", default=None, help="the event that makes a day active (default any event)"
    )
    stickiness.add_argument(
        "--span",
        choices=["7d", "4w", "month"],
        default="7d",
        help="the last 7 days, the last 4 weeks (counting active weeks), or each calendar month (default 7d)",
    )
    stickiness.add_argument(
        "--series", action="store_true", help="print DAU, WAU (7 days), MAU (28 days) and DAU/MAU per day"
    )
    add_format_flag(stickiness)
    stickiness.set_defaults(handler=_run_stickiness)
