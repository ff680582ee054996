"""The sequence models (core/models/sequence*.py): inputs against pandas, losses against numpy,
masking, no leakage past T, save/load without pickle, determinism, and the train/score path."""

from __future__ import annotations

import datetime as dt
import json
import math
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from core.experiments.ltv import score_at_instants
from core.models.features import feature_vocabulary
from core.models.sequence import SequenceModel, _bucketed_batches
from core.models.sequence_config import SequenceConfig
from core.models.sequence_net import (
    NetConfig,
    SequenceNet,
    hazard_loss,
    survival_curve,
    ziln_expected_value,
    ziln_loss,
)
from core.models.sequences import (
    EVENT_OFFSET,
    ITEM_OFFSET,
    build_inputs,
    build_inputs_at_instants,
    horizon_weeks,
    sequence_vocabulary,
)
from core.models.spec import ModelSpec
from core.models.training import median_weeks_from_survival, score_model, train_models
from core.store import Store

AS_OF = pd.Timestamp("2026-03-01 06:30:00")
MAX_EVENTS = 6
TINY = SequenceConfig(
    encoder="seq", max_events=MAX_EVENTS, hidden=16, layers=1, heads=2, batch_size=64, max_epochs=2
)


@pytest.fixture(scope="module")
def events(small_store_path: Path) -> pd.DataFrame:
    with Store(small_store_path, read_only=True) as store:
        return store.query_df("SELECT user_id, event_time, event_name, item_id, revenue FROM events")


@pytest.fixture(scope="module")
def inputs(small_store_path: Path):
    spec = ModelSpec(AS_OF.to_pydatetime())
    with Store(small_store_path, read_only=True) as store:
        vocabulary = sequence_vocabulary(store, spec)
        built = build_inputs(
            store, spec, None, vocabulary, feature_vocabulary(store, spec), MAX_EVENTS, with_labels=True
        )
    return spec, vocabulary, built


def test_histories_match_pandas(inputs, events: pd.DataFrame) -> None:
    """The last N events before T, oldest first, with their fields, as a plain pandas walk finds them."""
    _, vocabulary, built = inputs
    before = events[events["event_time"] < AS_OF].copy()
    before["revenue"] = before["revenue"].fillna(0.0).clip(lower=0.0)
    before = before.sort_values(
        ["user_id", "event_time", "event_name", "item_id", "revenue"], na_position="first"
    )
    before["gap"] = before.groupby("user_id")["event_time"].diff().dt.total_seconds() / 3600
    names = {name: index + EVENT_OFFSET for index, name in enumerate(vocabulary.event_names)}
    items = {item: index + ITEM_OFFSET for index, item in enumerate(vocabulary.items)}
    checked = 0
    for row, user in enumerate(built.user_ids[:120]):
        history = before[before["user_id"] == user].tail(MAX_EVENTS)
        assert built.lengths[row] == len(history)
        assert (built.events[row, len(history) + 1 :] == 0).all()
        positions = np.arange(1, len(history) + 1)
        expected_names = [names.get(name, 1) for name in history["event_name"]]
        assert built.events[row, positions].tolist() == expected_names
        expected_items = [1 if pd.isna(item) else items.get(item, 2) for item in history["item_id"]]
        assert built.items[row, positions].tolist() == expected_items
        hours = (AS_OF - history["event_time"]).dt.total_seconds().to_numpy() / 3600
        np.testing.assert_allclose(built.numeric[row, positions, 3], np.log1p(hours), rtol=1e-5)
        np.testing.assert_allclose(
            built.numeric[row, positions, 0], np.log1p(history["revenue"].to_numpy()), rtol=1e-5
        )
        gaps = history["gap"].to_numpy()
        np.testing.assert_allclose(built.numeric[row, positions, 2], np.log1p(np.nan_to_num(gaps)), rtol=1e-5)
        assert built.numeric[row, positions, 4].tolist() == np.isnan(gaps).astype(float).tolist()
        assert built.weekday[row, positions].tolist() == history["event_time"].dt.day_of_week.tolist()
        assert built.hour[row, positions].tolist() == history["event_time"].dt.hour.tolist()
        checked += len(history) > 0
    assert checked > 100


