"""`python -m core train` and `python -m core score`: churn/LTV models from the command line.

Contract (docs/METRICS.md, "Training and scoring from the command line"):

- ``train --as-of T --horizon H --model btyd|gbm|all --split users|backtest --out DIR`` writes
  ``DIR/<model>/`` (each model's folder), ``DIR/metrics.json`` and ``DIR/predictions.csv``
  (``model, user_id, churn_prob, ltv_pred, churned, ltv_actual``, one row per model and evaluation
  user). ``all`` trains seq, gru, btyd and gbm.
- After training, ``train`` registers the run in the store's model registry
  (core/models/registry.py) when it can open the store for writing; when another process holds
  the store it prints one warning line with the ``models register`` command to run later
  (``--no-register`` skips this).
- ``score --model DIR --as-of T --out FILE`` writes one row per user of the population at T:
  ``user_id, churn_prob, ltv_pred, median_weeks_to_churn``.
- ``score --events FILE [--users FILE] [--map ..] [--set ..] [--skip-bad-rows] [--rejects PATH]``
  scores the users of an events file instead (core/models/upload_scoring.py): same four
  columns, plus ``<out stem>.flags.csv`` (``user_id, flag, reason``) and notes on stderr.

The logic lives in core/models/training.py; this module only parses flags.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from core.cli_common import add_db_flag, stderr_progress


def _run_train(args: argparse.Namespace) -> int:
    from core.durations import parse_duration
    from core.errors import TenureError
    from core.models.gbm import GBMConfig
    from core.models.sequence_config import SequenceConfig
    from core.models.spec import ModelSpec
    from core.models.training import parse_as_of, resolve_models, train_models
    from core.store import Store, resolve_db_path

    models, skipped = resolve_models(args.model)
    horizon = parse_duration(args.horizon, "--horizon")
    if horizon.total_seconds() % 86_400:
        raise TenureError(f"--horizon '{args.horizon}' is not a whole number of days", "use e.g. 90d")
    spec = ModelSpec(parse_as_of(args.as_of), horizon_days=int(horizon.total_seconds() // 86_400))
    if skipped:
        print(f"skipped models not available yet: {', '.join(skipped)}", file=sys.stderr)
    db_path = resolve_db_path(args.db)
    with Store(db_path, read_only=True) as store:
        data_version = store.version()
        table = train_models(
            store,
            spec,
            models,
            args.split,
            args.seed,
            args.out,
            stderr_progress,
            gbm_config=GBMConfig(num_trees=args.trees),
            sequence_config=SequenceConfig(max_epochs=args.epochs, max_events=args.max_events),
            device=args.device,
            skipped=skipped,
        )
    for row in table.itertuples(index=False):
        print(
            f"{row.model}: churn ROC AUC {row.churn_roc_auc:.4f}, LTV normalized Gini "
            f"{row.ltv_normalized_gini:.4f} on {int(row.churn_users)} evaluation users",
            file=sys.stderr,
        )
    if not args.no_register:
        _register_run(args, db_path, data_version)
    print(args.out)
    return 0


def _register_run(args: argparse.Namespace, db_path: Path, data_version: str) -> None:
    """Register the run, opening the store for writing briefly; a held store gets a warning."""
    from core.cli_registry import register_hint
    from core.errors import TenureError
    from core.models.registry import register
    from core.store import Store

    try:
        store = Store(db_path)
    except TenureError:
        print(
            f"warning: not registered: another process holds {db_path} (the app?); register later with "
            f"`{register_hint(args.out, args.db)}`",
            file=sys.stderr,
        )
        return
    with store:
        try:
            ids = register(store, args.out, data_version=data_version)
        except TenureError as error:
            print(f"warning: not registered: {error}", file=sys.stderr)
            return
    print(f"registered {', '.join(ids)}", file=sys.stderr)


def _run_score(args: argparse.Namespace) -> int:
    from core.models.training import parse_as_of, score_model, write_scores

    as_of = parse_as_of(args.as_of)
    if args.events is not None:
        return _score_events(args, as_of)
    from core.errors import TenureError
    from core.store import Store, resolve_db_path

    upload_only = [flag for flag, value in _UPLOAD_FLAGS.items() if getattr(args, value)]
    if upload_only:
        verb = "is" if len(upload_only) == 1 else "are"
        raise TenureError(f"{', '.join(upload_only)} {verb} only used with --events", "add --events FILE")
    from core.models.registry import model_folder

    with Store(resolve_db_path(args.db), read_only=True) as store:
        scores = score_model(store, model_folder(store, args.model), as_of, progress=stderr_progress)
    print(write_scores(scores, args.out))
    return 0


_UPLOAD_FLAGS = {
    "--map": "map",
    "--set": "set",
    "--skip-bad-rows": "skip_bad_rows",
    "--rejects": "rejects",
    "--users": "users",
}


def _score_events(args: argparse.Namespace, as_of: dt.datetime) -> int:
    """``score --events FILE``: score an events file in a private in-memory store."""
    from core.cli_common import key_value_pairs
    from core.errors import TenureError
    from core.export import to_safe_csv
    from core.models.training import write_scores
    from core.models.upload_scoring import flags_path, score_upload

    if args.db:
        raise TenureError("--db is not used with --events", "drop --db: the file is scored on its own")
    report = score_upload(
        Path(args.events),
        Path(args.model),
        as_of,
        column_map=key_value_pairs(args.map, "--map"),
        constants=key_value_pairs(args.set, "--set"),
        skip_bad_rows=args.skip_bad_rows,
        rejects_path=Path(args.rejects) if args.rejects else None,
        users_path=Path(args.users) if args.users else None,
        progress=stderr_progress,
    )
    out = write_scores(report.scores, args.out)
    flags = flags_path(out)
    flags.write_text(to_safe_csv(report.flags), encoding="utf-8")
    print(report.summary(), file=sys.stderr)
    if report.events.rows_rejected:
        print(f"warning: {report.events.summary()}", file=sys.stderr)
    if report.users_not_scored:
        print(
            f"note: {report.users_not_scored:,} users have no event before the as-of date and are not scored",
            file=sys.stderr,
        )
    for line in report.drift.lines():
        print(f"note: {line}", file=sys.stderr)
    if report.flagged_users:
        print(
            f"warning: {report.flagged_users:,} users have too little history to trust their scores "
            f"(see {flags})",
            file=sys.stderr,
        )
    print(out)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add the ``train`` and ``score`` subcommands."""
    from core.models.choices import DEVICES, MODEL_CHOICES, SPLITS

    train = commands.add_parser(
        "train",
        help="fit churn/LTV models, evaluate them, write their folders, metrics.json and predictions.csv",
        description="Fit the churn and LTV models at an as-of date T for a horizon H, evaluate them "
        "and write DIR/<model>/ (each saved model), DIR/metrics.json (every metric, with the run's "
        "as-of, horizon, split, seed, user counts and data window) and DIR/predictions.csv (model, "
        "user_id, churn_prob, ltv_pred, churned, ltv_actual: one row per model and evaluation user). "
        "churned = 1 when the user has no event in [T, T+H); ltv_actual = revenue in [T, T+H); the "
        "population is the users who started before T. T + H must not be after the data's end. "
        "A seeded 20% of the fit users is kept apart as validation users: each model's churn "
        "probabilities are calibrated on them (temperature or isotonic, chosen by cross-validated log "
        "loss; DIR/<model>/calibration.json, reliability.csv), and churn_prob is the calibrated value. "
        "Definitions: docs/METRICS.md.",
    )
    add_db_flag(train)
    train.add_argument("--as-of", required=True, metavar="YYYY-MM-DD", help="the as-of date T (UTC midnight)")
    train.add_argument(
        "--horizon",
        default="90d",
        metavar="LENGTH",
        help="the horizon H in whole days, e.g. 90d (default 90d)",
    )
    train.add_argument(
        "--model",
        required=True,
        choices=MODEL_CHOICES,
        help="seq (transformer over each user's last events), gru (the same with a GRU encoder), "
        "btyd (BG/NBD + Gamma-Gamma), gbm (LightGBM), all (every model)",
    )
    train.add_argument(
        "--split",
        choices=SPLITS,
        default="users",
        help="users: fit on 80%% of the users at T (a fifth of them kept for calibration), evaluate on "
        "the other 20%% at T; backtest: fit at T-H (labels up to T; a fifth kept for calibration), "
        "evaluate every user at T (default users)",
    )
    train.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds the user split, the validation users and the GBM; same seed, same run (default 0)",
    )
    train.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="where seq and gru train: auto = CUDA, then Apple MPS, then CPU; the baselines always "
        "run on the CPU; requested and used device go to metrics.json (default auto)",
    )
    train.add_argument(
        "--epochs",
        type=int,
        default=30,
        metavar="N",
        help="seq/gru: at most N epochs; training stops earlier after 3 epochs without a better loss on "
        "the early-stopping users (default 30)",
    )
    train.add_argument(
        "--max-events",
        type=int,
        default=48,
        metavar="N",
        help="seq/gru: the number of most recent events before T each user's history keeps (default 48)",
    )
    train.add_argument(
        "--trees",
        type=int,
        default=200,
        metavar="N",
        help="boosting rounds of each GBM booster (default 200)",
    )
    train.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    train.add_argument(
        "--no-register",
        action="store_true",
        help="do not record the run in the store's model registry (default: register it when the store "
        "can be opened for writing; see `models register`)",
    )
    train.set_defaults(handler=_run_train)

    score = commands.add_parser(
        "score",
        help="score every user at an as-of date with a saved model (from the store, or from an events "
        "file with --events): user_id, churn_prob, ltv_pred, median_weeks_to_churn",
        description="Load a model folder written by train (DIR/seq, DIR/gru, DIR/btyd or DIR/gbm) and "
        "write one row per user of the population at --as-of (users who started before it), over the "
        "model's own horizon: user_id, churn_prob, ltv_pred, median_weeks_to_churn. "
        "median_weeks_to_churn: for seq and gru, the first week w (0 to W-1) from which the user is "
        "more likely than not to have no further activity within the horizon, empty when the curve "
        "stays above 0.5; for BG/NBD, the smallest whole week w (1 to 520) at which the probability of "
        "no purchase in (T, T + w weeks] is at most 0.5, empty when not reached by 520 weeks; always "
        "empty for GBM models (they have no survival curve). With --events FILE the users of "
        "that file are scored instead, in a private in-memory store that is then discarded (no store "
        "is read or written; --db is refused): the file is checked like `ingest` (--map, --set, "
        "--skip-bad-rows, --rejects), at most 2,000,000 events and 200 MiB; events on or after "
        "--as-of are ignored. Besides FILE it writes <out stem>.flags.csv (user_id, flag, reason: "
        "users with fewer than 2 events or a first event less than 7 days before --as-of) and prints "
        "on stderr what the file holds that the model was not trained on. Definitions: "
        "docs/METRICS.md.",
    )
    add_db_flag(score)
    score.add_argument(
        "--model",
        required=True,
        metavar="DIR|ID",
        help="a saved model folder (holding model.json), or, scoring a store, the id of a registered model "
        "(as `models list` and the pages show it, e.g. 20260301-101500/gbm)",
    )
    score.add_argument("--as-of", required=True, metavar="YYYY-MM-DD", help="the as-of date T (UTC midnight)")
    score.add_argument("--out", required=True, metavar="FILE", help="the CSV file to write")
    score.add_argument(
        "--events",
        metavar="FILE",
        help="score the users of this events file (CSV, CSV.gz or Parquet) instead of a store",
    )
    score.add_argument(
        "--users", metavar="FILE", help="with --events: a users file giving the users' attributes"
    )
    score.add_argument(
        "--map",
        action="append",
        metavar="SRC=DST",
        help="with --events: map file column SRC to canonical column DST (repeatable)",
    )
    score.add_argument(
        "--set",
        action="append",
        metavar="COL=VALUE",
        help="with --events: fill missing column COL with VALUE (repeatable)",
    )
    score.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="with --events: score the good rows and write the bad ones to a rejects file instead of "
        "refusing the file",
    )
    score.add_argument(
        "--rejects",
        metavar="PATH",
        help="with --events: where to write rejected rows (default: FILE.rejects.csv)",
    )
    score.set_defaults(handler=_run_score)
