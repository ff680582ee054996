"""Gradient-boosted trees baseline (core/models/gbm.py) on the simulated store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata

from core.errors import TenureError
from core.models.gbm import PREDICTION_COLUMNS, GBMConfig, GBMModel
from core.models.labels import labels
from core.models.spec import ModelSpec
from core.population import Filters
from core.store import Store

AS_OF = pd.Timestamp("2026-03-01 06:30:00").to_pydatetime()
TINY = GBMConfig(num_trees=30, num_leaves=7, min_data_in_leaf=10, seed=7, num_threads=1)
TRAIN = Filters(segments=(("platform", ("android",)),))
HELD_OUT = Filters(segments=(("platform", ("ios", "web")),))


def _roc_auc(churned: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney: P(score of a churned user > score of a retained one), ties counted half."""
    ranks = rankdata(score)
    positives = churned.sum()
    negatives = len(churned) - positives
    return float((ranks[churned].sum() - positives * (positives + 1) / 2) / (positives * negatives))


@pytest.fixture(scope="module")
def fitted(small_store_path: Path) -> GBMModel:
    with Store(small_store_path, read_only=True) as store:
        return GBMModel(TINY).fit(store, ModelSpec(AS_OF), TRAIN)


def test_predictions_beat_chance_on_held_out_users(small_store_path: Path, fitted: GBMModel) -> None:
    spec = ModelSpec(AS_OF)
    with Store(small_store_path, read_only=True) as store:
        predictions = fitted.predict(store, spec, HELD_OUT)
        actual = labels(store, spec, HELD_OUT)
        trained_on = set(labels(store, spec, TRAIN)["user_id"])
    assert list(predictions.columns) == list(PREDICTION_COLUMNS)
    assert not trained_on & set(predictions["user_id"])
    frame = predictions.merge(actual, on="user_id", validate="one_to_one")
    assert len(frame) == len(actual) == len(predictions) > 100
    assert predictions["churn_prob"].between(0, 1).all() and (predictions["ltv_pred"] >= 0).all()
    churned = frame["churned"].to_numpy(dtype=bool)
    assert _roc_auc(churned, frame["churn_prob"].to_numpy()) > 0.6
    # Payers over the horizon are rare (about 5%): their predicted LTV should still rank higher.
    payers = frame["ltv_actual"].to_numpy() > 0
    assert payers.sum() >= 5
    assert _roc_auc(payers, frame["ltv_pred"].to_numpy()) > 0.6


def test_roc_auc_formula() -> None:
    churned = np.array([True, False, True, False])
    assert _roc_auc(churned, np.array([0.9, 0.1, 0.8, 0.2])) == 1.0
    assert _roc_auc(churned, np.array([0.1, 0.9, 0.2, 0.8])) == 0.0
    assert _roc_auc(churned, np.array([0.5, 0.5, 0.9, 0.1])) == 0.875


def test_save_load_round_trip_is_text_only(small_store_path: Path, fitted: GBMModel, tmp_path: Path) -> None:
    fitted.save(tmp_path / "model")
    assert sorted(path.name for path in (tmp_path / "model").iterdir()) == [
        "churn.txt",
        "ltv.txt",
        "model.json",
    ]
    for path in (tmp_path / "model").iterdir():
        text = path.read_bytes()
        assert not text.startswith(b"\x80") and b"\x00" not in text
        text.decode("utf-8")
    document = json.loads((tmp_path / "model" / "model.json").read_text(encoding="utf-8"))
    assert document["kind"] == "gbm" and document["config"]["num_trees"] == 30
    assert document["spec"]["as_of"] == AS_OF.isoformat() and document["spec"]["horizon_days"] == 90
    assert (
        "lightgbm" in document["versions"] and document["data_window"]["filters"] == TRAIN.to_query_params()
    )
    assert "view" in document["features"]["vocabulary"]["event_names"]
    assert (tmp_path / "model" / "churn.txt").read_text(encoding="utf-8").startswith("tree")
    loaded = GBMModel.load(tmp_path / "model")
    later = ModelSpec(pd.Timestamp("2026-04-01").to_pydatetime())
    with Store(small_store_path, read_only=True) as store:
        for spec in (None, later):
            pd.testing.assert_frame_equal(
                loaded.predict(store, spec), fitted.predict(store, spec), check_exact=True
            )
    assert loaded.feature_names_ == fitted.feature_names_ and loaded.spec_ == fitted.spec_


def test_fit_is_deterministic_by_seed(small_store_path: Path, fitted: GBMModel) -> None:
    config = GBMConfig(num_trees=30, num_leaves=7, min_data_in_leaf=10, seed=7, feature_fraction=0.7)
    with Store(small_store_path, read_only=True) as store:
        first = GBMModel(config).fit(store, ModelSpec(AS_OF), TRAIN)
        second = GBMModel(config).fit(store, ModelSpec(AS_OF), TRAIN)
        other = GBMModel(GBMConfig(**{**config.__dict__, "seed": 8})).fit(store, ModelSpec(AS_OF), TRAIN)
        predictions = first.predict(store)
        pd.testing.assert_frame_equal(second.predict(store), predictions, check_exact=True)
        assert not other.predict(store).equals(predictions)
    assert first.churn_booster_.model_to_string() == second.churn_booster_.model_to_string()


def test_scoring_refuses_another_horizon_and_bad_folders(
    small_store_path: Path, fitted: GBMModel, tmp_path: Path
) -> None:
    with Store(small_store_path, read_only=True) as store, pytest.raises(TenureError, match="horizon"):
        fitted.predict(store, ModelSpec(AS_OF, horizon_days=30))
    with pytest.raises(TenureError, match=r"model\.json"):
        GBMModel.load(tmp_path)
    with pytest.raises(TenureError, match="objective"):
        GBMConfig(ltv_objective="poisson_log1p")
    with pytest.raises(TenureError):
        GBMConfig(num_trees=0)
