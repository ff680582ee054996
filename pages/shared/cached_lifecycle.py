"""Cached calls into core/lifecycle.py and core/stickiness.py for the pages.

Keyed like pages/shared/cached.py: the spec's plain-data form, the filters' URL form and
``Store.version()``; the store is passed as ``_store`` so Streamlit does not hash it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import streamlit as st

from core import lifecycle, stickiness
from core.lifecycle import LifecycleSpec, StageSpec
from core.population import Filters
from core.stickiness import StickinessSpec
from core.store import Store


@st.cache_data(show_spinner=False, max_entries=32)
def _lifecycle_table(
    _store: Store, version: str, spec: dict[str, Any], filter_params: dict[str, str]
) -> pd.DataFrame:
    return lifecycle.lifecycle_table(
        _store, LifecycleSpec.from_dict(spec), Filters.from_query_params(filter_params)
    )


def lifecycle_table(store: Store, spec: LifecycleSpec, filters: Filters) -> pd.DataFrame:
    return _lifecycle_table(store, store.version(), spec.to_dict(), filters.to_query_params())


@st.cache_data(show_spinner=False, max_entries=32)
def _lifecycle_users(
    _store: Store, version: str, spec: dict[str, Any], filter_params: dict[str, str], period: str, status: str
) -> pd.DataFrame:
    return lifecycle.lifecycle_users(
        _store, LifecycleSpec.from_dict(spec), Filters.from_query_params(filter_params), period, status
    )


def lifecycle_users(
    store: Store, spec: LifecycleSpec, filters: Filters, period: dt.date, status: str
) -> pd.DataFrame:
    return _lifecycle_users(
        store, store.version(), spec.to_dict(), filters.to_query_params(), period.isoformat(), status
    )


@st.cache_data(show_spinner=False, max_entries=32)
def _stage_table(
    _store: Store, version: str, spec: dict[str, Any], filter_params: dict[str, str], as_of: str
) -> pd.DataFrame:
    return lifecycle.stage_table(
        _store, StageSpec.from_dict(spec), Filters.from_query_params(filter_params), as_of
    )


def stage_table(store: Store, spec: StageSpec, filters: Filters, as_of: dt.date) -> pd.DataFrame:
    return _stage_table(store, store.version(), spec.to_dict(), filters.to_query_params(), as_of.isoformat())


@st.cache_data(show_spinner=False, max_entries=32)
def _stage_transitions(
    _store: Store, version: str, spec: dict[str, Any], filter_params: dict[str, str], first: str, second: str
) -> pd.DataFrame:
    return lifecycle.stage_transitions(
        _store, StageSpec.from_dict(spec), Filters.from_query_params(filter_params), first, second
    )


def stage_transitions(
    store: Store, spec: StageSpec, filters: Filters, first: dt.date, second: dt.date
) -> pd.DataFrame:
    return _stage_transitions(
        store,
        store.version(),
        spec.to_dict(),
        filters.to_query_params(),
        first.isoformat(),
        second.isoformat(),
    )


@st.cache_data(show_spinner=False, max_entries=32)
def _stage_users(
    _store: Store, version: str, spec: dict[str, Any], filter_params: dict[str, str], as_of: str, stage: str
) -> pd.DataFrame:
    return lifecycle.stage_users(
        _store, StageSpec.from_dict(spec), Filters.from_query_params(filter_params), as_of, stage
    )


def stage_users(store: Store, spec: StageSpec, filters: Filters, as_of: dt.date, stage: str) -> pd.DataFrame:
    return _stage_users(
        store, store.version(), spec.to_dict(), filters.to_query_params(), as_of.isoformat(), stage
    )


@st.cache_data(show_spinner=False, max_entries=32)
def _stickiness_histogram(
    _store: Store, version: str, spec: dict[str, Any], filter_params: dict[str, str]
) -> pd.DataFrame:
    return stickiness.stickiness_histogram(
        _store, StickinessSpec.from_dict(spec), Filters.from_query_params(filter_params)
    )


def stickiness_histogram(store: Store, spec: StickinessSpec, filters: Filters) -> pd.DataFrame:
    return _stickiness_histogram(store, store.version(), spec.to_dict(), filters.to_query_params())


@st.cache_data(show_spinner=False, max_entries=32)
def _active_users_series(
    _store: Store, version: str, spec: dict[str, Any], filter_params: dict[str, str]
) -> pd.DataFrame:
    return stickiness.active_users_series(
        _store, StickinessSpec.from_dict(spec), Filters.from_query_params(filter_params)
    )


def active_users_series(store: Store, spec: StickinessSpec, filters: Filters) -> pd.DataFrame:
    return _active_users_series(store, store.version(), spec.to_dict(), filters.to_query_params())
