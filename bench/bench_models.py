"""Churn and LTV models on CDNOW and on the simulated sample: quality, speed, and the oracle's ceiling.

Usage: python bench/bench_models.py [--models btyd,gbm] [--datasets cdnow,sample] [--json PATH]
       [--scale-db STORE [STORE ...]]

Every model is trained and scored through ``core.models.training.train_models`` / ``score_model``,
so any model kind in ``AVAILABLE_MODELS`` runs here; names not (yet) available are skipped with a
message. Per dataset, split and model it reports, on the split's evaluation users (churn metrics
on the calibrated probabilities; definitions in docs/METRICS.md):

- churn ROC AUC, LTV normalized Gini and Spearman, mean predicted and mean actual LTV;
- training time (``train_models`` for that one model: labels, split, fit, calibration, evaluation,
  saving), scoring time (``score_model`` of every user of the population at T with the saved
  model) and scoring throughput (users per second).

Cases:

- ``cdnow`` (the real CDNOW cohort, built into ``--cdnow-db`` if missing): ``users`` split at
  1997-10-01 with the 39-week holdout as horizon (``--cdnow-horizon-days``, default 272: the store's
  last event is at midnight of 1998-06-30, and labels refuse a horizon that ends after it, so the
  holdout's last day is left out), and ``backtest`` at 1997-10-01 over 26 weeks (182 days: fitted at
  1997-04-02, after the whole cohort's first purchase, on labels inside the calibration period).
- ``sample`` (the simulated store ``--sample-db``): ``users`` and ``backtest`` splits at each as-of
  date of ``truth.user_outcomes`` whose horizon ends within the data, and the **oracle** on the same
  evaluation users: the simulator's true churn probability and expected revenue used as the
  predictions (``core.models.oracle``): the ceiling of every metric.
- ``--scale-db``: simulated stores of growing size (``python -m core generate --users 1000000
  --db PATH``); each model trained on the sample's ``users`` split scores each store at midnight
  of its last event's day (so nearly every user, and every event, counts), in a fresh process,
  whose wall time and peak resident memory are reported; ``--scale-memory-limit 1GB`` repeats it with DuckDB's
  ``memory_limit`` set.

The user split uses ``--seed`` (0). The script prints the tables and writes them as JSON with
``--json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import multiprocessing
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.datasets import build_dataset
from core.errors import TenureError
from core.evaluation import evaluate_churn, evaluate_ltv
from core.models.oracle import oracle_predictions, truth_dates
from core.models.spec import ModelSpec
from core.models.training import AVAILABLE_MODELS, plan_split, score_model, train_models
from core.store import PROJECT_ROOT, Store

CDNOW_AS_OF = dt.datetime(1997, 10, 1)
CDNOW_HORIZON_DAYS = 272
CDNOW_BACKTEST_HORIZON_DAYS = 182
DATASETS = ("cdnow", "sample")
QUALITY_COLUMNS = (
    "dataset",
    "split",
    "as_of",
    "horizon_days",
    "model",
    "eval_users",
    "churn_rate",
    "churn_roc_auc",
    "ltv_normalized_gini",
    "ltv_spearman",
    "ltv_mean_predicted",
    "ltv_mean_actual",
    "train_s",
    "score_s",
    "scored_users",
    "users_per_s",
)


@dataclasses.dataclass(frozen=True)
class Case:
    """One dataset, split and spec on which every model is trained, evaluated and scored."""

    dataset: str
    db: Path
    split: str
    spec: ModelSpec
    oracle: bool


def select_models(names: str) -> tuple[list[str], list[str]]:
    """``--models a,b,c`` -> (the names in ``AVAILABLE_MODELS``, in order; the others, skipped)."""
    requested = [name.strip() for name in names.split(",") if name.strip()]
    return (
        [name for name in requested if name in AVAILABLE_MODELS],
        [name for name in requested if name not in AVAILABLE_MODELS],
    )


def cdnow_cases(db: Path, horizon_days: int, backtest_horizon_days: int) -> list[Case]:
    if not db.exists():
        print(f"building the CDNOW store {db}", file=sys.stderr)
        build_dataset("cdnow", db)
    return [
        Case("cdnow", db, "users", ModelSpec(CDNOW_AS_OF, horizon_days=horizon_days), oracle=False),
        Case(
            "cdnow", db, "backtest", ModelSpec(CDNOW_AS_OF, horizon_days=backtest_horizon_days), oracle=False
        ),
    ]


def sample_cases(db: Path) -> list[Case]:
    """Both splits at each truth date whose horizon ends within the data (labels need it complete)."""
    if not db.exists():
        raise SystemExit(f"{db} does not exist: build it with python -m core generate --db {db}")
    with Store(db, read_only=True) as store:
        dates = truth_dates(store)
        data_end = store.data_end()
    cases = []
    for row in dates.itertuples(index=False):
        spec = ModelSpec(pd.Timestamp(row.as_of), horizon_days=int(row.horizon_days))
        if data_end is None or pd.Timestamp(spec.horizon_end) > data_end:
            print(
                f"sample: skipping as-of {spec.as_of.date()}: its {spec.horizon_days}-day horizon ends "
                f"after the data's last event ({data_end})",
                file=sys.stderr,
            )
            continue
        cases += [Case("sample", db, split, spec, oracle=True) for split in ("users", "backtest")]
    return cases


def run_case(
    case: Case, models: list[str], seed: int, out: Path
) -> tuple[list[dict[str, Any]], dict[str, Path]]:
    """Train, evaluate and score each model on ``case``; the rows and each saved model's folder."""
    rows = []
    folders = {}
    with Store(case.db, read_only=True) as store:
        for name in models:
            directory = out / f"{case.dataset}-{case.split}-{case.spec.as_of.date()}" / name
            started = time.perf_counter()
            table = train_models(store, case.spec, [name], case.split, seed, directory)
            train_s = time.perf_counter() - started
            started = time.perf_counter()
            scored = score_model(store, directory / name, case.spec.as_of)
            score_s = time.perf_counter() - started
            metrics = table.iloc[0]
            folders[name] = directory / name
            rows.append(_row(case, name, metrics, train_s=train_s, score_s=score_s, scored_users=len(scored)))
            print(_progress_line(rows[-1]), file=sys.stderr)
        if case.oracle:
            rows.append(oracle_row(store, case, seed))
            print(_progress_line(rows[-1]), file=sys.stderr)
    return rows, folders