def test_weeks_active_match_pandas(inputs, events: pd.DataFrame) -> None:
    spec, _, built = inputs
    weeks = horizon_weeks(spec.horizon_days)
    window = events[(events["event_time"] >= AS_OF) & (events["event_time"] < AS_OF + pd.Timedelta(days=90))]
    last = window.groupby("user_id")["event_time"].max()
    expected = [
        0 if user not in last.index else min(weeks, int((last[user] - AS_OF) // pd.Timedelta(days=7)) + 1)
        for user in built.user_ids
    ]
    assert built.weeks_active.tolist() == expected
    assert ((built.weeks_active == 0) == (built.churned == 1)).all()
    assert 0 < built.churned.mean() < 1


def test_ziln_loss_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    logit, mu = rng.normal(size=50), rng.normal(size=50)
    sigma = np.exp(rng.normal(size=50) * 0.3)
    value = np.where(rng.random(50) < 0.4, np.exp(rng.normal(size=50)), 0.0)
    p = 1 / (1 + np.exp(-logit))
    positive = value > 0
    expected = -np.where(positive, np.log(p), np.log(1 - p))
    log_density = -(
        np.log(value[positive])
        + np.log(sigma[positive] * np.sqrt(2 * np.pi))
        + (np.log(value[positive]) - mu[positive]) ** 2 / (2 * sigma[positive] ** 2)
    )
    expected[positive] -= log_density
    as_tensor = [torch.tensor(array) for array in (logit, mu, sigma, value)]
    assert float(ziln_loss(*as_tensor)) == pytest.approx(expected.mean(), rel=1e-10)
    mean = float(ziln_expected_value(*as_tensor[:3])[0])
    assert mean == pytest.approx(p[0] * math.exp(mu[0] + sigma[0] ** 2 / 2), rel=1e-10)


def test_hazard_loss_and_survival_match_numpy() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(20, 5))
    weeks_active = rng.integers(0, 6, size=20)
    hazard = 1 / (1 + np.exp(-logits))
    total = 0.0
    for row, k in enumerate(weeks_active):
        total -= np.log(1 - hazard[row, :k]).sum()
        if k < 5:
            total -= np.log(hazard[row, k])
    loss = hazard_loss(torch.tensor(logits), torch.tensor(weeks_active))
    assert float(loss) == pytest.approx(total / 20, rel=1e-10)
    curve = survival_curve(torch.tensor(logits)).numpy()
    np.testing.assert_allclose(curve, np.cumprod(1 - hazard, axis=1), rtol=1e-12)
    weeks = median_weeks_from_survival(np.array([[0.9, 0.6, 0.4], [0.3, 0.2, 0.1], [0.9, 0.8, 0.7]]))
    assert weeks[:2].tolist() == [2.0, 0.0] and np.isnan(weeks[2])


@pytest.mark.parametrize("encoder", ["seq", "gru"])
def test_padding_is_masked(encoder: str) -> None:
    """Values written into padded positions change no output."""
    torch.manual_seed(0)
    config = NetConfig(encoder, 10, 12, 5, 4, 3, 8, hidden=16, layers=1, heads=2)
    net = SequenceNet(config).eval()
    lengths = torch.tensor([3, 8, 0])
    width = 9
    mask = torch.arange(width)[None, :] <= lengths[:, None]
    batch = {
        "events": torch.randint(2, 10, (3, width)) * mask,
        "items": torch.randint(3, 12, (3, width)) * mask,
        "weekday": torch.randint(0, 7, (3, width)) * mask,
        "hour": torch.randint(0, 24, (3, width)) * mask,
        "numeric": torch.randn(3, width, 5) * mask[..., None],
        "mask": mask,
        "lengths": lengths,
        "static": torch.randn(3, 4),
    }
    noisy = dict(batch)
    noisy["events"] = torch.where(mask, batch["events"], torch.randint(2, 10, (3, width)))
    noisy["numeric"] = torch.where(mask[..., None], batch["numeric"], torch.randn(3, width, 5) * 50)
    with torch.no_grad():
        clean, dirty = net(batch), net(noisy)
    for name in clean:
        torch.testing.assert_close(clean[name], dirty[name])


def test_bucketed_batches_cover_every_row_once() -> None:
    lengths = np.random.default_rng(2).integers(0, 40, size=1000)
    batches = _bucketed_batches(lengths, 64, np.random.default_rng(0))
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(1000))
    spreads = [lengths[batch].max() - lengths[batch].min() for batch in batches]
    assert np.mean(spreads) < 6


