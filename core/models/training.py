"""Train, evaluate, save and score the churn/LTV models: what ``python -m core train|score`` runs.

Definitions (docs/METRICS.md, "Training and scoring from the command line"):

- **Splits** of a spec with as-of date T and horizon H:
  - ``users``: the population at T is split 80/20 by ``core.evaluation.user_split(user_ids,
    0.2, seed)``; the models are fitted on the 80% at T (labels in ``[T, T + H)``) and
    evaluated on the other 20% at T.
  - ``backtest``: the models are fitted on every user of the population at T - H (labels in
    ``[T - H, T)``, ``core.evaluation.backtest_dates``) and evaluated on every user of the
    population at T.
- **Validation users**: before fitting, the users a split would fit on are split again by
  ``validation_mask`` (``user_split`` of ``"validation:" + user_id`` with share 0.2 and the same
  seed: a hash independent of the evaluation split). The models are fitted on the rest (the
  **fitted users**) and predict churn for the validation users at the fit as-of date, whose
  labels come from the same window as the fitted users'.
- **Calibration**: an isotonic and a temperature calibrator (``core.evaluation``) are fitted on
  the validation users' raw churn probabilities and labels. Both minimise the log loss on the
  users they are fitted on, and temperature scaling is one of the non-decreasing maps isotonic
  regression chooses among, so their log loss on the validation users themselves always favours
  isotonic; they are compared by ``CALIBRATION_FOLDS``-fold cross-validated log loss on the
  validation users instead (each fold scored by the calibrator fitted on the other folds), the
  lower wins (temperature on a tie), and the winner, fitted on every validation user, is saved
  as ``<model>/calibration.json`` and applied to the evaluation users' probabilities and, by
  ``score``, to every scored user. ``churn_prob`` in predictions.csv and the headline churn
  metrics are calibrated; metrics.json also holds the raw and calibrated ECE and log loss.
- **LTV level**: ``core.models.ltv_calibration``: factor = Σ actual / Σ raw predicted LTV over
  the validation users, saved as ``<model>/ltv_calibration.json`` and applied to every reported
  and scored ``ltv_pred`` (ranks unchanged).
- **Evaluation users**: the users a model is evaluated on (above); ``predictions.csv`` holds one
  row per model and evaluation user, with the observed ``churned`` (1 = no activity in
  ``[T, T + H)``, else 0) and ``ltv_actual`` (revenue in ``[T, T + H)``) of core/models/labels.py.
- **Training profile**: each ``<model>/model.json`` also gets ``training_profile``
  (core/models/training_profile.py): the event names, window and history lengths of the
  population at the fit as-of date, which scoring an uploaded file compares against.
- **Restricting a model to a set of users**: the models take the global ``Filters``, which select
  users by attributes and dates, not by id. The BG/NBD model works on an RFM summary, which is
  filtered by ``user_id`` here; ``GBMModel.fit`` takes the optional ``user_ids`` of its training
  users, and its predictions are filtered by ``user_id`` here. ``score_model(..., users=ids)``
  scores only the listed users of the population (``model_users_sql``'s ``users``; for BG/NBD
  the RFM summary is filtered): the same scores as a full run, for far less work when few
  users share an as-of date.
- **median_weeks_to_churn** (``score``): for BG/NBD, the smallest whole number of weeks w in
  1..``MAX_WEEKS`` with P(no purchase in (T, T + w weeks]) <= 0.5 (``prob_no_purchases``), empty
  when it is not reached by ``MAX_WEEKS``; for the sequence models, the smallest week w in
  0..W-1 whose survival S(w) (an activity event in ``[T + 7w days, T + H)``) is at most 0.5,
  empty when the curve stays above 0.5 through the horizon; empty for every user of a GBM model
  (it has no survival curve).

The baselines run on the CPU; the sequence models on the device ``--device`` picks.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.errors import TenureError
from core.evaluation import (
    IsotonicCalibrator,
    TemperatureCalibrator,
    backtest_dates,
    evaluate_churn,
    evaluate_ltv,
    expected_calibration_error,
    log_loss,
    logits_from_probabilities,
    metrics_table,
    reliability_table,
    user_split,
    write_metrics_json,
)
from core.export import to_safe_csv
from core.models.artifacts import MODEL_FILE
from core.models.btyd import BTYDModel, rfm_summary, rfm_summary_at_instants
from core.models.choices import (
    AVAILABLE_MODELS,
    DEVICES,
    MODEL_CHOICES,
    PLANNED_MODELS,
    SEQUENCE_MODELS,
    SPLITS,
)
from core.models.gbm import GBMConfig, GBMModel
from core.models.labels import check_complete, labels
from core.models.ltv_calibration import fit_ltv_scale, load_ltv_scale, write_ltv_scale
from core.models.spec import ModelSpec
from core.models.training_profile import training_profile, write_training_profile
from core.population import Filters
from core.store import Store

TEST_SHARE = 0.2
MAX_WEEKS = 520
PREDICTION_COLUMNS = ("model", "user_id", "churn_prob", "ltv_pred", "churned", "ltv_actual")
SCORE_COLUMNS = ("user_id", "churn_prob", "ltv_pred", "median_weeks_to_churn")
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"
VALIDATION_SHARE = 0.2
VALIDATION_SALT = "validation:"
CALIBRATION_FILE = "calibration.json"
RELIABILITY_FILE = "reliability.csv"
CALIBRATION_FOLDS = 5
CALIBRATORS = ("temperature", "isotonic")  # in this order on a tie

Calibrator = TemperatureCalibrator | IsotonicCalibrator

Progress = Callable[[float, str], None]


def _no_progress(fraction: float, message: str) -> None:
    return None


def parse_as_of(text: str) -> dt.datetime:
    """``YYYY-MM-DD`` (midnight UTC) or ``YYYY-MM-DDTHH:MM:SS`` -> naive UTC datetime."""
    try:
        moment = dt.datetime.fromisoformat(str(text).strip())
    except ValueError as error:
        raise TenureError(f"--as-of '{text}' is not a date", "write it as YYYY-MM-DD (UTC)") from error
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment


def resolve_models(name: str) -> tuple[list[str], list[str]]:
    """``--model`` -> (models to train, planned models skipped)."""
    if name == "all":
        return list(AVAILABLE_MODELS), list(PLANNED_MODELS)
    if name not in AVAILABLE_MODELS:
        raise TenureError(f"unknown model '{name}'", f"use one of {', '.join(MODEL_CHOICES)}")
    return [name], []


@dataclasses.dataclass(frozen=True)
class SplitPlan:
    """Who a split fits on and evaluates on (module docstring).

    Attributes:
        fit_spec: the spec the models are fitted at (as-of T, or T - H in a backtest).
        fit_users: the user ids fitted on (of the population at ``fit_spec.as_of``, less the
            validation users).
        eval_labels: labels (``user_id, churned, ltv_actual``) of the evaluation users at T.
        population: users of the population at T.
        validation_labels: labels at ``fit_spec.as_of`` of the validation users (the
            calibrators are fitted on them).
    """

    fit_spec: ModelSpec
    fit_users: frozenset[str]
    eval_labels: pd.DataFrame
    population: int
    validation_labels: pd.DataFrame


def validation_mask(user_ids: Sequence[Any], seed: int) -> np.ndarray:
    """True for validation users: ``user_split(["validation:" + str(id)], 0.2, seed)``."""
    return user_split([VALIDATION_SALT + str(user) for user in user_ids], VALIDATION_SHARE, seed)


def _carve_validation(
    fit_spec: ModelSpec, candidates: pd.DataFrame, eval_labels: pd.DataFrame, population: int, seed: int
) -> SplitPlan:
    """Split the users a split would fit on into fitted and validation users (module docstring)."""
    validation = validation_mask(candidates["user_id"].tolist(), seed)
    if validation.all() or not validation.any():
        raise TenureError(
            f"the {len(candidates)} users to fit on cannot be split into fitting and validation users",
            "choose a later as-of date or wider filters",
        )
    fit_users = frozenset(candidates.loc[~validation, "user_id"].astype(str))
    validation_labels = candidates[validation].reset_index(drop=True)
    return SplitPlan(fit_spec, fit_users, eval_labels, population, validation_labels)


def plan_split(store: Store, spec: ModelSpec, split: str, seed: int, filters: Filters | None) -> SplitPlan:
    """Evaluation labels at T and the training users of ``split`` (``users`` or ``backtest``)."""
    if split not in SPLITS:
        raise TenureError(f"unknown split '{split}'", f"use one of {', '.join(SPLITS)}")
    at_t = labels(store, spec, filters)
    if len(at_t) == 0:
        raise TenureError(f"no users started before {spec.as_of.isoformat()}", "choose a later as-of date")
    if split == "users":
        test = user_split(at_t["user_id"], TEST_SHARE, seed)
        if test.all() or not test.any():
            raise TenureError(
                f"the {len(at_t)} users cannot be split 80/20", "choose a later as-of date or wider filters"
            )
        candidates = at_t[~test].reset_index(drop=True)
        return _carve_validation(spec, candidates, at_t[test].reset_index(drop=True), len(at_t), seed)
    dates = backtest_dates(spec.as_of, spec.horizon_days)
    fit_spec = dataclasses.replace(spec, as_of=dates.train_as_of.to_pydatetime())
    fit_population = labels(store, fit_spec, filters)
    if len(fit_population) == 0:
        raise TenureError(
            f"no users started before {fit_spec.as_of.isoformat()} (the backtest's training as-of date)",
            "choose a later as-of date or a shorter horizon",
        )
    return _carve_validation(fit_spec, fit_population, at_t, len(at_t), seed)


def _btyd_summary(
    store: Store, spec: ModelSpec, filters: Filters | None, users: Collection[str]
) -> pd.DataFrame:
    """The RFM summary at ``spec.as_of`` of ``users`` only (the adapter from a spec to BG/NBD)."""
    summary = rfm_summary(store, spec.as_of, filters)
    return summary[summary["user_id"].isin(set(users))].reset_index(drop=True)


def _predict_both(
    model: Any, store: Store, plan: SplitPlan, spec: ModelSpec, filters: Filters | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A fitted model's predictions for the evaluation users at T and the validation users at the
    fit as-of date; one pass over the population when both dates are T (the users split)."""
    at_t = model.predict(store, spec, filters)
    at_fit = at_t if plan.fit_spec == spec else model.predict(store, plan.fit_spec, filters)
    predicted = at_t[at_t["user_id"].isin(set(plan.eval_labels["user_id"]))]
    validation = at_fit[at_fit["user_id"].isin(set(plan.validation_labels["user_id"]))]
    return predicted, validation


