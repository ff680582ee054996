"""Cached calls into core/survival.py for the Survival page, keyed like pages/shared/cached.py:
the spec's plain-data form, the filters' URL form and ``Store.version()``; the store is passed
as ``_store`` so that Streamlit does not hash it."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from core import survival
from core.population import Filters
from core.store import Store
from core.survival import SurvivalSpec


@st.cache_data(show_spinner=False, max_entries=32)
def _durations(
    _store: Store, version: str, spec: dict[str, Any], filter_params: dict[str, str]
) -> pd.DataFrame:
    return survival.durations(_store, SurvivalSpec.from_dict(spec), Filters.from_query_params(filter_params))


def durations(store: Store, spec: SurvivalSpec, filters: Filters) -> pd.DataFrame:
    return _durations(store, store.version(), spec.to_dict(), filters.to_query_params())


@st.cache_data(show_spinner=False, max_entries=32)
def _kaplan_meier(
    _store: Store, version: str, spec: dict[str, Any], filter_params: dict[str, str]
) -> survival.KaplanMeierResult:
    frame = _durations(_store, version, spec, filter_params)
    return survival.kaplan_meier(frame, SurvivalSpec.from_dict(spec))


def kaplan_meier(store: Store, spec: SurvivalSpec, filters: Filters) -> survival.KaplanMeierResult:
    return _kaplan_meier(store, store.version(), spec.to_dict(), filters.to_query_params())


@st.cache_data(show_spinner=False, max_entries=32)
def _log_rank(
    _store: Store, version: str, spec: dict[str, Any], filter_params: dict[str, str]
) -> survival.LogRankResult:
    return survival.log_rank(_durations(_store, version, spec, filter_params))


def log_rank(store: Store, spec: SurvivalSpec, filters: Filters) -> survival.LogRankResult:
    return _log_rank(store, store.version(), spec.to_dict(), filters.to_query_params())


@st.cache_data(show_spinner=False, max_entries=16)
def _cox_model(
    _store: Store, version: str, spec: dict[str, Any], filter_params: dict[str, str]
) -> survival.CoxResult:
    return survival.cox_model(_store, SurvivalSpec.from_dict(spec), Filters.from_query_params(filter_params))


def cox_model(store: Store, spec: SurvivalSpec, filters: Filters) -> survival.CoxResult:
    return _cox_model(store, store.version(), spec.to_dict(), filters.to_query_params())
