"""The Score page (pages/models/score.py) under AppTest: no model, a scored file, a refused file.

AppTest cannot upload files, so the page's scripted path (``st.session_state["score_events_path"]``)
stands in for the uploader; the expected numbers come from pandas over the same file and from a
direct DuckDB count of the store the app has open.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
from pathlib import Path

import pandas as pd
import pytest
from app_helpers import APP, TIMEOUT, count, metric_value, open_page, table_with
from streamlit.testing.v1 import AppTest
from upload_helpers import AS_OF, export_events, train_models_at_as_of

from core.models import registry
from core.store import Store

PAGE = "pages/models/score.py"
OTHER_FOLDER = "(another folder)"


@pytest.fixture(scope="module")
def trained_models(small_store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_models_at_as_of(small_store_path, tmp_path_factory.mktemp("page_models"))


@pytest.fixture(scope="module")
def events_csv(small_store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_events(small_store_path, tmp_path_factory.mktemp("page_files") / "events.csv")


def _choose_model(app: AppTest, folder: Path) -> AppTest:
    app.selectbox(key="score_model_choice").select(OTHER_FOLDER).run()
    app.text_input(key="score_model_path").input(str(folder)).run()
    assert not app.exception, app.exception
    return app


def test_page_without_a_model_says_how_to_train_one(app: AppTest, tiny_store: Path, tmp_path: Path) -> None:
    open_page(app, PAGE)
    assert app.title[0].value == "Score"
    _choose_model(app, tmp_path)
    info = " ".join(box.value for box in app.info)
    data_end = count(tiny_store, "SELECT max(event_time) FROM events")
    as_of = (data_end - dt.timedelta(days=90)).date().isoformat()
    assert f"`{tmp_path}` holds no model.json" in info
    assert f"python -m core train --as-of {as_of} " in info and "Models page" in info
    assert not app.button


def test_registered_models_are_offered_under_their_registry_ids(
    small_store_path: Path, trained_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "registered.duckdb"
    shutil.copy(small_store_path, path)
    with Store(path) as store:
        ids = registry.register(store, trained_models)
    monkeypatch.setenv("TENURE_DB", str(path))
    at = open_page(AppTest.from_file(APP, default_timeout=TIMEOUT), PAGE)
    assert not at.exception, at.exception
    chooser = at.selectbox(key="score_model_choice")
    assert sorted(chooser.options[: len(ids)]) == sorted(ids)  # as the Models page names them
    first = chooser.options[0].split("/")[1]
    assert chooser.value == str(trained_models.resolve() / first)


def test_page_scores_a_file_and_leaves_the_store_untouched(
    app: AppTest, tiny_store: Path, trained_models: Path, events_csv: Path
) -> None:
    open_page(app, PAGE)
    history_before = count(tiny_store, "SELECT count(*) FROM load_history")
    events_before = count(tiny_store, "SELECT count(*) FROM events")
    digest_before = hashlib.sha256(tiny_store.read_bytes()).hexdigest()
    _choose_model(app, trained_models / "btyd")
    app.session_state["score_events_path"] = str(events_csv)
    app.run()
    app.date_input(key="score_as_of").set_value(pd.Timestamp(AS_OF).date()).run()
    app.button(key="score_run").click().run()
    assert not app.exception, app.exception
    assert not app.error, [box.value for box in app.error]
    events = pd.read_csv(events_csv, parse_dates=["event_time"])
    before = events[events["event_time"] < pd.Timestamp(AS_OF)]
    per_user = before.groupby("user_id")["event_time"].agg(["count", "min"])
    history_days = (pd.Timestamp(AS_OF) - per_user["min"]).dt.total_seconds() / 86_400
    flagged = set(per_user.index[(per_user["count"] < 2) | (history_days < 7)])
    assert metric_value(app, "Users scored") == f"{len(per_user):,}"
    assert metric_value(app, "Flagged users") == f"{len(flagged):,}"
    ignored = int((events["event_time"] >= pd.Timestamp(AS_OF)).sum())
    assert metric_value(app, "Events ignored (on or after as-of)") == f"{ignored:,}"
    table = table_with(app, "user_id", "churn_prob", "ltv_pred", "median_weeks_to_churn", "flag")
    shown = [frame.value for frame in app.dataframe if "flag" in frame.value.columns]
    everyone = max(shown, key=len)
    assert set(everyone.loc[everyone["flag"] != "", "user_id"]) == flagged
    assert len(table) <= len(everyone)
    at_risk = shown[0]
    assert at_risk["churn_prob"].is_monotonic_decreasing
    assert at_risk["churn_prob"].iloc[0] == everyone["churn_prob"].max()
    assert any(
        "median_weeks_to_churn: the first whole week by which BG/NBD" in text.value for text in app.caption
    )
    assert count(tiny_store, "SELECT count(*) FROM load_history") == history_before
    assert count(tiny_store, "SELECT count(*) FROM events") == events_before
    assert hashlib.sha256(tiny_store.read_bytes()).hexdigest() == digest_before


def test_page_scores_at_the_files_last_day_when_no_date_is_chosen(
    app: AppTest, trained_models: Path, events_csv: Path
) -> None:
    open_page(app, PAGE)
    _choose_model(app, trained_models / "btyd")
    app.session_state["score_events_path"] = str(events_csv)
    app.run()
    assert app.date_input(key="score_as_of").value is None
    app.button(key="score_run").click().run()
    assert not app.exception, app.exception
    events = pd.read_csv(events_csv, parse_dates=["event_time"])
    last_day = events["event_time"].max().normalize()
    assert last_day.isoformat() in app.success[0].value
    scored = events.loc[events["event_time"] < last_day, "user_id"].nunique()
    assert metric_value(app, "Users scored") == f"{scored:,}"
    ignored = int((events["event_time"] >= last_day).sum())
    assert metric_value(app, "Events ignored (on or after as-of)") == f"{ignored:,}"


def _refused(app: AppTest, model: Path, path: Path, text: str) -> str:
    """Score a file the page must refuse; returns its error boxes' text."""
    path.write_text(text, encoding="utf-8")
    open_page(app, PAGE)
    _choose_model(app, model)
    app.session_state["score_events_path"] = str(path)
    app.run()
    app.button(key="score_run").click().run()
    assert not app.exception, app.exception
    return " ".join(box.value for box in app.error)


def test_page_shows_a_refused_file_as_an_error(app: AppTest, trained_models: Path, tmp_path: Path) -> None:
    errors = _refused(
        app,
        trained_models / "btyd",
        tmp_path / "bad.csv",
        "user_id,event_time,event_name\na,2026-01-01 10:00:00,view\nb,never,view\n",
    )
    assert "line 3, event_time" in errors and "nothing scored" in errors
    assert "Skip bad rows" in errors and "--skip-bad-rows" not in errors, (
        "the page's own choice, not the CLI flag"
    )
    assert table_with(app, "line", "column", "reason")["line"].tolist() == [3]


def test_a_file_without_a_user_column_points_at_the_column_mapping(
    app: AppTest, trained_models: Path, tmp_path: Path
) -> None:
    errors = _refused(
        app,
        trained_models / "btyd",
        tmp_path / "no_user.csv",
        "event_time,event_name\n2026-01-01 10:00:00,view\n",
    )
    assert "no_user.csv has no column for events.user_id" in errors
    assert "'Column mapping'" in errors and "--map" not in errors and "--set" not in errors
