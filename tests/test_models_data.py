"""Model spec, labels and features (core/models/spec.py, labels.py, features.py) against pandas."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.errors import TenureError
from core.models.features import (
    BASE_FEATURES,
    behaviour_features,
    behaviour_features_at_instants,
    feature_vocabulary,
)
from core.models.labels import LABEL_COLUMNS, labels
from core.models.spec import ModelSpec
from core.population import Filters, StartSpec
from core.store import Store

# The simulated store runs from 2025-07-01 to 2026-06-30: T + 90 days is inside it.
AS_OF = pd.Timestamp("2026-03-01 06:30:00")
DAY = pd.Timedelta(days=1)


@pytest.fixture(scope="module")
def store_events(small_store_path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    with Store(small_store_path, read_only=True) as store:
        events = store.query_df("SELECT user_id, event_time, event_name, revenue FROM events")
        users = store.query_df("SELECT * FROM users")
        assert store.data_end() > AS_OF + 90 * DAY
    events["revenue"] = events["revenue"].fillna(0.0)
    return events, users


def _population(events: pd.DataFrame, spec: ModelSpec) -> pd.Series:
    """User ids whose first event is before T (and, with a lookback, active in [T - L, T))."""
    as_of = pd.Timestamp(spec.as_of)
    starts = events.groupby("user_id")["event_time"].min()
    users = starts[starts < as_of].index
    if spec.lookback_days is not None:
        active = events[
            (events["event_time"] >= as_of - spec.lookback_days * DAY)
            & (events["event_time"] < as_of)
            & (events["event_name"].isin(spec.activity_events) if spec.activity_events else True)
        ]
        users = users.intersection(pd.Index(active["user_id"].unique()))
    return pd.Series(sorted(users), name="user_id")


def _pandas_labels(events: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    as_of, end = pd.Timestamp(spec.as_of), pd.Timestamp(spec.horizon_end)
    window = events[(events["event_time"] >= as_of) & (events["event_time"] < end)]
    activity = window[window["event_name"].isin(spec.activity_events)] if spec.activity_events else window
    users = _population(events, spec)
    revenue = window.groupby("user_id")["revenue"].sum()
    return pd.DataFrame(
        {
            "user_id": users,
            "churned": ~users.isin(set(activity["user_id"])),
            "ltv_actual": users.map(revenue).fillna(0.0).astype(float),
        }
    )


@pytest.mark.parametrize("activity_events", [(), ("purchase",), ("add_to_cart", "purchase")])
@pytest.mark.parametrize("lookback_days", [None, 30])
def test_labels_match_pandas(
    small_store_path: Path, store_events: tuple[pd.DataFrame, pd.DataFrame], activity_events, lookback_days
) -> None:
    events, _ = store_events
    spec = ModelSpec(AS_OF.to_pydatetime(), activity_events=activity_events, lookback_days=lookback_days)
    with Store(small_store_path, read_only=True) as store:
        result = labels(store, spec)
    expected = _pandas_labels(events, spec)
    assert list(result.columns) == list(LABEL_COLUMNS)
    assert result["churned"].any() and not result["churned"].all()
    assert (result["ltv_actual"] > 0).any()
    pd.testing.assert_frame_equal(result, expected, check_dtype=False, check_exact=False, rtol=1e-9)


def test_labels_keep_only_filtered_users(small_store_path: Path, store_events) -> None:
    events, users = store_events
    spec = ModelSpec(AS_OF.to_pydatetime())
    with Store(small_store_path, read_only=True) as store:
        result = labels(store, spec, Filters(segments=(("platform", ("ios",)),)))
    ios = set(users.loc[users["platform"] == "ios", "user_id"])
    expected = _pandas_labels(events, spec)
    expected = expected[expected["user_id"].isin(ios)].reset_index(drop=True)
    assert 0 < len(result) < len(_population(events, spec))
    pd.testing.assert_frame_equal(result, expected, check_dtype=False, check_exact=False, rtol=1e-9)


def test_labels_refuse_an_unfinished_horizon(small_store_path: Path) -> None:
    with Store(small_store_path, read_only=True) as store:
        data_end = store.data_end()
        spec = ModelSpec((data_end - 30 * DAY).to_pydatetime())
        with pytest.raises(TenureError, match="incomplete") as error:
            labels(store, spec)
        assert spec.horizon_end.isoformat() in str(error.value)
        assert data_end.isoformat() in str(error.value)
        assert len(labels(store, spec, allow_incomplete=True)) > 0
        labels(store, ModelSpec((data_end - 90 * DAY).to_pydatetime()))


def _pandas_features(events: pd.DataFrame, users: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    as_of = pd.Timestamp(spec.as_of)
    population = _population(events, spec)
    starts = events.groupby("user_id")["event_time"].min()
    before = events[(events["event_time"] < as_of) & events["user_id"].isin(set(population))].copy()
    before["day"] = before["event_time"].dt.floor("D")
    rows = []
    for user_id, group in before.groupby("user_id"):
        row = {"user_id": user_id, "days_since_start": (as_of - starts[user_id]) / DAY}
        row["days_since_last_event"] = (as_of - group["event_time"].max()) / DAY
        for days in (7, 30, 90):
            recent = group[group["event_time"] >= as_of - days * DAY]
            row[f"events_{days}d"] = len(recent)
            row[f"active_days_{days}d"] = recent["day"].nunique()
            if days in (30, 90):
                row[f"revenue_{days}d"] = recent["revenue"].sum()
        row["events_total"] = len(group)
        active_days = sorted(group["day"].unique())
        row["active_days_total"] = len(active_days)
        row["revenue_total"] = group["revenue"].sum()
        row["purchases"] = int((group["revenue"] > 0).sum())
        gaps = np.diff(np.array(active_days, dtype="datetime64[us]")) / np.timedelta64(1, "D")
        row["mean_gap_days"] = gaps.mean() if len(gaps) else np.nan
        row["distinct_events"] = group["event_name"].nunique()
        for name in ("view", "purchase"):
            row[f"share__{name}"] = (group["event_name"] == name).mean()
        platform = users.loc[users["user_id"] == user_id, "platform"]
        row["attr__platform__ios"] = float(len(platform) > 0 and platform.iloc[0] == "ios")
        rows.append(row)
    return pd.DataFrame(rows).sort_values("user_id").reset_index(drop=True)


@pytest.mark.parametrize("lookback_days", [None, 60])
def test_features_match_pandas(small_store_path: Path, store_events, lookback_days) -> None:
    events, users = store_events
    spec = ModelSpec(AS_OF.to_pydatetime(), lookback_days=lookback_days)
    with Store(small_store_path, read_only=True) as store:
        features = behaviour_features(store, spec)
        vocabulary = feature_vocabulary(store, spec)
    counts = events[events["event_time"] < AS_OF]["event_name"].value_counts()
    assert list(vocabulary.event_names) == sorted(counts.index, key=lambda name: (-counts[name], name))
    assert list(features.columns) == ["user_id", *vocabulary.feature_names()]
    expected = _pandas_features(events, users, spec)
    assert list(features["user_id"]) == list(_population(events, spec))
    assert (expected["purchases"] > 0).any() and expected["mean_gap_days"].notna().any()
    assert (expected["events_7d"] > 0).any() and (expected["revenue_30d"] > 0).any()
    for column in expected.columns:
        pd.testing.assert_series_equal(
            features[column], expected[column], check_dtype=False, check_exact=False, rtol=1e-9, obj=column
        )
    assert set(BASE_FEATURES) < set(features.columns)


@pytest.mark.parametrize("lookback_days", [None, 21])
def test_features_at_instants_equal_one_run_per_instant(small_store_path: Path, lookback_days) -> None:
    """One query over users at their own as-of gives every feature a run at each as-of gives,
    leaves out the same users (no start before T, or inactive in the lookback), and keeps a user
    asked at two instants apart."""
    instants_at = [pd.Timestamp("2026-02-03 00:00"), pd.Timestamp("2026-02-17 06:30"), AS_OF]
    spec = ModelSpec(AS_OF.to_pydatetime(), lookback_days=lookback_days)
    with Store(small_store_path, read_only=True) as store:
        vocabulary = feature_vocabulary(store, spec)
        ids = store.query_df("SELECT DISTINCT user_id FROM events ORDER BY user_id")["user_id"].tolist()
        rows = [(user, instants_at[index % 3]) for index, user in enumerate(ids)]
        rows += [(user, instants_at[0]) for user in ids[1:60:3]]  # also asked at another instant
        rows.append(("nobody-has-this-id", instants_at[1]))
        instants = pd.DataFrame(rows, columns=["user_id", "as_of"])
        batch = behaviour_features_at_instants(store, spec, vocabulary, instants)
        expected = []
        for moment, group in instants.groupby("as_of"):
            at = dataclasses.replace(spec, as_of=moment.to_pydatetime())
            one = behaviour_features(store, at, vocabulary=vocabulary, users=group["user_id"].tolist())
            expected.append(one.assign(as_of=moment))
    expected = pd.concat(expected).sort_values(["as_of", "user_id"], ignore_index=True)
    assert len(expected) > 100 and len(batch) == len(expected)
    assert list(batch.columns) == ["user_id", "as_of", *vocabulary.feature_names()]
    pd.testing.assert_frame_equal(
        batch, expected[batch.columns], check_dtype=False, check_exact=False, rtol=1e-12
    )


def test_changing_events_at_or_after_as_of_changes_no_feature(small_store_path: Path, tmp_path: Path) -> None:
    """The no-leakage test: edit, delete and add events at and after T; features are unchanged."""
    as_of = AS_OF.to_pydatetime()
    spec = ModelSpec(as_of, lookback_days=45, activity_events=("view", "purchase"))
    changed = tmp_path / "changed.duckdb"
    shutil.copy(small_store_path, changed)
    with Store(small_store_path, read_only=True) as store:
        original = behaviour_features(store, spec)
        original_labels = labels(store, spec)
        users = original["user_id"].tolist()
    with Store(changed) as store:
        with store.transaction() as cursor:
            cursor.execute(
                "UPDATE events SET event_name = 'purchase', revenue = 999 "
                "WHERE event_time >= ? AND hash(user_id) % 3 = 0",
                [as_of],
            )
            cursor.execute("DELETE FROM events WHERE event_time >= ? AND hash(user_id) % 3 = 1", [as_of])
            added = [
                (user_id, as_of + offset, name, revenue)
                for user_id in users[::5]
                for offset, name, revenue in [
                    (dt.timedelta(0), "purchase", 50.0),
                    (dt.timedelta(0), "brand_new_event", None),
                    (dt.timedelta(days=3), "view", None),
                ]
            ]
            added.append(("newcomer", as_of, "purchase", 10.0))
            cursor.executemany(
                "INSERT INTO events (user_id, event_time, event_name, revenue, user_key) "
                "VALUES (?, ?, ?, ?, hash(?))",
                [(*row, row[0]) for row in added],
            )
        at_as_of = sum(row[1] == as_of for row in added)
        assert store.query_one("SELECT count(*) FROM events WHERE event_time = ?", [as_of])[0] >= at_as_of > 0
        after = behaviour_features(store, spec)
        after_labels = labels(store, spec, allow_incomplete=True)
    pd.testing.assert_frame_equal(after, original)
    assert not after_labels.equals(original_labels)


def test_model_spec_validates_and_round_trips() -> None:
    spec = ModelSpec(
        dt.datetime(2026, 3, 1, 6, 30),
        horizon_days=30,
        activity_events=("purchase",),
        lookback_days=14,
        start=StartSpec("event", "app_open"),
    )
    assert spec.horizon_end == dt.datetime(2026, 3, 31, 6, 30)
    assert spec.lookback_start == dt.datetime(2026, 2, 15, 6, 30)
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    assert ModelSpec("2026-03-01T07:30:00+01:00").as_of == dt.datetime(2026, 3, 1, 6, 30)
    assert ModelSpec(dt.date(2026, 3, 1)).horizon_days == 90
    for bad in (
        {"horizon_days": 0},
        {"horizon_days": 1.5},
        {"lookback_days": -1},
        {"activity_events": "purchase"},
        {"activity_events": ("",)},
    ):
        with pytest.raises(TenureError):
            ModelSpec(dt.datetime(2026, 3, 1), **bad)
    with pytest.raises(TenureError, match="as_of"):
        ModelSpec("not a date")
