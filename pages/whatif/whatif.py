"""What-if: what a recommendation policy or a targeting rule would have done, estimated from logs.

Four views over core/whatif: the click rate of a target recommendation policy from the
recommendations log (off-policy, per shown slot), the day-D retention and D-day revenue per user
of a variant or a rule from an experiment with propensities (with the weighted survival curve),
an early read of a long-term outcome for recent users (surrogate index, with its backtest),
and a scenario that projects the current user base's retained users and revenue under the chosen
strategy. Every estimate shows its interval and diagnostics; on a simulated store the ground truth
is shown next to it, labelled. Every control is kept in the URL (uploaded files are not).
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from core import figures_whatif
from core.errors import TenureError
from core.experiments.ltv import LTV_HORIZON_DAYS, ltv_models
from core.experiments.metrics import MAX_RETENTION_DAY
from core.models import registry
from core.store import Store
from core.whatif import diagnostics, scenario
from core.whatif.estimators import ESTIMATORS
from core.whatif.evaluate import WhatIfResult, WhatIfSpec
from core.whatif.policy_value import ESTIMATORS as USER_ESTIMATORS
from core.whatif.rules import HEADER, parse_rule
from core.whatif.segments import CHURN_RISK_DECILE
from core.whatif.survival_ipw import DEFAULT_SURVIVAL_RESAMPLES
from core.whatif.user_policies import UserPolicyValue
from pages.shared import cached_experiments, cached_whatif, ui, url_params, whatif_early_read

TARGET_KINDS = {
    "uniform": "Uniform over the logged items",
    "popularity": "Popularity (best click rate first)",
    "greedy": "Greedy (reward model, 10% exploration)",
    "policy": "A logged policy",
    "file": "Upload probabilities (CSV)",
    "mix": "Mixture of two",
}
SIMPLE_TARGETS = ("uniform", "popularity", "greedy")
ALL_ROWS = "(all rows)"
DEFAULT_ESTIMATORS = ("ipw", "snipw", "dr")
DEFAULT_RESAMPLES = 200
DEFAULT_RETENTION_DAY = 30
DEFAULT_REVENUE_DAYS = 90
# The user-level click rate beside a logged policy's row-level one: every slot from assignment to the
# data's end, as the simulator's truth.policy_values.click_rate counts them.
USER_CLICK_RATE = "click_rate:all"
POLICY_MODES = {"variant": "Everyone gets a variant", "rule": "A targeting rule"}
EFFECT_SOURCES = {"estimated": "Estimated (from the long-term tab)", "assumption": "Typed in (assumption)"}
OBSERVED = "observed"
NO_MODEL = "none"
DONE_KEY = "wi_click_done"
SURVIVAL_STEP_DAYS = 1


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError("must be between 0 and 1")
    return value


def _number(text: str) -> float:
    return float(text)


def _rule_rows(text: str) -> pd.DataFrame:
    """URL form of a rule (rows ``attribute,value,variant`` joined by ';') -> editor rows."""
    rule = parse_rule("\n".join([",".join(HEADER), *text.split(";")]), "URL parameter 'rule'")
    rows = [(c.attribute, c.value, c.variant) for c in rule.conditions] + [("*", "*", rule.default)]
    return pd.DataFrame(rows, columns=list(HEADER))


def _rule_text(rows: pd.DataFrame) -> str:
    """Editor rows -> the rule's CSV text (empty rows dropped)."""
    kept = rows.dropna(how="all").fillna("")
    lines = [
        ",".join(str(cell).strip() for cell in row) for row in kept[list(HEADER)].itertuples(index=False)
    ]
    return "\n".join([",".join(HEADER), *[line for line in lines if line.strip(",")]])


def _choice(label: str, options: list[str], key: str, param: str, **kwargs) -> str:
    """A selectbox kept in the URL as ``param`` whose options depend on the store (saved models):
    a remembered or linked value no longer offered falls back to the first option."""
    ui.seed_control(key, options[0], param=param, parse=url_params.choice(options, param))
    if st.session_state[key] not in options:
        st.session_state[key] = options[0]
    return st.selectbox(label, options, key=key, **kwargs)


