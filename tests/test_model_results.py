"""Reading a run back (core/models/results.py) and one user's timeline and attributions
(core/models/timeline.py), against the run's CSV files and direct SQL."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from model_helpers import AS_OF, HORIZON_DAYS, build_model_store, train_run

from core.models import registry, results, timeline
from core.store import Store


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model_store(tmp_path_factory.mktemp("results") / "store.duckdb")


@pytest.fixture(scope="module")
def models(store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    run = train_run(store_path, tmp_path_factory.mktemp("runs") / "run-r")
    with Store(store_path) as store:
        registry.register(store, run)
        return registry.list_models(store)


def test_model_predictions_are_the_runs_rows_labelled_by_model_id(models: pd.DataFrame) -> None:
    predictions = results.model_predictions(models)
    raw = pd.read_csv(Path(models["run_dir"].iloc[0]) / "predictions.csv", dtype={"user_id": str})
    assert len(predictions) == len(raw)
    expected = raw.assign(model_id="run-r/" + raw["model"]).sort_values(["model_id", "user_id"])
    got = predictions.sort_values(["model_id", "user_id"])
    assert got["model_id"].tolist() == expected["model_id"].tolist()
    assert got["user_id"].tolist() == expected["user_id"].tolist()
    np.testing.assert_allclose(got["churn_prob"], expected["churn_prob"])
    only_gbm = results.model_predictions(models[models["model_name"] == "gbm"])
    assert set(only_gbm["model_id"]) == {"run-r/gbm"} and len(only_gbm) == (raw["model"] == "gbm").sum()


def test_formula_like_user_ids_come_back_as_written(tmp_path: Path) -> None:
    from core.export import to_safe_csv

    frame = pd.DataFrame(
        {
            "model": ["m", "m"],
            "user_id": ["=cmd", "'quoted"],
            "churn_prob": [0.1, 0.2],
            "ltv_pred": [1.0, 2.0],
            "churned": [0, 1],
            "ltv_actual": [0.0, 3.0],
        }
    )
    (tmp_path / "predictions.csv").write_text(to_safe_csv(frame))
    assert results.read_predictions(tmp_path)["user_id"].tolist() == ["=cmd", "'quoted"]


def test_model_reliability_reads_each_models_table(models: pd.DataFrame) -> None:
    table = results.model_reliability(models)
    for model in models.itertuples(index=False):
        expected = pd.read_csv(Path(model.path) / "reliability.csv")
        got = table[table["model_id"] == model.model_id]
        assert len(got) == len(expected)
        assert set(got["which"]) == {"raw", "calibrated"}
        np.testing.assert_allclose(got["users"], expected["users"])


def test_filter_scores_keeps_the_range_and_orders_by_churn() -> None:
    scores = pd.DataFrame(
        {
            "model_id": ["a", "a", "b", "b", "b"],
            "user_id": ["1", "2", "1", "2", "3"],
            "churn_prob": [0.9, 0.2, 0.5, 0.7, 0.1],
            "ltv_pred": [5.0, 50.0, 10.0, 1.0, 30.0],
            "churned": [1, 0, 1, 1, 0],
            "ltv_actual": [0.0, 40.0, 0.0, 0.0, 20.0],
        }
    )
    kept = results.filter_scores(scores, ["b"], (0.2, 0.8), min_ltv=5.0)
    assert kept[["model_id", "user_id"]].values.tolist() == [["b", "1"]]
    everyone = results.filter_scores(scores)
    assert everyone["churn_prob"].tolist() == [0.9, 0.7, 0.5, 0.2, 0.1]


def test_user_timeline_splits_events_at_the_as_of_date(store_path: Path, models: pd.DataFrame) -> None:
    user = results.model_predictions(models)["user_id"].iloc[0]
    as_of = pd.Timestamp(AS_OF)
    end = as_of + pd.Timedelta(days=HORIZON_DAYS)
    with Store(store_path, read_only=True) as store:
        events = timeline.user_timeline(store, user, as_of.to_pydatetime(), HORIZON_DAYS)
    with duckdb.connect(str(store_path), read_only=True) as connection:
        expected = connection.execute(
            "SELECT event_time, revenue FROM events WHERE user_id = ? ORDER BY event_time", [user]
        ).df()
    expected = expected[expected["event_time"] < end]
    assert len(events) == len(expected)
    assert (events["window"] == "before").sum() == (expected["event_time"] < as_of).sum()
    assert events["event_time"].is_monotonic_increasing
    assert events["revenue"].sum() == pytest.approx(expected["revenue"].fillna(0).sum())


def test_attributions_are_none_without_an_attributor_and_sorted_with_one(
    store_path: Path, models: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = models.loc[models["model_name"] == "gbm", "path"].iloc[0]
    as_of = pd.Timestamp(AS_OF).to_pydatetime()
    with Store(store_path, read_only=True) as store:
        assert timeline.attributions(path, store, "u0000001", as_of) is None
        assert not timeline.has_attributions("gbm")

        def fake(directory: Path, store: Store, user_id: str, moment) -> pd.DataFrame:
            return pd.DataFrame(
                {
                    "event_time": pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-03"]),
                    "event_name": ["view", "purchase", "app_open"],
                    "contribution": [0.01, -0.3, 0.2],
                    "extra": [1, 2, 3],
                }
            )

        monkeypatch.setitem(timeline._ATTRIBUTORS, "gbm", fake)
        table = timeline.attributions(path, store, "u0000001", as_of)
    assert list(table.columns) == list(timeline.ATTRIBUTION_COLUMNS)
    assert table["event_name"].tolist() == ["purchase", "app_open", "view"]