def oracle_row(store: Store, case: Case, seed: int) -> dict[str, Any]:
    """The oracle's metrics on the evaluation users of ``case`` (the models' own evaluation users)."""
    evaluation = plan_split(store, case.spec, case.split, seed, None).eval_labels
    joined = evaluation.merge(oracle_predictions(store, case.spec), on="user_id", how="left")
    missing = int(joined["churn_prob"].isna().sum())
    if missing:
        raise SystemExit(f"{missing} evaluation users have no truth row at {case.spec.as_of}")
    churn = evaluate_churn(joined["churned"].astype(float), joined["churn_prob"])
    ltv = evaluate_ltv(joined["ltv_actual"], joined["ltv_pred"])
    metrics = pd.Series(
        {
            "churn_users": churn.users,
            "churn_churn_rate": churn.churn_rate,
            "churn_roc_auc": churn.roc_auc,
            "ltv_normalized_gini": ltv.normalized_gini,
            "ltv_spearman": ltv.spearman,
            "ltv_mean_predicted": ltv.mean_predicted,
            "ltv_mean_actual": ltv.mean_actual,
        }
    )
    return _row(case, "oracle", metrics, train_s=None, score_s=None, scored_users=None)


def _row(
    case: Case,
    model: str,
    metrics: pd.Series,
    *,
    train_s: float | None,
    score_s: float | None,
    scored_users: int | None,
) -> dict[str, Any]:
    return {
        "dataset": case.dataset,
        "split": case.split,
        "as_of": case.spec.as_of.date().isoformat(),
        "horizon_days": case.spec.horizon_days,
        "model": model,
        "eval_users": int(metrics["churn_users"]),
        "churn_rate": float(metrics["churn_churn_rate"]),
        "churn_roc_auc": float(metrics["churn_roc_auc"]),
        "ltv_normalized_gini": float(metrics["ltv_normalized_gini"]),
        "ltv_spearman": float(metrics["ltv_spearman"]),
        "ltv_mean_predicted": float(metrics["ltv_mean_predicted"]),
        "ltv_mean_actual": float(metrics["ltv_mean_actual"]),
        "train_s": train_s,
        "score_s": score_s,
        "scored_users": scored_users,
        "users_per_s": None if not score_s or scored_users is None else scored_users / score_s,
    }


