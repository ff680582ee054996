"""The Models page (pages/models/models.py) in AppTest: empty, with a registered run, training in
the background, and registering and removing models. Expected values come from the run's files
and direct SQL on the store file."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from app_helpers import APP, TIMEOUT, count, open_page, table_with
from model_helpers import AS_OF, TINY_SEQUENCE, build_model_store, copy_store, train_run
from streamlit.testing.v1 import AppTest

from core.ingest import ingest_file
from core.models import registry
from core.store import Store

PAGE = "pages/models/models.py"
WAIT_SECONDS = 120


@pytest.fixture(scope="module")
def source_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model_store(tmp_path_factory.mktemp("models_page") / "source.duckdb")


@pytest.fixture(scope="module")
def registered(source_store: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A store copy with one registered run of btyd and a tiny GBM."""
    folder = tmp_path_factory.mktemp("registered")
    path = copy_store(source_store, folder / "store.duckdb")
    run = train_run(path, folder / "models" / "run-p")
    with Store(path) as store:
        registry.register(store, run)
    return path, run


def _app(path: Path, monkeypatch: pytest.MonkeyPatch, models_dir: Path) -> AppTest:
    monkeypatch.setenv("TENURE_DB", str(path))
    monkeypatch.setenv("TENURE_MODELS_DIR", str(models_dir))
    return AppTest.from_file(APP, default_timeout=TIMEOUT)


def _texts(at: AppTest) -> str:
    return " ".join(element.value for element in [*at.info, *at.success, *at.error, *at.warning])


def test_renders_with_no_models(app: AppTest) -> None:
    at = open_page(app, PAGE)
    assert at.title[0].value == "Models"
    assert "No models are registered" in _texts(at)
    assert [button.label for button in at.button if button.label == "Train"] == ["Train"]
    assert {box.label for box in at.checkbox} >= {"BG/NBD + Gamma-Gamma (btyd)", "Gradient boosting (gbm)"}


