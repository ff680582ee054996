"""The model registry: which trained models a store knows, in its ``model_registry`` table.

A training run writes a folder (``core.models.training.train_models``): ``metrics.json``,
``predictions.csv`` and one sub-folder per model holding ``model.json``. Registering the run
records one row per model so the app and the CLI can list, compare and score the models trained
on this store without scanning the disk.

- **model_id**: ``<run folder name>/<model name>``, e.g. ``20260301-101500/gbm``. Registering
  the same folder again replaces its rows (a run retrained in place); a different folder with
  the same name is refused, so an id always names one folder.
- **kind**: ``model.json``'s ``kind`` as written (``btyd``, ``gbm``, or any kind added later:
  the registry does not interpret it).
- **created_at**: when the run finished (``metrics.json``'s modification time, UTC);
  **registered_at**: when the row was written (UTC).
- **metrics**: the model's entry of ``metrics.json`` (``churn``, ``ltv``) plus its
  ``calibration`` entry; **filters**: the run's global filters (URL form).
- **data_version**: ``Store.version()`` of the data the run was trained on (given by the
  trainer) or, when not given, at registration: a row whose version differs from the store's
  current one was trained before a later load.

Only complete runs are registered: ``metrics.json`` is written last by training, and every
model it lists must have its folder with ``model.json``. Removing a row leaves the files alone.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.errors import TenureError
from core.evaluation import ChurnMetrics, LtvMetrics
from core.models.artifacts import MODEL_FILE
from core.models.training import METRICS_FILE
from core.store import Store

REGISTRY_TABLE = "model_registry"
REGISTRY_COLUMNS = (
    "model_id",
    "run_dir",
    "model_name",
    "kind",
    "path",
    "created_at",
    "registered_at",
    "as_of",
    "horizon_days",
    "split",
    "seed",
    "metrics",
    "filters",
    "data_version",
)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise TenureError(f"no {path.name} in {path.parent}", f"point to a folder written by {what}")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise TenureError(
            f"{path} is not valid JSON", f"train again or point to a folder written by {what}"
        ) from error
    if not isinstance(document, dict):
        raise TenureError(f"{path} does not hold a JSON object", f"point to a folder written by {what}")
    return document


def _timestamp(value: Any) -> pd.Timestamp | None:
    if value is None:
        return None
    moment = pd.Timestamp(value)
    if moment.tzinfo is not None:
        moment = moment.tz_convert("UTC").tz_localize(None)
    return moment


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def read_run(run_dir: str | Path) -> list[dict[str, Any]]:
    """The registry rows of a complete training run folder, without writing anything.

    Raises:
        TenureError: the folder has no valid ``metrics.json``, or a model it lists has no
            ``<model>/model.json``.
    """
    run = Path(run_dir).resolve()
    if not run.is_dir():
        raise TenureError(
            f"{run_dir} is not a folder", "give the folder written by `python -m core train --out`"
        )
    metrics = _read_json(run / METRICS_FILE, "`python -m core train`")
    models = metrics.get("models")
    if not isinstance(models, dict) or not models:
        raise TenureError(f"{run / METRICS_FILE} lists no models", "train again")
    created_at = dt.datetime.fromtimestamp((run / METRICS_FILE).stat().st_mtime, dt.UTC).replace(tzinfo=None)
    calibration = metrics.get("calibration") or {}
    rows = []
    for name, entry in models.items():
        model_json = _read_json(run / name / MODEL_FILE, "`python -m core train`")
        kind = model_json.get("kind")
        if not kind:
            raise TenureError(f"{run / name / MODEL_FILE} names no model kind", "train again")
        rows.append(
            {
                "model_id": f"{run.name}/{name}",
                "run_dir": str(run),
                "model_name": str(name),
                "kind": str(kind),
                "path": str(run / name),
                "created_at": created_at,
                "as_of": _timestamp(metrics.get("as_of")),
                "horizon_days": metrics.get("horizon_days"),
                "split": metrics.get("split"),
                "seed": metrics.get("seed"),
                "metrics": json.dumps({**(entry or {}), "calibration": calibration.get(name)}),
                "filters": json.dumps(metrics.get("filters") or {}),
            }
        )
    return rows


def _has_registry(store: Store) -> bool:
    """False for a store from before the registry opened read-only (the table is added on write)."""
    row = store.query_one(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'main' AND table_name = ?",
        [REGISTRY_TABLE],
    )
    return bool(row and row[0])


def register(store: Store, run_dir: str | Path, data_version: str | None = None) -> list[str]:
    """Record every model of a complete training run in the store's registry, in one transaction.

    Args:
        store: a store open for writing.
        run_dir: the folder written by ``train_models``.
        data_version: ``Store.version()`` when the run was trained; None = the store's version now.

    Returns:
        The model ids registered, in the order of ``metrics.json``.
    """
    rows = read_run(run_dir)
    version = data_version if data_version is not None else store.version()
    registered_at = _utc_now()
    ids = [row["model_id"] for row in rows]
    placeholders = ", ".join("?" for _ in ids)
    with store.transaction() as cursor:
        clashes = cursor.execute(
            f"SELECT model_id, path FROM {REGISTRY_TABLE} WHERE model_id IN ({placeholders})", ids
        ).fetchall()
        paths = {row["model_id"]: row["path"] for row in rows}
        for model_id, path in clashes:
            if path != paths[model_id]:
                raise TenureError(
                    f"model id '{model_id}' is already registered for {path}",
                    f"rename the folder {rows[0]['run_dir']} or remove the old model with "
                    f"`python -m core models remove {model_id}`",
                )
        cursor.execute(f"DELETE FROM {REGISTRY_TABLE} WHERE model_id IN ({placeholders})", ids)
        columns = ", ".join(REGISTRY_COLUMNS)
        values = ", ".join("?" for _ in REGISTRY_COLUMNS)
        cursor.executemany(
            f"INSERT INTO {REGISTRY_TABLE} ({columns}) VALUES ({values})",
            [
                [
                    {**row, "registered_at": registered_at, "data_version": version}[name]
                    for name in REGISTRY_COLUMNS
                ]
                for row in rows
            ],
        )
    return ids


def list_models_empty() -> pd.DataFrame:
    """``list_models``' result when nothing is registered: no rows, the same columns."""
    return pd.DataFrame({name: pd.Series(dtype=object) for name in REGISTRY_COLUMNS})


