"""Calibration of churn probabilities in `python -m core train` and `score` on the simulated store."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.cli import main
from core.evaluation import (
    IsotonicCalibrator,
    TemperatureCalibrator,
    expected_calibration_error,
    log_loss,
    logits_from_probabilities,
    reliability_table,
)
from core.models.btyd import BTYDModel, rfm_summary
from core.models.gbm import GBMModel
from core.models.sequence import SequenceModel
from core.models.training import choose_calibrator
from core.store import Store

AS_OF = "2026-03-01"
FIT_AS_OF_BACKTEST = "2025-12-01"
HORIZON = pd.Timedelta(days=90)
SEED = 5
MODELS = ("btyd", "gbm", "seq", "gru")


def _hash_share(text: str) -> float:
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _in_test(user_id: str, seed: int) -> bool:
    return _hash_share(f"{seed}:{user_id}") < 0.2


def _in_validation(user_id: str, seed: int) -> bool:
    return _hash_share(f"{seed}:validation:{user_id}") < 0.2


def _labels(path: Path, as_of: pd.Timestamp) -> pd.DataFrame:
    """churned and ltv_actual over [T, T + 90 days) of the users whose first event is before T,
    in plain pandas."""
    with Store(path, read_only=True) as store:
        events = store.query_df("SELECT user_id, event_time, revenue FROM events")
    first = events.groupby("user_id")["event_time"].min()
    users = sorted(first[first < as_of].index)
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
            "--epochs",
            "2",
            "--max-events",
            "8",
            *extra,
        ]
    )


def _raw(path: Path, folder: Path, name: str, as_of: str) -> pd.DataFrame:
    """The saved model's uncalibrated churn_prob and ltv_pred of every user at ``as_of``, straight
    from the model."""
    moment = pd.Timestamp(as_of).to_pydatetime()
    with Store(path, read_only=True) as store:
        if name == "btyd":
            model = BTYDModel.load(folder)
            predicted = model.predict(rfm_summary(store, moment, time_unit_days=model.time_unit_days))
        elif name in ("seq", "gru"):
            sequence = SequenceModel.load(folder, device="cpu")
            predicted = sequence.predict(store, dataclasses.replace(sequence.spec_, as_of=moment))
        else:
            model = GBMModel.load(folder)
            predicted = model.predict(store, dataclasses.replace(model.spec_, as_of=moment))
    return predicted[["user_id", "churn_prob", "ltv_pred"]]


def _calibrate(document: dict, p: np.ndarray) -> np.ndarray:
    if document["kind"] == "temperature":
        return TemperatureCalibrator.from_dict(document).transform(logits_from_probabilities(p))
    return IsotonicCalibrator.from_dict(document).transform(p)


@pytest.fixture(scope="module")
def trained(small_store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("calibrated")
    assert _train(small_store_path, out, "--model", "all", "--seed", str(SEED)) == 0
    return out


@pytest.fixture(scope="module")
def users(small_store_path: Path) -> dict[str, pd.DataFrame]:
    """Evaluation, validation and fitted users of the users split at T, by the documented hashes."""
    at_t = _labels(small_store_path, pd.Timestamp(AS_OF))
    test = at_t["user_id"].map(lambda user: _in_test(user, SEED))
    validation = ~test & at_t["user_id"].map(lambda user: _in_validation(user, SEED))
    return {"evaluation": at_t[test], "validation": at_t[validation], "fit": at_t[~test & ~validation]}


@pytest.mark.parametrize("name", MODELS)
def test_calibration_json_is_written_and_round_trips(trained: Path, name: str) -> None:
    document = json.loads((trained / name / "calibration.json").read_text(encoding="utf-8"))
    assert document["kind"] in ("isotonic", "temperature")
    calibrator_class = IsotonicCalibrator if document["kind"] == "isotonic" else TemperatureCalibrator
    assert calibrator_class.from_dict(document).to_dict() == document
    metrics = json.loads((trained / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["calibration"][name]["method"] == document["kind"]


def test_validation_fit_and_evaluation_users_are_disjoint(
    trained: Path, users: dict[str, pd.DataFrame]
) -> None:
    sets = {part: set(frame["user_id"]) for part, frame in users.items()}
    assert all(len(members) > 0 for members in sets.values())
    assert not sets["evaluation"] & sets["validation"]
    assert not sets["evaluation"] & sets["fit"]
    assert not sets["validation"] & sets["fit"]
    metrics = json.loads((trained / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["users"] == {
        "population": sum(len(members) for members in sets.values()),
        "fit": len(sets["fit"]),
        "validation": len(sets["validation"]),
        "evaluation": len(sets["evaluation"]),
    }
    for name in MODELS:
        model_json = json.loads((trained / name / "model.json").read_text(encoding="utf-8"))
        assert model_json["data_window"]["users"] == len(sets["fit"]), name
        calibration = json.loads((trained / name / "calibration.json").read_text(encoding="utf-8"))
        assert calibration["n"] == len(sets["validation"]) == metrics["calibration"][name]["validation_users"]
    predictions = pd.read_csv(trained / "predictions.csv")
    assert set(predictions["user_id"]) == sets["evaluation"]


@pytest.mark.parametrize("name", MODELS)
def test_calibrator_is_fitted_on_validation_users_and_lowers_their_log_loss(
    small_store_path: Path, trained: Path, users: dict[str, pd.DataFrame], name: str
) -> None:
    validation = users["validation"].merge(_raw(small_store_path, trained / name, name, AS_OF), on="user_id")
    assert len(validation) == len(users["validation"])
    p = validation["churn_prob"].to_numpy(dtype=float)
    y = validation["churned"].to_numpy(dtype=float)
    document = json.loads((trained / name / "calibration.json").read_text(encoding="utf-8"))
    # refitting the same kind on the validation users reproduces the saved calibrator
    if document["kind"] == "isotonic":
        refit = IsotonicCalibrator().fit(p, y)
        saved = IsotonicCalibrator.from_dict(document)
        assert np.allclose(refit.x_thresholds_, saved.x_thresholds_)
        assert np.allclose(refit.y_thresholds_, saved.y_thresholds_)
    else:
        refit = TemperatureCalibrator().fit(logits_from_probabilities(p), y)
        assert refit.temperature_ == pytest.approx(document["temperature"], rel=1e-9)
    assert log_loss(y, _calibrate(document, p)) <= log_loss(y, p) + 1e-12
    metrics = json.loads((trained / "metrics.json").read_text(encoding="utf-8"))
    candidates = metrics["calibration"][name]["candidates"]
    assert candidates[document["kind"]]["validation_log_loss"] == pytest.approx(
        log_loss(y, _calibrate(document, p))
    )
    # the saved kind is the one with the lower cross-validated log loss on the validation users
    other = "temperature" if document["kind"] == "isotonic" else "isotonic"
    assert (
        candidates[document["kind"]]["cross_validated_log_loss"]
        <= candidates[other]["cross_validated_log_loss"]
    )


@pytest.mark.parametrize("name", MODELS)
def test_predictions_are_the_calibrator_applied_to_raw_outputs(
    small_store_path: Path, trained: Path, name: str
) -> None:
    predictions = pd.read_csv(trained / "predictions.csv").query("model == @name")
    assert list(predictions.columns) == [
        "model",
        "user_id",
        "churn_prob",
        "ltv_pred",
        "churned",
        "ltv_actual",
    ]
    merged = predictions.merge(
        _raw(small_store_path, trained / name, name, AS_OF), on="user_id", suffixes=("", "_raw")
    )
    assert len(merged) == len(predictions)
    document = json.loads((trained / name / "calibration.json").read_text(encoding="utf-8"))
    raw = merged["churn_prob_raw"].to_numpy(dtype=float)
    assert np.allclose(merged["churn_prob"], _calibrate(document, raw), atol=1e-12)
    churned = merged["churned"].to_numpy(dtype=float)
    metrics = json.loads((trained / "metrics.json").read_text(encoding="utf-8"))
    report = metrics["calibration"][name]["evaluation"]
    calibrated = merged["churn_prob"].to_numpy(dtype=float)
    assert report["raw"]["ece"] == pytest.approx(expected_calibration_error(churned, raw))
    assert report["raw"]["log_loss"] == pytest.approx(log_loss(churned, raw))
    assert report["calibrated"]["ece"] == pytest.approx(expected_calibration_error(churned, calibrated))
    assert report["calibrated"]["log_loss"] == pytest.approx(log_loss(churned, calibrated))
    # the headline churn metrics are those of the calibrated probabilities
    assert metrics["models"][name]["churn"]["ece"] == pytest.approx(report["calibrated"]["ece"])
    brier = float(np.mean((calibrated - churned) ** 2))
    assert metrics["models"][name]["churn"]["brier"] == pytest.approx(brier)


@pytest.mark.parametrize("name", MODELS)
def test_reliability_csv_holds_raw_and_calibrated_tables(
    small_store_path: Path, trained: Path, name: str
) -> None:
    table = pd.read_csv(trained / name / "reliability.csv")
    predictions = pd.read_csv(trained / "predictions.csv").query("model == @name")
    merged = predictions.merge(
        _raw(small_store_path, trained / name, name, AS_OF), on="user_id", suffixes=("", "_raw")
    )
    churned = merged["churned"].to_numpy(dtype=float)
    for which, column in (("raw", "churn_prob_raw"), ("calibrated", "churn_prob")):
        rows = table[table["which"] == which].drop(columns="which").reset_index(drop=True)
        expected = reliability_table(churned, merged[column].to_numpy(dtype=float))
        assert list(rows.columns) == list(expected.columns)
        assert rows["users"].tolist() == expected["users"].tolist()
        assert rows["users"].sum() == len(predictions)
        assert rows["churned"].tolist() == expected["churned"].tolist()
        assert np.allclose(rows["mean_predicted"], expected["mean_predicted"], equal_nan=True)


@pytest.mark.parametrize("name", MODELS)
def test_score_applies_the_saved_calibration(
    small_store_path: Path, trained: Path, tmp_path: Path, name: str
) -> None:
    out = tmp_path / "scores.csv"
    argv = ["score", "--db", str(small_store_path), "--model", str(trained / name), "--as-of", AS_OF]
    assert main([*argv, "--out", str(out)]) == 0
    scores = pd.read_csv(out)
    predictions = pd.read_csv(trained / "predictions.csv").query("model == @name")
    merged = predictions.merge(scores, on="user_id", suffixes=("", "_scored"))
    assert len(merged) == len(predictions)
    assert np.allclose(merged["churn_prob"], merged["churn_prob_scored"], atol=1e-12)
    # a model folder without calibration.json scores the raw model output
    bare = tmp_path / "bare"
    bare.mkdir()
    for path in (trained / name).iterdir():
        if path.name not in ("calibration.json", "reliability.csv"):
            (bare / path.name).write_bytes(path.read_bytes())
    bare_out = tmp_path / "bare.csv"
    assert (
        main(
            [
                "score",
                "--db",
                str(small_store_path),
                "--model",
                str(bare),
                "--as-of",
                AS_OF,
                "--out",
                str(bare_out),
            ]
        )
        == 0
    )
    raw = pd.read_csv(bare_out).merge(_raw(small_store_path, trained / name, name, AS_OF), on="user_id")
    assert len(raw) == len(scores)
    assert np.allclose(raw["churn_prob_x"], raw["churn_prob_y"], atol=1e-12)


def test_backtest_calibrates_on_validation_users_at_the_fit_date(
    small_store_path: Path, tmp_path: Path
) -> None:
    assert _train(small_store_path, tmp_path, "--model", "btyd", "--split", "backtest") == 0
    at_fit = _labels(small_store_path, pd.Timestamp(FIT_AS_OF_BACKTEST))
    validation = at_fit[at_fit["user_id"].map(lambda user: _in_validation(user, 0))]
    metrics = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["users"]["validation"] == len(validation) > 0
    assert metrics["users"]["fit"] == len(at_fit) - len(validation)
    merged = validation.merge(
        _raw(small_store_path, tmp_path / "btyd", "btyd", FIT_AS_OF_BACKTEST), on="user_id"
    )
    assert len(merged) == len(validation)
    document = json.loads((tmp_path / "btyd" / "calibration.json").read_text(encoding="utf-8"))
    assert document["n"] == len(validation)
    p = merged["churn_prob"].to_numpy(dtype=float)
    y = merged["churned"].to_numpy(dtype=float)
    assert log_loss(y, _calibrate(document, p)) <= log_loss(y, p) + 1e-12
    if document["kind"] == "isotonic":
        assert np.allclose(IsotonicCalibrator().fit(p, y).y_thresholds_, document["y_thresholds"])
    else:
        refit = TemperatureCalibrator().fit(logits_from_probabilities(p), y)
        assert refit.temperature_ == pytest.approx(document["temperature"], rel=1e-9)


def test_choose_calibrator_picks_by_cross_validated_log_loss() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.01, 0.99, 4000)
    users = [f"u{i}" for i in range(len(p))]
    # churn is half as likely as predicted: a bias that one temperature cannot remove
    y = (rng.uniform(size=len(p)) < p / 2).astype(float)
    calibrator, candidates = choose_calibrator(users, p, y, seed=1)
    assert calibrator.kind == "isotonic"
    assert (
        candidates["isotonic"]["cross_validated_log_loss"]
        < candidates["temperature"]["cross_validated_log_loss"]
    )
    # well-calibrated but few users: isotonic's steps do not pay off out of fold
    small = p[:60]
    y_small = (rng.uniform(size=len(small)) < small).astype(float)
    calibrator, candidates = choose_calibrator(users[:60], small, y_small, seed=1)
    assert calibrator.kind == "temperature"
    assert (
        candidates["temperature"]["cross_validated_log_loss"]
        < candidates["isotonic"]["cross_validated_log_loss"]
    )
    # the folds depend on the user ids, not on the order of the rows
    order = rng.permutation(60)
    _, shuffled = choose_calibrator([users[i] for i in order], small[order], y_small[order], seed=1)
    for kind in candidates:
        assert shuffled[kind] == pytest.approx(candidates[kind])


def test_score_applies_an_isotonic_calibration(small_store_path: Path, trained: Path, tmp_path: Path) -> None:
    folder = tmp_path / "gbm"
    folder.mkdir()
    for path in (trained / "gbm").iterdir():
        if path.name != "calibration.json":
            (folder / path.name).write_bytes(path.read_bytes())
    document = {"kind": "isotonic", "n": 3, "x_thresholds": [0.2, 0.5, 0.8], "y_thresholds": [0.1, 0.1, 0.6]}
    (folder / "calibration.json").write_text(json.dumps(document), encoding="utf-8")
    out = tmp_path / "scores.csv"
    argv = [
        "score",
        "--db",
        str(small_store_path),
        "--model",
        str(folder),
        "--as-of",
        AS_OF,
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    scores = pd.read_csv(out).merge(_raw(small_store_path, folder, "gbm", AS_OF), on="user_id")
    expected = np.interp(scores["churn_prob_y"], [0.2, 0.5, 0.8], [0.1, 0.1, 0.6])
    assert np.allclose(scores["churn_prob_x"], expected, atol=1e-12)
    (folder / "calibration.json").write_text('{"kind": "platt"}', encoding="utf-8")
    assert main(argv) == 2


@pytest.mark.parametrize("name", MODELS)
def test_ltv_scale_is_fitted_on_validation_users_and_applied(
    small_store_path: Path, trained: Path, name: str, tmp_path: Path
) -> None:
    """factor = sum of actual / sum of raw predicted LTV over the validation users (pandas labels);
    predictions.csv and score both report raw LTV times the factor (to float32 precision: the
    sequence networks compute in float32, and batches of other sizes round differently)."""
    expected = _labels(small_store_path, pd.Timestamp(AS_OF))
    validation = expected[
        [not _in_test(user, SEED) and _in_validation(user, SEED) for user in expected["user_id"]]
    ]
    raw = _raw(small_store_path, trained / name, name, AS_OF)
    checked = validation.merge(raw, on="user_id")
    assert len(checked) == len(validation)
    document = json.loads((trained / name / "ltv_calibration.json").read_text(encoding="utf-8"))
    factor = checked["ltv_actual"].sum() / checked["ltv_pred"].sum()
    assert document["kind"] == "scale" and document["factor"] == pytest.approx(factor, rel=1e-6)
    assert document["validation_users"] == len(validation)
    predictions = (
        pd.read_csv(trained / "predictions.csv")
        .query("model == @name")
        .merge(raw, on="user_id", suffixes=("", "_raw"))
    )
    assert np.allclose(predictions["ltv_pred"], predictions["ltv_pred_raw"] * factor, rtol=1e-6)
    metrics = json.loads((trained / "metrics.json").read_text(encoding="utf-8"))
    report = metrics["calibration"][name]["ltv"]["evaluation"]
    assert report["mean_predicted_calibrated"] == pytest.approx(predictions["ltv_pred"].mean())
    assert metrics["models"][name]["ltv"]["mean_predicted"] == pytest.approx(predictions["ltv_pred"].mean())
    out = tmp_path / "scores.csv"
    assert (
        main(
            [
                "score",
                "--db",
                str(small_store_path),
                "--model",
                str(trained / name),
                "--as-of",
                AS_OF,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    scored = pd.read_csv(out).merge(raw, on="user_id", suffixes=("", "_raw"))
    assert np.allclose(scored["ltv_pred"], scored["ltv_pred_raw"] * factor, rtol=1e-6)