def _progress_line(row: dict[str, Any]) -> str:
    timing = "" if row["train_s"] is None else f", train {row['train_s']:.1f} s, score {row['score_s']:.2f} s"
    return (
        f"{row['dataset']} {row['split']} {row['as_of']}: {row['model']} ROC AUC {row['churn_roc_auc']:.3f}, "
        f"Gini {row['ltv_normalized_gini']:.3f}{timing}"
    )


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB.

    Linux's ``VmHWM`` when available: ``getrusage``'s ``ru_maxrss`` survives ``execve``, so a
    process spawned by a large parent starts with the parent's peak; ``VmHWM`` is the new
    process's own. Elsewhere, ``ru_maxrss`` (KiB on Linux, bytes on macOS).
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / (1024 if sys.platform == "darwin" else 1)


def _score_child(directory: str, db: str, as_of: str, memory_limit: str | None, queue: Any) -> None:
    """Score in a fresh process so its peak RSS is this scoring's alone."""
    with Store(db, read_only=True) as store:
        if memory_limit:
            with store.cursor() as cursor:
                cursor.execute("SET memory_limit = ?", [memory_limit])
        before = peak_rss_mib()
        started = time.perf_counter()
        scored = score_model(store, directory, pd.Timestamp(as_of).to_pydatetime())
        seconds = time.perf_counter() - started
    queue.put(
        {"seconds": seconds, "users": len(scored), "peak_rss_mib": peak_rss_mib(), "rss_before_mib": before}
    )


