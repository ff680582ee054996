"""The What-if page's long-term tab: day-D retention and D-day revenue per user had every user got
a variant, or the variant a targeting rule gives them, from an experiment with propensities
(core/whatif/user_policies.py), with the weighted survival curve. Definitions: docs/METRICS.md,
"What-if: per-user outcomes under a policy or rule".
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core import figures_whatif
from core.errors import TenureError
from core.experiments.metrics import MAX_RETENTION_DAY
from core.models import registry
from core.store import Store
from core.whatif import diagnostics, scenario
from core.whatif.policy_value import ESTIMATORS as USER_ESTIMATORS
from core.whatif.rules import (
    HEADER,
    WILDCARD,
    rule_from_query_param,
    rule_text_from_rows,
    rule_to_query_param,
)
from core.whatif.segments import CHURN_RISK_DECILE
from core.whatif.survival_ipw import DEFAULT_SURVIVAL_RESAMPLES
from core.whatif.user_policies import UserPolicyValue
from pages.shared import cached_experiments, cached_whatif, ui, url_params

DEFAULT_RETENTION_DAY = 30
DEFAULT_REVENUE_DAYS = 90
POLICY_MODES = {"variant": "Everyone gets a variant", "rule": "A targeting rule"}
NO_MODEL = "none"
SURVIVAL_STEP_DAYS = 1


def _rule_rows(param: str) -> pd.DataFrame:
    """The editor's rows of a rule linked in the URL."""
    rule = rule_from_query_param(param)
    rows = [(c.attribute, c.value, c.variant) for c in rule.conditions] + [(WILDCARD, WILDCARD, rule.default)]
    return pd.DataFrame(rows, columns=list(HEADER))


def _risk_model(store: Store, params: dict[str, str]) -> str | None:
    """The model folder that scores ``churn_risk_decile`` for a rule, or None."""
    chosen = ui.linked_selectbox(
        "Churn-risk model",
        [NO_MODEL, *registry.saved_model_paths(store)],
        "wi_risk_model",
        "risk_model",
        format_func=ui.model_namer(store),
        help="A registered model that scores each user as of the start of their assignment day, so that a rule "
        f"may use {CHURN_RISK_DECILE} (1..10, 10 the riskiest tenth). Every model kind scores everyone in one "
        "pass, each user at their own assignment day.",
    )
    params["risk_model"] = chosen
    return None if chosen == NO_MODEL else chosen