def list_models(store: Store) -> pd.DataFrame:
    """Every registered model, newest run first (then by model name).

    Returns:
        DataFrame with columns ``REGISTRY_COLUMNS``; ``metrics`` and ``filters`` parsed into
        dicts. Empty (same columns) when nothing is registered or the store has no registry.
    """
    if not _has_registry(store):
        return list_models_empty()
    columns = ", ".join(REGISTRY_COLUMNS)
    frame = store.query_df(
        f"SELECT {columns} FROM {REGISTRY_TABLE} ORDER BY created_at DESC, run_dir, model_name"
    )
    for name in ("metrics", "filters"):
        frame[name] = [json.loads(text) if text else {} for text in frame[name]]
    return frame


STALE_NOTE = "trained before the latest load"


def saved_models(store: Store) -> pd.DataFrame:
    """Registered models whose folder still holds a saved model, newest run first: the models a
    page can offer for scoring (a folder deleted since registration is left out).

    Returns ``list_models``' columns plus ``current_data`` (``with_current_data``).
    """
    try:
        models = list_models(store)
    except TenureError:
        models = list_models_empty()
    saved = np.array([(Path(path) / MODEL_FILE).is_file() for path in models["path"]], dtype=bool)
    return with_current_data(store, models.loc[saved].reset_index(drop=True))


