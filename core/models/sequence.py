"""The sequence models (``seq``: transformer, ``gru``: GRU) behind the models' interface.

``fit(store, spec, filters, user_ids)`` trains one multi-task network (core/models/sequence_net.py)
on the users' histories (core/models/sequences.py); ``predict(store, spec, filters)`` returns
``user_id, churn_prob, ltv_pred`` and, with ``survival=True``, the weekly survival curve.

Training (docs/METRICS.md, "Sequence models"):

- a seeded share of the fitted users (``early_stopping_share``, by a hash of
  ``"early-stopping:" + user_id``) is kept apart; after each epoch the loss on them is measured,
  the best epoch's weights are kept, and training stops after ``patience`` epochs without a
  better loss (or at ``max_epochs``);
- loss = churn BCE + ZILN NLL + hazard NLL, AdamW, gradient norm clipped at ``clip_norm``;
- batches are **bucketed by length**: the users are sorted by history length (ties in a seeded
  random order), cut into batches, and the batches shuffled each epoch, so that a batch pads
  only to its own longest history;
- on CUDA: bf16 autocast and pinned host memory; seeds fix the initial weights, dropout and the
  batch order, so two CPU runs with one seed give the same model.

Scoring reads the population in shards of about ``score_shard_users`` users (by ``user_key``),
so memory stays bounded whatever the number of users.

Saved as ``model.json`` (config, vocabularies, scaler, data window, metrics, versions) and
``weights.safetensors``; loading reads tensors only, never a pickle.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
import math
import threading
from collections.abc import Callable, Collection
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from core.errors import TenureError
from core.evaluation import user_split
from core.models.artifacts import MODEL_FILE, library_versions, write_model_json
from core.models.device import pick_device
from core.models.features import FeatureVocabulary, feature_vocabulary
from core.models.labels import model_users_sql
from core.models.sequence_config import ENCODERS, SequenceConfig
from core.models.sequence_net import (
    NetConfig,
    SequenceNet,
    hazard_loss,
    survival_curve,
    ziln_expected_value,
    ziln_loss,
)
from core.models.sequences import (
    NUMERIC_FEATURES,
    SequenceInputs,
    SequenceVocabulary,
    build_inputs,
    build_inputs_at_instants,
    horizon_weeks,
    sequence_vocabulary,
)
from core.models.spec import ModelSpec, scoring_spec
from core.population import Filters
from core.store import Store

FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
EARLY_STOPPING_SALT = "early-stopping:"

Progress = Callable[[float, str], None]


class TrainingCancelled(TenureError):
    """Raised inside ``fit`` when its cancel event is set; nothing is saved."""


def _signed_log(values: np.ndarray) -> np.ndarray:
    return np.sign(values) * np.log1p(np.abs(values))


def _bucketed_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Row positions in batches of similar length, the batches in a seeded random order."""
    order = np.lexsort((rng.permutation(len(lengths)), lengths))
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    return [batches[index] for index in rng.permutation(len(batches))]


