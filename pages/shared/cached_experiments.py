"""Cached calls into core/experiments for the Experiments page, keyed by the design's and the
options' plain-data form and ``Store.version()``; the store is passed as ``_store`` so that
Streamlit does not hash it. The model-based LTV rows are not cached here: they run on demand
behind a button with a progress bar (see the page)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from core.experiments import analysis, assignments, power, segments
from core.experiments import survival as experiment_survival
from core.experiments.metrics import Design, default_metrics, parse_metric
from core.store import Store

DesignKey = tuple[str, tuple[str, ...], int, float | None]
OptionsKey = tuple[str | None, bool, str]


def design_key(design: Design) -> DesignKey:
    return (design.experiment, tuple(spec.name for spec in design.metrics), design.days, design.winsorize)


def options_key(options: analysis.Options) -> OptionsKey:
    return (options.control, options.cuped, options.correction)


def _design(key: DesignKey) -> Design:
    experiment, metrics, days, winsorize = key
    return Design(experiment, tuple(parse_metric(name) for name in metrics), days=days, winsorize=winsorize)


def _options(key: OptionsKey) -> analysis.Options:
    control, cuped, correction = key
    return analysis.Options(control=control, cuped=cuped, correction=correction)  # type: ignore[arg-type]


@st.cache_data(show_spinner=False, max_entries=16)
def _overview(_store: Store, version: str) -> pd.DataFrame:
    return assignments.experiment_overview(_store)


def overview(store: Store) -> pd.DataFrame:
    """One row per experiment: variants, users, days running, status, SRM."""
    return _overview(store, store.version())


@st.cache_data(show_spinner=False, max_entries=16)
def _default_metric_names(_store: Store, version: str) -> list[str]:
    return [spec.name for spec in default_metrics(_store)]


def default_metric_names(store: Store) -> list[str]:
    return _default_metric_names(store, store.version())


@st.cache_data(show_spinner=False, max_entries=32)
def _experiment_users(_store: Store, version: str, experiment: str) -> assignments.ExperimentUsers:
    return assignments.experiment_users(_store, experiment)


def experiment_users(store: Store, experiment: str) -> assignments.ExperimentUsers:
    return _experiment_users(store, store.version(), experiment)


@st.cache_data(show_spinner=False, max_entries=32)
def _review(_store: Store, version: str, design: DesignKey, options: OptionsKey) -> analysis.Review:
    return analysis.review(_store, _design(design), _options(options))


def review(store: Store, design: Design, options: analysis.Options) -> analysis.Review:
    return _review(store, store.version(), design_key(design), options_key(options))


@st.cache_data(show_spinner=False, max_entries=16)
def _segment_review(
    _store: Store, version: str, design: DesignKey, options: OptionsKey, attribute: str
) -> segments.SegmentReview:
    return segments.segment_review(_store, _design(design), _options(options), attribute=attribute)


def segment_review(
    store: Store, design: Design, options: analysis.Options, attribute: str
) -> segments.SegmentReview:
    return _segment_review(store, store.version(), design_key(design), options_key(options), attribute)


@st.cache_data(show_spinner=False, max_entries=16)
def _baseline(_store: Store, version: str, design: DesignKey, variant: str | None) -> power.Baseline:
    return power.measure_baseline(_store, _design(design), variant)


def baseline(store: Store, design: Design, variant: str | None) -> power.Baseline:
    """The metrics' moments over ``variant``'s users (None: all arms) and the traffic."""
    return _baseline(store, store.version(), design_key(design), variant)


@st.cache_data(show_spinner=False, max_entries=32)
def _plan(
    _store: Store,
    version: str,
    design: DesignKey,
    variant: str | None,
    settings: dict[str, Any],
    daily_users: float,
    rel_effect: float,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    measured = _baseline(_store, version, design, variant)
    chosen = power.PowerSettings(**settings)
    return (
        measured.table(),
        power.mde_by_days(measured, settings=chosen, daily_users=daily_users),
        power.users_needed(measured, rel_effect, chosen, daily_users=daily_users),
    )


def plan(
    store: Store,
    design: Design,
    variant: str | None,
    settings: power.PowerSettings,
    daily_users: float,
    rel_effect: float,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(baseline table, MDE by days, users needed for ``rel_effect``)."""
    return _plan(
        store,
        store.version(),
        design_key(design),
        variant,
        {"power": settings.power, "alpha": settings.alpha, "cuped": settings.cuped, "arms": settings.arms},
        float(daily_users),
        float(rel_effect),
    )


@st.cache_data(show_spinner=False, max_entries=16)
def _variant_survival(
    _store: Store, version: str, experiment: str, control: str, inactivity_days: float, tau_days: float
) -> experiment_survival.VariantSurvival:
    return experiment_survival.variant_survival(_store, experiment, control, inactivity_days, tau_days)


def variant_survival(
    store: Store, experiment: str, control: str, inactivity_days: float, tau_days: float
) -> experiment_survival.VariantSurvival:
    """Kaplan-Meier per variant from assignment, log-rank and RMST against the control."""
    return _variant_survival(
        store, store.version(), experiment, control, float(inactivity_days), float(tau_days)
    )


@st.cache_data(show_spinner=False, max_entries=16)
def _variant_retention(_store: Store, version: str, experiment: str, max_day: int) -> pd.DataFrame:
    return experiment_survival.variant_retention(_store, experiment, max_day)


def variant_retention(store: Store, experiment: str, max_day: int) -> pd.DataFrame:
    """Retention by day since assignment per variant, with Wilson intervals."""
    return _variant_retention(store, store.version(), experiment, int(max_day))