def test_no_input_changes_with_events_at_or_after_as_of(
    small_store_path: Path, tmp_path: Path, inputs
) -> None:
    spec, vocabulary, original = inputs
    as_of = AS_OF.to_pydatetime()
    changed = tmp_path / "changed.duckdb"
    shutil.copy(small_store_path, changed)
    with Store(changed) as store:
        with store.transaction() as cursor:
            cursor.execute(
                "UPDATE events SET event_name = 'purchase', revenue = 999 WHERE event_time >= ?", [as_of]
            )
            cursor.execute(
                "INSERT INTO events (user_id, event_time, event_name, item_id, revenue, user_key) "
                "SELECT user_id, ?, 'brand_new', 'new_item', 5, user_key FROM events LIMIT 50",
                [as_of],
            )
        after = build_inputs(store, spec, None, vocabulary, feature_vocabulary(store, spec), MAX_EVENTS)
    for name in ("user_ids", "lengths", "events", "items", "weekday", "hour", "numeric", "static"):
        np.testing.assert_array_equal(getattr(after, name), getattr(original, name), err_msg=name)


def _fit(path: Path, config: SequenceConfig) -> SequenceModel:
    with Store(path, read_only=True) as store:
        return SequenceModel(config).fit(store, ModelSpec(AS_OF.to_pydatetime()))


@pytest.fixture(scope="module")
def fitted(small_store_path: Path) -> SequenceModel:
    return _fit(small_store_path, TINY)


def test_same_seed_same_model_other_seed_other_model(small_store_path: Path, fitted: SequenceModel) -> None:
    again = _fit(small_store_path, TINY)
    for name, tensor in fitted.net_.state_dict().items():
        torch.testing.assert_close(tensor, again.net_.state_dict()[name], rtol=0, atol=0)
    other = _fit(small_store_path, SequenceConfig(**{**TINY.__dict__, "seed": 1}))
    assert not torch.equal(fitted.net_.churn_head.weight, other.net_.churn_head.weight)
    assert fitted.metrics_["epochs_run"] <= TINY.max_epochs


