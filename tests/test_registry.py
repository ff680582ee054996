"""The model registry (core/models/registry.py) and `python -m core models` (core/cli_registry.py),
checked with direct SQL on the store file and against the run's own JSON files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from model_helpers import AS_OF, HORIZON_DAYS, SEED, build_model_store, copy_store, train_run

from core.cli import main
from core.errors import TenureError
from core.models import registry
from core.store import Store

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def source_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model_store(tmp_path_factory.mktemp("registry") / "source.duckdb")


@pytest.fixture(scope="module")
def run_dir(source_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_run(source_store, tmp_path_factory.mktemp("runs") / "run-a")


@pytest.fixture
def store_path(source_store: Path, tmp_path: Path) -> Path:
    return copy_store(source_store, tmp_path / "store.duckdb")


def _rows(path: Path) -> pd.DataFrame:
    """The registry table straight from the file (same configuration as a Store open in this process)."""
    with duckdb.connect(str(path)) as connection:
        return connection.execute("SELECT * FROM model_registry ORDER BY model_id").df()


def _version(path: Path) -> str:
    with duckdb.connect(str(path)) as connection:
        count, last = connection.execute(
            "SELECT count(*), coalesce(max(load_id), 0) FROM load_history"
        ).fetchone()
    return f"{path.resolve()}:{count}:{last}"


def test_register_writes_one_row_per_model_from_the_run_files(store_path: Path, run_dir: Path) -> None:
    with Store(store_path) as store:
        ids = registry.register(store, run_dir)
    assert ids == ["run-a/btyd", "run-a/gbm"]
    rows = _rows(store_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert rows["model_id"].tolist() == ids
    for row in rows.itertuples(index=False):
        name = row.model_id.split("/")[1]
        model_json = json.loads((run_dir / name / "model.json").read_text())
        assert row.model_name == name and row.kind == model_json["kind"] == name
        assert Path(row.path) == (run_dir / name).resolve() and Path(row.run_dir) == run_dir.resolve()
        assert pd.Timestamp(row.as_of) == pd.Timestamp(AS_OF)
        assert row.horizon_days == HORIZON_DAYS and row.split == "users" and row.seed == SEED
        stored = json.loads(row.metrics)
        assert stored["churn"] == metrics["models"][name]["churn"]
        assert stored["ltv"] == metrics["models"][name]["ltv"]
        assert stored["calibration"] == metrics["calibration"][name]
        assert json.loads(row.filters) == {}
        assert row.data_version == _version(store_path)
        finished = pd.Timestamp((run_dir / "metrics.json").stat().st_mtime, unit="s")
        assert abs(pd.Timestamp(row.created_at) - finished) < pd.Timedelta(seconds=1)


def test_registering_a_folder_again_replaces_its_rows(store_path: Path, run_dir: Path) -> None:
    with Store(store_path) as store:
        registry.register(store, run_dir, data_version="old")
        registry.register(store, run_dir)
    rows = _rows(store_path)
    assert len(rows) == 2 and set(rows["data_version"]) == {_version(store_path)}


def test_another_folder_with_the_same_name_is_refused(
    store_path: Path, run_dir: Path, tmp_path: Path
) -> None:
    twin = tmp_path / "elsewhere" / run_dir.name
    shutil.copytree(run_dir, twin)
    with Store(store_path) as store:
        registry.register(store, run_dir)
        with pytest.raises(TenureError, match="already registered"):
            registry.register(store, twin)
    assert {Path(path) for path in _rows(store_path)["run_dir"]} == {run_dir.resolve()}


@pytest.mark.parametrize("damage", ["no_metrics", "no_model_json", "bad_json"])
def test_incomplete_runs_are_refused_and_nothing_is_written(
    store_path: Path, run_dir: Path, tmp_path: Path, damage: str
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    if damage == "no_metrics":
        (broken / "metrics.json").unlink()
    elif damage == "no_model_json":
        (broken / "gbm" / "model.json").unlink()
    else:
        (broken / "metrics.json").write_text("{not json")
    with Store(store_path) as store, pytest.raises(TenureError):
        registry.register(store, broken)
    assert len(_rows(store_path)) == 0


def test_list_models_matches_sql_and_metrics_frame_matches_metrics_json(
    store_path: Path, run_dir: Path
) -> None:
    with Store(store_path) as store:
        registry.register(store, run_dir)
        listed = registry.list_models(store)
        table = registry.metrics_frame(listed)
    assert sorted(listed["model_id"]) == _rows(store_path)["model_id"].tolist()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for row in table.itertuples(index=False):
        name = row.model_id.split("/")[1]
        assert row.churn_roc_auc == pytest.approx(metrics["models"][name]["churn"]["roc_auc"])
        assert row.ltv_normalized_gini == pytest.approx(metrics["models"][name]["ltv"]["normalized_gini"])
        assert row.calibration_method == metrics["calibration"][name]["method"]


def test_remove_deletes_rows_and_refuses_unknown_ids(store_path: Path, run_dir: Path) -> None:
    with Store(store_path) as store:
        registry.register(store, run_dir)
        with pytest.raises(TenureError, match="no registered model 'nope'"):
            registry.remove(store, ["run-a/btyd", "nope"])
        assert len(_rows(store_path)) == 2
        registry.remove(store, ["run-a/btyd"])
    assert _rows(store_path)["model_id"].tolist() == ["run-a/gbm"]
    assert (run_dir / "btyd" / "model.json").is_file()


def test_saved_model_paths_leave_out_deleted_folders(store_path: Path, run_dir: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(run_dir, tmp_path / "run-b")
    with Store(store_path) as store:
        assert registry.saved_model_paths(store) == []
        registry.register(store, copy)
        shutil.rmtree(copy / "btyd")
        paths = registry.saved_model_paths(store)
    assert paths == [str(path) for path in _rows(store_path)["path"] if path.endswith("gbm")]
    assert paths and Path(paths[0]) == (copy / "gbm").resolve()


def test_a_load_after_training_flags_the_models_everywhere_they_are_named(
    store_path: Path, run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Store(store_path) as store:
        registry.register(store, run_dir)
        before = registry.saved_models(store)
        assert before["current_data"].tolist() == [True, True]
        assert registry.model_labels(before) == {
            str((run_dir / name).resolve()): f"run-a/{name}" for name in ("btyd", "gbm")
        }
    extra = tmp_path / "later.csv"
    extra.write_text("user_id,event_time,event_name\nlate-user,2030-01-01T00:00:00,app_open\n")
    assert main(["ingest", str(extra), "--table", "events", "--db", str(store_path)]) == 0
    with Store(store_path) as store:
        after = registry.saved_models(store)
        assert after["current_data"].tolist() == [False, False]
        assert after["data_version"].tolist() == before["data_version"].tolist()
        assert _version(store_path) != before["data_version"].iloc[0]
        labels = registry.model_labels(after)
    assert sorted(labels.values()) == [f"run-a/{name} ({registry.STALE_NOTE})" for name in ("btyd", "gbm")]
    capsys.readouterr()
    assert main(["models", "list", "--db", str(store_path), "--format", "json"]) == 0
    assert [row["current_data"] for row in json.loads(capsys.readouterr().out)] == [False, False]


def test_a_store_from_before_the_registry_lists_no_models_and_gains_the_table(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    Store(path).close()
    with duckdb.connect(str(path)) as connection:
        connection.execute("DROP TABLE model_registry")
    with Store(path, read_only=True) as store:
        assert registry.list_models(store).empty
        assert list(registry.list_models(store).columns) == list(registry.REGISTRY_COLUMNS)
    Store(path).close()
    assert len(_rows(path)) == 0


def _train(db: Path, out: Path, *extra: str) -> int:
    return main(["train", "--db", str(db), "--as-of", AS_OF, "--model", "btyd", "--out", str(out), *extra])


def test_train_registers_its_run(
    store_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _train(store_path, tmp_path / "cli-run") == 0
    assert "registered cli-run/btyd" in capsys.readouterr().err
    rows = _rows(store_path)
    assert rows["model_id"].tolist() == ["cli-run/btyd"] and rows["kind"].tolist() == ["btyd"]


def test_train_with_no_register_leaves_the_registry_alone(store_path: Path, tmp_path: Path) -> None:
    assert _train(store_path, tmp_path / "cli-run", "--no-register") == 0
    assert len(_rows(store_path)) == 0


def test_train_warns_when_another_process_holds_the_store_then_register_later(
    store_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from core.store import Store; "
            f"store = Store({str(store_path)!r}, read_only=True); print('ready', flush=True); time.sleep(120)",
        ],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        out = tmp_path / "held-run"
        assert _train(store_path, out) == 0
        warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning")]
        assert len(warnings) == 1
        assert "another process holds" in warnings[0]
        assert f"python -m core models register {out} --db {store_path}" in warnings[0]
    finally:
        holder.kill()
        holder.wait()
    assert len(_rows(store_path)) == 0
    assert main(["models", "register", str(out), "--db", str(store_path)]) == 0
    assert _rows(store_path)["model_id"].tolist() == ["held-run/btyd"]


def test_models_list_and_remove_from_the_command_line(
    store_path: Path, run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "register", str(run_dir), "--db", str(store_path)]) == 0
    assert capsys.readouterr().out.split() == ["run-a/btyd", "run-a/gbm"]
    assert main(["models", "list", "--db", str(store_path), "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [row["model_id"] for row in listed] == ["run-a/btyd", "run-a/gbm"]
    for row in listed:
        name = row["model_id"].split("/")[1]
        assert row["churn_roc_auc"] == pytest.approx(metrics["models"][name]["churn"]["roc_auc"])
    assert main(["models", "remove", "run-a/gbm", "--db", str(store_path)]) == 0
    assert _rows(store_path)["model_id"].tolist() == ["run-a/btyd"]
    capsys.readouterr()
    assert main(["models", "remove", "nope", "--db", str(store_path)]) == 2
    assert capsys.readouterr().err.strip().startswith("error: no registered model 'nope'")
    assert main(["models", "register", str(store_path.parent / "missing"), "--db", str(store_path)]) == 2
