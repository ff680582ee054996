"""`python -m core models list|register|remove`: the store's registry of trained models.

``train`` registers its run itself when it can open the store for writing; ``models register
DIR`` does it later for a run trained while another process (the app) held the store. The logic
lives in core/models/registry.py; this module only parses flags and prints.
"""

from __future__ import annotations

import argparse
import sys

from core.cli_common import add_db_flag, add_format_flag, print_frame

LIST_COLUMNS = (
    "model_id",
    "kind",
    "as_of",
    "horizon_days",
    "split",
    "seed",
    "churn_roc_auc",
    "ltv_normalized_gini",
    "created_at",
    "path",
    "current_data",
)


def register_hint(run_dir: str, db: str | None) -> str:
    """The command that registers ``run_dir`` later (with ``--db`` when one was given)."""
    flag = f" --db {db}" if db else ""
    return f"python -m core models register {run_dir}{flag}"


def _run_list(args: argparse.Namespace) -> int:
    from core.models.registry import list_models, metrics_frame, with_current_data
    from core.store import Store, resolve_db_path

    with Store(resolve_db_path(args.db), read_only=True) as store:
        models = with_current_data(store, list_models(store))
    table = models.merge(metrics_frame(models).drop(columns="kind"), on="model_id", how="left")
    print_frame(table[list(LIST_COLUMNS)], args.format)
    return 0


def _run_register(args: argparse.Namespace) -> int:
    from core.models.registry import register
    from core.store import Store, resolve_db_path

    with Store(resolve_db_path(args.db)) as store:
        ids = register(store, args.dir)
    for model_id in ids:
        print(model_id)
    return 0


def _run_remove(args: argparse.Namespace) -> int:
    from core.models.registry import remove
    from core.store import Store, resolve_db_path

    with Store(resolve_db_path(args.db)) as store:
        remove(store, args.model_id)
    print(f"removed {', '.join(args.model_id)} (the folders are kept)", file=sys.stderr)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``models`` subcommand and its ``list``, ``register`` and ``remove`` actions."""
    models = commands.add_parser(
        "models",
        help="list, register or remove trained models in the store's model registry",
        description="The store's registry of trained models: one row per model folder of a "
        "training run, with its run's as-of date, horizon, split, seed and metrics. `train` registers "
        "its run when it can open the store for writing; otherwise register it later with "
        "`models register DIR`. Definitions: docs/METRICS.md.",
    )
    actions = models.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = actions.add_parser(
        "list",
        help="one row per registered model, newest run first",
        description="Print model_id, kind, as_of, horizon_days, split, seed, churn_roc_auc, "
        "ltv_normalized_gini, created_at (UTC, when the run finished) and path of every registered "
        "model, newest run first.",
    )
    add_db_flag(listing)
    add_format_flag(listing)
    listing.set_defaults(handler=_run_list)

    adding = actions.add_parser(
        "register",
        help="register every model of a training run folder (written by `train --out DIR`)",
        description="Record every model of a complete training run (DIR/metrics.json and "
        "DIR/<model>/model.json) in the store's registry, as <folder name>/<model name>. Registering "
        "a folder again replaces its rows; another folder with the same name is refused. Needs the "
        "store open for writing: close the app first if it holds it.",
    )
    adding.add_argument(
        "dir", metavar="DIR", help="the run folder written by `python -m core train --out DIR`"
    )
    add_db_flag(adding)
    adding.set_defaults(handler=_run_register)

    removing = actions.add_parser(
        "remove",
        help="remove models from the registry (their folders stay on disk)",
        description="Delete the registry rows of the given model ids; the model folders are not "
        "touched. An unknown id is refused and nothing is removed.",
    )
    removing.add_argument("model_id", nargs="+", metavar="MODEL_ID", help="ids as printed by `models list`")
    add_db_flag(removing)
    removing.set_defaults(handler=_run_remove)
