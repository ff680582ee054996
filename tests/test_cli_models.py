"""`python -m core train` and `score` (core/cli_models.py, core/models/training.py) on the simulated store."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata

from core.cli import main
from core.models import registry
from core.models.btyd import BTYDModel, rfm_summary
from core.store import Store

AS_OF = "2026-03-01"
HORIZON = pd.Timedelta(days=90)
TRAIN_COLUMNS = ["model", "user_id", "churn_prob", "ltv_pred", "churned", "ltv_actual"]
SCORE_COLUMNS = ["user_id", "churn_prob", "ltv_pred", "median_weeks_to_churn"]
SEED = 3


def _events(path: Path) -> pd.DataFrame:
    with Store(path, read_only=True) as store:
        return store.query_df("SELECT user_id, event_time, revenue FROM events")


def _population(events: pd.DataFrame, as_of: pd.Timestamp) -> set[str]:
    """Users whose first event is before ``as_of``."""
    first = events.groupby("user_id")["event_time"].min()
    return set(first[first < as_of].index)


def _labels(events: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """churned / ltv_actual over [T, T + 90 days) of the population at T, in plain pandas."""
    users = sorted(_population(events, as_of))
    window = events[(events["event_time"] >= as_of) & (events["event_time"] < as_of + HORIZON)]
    active = set(window["user_id"])
    revenue = window.groupby("user_id")["revenue"].sum(min_count=1).fillna(0.0)
    return pd.DataFrame(
        {
            "user_id": users,
            "churned": [int(user not in active) for user in users],
            "ltv_actual": [float(revenue.get(user, 0.0)) for user in users],
        }
    )


def _in_test(user_id: str, seed: int) -> bool:
    digest = hashlib.blake2b(f"{seed}:{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < 0.2


def _rank_auc(churned: np.ndarray, score: np.ndarray) -> float:
    ranks = rankdata(score)
    positives = churned.sum()
    negatives = len(churned) - positives
    return float((ranks[churned == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _train(db: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "train",
            "--db",
            str(db),
            "--as-of",
            AS_OF,
            "--horizon",
            "90d",
            "--trees",
            "15",
            "--out",
            str(out),
            "--no-register",
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def trained(small_store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trained")
    assert (
        _train(
            small_store_path, out, "--model", "all", "--seed", str(SEED), "--epochs", "2", "--max-events", "8"
        )
        == 0
    )
    return out


def test_train_writes_every_file_with_the_contract_columns(trained: Path) -> None:
    for name in (
        "btyd/model.json",
        "gbm/model.json",
        "gbm/churn.txt",
        "gbm/ltv.txt",
        "seq/weights.safetensors",
        "gru/model.json",
        "metrics.json",
    ):
        assert (trained / name).is_file(), name
    predictions = pd.read_csv(trained / "predictions.csv")
    assert list(predictions.columns) == TRAIN_COLUMNS
    assert set(predictions["model"]) == {"btyd", "gbm", "seq", "gru"}
    assert predictions["churn_prob"].between(0, 1).all()
    assert (predictions["ltv_pred"] >= 0).all()


def test_predictions_hold_only_held_out_users_with_their_labels(
    small_store_path: Path, trained: Path
) -> None:
    events = _events(small_store_path)
    expected = _labels(events, pd.Timestamp(AS_OF))
    held_out = expected[[_in_test(user, SEED) for user in expected["user_id"]]]
    predictions = pd.read_csv(trained / "predictions.csv")
    metrics = json.loads((trained / "metrics.json").read_text())
    validation = [
        user
        for user in expected["user_id"]
        if not _in_test(user, SEED) and _in_test(f"validation:{user}", SEED)
    ]
    assert metrics["users"] == {
        "population": len(expected),
        "fit": len(expected) - len(held_out) - len(validation),
        "validation": len(validation),
        "evaluation": len(held_out),
    }
    assert 0 < len(held_out) < len(expected) / 2
    assert 0 < len(validation) < len(expected) / 2
    gbm_window = json.loads((trained / "gbm" / "model.json").read_text())["data_window"]
    # fitted on the other 80% less the validation users only
    assert gbm_window["users"] == len(expected) - len(held_out) - len(validation)
    for model, rows in predictions.groupby("model"):
        rows = rows.sort_values("user_id").reset_index(drop=True)
        assert list(rows["user_id"]) == list(held_out["user_id"]), model
        assert rows["churned"].tolist() == held_out["churned"].tolist()
        assert np.allclose(rows["ltv_actual"], held_out["ltv_actual"])


def test_metrics_json_agrees_with_predictions_csv(trained: Path) -> None:
    metrics = json.loads((trained / "metrics.json").read_text())
    assert set(metrics["models"]) == {"btyd", "gbm", "seq", "gru"}
    assert metrics["as_of"] == "2026-03-01T00:00:00"
    assert metrics["horizon_days"] == 90 and metrics["split"] == "users" and metrics["seed"] == SEED
    assert metrics["device"] == {"requested": "auto", "used": "cpu"}
    assert metrics["skipped_models"] == []
    assert metrics["sequence_config"]["max_epochs"] == 2 and metrics["sequence_config"]["max_events"] == 8
    predictions = pd.read_csv(trained / "predictions.csv")
    for model, rows in predictions.groupby("model"):
        churn = metrics["models"][model]["churn"]
        ltv = metrics["models"][model]["ltv"]
        assert 0 <= churn["roc_auc"] <= 1
        churned = rows["churned"].to_numpy()
        assert churn["roc_auc"] == pytest.approx(_rank_auc(churned, rows["churn_prob"].to_numpy()), abs=1e-9)
        assert churn["brier"] == pytest.approx(float(np.mean((rows["churn_prob"] - churned) ** 2)), abs=1e-9)
        assert ltv["mae"] == pytest.approx(float(np.mean(np.abs(rows["ltv_pred"] - rows["ltv_actual"]))))
        assert churn["users"] == ltv["users"] == len(rows)


def test_backtest_fits_before_t_and_evaluates_every_user_at_t(small_store_path: Path, tmp_path: Path) -> None:
    assert _train(small_store_path, tmp_path, "--model", "btyd", "--split", "backtest") == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["split"] == "backtest"
    assert metrics["fit_as_of"] == "2025-12-01T00:00:00"
    events = _events(small_store_path)
    expected = _labels(events, pd.Timestamp(AS_OF))
    predictions = pd.read_csv(tmp_path / "predictions.csv").sort_values("user_id")
    assert list(predictions["user_id"]) == list(expected["user_id"])
    assert predictions["churned"].tolist() == expected["churned"].tolist()
    fitted = json.loads((tmp_path / "btyd" / "model.json").read_text())["data_window"]
    assert fitted["as_of"] == "2025-12-01T00:00:00"
    at_fit = _population(events, pd.Timestamp("2025-12-01"))
    validation = {user for user in at_fit if _in_test(f"validation:{user}", 0)}  # the default seed
    assert 0 < len(validation) < len(at_fit)
    assert fitted["users"] == len(at_fit) - len(validation)  # less the validation users
    assert metrics["users"]["validation"] == len(validation)
    assert 0 <= metrics["models"]["btyd"]["churn"]["roc_auc"] <= 1


def test_score_btyd_writes_every_user_and_median_weeks(
    small_store_path: Path, trained: Path, tmp_path: Path
) -> None:
    out = tmp_path / "scores.csv"
    as_of = "2026-06-01"
    assert (
        main(
            [
                "score",
                "--db",
                str(small_store_path),
                "--model",
                str(trained / "btyd"),
                "--as-of",
                as_of,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    scores = pd.read_csv(out)
    assert list(scores.columns) == SCORE_COLUMNS
    assert set(scores["user_id"]) == _population(_events(small_store_path), pd.Timestamp(as_of))
    assert scores["user_id"].is_unique
    model = BTYDModel.load(trained / "btyd")
    with Store(small_store_path, read_only=True) as store:
        summary = rfm_summary(store, pd.Timestamp(as_of).to_pydatetime()).set_index("user_id")
    fitter = model.purchase_model_
    checked = 0
    for row in scores.dropna(subset=["median_weeks_to_churn"]).head(5).itertuples():
        user = summary.loc[row.user_id]
        args = (user["frequency"], user["recency"], user["T"])
        week = int(row.median_weeks_to_churn)
        assert fitter.prob_no_purchases(week, *args) <= 0.5
        assert week == 1 or fitter.prob_no_purchases(week - 1, *args) > 0.5
        checked += 1
    for row in scores[scores["median_weeks_to_churn"].isna()].head(3).itertuples():
        user = summary.loc[row.user_id]
        assert fitter.prob_no_purchases(520, user["frequency"], user["recency"], user["T"]) > 0.5
    assert checked == 5


def test_score_takes_a_registered_model_by_its_id(
    small_store_path: Path, trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store_path = tmp_path / "registered.duckdb"
    shutil.copy(small_store_path, store_path)
    with Store(store_path) as store:
        registry.register(store, trained)
    by_id, by_folder = tmp_path / "by_id.csv", tmp_path / "by_folder.csv"
    common = ["score", "--db", str(store_path), "--as-of", AS_OF]
    assert main([*common, "--model", f"{trained.name}/gbm", "--out", str(by_id)]) == 0
    assert main([*common, "--model", str(trained / "gbm"), "--out", str(by_folder)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(by_id), pd.read_csv(by_folder))
    capsys.readouterr()
    assert main([*common, "--model", "nosuch/gbm", "--out", str(tmp_path / "none.csv")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: no model.json in nosuch/gbm, and no registered model has that id")
    assert "python -m core models list" in error
    assert not (tmp_path / "none.csv").exists()


def test_score_gbm_leaves_median_weeks_empty(small_store_path: Path, trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores.csv"
    assert (
        main(
            [
                "score",
                "--db",
                str(small_store_path),
                "--model",
                str(trained / "gbm"),
                "--as-of",
                AS_OF,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    scores = pd.read_csv(out)
    assert list(scores.columns) == SCORE_COLUMNS
    assert set(scores["user_id"]) == _population(_events(small_store_path), pd.Timestamp(AS_OF))
    assert scores["median_weeks_to_churn"].isna().all()
    assert scores["churn_prob"].between(0, 1).all()
    # the held-out users score the same as in predictions.csv (same model, same as-of)
    predictions = pd.read_csv(trained / "predictions.csv").query("model == 'gbm'")
    merged = predictions.merge(scores, on="user_id", suffixes=("", "_scored"))
    assert len(merged) == len(predictions)
    assert np.allclose(merged["churn_prob"], merged["churn_prob_scored"])


def test_bad_inputs_exit_2_with_one_line(
    small_store_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(small_store_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (
            ["score", "--db", db, "--model", str(empty), "--as-of", AS_OF, "--out", str(tmp_path / "s.csv")],
            "no model.json",
        ),
        (
            ["train", "--db", db, "--as-of", "01/03/2026", "--model", "gbm", "--out", str(tmp_path / "a")],
            "is not a date",
        ),
        (
            ["train", "--db", db, "--as-of", "2026-05-01", "--model", "gbm", "--out", str(tmp_path / "b")],
            "incomplete",
        ),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        error = capsys.readouterr().err.strip()
        assert message in error and len(error.splitlines()) == 1
    assert not (tmp_path / "s.csv").exists()