def _fit_predict(
    name: str,
    store: Store,
    plan: SplitPlan,
    spec: ModelSpec,
    filters: Filters | None,
    gbm_config: GBMConfig,
    sequence_config: Any = None,
    progress: Progress | None = None,
) -> tuple[Any, pd.DataFrame, pd.DataFrame]:
    """Fit model ``name`` on the plan's fitted users.

    Returns:
        The model, its raw predictions for the evaluation users at T and for the validation
        users at the fit as-of date (columns ``user_id, churn_prob, ltv_pred``).
    """
    eval_users = set(plan.eval_labels["user_id"])
    validation_users = set(plan.validation_labels["user_id"])
    columns = ["user_id", "churn_prob", "ltv_pred"]
    if name == "btyd":
        model = BTYDModel(horizon_days=spec.horizon_days)
        model.fit(_btyd_summary(store, plan.fit_spec, filters, plan.fit_users), as_of=plan.fit_spec.as_of)
        predicted = model.predict(_btyd_summary(store, spec, filters, eval_users))
        validation = model.predict(_btyd_summary(store, plan.fit_spec, filters, validation_users))
    elif name in SEQUENCE_MODELS:
        from core.models.sequence import SequenceModel

        model = SequenceModel(dataclasses.replace(sequence_config, encoder=name)).fit(
            store, plan.fit_spec, filters, user_ids=plan.fit_users, progress=progress
        )
        predicted, validation = _predict_both(model, store, plan, spec, filters)
    else:
        model = GBMModel(gbm_config).fit(store, plan.fit_spec, filters, user_ids=plan.fit_users)
        predicted, validation = _predict_both(model, store, plan, spec, filters)
    return (
        model,
        predicted[columns].reset_index(drop=True),
        validation[columns].reset_index(drop=True),
    )


