"""Experiments: review an A/B experiment. The list of experiments with their sample ratio check,
then for the chosen one: the check's verdict, the summary card in plain words, the metric table
(fixed-horizon, adjusted, always-valid and Bayesian figures), the effect day by day, segments,
planning (power / MDE) and the model-based predicted LTV, one tab each. Only the open tab runs.
Every control, the open tab included, is kept in the URL."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import streamlit as st

from core import figures_experiments, figures_experiments_survival
from core.cli_ab import review_json
from core.errors import TenureError
from core.experiments.analysis import CORRECTIONS, Options, Review, choose_control
from core.experiments.bayes import MEAN_PRIOR, RATE_PRIOR
from core.experiments.ltv import LTV_HORIZON_DAYS, LTV_METRIC, ltv_models, with_ltv_rows
from core.experiments.metrics import MAX_RETENTION_DAY, Design, parse_metric
from core.experiments.power import DEFAULT_POWER, PowerSettings
from core.experiments.segments import DEFAULT_MIN_USERS
from core.experiments.summary import sentences
from core.experiments.survival import DEFAULT_MAX_DAY
from core.store import Store
from core.survival import DEFAULT_HORIZON_DAYS, DEFAULT_INACTIVITY_DAYS
from pages.shared import cached, cached_experiments, ui, url_params

RETENTION_DAYS = (1, 3, 7, 14, 21, 30, 60, 90)
WINSORIZE = {"off": None, "99": 99.0, "99.9": 99.9}
WINSORIZE_LABELS = {"off": "Off", "99": "99th percentile", "99.9": "99.9th percentile"}
DEFAULT_DAYS = 14
DEFAULT_REL_EFFECT = 5.0
LTV_STATE = "exp_ltv_result"
NO_MODEL = ""
# Tab label -> its name in the URL. Only the open tab runs: a cold review then costs the Results
# tab's queries, not every tab's (survival, segments and planning each query the store again).
TABS = {
    "Results": "results",
    "Over time": "over-time",
    "Retention & survival": "survival",
    "Segments": "segments",
    "Planning": "planning",
    "Predicted LTV": "ltv",
}


def metric_options(store: Store) -> list[str]:
    """The review's default metrics, conversion to every event of the store, retention at set days."""
    defaults = cached_experiments.default_metric_names(store)
    conversions = [f"conversion:{name}" for name in cached.event_names(store)]
    retention = [f"retention:{day}" for day in RETENTION_DAYS]
    return list(dict.fromkeys([*defaults, *conversions, *retention]))


def _days(text: str) -> int:
    days = int(text)
    if not 1 <= days <= MAX_RETENTION_DAY:
        raise ValueError(f"days must be from 1 to {MAX_RETENTION_DAY}")
    return days


def _flag(text: str) -> bool:
    return text.lower() in ("1", "true", "on")


