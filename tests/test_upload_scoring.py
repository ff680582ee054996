"""Scoring an uploaded events file (core/models/upload_scoring.py, core/models/drift.py,
core/models/training_profile.py and ``python -m core score --events``).

Expected values come from an independent path: the same events ingested into a store file and
scored there, the simulated store itself, or plain pandas over the file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from upload_helpers import AS_OF, export_events, export_users, train_models_at_as_of

from core.cli import main
from core.errors import TenureError
from core.ingest import BadRowsError, ingest_file
from core.models.drift import MIN_EVENTS, MIN_HISTORY_DAYS
from core.models.training import score_model
from core.models.training_profile import PROFILE_KEY, load_training_profile
from core.models.upload_scoring import flags_path, model_folders, score_upload
from core.store import Store

T = pd.Timestamp(AS_OF)
SCORE_COLUMNS = ["user_id", "churn_prob", "ltv_pred", "median_weeks_to_churn"]


@pytest.fixture(scope="module")
def trained_models(small_store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_models_at_as_of(small_store_path, tmp_path_factory.mktemp("upload_models"))


@pytest.fixture(scope="module")
def events_csv(small_store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_events(small_store_path, tmp_path_factory.mktemp("upload_files") / "events.csv")


@pytest.fixture(scope="module")
def users_csv(small_store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_users(small_store_path, tmp_path_factory.mktemp("upload_users") / "users.csv")


def _read_events(path: Path) -> pd.DataFrame:
    events = pd.read_csv(path, dtype={"user_id": str})
    events["event_time"] = pd.to_datetime(events["event_time"])
    return events


def _assert_same_scores(actual: pd.DataFrame, expected: pd.DataFrame, rtol: float = 1e-9) -> None:
    assert list(actual.columns) == SCORE_COLUMNS
    assert actual["user_id"].tolist() == expected["user_id"].tolist()
    for column in ("churn_prob", "ltv_pred"):
        np.testing.assert_allclose(
            actual[column].to_numpy(float), expected[column].to_numpy(float), rtol=rtol
        )
    assert (
        actual["median_weeks_to_churn"].fillna(-1).tolist()
        == expected["median_weeks_to_churn"].fillna(-1).tolist()
    )


def _write(path: Path, rows: list[tuple]) -> Path:
    frame = pd.DataFrame(rows, columns=["user_id", "event_time", "event_name", "revenue"])
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("kind", ["btyd", "gbm", "seq", "gru"])
@pytest.mark.parametrize("batch_users", [50_000, 97])
def test_upload_scores_equal_scores_of_the_same_events_ingested_into_a_store(
    kind: str, batch_users: int, trained_models: Path, events_csv: Path, users_csv: Path, tmp_path: Path
) -> None:
    store_path = tmp_path / "ingested.duckdb"
    with Store(store_path) as store:
        ingest_file(store, events_csv, table="events")
        ingest_file(store, users_csv, table="users")
        expected = score_model(store, trained_models / kind, T.to_pydatetime())
    report = score_upload(
        events_csv, trained_models / kind, T.to_pydatetime(), users_path=users_csv, batch_users=batch_users
    )
    assert report.batches == (1 if batch_users == 50_000 else -(-len(expected) // batch_users))
    # The sequence networks compute in float32: other batches pad to other lengths and round
    # differently in the last digits.
    _assert_same_scores(report.scores, expected, rtol=1e-5 if kind in ("seq", "gru") else 1e-9)


def test_upload_scores_equal_the_simulated_stores_own_scores(
    trained_models: Path, events_csv: Path, users_csv: Path, small_store_path: Path
) -> None:
    with Store(small_store_path, read_only=True) as store:
        expected = score_model(store, trained_models / "gbm", T.to_pydatetime())
    report = score_upload(events_csv, trained_models / "gbm", T.to_pydatetime(), users_path=users_csv)
    _assert_same_scores(report.scores, expected)
    assert report.drift.missing_attributes == ()


def test_gbm_without_users_file_reports_the_attributes_it_lacks(
    trained_models: Path, events_csv: Path
) -> None:
    vocabulary = json.loads((trained_models / "gbm" / "model.json").read_text())["features"]["vocabulary"]
    report = score_upload(events_csv, trained_models / "gbm", T.to_pydatetime())
    assert set(report.drift.missing_attributes) == {column for column, _ in vocabulary["attributes"]}
    assert any("users file" in line for line in report.drift.lines())
    btyd = score_upload(events_csv, trained_models / "btyd", T.to_pydatetime())
    assert btyd.drift.missing_attributes == ()


def test_bad_rows_are_named_by_line_and_column(trained_models: Path, tmp_path: Path) -> None:
    path = _write(
        tmp_path / "bad.csv",
        [
            ("a", "2026-01-01 10:00:00", "view", 0),
            ("a", "2026-01-05 10:00:00", "view", 0),
            ("b", "not a time", "view", 0),
            ("b", "2026-02-01 10:00:00", "purchase", 5),
            (None, "2026-02-02 10:00:00", "view", 0),
            ("c", "2026-03-02 10:00:00", "view", 0),
        ],
    )
    with pytest.raises(BadRowsError) as caught:
        score_upload(path, trained_models / "btyd", T.to_pydatetime())
    message = str(caught.value)
    assert "2 bad rows, nothing scored" in message
    assert "line 4, event_time" in message and "line 6, user_id" in message
    assert sorted(caught.value.bad_rows["line"].unique().tolist()) == [4, 6]
    rejects = tmp_path / "rejects.csv"
    report = score_upload(
        path, trained_models / "btyd", T.to_pydatetime(), skip_bad_rows=True, rejects_path=rejects
    )
    assert report.events.rows_rejected == 2 and report.events.rows_accepted == 4
    written = pd.read_csv(rejects)
    assert sorted(written["line"].tolist()) == [4, 6]
    assert report.scores["user_id"].tolist() == ["a", "b"]


def test_size_limits_name_the_limit_and_what_to_do(trained_models: Path, events_csv: Path) -> None:
    rows = len(_read_events(events_csv))
    with pytest.raises(TenureError) as caught:
        score_upload(events_csv, trained_models / "btyd", T.to_pydatetime(), max_events=rows - 1)
    assert f"{rows:,} events" in caught.value.message and "MAX_SCORE_EVENTS" in caught.value.message
    assert "python -m core ingest" in caught.value.hint
    with pytest.raises(TenureError) as caught:
        score_upload(events_csv, trained_models / "btyd", T.to_pydatetime(), max_bytes=1024)
    assert "MAX_UPLOAD_BYTES" in caught.value.message and "split the file" in caught.value.hint


def test_as_of_after_the_files_last_event_is_refused(trained_models: Path, events_csv: Path) -> None:
    last = _read_events(events_csv)["event_time"].max()
    with pytest.raises(TenureError, match=r"after the last event of events\.csv"):
        score_upload(events_csv, trained_models / "btyd", (last + pd.Timedelta(days=1)).to_pydatetime())


def test_without_an_as_of_the_file_is_scored_at_the_day_of_its_last_event(
    trained_models: Path, events_csv: Path
) -> None:
    last_day = _read_events(events_csv)["event_time"].max().normalize()
    report = score_upload(events_csv, trained_models / "gbm", None)
    assert pd.Timestamp(report.as_of) == last_day
    expected = score_upload(events_csv, trained_models / "gbm", last_day.to_pydatetime())
    pd.testing.assert_frame_equal(report.scores, expected.scores)
    assert last_day.isoformat() in report.summary()


def test_without_an_as_of_a_file_of_one_day_is_refused_with_the_reason(
    trained_models: Path, tmp_path: Path
) -> None:
    one_day = tmp_path / "one_day.csv"
    one_day.write_text("user_id,event_time,event_name\nu1,2026-03-02T10:00:00,app_open\n", encoding="utf-8")
    with pytest.raises(TenureError, match=r"no event before the as-of date 2026-03-02T00:00:00"):
        score_upload(one_day, trained_models / "btyd", None)


def test_flags_match_a_pandas_count_of_each_users_history(trained_models: Path, events_csv: Path) -> None:
    events = _read_events(events_csv)
    before = events[events["event_time"] < T]
    per_user = before.groupby("user_id")["event_time"].agg(["count", "min"])
    days = (T - per_user["min"]).dt.total_seconds() / 86_400
    expected = {(user, "few_events") for user in per_user.index[per_user["count"] < MIN_EVENTS]}
    expected |= {(user, "short_history") for user in per_user.index[days < MIN_HISTORY_DAYS]}
    report = score_upload(events_csv, trained_models / "btyd", T.to_pydatetime())
    assert set(zip(report.flags["user_id"], report.flags["flag"], strict=True)) == expected
    assert expected, "the simulated store should hold users with little history"
    assert report.flagged_users == len({user for user, _ in expected})
    table = report.scores_with_flags()
    flagged = table.loc[table["flag"] != "", "user_id"]
    assert set(flagged) == {user for user, _ in expected}


def test_training_profile_matches_pandas_on_the_training_store(
    trained_models: Path, small_store_path: Path
) -> None:
    with Store(small_store_path, read_only=True) as store:
        events = store.query_df("SELECT user_id, event_time, event_name FROM events")
    profile = json.loads((trained_models / "btyd" / "model.json").read_text())[PROFILE_KEY]
    before = events[events["event_time"] < T]
    assert profile["event_names"] == before["event_name"].value_counts().to_dict()
    assert pd.Timestamp(profile["first_event"]) == before["event_time"].min()
    per_user = before.groupby("user_id")["event_time"].agg(["count", "min"])
    days = (T - per_user["min"]).dt.total_seconds() / 86_400
    assert profile["users"] == len(per_user)
    assert profile["history_events"]["max"] == per_user["count"].max()
    assert profile["history_days"]["p50"] == pytest.approx(np.quantile(days, 0.5))
    assert profile["history_events"]["p95"] == pytest.approx(np.quantile(per_user["count"], 0.95))


def test_out_of_range_data_is_reported(trained_models: Path, events_csv: Path, tmp_path: Path) -> None:
    profile = load_training_profile(trained_models / "gbm")
    events = _read_events(events_csv)
    extra = pd.DataFrame(
        {
            "user_id": ["old-1", "old-1", "new-1", "new-1", "new-1"],
            "event_time": pd.to_datetime(
                [
                    "2020-01-01 08:00",
                    "2026-02-20 08:00",
                    "2026-02-27 08:00",
                    "2026-02-27 09:00",
                    "2026-02-28 08:00",
                ]
            ),
            "event_name": ["view", "teleport", "teleport", "teleport", "view"],
            "revenue": [0.0] * 5,
        }
    )
    upload = pd.concat([events, extra], ignore_index=True)
    path = tmp_path / "drifted.csv"
    upload.to_csv(path, index=False)
    report = score_upload(path, trained_models / "gbm", T.to_pydatetime())
    drift = report.drift
    assert drift.events_after_as_of == int((upload["event_time"] >= T).sum())
    assert drift.events_before_training == int((upload["event_time"] < profile.first_event).sum()) == 1
    assert drift.unknown_events.to_dict("records") == [{"event_name": "teleport", "events": 3}]
    before = upload[upload["event_time"] < T].groupby("user_id")["event_time"].agg(["count", "min"])
    days = (T - before["min"]).dt.total_seconds() / 86_400
    checks = {check.measure: check for check in drift.history}
    assert checks["history_days"].users_longer == int((days > profile.history_days["max"]).sum()) == 1
    assert checks["history_events"].users_shorter == int(
        (before["count"] < profile.history_events["min"]).sum()
    )
    lines = " ".join(drift.lines())
    assert "teleport (3)" in lines and "before the model's training window" in lines
    assert "more days of history than any training user" in lines


def test_model_folders_from_before_the_profile_fall_back(trained_models: Path, tmp_path: Path) -> None:
    old = tmp_path / "run"
    shutil.copytree(trained_models, old)
    for kind in ("btyd", "gbm"):
        document = json.loads((old / kind / "model.json").read_text())
        document.pop(PROFILE_KEY)
        (old / kind / "model.json").write_text(json.dumps(document))
    gbm = load_training_profile(old / "gbm")
    vocabulary = json.loads((old / "gbm" / "model.json").read_text())["features"]["vocabulary"]
    assert gbm.event_names == tuple(vocabulary["event_names"]) and gbm.as_of == T
    metrics = json.loads((old / "metrics.json").read_text())
    btyd = load_training_profile(old / "btyd")
    assert btyd.event_names is None and btyd.as_of == T
    assert btyd.first_event == pd.Timestamp(metrics["data_window"]["first_event"])
    assert btyd.history_days == {} and btyd.attributes == ()
    assert model_folders(old) == [old / "btyd", old / "gbm", old / "gru", old / "seq"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cli_score_events_writes_the_four_columns_and_a_flags_file(
    trained_models: Path,
    events_csv: Path,
    users_csv: Path,
    small_store_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store_copy = tmp_path / "store.duckdb"
    shutil.copy(small_store_path, store_copy)
    monkeypatch.setenv("TENURE_DB", str(store_copy))
    before = _sha256(store_copy)
    out = tmp_path / "out" / "scores.csv"
    args = ["score", "--events", str(events_csv), "--users", str(users_csv), "--as-of", AS_OF]
    code = main([*args, "--model", str(trained_models / "gbm"), "--out", str(out)])
    assert code == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out)
    scores = pd.read_csv(out, dtype={"user_id": str})
    assert list(scores.columns) == SCORE_COLUMNS
    with Store(store_copy, read_only=True) as store:
        expected = score_model(store, trained_models / "gbm", T.to_pydatetime())
        events_in_store = store.query_one("SELECT count(*) FROM events")[0]
    np.testing.assert_allclose(scores["churn_prob"], expected["churn_prob"], rtol=1e-9)
    flags = pd.read_csv(flags_path(out))
    assert list(flags.columns) == ["user_id", "flag", "reason"]
    warning = [
        line for line in captured.err.splitlines() if line.startswith("warning:") and "flags.csv" in line
    ]
    assert len(warning) == 1 and f"{flags['user_id'].nunique():,} users" in warning[0]
    assert _sha256(store_copy) == before
    assert events_in_store == len(_read_events(events_csv))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--db", "x.duckdb"], "--db is not used with --events"),
        (["--as-of", "2030-01-01"], "after the last event"),
    ],
)
def test_cli_score_events_bad_input_exits_2(
    extra: list[str],
    message: str,
    trained_models: Path,
    events_csv: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "scores.csv"
    args = ["score", "--events", str(events_csv), "--model", str(trained_models / "btyd"), "--as-of", AS_OF]
    assert main([*args, "--out", str(out), *extra]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0]
    assert not out.exists()


def test_cli_score_events_bad_rows_exit_2_naming_the_line(
    trained_models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(
        tmp_path / "events.csv",
        [
            ("a", "2026-01-01 10:00:00", "view", 0),
            ("a", "2026-02-01", "view", "lots"),
            ("a", "2026-03-05", "view", 0),
        ],
    )
    args = ["score", "--events", str(path), "--model", str(trained_models / "btyd"), "--as-of", AS_OF]
    assert main([*args, "--out", str(tmp_path / "scores.csv")]) == 2
    assert "line 3, revenue" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "scores.csv"), "--skip-bad-rows"]) == 0
    assert pd.read_csv(tmp_path / "events.rejects.csv")["line"].tolist() == [3]
    assert pd.read_csv(tmp_path / "scores.csv")["user_id"].tolist() == ["a"]


def test_cli_flags_only_with_events_exit_2(
    trained_models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "score",
        "--model",
        str(trained_models / "btyd"),
        "--as-of",
        AS_OF,
        "--out",
        str(tmp_path / "s.csv"),
    ]
    assert main([*args, "--users", "u.csv", "--skip-bad-rows"]) == 2
    assert "--skip-bad-rows, --users are only used with --events" in capsys.readouterr().err


def test_scoring_does_not_write_beside_the_model(trained_models: Path, events_csv: Path) -> None:
    listing = sorted(str(path) for path in trained_models.rglob("*"))
    score_upload(events_csv, trained_models / "btyd", dt.datetime(2026, 3, 1))
    assert sorted(str(path) for path in trained_models.rglob("*")) == listing