def _target_controls(
    store: Store, experiment: str, variants: list[str], params: dict[str, str], *, score_risk: bool
) -> tuple[str | None, str | None, str | None]:
    """(variant, rule CSV text, churn-risk model folder): one of variant and rule is set; the
    model only with a rule. ``score_risk`` False lists ``churn_risk_decile`` without its values:
    scoring them runs the model over every user, worth it only when estimates follow."""
    ui.seed_control(
        "wi_mode", "variant", param="policy", parse=url_params.choice(tuple(POLICY_MODES), "policy")
    )
    ui.seed_control(
        "wi_variant",
        variants[-1],
        param="variant",
        parse=url_params.choice(variants, "variant"),
        options=variants,
    )
    mode = st.radio(
        "Target", tuple(POLICY_MODES), key="wi_mode", format_func=POLICY_MODES.__getitem__, horizontal=True
    )
    params["policy"] = mode
    if mode == "variant":
        variant = st.selectbox("Variant every user gets", variants, key="wi_variant")
        params["variant"] = variant
        return variant, None, None
    model_dir = _risk_model(store, params)
    if "wi_rule_rows" not in st.session_state:
        default = pd.DataFrame([(WILDCARD, WILDCARD, variants[0])], columns=list(HEADER))
        text = ui.url_at_start().get("rule")
        try:
            st.session_state["wi_rule_rows"] = _rule_rows(text) if text else default
        except TenureError as error:
            st.warning(f"URL parameter 'rule' was ignored: {error.message}")
            st.session_state["wi_rule_rows"] = default
    scored_model = model_dir if score_risk else None
    try:
        with st.spinner(
            "Scoring each user's churn risk at their assignment day..."
            if scored_model
            else "Reading the attributes a rule may use..."
        ):
            attributes = cached_whatif.rule_attributes(store, experiment, scored_model)
        if model_dir and not score_risk:
            attributes = {**attributes, CHURN_RISK_DECILE: []}
        elif scored_model and not attributes.get(CHURN_RISK_DECILE):
            st.info(
                f"No user of {experiment} had an event or a signup before their assignment day, so the model "
                f"scores nobody and `{CHURN_RISK_DECILE}` has no value: users assigned on arrival have no "
                "history yet. A rule may use the other attributes."
            )
    except TenureError as error:
        ui.show_error(error)
        attributes = {}
    st.caption(
        "Rows are read top to bottom; the first whose attribute has that value (as text, exactly) gives the "
        "user its variant. The last row must be the default `*,*,VARIANT`. The table beside lists the values "
        "each attribute takes among the experiment's users; `lifecycle_stage` and `churn_risk_decile` (with a "
        "churn-risk model) are as of each user's own assignment."
    )
    editor, values = st.columns([3, 2])
    values.dataframe(
        figures_whatif.attribute_values_table(attributes),
        hide_index=True,
        key="wi_rule_values",
    )
    edited = editor.data_editor(
        st.session_state["wi_rule_rows"],
        num_rows="dynamic",
        hide_index=True,
        key="wi_rule_editor",
        column_config={
            "attribute": st.column_config.SelectboxColumn(options=["*", *attributes], required=True),
            "value": st.column_config.TextColumn(required=True),
            "variant": st.column_config.SelectboxColumn(options=variants, required=True),
        },
    )
    upload = st.file_uploader(
        "Or upload a rule file (CSV attribute,value,variant)", type=["csv"], key="wi_rule_file"
    )
    if upload is not None:
        text = upload.getvalue().decode("utf-8-sig")
    else:
        text = rule_text_from_rows(edited[list(HEADER)].itertuples(index=False))
        params["rule"] = rule_to_query_param(text)
    return None, text, model_dir


def _long_term_controls(
    store: Store, experiments: list[str], params: dict[str, str], *, score_risk: bool
) -> dict:
    default = "rec_policy" if "rec_policy" in experiments else experiments[0]
    ui.seed_control(
        "wi_experiment", default, param="experiment", parse=url_params.choice(experiments, "experiment")
    )
    ui.seed_control(
        "wi_retention_day",
        DEFAULT_RETENTION_DAY,
        param="retention_day",
        parse=url_params.whole(1, MAX_RETENTION_DAY),
    )
    ui.seed_control(
        "wi_revenue_days",
        DEFAULT_REVENUE_DAYS,
        param="revenue_days",
        parse=url_params.whole(1, MAX_RETENTION_DAY),
    )
    ui.seed_control(
        "wi_estimator",
        USER_ESTIMATORS[0],
        param="estimator",
        parse=url_params.choice(USER_ESTIMATORS, "estimator"),
    )
    experiment = st.selectbox(
        "Experiment (with propensities)",
        experiments,
        key="wi_experiment",
        help="Its logged assignments answer.",
    )
    variants = list(cached_experiments.experiment_users(store, experiment).users)
    ui.seed_control(
        "wi_versus",
        "logged",
        param="versus",
        parse=url_params.choice(["logged", *variants], "versus"),
        options=["logged", *variants],
    )
    variant, rule_text, model_dir = _target_controls(
        store, experiment, variants, params, score_risk=score_risk
    )
    first, second, third, fourth = st.columns(4)
    retention_day = first.number_input(
        "Retention day D", 1, MAX_RETENTION_DAY, step=1, key="wi_retention_day"
    )
    revenue_days = second.number_input(
        "Revenue over days", 1, MAX_RETENTION_DAY, step=1, key="wi_revenue_days"
    )
    estimator = third.selectbox(
        "Headline estimator",
        USER_ESTIMATORS,
        key="wi_estimator",
        help="aipw: doubly robust (cross-fitted outcome model); ipw: Horvitz-Thompson; hajek: self-normalised.",
    )
    versus = fourth.selectbox(
        "Against",
        ["logged", *variants],
        key="wi_versus",
        format_func=lambda name: "the logged assignment" if name == "logged" else f"everyone {name}",
    )
    params.update(
        experiment=experiment,
        retention_day=str(int(retention_day)),
        revenue_days=str(int(revenue_days)),
        estimator=estimator,
        versus=versus,
    )
    return {
        "experiment": experiment,
        "variant": variant,
        "rule_text": rule_text,
        "model_dir": model_dir,
        "outcomes": (f"retention:{int(retention_day)}", f"revenue:{int(revenue_days)}"),
        "estimator": estimator,
        "versus": versus,
    }