def test_compares_registered_models(
    registered: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path, run = registered
    at = open_page(_app(path, monkeypatch, tmp_path), PAGE)
    assert at.multiselect(key="models_compare").value == ["run-p/btyd", "run-p/gbm"]
    metrics = json.loads((run / "metrics.json").read_text())
    table = table_with(at, "metric", "run-p/btyd", "run-p/gbm").set_index("metric")
    for name in ("btyd", "gbm"):
        assert table.loc["churn_roc_auc", f"run-p/{name}"] == pytest.approx(
            metrics["models"][name]["churn"]["roc_auc"]
        )
        assert table.loc["ltv_mae", f"run-p/{name}"] == pytest.approx(metrics["models"][name]["ltv"]["mae"])
    predictions = pd.read_csv(run / "predictions.csv", dtype={"user_id": str})
    scores = table_with(at, "model_id", "user_id", "churn_prob", "ltv_pred")
    assert len(scores) == len(predictions)
    assert scores["churn_prob"].is_monotonic_decreasing
    registry_table = table_with(at, "model_id", "kind", "current_data")
    assert registry_table["current_data"].all() and len(registry_table) == count(
        path, "SELECT count(*) FROM model_registry"
    )

    at.slider(key="models_scores_churn").set_value((0.5, 1.0)).run()
    at.number_input(key="models_scores_min_ltv").set_value(1.0).run()
    at.multiselect(key="models_scores_models").set_value(["run-p/gbm"]).run()
    assert not at.exception, at.exception
    filtered = table_with(at, "model_id", "user_id", "churn_prob", "ltv_pred")
    expected = predictions[
        (predictions["model"] == "gbm")
        & predictions["churn_prob"].between(0.5, 1.0)
        & (predictions["ltv_pred"] >= 1.0)
    ]
    assert sorted(filtered["user_id"]) == sorted(expected["user_id"])

    at.selectbox(key="models_timeline_model").set_value("run-p/gbm").run()
    user = at.selectbox(key="models_timeline_user").value
    assert user in set(filtered["user_id"])
    events = table_with(at, "event_time", "event_name", "revenue", "window")
    end = pd.Timestamp(AS_OF) + pd.Timedelta(days=90)
    assert len(events) == count(
        path, "SELECT count(*) FROM events WHERE user_id = ? AND event_time < ?", [user, end]
    )
    assert (events["window"] == "before").sum() == count(
        path, "SELECT count(*) FROM events WHERE user_id = ? AND event_time < ?", [user, pd.Timestamp(AS_OF)]
    )
    assert "available for sequence models" in _texts(at)


def test_models_trained_before_the_latest_load_are_flagged(
    registered: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source, _ = registered
    path = copy_store(source, tmp_path / "loaded-since.duckdb")
    at = open_page(_app(path, monkeypatch, tmp_path), PAGE)  # a copy holds the same data
    assert at.multiselect(key="models_compare").options == ["run-p/btyd", "run-p/gbm"]
    assert table_with(at, "model_id", "kind", "current_data")["current_data"].all()
    extra = tmp_path / "later.csv"
    extra.write_text("user_id,event_time,event_name\nlate-user,2030-01-01T00:00:00,app_open\n")
    with Store(path) as store:
        ingest_file(store, extra, table="events")
    at = open_page(_app(path, monkeypatch, tmp_path), PAGE)
    assert not at.exception, at.exception
    chooser = at.multiselect(key="models_compare")
    assert chooser.value == ["run-p/btyd", "run-p/gbm"]
    assert chooser.options == [f"run-p/{name} ({registry.STALE_NOTE})" for name in ("btyd", "gbm")]
    assert any(
        text.value.startswith(f"2 of the chosen models were {registry.STALE_NOTE}") for text in at.caption
    )
    assert not table_with(at, "model_id", "kind", "current_data")["current_data"].any()


def test_a_load_on_the_data_page_says_which_models_it_outdates(
    registered: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source, _ = registered
    path = copy_store(source, tmp_path / "data-page.duckdb")
    at = open_page(_app(path, monkeypatch, tmp_path), "pages/data/data.py")
    upload = b"user_id,event_time,event_name\nlate-user,2030-01-01T00:00:00,app_open\n"
    at.file_uploader(key="data_upload").set_value(("later.csv", upload, "text/csv")).run()
    at.selectbox(key="data_table").select("events").run()
    at.button(key="data_load").click().run()
    assert not at.exception, at.exception
    assert [box.value for box in at.success] == ["events: 1 row loaded from later.csv"]
    assert [box.value for box in at.info if registry.STALE_NOTE in box.value] == [
        f"2 registered models were {registry.STALE_NOTE}: the pages flag them, and their metrics and "
        "held-out scores do not include the new rows. Train again on the Models page to include them."
    ]
    with Store(path) as store:
        assert not registry.saved_models(store)["current_data"].any()


def test_one_user_of_a_sequence_model_shows_attributions_and_survival(
    source_store: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = copy_store(source_store, tmp_path / "store.duckdb")
    run = train_run(path, tmp_path / "models" / "run-s", models=("seq",))
    with Store(path) as store:
        registry.register(store, run)
    at = open_page(_app(path, monkeypatch, tmp_path), PAGE)
    at.selectbox(key="models_timeline_model").set_value("run-s/seq").run()
    assert not at.exception, at.exception
    user = at.selectbox(key="models_timeline_user").value
    table = table_with(at, "event_time", "event_name", "contribution")
    before = count(
        path, "SELECT count(*) FROM events WHERE user_id = ? AND event_time < ?", [user, pd.Timestamp(AS_OF)]
    )
    assert len(table) == min(TINY_SEQUENCE.max_events, before)
    assert table["contribution"].abs().is_monotonic_decreasing
    assert "**Weekly survival over the horizon**" in [element.value for element in at.markdown]
    assert "available for sequence models" not in _texts(at)


def test_trains_in_the_background_and_registers(
    source_store: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = copy_store(source_store, tmp_path / "store.duckdb")
    at = open_page(_app(path, monkeypatch, tmp_path / "models"), PAGE)
    at.date_input(key="models_as_of").set_value(pd.Timestamp(AS_OF).date())
    at.checkbox(key="models_train_gbm").uncheck()
    at.checkbox(key="models_train_seq").uncheck()
    next(button for button in at.button if button.label == "Train").click().run()
    assert not at.exception, at.exception
    job = at.session_state["models_job"]
    assert job.wait(WAIT_SECONDS).status == "done"
    at.run()
    assert not at.exception, at.exception
    run_name = job.run_dir.name
    assert job.run_dir.parent == tmp_path / "models"
    assert f"Trained and registered {run_name}/btyd" in _texts(at)
    assert count(path, "SELECT count(*) FROM model_registry WHERE model_id = ?", [f"{run_name}/btyd"]) == 1
    assert at.multiselect(key="models_compare").value == [f"{run_name}/btyd"]


def test_register_and_remove_from_the_page(
    source_store: Path, registered: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, run = registered
    path = copy_store(source_store, tmp_path / "store.duckdb")
    at = open_page(_app(path, monkeypatch, tmp_path / "models"), PAGE)
    at.text_input(key="models_register_dir").input(str(tmp_path / "missing")).run()
    next(button for button in at.button if button.label == "Register").click().run()
    assert not at.exception, at.exception
    assert "is not a folder" in _texts(at)
    assert count(path, "SELECT count(*) FROM model_registry") == 0
    at.text_input(key="models_register_dir").input(str(run)).run()
    next(button for button in at.button if button.label == "Register").click().run()
    assert not at.exception, at.exception
    assert count(path, "SELECT count(*) FROM model_registry") == 2
    at.multiselect(key="models_compare").set_value(["run-p/gbm"]).run()
    next(button for button in at.button if button.label == "Register").click().run()
    assert not at.exception, at.exception
    assert at.multiselect(key="models_compare").value == ["run-p/btyd", "run-p/gbm"]
    assert count(path, "SELECT count(*) FROM model_registry") == 2
    at.multiselect(key="models_remove_ids").set_value(["run-p/btyd"]).run()
    next(button for button in at.button if button.label == "Remove").click().run()
    assert not at.exception, at.exception
    assert count(path, "SELECT count(*) FROM model_registry") == 1
    assert at.multiselect(key="models_compare").value == ["run-p/gbm"]
    assert at.multiselect(key="models_remove_ids").value == []
    assert (run / "btyd" / "model.json").is_file()
