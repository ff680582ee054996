"""`python -m core whatif-users`: per-user outcomes had every user got a variant, or a rule's.

Contract (kept exactly; checks outside the code rely on it): ``--format json`` prints one object
``{"target", "rows", "logged_value", "ess", "max_weight", "unsupported_share", "estimates"}``,
``estimates`` a list of ``{"estimator", "value", "ci_low", "ci_high"}``: the chosen estimator's
entry, or aipw, ipw and hajek in that order when ``--estimator`` is not given. ``--details``
adds the rest (the outcome, incomplete and unsupported users, every everyone-V policy, the
differences with the naive one, the rule's split, the weighted survival). Definitions:
docs/METRICS.md, "What-if: per-user outcomes under a policy or rule".
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from core.cli_common import add_db_flag, stderr_progress

CONTRACT_KEYS = ("target", "rows", "logged_value", "ess", "max_weight", "unsupported_share", "estimates")


def _run_whatif_users(args: argparse.Namespace) -> int:
    from core.models import registry
    from core.store import Store, resolve_db_path
    from core.whatif.rules import read_rule
    from core.whatif.user_policies import UserPolicySpec, evaluate_user_policy
    from core.whatif.users import parse_outcome

    with Store(resolve_db_path(args.db), read_only=True) as store:
        spec = UserPolicySpec(
            experiment=args.experiment,
            outcome=parse_outcome(args.outcome),
            variant=args.variant,
            rule=read_rule(args.rule) if args.rule is not None else None,
            folds=args.folds,
            seed=args.seed,
            model_dir=None if args.model is None else str(registry.model_folder(store, args.model)),
        )
        result = evaluate_user_policy(store, spec, progress=stderr_progress)
    chosen = [e for e in result.estimates if args.estimator in (None, e.estimator)]
    if args.format == "json":
        payload: dict[str, Any] = {
            "target": result.target,
            "rows": result.rows,
            "logged_value": _number(result.logged_value),
            "ess": _number(result.ess),
            "max_weight": _number(result.max_weight),
            "unsupported_share": _number(result.unsupported_share),
            "estimates": [
                {
                    "estimator": e.estimator,
                    "value": _number(e.value),
                    "ci_low": _number(e.ci_low),
                    "ci_high": _number(e.ci_high),
                }
                for e in chosen
            ],
        }
        if args.details:
            payload.update(
                outcome=result.outcome,
                incomplete=result.incomplete,
                unsupported=result.unsupported,
                target_share=result.target_share,
                policies=_records(result.policies),
                differences=_records(result.differences),
                survival=_records(result.survival),
            )
        print(json.dumps(payload))
        return 0
    print(f"what if: {result.target}  outcome: {result.outcome}  experiment: {args.experiment}")
    print(
        f"users used: {result.rows}  left out: {result.incomplete} incomplete window, "
        f"{result.unsupported} unsupported ({result.unsupported_share:.1%})"
    )
    print(
        f"logged mean: {result.logged_value:.6g}  ess: {result.ess:.1f}  max weight: {result.max_weight:.3g}"
    )
    for e in chosen:
        print(f"{e.estimator:>6}: {e.value:.6g}  95% CI [{e.ci_low:.6g}, {e.ci_high:.6g}]")
    for row in result.differences.itertuples():
        if args.estimator in (None, row.estimator) or row.estimator == "naive":
            print(
                f"{row.policy} ({row.estimator}): {row.value:+.6g}  95% CI [{row.ci_low:+.6g}, {row.ci_high:+.6g}]"
            )
    return 0


def _records(frame: Any) -> list[dict[str, Any]]:
    return [{key: _number(value) for key, value in row.items()} for row in frame.to_dict(orient="records")]


def _number(value: Any) -> Any:
    """JSON has no NaN: an undefined figure is null."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``whatif-users`` subcommand."""
    parser = commands.add_parser(
        "whatif-users",
        help="what if every user had got a variant, or a targeting rule's variant: IPW/AIPW estimates",
        description="Off-policy estimates of a per-user outcome (measured from each user's assignment) "
        "had every user of an experiment got VARIANT, or the variant a rule file gives them, from the "
        "logged assignments and their propensities. Users whose window has not ended are left out. "
        "Definitions: docs/METRICS.md.",
    )
    add_db_flag(parser)
    parser.add_argument(
        "--experiment", required=True, metavar="NAME", help="the experiment in the assignments table"
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--variant", metavar="V", help="the policy 'every user gets variant V'")
    target.add_argument(
        "--rule",
        metavar="FILE",
        help="a targeting rule: CSV 'attribute,value,variant' rows (first match wins) ending with '*,*,VARIANT'; "
        "an attribute is a users column, lifecycle_stage (the stage at assignment) or churn_risk_decile "
        "(needs --model)",
    )
    parser.add_argument(
        "--model",
        metavar="DIR|ID",
        default=None,
        help="a trained model folder (e.g. RUN/gbm from 'python -m core train') or a registered model's id "
        "(as `models list` shows it): scores each user's churn "
        "risk as of their assignment day for rule rows on churn_risk_decile (1..10, 10 = highest risk); "
        "every user in one scoring pass, each at their own assignment day",
    )
    parser.add_argument(
        "--outcome",
        required=True,
        metavar="retention:D|revenue:D|events:D|click_rate:D",
        help="retention:D (any event on day D after assignment), revenue:D or events:D (sum over days 0..D-1), "
        "click_rate:D (recommendation clicks per shown slot over days 0..D-1, a ratio of weighted means; "
        "click_rate:all: from assignment to the data's end)",
    )
    parser.add_argument(
        "--estimator",
        choices=["ipw", "hajek", "aipw"],
        default=None,
        help="ipw (Horvitz-Thompson), hajek (self-normalised) or aipw (doubly robust, cross-fitted); "
        "default: all three, aipw first",
    )
    parser.add_argument(
        "--folds", type=int, default=5, help="cross-fitting folds of the outcome model (default 5)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the fold split (default 0)")
    parser.add_argument(
        "--format", choices=["text", "json"], default="text", help="output format (default text)"
    )
    parser.add_argument(
        "--details",
        action="store_true",
        help="with --format json: every policy, difference and survival figure",
    )
    parser.set_defaults(handler=_run_whatif_users)
