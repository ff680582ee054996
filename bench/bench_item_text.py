"""Sequence models: item embeddings started from title vectors against random starts.

Usage: python bench/bench_item_text.py [--db sample_data/tenure.duckdb] [--seeds 0 1]
       [--arms random text] [--epochs 8] [--max-events 32] [--held-out-share 0.1]
       [--out /tmp/bench_item_text] [--table-only]

For each seed and arm it trains ``seq`` with ``core.models.training.train_models`` (split
``users``, T = 2026-03-01, H = 90 days, ``SequenceConfig(max_epochs, max_events,
item_text_init=arm == "text")``) and scores the evaluation users; both arms share every other
setting, so with one seed they differ only in the item embeddings' start.

The simulator's catalog is fixed (every item exists from day one and all 600 are seen before T),
so no item is ever new. To measure items the model was not fitted on, a share of the items
(``user_split(["held-out-item:" + item_id], share, 0)``) is left out of the fitted vocabulary on
purpose in both arms: in training their events count as "unknown item"; at scoring the random
arm still reads them as unknown, the text arm gives them their title's vector.

Groups of evaluation users: all; **short history** (at most 5 events before T); **new items**
(their last ``max-events`` events before T include a held-out item). Per group: churn ROC AUC of
the calibrated probabilities and LTV normalised Gini (core.evaluation). The difference text -
random is shown per seed with a paired bootstrap standard error over the group's users (200
resamples), and the table ends with the mean over seeds (its SE: the root mean square of the
per-seed SEs over the square root of the number of seeds; "sd over seeds": the standard deviation
of the per-seed differences, which also varies the user split). Each (seed, arm) result is saved as
JSON under ``--out``, so arms can run in separate processes and ``--table-only`` prints the table.

A second table isolates the scoring-time title vectors: the text arm's saved model scores the
users with a held-out item twice (raw probabilities), once with the held-out items' title vectors
and once with them read as "unknown item".
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.evaluation import normalized_gini, roc_auc, user_split
from core.models import sequence as sequence_module
from core.models.sequence_config import SequenceConfig
from core.models.sequences import SequenceVocabulary
from core.models.spec import ModelSpec
from core.models.training import train_models
from core.store import Store

AS_OF = dt.datetime(2026, 3, 1)
HORIZON_DAYS = 90
SHORT_EVENTS = 5
BOOTSTRAP = 200
HELD_OUT_SALT = "held-out-item:"


def held_out_items(store: Store, share: float) -> list[str]:
    """The items left out of the fitted vocabulary (module docstring)."""
    items = store.query_df("SELECT item_id FROM items ORDER BY item_id")["item_id"].astype(str).tolist()
    mask = user_split([HELD_OUT_SALT + item for item in items], share, 0)
    return [item for item, held in zip(items, mask, strict=True) if held]


def hold_out(held: list[str]) -> None:
    """Make the sequence model's fitted vocabulary leave out ``held``."""
    original = sequence_module.sequence_vocabulary
    dropped = set(held)

    def vocabulary(store: Store, spec: ModelSpec) -> SequenceVocabulary:
        full = original(store, spec)
        return SequenceVocabulary(full.event_names, tuple(item for item in full.items if item not in dropped))

    sequence_module.sequence_vocabulary = vocabulary


def user_groups(store: Store, max_events: int, held: list[str]) -> pd.DataFrame:
    """``user_id, events, new_items`` of every user with events before T."""
    return store.query_df(
        """
WITH ranked AS (
    SELECT user_id, item_id,
        row_number() OVER (PARTITION BY user_id ORDER BY event_time DESC) AS rn
    FROM events WHERE event_time < ?
)
SELECT user_id, count(*) AS events,
    bool_or(rn <= ? AND list_contains(?, item_id)) AS new_items
FROM ranked GROUP BY user_id""",
        [AS_OF, max_events, held],
    )