def _upload_path(upload, suffix: str) -> Path:
    """The upload saved under a name made of its content's hash: a stable cache key for that content."""
    data = upload.getvalue()
    path = Path(tempfile.gettempdir()) / f"tenure_whatif_{hashlib.sha256(data).hexdigest()[:16]}{suffix}"
    if not path.exists():
        path.write_bytes(data)
    return path


# --- (a) Click rate -------------------------------------------------------------------------------


def _click_controls(policies: list[str], params: dict[str, str]) -> tuple[WhatIfSpec | None, str | None]:
    """The per-recommendation what-if's spec (None until a file is uploaded) and the uploaded name."""
    logs = [ALL_ROWS, *policies]
    simple = [*SIMPLE_TARGETS, *(f"policy:{name}" for name in policies)]
    ui.seed_control("wi_log", policies[0], param="log", parse=url_params.choice(logs, "log"))
    ui.seed_control(
        "wi_target", "policy", param="target", parse=url_params.choice(tuple(TARGET_KINDS), "target")
    )
    ui.seed_control(
        "wi_target_policy",
        policies[-1],
        param="target_policy",
        parse=url_params.choice(policies, "target_policy"),
    )
    ui.seed_control("wi_mix_a", "uniform", param="mix_a", parse=url_params.choice(simple, "mix_a"))
    ui.seed_control("wi_mix_b", simple[-1], param="mix_b", parse=url_params.choice(simple, "mix_b"))
    ui.seed_control("wi_mix_weight", 0.5, param="mix_w", parse=_share)
    ui.seed_control(
        "wi_estimators",
        list(DEFAULT_ESTIMATORS),
        param="estimators",
        parse=url_params.names(ESTIMATORS, "estimator"),
    )
    ui.seed_control("wi_resamples", DEFAULT_RESAMPLES, param="resamples", parse=url_params.whole(10, 5000))
    ui.seed_control("wi_seed", 0, param="seed", parse=url_params.whole(0, 2**31 - 1))
    first, second, third = st.columns([1, 1.4, 1])
    log = first.selectbox(
        "Logged rows of", logs, key="wi_log", help="The rows of the recommendations log to read."
    )
    kind = second.selectbox(
        "Target policy", tuple(TARGET_KINDS), key="wi_target", format_func=TARGET_KINDS.__getitem__
    )
    estimators = third.multiselect(
        "Estimators",
        ESTIMATORS,
        key="wi_estimators",
        help="ipw, snipw (self-normalised): weights only; dm: reward model only; dr, sndr: both (doubly robust).",
    )
    target: str | None = kind
    uploaded = None
    if kind == "policy":
        target = "policy:" + st.selectbox("Logged policy as the target", policies, key="wi_target_policy")
    elif kind == "mix":
        left, middle, right = st.columns(3)
        a = left.selectbox("Policy A", simple, key="wi_mix_a")
        b = middle.selectbox("Policy B", simple, key="wi_mix_b")
        weight = right.slider("Share of A", 0.0, 1.0, step=0.05, key="wi_mix_weight")
        target = f"mix:{a},{b},{weight:g}"
    elif kind == "file":
        upload = st.file_uploader(
            "Target probabilities: CSV with item_id,position,probability (each position sums to 1)",
            type=["csv"],
            key="wi_target_file",
        )
        target = f"file:{_upload_path(upload, '.csv')}" if upload is not None else None
        uploaded = upload.name if upload is not None else None
    left, right = st.columns(2)
    resamples = left.number_input(
        "Bootstrap resamples", min_value=10, max_value=5000, step=50, key="wi_resamples"
    )
    seed = right.number_input("Seed", min_value=0, step=1, key="wi_seed")
    params.update(
        log=log,
        target=kind,
        estimators=",".join(estimators),
        resamples=str(int(resamples)),
        seed=str(int(seed)),
    )
    if kind == "policy":
        params["target_policy"] = st.session_state["wi_target_policy"]
    if kind == "mix":
        params.update(mix_a=a, mix_b=b, mix_w=f"{weight:g}")
    if target is None or not estimators:
        return None, uploaded
    spec = WhatIfSpec(
        target=target,
        log_policy=None if log == ALL_ROWS else log,
        estimators=tuple(estimators),
        seed=int(seed),
        resamples=int(resamples),
    )
    return spec, uploaded