def _show_outcome(
    result: UserPolicyValue, choice: dict, truth: pd.DataFrame | None, truth_column: str | None
) -> pd.DataFrame:
    estimator, versus = choice["estimator"], choice["versus"]
    rate = result.outcome.startswith("retention")
    label = (
        f"Day-{result.outcome.split(':')[1]} retention"
        if rate
        else f"Revenue per user over {result.outcome.split(':')[1]} days"
    )
    shown = (lambda value: f"{value:.2%}") if rate else (lambda value: f"{value:,.2f}")
    # A difference of two rates is in percentage points, not a percentage of anything.
    shown_difference = (lambda value: f"{100 * value:.2f} pts") if rate else shown
    estimate = result.estimate(estimator)
    effect = scenario.relative_effect(result, versus, estimator)
    table = figures_whatif.user_policy_table(result, truth, truth_column)
    agreement_rows = pd.DataFrame([e._asdict() for e in result.estimates])
    spread, overlap = diagnostics.agreement(agreement_rows)
    cells = st.columns(6)
    cells[0].metric(
        f"{label}: {result.target}",
        shown(estimate.value),
        f"{effect.relative:+.1%} vs {'logged' if versus == 'logged' else 'everyone ' + versus}",
        help=f"{estimator}; 95% interval {shown(estimate.ci_low)} to {shown(estimate.ci_high)}",
    )
    cells[1].metric("Logged mean", shown(result.logged_value))
    cells[2].metric("Effective sample size", f"{result.ess:,.0f}", help=f"of {result.rows:,} users used")
    cells[3].metric("Largest weight", f"{result.max_weight:,.2f}")
    cells[4].metric("Share without support", f"{result.unsupported_share:.1%}")
    cells[5].metric(
        "Estimators' spread",
        shown_difference(spread) if pd.notna(spread) else "n/a",
        help="Largest minus smallest estimate; "
        + ("their intervals overlap." if overlap else "their intervals do not overlap."),
    )
    if result.unsupported_share > 0:
        st.warning(
            f"{result.unsupported:,} users ({result.unsupported_share:.1%}) get from the target a variant they had no "
            "chance of getting: no logged user stands for them, so the estimate covers the other users only and is "
            "biased for the whole population.",
            icon=":material/warning:",
        )
    if not overlap:
        st.warning("The estimators' intervals do not overlap: the outcome model or the propensities are off.")
    st.dataframe(table, hide_index=True, key=f"wi_table_{result.outcome}")
    st.plotly_chart(
        figures_whatif.estimates_figure(table, result.logged_value, label, label.lower(), percent=rate),
        key=f"wi_chart_{result.outcome}",
    )
    differences = result.differences
    if not differences.empty:
        st.dataframe(differences, hide_index=True, key=f"wi_differences_{result.outcome}")
    st.caption(
        f"{result.rows:,} users used; {result.incomplete:,} left out because their window had not ended. "
        "95% intervals (influence function). 'naive' is the difference of logged means, what an A/B table "
        "shows: confounded when assignment was targeted."
    )
    return table.assign(outcome=result.outcome)


