"""Background training (core/models/jobs.py): it finishes and registers, reports progress, and a
cancel or a failure leaves neither a run folder nor a registry row."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import duckdb
import pytest
from model_helpers import AS_OF, HORIZON_DAYS, TINY_GBM, build_model_store, copy_store

from core.errors import TenureError
from core.models import jobs
from core.models.spec import ModelSpec
from core.store import Store

WAIT_SECONDS = 120


@pytest.fixture(scope="module")
def source_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model_store(tmp_path_factory.mktemp("jobs") / "source.duckdb")


@pytest.fixture
def store(source_store: Path, tmp_path: Path):
    with Store(copy_store(source_store, tmp_path / "store.duckdb")) as opened:
        yield opened


def _registered(store: Store) -> list[str]:
    with duckdb.connect(str(store.path)) as connection:
        return [
            row[0]
            for row in connection.execute("SELECT model_id FROM model_registry ORDER BY model_id").fetchall()
        ]


def test_a_job_trains_in_the_background_then_registers(store: Store, tmp_path: Path) -> None:
    job = jobs.start_training(
        store,
        ModelSpec(AS_OF, HORIZON_DAYS),
        ["btyd", "gbm"],
        "users",
        0,
        tmp_path / "models",
        gbm_config=TINY_GBM,
    )
    snapshot = job.wait(WAIT_SECONDS)
    assert snapshot.status == "done", snapshot.message
    assert snapshot.fraction == 1.0 and snapshot.finished
    run = job.run_dir
    assert run.parent == tmp_path / "models"
    assert (run / "metrics.json").is_file() and (run / "gbm" / "model.json").is_file()
    assert list(snapshot.model_ids) == [f"{run.name}/btyd", f"{run.name}/gbm"] == _registered(store)


def test_progress_is_reported_while_the_work_runs() -> None:
    reported = threading.Event()
    release = threading.Event()

    def work(progress):
        progress(0.4, "halfway there")
        reported.set()
        release.wait(WAIT_SECONDS)
        return ("run/model",)

    job = jobs.TrainingJob(Path("unused"), work).start()
    assert reported.wait(WAIT_SECONDS)
    running = job.snapshot()
    assert (running.status, running.fraction, running.message) == ("running", 0.4, "halfway there")
    assert not running.finished
    release.set()
    done = job.wait(WAIT_SECONDS)
    assert done.status == "done" and done.model_ids == ("run/model",)


def test_cancel_stops_at_the_next_report_and_leaves_nothing(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fitting = threading.Event()
    release = threading.Event()
    train = jobs.train_models

    def paused_train(*args, **kwargs):
        outer = args[6]

        def progress(fraction: float, message: str) -> None:
            outer(fraction, message)
            if message.startswith("fitting"):
                fitting.set()
                release.wait(WAIT_SECONDS)

        return train(*args[:6], progress, **kwargs)

    monkeypatch.setattr(jobs, "train_models", paused_train)
    job = jobs.start_training(
        store, ModelSpec(AS_OF, HORIZON_DAYS), ["btyd"], "users", 0, tmp_path / "models"
    )
    assert fitting.wait(WAIT_SECONDS)
    assert job.run_dir.is_dir()
    job.cancel()
    release.set()
    snapshot = job.wait(WAIT_SECONDS)
    assert snapshot.status == "cancelled"
    assert not job.run_dir.exists()
    assert _registered(store) == []


def test_a_cancel_after_training_still_registers_nothing(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train = jobs.train_models
    holder: dict[str, jobs.TrainingJob] = {}

    def train_then_cancel(*args, **kwargs):
        result = train(*args, **kwargs)
        holder["job"].cancel()
        return result

    monkeypatch.setattr(jobs, "train_models", train_then_cancel)
    original_start = jobs.TrainingJob.start

    def keep(self):
        holder["job"] = self
        return original_start(self)

    monkeypatch.setattr(jobs.TrainingJob, "start", keep)
    job = jobs.start_training(
        store, ModelSpec(AS_OF, HORIZON_DAYS), ["btyd"], "users", 0, tmp_path / "models"
    )
    assert job.wait(WAIT_SECONDS).status == "cancelled"
    assert not job.run_dir.exists() and _registered(store) == []


def test_a_failed_run_reports_the_problem_and_leaves_nothing(store: Store, tmp_path: Path) -> None:
    too_late = ModelSpec("2026-06-15", HORIZON_DAYS)
    job = jobs.start_training(store, too_late, ["btyd"], "users", 0, tmp_path / "models")
    snapshot = job.wait(WAIT_SECONDS)
    assert snapshot.status == "failed"
    assert isinstance(snapshot.error, TenureError)
    assert not job.run_dir.exists() and _registered(store) == []


def test_a_read_only_store_is_refused(source_store: Path, tmp_path: Path) -> None:
    with Store(source_store, read_only=True) as store, pytest.raises(TenureError, match="read-only"):
        jobs.start_training(store, ModelSpec(AS_OF), ["btyd"], "users", 0, tmp_path / "models")
    assert not (tmp_path / "models").exists()


def test_run_folders_are_named_by_time_and_never_reused(tmp_path: Path) -> None:
    moment = dt.datetime(2026, 3, 1, 10, 15, 30)
    first = jobs.new_run_dir(tmp_path, now=moment)
    second = jobs.new_run_dir(tmp_path, now=moment)
    assert (first.name, second.name) == ("20260301-101530", "20260301-101530-2")
    assert first.is_dir() and second.is_dir()


def test_default_models_dir_sits_beside_the_store_unless_configured(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(jobs.MODELS_DIR_ENV_VAR, raising=False)
    assert jobs.default_models_dir(store) == store.path.resolve().parent / "models" / "store"
    monkeypatch.setenv(jobs.MODELS_DIR_ENV_VAR, str(tmp_path / "elsewhere"))
    assert jobs.default_models_dir(store) == tmp_path / "elsewhere"
