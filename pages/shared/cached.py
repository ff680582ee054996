"""Cached calls into ``core`` for the pages.

Each wrapper is keyed by the spec's plain-data form, the filters' URL form and
``Store.version()``, which names the file and its last load: entries of different stores, or of
one store before and after a load, never mix. The store itself is passed as ``_store`` so that
Streamlit does not hash it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import streamlit as st

from core import breakdown, catalog, overview, retention
from core.population import Filters
from core.retention import RetentionSpec
from core.store import Store

# `_store` is not hashed (leading underscore); `version` names the file and its last load, so
# entries of different stores, or of one store before and after a load, never mix.


@st.cache_data(show_spinner=False, max_entries=16)
def _store_info(_store: Store, version: str) -> overview.StoreInfo:
    return overview.store_info(_store)


def store_info(store: Store) -> overview.StoreInfo:
    return _store_info(store, store.version())


def tables_frame(info: overview.StoreInfo) -> pd.DataFrame:
    """One row per table of the main schema: name, row count and date range."""
    frame = pd.DataFrame(info.to_dict()["tables"]).rename(columns={"name": "table"})
    return frame[["table", "rows", "time_column", "first", "last"]]


def load_history_frame(info: overview.StoreInfo) -> pd.DataFrame:
    """The store's loads, newest first."""
    return pd.DataFrame(info.to_dict()["loads"]).iloc[::-1].reset_index(drop=True)


@st.cache_data(show_spinner=False, max_entries=64)
def _headline(_store: Store, version: str, filter_params: dict[str, str]) -> Any:
    return overview.headline(_store, Filters.from_query_params(filter_params))


def headline(store: Store, filters: Filters) -> Any:
    return _headline(store, store.version(), filters.to_query_params())


@st.cache_data(show_spinner=False, max_entries=64)
def _activity(_store: Store, version: str, filter_params: dict[str, str], period: str) -> pd.DataFrame:
    return overview.activity_series(_store, Filters.from_query_params(filter_params), period)


def activity(store: Store, filters: Filters, period: str) -> pd.DataFrame:
    return _activity(store, store.version(), filters.to_query_params(), period)


# Lookups the widgets need (core/catalog.py): bounds of the date filter, options, previews.


@st.cache_data(show_spinner=False, max_entries=16)
def _event_span(_store: Store, version: str) -> tuple[dt.date | None, dt.date | None]:
    return catalog.event_span(_store)


def event_span(store: Store) -> tuple[dt.date | None, dt.date | None]:
    """The first and last day with an event: the bounds of the date filter."""
    return _event_span(store, store.version())


@st.cache_data(show_spinner=False, max_entries=64)
def _segment_values(_store: Store, version: str, attribute: str, limit: int) -> list[str]:
    return catalog.segment_values(_store, attribute, limit)


def segment_values(store: Store, attribute: str, limit: int = 500) -> list[str]:
    """The values of a ``users`` attribute (as text, sorted, at most ``limit``)."""
    return _segment_values(store, store.version(), attribute, limit)


@st.cache_data(show_spinner=False, max_entries=16)
def _event_names(_store: Store, version: str) -> list[str]:
    return catalog.event_names(_store)


def event_names(store: Store) -> list[str]:
    """Event names, most frequent first."""
    return _event_names(store, store.version())


@st.cache_data(show_spinner=False, max_entries=16)
def _breakdown_options(_store: Store, version: str) -> list[str]:
    return breakdown.breakdown_options(_store)


def breakdown_options(store: Store) -> list[str]:
    """Users attributes, cohort:week, cohort:month and experiment:NAME for each experiment."""
    return _breakdown_options(store, store.version())


@st.cache_data(show_spinner=False, max_entries=32)
def _preview(_store: Store, version: str, table: str, rows: int) -> pd.DataFrame:
    return catalog.preview(_store, table, rows)


def preview(store: Store, table: str, rows: int = 20) -> pd.DataFrame:
    """The first ``rows`` rows of a table, as stored."""
    return _preview(store, store.version(), table, rows)


@st.cache_data(show_spinner=False, max_entries=64)
def _retention_table(
    _store: Store, version: str, spec: dict[str, Any], filter_params: dict[str, str]
) -> pd.DataFrame:
    return retention.retention_table(
        _store, RetentionSpec.from_dict(spec), Filters.from_query_params(filter_params)
    )


def retention_table(store: Store, spec: RetentionSpec, filters: Filters) -> pd.DataFrame:
    return _retention_table(store, store.version(), spec.to_dict(), filters.to_query_params())


@st.cache_data(show_spinner=False, max_entries=64)
def _retention_curve(
    _store: Store, version: str, spec: dict[str, Any], filter_params: dict[str, str], by: str | None
) -> pd.DataFrame:
    return retention.retention_curve(
        _store, RetentionSpec.from_dict(spec), Filters.from_query_params(filter_params), by=by
    )


def retention_curve(
    store: Store, spec: RetentionSpec, filters: Filters, by: str | None = None
) -> pd.DataFrame:
    return _retention_curve(store, store.version(), spec.to_dict(), filters.to_query_params(), by)


@st.cache_data(show_spinner=False, max_entries=32)
def _retention_users(
    _store: Store,
    version: str,
    spec: dict[str, Any],
    filter_params: dict[str, str],
    cohort: str,
    period: int,
    retained: bool | None,
) -> pd.DataFrame:
    return retention.retention_users(
        _store,
        RetentionSpec.from_dict(spec),
        Filters.from_query_params(filter_params),
        cohort,
        period,
        retained,
    )


def retention_users(
    store: Store,
    spec: RetentionSpec,
    filters: Filters,
    cohort: dt.date,
    period: int,
    retained: bool | None,
) -> pd.DataFrame:
    return _retention_users(
        store,
        store.version(),
        spec.to_dict(),
        filters.to_query_params(),
        cohort.isoformat(),
        period,
        retained,
    )


@st.cache_data(show_spinner=False, max_entries=16)
def _data_end(_store: Store, version: str) -> str:
    end = _store.data_end()
    return "no events yet" if end is None else end.strftime("%Y-%m-%d %H:%M UTC")


def data_end(store: Store) -> str:
    """The latest event time, as text: the end of observation for every metric."""
    return _data_end(store, store.version())