def apply_calibrator(calibrator: Calibrator, p: Any) -> np.ndarray:
    """Calibrated churn probabilities of raw probabilities ``p`` (temperature works on logits)."""
    if isinstance(calibrator, TemperatureCalibrator):
        return calibrator.transform(logits_from_probabilities(p))
    return calibrator.transform(p)


def _fit_calibrator(kind: str, p: np.ndarray, y: np.ndarray) -> Calibrator:
    if kind == "temperature":
        return TemperatureCalibrator().fit(logits_from_probabilities(p), y)
    return IsotonicCalibrator().fit(p, y)


def choose_calibrator(
    user_ids: Sequence[Any], p: Any, y: Any, seed: int
) -> tuple[Calibrator, dict[str, dict[str, float]]]:
    """Fit both calibrators on validation users; keep the lower cross-validated log loss.

    The validation users, ordered by ``user_id``, are dealt into ``CALIBRATION_FOLDS`` folds by a
    seeded permutation; each fold is scored by the calibrator fitted on the other folds.

    Returns:
        The chosen calibrator fitted on every validation user, and per kind
        ``{"validation_log_loss": in-sample, "cross_validated_log_loss": out-of-fold}`` (plus
        ``temperature`` for temperature scaling).
    """
    probabilities = np.asarray(p, dtype=float)
    labels = np.asarray(y, dtype=float)
    if len(probabilities) < 2 * CALIBRATION_FOLDS:
        raise TenureError(
            f"{len(probabilities)} validation users are too few to calibrate on",
            "choose a later as-of date or wider filters",
        )
    order = np.argsort(np.asarray([str(user) for user in user_ids]), kind="stable")
    folds = np.empty(len(probabilities), dtype=int)
    folds[order] = np.random.default_rng(int(seed)).permutation(len(probabilities)) % CALIBRATION_FOLDS
    fitted: dict[str, Calibrator] = {}
    candidates: dict[str, dict[str, float]] = {}
    for kind in CALIBRATORS:
        fitted[kind] = _fit_calibrator(kind, probabilities, labels)
        out_of_fold = np.empty(len(probabilities))
        for fold in range(CALIBRATION_FOLDS):
            held = folds == fold
            rest = _fit_calibrator(kind, probabilities[~held], labels[~held])
            out_of_fold[held] = apply_calibrator(rest, probabilities[held])
        candidates[kind] = {
            "validation_log_loss": log_loss(labels, apply_calibrator(fitted[kind], probabilities)),
            "cross_validated_log_loss": log_loss(labels, out_of_fold),
        }
    candidates["temperature"]["temperature"] = fitted["temperature"].temperature_
    chosen = min(CALIBRATORS, key=lambda kind: candidates[kind]["cross_validated_log_loss"])
    return fitted[chosen], candidates