def scale_rows(folders: dict[str, Path], db: Path, memory_limit: str | None = None) -> list[dict[str, Any]]:
    """Each model folder scores ``db`` in its own process at midnight of its last event's day.

    That as-of date puts (nearly) every user of the store in the population, and every event
    before it is read. ``memory_limit``: DuckDB's ``memory_limit`` in that process (None: DuckDB's
    default, 80% of the machine's memory).
    """
    context = multiprocessing.get_context("spawn")
    with Store(db, read_only=True) as store:
        users = store.query_one("SELECT count(*) FROM users")[0]
        events = store.query_one("SELECT count(*) FROM events")[0]
        data_end = store.data_end()
    if data_end is None:
        raise SystemExit(f"{db} has no events")
    as_of = data_end.floor("D").to_pydatetime()
    rows = []
    for name, directory in folders.items():
        queue = context.Queue()
        child = context.Process(
            target=_score_child, args=(str(directory), str(db), as_of.isoformat(), memory_limit, queue)
        )
        child.start()
        result = queue.get()
        child.join()
        row = {
            "model": name,
            "duckdb_memory_limit": memory_limit or "default",
            "store_users": users,
            "store_events": events,
            "as_of": as_of.date().isoformat(),
            "scored_users": result["users"],
            "score_s": result["seconds"],
            "users_per_s": result["users"] / result["seconds"],
            "peak_rss_mib": result["peak_rss_mib"],
            "rss_before_mib": result["rss_before_mib"],
        }
        print(
            f"scale {name}: {row['scored_users']:,} users in {row['score_s']:.1f} s, "
            f"peak RSS {row['peak_rss_mib']:,.0f} MiB",
            file=sys.stderr,
        )
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A GitHub table of ``rows`` (floats: 3 decimals, from 1,000 up whole; None: blank)."""

    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and pd.isna(value)):
            return ""
        if isinstance(value, float):
            return f"{value:,.3f}" if abs(value) < 1000 else f"{value:,.0f}"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(column)) for column in columns) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="btyd,gbm", help="comma-separated model names (default btyd,gbm)")
    parser.add_argument("--datasets", default="cdnow,sample", help="comma-separated: cdnow, sample")
    parser.add_argument(
        "--sample-db",
        type=Path,
        default=PROJECT_ROOT / "sample_data" / "tenure.duckdb",
        help="the simulated store (default sample_data/tenure.duckdb)",
    )
    parser.add_argument(
        "--cdnow-db",
        type=Path,
        default=PROJECT_ROOT / "sample_data" / "cdnow.duckdb",
        help="the CDNOW store, built if missing (default sample_data/cdnow.duckdb)",
    )
    parser.add_argument(
        "--cdnow-horizon-days",
        type=int,
        default=CDNOW_HORIZON_DAYS,
        help=f"horizon of the CDNOW user split from 1997-10-01 (default {CDNOW_HORIZON_DAYS})",
    )
    parser.add_argument(
        "--cdnow-backtest-horizon-days",
        type=int,
        default=CDNOW_BACKTEST_HORIZON_DAYS,
        help=f"horizon of the CDNOW backtest at 1997-10-01 (default {CDNOW_BACKTEST_HORIZON_DAYS})",
    )
    parser.add_argument(
        "--scale-db", type=Path, nargs="+", default=[], help="simulated stores to time scoring on"
    )
    parser.add_argument(
        "--scale-memory-limit",
        nargs="*",
        default=[],
        help="also score each --scale-db store with these DuckDB memory limits (e.g. 1GB)",
    )
    parser.add_argument("--seed", type=int, default=0, help="the user split's seed (default 0)")
    parser.add_argument("--out", type=Path, help="where the models are saved (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="write every figure as JSON to this file")
    args = parser.parse_args()

    models, skipped = select_models(args.models)
    for name in skipped:
        print(f"skipping model '{name}': not available (available: {', '.join(AVAILABLE_MODELS)})")
    datasets = [name.strip() for name in args.datasets.split(",") if name.strip()]
    unknown = [name for name in datasets if name not in DATASETS]
    if unknown or not models:
        raise SystemExit(f"nothing to run: datasets {unknown or datasets}, models {models}")
    if args.scale_db and "sample" not in datasets:
        raise SystemExit("--scale-db scores the models trained on the sample: add sample to --datasets")

    started = time.perf_counter()
    cases: list[Case] = []
    if "cdnow" in datasets:
        cases += cdnow_cases(args.cdnow_db, args.cdnow_horizon_days, args.cdnow_backtest_horizon_days)
    if "sample" in datasets:
        cases += sample_cases(args.sample_db)
    with tempfile.TemporaryDirectory(prefix="bench-models-") as scratch:
        out = args.out or Path(scratch)
        quality: list[dict[str, Any]] = []
        scale_folders: dict[str, Path] = {}
        for case in cases:
            rows, folders = run_case(case, models, args.seed, out)
            quality += rows
            if case.dataset == "sample" and case.split == "users" and not scale_folders:
                scale_folders = folders
        scale = [
            row
            for db in args.scale_db
            for limit in (None, *args.scale_memory_limit)
            for row in scale_rows(scale_folders, db, limit)
        ]
    total_s = time.perf_counter() - started

    print(markdown(quality, list(QUALITY_COLUMNS)))
    if scale:
        print()
        print(markdown(scale, list(scale[0])))
    print(f"\ntotal {total_s:.0f} s on {os.cpu_count()} CPUs ({platform.processor() or platform.machine()})")
    if args.json:
        document = {
            "date": dt.date.today().isoformat(),
            "command": " ".join(sys.argv),
            "cpus": os.cpu_count(),
            "seed": args.seed,
            "models": models,
            "skipped_models": skipped,
            "quality": quality,
            "scale": scale,
            "total_s": total_s,
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    try:
        main()
    except TenureError as error:
        raise SystemExit(f"error: {error.message}" + (f" ({error.hint})" if error.hint else "")) from None
