"""`python -m core surrogate`: an early read of an experiment's long-term outcome (surrogate index).

CSV (default): one row per variant (``quantity`` = value) and per difference from the control
(``quantity`` = difference): quantity, variant, estimate, ci_low, ci_high, users. With
``--backtest``: the backtest table (core/whatif/surrogate.py ``BACKTEST_COLUMNS``). JSON: the
same rows as records. The model's held-out quality and the dates go to stderr.
"""

from __future__ import annotations

import argparse
import sys

from core.cli_common import add_db_flag, add_format_flag, print_frame

ESTIMATE_COLUMNS = ("quantity", "variant", "estimate", "ci_low", "ci_high", "users")


def _quality(quality: dict[str, float]) -> str:
    return ", ".join(
        f"{name} {value:.3f}" if name != "users" else f"{value:.0f} users" for name, value in quality.items()
    )


def _run_surrogate(args: argparse.Namespace) -> int:
    import pandas as pd

    from core.store import Store, resolve_db_path
    from core.whatif.surrogate import surrogate_backtest, surrogate_estimate

    question = (args.experiment, args.outcome, args.surrogate_days)
    options = {"seed": args.seed, "resamples": args.resamples, "control": args.control}
    with Store(resolve_db_path(args.db), read_only=True) as store:
        if args.backtest:
            table = surrogate_backtest(store, *question, back_days=args.back_days, **options)
            print(
                f"backtest as of {table.attrs['as_of']:%Y-%m-%d}, outcomes observed by "
                f"{table.attrs['data_end']:%Y-%m-%d}; model trained on {table.attrs['training_users']} users, "
                f"held out: {_quality(table.attrs['model_quality'])}",
                file=sys.stderr,
            )
            print_frame(table, args.format)
            return 0
        result = surrogate_estimate(store, *question, as_of=args.as_of, **options)
    print(
        f"as of {result.as_of:%Y-%m-%d}; model trained on {result.training_users} users, "
        f"held out: {_quality(result.model_quality)}; weighting: {result.weighting}",
        file=sys.stderr,
    )
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    differences = result.differences.assign(
        quantity="difference",
        variant=[f"{v} - {result.control}" for v in result.differences["variant"]],
        users=pd.NA,
    )
    table = pd.concat([result.estimates.assign(quantity="value"), differences], ignore_index=True)
    print_frame(table[list(ESTIMATE_COLUMNS)], args.format)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    surrogate = commands.add_parser(
        "surrogate",
        help="early read of an experiment's long-term outcome from its users' first days (surrogate index)",
        description="Each variant's day-D retention or D-day revenue among the experiment's recent users, "
        "predicted from their first N days by a model trained on older users whose outcome is observed "
        "(Athey, Chetty, Imbens & Kang 2019), inverse-propensity weighted where propensities are recorded, "
        "with 95%% bootstrap intervals that refit the model. --backtest replays it as the data stood "
        "--back-days earlier and compares with the outcomes observed since. Definitions: docs/METRICS.md.",
    )
    add_db_flag(surrogate)
    surrogate.add_argument("--experiment", required=True, help="the experiment's name in assignments")
    surrogate.add_argument(
        "--outcome",
        default="retention:90",
        metavar="retention:D|revenue:D",
        help="the long-term outcome: day-D retention or revenue per user over D days (default retention:90)",
    )
    surrogate.add_argument(
        "--surrogate-days",
        type=int,
        default=14,
        metavar="N",
        help="the surrogates' window in days (default 14)",
    )
    surrogate.add_argument(
        "--as-of", metavar="DATE", help="treat the data as ending at this time (default: the latest event)"
    )
    surrogate.add_argument(
        "--control", help="the variant differences are taken from (default: control, else the first)"
    )
    surrogate.add_argument(
        "--backtest",
        action="store_true",
        help="replay the estimate --back-days before the data's end instead",
    )
    surrogate.add_argument(
        "--back-days",
        type=int,
        default=120,
        metavar="DAYS",
        help="how far back the backtest pretends (default 120)",
    )
    surrogate.add_argument("--seed", type=int, default=0, help="the bootstrap's seed (default 0)")
    surrogate.add_argument("--resamples", type=int, default=200, help="bootstrap resamples (default 200)")
    add_format_flag(surrogate)
    surrogate.set_defaults(handler=_run_surrogate)