def with_current_data(store: Store, models: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``list_models`` with ``current_data``: True when no load has committed since the
    model's data was read (a False model's metrics describe the data of its day).

    Only the load-history part of ``Store.version()`` is compared: a store copied or moved to
    another path holds the same data, and its models stay current.
    """
    now = _loads_part(store.version())
    return models.assign(
        current_data=[_loads_part(str(version)) == now for version in models["data_version"]]
    )


def _loads_part(version: str) -> tuple[str, ...]:
    """``count:last load id`` of a ``Store.version()`` string (its path may hold colons)."""
    return tuple(version.rsplit(":", 2)[1:])


def model_label(model_id: str, current_data: bool) -> str:
    """How every page names a registered model: its id, flagged when a load came after it."""
    return model_id if current_data else f"{model_id} ({STALE_NOTE})"


def model_labels(models: pd.DataFrame) -> dict[str, str]:
    """Folder path -> label (``model_label``) for rows of ``saved_models``: the one name a model
    has on every page, whose selectors hold folder paths."""
    return {
        str(path): model_label(model_id, bool(current))
        for path, model_id, current in zip(
            models["path"], models["model_id"], models["current_data"], strict=True
        )
    }


def saved_model_paths(store: Store) -> list[str]:
    """Folders of ``saved_models``, newest run first."""
    return [str(path) for path in saved_models(store)["path"]]


def model_folder(store: Store, model: str | Path) -> Path:
    """The folder a ``--model`` value names: a folder holding a saved model, else the folder of the
    registered model with that id (the name the pages and ``models list`` show)."""
    path = Path(model)
    if (path / MODEL_FILE).is_file():
        return path
    models = saved_models(store)
    matches = models.loc[models["model_id"] == str(model), "path"]
    if len(matches):
        return Path(matches.iloc[0])
    raise TenureError(
        f"no {MODEL_FILE} in {model}, and no registered model has that id",
        "give a folder written by train, or a model id from `python -m core models list`",
    )


def remove(store: Store, model_ids: Sequence[str]) -> None:
    """Delete registry rows (the model folders stay on disk); an unknown id is refused."""
    ids = list(dict.fromkeys(model_ids))
    if not ids:
        return
    with store.transaction() as cursor:
        placeholders = ", ".join("?" for _ in ids)
        known = {
            row[0]
            for row in cursor.execute(
                f"SELECT model_id FROM {REGISTRY_TABLE} WHERE model_id IN ({placeholders})", ids
            ).fetchall()
        }
        unknown = [model_id for model_id in ids if model_id not in known]
        if unknown:
            raise TenureError(
                f"no registered model '{unknown[0]}'", "see the ids with `python -m core models list`"
            )
        cursor.execute(f"DELETE FROM {REGISTRY_TABLE} WHERE model_id IN ({placeholders})", ids)


def metrics_frame(models: pd.DataFrame) -> pd.DataFrame:
    """The registered models' metrics side by side, one row per model.

    Columns ``model_id``, ``kind``, then ``churn_<field>`` for every ``ChurnMetrics`` field and
    ``ltv_<field>`` for every ``LtvMetrics`` field (the names of ``core.evaluation.metrics_table``),
    then ``calibration_method``; NaN where a model has no such metric.
    """
    rows = []
    for model in models.itertuples(index=False):
        metrics = model.metrics or {}
        row: dict[str, Any] = {"model_id": model.model_id, "kind": model.kind}
        for prefix, fields in (("churn", ChurnMetrics._fields), ("ltv", LtvMetrics._fields)):
            values = metrics.get(prefix) or {}
            for field in fields:
                value = values.get(field)
                row[f"{prefix}_{field}"] = float("nan") if value is None else float(value)
        calibration = metrics.get("calibration") or {}
        row["calibration_method"] = calibration.get("method")
        rows.append(row)
    columns = [
        "model_id",
        "kind",
        *(f"churn_{field}" for field in ChurnMetrics._fields),
        *(f"ltv_{field}" for field in LtvMetrics._fields),
        "calibration_method",
    ]
    return pd.DataFrame(rows, columns=columns)
