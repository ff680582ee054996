"""Cached calls into core/whatif for the What-if page, keyed by the specs' plain-data form and
``Store.version()``; the store is passed as ``_store`` so that Streamlit does not hash it.

A rule is cached by its CSV text (``rule_text``), a target file by its path, which the page names
after the file's content hash, so an entry can never answer for other content."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from core.store import Store
from core.whatif import catalog, scenario, segments
from core.whatif.evaluate import WhatIfResult, WhatIfSpec, evaluate
from core.whatif.rules import parse_rule
from core.whatif.surrogate import SurrogateResult, surrogate_estimate
from core.whatif.surrogate import surrogate_backtest as backtest_surrogate
from core.whatif.user_policies import UserPolicySpec, UserPolicyValue, evaluate_user_policy
from core.whatif.users import parse_outcome


@st.cache_data(show_spinner=False, max_entries=8)
def _options(_store: Store, version: str) -> tuple[list[str], list[str], pd.DataFrame | None]:
    return (
        catalog.logged_policies(_store),
        catalog.experiments_with_propensities(_store),
        catalog.policy_truth(_store),
    )


def options(store: Store) -> tuple[list[str], list[str], pd.DataFrame | None]:
    """(logged policies, experiments with propensities, the simulator's truth per policy or None)."""
    return _options(store, store.version())


@st.cache_data(show_spinner=False, max_entries=16)
def _policy_experiment(_store: Store, version: str, policy: str, experiments: tuple[str, ...]) -> str | None:
    return catalog.policy_experiment(_store, policy, list(experiments))


def policy_experiment(store: Store, policy: str, experiments: list[str]) -> str | None:
    """``catalog.policy_experiment``: the experiment whose users answer "everyone gets ``policy``"."""
    return _policy_experiment(store, store.version(), policy, tuple(experiments))


@st.cache_data(show_spinner=False, max_entries=8)
def _rule_attributes(
    _store: Store, version: str, experiment: str, model_dir: str | None
) -> dict[str, list[str]]:
    return segments.rule_attributes(
        _store, experiment, model_dir, segments=_segment_values(_store, version, experiment, model_dir)
    )


@st.cache_data(show_spinner=False, max_entries=8)
def _segment_values(_store: Store, version: str, experiment: str, model_dir: str | None) -> pd.DataFrame:
    """Every user's stage (and, with a model, churn-risk decile) at assignment, computed once for
    the rule editor's list and every outcome a rule is estimated for: the deciles cost a model
    pass over every user."""
    names = [segments.LIFECYCLE_STAGE] + ([segments.CHURN_RISK_DECILE] if model_dir is not None else [])
    return segments.segment_values(_store, experiment, names, model_dir)


def rule_attributes(store: Store, experiment: str, model_dir: str | None = None) -> dict[str, list[str]]:
    """``segments.rule_attributes``: each attribute a rule may name with its users' values (with
    ``model_dir``, ``churn_risk_decile`` too: one model pass over every user)."""
    return _rule_attributes(store, store.version(), experiment, model_dir)


@st.cache_data(show_spinner=False, max_entries=16)
def _click_rate(
    _store: Store,
    version: str,
    target: str,
    log_policy: str | None,
    estimators: tuple[str, ...],
    seed: int,
    resamples: int,
) -> WhatIfResult:
    spec = WhatIfSpec(
        target=target, log_policy=log_policy, estimators=estimators, seed=seed, resamples=resamples
    )
    return evaluate(_store, spec)


def click_rate(store: Store, spec: WhatIfSpec) -> WhatIfResult:
    """``evaluate`` of a per-recommendation what-if (slow: tens of seconds on a large log)."""
    return _click_rate(
        store,
        store.version(),
        spec.target,
        spec.log_policy,
        tuple(spec.estimators),
        spec.seed,
        spec.resamples,
    )


@st.cache_data(show_spinner=False, max_entries=16)
def _user_policy(_store: Store, version: str, question: dict[str, Any]) -> UserPolicyValue:
    rule_text = question["rule_text"]
    spec = UserPolicySpec(
        question["experiment"],
        parse_outcome(question["outcome"]),
        variant=question["variant"],
        rule=parse_rule(rule_text) if rule_text is not None else None,
        survival_days=tuple(question["survival_days"]),
        model_dir=question["model_dir"],
    )
    known = None
    if spec.rule is not None and spec.rule.segments:
        known = _segment_values(_store, version, question["experiment"], question["model_dir"])
    return evaluate_user_policy(_store, spec, segments=known)


def user_policy(store: Store, question: dict[str, Any]) -> UserPolicyValue:
    """``evaluate_user_policy`` of one question: ``experiment``, ``outcome`` (text), ``variant``
    (everyone gets it) or ``rule_text`` (a rule as CSV text), ``survival_days`` and ``model_dir``
    (the model scoring a rule's ``churn_risk_decile``, or None)."""
    return _user_policy(store, store.version(), question)


@st.cache_data(show_spinner=False, max_entries=8)
def _baseline(
    _store: Store, version: str, horizon_days: int, active_days: int, model_dir: str | None
) -> scenario.Baseline:
    return scenario.baseline(_store, scenario.BaselineSpec(horizon_days, active_days, model_dir))


def baseline(store: Store, spec: scenario.BaselineSpec) -> scenario.Baseline:
    """The current base with each user's baseline (scoring with a model takes a while)."""
    return _baseline(store, store.version(), spec.horizon_days, spec.active_days, spec.model_dir)


@st.cache_data(show_spinner=False, max_entries=8)
def _surrogate(_store: Store, version: str, question: dict[str, Any]) -> SurrogateResult:
    return surrogate_estimate(_store, question["experiment"], question["outcome"], question["surrogate_days"])


def surrogate(store: Store, question: dict[str, Any]) -> SurrogateResult:
    """``surrogate_estimate`` of ``experiment``, ``outcome`` (text) and ``surrogate_days``."""
    return _surrogate(store, store.version(), question)


@st.cache_data(show_spinner=False, max_entries=8)
def _surrogate_backtest(_store: Store, version: str, question: dict[str, Any]) -> pd.DataFrame:
    return backtest_surrogate(_store, question["experiment"], question["outcome"], question["surrogate_days"])


def surrogate_backtest(store: Store, question: dict[str, Any]) -> pd.DataFrame:
    """``core.whatif.surrogate.surrogate_backtest`` of the same question (its ``attrs`` kept)."""
    return _surrogate_backtest(store, store.version(), question)
