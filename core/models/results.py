"""What a training run wrote, read back for comparison: predictions and reliability tables.

Each registered model (``core.models.registry``) points to its run folder; its evaluation
predictions are the rows of the run's ``predictions.csv`` whose ``model`` is the model's name,
and its reliability table is ``<model>/reliability.csv``. Rows are labelled with the registry's
``model_id`` so models of different runs can be shown together.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from core.errors import TenureError
from core.export import FORMULA_PREFIXES
from core.models.training import PREDICTION_COLUMNS, PREDICTIONS_FILE, RELIABILITY_FILE

SCORE_TABLE_COLUMNS = ("model_id", "user_id", "churn_prob", "ltv_pred", "churned", "ltv_actual")


def _restore_cell(value: object) -> object:
    """Undo ``core.export.neutralise_cell``: the apostrophe before a formula-like id is not part of it."""
    if isinstance(value, str) and value.startswith("'") and value[1:].startswith(FORMULA_PREFIXES):
        return value[1:]
    return value


def read_predictions(run_dir: str | Path) -> pd.DataFrame:
    """A run's ``predictions.csv`` (columns ``PREDICTION_COLUMNS``; ``user_id`` as text)."""
    path = Path(run_dir) / PREDICTIONS_FILE
    if not path.is_file():
        raise TenureError(
            f"no {PREDICTIONS_FILE} in {run_dir}", "train the run again or remove it from the registry"
        )
    frame = pd.read_csv(path, dtype={"user_id": str, "model": str})
    missing = [column for column in PREDICTION_COLUMNS if column not in frame.columns]
    if missing:
        raise TenureError(f"{path} has no column {missing[0]}", "train the run again")
    frame["user_id"] = frame["user_id"].map(_restore_cell)
    return frame[list(PREDICTION_COLUMNS)]


def model_predictions(models: pd.DataFrame) -> pd.DataFrame:
    """Evaluation predictions of registered models (rows of ``registry.list_models``).

    Returns:
        DataFrame ``SCORE_TABLE_COLUMNS``, one row per model and evaluation user.
    """
    frames = []
    for run_dir, group in models.groupby("run_dir", sort=False):
        predictions = read_predictions(run_dir)
        names = dict(zip(group["model_name"], group["model_id"], strict=True))
        chosen = predictions[predictions["model"].isin(names)]
        frames.append(chosen.assign(model_id=chosen["model"].map(names)))
    if not frames:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in SCORE_TABLE_COLUMNS})
    return pd.concat(frames, ignore_index=True)[list(SCORE_TABLE_COLUMNS)]


def model_reliability(models: pd.DataFrame) -> pd.DataFrame:
    """``reliability.csv`` of each registered model that has one, with a ``model_id`` column.

    Columns: ``model_id``, then those of ``core.evaluation.reliability_table`` and ``which``
    (``raw`` or ``calibrated``).
    """
    frames = []
    for model in models.itertuples(index=False):
        path = Path(model.path) / RELIABILITY_FILE
        if path.is_file():
            frames.append(pd.read_csv(path).assign(model_id=model.model_id))
    if not frames:
        return pd.DataFrame({"model_id": pd.Series(dtype=object)})
    frame = pd.concat(frames, ignore_index=True)
    return frame[["model_id", *(column for column in frame.columns if column != "model_id")]]


def filter_scores(
    scores: pd.DataFrame,
    model_ids: list[str] | None = None,
    churn_range: tuple[float, float] = (0.0, 1.0),
    min_ltv: float | None = None,
) -> pd.DataFrame:
    """Rows of ``model_predictions`` of the chosen models, with ``churn_prob`` in the closed
    range and ``ltv_pred`` at least ``min_ltv`` (None = any); highest churn probability first."""
    low, high = churn_range
    keep = scores["churn_prob"].between(low, high)
    if model_ids is not None:
        keep &= scores["model_id"].isin(model_ids)
    if min_ltv is not None:
        keep &= scores["ltv_pred"] >= min_ltv
    chosen = scores[keep]
    return chosen.sort_values(
        ["churn_prob", "model_id", "user_id"], ascending=[False, True, True]
    ).reset_index(drop=True)
