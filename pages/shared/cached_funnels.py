"""Cached calls into core/funnels.py, keyed by the spec's plain data, the filters' URL form and
``Store.version()`` (see pages/shared/cached.py); the store is passed as ``_store``.

A funnel is walked once per (store version, funnel without its breakdown, filters): every view of
it (the tables, the times between steps, conversion by week, the users who dropped) aggregates that
one cached walk, and another breakdown only adds the users' groups to it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pandas as pd
import streamlit as st

from core import funnels
from core.funnels import FunnelSpec, FunnelWalk, LifecycleFunnelSpec
from core.population import Filters
from core.store import Store


# A walk holds a row per entered user (about 100 bytes each: 200 MB for two million users), so
# few are kept; the views read from it are small and cached apart, longer.
@st.cache_data(show_spinner=False, max_entries=4)
def _walk(_store: Store, version: str, spec: dict[str, Any], filter_params: dict[str, str]) -> FunnelWalk:
    return funnels.walk_funnel(_store, FunnelSpec.from_dict(spec), Filters.from_query_params(filter_params))


@st.cache_data(show_spinner=False, max_entries=4)
def _grouped_walk(
    _store: Store, version: str, spec: dict[str, Any], filter_params: dict[str, str]
) -> FunnelWalk:
    """The walk of the funnel without its breakdown, with the breakdown's groups added: another
    breakdown of the same funnel reads the users' groups, not the events."""
    parsed = FunnelSpec.from_dict(spec)
    plain = dataclasses.replace(parsed, breakdown=None)
    walk = _walk(_store, version, plain.to_dict(), filter_params)
    return walk.by_breakdown(_store, parsed.breakdown, Filters.from_query_params(filter_params))


@st.cache_data(show_spinner=False, max_entries=64)
def _view(
    _store: Store, version: str, name: str, spec: dict[str, Any], filter_params: dict[str, str], extra: tuple
) -> pd.DataFrame:
    walked = _grouped_walk if spec.get("breakdown") else _walk
    the_walk = walked(_store, version, spec, filter_params)
    if name == "table":
        return the_walk.table(by_group=extra[0])
    if name == "step_users":
        return the_walk.step_users(_store, *extra)
    return getattr(the_walk, name)()


def _cached_view(
    store: Store, spec: FunnelSpec, filters: Filters, name: str, extra: tuple = ()
) -> pd.DataFrame:
    return _view(store, store.version(), name, spec.to_dict(), filters.to_query_params(), extra)


def funnel_table(store: Store, spec: FunnelSpec, filters: Filters, *, by_group: bool = True) -> pd.DataFrame:
    return _cached_view(store, spec, filters, "table", (by_group,))


def step_times(store: Store, spec: FunnelSpec, filters: Filters) -> pd.DataFrame:
    return _cached_view(store, spec, filters, "step_times")


def step_time_histogram(store: Store, spec: FunnelSpec, filters: Filters) -> pd.DataFrame:
    return _cached_view(store, spec, filters, "step_time_histogram")


def conversion_over_time(store: Store, spec: FunnelSpec, filters: Filters) -> pd.DataFrame:
    return _cached_view(store, spec, filters, "conversion_over_time")


def funnel_users(store: Store, spec: FunnelSpec, filters: Filters, step: int, outcome: str) -> pd.DataFrame:
    return _cached_view(store, spec, filters, "step_users", (step, outcome))


@st.cache_data(show_spinner=False, max_entries=64)
def _lifecycle_funnel(
    _store: Store, version: str, spec: dict[str, Any], filter_params: dict[str, str]
) -> pd.DataFrame:
    return funnels.lifecycle_funnel(
        _store, LifecycleFunnelSpec.from_dict(spec), Filters.from_query_params(filter_params)
    )


def lifecycle_funnel(store: Store, spec: LifecycleFunnelSpec, filters: Filters) -> pd.DataFrame:
    return _lifecycle_funnel(store, store.version(), spec.to_dict(), filters.to_query_params())
