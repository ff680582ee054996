"""`python -m core survival`: durations per user, or the Kaplan-Meier table per group.

Contract (docs/METRICS.md, "Survival"): with ``--durations`` one row per user
``user_id, duration_days, churned, group``; else one row per group and distinct duration (churn or
censoring time) ``group, day, at_risk, survival, lower, upper``. Without ``--by`` the group is
``all``.
"""

from __future__ import annotations

import argparse

from core.cli_common import add_db_flag, add_format_flag, print_frame

KM_TABLE_COLUMNS = ["group", "day", "at_risk", "survival", "lower", "upper"]
DURATION_TABLE_COLUMNS = ["user_id", "duration_days", "churned", "group"]


def _run_survival(args: argparse.Namespace) -> int:
    from core.durations import parse_duration
    from core.population import Filters, StartSpec
    from core.store import Store, resolve_db_path
    from core.survival import SurvivalSpec, durations, kaplan_meier

    inactivity = parse_duration(args.inactivity, "--inactivity")
    start = StartSpec.from_text(args.start)
    spec = SurvivalSpec(
        inactivity_days=inactivity.total_seconds() / 86_400,
        terminal_event=args.terminal_event,
        start=start,
        breakdown=args.by,
    )
    with Store(resolve_db_path(args.db), read_only=True) as store:
        frame = durations(store, spec, Filters())
    if args.durations:
        print_frame(frame[DURATION_TABLE_COLUMNS], args.format)
        return 0
    print_frame(kaplan_meier(frame, spec, ticks=[0.0]).curve[KM_TABLE_COLUMNS], args.format)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``survival`` subcommand."""
    survival = commands.add_parser(
        "survival",
        help="time until users churn: Kaplan-Meier table per group, or each user's duration",
        description="A user churns at their last event when no event follows for the inactivity "
        "window (or at their first terminal event); users still inside the window at the data's end "
        "are censored there. Durations in fractional days. Prints the Kaplan-Meier table "
        "(group, day, at_risk, survival, lower, upper; 95% bands), or with --durations one row per "
        "user (user_id, duration_days, churned, group). Definitions: docs/METRICS.md.",
    )
    add_db_flag(survival)
    survival.add_argument(
        "--inactivity",
        default="30d",
        metavar="LENGTH",
        help="churn after this long without any event, e.g. 30d, 2w, 36h; a bare number is days (default 30d)",
    )
    survival.add_argument(
        "--terminal-event",
        metavar="NAME",
        help="churn at the first event of this name instead (e.g. cancel); the inactivity window is then unused",
    )
    survival.add_argument(
        "--start",
        default="first_event",
        metavar="first_event|signup|event:NAME",
        help="what starts a user (default first_event)",
    )
    survival.add_argument(
        "--by",
        metavar="BREAKDOWN",
        help="one group per value: a users COLUMN, cohort:day|week|month, or experiment:NAME (default: one group, 'all')",
    )
    survival.add_argument(
        "--durations",
        action="store_true",
        help="print one row per user (user_id, duration_days, churned, group) instead of the Kaplan-Meier table",
    )
    add_format_flag(survival)
    survival.set_defaults(handler=_run_survival)