def test_save_and_load_round_trip_without_pickle(
    small_store_path: Path, fitted: SequenceModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fitted.save(tmp_path / "seq")
    document = json.loads((tmp_path / "seq" / "model.json").read_text())
    assert document["kind"] == "seq" and document["weights"] == "weights.safetensors"

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model folder must load without unpickling")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    loaded = SequenceModel.load(tmp_path / "seq", device="cpu")
    spec = ModelSpec(AS_OF.to_pydatetime())
    with Store(small_store_path, read_only=True) as store:
        before = fitted.predict(store, spec, survival=True)
        after = loaded.predict(store, spec, survival=True)
        sharded = SequenceModel.load(tmp_path / "seq", device="cpu")
        sharded.config = SequenceConfig(**{**TINY.__dict__, "score_shard_users": 100, "score_batch_size": 33})
        in_shards = sharded.predict(store, spec, survival=True)
    pd.testing.assert_frame_equal(before, after)
    pd.testing.assert_frame_equal(before, in_shards, check_exact=False, rtol=1e-5)
    assert before["user_id"].is_monotonic_increasing
    curve = before[[f"survival_w{week}" for week in range(13)]].to_numpy()
    assert (np.diff(curve, axis=1) <= 1e-7).all()


def test_scoring_restricted_to_users_equals_their_rows_of_a_full_run(
    small_store_path: Path, fitted: SequenceModel
) -> None:
    spec = ModelSpec(AS_OF.to_pydatetime())
    with Store(small_store_path, read_only=True) as store:
        full = fitted.predict(store, spec, survival=True)
        chosen = [*full["user_id"].iloc[::9], "nobody-has-this-id"]
        restricted = fitted.predict(store, spec, survival=True, users=chosen)
    expected = full[full["user_id"].isin(chosen)].reset_index(drop=True)
    assert restricted["user_id"].tolist() == sorted(chosen[:-1])
    pd.testing.assert_frame_equal(restricted, expected, check_exact=False, rtol=1e-5, atol=1e-6)


def test_inputs_at_instants_equal_inputs_built_at_each_instant(small_store_path: Path, inputs) -> None:
    """One pair of queries builds every user's inputs at their own T: each row must equal the
    user's row of ``build_inputs`` at that T, and a user asked at two instants keeps two
    histories (their events up to each T, the hours to each T)."""
    spec, vocabulary, _ = inputs
    moments = [AS_OF - pd.Timedelta(days=40), AS_OF]
    with Store(small_store_path, read_only=True) as store:
        features = feature_vocabulary(store, spec)
        per_moment = {
            moment: build_inputs(
                store, ModelSpec(moment.to_pydatetime()), None, vocabulary, features, MAX_EVENTS
            )
            for moment in moments
        }
        early_users = per_moment[moments[0]].user_ids[::7].tolist()
        late_users = per_moment[moments[1]].user_ids[::11].tolist()
        instants = pd.DataFrame(
            {
                "user_id": [*early_users, *late_users, *early_users[:5], "nobody-has-this-id"],
                "as_of": [moments[0]] * len(early_users) + [moments[1]] * (len(late_users) + 6),
            }
        )
        at = build_inputs_at_instants(store, spec, instants, vocabulary, features, MAX_EVENTS)
    assert len(at) == len(early_users) + len(set(late_users) | set(early_users[:5]))
    twice = set(early_users[:5])
    assert sum(user in twice for user in at.user_ids) == 10
    for row, (user, moment) in enumerate(zip(at.user_ids, at.extra["as_of"], strict=True)):
        built = per_moment[pd.Timestamp(moment)]
        other = int(np.flatnonzero(built.user_ids == user)[0])
        assert at.lengths[row] == built.lengths[other]
        for name in ("events", "items", "weekday", "hour", "numeric"):
            np.testing.assert_array_equal(getattr(at, name)[row], getattr(built, name)[other], err_msg=name)
        np.testing.assert_allclose(at.static[row], built.static[other], rtol=1e-12, equal_nan=True)


def test_train_and_score_sequence_models(small_store_path: Path, tmp_path: Path) -> None:
    """train_models fits seq and gru beside a baseline, writes their folders, and score reads them."""
    spec = ModelSpec(dt.datetime(2026, 3, 1))
    with Store(small_store_path, read_only=True) as store:
        table = train_models(
            store, spec, ["seq", "gru"], "users", 0, tmp_path, sequence_config=TINY, device="cpu"
        )
        scores = score_model(store, tmp_path / "gru", dt.datetime(2026, 3, 1), device="cpu")
        # Sequence models have no one-pass path: score_at_instants runs them once per instant.
        moments = [pd.Timestamp("2026-02-01"), pd.Timestamp("2026-03-01")]
        chosen = scores["user_id"].iloc[:20].tolist()
        instants = pd.DataFrame({"user_id": chosen, "as_of": [moments[i % 2] for i in range(20)]})
        at_instants = score_at_instants(store, tmp_path / "gru", instants, ("churn_prob", "ltv_pred"))
        for moment, rows in at_instants[at_instants["status"] == "scored"].groupby("as_of"):
            full = score_model(store, tmp_path / "gru", moment.to_pydatetime(), device="cpu").set_index(
                "user_id"
            )
            np.testing.assert_allclose(rows["ltv_pred"], full.loc[rows["user_id"], "ltv_pred"], rtol=1e-5)
            np.testing.assert_allclose(rows["churn_prob"], full.loc[rows["user_id"], "churn_prob"], rtol=1e-5)
        assert (at_instants["status"] == "scored").sum() > 10
        before_anyone = instants.assign(as_of=pd.Timestamp("2000-01-01"))
        nobody = score_at_instants(store, tmp_path / "gru", before_anyone, ("churn_prob", "ltv_pred"))
        assert (nobody["status"] == "not_in_population").all() and nobody["churn_prob"].isna().all()
    assert sorted(table["model"]) == ["gru", "seq"]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["device"] == {"requested": "cpu", "used": "cpu"}
    assert metrics["sequence_config"]["max_events"] == MAX_EVENTS
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert set(predictions["model"]) == {"seq", "gru"}
    assert predictions["churn_prob"].between(0, 1).all() and (predictions["ltv_pred"] >= 0).all()
    assert (tmp_path / "gru" / "weights.safetensors").is_file()
    assert (tmp_path / "gru" / "calibration.json").is_file()
    assert list(scores.columns) == ["user_id", "churn_prob", "ltv_pred", "median_weeks_to_churn"]
    weeks = scores["median_weeks_to_churn"].dropna()
    assert len(weeks) > 0 and weeks.between(0, 12).all()


def test_integrated_gradients_add_up_and_name_the_users_events(
    small_store_path: Path, fitted: SequenceModel, tmp_path: Path, events: pd.DataFrame
) -> None:
    """Completeness: contributions sum to f(x) - f(baseline); one row per event the model read."""
    from core.models.attribution import integrated_gradients
    from core.models.timeline import attributions

    spec = ModelSpec(AS_OF.to_pydatetime())
    fitted.save(tmp_path / "seq")
    with Store(small_store_path, read_only=True) as store:
        built = build_inputs(store, spec, None, fitted.vocabulary_, fitted.feature_vocabulary_, MAX_EVENTS)
        for row in np.flatnonzero(built.lengths > 2)[:5]:
            contributions, at_x, at_baseline = integrated_gradients(fitted, built, int(row), steps=256)
            assert len(contributions) == built.lengths[row]
            assert contributions.sum() == pytest.approx(at_x - at_baseline, abs=2e-3)
        user = str(built.user_ids[np.flatnonzero(built.lengths == MAX_EVENTS)[0]])
        table = attributions(tmp_path / "seq", store, user, AS_OF.to_pydatetime())
    expected = events[(events["user_id"] == user) & (events["event_time"] < AS_OF)]
    expected = expected.sort_values("event_time").tail(MAX_EVENTS)
    assert list(table.columns) == ["event_time", "event_name", "contribution"]
    assert sorted(table["event_time"]) == sorted(expected["event_time"])
    assert table["contribution"].abs().is_monotonic_decreasing


def test_one_users_survival_curve_is_their_row_of_the_scores(
    small_store_path: Path, fitted: SequenceModel, tmp_path: Path
) -> None:
    from core.figures_models import user_survival_figure
    from core.models.timeline import user_survival

    spec = ModelSpec(AS_OF.to_pydatetime())
    fitted.save(tmp_path / "seq")
    with Store(small_store_path, read_only=True) as store:
        scores = fitted.predict(store, spec, survival=True)
        user = str(scores["user_id"].iloc[7])
        curve = user_survival(tmp_path / "seq", store, user, AS_OF.to_pydatetime())
    expected = scores.loc[scores["user_id"] == user, [f"survival_w{week}" for week in range(13)]]
    assert curve["week"].tolist() == list(range(13))
    np.testing.assert_allclose(curve["survival"], expected.to_numpy()[0], rtol=1e-5)
    figure = user_survival_figure(curve, 90)
    assert list(figure.data[0].y) == pytest.approx(curve["survival"].tolist())