def _metric_list(options: list[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [parse_metric(part).name for part in text.split(",") if part.strip()]
        return url_params.names(options, "metric")(",".join(names))

    return parse


def _seed_controls(names: list[str], metrics: list[str], defaults: list[str]) -> None:
    """Starting values: this session's, else the URL's, else those of the last visit, else defaults."""
    ui.seed_choice("exp_experiment", names, param="experiment")
    ui.seed_control("exp_metrics", defaults, param="metrics", parse=_metric_list(metrics), options=metrics)
    ui.seed_control("exp_days", DEFAULT_DAYS, param="days", parse=_days)
    ui.seed_control("exp_control", None, param="control")
    ui.seed_control("exp_cuped", False, param="cuped", parse=_flag)
    ui.seed_control(
        "exp_correction",
        "holm",
        param="correction",
        parse=url_params.choice(tuple(CORRECTIONS), "correction"),
    )
    ui.seed_control(
        "exp_winsorize", "off", param="winsorize", parse=url_params.choice(tuple(WINSORIZE), "winsorize")
    )
    ui.seed_control("exp_tab", "Results", param="tab", parse=url_params.tab(TABS))


def _draw_controls(store: Store, names: list[str], metrics: list[str]) -> tuple[Design, Options]:
    experiment = st.selectbox("Experiment", names, key="exp_experiment")
    variants = list(cached_experiments.experiment_users(store, experiment).users)
    ui.seed_control("exp_control", choose_control(variants, None), options=variants)
    chosen = st.multiselect(
        "Metrics",
        metrics,
        key="exp_metrics",
        help="conversion:EVENT: the user did EVENT within N days of assignment; retention:D: any event on day D "
        "after assignment; revenue, events: per user within N days; revenue_per_session: revenue over sessions "
        "within N days (delta method).",
    )
    first, second, third, fourth, fifth = st.columns([1, 1, 1, 1.3, 1.3])
    days = first.number_input(
        "Window N (days)",
        min_value=1,
        max_value=MAX_RETENTION_DAY,
        step=1,
        key="exp_days",
        help="Conversion, revenue and events count within N days of each user's own assignment; "
        "CUPED's pre-period is the N days before it.",
    )
    control = second.selectbox("Control", variants, key="exp_control")
    third.toggle(
        "CUPED",
        key="exp_cuped",
        help="Adjust each metric for the same quantity over the N days before assignment "
        "(less variance, same expected effect).",
    )
    correction = fourth.selectbox(
        "Correction",
        tuple(CORRECTIONS),
        key="exp_correction",
        format_func=CORRECTIONS.__getitem__,
        help="Across every metric and variant: Holm controls the chance of any false positive, "
        "Benjamini-Hochberg the share of false positives among the findings.",
    )
    winsorize = fifth.selectbox(
        "Winsorise revenue",
        tuple(WINSORIZE),
        key="exp_winsorize",
        format_func=WINSORIZE_LABELS.__getitem__,
        help="Cap each user's revenue at this percentile of the experiment's users (one cap for all arms).",
    )
    design = Design(
        experiment,
        tuple(parse_metric(name) for name in chosen),
        days=int(days),
        winsorize=WINSORIZE[winsorize],
    )
    options = Options(control=control, cuped=bool(st.session_state["exp_cuped"]), correction=correction)
    return design, options


def _url_params(design: Design, options: Options, winsorize: str) -> dict[str, str]:
    return {
        "experiment": design.experiment,
        "metrics": ",".join(spec.name for spec in design.metrics),
        "days": str(design.days),
        "control": str(options.control),
        "cuped": "1" if options.cuped else "0",
        "correction": options.correction,
        "winsorize": winsorize,
    }


def _no_experiments() -> None:
    st.info(
        "This store has no experiments: its assignments table has no rows. Load an assignments file "
        "(one row per user and experiment: user_id, experiment, variant, assigned_time, optionally propensity) "
        "on the Data page, or with `python -m core ingest FILE --table assignments`."
    )
    st.page_link("pages/data/data.py", label="Go to Data", icon=":material/database:")


def _srm_section(review: Review) -> None:
    users = review.users
    counts = ", ".join(f"{variant} {count:,}" for variant, count in users.users.items())
    shares = ", ".join(f"{variant} {share:.1%}" for variant, share in users.intended_share.items())
    if users.srm_failed:
        st.error(
            f"**Sample ratio mismatch: these results cannot be trusted.** Users per variant ({counts}) differ from "
            f"the intended split ({shares}, from {users.split_source}), p = {users.srm_p_value:.2g} < 0.001. "
            "Assignment or logging is broken; fix it before reading any effect.",
            icon=":material/error:",
        )
    else:
        st.success(
            f"Sample ratio check passed: users per variant {counts} match the intended split ({shares}), "
            f"p = {users.srm_p_value:.2g}.",
            icon=":material/check_circle:",
        )
    for note in review.warnings:
        if not note.startswith("Sample ratio mismatch"):
            st.warning(note)


def _summary_card(review: Review) -> None:
    with st.container(border=True):
        st.markdown("**Summary**")
        st.markdown("\n".join(f"- {line}" for line in sentences(review)))
        st.caption(
            "Every claim above is a row of the table below (effects after the multiple-comparison adjustment)."
        )


def _results_section(review: Review) -> None:
    design, options = review.design, review.options
    shown = figures_experiments.results_display(
        review.results, design.days, options.correction, options.cuped
    )
    st.dataframe(shown, hide_index=True, key="exp_results")
    priors = sorted(set(review.results.get("prior", pd.Series(dtype=str)).dropna()) - {""})
    prior_text = "; ".join(
        f"rates: {RATE_PRIOR}"
        if prior == RATE_PRIOR
        else f"means: {MEAN_PRIOR}"
        if prior == MEAN_PRIOR
        else prior
        for prior in priors
    )
    st.caption(
        f"Differences are variant minus control ({review.control}); rates in percentage points. "
        f"p-values are two-sided; the adjusted p-values are {CORRECTIONS[options.correction]}-adjusted over every "
        "metric and variant. The always-valid interval stays valid for someone who has looked at the result every "
        "day since the first assignment (mSPRT); the fixed-horizon interval holds for one look at a planned end. "
        f"Chance to beat control and expected loss (what shipping the variant is expected to cost, in the metric's "
        f"units) are Bayesian, with priors: {prior_text or 'none'}. Definitions: docs/METRICS.md, 'A/B experiments'."
    )
    left, right = st.columns(2)
    with left:
        ui.download_csv(review.results, f"{design.experiment}_results.csv", key="download_exp_results")
    right.download_button(
        "Download JSON (ab format)",
        data=review_json(review, details=True),
        file_name=f"{design.experiment}_review.json",
        mime="application/json",
        key="download_exp_json",
        on_click="ignore",
        icon=":material/download:",
    )
    st.plotly_chart(
        figures_experiments.relative_effects_figure(review.results, design.days), key="exp_effects"
    )


def _cumulative_section(review: Review) -> None:
    cumulative = review.cumulative
    if cumulative.empty:
        st.info("No day-by-day view for this selection.")
        return
    pairs = list(dict.fromkeys(zip(cumulative["metric"], cumulative["variant"], strict=True)))
    first, second = st.columns(2)
    metrics = list(dict.fromkeys(metric for metric, _ in pairs))
    metric = first.selectbox(
        "Metric",
        metrics,
        key="exp_cum_metric",
        format_func=lambda name: figures_experiments.metric_label(name, review.design.days),
    )
    variants = [variant for name, variant in pairs if name == metric]
    variant = second.selectbox("Variant", variants, key="exp_cum_variant")
    st.plotly_chart(
        figures_experiments.cumulative_figure(cumulative, metric, variant, review.design.days),
        key="exp_cumulative",
    )
    st.caption(
        "For each assignment day, every user assigned on or before it (with their full window). The fixed-horizon "
        "band is valid only at one planned look; the always-valid band may be read every day, which is why it is "
        "wider. Stopping early because the fixed-horizon band left zero inflates false positives."
    )


def _positive_days(text: str) -> float:
    days = float(text)
    if not days > 0:
        raise ValueError("days must be positive")
    return days


def _seed_tab_controls(store: Store) -> list[str]:
    """Seed the controls of the survival and segment tabs; returns the segment attributes.

    Seeded on every run, open tab or not, so that the URL keeps their values while another tab
    is shown.
    """
    ui.seed_control("exp_inactivity", DEFAULT_INACTIVITY_DAYS, param="inactivity", parse=_positive_days)
    ui.seed_control("exp_horizon", DEFAULT_HORIZON_DAYS, param="horizon", parse=_positive_days)
    ui.seed_control("exp_max_day", DEFAULT_MAX_DAY, param="max_day", parse=_days)
    attributes = ui.segment_attribute_names(store)
    if attributes:
        ui.seed_choice("exp_segment", attributes, param="segment")
    return attributes


def _survival_section(store: Store, review: Review) -> None:
    first, second, third = st.columns(3)
    inactivity = first.number_input(
        "Inactivity (days)",
        min_value=0.01,
        step=1.0,
        key="exp_inactivity",
        help="W: a user whose last event since assignment is at least W days before the data's end churned "
        "at that event; else censored at the data's end.",
    )
    horizon = second.number_input(
        "RMST horizon (days)",
        min_value=0.01,
        step=1.0,
        key="exp_horizon",
        help="tau: the restricted mean counts days retained up to it (lowered to the shortest follow-up).",
    )
    max_day = third.number_input(
        "Retention up to day", min_value=1, max_value=MAX_RETENTION_DAY, step=1, key="exp_max_day"
    )
    experiment = review.design.experiment
    try:
        with st.spinner("Measuring time to churn per variant..."):
            survival = cached_experiments.variant_survival(
                store, experiment, review.control, float(inactivity), float(horizon)
            )
            retention = cached_experiments.variant_retention(store, experiment, int(max_day))
    except TenureError as error:
        ui.show_error(error)
        return
    cells = st.columns(1 + len(survival.users))
    cells[0].metric("Log-rank p (all variants)", figures_experiments.format_p(survival.logrank_p))
    for cell, (variant, users) in zip(cells[1:], survival.users.items(), strict=True):
        cell.metric(f"Churned: {variant}", f"{survival.churned[variant]:,} of {users:,}")
    st.plotly_chart(figures_experiments_survival.variant_survival_figure(survival), key="exp_km")
    st.markdown(
        f"**Restricted mean survival time up to day {survival.tau_days:.4g}** (days retained, vs {review.control})"
    )
    st.dataframe(figures_experiments.rmst_display(survival.rmst), hide_index=True, key="exp_rmst")
    st.caption(
        "Durations count from each user's assignment, not their first event. The RMST is the area under a "
        "curve up to the horizon: the mean days retained within it; its difference is the variant's gain in "
        "days. The log-rank test compares whole curves. These are not part of the adjusted family above."
    )
    st.plotly_chart(figures_experiments_survival.variant_retention_figure(retention), key="exp_retention")
    with st.expander("Retention table", expanded=False):
        st.dataframe(retention, hide_index=True, key="exp_retention_table")
        ui.download_csv(retention, f"{experiment}_retention_by_day.csv", key="download_exp_retention")


def _segments_section(store: Store, design: Design, options: Options, attributes: list[str]) -> None:
    if not attributes:
        st.info(
            "The users table has no attributes to segment by: load a users file with columns such as country."
        )
        return
    attribute = st.selectbox("Users attribute", attributes, key="exp_segment")
    try:
        with st.spinner("Reviewing each segment..."):
            result = cached_experiments.segment_review(store, design, options, attribute)
    except TenureError as error:
        ui.show_error(error)
        return
    for note in result.warnings:
        st.warning(note)
    shown = figures_experiments.results_display(result.results, design.days, "bh", False)
    shown.insert(0, "segment", result.results["segment"].to_numpy())
    shown.insert(1, "users", result.results["segment_users"].to_numpy())
    st.dataframe(shown, hide_index=True, key="exp_segment_table")
    ui.download_csv(
        result.results, f"{design.experiment}_{attribute}_segments.csv", key="download_exp_segments"
    )
    st.markdown("**Does the effect differ across segments?** Cochran's Q per metric")
    heterogeneity = result.heterogeneity.assign(
        metric=[
            figures_experiments.metric_label(str(name), design.days)
            for name in result.heterogeneity["metric"]
        ]
    )
    st.dataframe(heterogeneity, hide_index=True, key="exp_heterogeneity")
    st.caption(
        f"Rows with fewer than {DEFAULT_MIN_USERS} users in an arm are shown without a test. Q compares the "
        "segments' effects with their inverse-variance pooled effect (chi-square on segments - 1 df); I^2 is the "
        "share of their spread beyond chance."
    )


def _planning_section(store: Store, design: Design, review: Review) -> None:
    st.caption(
        f"Measured on the users of '{design.experiment}' in arm '{review.control}' (the control, so a shipped "
        "effect does not inflate the variance), with each metric exactly as the review computes it. Traffic "
        "defaults to this experiment's users per day."
    )
    try:
        measured = cached_experiments.baseline(store, design, review.control)
    except TenureError as error:
        ui.show_error(error)
        return
    arms = len(review.users.users)
    first, second, third, fourth = st.columns(4)
    power = first.number_input(
        "Power", min_value=0.5, max_value=0.99, value=DEFAULT_POWER, step=0.05, key="exp_plan_power"
    )
    daily = second.number_input(
        "Users per day (all arms)",
        min_value=1.0,
        value=float(round(max(measured.daily_users, 1.0), 1)),
        step=10.0,
        key="exp_plan_daily",
    )
    effect = third.number_input(
        "Relative effect to detect (%)", value=DEFAULT_REL_EFFECT, step=1.0, key="exp_plan_effect"
    )
    cuped = fourth.toggle("Plan for CUPED", value=review.options.cuped, key="exp_plan_cuped")
    try:
        settings = PowerSettings(power=float(power), cuped=bool(cuped), arms=arms)
        table, mde, needed = cached_experiments.plan(
            store, design, review.control, settings, float(daily), float(effect) / 100
        )
    except TenureError as error:
        ui.show_error(error)
        return

    def label(name: object) -> str:
        return figures_experiments.metric_label(str(name), design.days)

    st.markdown("**Minimum detectable effect by days of enrolment**")
    grid = mde.assign(metric=mde["metric"].map(label), days=mde["days"].astype(int))
    grid["MDE (relative)"] = [f"{value:.1%}" if pd.notna(value) else "n/a" for value in grid["mde_rel"]]
    pivot = grid.pivot(index="metric", columns="days", values="MDE (relative)")
    pivot.columns = [f"{days} days" for days in pivot.columns]
    st.dataframe(
        pivot.reindex([label(spec.name) for spec in design.metrics]).reset_index(),
        hide_index=True,
        key="exp_mde",
    )
    st.markdown(f"**Users needed for a {effect:+g}% change**")
    st.dataframe(needed.assign(metric=needed["metric"].map(label)), hide_index=True, key="exp_needed")
    with st.expander("Baseline per metric", expanded=False):
        st.dataframe(table.assign(metric=table["metric"].map(label)), hide_index=True, key="exp_baseline")
    st.caption(
        f"Two-sided test at 5%, power {power:.0%}, {arms} arms sharing the traffic equally. The MDE is relative to "
        "the control's mean; with CUPED the variance is the residual after the pre-period (where it has one). "
        "Each user's window must still end before the review reads the metric."
    )


def _ltv_key(store: Store, review: Review) -> tuple:
    """What a computed LTV result belongs to besides its model: the store's version and the
    review's settings. ``LTV_STATE`` holds ``(this key, model folder, extended review)``."""
    return (
        store.version(),
        cached_experiments.design_key(review.design),
        cached_experiments.options_key(review.options),
    )


def _with_saved_ltv(store: Store, review: Review) -> Review:
    """The review with the predicted-LTV rows computed earlier for these settings, if any.

    Read outside the LTV tab: only the open tab runs, so the Results tab and the sample ratio
    verdict above the tabs take the rows from here.
    """
    saved = st.session_state.get(LTV_STATE)
    if saved is None or saved[0] != _ltv_key(store, review):
        return review
    return saved[2]


def _ltv_section(store: Store, review: Review) -> None:
    """The model-based metric: computed on demand and kept for the Results tab."""
    st.caption(
        f"**Model-based.** Each user's revenue over the {LTV_HORIZON_DAYS} days after the end of the day of "
        f"assignment + N days, as predicted by a saved model from what the user did up to then. A difference is "
        "a difference in predictions, not in revenue; the rows join the adjusted p-value family of the table."
    )
    models = ltv_models(store)
    if not models:
        st.info(
            f"No registered model with a {LTV_HORIZON_DAYS}-day horizon: train one on the Models page "
            f"(horizon {LTV_HORIZON_DAYS} days)."
        )
        return
    model = st.selectbox("Model", models, key="exp_ltv_model", format_func=ui.model_namer(store))
    key = _ltv_key(store, review)
    if st.button("Compute predicted LTV", key="exp_ltv_run", icon=":material/play_arrow:"):
        bar = st.progress(0.0, text="Scoring users...")
        try:
            extended = with_ltv_rows(
                store,
                review,
                model,
                progress=lambda fraction, message: bar.progress(min(max(fraction, 0.0), 1.0), text=message),
            )
        except TenureError as error:
            bar.empty()
            ui.show_error(error)
            return
        bar.empty()
        st.session_state[LTV_STATE] = (key, model, extended)
    saved = st.session_state.get(LTV_STATE)
    if saved is None or saved[:2] != (key, model):
        st.caption(
            "Every model kind scores every user at their own as-of in one pass: about a second for the "
            "6,200 users of the sample's experiments, longer for a sequence model on a large one."
        )
        return
    extended = saved[2]
    rows = extended.results[extended.results["metric"] == LTV_METRIC]
    st.dataframe(
        figures_experiments.results_display(rows, review.design.days, review.options.correction, False),
        hide_index=True,
        key="exp_ltv_table",
    )
    for note in extended.warnings[len(review.warnings) :]:
        st.caption(note)
    st.caption("These rows are also in the Results tab's table, summary and downloads.")


def main() -> None:
    store = ui.get_store()
    st.title("Experiments")
    st.caption(
        "A/B experiments: each user's metrics are measured from their own assignment time; users assigned to more "
        "than one variant are left out. The sidebar filters do not apply: a review covers every assigned user "
        "(use the Segments tab to split by a users attribute)."
    )
    try:
        overview = cached_experiments.overview(store)
    except TenureError as error:
        ui.show_error(error)
        return
    if overview.empty:
        _no_experiments()
        return
    st.dataframe(figures_experiments.overview_display(overview), hide_index=True, key="exp_overview")
    names = overview["experiment"].tolist()
    metrics = metric_options(store)
    defaults = [name for name in cached_experiments.default_metric_names(store) if name in metrics]
    _seed_controls(names, metrics, defaults)
    try:
        design, options = _draw_controls(store, names, metrics)
    except TenureError as error:
        ui.show_error(error)
        return
    params = _url_params(design, options, st.session_state["exp_winsorize"])
    ui.share_in_url(params)
    try:
        with st.spinner("Reviewing the experiment..."):
            review = cached_experiments.review(store, design, options)
    except TenureError as error:
        ui.show_error(error)
        return

    attributes = _seed_tab_controls(store)
    shown = _with_saved_ltv(store, review)
    _srm_section(shown)
    results_tab, time_tab, survival_tab, segments_tab, planning_tab, ltv_tab = st.tabs(
        list(TABS), key="exp_tab", on_change="rerun"
    )
    if results_tab.open:
        with results_tab:
            _summary_card(shown)
            _results_section(shown)
    if time_tab.open:
        with time_tab:
            _cumulative_section(review)
    if survival_tab.open:
        with survival_tab:
            _survival_section(store, review)
    if segments_tab.open:
        with segments_tab:
            _segments_section(store, design, options, attributes)
    if planning_tab.open:
        with planning_tab:
            _planning_section(store, design, review)
    if ltv_tab.open:
        with ltv_tab:
            _ltv_section(store, review)
    params.update(
        tab=TABS[st.session_state["exp_tab"]],
        inactivity=f"{st.session_state['exp_inactivity']:g}",
        horizon=f"{st.session_state['exp_horizon']:g}",
        max_day=str(st.session_state["exp_max_day"]),
    )
    if st.session_state.get("exp_segment"):
        params["segment"] = st.session_state["exp_segment"]
    ui.share_in_url(params)


main()
