"""`python -m core whatif`: a target policy's expected reward per shown slot, from the log.

JSON (default): {"target", "rows", "logged_value", "ess", "max_weight", "unsupported_share",
"estimates": [{"estimator", "value", "ci_low", "ci_high"}]}; ``--details`` adds "details".
CSV: one row per estimator with columns target, rows, logged_value, ess, max_weight,
unsupported_share, estimator, value, ci_low, ci_high (the scalars repeated on every row).
Warnings (unsupported mass, a tiny ESS, estimated target probabilities) go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys

from core.cli_common import add_db_flag, print_frame

CSV_COLUMNS = ("target", "rows", "logged_value", "ess", "max_weight", "unsupported_share")


def _run_whatif(args: argparse.Namespace) -> int:
    from core.store import Store, resolve_db_path
    from core.whatif.evaluate import MODEL_ESTIMATORS, WhatIfSpec, evaluate, parse_estimators

    estimators = parse_estimators(args.estimators)
    if MODEL_ESTIMATORS & set(estimators) or "greedy" in args.target:
        _import_lightgbm_in_background()
    spec = WhatIfSpec(
        target=args.target,
        log_policy=args.log_policy,
        estimators=estimators,
        seed=args.seed,
        resamples=args.resamples,
        fit_fraction=args.fit_fraction,
        epsilon=args.epsilon,
    )
    with Store(resolve_db_path(args.db), read_only=True) as store:
        result = evaluate(store, spec)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    contract = result.to_dict(details=args.details)
    if args.format == "json":
        print(json.dumps(contract, indent=2))
    else:
        import pandas as pd

        frame = pd.DataFrame(contract["estimates"])
        for position, column in enumerate(CSV_COLUMNS):
            frame.insert(position, column, contract[column])
        print_frame(frame, "csv")
    return 0


def _import_lightgbm_in_background() -> None:
    """Start importing LightGBM (and the scikit-learn it loads, about half a second to seconds
    on a cold start) while DuckDB reads the log, which releases the GIL. numpy, pandas and scipy
    are already imported here, so the two threads do not wait on each other's half-imported
    modules; the reward model's own ``import lightgbm`` waits for this one to finish."""
    import importlib
    import threading

    threading.Thread(target=importlib.import_module, args=("lightgbm",), daemon=True).start()


def register(commands: argparse._SubParsersAction) -> None:
    whatif = commands.add_parser(
        "whatif",
        help="what-if: estimate a recommendation policy's click rate (reward per shown slot) from a log",
        description="Off-policy estimates of a target policy's expected reward per shown slot from the "
        "recommendations log (IPW, self-normalised IPW, direct method, doubly robust, self-normalised DR), "
        "with 95%% bootstrap intervals over requests and diagnostics. Definitions: docs/METRICS.md.",
    )
    add_db_flag(whatif)
    whatif.add_argument(
        "--target",
        required=True,
        metavar="TARGET",
        help="uniform (1/K over the logged items) | popularity (k-th best reward rate in the first "
        "30%% of the log at position k) | greedy (a reward model's k-th best item per context, "
        "epsilon exploration) | policy:NAME (a logged policy) | file:PATH (CSV item_id,position,"
        "probability) | mix:A,B,W (A with probability W, else B)",
    )
    whatif.add_argument(
        "--log-policy", metavar="NAME", help="read only the rows logged by this policy (default: all rows)"
    )
    whatif.add_argument(
        "--estimators",
        default="ipw,snipw,dm,dr,sndr",
        metavar="LIST",
        help="comma-separated estimators (default ipw,snipw,dm,dr,sndr)",
    )
    whatif.add_argument(
        "--seed", type=int, default=0, help="seed of the bootstrap, samples and models (default 0)"
    )
    whatif.add_argument("--resamples", type=int, default=200, help="bootstrap resamples (default 200)")
    whatif.add_argument(
        "--fit-fraction",
        type=float,
        default=0.3,
        help="earliest share of the log where popularity/greedy are fitted; they are evaluated on the rest (default 0.3)",
    )
    whatif.add_argument(
        "--epsilon", type=float, default=0.1, help="greedy's exploration probability (default 0.1)"
    )
    whatif.add_argument(
        "--format", choices=["json", "csv"], default="json", help="output format (default json)"
    )
    whatif.add_argument(
        "--details", action="store_true", help="JSON: add a 'details' object (support mode, warnings, ...)"
    )
    whatif.set_defaults(handler=_run_whatif)
