"""Gradient-boosted trees baseline: LightGBM on recency/frequency/monetary and behavioural aggregates.

Two boosters on the features of core/models/features.py at the spec's as-of date T:

- **churn**: binary classifier (log loss) of ``churned`` (core/models/labels.py); ``churn_prob``
  is its predicted probability.
- **LTV**: regressor of ``ltv_actual`` with a Tweedie objective (log link, variance power
  ``tweedie_variance_power``, default 1.5). Revenue over a horizon is mostly exactly 0 with a
  long right tail; a Tweedie compound Poisson-Gamma fits that mass at 0 and the skew, and,
  unlike a regression on log1p(revenue), it predicts the mean revenue (not a geometric-type
  mean), which is what LTV sums need. ``ltv_pred`` is that mean, in the store's revenue unit.

Training is deterministic for a given config (fixed seeds, ``deterministic=True``,
``force_row_wise=True``, ``num_threads`` from the config). A saved model is a folder:
``churn.txt`` and ``ltv.txt`` (LightGBM's own text model format) and ``model.json`` (config, spec,
feature version, names and vocabulary, data window, training metrics, library versions).
Loading reads text only: nothing is unpickled.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Collection
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from core.errors import TenureError
from core.models.artifacts import MODEL_FILE, library_versions, write_model_json
from core.models.features import (
    FEATURE_VERSION,
    FeatureVocabulary,
    behaviour_features,
    behaviour_features_at_instants,
    feature_vocabulary,
)
from core.models.labels import labels
from core.models.spec import ModelSpec, scoring_spec
from core.population import Filters
from core.store import Store

PREDICTION_COLUMNS = ("user_id", "churn_prob", "ltv_pred")
CHURN_FILE = "churn.txt"
LTV_FILE = "ltv.txt"
MODEL_KIND = "gbm"
FORMAT_VERSION = 1
LTV_OBJECTIVES = ("tweedie", "regression")


@dataclass(frozen=True)
class GBMConfig:
    """LightGBM settings shared by both boosters (see the LightGBM parameter docs).

    Args:
        num_trees: boosting rounds per booster.
        learning_rate, num_leaves, min_data_in_leaf, feature_fraction, lambda_l2: tree settings.
        ltv_objective: ``tweedie`` (default) or ``regression`` (squared error on revenue).
        tweedie_variance_power: in (1, 2); 1.5 by default.
        seed: seeds every random choice of LightGBM.
        num_threads: threads LightGBM may use.
    """

    num_trees: int = 200
    learning_rate: float = 0.05
    num_leaves: int = 15
    min_data_in_leaf: int = 20
    feature_fraction: float = 1.0
    lambda_l2: float = 1.0
    ltv_objective: str = "tweedie"
    tweedie_variance_power: float = 1.5
    seed: int = 0
    num_threads: int = 1

    def __post_init__(self) -> None:
        if self.ltv_objective not in LTV_OBJECTIVES:
            raise TenureError(
                f"unknown LTV objective '{self.ltv_objective}'", f"use one of {', '.join(LTV_OBJECTIVES)}"
            )
        if not 1 < self.tweedie_variance_power < 2:
            raise TenureError(
                f"tweedie_variance_power {self.tweedie_variance_power} is not between 1 and 2", "use e.g. 1.5"
            )
        for name in ("num_trees", "num_leaves", "min_data_in_leaf", "num_threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TenureError(
                    f"{name} must be a whole number of at least 1, not '{value}'", "use e.g. 20"
                )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GBMConfig:
        """Inverse of ``dataclasses.asdict``; unknown keys are ignored."""
        names = {field.name for field in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})

    def _common_params(self) -> dict[str, Any]:
        return {
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "lambda_l2": self.lambda_l2,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.num_threads,
            "verbosity": -1,
        }

    def churn_params(self) -> dict[str, Any]:
        return {**self._common_params(), "objective": "binary"}

    def ltv_params(self) -> dict[str, Any]:
        params = {**self._common_params(), "objective": self.ltv_objective}
        if self.ltv_objective == "tweedie":
            params["tweedie_variance_power"] = self.tweedie_variance_power
        return params


class GBMModel:
    """LightGBM churn classifier + LTV regressor behind the models' interface (module docstring).

    ``fit(store, spec, filters)`` learns ``spec_``, ``vocabulary_``, ``feature_names_``,
    ``churn_booster_``, ``ltv_booster_``, ``data_window_`` and ``metrics_`` (in-sample);
    ``predict(store, spec, filters)`` returns ``PREDICTION_COLUMNS`` for the population at
    ``spec.as_of``, for the horizon and activity the model was fitted on.
    """

    def __init__(self, config: GBMConfig | None = None) -> None:
        self.config = config or GBMConfig()

    def fit(
        self,
        store: Store,
        spec: ModelSpec,
        filters: Filters | None = None,
        allow_incomplete: bool = False,
        user_ids: Collection[str] | None = None,
    ) -> GBMModel:
        """Fit both boosters on the population at ``spec.as_of`` (labels over ``[T, T + H)``).

        ``user_ids``: fit only on these users of the population (a training split); None = all.
        The global filters select users by attributes and dates; this selects them by id.
        """
        vocabulary = feature_vocabulary(store, spec)
        features = behaviour_features(store, spec, filters, vocabulary)
        targets = labels(store, spec, filters, allow_incomplete=allow_incomplete)
        if len(features) == 0:
            raise TenureError(
                f"no users started before {spec.as_of.isoformat()}",
                "choose a later as-of date or wider filters",
            )
        frame = features.merge(targets, on="user_id", how="inner", validate="one_to_one")
        if user_ids is not None:
            frame = frame[frame["user_id"].isin(set(user_ids))].reset_index(drop=True)
            if len(frame) == 0:
                raise TenureError("none of the given users is in the population", "check the user ids")
        names = vocabulary.feature_names()
        matrix = frame[names].to_numpy(dtype=float)
        churned = frame["churned"].to_numpy(dtype=float)
        ltv = frame["ltv_actual"].to_numpy(dtype=float)
        self.churn_booster_ = lgb.train(
            self.config.churn_params(),
            lgb.Dataset(matrix, label=churned, feature_name=names, params={"verbosity": -1}),
            num_boost_round=self.config.num_trees,
        )
        self.ltv_booster_ = lgb.train(
            self.config.ltv_params(),
            lgb.Dataset(matrix, label=ltv, feature_name=names, params={"verbosity": -1}),
            num_boost_round=self.config.num_trees,
        )
        self.spec_ = spec
        self.vocabulary_ = vocabulary
        self.feature_names_ = names
        data_end = store.data_end()
        first = store.query_one("SELECT min(event_time) FROM events")[0]
        self.data_window_ = {
            "first_event": None if first is None else pd.Timestamp(first).isoformat(),
            "data_end": None if data_end is None else data_end.isoformat(),
            "as_of": spec.as_of.isoformat(),
            "horizon_end": spec.horizon_end.isoformat(),
            "filters": (filters or Filters()).to_query_params(),
            "users": len(frame),
        }
        churn_prob = np.clip(self.churn_booster_.predict(matrix), 1e-15, 1 - 1e-15)
        self.metrics_ = {
            "churn_rate": float(churned.mean()),
            "mean_ltv_actual": float(ltv.mean()),
            "train_churn_log_loss": float(
                -np.mean(churned * np.log(churn_prob) + (1 - churned) * np.log(1 - churn_prob))
            ),
            "train_ltv_mean_absolute_error": float(np.mean(np.abs(self.ltv_booster_.predict(matrix) - ltv))),
        }
        return self

    def predict(
        self,
        store: Store,
        spec: ModelSpec | None = None,
        filters: Filters | None = None,
        users: Collection[str] | None = None,
    ) -> pd.DataFrame:
        """Churn probability and LTV over the horizon for each user of the population at ``spec.as_of``.

        Args:
            store: the event store (only events before ``spec.as_of`` are read; no labels).
            spec: the as-of date and population to score; None = the spec the model was fitted on.
                Its horizon and activity events must be the model's.
            filters: the global filters; None = everyone.
            users: score only the population users among these ids; None = all.

        Returns:
            DataFrame ``user_id, churn_prob, ltv_pred``, sorted by ``user_id``.
        """
        spec = scoring_spec(self.spec_, spec)
        features = behaviour_features(store, spec, filters, self.vocabulary_, users=users)
        churn_prob, ltv_pred = self._boosted(features)
        return pd.DataFrame(
            {"user_id": features["user_id"].to_numpy(), "churn_prob": churn_prob, "ltv_pred": ltv_pred}
        )

    def predict_at_instants(self, store: Store, instants: pd.DataFrame) -> pd.DataFrame:
        """``predict`` for each ``instants`` row (``user_id``, ``as_of``) at its own as-of T, in one
        features query (``behaviour_features_at_instants``) and one pass of each booster.

        Returns:
            DataFrame ``user_id, as_of, churn_prob, ltv_pred`` for the rows whose user is in the
            population at their T, sorted by as_of then user_id.
        """
        features = behaviour_features_at_instants(store, self.spec_, self.vocabulary_, instants)
        churn_prob, ltv_pred = self._boosted(features)
        return pd.DataFrame(
            {
                "user_id": features["user_id"].to_numpy(),
                "as_of": features["as_of"].to_numpy(),
                "churn_prob": churn_prob,
                "ltv_pred": ltv_pred,
            }
        )

    def _boosted(self, features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(churn probability, LTV) of each features row, from the two boosters."""
        if len(features) == 0:
            return np.zeros(0), np.zeros(0)
        matrix = features[self.feature_names_].to_numpy(dtype=float)
        return np.clip(self.churn_booster_.predict(matrix), 0.0, 1.0), self.ltv_booster_.predict(matrix)

    def save(self, directory: str | Path) -> Path:
        """Write ``churn.txt``, ``ltv.txt`` (LightGBM text) and ``model.json`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.churn_booster_.save_model(str(directory / CHURN_FILE))
        self.ltv_booster_.save_model(str(directory / LTV_FILE))
        document = {
            "kind": MODEL_KIND,
            "format_version": FORMAT_VERSION,
            "config": asdict(self.config),
            "spec": self.spec_.to_dict(),
            "features": {
                "version": FEATURE_VERSION,
                "names": self.feature_names_,
                "vocabulary": self.vocabulary_.to_dict(),
            },
            "boosters": {"churn": CHURN_FILE, "ltv": LTV_FILE},
            "data_window": self.data_window_,
            "metrics": self.metrics_,
            "saved_at": dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(),
            "versions": library_versions(lightgbm=lgb.__version__),
        }
        return write_model_json(directory, document)

    @classmethod
    def load(cls, directory: str | Path) -> GBMModel:
        """Read a model written by ``save`` (JSON and LightGBM text only; nothing is unpickled)."""
        directory = Path(directory)
        path = directory / MODEL_FILE
        if not path.exists():
            raise TenureError(f"no {MODEL_FILE} in {directory}", "point to a folder written by GBMModel.save")
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("kind") != MODEL_KIND or document.get("format_version") != FORMAT_VERSION:
            raise TenureError(
                f"{path} is not a gradient-boosting model of format {FORMAT_VERSION}",
                "refit the model with this version of Tenure",
            )
        features = document["features"]
        if features.get("version") != FEATURE_VERSION:
            raise TenureError(
                f"{path} was fitted on features of version {features.get('version')}, "
                f"this Tenure computes version {FEATURE_VERSION}",
                "refit the model with this version of Tenure",
            )
        model = cls(GBMConfig.from_dict(document["config"]))
        model.spec_ = ModelSpec.from_dict(document["spec"])
        model.vocabulary_ = FeatureVocabulary.from_dict(features["vocabulary"])
        model.feature_names_ = list(features["names"])
        if model.vocabulary_.feature_names() != model.feature_names_:
            raise TenureError(f"{path}: the feature names do not match the vocabulary", "refit the model")
        model.churn_booster_ = lgb.Booster(model_file=str(directory / CHURN_FILE))
        model.ltv_booster_ = lgb.Booster(model_file=str(directory / LTV_FILE))
        model.data_window_ = dict(document["data_window"])
        model.metrics_ = dict(document["metrics"])
        return model
