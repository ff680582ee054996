"""The What-if page's scenario tab: the current user base's retained users and revenue over the
next H days under the chosen strategy against the current one (core/whatif/scenario.py), every
figure marked estimated or assumption. Definitions: docs/METRICS.md, "What-if: scenario view".
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core import figures_whatif
from core.errors import TenureError
from core.experiments.ltv import LTV_HORIZON_DAYS, ltv_models
from core.store import Store
from core.whatif import scenario
from core.whatif.user_policies import UserPolicyValue
from pages.shared import cached_whatif, ui, url_params

EFFECT_SOURCES = {"estimated": "Estimated (from the long-term tab)", "assumption": "Typed in (assumption)"}
OBSERVED = "observed"


def _number(text: str) -> float:
    return float(text)


def _effects(
    results: dict[str, UserPolicyValue], params: dict[str, str]
) -> tuple[scenario.Effect, scenario.Effect] | None:
    ui.seed_control(
        "wi_effect", "estimated", param="effect", parse=url_params.choice(tuple(EFFECT_SOURCES), "effect")
    )
    ui.seed_control("wi_assumed_retention", 0.0, param="assume_ret", parse=_number)
    ui.seed_control("wi_assumed_revenue", 0.0, param="assume_rev", parse=_number)
    source = st.radio(
        "Effect of the chosen strategy",
        tuple(EFFECT_SOURCES),
        key="wi_effect",
        format_func=EFFECT_SOURCES.__getitem__,
        horizontal=True,
    )
    params["effect"] = source
    if source == "assumption":
        left, right = st.columns(2)
        retention = left.number_input(
            "Relative effect on retention (%)", step=1.0, key="wi_assumed_retention"
        )
        revenue = right.number_input("Relative effect on revenue (%)", step=1.0, key="wi_assumed_revenue")
        params.update(assume_ret=f"{retention:g}", assume_rev=f"{revenue:g}")
        return scenario.Effect.assumed(retention / 100), scenario.Effect.assumed(revenue / 100)
    if len(results) < 2:
        st.info("The estimated effects come from the long-term tab: pick an experiment and a target there.")
        return None
    retention_result, revenue_result = results.values()
    estimator, versus = params["estimator"], params["versus"]
    return (
        scenario.relative_effect(retention_result, versus, estimator),
        scenario.relative_effect(revenue_result, versus, estimator),
    )


def scenario_section(
    store: Store, results: dict[str, UserPolicyValue], params: dict[str, str], *, estimate: bool = True
) -> dict:
    """The tab: the current base's projection under the chosen strategy, with the effects taken
    from the long-term tab's ``results`` or typed in; returns its part of the page's JSON document.
    With ``estimate`` False only the controls are drawn and nothing is measured."""
    st.caption(
        "The current user base (every user with an event in the last A days) over the next H days: each user's "
        "baseline under the current strategy, times the relative effect of the chosen one. Every figure says "
        "whether it is estimated from data or rests on an assumption you typed. Definitions: docs/METRICS.md, "
        "'What-if: scenario view'."
    )
    ui.seed_control(
        "wi_active_days", scenario.DEFAULT_ACTIVE_DAYS, param="active_days", parse=url_params.whole(1, 365)
    )
    ui.seed_control(
        "wi_horizon", scenario.DEFAULT_HORIZON_DAYS, param="horizon", parse=url_params.whole(1, 365)
    )
    ui.seed_control("wi_reach", 100, param="reach", parse=url_params.whole(0, 100))
    first, second, third = st.columns(3)
    active_days = first.number_input("Active within the last A days", 1, 365, step=1, key="wi_active_days")
    horizon = second.number_input("Horizon H (days)", 1, 365, step=1, key="wi_horizon")
    reach = third.slider("Share of the base reached (%)", 0, 100, step=5, key="wi_reach")
    models = ltv_models(store) if int(horizon) == LTV_HORIZON_DAYS else []
    model_name = ui.model_namer(store)
    chosen = ui.linked_selectbox(
        "Per-user baseline",
        [OBSERVED, *models],
        "wi_baseline",
        "baseline",
        format_func=lambda name: (
            "Observed one horizon earlier" if name == OBSERVED else f"Model scores: {model_name(name)}"
        ),
        help=f"Saved models with a {LTV_HORIZON_DAYS}-day horizon are offered when H is {LTV_HORIZON_DAYS} days.",
    )
    params.update(
        active_days=str(int(active_days)), horizon=str(int(horizon)), reach=str(int(reach)), baseline=chosen
    )
    effects = _effects(results, params)
    if effects is None or not estimate:
        return {}
    try:
        spec = scenario.BaselineSpec(int(horizon), int(active_days), None if chosen == OBSERVED else chosen)
        with st.spinner("Measuring the current base..."):
            base = cached_whatif.baseline(store, spec)
        reach_source = scenario.ESTIMATED if int(reach) == 100 else scenario.ASSUMPTION
        result = scenario.scenario(
            base, *effects, reach=int(reach) / 100, reach_source=reach_source, horizon_days=int(horizon)
        )
    except TenureError as error:
        ui.show_error(error)
        return {}
    projection = result.projection
    cells = st.columns(len(projection["figure"].unique()))
    for cell, (figure, rows) in zip(cells, projection.groupby("figure", sort=False), strict=True):
        row = rows.set_index("strategy")
        cell.metric(
            f"{figure}, chosen ({row.loc['chosen', 'source']})",
            f"{row.loc['chosen', 'value']:,.0f}",
            f"{row.loc['difference', 'value']:+,.0f} vs current ({row.loc['difference', 'ci_low']:+,.0f} to "
            f"{row.loc['difference', 'ci_high']:+,.0f})",
        )
    st.plotly_chart(figures_whatif.scenario_figure(projection), key="wi_scenario_chart")
    st.dataframe(projection, hide_index=True, key="wi_scenario_table")
    st.markdown("**Inputs**")
    st.dataframe(result.inputs, hide_index=True, key="wi_scenario_inputs")
    st.caption(
        f"Baseline: {base.note}. The effect on day-D retention is applied to the chance of any event within H "
        "days, and the effect on revenue over the long-term tab's window to revenue over H days: both carry over "
        "only if the effect does. Intervals carry the effect's uncertainty only."
    )
    ui.download_csv(
        pd.concat(
            [result.inputs.assign(table="input"), projection.assign(table="projection")], ignore_index=True
        ),
        "whatif_scenario.csv",
        key="wi_scenario_download",
    )
    return {"scenario": {"baseline": base.note, "inputs": result.inputs, "projection": projection}}
