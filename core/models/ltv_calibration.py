"""The level of predicted LTV, fitted on validation users like the churn calibration.

Churn probabilities are calibrated; LTV needs the same care: a model can rank users well and still
be off by a factor in dollars (BG/NBD scores users who never bought as if they had just started
buying; a Tweedie booster's mean need not match the mean revenue; a lognormal's mean grows fast
with its scale). A factor fitted on users the model was not fitted on puts the total right
without touching the ranking.

Definition (docs/METRICS.md, "Training and scoring from the command line"): on the validation
users, **factor** = Σ ltv_actual / Σ ltv_pred (raw); 1 when the raw predictions sum to 0 or
less. Every ``ltv_pred`` the run reports or ``score`` writes is the raw prediction times the
factor. Multiplying by a positive constant keeps every user's rank, so the normalized Gini,
Spearman correlation, deciles' order and the top-10% share are unchanged; MAE, RMSE and the mean
change.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import TenureError

LTV_CALIBRATION_FILE = "ltv_calibration.json"
KIND = "scale"


@dataclass(frozen=True)
class LtvScale:
    """``factor`` and what it was fitted on."""

    factor: float
    validation_users: int
    mean_actual: float
    mean_predicted_raw: float

    def apply(self, predicted: Any) -> np.ndarray:
        return np.asarray(predicted, dtype=float) * self.factor

    def to_dict(self) -> dict[str, Any]:
        return {"kind": KIND, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LtvScale:
        return cls(
            float(data["factor"]),
            int(data["validation_users"]),
            float(data["mean_actual"]),
            float(data["mean_predicted_raw"]),
        )


def fit_ltv_scale(actual: Any, predicted: Any) -> LtvScale:
    """Σ actual / Σ predicted over the validation users (1 when the predictions sum to <= 0)."""
    actual = np.asarray(actual, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    total = float(predicted.sum())
    factor = float(actual.sum()) / total if total > 0 else 1.0
    return LtvScale(factor, len(actual), float(actual.mean()), float(predicted.mean()))


def write_ltv_scale(directory: str | Path, scale: LtvScale) -> Path:
    path = Path(directory) / LTV_CALIBRATION_FILE
    path.write_text(json.dumps(scale.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def load_ltv_scale(directory: str | Path) -> LtvScale | None:
    """The folder's LTV scale, or None for folders saved without one (their raw LTV is used)."""
    path = Path(directory) / LTV_CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("kind") != KIND:
            raise KeyError("kind")
        return LtvScale.from_dict(document)
    except (
        json.JSONDecodeError,
        UnicodeDecodeError,
        KeyError,
        TypeError,
        ValueError,
        AttributeError,
    ) as error:
        raise TenureError(f"{path} is not an LTV scale written by train", "train the model again") from error