def long_term_section(
    store: Store,
    experiments: list[str],
    truth: pd.DataFrame | None,
    params: dict[str, str],
    *,
    estimate: bool = True,
) -> tuple[dict[str, UserPolicyValue], dict]:
    """The tab: experiment, target and outcome controls, both outcomes' estimates and the weighted
    survival curve; returns the estimates by outcome (the scenario tab's effects) and its part of
    the page's JSON document. With ``estimate`` False only the controls are drawn (their values
    and the URL stay) and nothing is estimated."""
    st.caption(
        "Estimated from an experiment's logged assignments and their propensities: each user's outcome "
        "measured from their own assignment, had every user got a variant, or the variant a rule gives them. "
        "Definitions: docs/METRICS.md, 'What-if: per-user outcomes under a policy or rule'."
    )
    if not experiments:
        st.info(
            "No experiment of this store records a propensity for every user: load assignments with a propensity column."
        )
        return {}, {}
    choice = _long_term_controls(store, experiments, params, score_risk=estimate)
    if not estimate:
        return {}, {}
    horizon = max(int(params["retention_day"]), int(params["revenue_days"]), scenario.DEFAULT_HORIZON_DAYS)
    days = tuple(float(day) for day in range(0, horizon + 1, SURVIVAL_STEP_DAYS))
    results: dict[str, UserPolicyValue] = {}
    tables = []
    truth_columns = {
        f"retention:{DEFAULT_RETENTION_DAY}": "retention_30d",
        f"revenue:{DEFAULT_REVENUE_DAYS}": "revenue_90d_per_user",
    }
    for outcome in choice["outcomes"]:
        try:
            scoring = (
                " (scoring churn risk at each assignment day)"
                if choice["model_dir"] and CHURN_RISK_DECILE in choice["rule_text"]
                else ""
            )
            with st.spinner(f"Estimating {outcome}{scoring}..."):
                result = cached_whatif.user_policy(
                    store,
                    {
                        "experiment": choice["experiment"],
                        "outcome": outcome,
                        "variant": choice["variant"],
                        "rule_text": choice["rule_text"],
                        "survival_days": days,
                        "model_dir": choice["model_dir"],
                    },
                )
            results[outcome] = result
            st.markdown(f"#### {'Retention' if outcome.startswith('retention') else 'Revenue'}")
            tables.append(_show_outcome(result, choice, truth, truth_columns.get(outcome)))
        except TenureError as error:
            ui.show_error(error, prefix=outcome)
    if not results:
        return {}, {}
    survival = next(iter(results.values())).survival
    st.markdown("#### Time to churn")
    st.plotly_chart(figures_whatif.survival_figure(survival), key="wi_survival")
    read_at = (7, int(params["retention_day"]), scenario.DEFAULT_HORIZON_DAYS)
    st.dataframe(figures_whatif.survival_table(survival, read_at), hide_index=True, key="wi_survival_table")
    st.caption(
        "Inverse-propensity-weighted Kaplan-Meier curve of time to churn (30 days without an event) from "
        "assignment, under the target and each everyone-W policy. Bands and ci_low/ci_high: pointwise 95% "
        f"bootstrap interval over users ({DEFAULT_SURVIVAL_RESAMPLES} resamples, the same draws for every policy)."
    )
    combined = pd.concat(tables, ignore_index=True)
    ui.download_csv(combined, "whatif_long_term.csv", key="wi_long_term_download")
    document = {
        outcome: {
            "target": r.target,
            "rows": r.rows,
            "logged_value": r.logged_value,
            "ess": r.ess,
            "max_weight": r.max_weight,
            "unsupported_share": r.unsupported_share,
            "incomplete": r.incomplete,
            "estimates": combined[combined["outcome"] == outcome],
            "differences": r.differences,
        }
        for outcome, r in results.items()
    }
    return results, {"long_term": {**document, "survival": survival}}
