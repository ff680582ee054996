"""Cached calls into core/funnels.py, keyed by the spec's plain data, the filters' URL form and
``Store.version()`` (see pages/shared/cached.py); the store is passed as ``_store``."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from core import funnels
from core.funnels import FunnelSpec, LifecycleFunnelSpec
from core.population import Filters
from core.store import Store


@st.cache_data(show_spinner=False, max_entries=64)
def _call(
    _store: Store, version: str, name: str, spec: dict[str, Any], filter_params: dict[str, str], extra: tuple
) -> pd.DataFrame:
    filters = Filters.from_query_params(filter_params)
    if name == "lifecycle_funnel":
        return funnels.lifecycle_funnel(_store, LifecycleFunnelSpec.from_dict(spec), filters)
    return getattr(funnels, name)(_store, FunnelSpec.from_dict(spec), filters, *extra)


def funnel_table(store: Store, spec: FunnelSpec, filters: Filters) -> pd.DataFrame:
    return _call(store, store.version(), "funnel_table", spec.to_dict(), filters.to_query_params(), ())


def step_times(store: Store, spec: FunnelSpec, filters: Filters) -> pd.DataFrame:
    return _call(store, store.version(), "step_times", spec.to_dict(), filters.to_query_params(), ())


def step_time_histogram(store: Store, spec: FunnelSpec, filters: Filters) -> pd.DataFrame:
    return _call(store, store.version(), "step_time_histogram", spec.to_dict(), filters.to_query_params(), ())


def conversion_over_time(store: Store, spec: FunnelSpec, filters: Filters) -> pd.DataFrame:
    return _call(
        store, store.version(), "conversion_over_time", spec.to_dict(), filters.to_query_params(), ()
    )


def funnel_users(store: Store, spec: FunnelSpec, filters: Filters, step: int, outcome: str) -> pd.DataFrame:
    return _call(
        store, store.version(), "funnel_users", spec.to_dict(), filters.to_query_params(), (step, outcome)
    )


def lifecycle_funnel(store: Store, spec: LifecycleFunnelSpec, filters: Filters) -> pd.DataFrame:
    return _call(store, store.version(), "lifecycle_funnel", spec.to_dict(), filters.to_query_params(), ())