def run_arm(store: Store, args: argparse.Namespace, seed: int, arm: str, held: list[str]) -> dict:
    """Train one arm and keep the evaluation users' predictions."""
    out = Path(args.out) / f"seed{seed}-{arm}"
    config = SequenceConfig(max_epochs=args.epochs, max_events=args.max_events, item_text_init=arm == "text")
    spec = ModelSpec(as_of=AS_OF, horizon_days=HORIZON_DAYS)
    started = dt.datetime.now()
    train_models(store, spec, ["seq"], "users", seed, out, sequence_config=config)
    seconds = (dt.datetime.now() - started).total_seconds()
    predictions = pd.read_csv(out / "predictions.csv", dtype={"user_id": str})
    model = json.loads((out / "seq" / "model.json").read_text(encoding="utf-8"))
    return {
        "seed": seed,
        "arm": arm,
        "seconds": seconds,
        "epochs_run": model["metrics"]["epochs_run"],
        "predictions": predictions[["user_id", "churn_prob", "ltv_pred", "churned", "ltv_actual"]].to_dict(
            orient="list"
        ),
    }


def _metrics(frame: pd.DataFrame) -> tuple[float, float]:
    return (
        roc_auc(frame["churned"], frame["churn_prob"]),
        normalized_gini(frame["ltv_actual"], frame["ltv_pred"]),
    )


def compare(results: list[dict], groups: pd.DataFrame) -> pd.DataFrame:
    """One row per seed, group and metric: random, text, text - random and its bootstrap SE."""
    rows = []
    seeds = sorted({result["seed"] for result in results})
    for seed in seeds:
        arms = {r["arm"]: pd.DataFrame(r["predictions"]) for r in results if r["seed"] == seed}
        if set(arms) != {"random", "text"}:
            continue
        paired = arms["random"].merge(
            arms["text"], on=["user_id", "churned", "ltv_actual"], suffixes=("_r", "_t")
        )
        paired = paired.merge(groups, on="user_id", how="left")
        paired["events"] = paired["events"].fillna(0)
        paired["new_items"] = paired["new_items"].fillna(False).astype(bool)
        selections = {
            "all": np.ones(len(paired), dtype=bool),
            f"short history (<= {SHORT_EVENTS} events)": (paired["events"] <= SHORT_EVENTS).to_numpy(),
            "new items in history": paired["new_items"].to_numpy(),
        }
        rng = np.random.default_rng(seed)
        for group, mask in selections.items():
            part = paired[mask].reset_index(drop=True)
            if len(part) < 10 or part["churned"].nunique() < 2:
                continue

            def arm_frame(frame: pd.DataFrame, suffix: str) -> pd.DataFrame:
                return frame.rename(
                    columns={f"churn_prob{suffix}": "churn_prob", f"ltv_pred{suffix}": "ltv_pred"}
                )

            random_metrics = _metrics(arm_frame(part, "_r"))
            text_metrics = _metrics(arm_frame(part, "_t"))
            draws = []
            for _ in range(BOOTSTRAP):
                sample = part.iloc[rng.integers(0, len(part), len(part))]
                if sample["churned"].nunique() < 2:
                    continue
                r, t = _metrics(arm_frame(sample, "_r")), _metrics(arm_frame(sample, "_t"))
                draws.append((t[0] - r[0], t[1] - r[1]))
            spread = np.nanstd(np.asarray(draws), axis=0, ddof=1)
            for index, metric in enumerate(("churn ROC AUC", "LTV normalized Gini")):
                rows.append(
                    {
                        "seed": seed,
                        "group": group,
                        "users": len(part),
                        "metric": metric,
                        "random": random_metrics[index],
                        "text": text_metrics[index],
                        "text - random": text_metrics[index] - random_metrics[index],
                        "bootstrap SE": spread[index],
                    }
                )
    table = pd.DataFrame(rows)
    if len(seeds) > 1 and len(table):
        mean = table.groupby(["group", "metric"], sort=False, as_index=False).agg(
            users=("users", "mean"),
            random=("random", "mean"),
            text=("text", "mean"),
            **{"text - random": ("text - random", "mean")},
            **{"bootstrap SE": ("bootstrap SE", lambda v: float(np.sqrt(np.mean(np.square(v)) / len(v))))},
            **{"sd over seeds": ("text - random", lambda v: float(np.std(v, ddof=1)))},
        )
        mean.insert(0, "seed", "mean")
        table = pd.concat([table, mean], ignore_index=True)
    return table