class SequenceModel:
    """A transformer or GRU churn / LTV / survival model (module docstring)."""

    def __init__(self, config: SequenceConfig | None = None) -> None:
        self.config = config or SequenceConfig()

    # -- tensors -----------------------------------------------------------------------------
    def _static(self, inputs: SequenceInputs) -> np.ndarray:
        transformed = (_signed_log(inputs.static) - self.static_mean_) / self.static_scale_
        return np.nan_to_num(transformed, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)

    def _batch(self, inputs: SequenceInputs, rows: np.ndarray, static: np.ndarray) -> dict[str, torch.Tensor]:
        """The tensors of ``rows``, padded to their own longest history, on the model's device."""
        lengths = inputs.lengths[rows]
        width = int(lengths.max()) + 1 if len(rows) else 1
        arrays = {
            "events": inputs.events[rows, :width],
            "items": inputs.items[rows, :width],
            "weekday": inputs.weekday[rows, :width],
            "hour": inputs.hour[rows, :width],
            "numeric": inputs.numeric[rows, :width],
            "mask": np.arange(width)[None, :] <= lengths[:, None],
            "lengths": lengths,
            "static": static[rows],
        }
        if inputs.churned is not None:
            arrays["churned"] = inputs.churned[rows]
            arrays["ltv"] = inputs.ltv[rows]
            arrays["weeks_active"] = inputs.weeks_active[rows]
        pin = self.device_.type == "cuda"
        batch = {}
        for name, array in arrays.items():
            tensor = torch.from_numpy(np.ascontiguousarray(array))
            if pin:
                tensor = tensor.pin_memory()
            batch[name] = tensor.to(self.device_, non_blocking=pin)
        return batch

    def _autocast(self) -> Any:
        if self.device_.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with self._autocast():
            out = self.net_(batch)
        out = {name: value.float() for name, value in out.items()}
        churn = torch.nn.functional.binary_cross_entropy_with_logits(out["churn_logit"], batch["churned"])
        ltv = ziln_loss(out["spend_logit"], out["mu"], out["sigma"], batch["ltv"])
        hazards = hazard_loss(out["hazard_logits"], batch["weeks_active"])
        return churn + ltv + hazards

    # -- fitting -----------------------------------------------------------------------------
    def fit(
        self,
        store: Store,
        spec: ModelSpec,
        filters: Filters | None = None,
        user_ids: Collection[str] | None = None,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> SequenceModel:
        """Train on the population at ``spec.as_of`` (labels over ``[T, T + H)``); ``user_ids``
        keeps only those users (a training split)."""
        config = self.config
        progress = progress or (lambda fraction, message: None)
        torch.manual_seed(config.seed)
        rng = np.random.default_rng(config.seed)
        self.device_ = pick_device(config.device)
        self.spec_ = spec
        self.vocabulary_ = sequence_vocabulary(store, spec)
        self.feature_vocabulary_ = feature_vocabulary(store, spec)
        progress(0.0, f"reading histories at {spec.as_of.isoformat()}")
        inputs = build_inputs(
            store,
            spec,
            filters,
            self.vocabulary_,
            self.feature_vocabulary_,
            config.max_events,
            with_labels=True,
        )
        if user_ids is not None:
            inputs = inputs.subset(np.isin(inputs.user_ids, np.asarray(sorted(set(map(str, user_ids))))))
        if len(inputs) < 2:
            raise TenureError(
                f"{len(inputs)} users to fit the {config.encoder} model on",
                "choose a later as-of date or wider filters",
            )
        held = user_split(
            [EARLY_STOPPING_SALT + user for user in inputs.user_ids], config.early_stopping_share, config.seed
        )
        if held.all() or not held.any():
            held = np.zeros(len(inputs), dtype=bool)
            held[rng.permutation(len(inputs))[: max(1, len(inputs) // 10)]] = True
        train_rows = np.flatnonzero(~held)
        signed = _signed_log(inputs.static[train_rows])
        self.static_mean_ = np.nanmean(np.where(np.isfinite(signed), signed, np.nan), axis=0)
        self.static_mean_ = np.nan_to_num(self.static_mean_, nan=0.0)
        scale = np.nanstd(np.where(np.isfinite(signed), signed, np.nan), axis=0)
        self.static_scale_ = np.where(np.nan_to_num(scale, nan=0.0) > 0, np.nan_to_num(scale, nan=1.0), 1.0)
        static = self._static(inputs)
        self.net_config_ = NetConfig(
            encoder=config.encoder,
            event_slots=self.vocabulary_.event_slots,
            item_slots=self.vocabulary_.item_slots,
            numeric_features=len(NUMERIC_FEATURES),
            static_features=static.shape[1],
            weeks=horizon_weeks(spec.horizon_days),
            max_events=config.max_events,
            hidden=config.hidden,
            layers=config.layers,
            heads=config.heads,
            dropout=config.dropout,
        )
        self.net_ = SequenceNet(self.net_config_).to(self.device_)
        optimiser = torch.optim.AdamW(
            self.net_.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        held_rows = np.flatnonzero(held)
        best_loss, best_state, best_epoch, stale = math.inf, None, 0, 0
        history = []
        for epoch in range(1, config.max_epochs + 1):
            self.net_.train()
            train_loss, seen = 0.0, 0
            for rows in _bucketed_batches(inputs.lengths[train_rows], config.batch_size, rng):
                if cancel is not None and cancel.is_set():
                    raise TrainingCancelled(f"training of {config.encoder} was cancelled", "start it again")
                batch = self._batch(inputs, train_rows[rows], static)
                loss = self._loss(batch)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.net_.parameters(), config.clip_norm)
                optimiser.step()
                train_loss += float(loss.detach()) * len(rows)
                seen += len(rows)
            held_loss = self._mean_loss(inputs, held_rows, static)
            history.append({"epoch": epoch, "train_loss": train_loss / seen, "validation_loss": held_loss})
            if held_loss < best_loss - 1e-6:
                best_loss, best_epoch, stale = held_loss, epoch, 0
                best_state = copy.deepcopy(self.net_.state_dict())
            else:
                stale += 1
            progress(
                epoch / config.max_epochs,
                f"{config.encoder} epoch {epoch}: train loss {train_loss / seen:.4f}, "
                f"validation loss {held_loss:.4f} (best {best_loss:.4f} at epoch {best_epoch})",
            )
            if stale >= config.patience:
                break
        if best_state is not None:
            self.net_.load_state_dict(best_state)
        self.net_.eval()
        data_end = store.data_end()
        first = store.query_one("SELECT min(event_time) FROM events")[0]
        lengths = inputs.lengths
        self.data_window_ = {
            "first_event": None if first is None else pd.Timestamp(first).isoformat(),
            "data_end": None if data_end is None else data_end.isoformat(),
            "as_of": spec.as_of.isoformat(),
            "horizon_end": spec.horizon_end.isoformat(),
            "filters": (filters or Filters()).to_query_params(),
            "users": len(inputs),
            "history_length": {
                "min": int(lengths.min()),
                "median": float(np.median(lengths)),
                "max": int(lengths.max()),
                "share_at_cap": float(np.mean(lengths >= config.max_events)),
            },
        }
        self.metrics_ = {
            "epochs_run": len(history),
            "best_epoch": best_epoch,
            "best_validation_loss": best_loss,
            "early_stopping_users": int(held.sum()),
            "training_users": int((~held).sum()),
            "history": history,
            "device": str(self.device_),
        }
        return self

    @torch.no_grad()
    def _mean_loss(self, inputs: SequenceInputs, rows: np.ndarray, static: np.ndarray) -> float:
        self.net_.eval()
        total = 0.0
        for start in range(0, len(rows), self.config.score_batch_size):
            chunk = rows[start : start + self.config.score_batch_size]
            total += float(self._loss(self._batch(inputs, chunk, static))) * len(chunk)
        return total / max(len(rows), 1)

    # -- scoring -----------------------------------------------------------------------------
    @torch.no_grad()
    def predict_inputs(self, inputs: SequenceInputs, survival: bool = False) -> pd.DataFrame:
        """Scores of already built inputs: ``user_id, churn_prob, ltv_pred`` (+ ``survival_w0..``)."""
        self.net_.eval()
        static = self._static(inputs)
        rows = np.arange(len(inputs))
        churn, ltv, curves = [], [], []
        for start in range(0, len(rows), self.config.score_batch_size):
            batch = self._batch(inputs, rows[start : start + self.config.score_batch_size], static)
            with self._autocast():
                out = self.net_(batch)
            out = {name: value.float() for name, value in out.items()}
            churn.append(torch.sigmoid(out["churn_logit"]).cpu().numpy())
            ltv.append(ziln_expected_value(out["spend_logit"], out["mu"], out["sigma"]).cpu().numpy())
            if survival:
                curves.append(survival_curve(out["hazard_logits"]).cpu().numpy())
        weeks = self.net_config_.weeks
        frame = pd.DataFrame(
            {
                "user_id": inputs.user_ids,
                "churn_prob": np.concatenate(churn) if churn else np.zeros(0),
                "ltv_pred": np.concatenate(ltv) if ltv else np.zeros(0),
            }
        )
        if survival:
            matrix = np.concatenate(curves) if curves else np.zeros((0, weeks))
            for week in range(weeks):
                frame[f"survival_w{week}"] = matrix[:, week]
        return frame

    def _population(
        self, store: Store, spec: ModelSpec, filters: Filters | None, users: Collection[str] | None = None
    ) -> int:
        population, params, _ = model_users_sql(store, spec, filters, users=users)
        return int(store.query_one(f"WITH {population} SELECT count(*) FROM model_users", params)[0])

    def predict(
        self,
        store: Store,
        spec: ModelSpec | None = None,
        filters: Filters | None = None,
        survival: bool = False,
        progress: Progress | None = None,
        users: Collection[str] | None = None,
    ) -> pd.DataFrame:
        """Scores of the population at ``spec.as_of``, read shard by shard; sorted by ``user_id``;
        ``users``: only the population users among these ids (``model_users_sql``)."""
        spec = scoring_spec(self.spec_, spec)
        progress = progress or (lambda fraction, message: None)
        population = self._population(store, spec, filters, users)
        shards = max(1, math.ceil(population / self.config.score_shard_users))
        frames = []
        for shard in range(shards):
            progress(shard / shards, f"scoring shard {shard + 1} of {shards}")
            inputs = build_inputs(
                store,
                spec,
                filters,
                self.vocabulary_,
                self.feature_vocabulary_,
                self.config.max_events,
                shard=(shards, shard) if shards > 1 else None,
                users=users,
            )
            frames.append(self.predict_inputs(inputs, survival=survival))
        progress(1.0, "scored")
        return pd.concat(frames, ignore_index=True).sort_values("user_id").reset_index(drop=True)

    def predict_at_instants(self, store: Store, instants: pd.DataFrame) -> pd.DataFrame:
        """``predict`` for each ``instants`` row (``user_id``, ``as_of``) at its own as-of T: the
        inputs of every T from one pair of queries (``build_inputs_at_instants``), where a run
        per T read the store once per T. Chunks of ``score_shard_users`` rows bound memory.

        Returns:
            DataFrame ``user_id, as_of, churn_prob, ltv_pred`` for the rows whose user is in the
            population at their T, sorted by as_of then user_id.
        """
        frames = []
        size = self.config.score_shard_users
        for start in range(0, len(instants), size):
            inputs = build_inputs_at_instants(
                store,
                self.spec_,
                instants.iloc[start : start + size],
                self.vocabulary_,
                self.feature_vocabulary_,
                self.config.max_events,
            )
            if len(inputs):
                scored = self.predict_inputs(inputs)
                scored.insert(1, "as_of", inputs.extra["as_of"])
                frames.append(scored)
        if not frames:
            return pd.DataFrame(
                {
                    "user_id": pd.Series(dtype=object),
                    "as_of": pd.Series(dtype="datetime64[us]"),
                    "churn_prob": pd.Series(dtype=float),
                    "ltv_pred": pd.Series(dtype=float),
                }
            )
        scored = pd.concat(frames, ignore_index=True)
        return scored.sort_values(["as_of", "user_id"]).reset_index(drop=True)

    # -- saving ------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``weights.safetensors`` and ``model.json`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in self.net_.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_FILE))
        import transformers

        document = {
            "kind": self.config.encoder,
            "format_version": FORMAT_VERSION,
            "config": asdict(self.config),
            "network": self.net_config_.to_dict(),
            "spec": self.spec_.to_dict(),
            "vocabulary": self.vocabulary_.to_dict(),
            "features": {
                "vocabulary": self.feature_vocabulary_.to_dict(),
                "names": self.feature_vocabulary_.feature_names(),
            },
            "scaler": {"mean": self.static_mean_.tolist(), "scale": self.static_scale_.tolist()},
            "weights": WEIGHTS_FILE,
            "data_window": self.data_window_,
            "metrics": self.metrics_,
            "saved_at": dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(),
            "versions": library_versions(torch=torch.__version__, transformers=transformers.__version__),
        }
        return write_model_json(directory, document)

    @classmethod
    def load(cls, directory: str | Path, device: str = "auto") -> SequenceModel:
        """Read a model written by ``save``: JSON and safetensors only, nothing unpickled."""
        directory = Path(directory)
        path = directory / MODEL_FILE
        if not path.exists():
            raise TenureError(f"no {MODEL_FILE} in {directory}", "point to a folder written by train")
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("kind") not in ENCODERS or document.get("format_version") != FORMAT_VERSION:
            raise TenureError(
                f"{path} is not a sequence model of format {FORMAT_VERSION}",
                "train the model again with this Tenure",
            )
        config = dataclasses.replace(SequenceConfig.from_dict(document["config"]), device=device)
        model = cls(config)
        model.device_ = pick_device(device)
        model.spec_ = ModelSpec.from_dict(document["spec"])
        model.vocabulary_ = SequenceVocabulary.from_dict(document["vocabulary"])
        model.feature_vocabulary_ = FeatureVocabulary.from_dict(document["features"]["vocabulary"])
        if model.feature_vocabulary_.feature_names() != list(document["features"]["names"]):
            raise TenureError(
                f"{path}: the feature names do not match the vocabulary", "train the model again"
            )
        model.static_mean_ = np.asarray(document["scaler"]["mean"], dtype=float)
        model.static_scale_ = np.asarray(document["scaler"]["scale"], dtype=float)
        model.net_config_ = NetConfig.from_dict(document["network"])
        model.net_ = SequenceNet(model.net_config_)
        weights = directory / str(document.get("weights", WEIGHTS_FILE))
        if not weights.is_file():
            raise TenureError(f"no {weights.name} in {directory}", "train the model again")
        model.net_.load_state_dict(load_file(str(weights)))
        model.net_.to(model.device_).eval()
        model.data_window_ = dict(document["data_window"])
        model.metrics_ = dict(document["metrics"])
        return model
