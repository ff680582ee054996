"""Cached reads of training runs for the Models page.

A run's files never change after it is registered (retraining writes a new folder), but a folder
registered again in place would: entries are keyed by the models' ids and paths and by the
modification times of the files read, so they drop when a file is rewritten.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import streamlit as st

from core.models import curves, results, timeline
from core.models.training import PREDICTIONS_FILE, RELIABILITY_FILE
from core.store import Store

KEY_COLUMNS = ["model_id", "run_dir", "model_name", "path"]


class Comparison(NamedTuple):
    """The chosen models' evaluation predictions and what the page draws from them."""

    predictions: pd.DataFrame
    roc: pd.DataFrame
    pr: pd.DataFrame
    deciles: pd.DataFrame
    reliability: pd.DataFrame


def _modified(path: Path) -> float:
    return path.stat().st_mtime if path.is_file() else 0.0


@st.cache_data(show_spinner=False, max_entries=8)
def _comparison(models_key: tuple[tuple[str, ...], ...], stamps: tuple[float, ...]) -> Comparison:
    models = pd.DataFrame(list(models_key), columns=KEY_COLUMNS)
    predictions = results.model_predictions(models)
    return Comparison(
        predictions=predictions,
        roc=curves.roc_by_model(predictions, by="model_id"),
        pr=curves.pr_by_model(predictions, by="model_id"),
        deciles=curves.deciles_by_model(predictions, by="model_id"),
        reliability=results.model_reliability(models),
    )


def comparison(models: pd.DataFrame) -> Comparison:
    """``Comparison`` of registered models (rows of ``registry.list_models``)."""
    key = tuple(tuple(str(value) for value in row) for row in models[KEY_COLUMNS].itertuples(index=False))
    stamps = tuple(
        _modified(Path(row.run_dir) / PREDICTIONS_FILE) + _modified(Path(row.path) / RELIABILITY_FILE)
        for row in models.itertuples(index=False)
    )
    return _comparison(key, stamps)


@st.cache_data(show_spinner=False, max_entries=32)
def _user_explanation(
    _store: Store, version: str, model_path: str, stamp: float, user_id: str, as_of: dt.datetime
) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    path = Path(model_path)
    return (
        timeline.attributions(path, _store, user_id, as_of),
        timeline.user_survival(path, _store, user_id, as_of),
    )


def user_explanation(
    store: Store, model_path: str, user_id: str, as_of: dt.datetime
) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """(attributions, weekly survival) of one user, or None for model kinds without them; computed
    once per store version, model folder and user (a sequence model loads and runs integrated
    gradients: about a second)."""
    stamp = _modified(Path(model_path) / "model.json")
    return _user_explanation(store, store.version(), str(model_path), stamp, str(user_id), as_of)
