"""`python -m core ab`: one experiment's review as JSON or CSV.

Contract (kept exactly; checks outside the code rely on it): ``--format json`` prints one object
``{"experiment", "srm_p_value", "users": {variant: n}, "results": [...]}``, each result with
``metric, variant, control_value, variant_value, abs_diff, rel_diff, ci_low, ci_high, p_value,
p_adjusted``; ``--format csv`` prints those result columns. ``--details`` adds the rest (counts,
standard errors, CUPED's variance reduction, Bayesian and always-valid figures, warnings).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import TYPE_CHECKING, Any

from core.cli_common import add_db_flag, add_format_flag, print_frame

if TYPE_CHECKING:
    from core.experiments.analysis import Review

CONTRACT_KEYS = ("experiment", "srm_p_value", "users", "results")


def _run_ab(args: argparse.Namespace) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from core.experiments.assignments import experiment_users
    from core.experiments.metrics import Design, default_metrics, parse_metrics
    from core.experiments.moments import moment_sums
    from core.store import Store, resolve_db_path

    with Store(resolve_db_path(args.db), read_only=True) as store:
        metrics = parse_metrics(args.metrics) if args.metrics is not None else default_metrics(store)
        design = Design(
            args.experiment, tuple(metrics), days=args.days, winsorize=args.winsorize, pre_period=args.cuped
        )
        with ThreadPoolExecutor(max_workers=2) as pool:
            # The queries hold no GIL while DuckDB works: the statistics stack (tea-tasting,
            # ibis, scipy: seconds) imports meanwhile instead of before.
            daily = pool.submit(moment_sums, store, design)
            users = pool.submit(experiment_users, store, design.experiment)
            from core.experiments.analysis import CONTRACT_COLUMNS, Options, review

            options = Options(control=args.control, cuped=args.cuped, correction=args.correction)
            result = review(store, design, options, daily=daily.result(), users=users.result())
        if args.ltv_model is not None:
            from core.experiments.ltv import with_ltv_rows

            result = with_ltv_rows(store, result, args.ltv_model)
    table = result.results if args.details else result.results[CONTRACT_COLUMNS]
    if args.format == "csv":
        print_frame(table, "csv")
        for note in result.warnings:
            print(f"warning: {note}", file=sys.stderr)
        return 0
    print(review_json(result, details=args.details))
    return 0


def review_json(result: Review, details: bool = False) -> str:
    """The ``--format json`` output of a review (the contract in the module docstring); the
    Experiments page's JSON download is this same text."""
    from core.experiments.analysis import CONTRACT_COLUMNS

    table = result.results if details else result.results[CONTRACT_COLUMNS]
    payload: dict[str, Any] = {
        "experiment": result.design.experiment,
        "srm_p_value": _number(result.users.srm_p_value),
        "users": result.users.users,
        "results": [
            {key: _number(value) for key, value in row.items()} for row in table.to_dict(orient="records")
        ],
    }
    if details:
        payload.update(
            control=result.control,
            days=result.design.days,
            cuped=result.options.cuped,
            correction=result.options.correction,
            excluded_multiple=result.users.excluded_multiple,
            intended_share=result.users.intended_share,
            warnings=result.warnings,
        )
    return json.dumps(payload, default=str)


def _number(value: Any) -> Any:
    """JSON has no NaN: an undefined figure is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return _number(value.item())
    return value


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``ab`` subcommand."""
    ab = commands.add_parser(
        "ab",
        help="review an A/B experiment: every metric of every variant against the control",
        description="Each metric is measured from each user's own assignment time; users assigned to "
        "more than one variant are left out. Absolute differences (and their 95%% intervals) are in "
        "the metric's units: a rate as a fraction. p_adjusted is Holm-adjusted (or Benjamini-Hochberg "
        "with --correction bh) over every metric and variant. Definitions: docs/METRICS.md.",
    )
    add_db_flag(ab)
    ab.add_argument(
        "--experiment", required=True, metavar="NAME", help="the experiment's name in assignments"
    )
    ab.add_argument(
        "--metrics",
        metavar="LIST",
        help="comma-separated: conversion:EVENT (EVENT within N days of assignment), retention:D (any event "
        "in [D, D+1) days after assignment), revenue (per user within N days), events (per user within N "
        "days), revenue_per_session (delta method). Default: conversion to the commonest revenue event, "
        "retention:1,7,30, revenue, events, revenue_per_session",
    )
    ab.add_argument("--days", type=int, default=14, metavar="N", help="the window N in days (default 14)")
    ab.add_argument(
        "--control",
        metavar="VARIANT",
        help="the control (default: the variant named control, else the first in sort order)",
    )
    ab.add_argument(
        "--cuped",
        action="store_true",
        help="adjust each metric for its value over the N days before assignment (CUPED)",
    )
    ab.add_argument(
        "--correction",
        choices=["holm", "bh"],
        default="holm",
        help="multiple-comparison adjustment of p_adjusted: holm (family-wise) or bh (false discovery rate); default holm",
    )
    ab.add_argument(
        "--winsorize",
        type=float,
        metavar="PERCENTILE",
        help="cap revenue at this percentile of the experiment's users, e.g. 99 (default: no capping)",
    )
    ab.add_argument(
        "--details",
        action="store_true",
        help="add counts, standard errors, CUPED's variance reduction, Bayesian and always-valid figures and warnings",
    )
    ab.add_argument(
        "--ltv-model",
        metavar="DIR",
        help="append the model-based metric predicted_ltv_90d: each user's 90-day LTV predicted by this saved "
        "model folder (written by train, horizon 90d) as of the end of the day of assignment + N days, "
        "Welch t per variant; its rows join the p_adjusted family (default: no such rows)",
    )
    add_format_flag(ab, default="json")
    ab.set_defaults(handler=_run_ab)