def _show_click_result(result: WhatIfResult, spec: WhatIfSpec, truth: pd.DataFrame | None) -> pd.DataFrame:
    policy = spec.target.removeprefix("policy:") if spec.target.startswith("policy:") else None
    target_truth = figures_whatif.truth_value(truth, policy, "click_rate")
    log_truth = figures_whatif.truth_value(truth, spec.log_policy, "click_rate")
    spread, overlap = diagnostics.agreement(result.estimates)
    cells = st.columns(6)
    cells[0].metric("Rows evaluated", f"{result.rows:,}")
    cells[1].metric("Logged click rate", f"{result.logged_value:.2%}")
    cells[2].metric("Effective sample size", f"{result.ess:,.0f}", help="(sum w)^2 / sum w^2 of the weights.")
    cells[3].metric("Largest weight", f"{result.max_weight:,.2f}")
    cells[4].metric("Share without support", f"{result.unsupported_share:.1%}")
    cells[5].metric(
        "Estimators' spread",
        f"{spread:.2%}" if pd.notna(spread) else "n/a",
        "intervals overlap" if overlap else "intervals do not overlap",
        delta_color="off",
    )
    for warning in result.warnings:
        st.warning(warning[:1].upper() + warning[1:], icon=":material/warning:")
    table = figures_whatif.click_rate_table(result.estimates, spec.target, target_truth)
    st.dataframe(table, hide_index=True, key="wi_click_table")
    st.plotly_chart(
        figures_whatif.estimates_figure(
            table,
            result.logged_value,
            f"Click rate per shown slot of {spec.target}",
            "click rate",
            percent=True,
        ),
        key="wi_click_chart",
    )
    notes = [
        f"Click rate = expected reward per shown slot; 95% bootstrap intervals over requests "
        f"({spec.resamples} resamples). The logged click rate is the logging policy's own on these rows."
    ]
    if truth is not None:
        known = [
            f"{name}: {value:.2%}"
            for name, value in ((spec.target, target_truth), (f"logging policy {spec.log_policy}", log_truth))
            if value is not None
        ]
        notes.append(
            "Simulator ground truth (known only because the data are simulated): "
            + (", ".join(known) if known else "none for this target (only logged policies have one)")
            + "."
        )
    st.caption(" ".join(notes))
    frame = table.copy()
    for name in ("rows", "logged_value", "ess", "max_weight", "unsupported_share"):
        frame[name] = getattr(result, name)
    frame.insert(0, "log_policy", spec.log_policy or ALL_ROWS)
    return frame


def _click_section(
    store: Store, policies: list[str], truth: pd.DataFrame | None, params: dict[str, str]
) -> dict:
    st.caption(
        "Estimated from the recommendations log: what share of shown slots a target policy would have got "
        "clicked, with the logging policy's propensities (off-policy evaluation). Definitions: docs/METRICS.md, "
        "'What-if: off-policy estimates per recommendation'."
    )
    if not policies:
        st.info(
            "This store has no recommendations log: load a recommendations file (request_id, user_id, policy, "
            "item_id, position, propensity, reward) on the Data page."
        )
        return {}
    spec, uploaded = _click_controls(policies, params)
    if spec is None:
        st.info("Upload a target file and pick at least one estimator.")
        return {}
    done: set = st.session_state.setdefault(DONE_KEY, set())
    key = (store.version(), spec)
    if st.button("Estimate click rate", key="wi_click_run", icon=":material/play_arrow:", type="primary"):
        done.add(key)
    if key not in done:
        st.caption("This reads the whole log and may take tens of seconds: press the button to run it.")
        return {}
    try:
        with st.spinner("Estimating the target's click rate from the log..."):
            result = cached_whatif.click_rate(store, spec)
    except TenureError as error:
        done.discard(key)
        if uploaded:
            ui.show_file_error(error, Path(spec.target.removeprefix("file:")), uploaded)
        else:
            ui.show_error(error)
        return {}
    frame = _show_click_result(result, spec, truth)
    ui.download_csv(frame, "whatif_click_rate.csv", key="wi_click_download")
    document = {
        "click_rate": {
            **result.to_dict(details=True),
            "simulator_ground_truth": frame[figures_whatif.TRUTH_LABEL].iloc[0],
        }
    }
    if spec.target.startswith("policy:"):
        document.update(_user_level_click_rate(store, spec.target.removeprefix("policy:"), truth))
    return document