def new_item_ablation(store: Store, out: Path, results: list[dict], groups: pd.DataFrame) -> pd.DataFrame:
    """The text arm's saved model scored twice, raw (before calibration): held-out items with their
    title vectors, and read as "unknown item" (the projection switched off), on the evaluation
    users whose history has a held-out item. Isolates what the title vectors of new items add."""
    from core.models.sequence import SequenceModel

    rows = []
    spec = ModelSpec(as_of=AS_OF, horizon_days=HORIZON_DAYS)
    new_users = groups.loc[groups["new_items"].fillna(False).astype(bool), "user_id"]
    for result in results:
        folder = out / f"seed{result['seed']}-text" / "seq"
        if result["arm"] != "text" or not folder.is_dir():
            continue
        labels = pd.DataFrame(result["predictions"])[["user_id", "churned", "ltv_actual"]]
        labels = labels[labels["user_id"].isin(set(new_users))]
        model = SequenceModel.load(folder, device="cpu")
        scored = {}
        for name in ("title vectors", "unknown"):
            if name == "unknown":
                model.text_projection_ = None
            frame = labels.merge(model.predict(store, spec), on="user_id")
            scored[name] = _metrics(frame)
        for index, metric in enumerate(("churn ROC AUC", "LTV normalized Gini")):
            rows.append(
                {
                    "seed": result["seed"],
                    "users": len(labels),
                    "metric": metric,
                    "new items as unknown": scored["unknown"][index],
                    "new items by title": scored["title vectors"][index],
                    "difference": scored["title vectors"][index] - scored["unknown"][index],
                }
            )
    table = pd.DataFrame(rows)
    if table["seed"].nunique() > 1:
        mean = table.groupby("metric", sort=False, as_index=False).agg(
            users=("users", "mean"),
            **{"new items as unknown": ("new items as unknown", "mean")},
            **{"new items by title": ("new items by title", "mean")},
            difference=("difference", "mean"),
            **{"sd over seeds": ("difference", lambda v: float(np.std(v, ddof=1)))},
        )
        mean.insert(0, "seed", "mean")
        table = pd.concat([table, mean], ignore_index=True)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="sample_data/tenure.duckdb")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--arms", nargs="+", default=["random", "text"], choices=["random", "text"])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--max-events", type=int, default=32)
    parser.add_argument("--held-out-share", type=float, default=0.1)
    parser.add_argument("--out", default="/tmp/bench_item_text")
    parser.add_argument("--table-only", action="store_true", help="print the table of saved results")
    args = parser.parse_args()
    store = Store(args.db, read_only=True)
    held = held_out_items(store, args.held_out_share)
    hold_out(held)
    results_dir = Path(args.out)
    results_dir.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        for seed in args.seeds:
            for arm in args.arms:
                result = run_arm(store, args, seed, arm, held)
                print(
                    f"seed {seed} {arm}: {result['seconds']:.0f} s, {result['epochs_run']} epochs", flush=True
                )
                (results_dir / f"result-seed{seed}-{arm}.json").write_text(
                    json.dumps(result), encoding="utf-8"
                )
    results = [
        json.loads(path.read_text(encoding="utf-8")) for path in sorted(results_dir.glob("result-*.json"))
    ]
    results = [result for result in results if result["seed"] in args.seeds]
    groups = user_groups(store, args.max_events, held)
    print(f"{len(held)} of the catalog's items held out of the fitted vocabulary")
    table = compare(results, groups)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        print("\ntext arm, users with a held-out item, raw scores: held-out items by title vs as unknown")
        ablation = new_item_ablation(store, results_dir, results, groups)
        print(ablation.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