def write_calibrator(directory: str | Path, calibrator: Calibrator) -> Path:
    """Write ``calibrator.to_dict()`` as ``directory/calibration.json``; returns the path."""
    path = Path(directory) / CALIBRATION_FILE
    path.write_text(json.dumps(calibrator.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def load_calibrator(directory: str | Path) -> Calibrator | None:
    """The calibrator in ``directory/calibration.json``, or None when the folder has none."""
    path = Path(directory) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise TenureError(f"{path} is not valid JSON", "train the model again") from error
    kind = document.get("kind") if isinstance(document, dict) else None
    if kind == TemperatureCalibrator.kind:
        return TemperatureCalibrator.from_dict(document)
    if kind == IsotonicCalibrator.kind:
        return IsotonicCalibrator.from_dict(document)
    raise TenureError(f"{path} has unknown calibrator kind '{kind}'", "train the model again")


def _reliability(churned: np.ndarray, raw: np.ndarray, calibrated: np.ndarray) -> pd.DataFrame:
    """``reliability_table`` of the raw and the calibrated probabilities, column ``which``."""
    return pd.concat(
        [
            reliability_table(churned, raw).assign(which="raw"),
            reliability_table(churned, calibrated).assign(which="calibrated"),
        ],
        ignore_index=True,
    )


def train_models(
    store: Store,
    spec: ModelSpec,
    models: Sequence[str],
    split: str,
    seed: int,
    out_dir: str | Path,
    progress: Progress | None = None,
    *,
    filters: Filters | None = None,
    gbm_config: GBMConfig | None = None,
    device: str = "auto",
    skipped: Sequence[str] = (),
    sequence_config: Any = None,
) -> pd.DataFrame:
    """Fit, evaluate and save each model; write ``metrics.json`` and ``predictions.csv``.

    Args:
        store: the event store.
        spec: as-of date T, horizon H, activity and population (the evaluation's).
        models: names among ``AVAILABLE_MODELS``.
        split: ``users`` or ``backtest`` (module docstring).
        seed: seeds the user and validation splits, the calibration folds and the GBM.
        out_dir: written: ``<model>/`` (each model's saved folder, with ``calibration.json``
            and ``reliability.csv``), ``metrics.json``, ``predictions.csv`` (columns
            ``PREDICTION_COLUMNS``, calibrated ``churn_prob``).
        progress: called with (fraction done, message).
        filters: the global filters; None = everyone.
        gbm_config: the GBM settings (its seed is replaced by ``seed``); None = defaults.
        device: where the sequence models train and score (``auto``: CUDA, then MPS, then
            CPU); the baselines run on the CPU. Requested and used devices go to metrics.json.
        sequence_config: a ``core.models.sequence.SequenceConfig`` for ``seq`` and ``gru`` (its
            encoder, seed and device are replaced); None = defaults.
        skipped: planned models that were asked for but not trained (recorded).

    Returns:
        ``core.evaluation.metrics_table`` of the models on the evaluation users (churn metrics
        of the calibrated probabilities).
    """
    progress = progress or _no_progress
    unknown = [name for name in models if name not in AVAILABLE_MODELS]
    if unknown or not models:
        raise TenureError(f"cannot train {unknown or 'no model'}", f"use {', '.join(AVAILABLE_MODELS)}")
    if device not in DEVICES:
        raise TenureError(f"unknown device '{device}'", f"use one of {', '.join(DEVICES)}")
    gbm_config = dataclasses.replace(gbm_config or GBMConfig(), seed=int(seed))
    used_device = "cpu"
    if any(name in SEQUENCE_MODELS for name in models):
        from core.models.device import pick_device
        from core.models.sequence_config import SequenceConfig

        used_device = pick_device(device).type
        sequence_config = dataclasses.replace(
            sequence_config or SequenceConfig(), seed=int(seed), device=used_device
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_complete(store, spec)
    progress(0.0, f"labels and {split} split at {spec.as_of.isoformat()}")
    plan = plan_split(store, spec, split, seed, filters)
    results: dict[str, tuple[Any, Any]] = {}
    calibration: dict[str, dict[str, Any]] = {}
    frames = []
    profile = training_profile(store, plan.fit_spec.as_of, filters)
    for index, name in enumerate(models):
        progress(index / len(models), f"fitting {name} on {len(plan.fit_users)} users")

        def model_progress(fraction: float, message: str, index: int = index) -> None:
            progress((index + 0.9 * fraction) / len(models), message)

        model, predicted, validation = _fit_predict(
            name, store, plan, spec, filters, gbm_config, sequence_config, model_progress
        )
        model.save(out / name)
        write_training_profile(out / name, profile)
        checked = plan.validation_labels.merge(validation, on="user_id", how="inner", validate="one_to_one")
        frame = plan.eval_labels.merge(predicted, on="user_id", how="inner", validate="one_to_one")
        if len(frame) == 0 or len(checked) == 0:
            raise TenureError(
                f"model '{name}' scored none of the evaluation or validation users", "check the filters"
            )
        calibrator, candidates = choose_calibrator(
            checked["user_id"].tolist(), checked["churn_prob"], checked["churned"], seed
        )
        write_calibrator(out / name, calibrator)
        ltv_scale = fit_ltv_scale(checked["ltv_actual"], checked["ltv_pred"])
        write_ltv_scale(out / name, ltv_scale)
        raw_ltv = frame["ltv_pred"].to_numpy(dtype=float)
        frame["ltv_pred"] = ltv_scale.apply(raw_ltv)
        churned = frame["churned"].to_numpy(dtype=float)
        raw = frame["churn_prob"].to_numpy(dtype=float)
        calibrated = apply_calibrator(calibrator, raw)
        frame["churn_prob"] = calibrated
        results[name] = (
            evaluate_churn(churned, calibrated),
            evaluate_ltv(frame["ltv_actual"].to_numpy(dtype=float), frame["ltv_pred"].to_numpy(dtype=float)),
        )
        (out / name / RELIABILITY_FILE).write_text(
            to_safe_csv(_reliability(churned, raw, calibrated)), encoding="utf-8"
        )
        calibration[name] = {
            "method": calibrator.kind,
            "validation_users": len(checked),
            "candidates": candidates,
            "evaluation": {
                which: {"ece": expected_calibration_error(churned, p), "log_loss": log_loss(churned, p)}
                for which, p in (("raw", raw), ("calibrated", calibrated))
            },
            "ltv": {
                **ltv_scale.to_dict(),
                "evaluation": {
                    "mean_actual": float(frame["ltv_actual"].mean()),
                    "mean_predicted_raw": float(raw_ltv.mean()),
                    "mean_predicted_calibrated": float(frame["ltv_pred"].mean()),
                },
            },
        }
        frames.append(frame.assign(model=name, churned=frame["churned"].astype(int)))
    progress(0.95, f"writing {METRICS_FILE} and {PREDICTIONS_FILE}")
    predictions = pd.concat(frames, ignore_index=True)[list(PREDICTION_COLUMNS)]
    (out / PREDICTIONS_FILE).write_text(to_safe_csv(predictions), encoding="utf-8")
    data_end = store.data_end()
    first_event = store.query_one("SELECT min(event_time) FROM events")[0]
    write_metrics_json(
        out / METRICS_FILE,
        results,
        extra={
            "as_of": spec.as_of,
            "horizon_days": spec.horizon_days,
            "split": split,
            "seed": int(seed),
            "test_share": TEST_SHARE if split == "users" else None,
            "fit_as_of": plan.fit_spec.as_of,
            "eval_as_of": spec.as_of,
            "device": {"requested": device, "used": used_device},
            "spec": spec.to_dict(),
            "filters": (filters or Filters()).to_query_params(),
            "users": {
                "population": plan.population,
                "fit": len(plan.fit_users),
                "validation": len(plan.validation_labels),
                "evaluation": len(plan.eval_labels),
            },
            "validation_share": VALIDATION_SHARE,
            "calibration": calibration,
            "data_window": {
                "first_event": None if first_event is None else pd.Timestamp(first_event),
                "data_end": data_end,
                "fit_labels": [plan.fit_spec.as_of, plan.fit_spec.horizon_end],
                "eval_labels": [spec.as_of, spec.horizon_end],
            },
            "gbm_config": dataclasses.asdict(gbm_config) if "gbm" in models else None,
            "sequence_config": dataclasses.asdict(sequence_config)
            if any(name in SEQUENCE_MODELS for name in models)
            else None,
            "skipped_models": list(skipped),
        },
    )
    progress(1.0, f"wrote {out}")
    return metrics_table(results)


def model_kind(directory: str | Path) -> str:
    """The ``kind`` written in ``directory/model.json``."""
    path = Path(directory) / MODEL_FILE
    if not path.is_file():
        raise TenureError(f"no {MODEL_FILE} in {directory}", "point --model to a folder written by train")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise TenureError(
            f"{path} is not valid JSON", "point --model to a folder written by train"
        ) from error
    kind = document.get("kind") if isinstance(document, dict) else None
    if kind not in AVAILABLE_MODELS:
        raise TenureError(
            f"{path} has unknown model kind '{kind}'", f"Tenure loads {', '.join(AVAILABLE_MODELS)}"
        )
    return str(kind)


def median_weeks_meaning(kind: str) -> str:
    """What ``median_weeks_to_churn`` means for a model ``kind``, in words for a caption
    (docs/METRICS.md): a sequence model's survival median, BG/NBD's week of a likely purchase, or
    why the column is empty."""
    if kind in ("seq", "gru"):
        return (
            "the first week from the as-of date by which the model's survival curve is at or below 0.5; "
            "empty when it stays above 0.5 over the horizon"
        )
    if kind == "btyd":
        return (
            "the first whole week by which BG/NBD gives the user an even chance or more of having bought "
            "again; empty when the user is more likely gone than alive"
        )
    return "empty for this model kind, which predicts one horizon and has no survival curve"


def median_weeks_to_churn(model: BTYDModel, summary: pd.DataFrame, max_weeks: int = MAX_WEEKS) -> np.ndarray:
    """Smallest whole week w in 1..max_weeks with P(no purchase in (T, T + w weeks]) <= 0.5; NaN if none."""
    frequency, recency, age = (
        summary[column].to_numpy(dtype=float) for column in ("frequency", "recency", "T")
    )
    weeks = np.full(len(summary), np.nan)
    pending = np.ones(len(summary), dtype=bool)
    for week in range(1, max_weeks + 1):
        if not pending.any():
            break
        t = week * 7.0 / model.time_unit_days
        silent = model.purchase_model_.prob_no_purchases(
            t, frequency[pending], recency[pending], age[pending]
        )
        reached = np.flatnonzero(pending)[silent <= 0.5]
        weeks[reached] = week
        pending[reached] = False
    return weeks


def median_weeks_from_survival(curves: np.ndarray) -> np.ndarray:
    """Sequence models: the smallest week w (0..W-1) with S(w) <= 0.5; NaN when none.

    S(w) is the probability of an activity event in ``[T + 7w days, T + H)``: from week w on,
    the user is more likely than not to have been seen for the last time within the horizon.
    """
    weeks = np.full(len(curves), np.nan)
    if curves.size == 0:
        return weeks
    below = curves <= 0.5
    reached = below.any(axis=1)
    weeks[reached] = below[reached].argmax(axis=1)
    return weeks


def score_model(
    store: Store,
    directory: str | Path,
    as_of: dt.datetime,
    filters: Filters | None = None,
    progress: Progress | None = None,
    device: str = "auto",
    users: Collection[str] | None = None,
) -> pd.DataFrame:
    """Score every user of the population at ``as_of`` with the saved model in ``directory``.

    ``users`` (user ids; None = everyone) restricts the population to those ids: each of them
    gets the score a run over the whole population gives them (a user's features read only
    their own events), and ids outside the population at ``as_of`` get no row.

    Returns:
        DataFrame ``SCORE_COLUMNS`` sorted by ``user_id``, over the model's own horizon;
        ``churn_prob`` is calibrated by the folder's ``calibration.json`` when it has one;
        ``median_weeks_to_churn`` is NaN for GBM models and where not reached (module docstring).
    """
    progress = progress or _no_progress
    kind = model_kind(directory)
    data_end = store.data_end()
    if data_end is None:
        raise TenureError("the store has no events", "load events before scoring")
    if pd.Timestamp(as_of) > data_end:
        raise TenureError(
            f"--as-of {pd.Timestamp(as_of).isoformat()} is after the data's end {data_end.isoformat()}",
            "score at a date on or before the data's end",
        )
    progress(0.0, f"loading the {kind} model from {directory}")
    if kind in SEQUENCE_MODELS:
        from core.models.sequence import SequenceModel

        sequence = SequenceModel.load(directory, device=device)
        spec = dataclasses.replace(sequence.spec_, as_of=as_of)
        scored = sequence.predict(
            store,
            spec,
            filters,
            survival=True,
            progress=lambda f, m: progress(0.05 + 0.9 * f, m),
            users=users,
        )
        curves = scored[[column for column in scored.columns if column.startswith("survival_w")]]
        scored["median_weeks_to_churn"] = median_weeks_from_survival(curves.to_numpy(dtype=float))
    elif kind == "btyd":
        model = BTYDModel.load(directory)
        summary = rfm_summary(store, as_of, filters, time_unit_days=model.time_unit_days)
        if users is not None:
            summary = summary[summary["user_id"].isin({str(user) for user in users})].reset_index(drop=True)
        progress(0.5, f"scoring {len(summary)} users")
        scored = model.predict(summary)[["user_id", "churn_prob", "ltv_pred"]]
        scored["median_weeks_to_churn"] = median_weeks_to_churn(model, summary)
    else:
        gbm = GBMModel.load(directory)
        spec = dataclasses.replace(gbm.spec_, as_of=as_of)
        progress(0.5, "scoring")
        scored = gbm.predict(store, spec, filters, users=users)
        scored["median_weeks_to_churn"] = np.nan
    scored = _calibrated(directory, scored)
    progress(1.0, f"scored {len(scored)} users")
    scored["median_weeks_to_churn"] = scored["median_weeks_to_churn"].astype("Int64")
    return scored[list(SCORE_COLUMNS)].sort_values("user_id").reset_index(drop=True)


def score_model_at_instants(store: Store, directory: str | Path, instants: pd.DataFrame) -> pd.DataFrame:
    """``score_model`` of each ``instants`` row (``user_id``, ``as_of``) at its own as-of T, in
    one pass whatever the model's kind (the features, summaries or histories of every T from one
    query each, where a run per T read the store once per T).

    Every T must be on or before the data's end. Returns ``user_id, as_of, churn_prob, ltv_pred``
    (calibrated and scaled as ``score_model``'s) for the rows whose user is in the population at
    their T.
    """
    kind = model_kind(directory)
    if kind in SEQUENCE_MODELS:
        from core.models.sequence import SequenceModel

        scored = SequenceModel.load(directory).predict_at_instants(store, instants)
    elif kind == "btyd":
        model = BTYDModel.load(directory)
        summary = rfm_summary_at_instants(store, instants, time_unit_days=model.time_unit_days)
        scored = model.predict(summary)[["user_id", "churn_prob", "ltv_pred"]]
        scored.insert(1, "as_of", summary["as_of"].to_numpy())
    else:
        scored = GBMModel.load(directory).predict_at_instants(store, instants)
    return _calibrated(directory, scored)


def _calibrated(directory: str | Path, scored: pd.DataFrame) -> pd.DataFrame:
    """``scored`` with the folder's churn calibration and LTV scale applied, when it has them."""
    calibrator = load_calibrator(directory)
    if calibrator is not None and len(scored) > 0:
        scored["churn_prob"] = apply_calibrator(calibrator, scored["churn_prob"].to_numpy(dtype=float))
    ltv_scale = load_ltv_scale(directory)
    if ltv_scale is not None:
        scored["ltv_pred"] = ltv_scale.apply(scored["ltv_pred"].to_numpy(dtype=float))
    return scored


def write_scores(scores: pd.DataFrame, path: str | Path) -> Path:
    """Write ``scores`` as formula-safe CSV; returns the path."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_safe_csv(scores), encoding="utf-8")
    return path
