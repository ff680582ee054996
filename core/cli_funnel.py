"""`python -m core funnel`: users reaching each step of a funnel (definitions: docs/METRICS.md)."""

from __future__ import annotations

import argparse
from typing import Any

from core.cli_common import add_db_flag, add_format_flag, print_frame

OUTPUT_COLUMNS = ["step", "event_name", "users", "conversion_from_start", "conversion_from_previous"]


def _run_funnel(args: argparse.Namespace) -> int:
    from core.durations import parse_duration
    from core.funnels import FunnelSpec, funnel_table
    from core.population import Filters
    from core.store import Store, resolve_db_path

    steps = tuple(name.strip() for name in args.steps.split(",") if name.strip())
    spec = FunnelSpec(
        steps=steps,
        window=parse_duration(args.window, "--window"),
        order=args.order,
        exclusion=args.exclude,
        breakdown=args.by,
    )
    with Store(resolve_db_path(args.db), read_only=True) as store:
        table = funnel_table(store, spec, Filters())
    columns = (["group"] if spec.breakdown else []) + OUTPUT_COLUMNS
    print_frame(table[columns], args.format)
    return 0


def register(commands: Any) -> None:
    """Adds the ``funnel`` subcommand to ``python -m core``."""
    funnel = commands.add_parser(
        "funnel",
        help="ordered funnel: users reaching each step within a conversion window",
        description="Prints step, event_name, users, conversion_from_start, conversion_from_previous "
        "(steps numbered from 1, conversion as a fraction 0..1). A user reaches step k when events of "
        "steps 1..k happen in order within the window from step 1 (the longest try counts). "
        "Definitions: docs/METRICS.md, 'Funnels'.",
    )
    add_db_flag(funnel)
    funnel.add_argument(
        "--steps",
        required=True,
        metavar="A,B,C",
        help="2 to 10 distinct event names, comma-separated, in order",
    )
    funnel.add_argument(
        "--window", default="7d", help="conversion window from the first step: 30m, 12h, 7d, 2w (default 7d)"
    )
    funnel.add_argument(
        "--order",
        choices=["strict", "ordered", "any"],
        default="ordered",
        help="ordered: other events allowed between steps; strict: each step is the very next event; "
        "any: steps in any order within the window (default ordered)",
    )
    funnel.add_argument(
        "--exclude", metavar="NAME", help="exclusion event: steps at or after it no longer count in that try"
    )
    funnel.add_argument(
        "--by",
        metavar="BREAKDOWN",
        help="one funnel per group: a users column, cohort:day|week|month or experiment:NAME (adds a group column)",
    )
    add_format_flag(funnel)
    funnel.set_defaults(handler=_run_funnel)