def _user_level_click_rate(store: Store, policy: str, truth: pd.DataFrame | None) -> dict:
    """ "Everyone gets POLICY" per user, where an experiment assigned users to it with propensities."""
    _, experiments, _ = cached_whatif.options(store)
    experiment = cached_whatif.policy_experiment(store, policy, experiments)
    if experiment is None:
        return {}
    question = {
        "experiment": experiment,
        "outcome": USER_CLICK_RATE,
        "variant": policy,
        "rule_text": None,
        "survival_days": [],
        "model_dir": None,
    }
    try:
        with st.spinner(f"Estimating 'everyone gets {policy}' from experiment {experiment}'s users..."):
            result = cached_whatif.user_policy(store, question)
    except TenureError as error:
        ui.show_error(error)
        return {}
    st.subheader(f"User-level estimate: everyone gets {policy}")
    aipw = result.estimate("aipw")
    cells = st.columns(3)
    cells[0].metric(
        "User-level click rate",
        f"{aipw.value:.2%}",
        help=f"AIPW over the users of experiment {experiment}, weighted by their assignment propensities.",
    )
    cells[1].metric("User-level 95% interval", f"{aipw.ci_low:.2%} to {aipw.ci_high:.2%}")
    cells[2].metric("Users", f"{result.rows:,}")
    target_truth = figures_whatif.truth_value(truth, policy, "click_rate")
    table = figures_whatif.click_rate_table(
        pd.DataFrame(result.estimates), f"everyone {policy} (user-level)", target_truth
    )
    st.dataframe(table, hide_index=True, key="wi_click_users_table")
    st.caption(
        f"Users of experiment '{experiment}' were assigned to {policy} with recorded propensities, so "
        f"'everyone gets {policy}' has a user-level estimate: clicks per shown slot from each user's assignment "
        "to the data's end, inverse-propensity weighted over users (ratio of weighted means, delta-method 95% "
        "intervals). Trust it over the row-level estimate above when the policy is context-dependent (it shows "
        "different items to different users): rows logged by another policy do not tell its probability of "
        "each item in each context, the users' assignment does. Definitions: docs/METRICS.md, 'What-if: "
        "per-user outcomes under a policy or rule'."
    )
    return {
        "click_rate_user_level": {
            "experiment": experiment,
            "outcome": result.outcome,
            "rows": result.rows,
            "estimates": [estimate._asdict() for estimate in result.estimates],
            "simulator_ground_truth": target_truth,
        }
    }


# --- (b) Long-term outcomes -----------------------------------------------------------------------


def _risk_model(store: Store, params: dict[str, str]) -> str | None:
    """The model folder that scores ``churn_risk_decile`` for a rule, or None."""
    chosen = _choice(
        "Churn-risk model",
        [NO_MODEL, *registry.saved_model_paths(store)],
        "wi_risk_model",
        "risk_model",
        help="A registered model that scores each user as of the start of their assignment day, so that a rule "
        f"may use {CHURN_RISK_DECILE} (1..10, 10 the riskiest tenth). Slow: one model run per assignment day.",
    )
    params["risk_model"] = chosen
    return None if chosen == NO_MODEL else chosen


def _target_controls(
    store: Store, experiment: str, variants: list[str], params: dict[str, str]
) -> tuple[str | None, str | None, str | None]:
    """(variant, rule CSV text, churn-risk model folder): one of variant and rule is set; the
    model only with a rule."""
    ui.seed_control(
        "wi_mode", "variant", param="policy", parse=url_params.choice(tuple(POLICY_MODES), "policy")
    )
    ui.seed_control("wi_variant", variants[-1], param="variant", parse=url_params.choice(variants, "variant"))
    if st.session_state["wi_variant"] not in variants:
        st.session_state["wi_variant"] = variants[-1]
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
        default = pd.DataFrame([("*", "*", variants[0])], columns=list(HEADER))
        text = ui.url_at_start().get("rule")
        try:
            st.session_state["wi_rule_rows"] = _rule_rows(text) if text else default
        except TenureError as error:
            st.warning(f"URL parameter 'rule' was ignored: {error.message}")
            st.session_state["wi_rule_rows"] = default
    try:
        with st.spinner(
            "Scoring each user's churn risk at their assignment day (one model run per day)..."
            if model_dir
            else "Reading the attributes a rule may use..."
        ):
            attributes = cached_whatif.rule_attributes(store, experiment, model_dir)
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
    text = upload.getvalue().decode("utf-8-sig") if upload is not None else _rule_text(edited)
    if upload is None:
        params["rule"] = ";".join(text.splitlines()[1:])
    return None, text, model_dir


def _long_term_controls(store: Store, experiments: list[str], params: dict[str, str]) -> dict:
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
        "wi_versus", "logged", param="versus", parse=url_params.choice(["logged", *variants], "versus")
    )
    if st.session_state["wi_versus"] not in ["logged", *variants]:
        st.session_state["wi_versus"] = "logged"
    variant, rule_text, model_dir = _target_controls(store, experiment, variants, params)
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
        shown(spread) if pd.notna(spread) else "n/a",
        "intervals overlap" if overlap else "intervals do not overlap",
        delta_color="off",
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


def _long_term_section(
    store: Store, experiments: list[str], truth: pd.DataFrame | None, params: dict[str, str]
) -> tuple[dict[str, UserPolicyValue], dict]:
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
    choice = _long_term_controls(store, experiments, params)
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


# --- (c) Scenario ---------------------------------------------------------------------------------


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


def _scenario_section(store: Store, results: dict[str, UserPolicyValue], params: dict[str, str]) -> dict:
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
    chosen = _choice(
        "Per-user baseline",
        [OBSERVED, *models],
        "wi_baseline",
        "baseline",
        format_func=lambda name: (
            "Observed one horizon earlier" if name == OBSERVED else f"Model scores: {name}"
        ),
        help=f"Saved models with a {LTV_HORIZON_DAYS}-day horizon are offered when H is {LTV_HORIZON_DAYS} days.",
    )
    params.update(
        active_days=str(int(active_days)), horizon=str(int(horizon)), reach=str(int(reach)), baseline=chosen
    )
    effects = _effects(results, params)
    if effects is None:
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


def main() -> None:
    store = ui.get_store()
    st.title("What-if")
    st.caption(
        "What a recommendation policy or a targeting rule would have done, estimated from what was logged. "
        "The sidebar filters do not apply: each estimate reads its whole log or experiment."
    )
    try:
        policies, experiments, truth = cached_whatif.options(store)
    except TenureError as error:
        ui.show_error(error)
        return
    if truth is not None:
        st.info(
            "This store is simulated: the simulator's ground truth is shown next to the estimates, labelled "
            f"'{figures_whatif.TRUTH_LABEL}'. Real data have none.",
            icon=":material/science:",
        )
    params: dict[str, str] = {}
    click_tab, long_tab, early_tab, scenario_tab, download_tab = st.tabs(
        ["Click rate", "Long-term outcomes", "Early read", "Scenario", "Downloads"]
    )
    document: dict = {}
    with click_tab:
        document.update(_click_section(store, policies, truth, params))
    with long_tab:
        results, long_term = _long_term_section(store, experiments, truth, params)
        document.update(long_term)
    with early_tab:
        document.update(whatif_early_read.early_read_section(store, experiments, params))
    with scenario_tab:
        document.update(_scenario_section(store, results, params))
    ui.share_in_url(params)
    with download_tab:
        st.caption(
            "Every result this page has computed in this view, as one JSON document (CSV files are in each tab)."
        )
        st.download_button(
            "Download JSON",
            data=figures_whatif.estimates_json(document),
            file_name="whatif.json",
            mime="application/json",
            key="wi_json",
            on_click="ignore",
            icon=":material/download:",
            disabled=not document,
        )


main()
