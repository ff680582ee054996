"""Explore / Survival: time until users churn. Kaplan-Meier curves with bands and the number at
risk, medians, survival at chosen days, RMST and its difference, log-rank tests and a Cox model.
Every control is kept in the URL."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from core import figures_survival
from core.errors import TenureError
from core.survival import (
    DEFAULT_SURVIVAL_DAYS,
    LANDMARK_DAYS,
    SurvivalSpec,
    churned_at_start,
    terminal_event_starts_users,
)
from pages.shared import cached, cached_survival, ui, url_params

NO_TERMINAL = ""
NO_BREAKDOWN = ""
DAY_OPTIONS = (1.0, 7.0, 14.0, 30.0, 60.0, 90.0, 180.0, 365.0)
START_LABELS = {"first_event": "First event", "signup": "Signup (else first event)"}


def _days(name: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        return SurvivalSpec.from_query_params({name: text}).to_dict()[f"{name}_days"]

    return parse


def _day_list(text: str) -> list[float]:
    days = list(SurvivalSpec.from_query_params({"days": text}).survival_days)
    unknown = [day for day in days if day not in DAY_OPTIONS]
    if unknown:
        raise ValueError(f"days must be among {', '.join(f'{day:g}' for day in DAY_OPTIONS)}")
    return days


def _seed_controls(event_names: list[str], breakdowns: list[str], attributes: list[str]) -> None:
    """Starting values: this session's, else the URL's, else those of the last visit, else defaults."""
    ui.seed_control("surv_inactivity", 30.0, param="inactivity", parse=_days("inactivity"))
    ui.seed_control(
        "surv_start", "first_event", param="start", parse=url_params.choice(tuple(START_LABELS), "start")
    )
    ui.seed_optional_choice("surv_terminal", NO_TERMINAL, event_names, param="terminal")
    ui.seed_optional_choice("surv_by", NO_BREAKDOWN, breakdowns, param="by")
    ui.seed_control("surv_horizon", 90.0, param="horizon", parse=_days("horizon"))
    ui.seed_control("surv_days", list(DEFAULT_SURVIVAL_DAYS), param="days", parse=_day_list)
    ui.seed_control(
        "surv_cox", [], param="cox", parse=url_params.names(attributes, "attribute"), options=attributes
    )
    ui.seed_control(
        "surv_first_week", False, param="first_week", parse=lambda text: text.lower() in ("1", "true")
    )


def _draw_controls(event_names: list[str], breakdowns: list[str]) -> SurvivalSpec:
    first, start_column, second, third, fourth, fifth = st.columns([1, 1, 1, 1.4, 1, 1.6])
    start = start_column.selectbox(
        "Start",
        tuple(START_LABELS),
        key="surv_start",
        format_func=START_LABELS.__getitem__,
        help="Durations run from each user's first event, or from their signup time where the users table has one.",
    )
    inactivity = first.number_input(
        "Inactivity (days)",
        min_value=0.01,
        step=1.0,
        format="%g",
        key="surv_inactivity",
        help="W: a user whose last event is at least W days before the data's end has churned at that last event.",
    )
    terminal = second.selectbox(
        "Terminal event",
        [NO_TERMINAL, *event_names],
        key="surv_terminal",
        format_func=lambda name: name or "None (inactivity)",
        help="Churn at the first event of this name instead of after inactivity.",
    )
    by = third.selectbox(
        "Breakdown",
        [NO_BREAKDOWN, *breakdowns],
        key="surv_by",
        format_func=lambda name: name or "None",
        help="One curve per users attribute value, start cohort or experiment variant.",
    )
    horizon = fourth.number_input(
        "RMST horizon (days)",
        min_value=0.01,
        step=1.0,
        format="%g",
        key="surv_horizon",
        help="tau of the restricted mean.",
    )
    days = fifth.multiselect(
        "Survival at days", DAY_OPTIONS, key="surv_days", format_func=lambda day: f"{day:g}"
    )
    return SurvivalSpec.from_query_params(
        {
            "inactivity": str(inactivity),
            "start": start,
            "terminal": terminal,
            "by": by,
            "horizon": str(horizon),
            "days": ",".join(f"{day:g}" for day in days),
            "cox": ",".join(st.session_state["surv_cox"]),
            "first_week": "1" if st.session_state["surv_first_week"] else "0",
        }
    )


def _caption(spec: SurvivalSpec, data_end: str) -> str:
    start = (
        "signup (or first event when no signup is known)" if spec.start.kind == "signup" else "first event"
    )
    if spec.terminal_event:
        churn = f"a user **churns** at their first '{spec.terminal_event}' event at or after their start"
    else:
        churn = (
            f"a user **churns** at their last event when that is at least {spec.inactivity_days:g} days before "
            "the data's end (an earlier gap followed by a return is not a churn)"
        )
    return (
        f"**Duration**: days from a user's {start} to churn; {churn}; otherwise the user is **censored** at "
        f"the data's end ({data_end}). **S(t)**: Kaplan-Meier estimate of the share not yet churned t days after "
        "the start, with 95% pointwise bands (Greenwood, log(-log)). **Median**: first day with S <= 0.5, interval "
        "from the bands. **RMST**: area under S up to the horizon = mean days retained within it. Log-rank tests "
        "compare whole curves. Definitions: docs/METRICS.md, 'Survival'."
    )


def main() -> None:
    store = ui.get_store()
    filters = ui.get_filters()
    st.title("Survival")
    st.caption(f"Time until churn of {ui.describe_filters(filters)}.")
    event_names = cached.event_names(store)
    if not event_names:
        st.info("This store has no events yet: load a file on the Data page.")
        st.page_link("pages/data/data.py", label="Go to Data", icon=":material/database:")
        return
    breakdowns = cached.breakdown_options(store)
    attributes = ui.segment_attribute_names(store)
    _seed_controls(event_names, breakdowns, attributes)
    try:
        spec = _draw_controls(event_names, breakdowns)
    except TenureError as error:
        ui.show_error(error)
        return
    ui.share_in_url(spec.to_query_params())

    try:
        with st.spinner("Measuring durations..."):
            frame = cached_survival.durations(store, spec, filters)
            km = cached_survival.kaplan_meier(store, spec, filters)
            tests = cached_survival.log_rank(store, spec, filters)
    except TenureError as error:
        ui.show_error(error)
        return
    if frame.empty:
        st.info(f"No users match these filters ({ui.describe_filters(filters)}).")
        return

    st.caption(_caption(spec, cached.data_end(store)))
    if terminal_event_starts_users(frame, spec):
        at_start = churned_at_start(frame)
        st.warning(
            f"{at_start:,} of {len(frame):,} users churn at their start: for them the first '{spec.terminal_event}' "
            "is the event that starts them, which says nothing about how long they stay. A terminal event should "
            "end a relationship (a cancellation, an unsubscribe); for churn by inactivity, clear the terminal event."
        )
    first, second, third = st.columns(3)
    first.metric("Users", f"{len(frame):,}")
    second.metric("Churned", f"{int(frame['churned'].sum()):,}")
    third.metric("Censored", f"{int((~frame['churned']).sum()):,}")

    st.plotly_chart(figures_survival.kaplan_meier_figure(km.curve, km.at_risk), key="surv_km")
    with st.expander("Number at risk", expanded=False):
        at_risk = km.at_risk.pivot(index="group", columns="day", values="at_risk").reset_index()
        at_risk.columns = ["group", *(f"day {day:g}" for day in at_risk.columns[1:])]
        st.dataframe(at_risk, hide_index=True, key="surv_at_risk")
        ui.download_csv(km.at_risk, "survival_at_risk.csv", key="download_survival_at_risk")

    st.subheader("Medians and survival at days")
    left, right = st.columns(2)
    left.dataframe(km.medians, hide_index=True, key="surv_medians")
    with left:
        ui.download_csv(km.medians, "survival_medians.csv", key="download_survival_medians")
    right.dataframe(km.survival_at, hide_index=True, key="surv_at_days")
    with right:
        ui.download_csv(km.survival_at, "survival_at_days.csv", key="download_survival_at_days")

    _rmst_section(spec, km)
    _log_rank_section(tests)
    _cox_section(store, spec, filters, attributes)
    with st.expander("Curve table and durations", expanded=False):
        st.dataframe(km.curve, hide_index=True, height=240, key="surv_curve")
        ui.download_csv(km.curve, "survival_curve.csv", key="download_survival_curve")
        ui.download_csv(
            frame, "survival_durations.csv", label="Download durations", key="download_survival_durations"
        )


def _rmst_section(spec: SurvivalSpec, km) -> None:
    from core.survival import rmst_difference

    st.subheader(f"Restricted mean survival time up to day {spec.horizon_days:g}")
    st.dataframe(km.rmst, hide_index=True, key="surv_rmst")
    ui.download_csv(km.rmst, "survival_rmst.csv", key="download_survival_rmst")
    beyond = [str(group) for group in km.rmst[km.rmst["rmst"].isna()]["group"]]
    if beyond:
        st.caption(
            f"No RMST for {', '.join(beyond)}: the horizon is beyond the group's longest follow-up; lower the horizon."
        )
    groups = [str(group) for group in km.rmst.dropna(subset=["rmst"])["group"]]
    if len(groups) < 2:
        return
    first, second = st.columns(2)
    group_a = first.selectbox("Group A", groups, index=0, key="surv_rmst_a")
    group_b = second.selectbox("Group B", groups, index=1, key="surv_rmst_b")
    if group_a == group_b:
        st.info("Choose two different groups to compare.")
        return
    difference = rmst_difference(km.rmst, group_a, group_b)
    first, second, third = st.columns(3)
    first.metric("RMST difference (days)", f"{difference.difference:+.2f}")
    second.metric("95% interval", f"[{difference.lower:+.2f}, {difference.upper:+.2f}]")
    third.metric("p-value", f"{difference.p_value:.3g}")


def _log_rank_section(tests) -> None:
    st.subheader("Log-rank tests")
    if tests.degrees_of_freedom == 0:
        st.caption("One group only: choose a breakdown to compare groups.")
        return
    first, second = st.columns(2)
    first.metric(f"Chi-squared ({tests.degrees_of_freedom} df), all groups", f"{tests.statistic:.2f}")
    second.metric("p-value, all groups", f"{tests.p_value:.3g}")
    st.dataframe(tests.pairwise, hide_index=True, key="surv_pairwise")
    ui.download_csv(tests.pairwise, "survival_log_rank_pairwise.csv", key="download_survival_pairwise")
    st.caption("Pairwise p-values are not adjusted for multiple comparisons.")


def _cox_section(store, spec: SurvivalSpec, filters, attributes: list[str]) -> None:
    with st.expander(
        "Cox proportional hazards model", expanded=bool(spec.cox_attributes or spec.cox_first_week)
    ):
        left, right = st.columns([2, 1], vertical_alignment="bottom")
        left.multiselect(
            "Users attributes",
            attributes,
            key="surv_cox",
            help="One-hot; the most common value is the reference.",
        )
        right.toggle(
            "First-week behaviour",
            key="surv_first_week",
            help=f"Events, active days and revenue in the first {LANDMARK_DAYS:g} days (a landmark analysis).",
        )
        if not spec.cox_attributes and not spec.cox_first_week:
            st.caption("Choose covariates to fit the model.")
            return
        try:
            with st.spinner("Fitting the Cox model..."):
                model = cached_survival.cox_model(store, spec, filters)
        except TenureError as error:
            ui.show_error(error)
            return
        references = ", ".join(f"{name} = {value}" for name, value in model.references.items())
        landmark = (
            f" Landmark at day {model.landmark_days:g}: only users still observed after day {model.landmark_days:g}, "
            "durations counted from it."
            if model.landmark_days
            else ""
        )
        st.caption(
            f"{model.users:,} users, {model.churned:,} churned. Reference: {references or 'none'}.{landmark}"
        )
        for note in model.warnings:
            st.warning(note)
        st.metric("Concordance index", f"{model.concordance:.3f}")
        st.plotly_chart(figures_survival.forest_figure(model.hazard_ratios), key="surv_forest")
        st.dataframe(model.hazard_ratios, hide_index=True, key="surv_hazard_ratios")
        ui.download_csv(model.hazard_ratios, "survival_cox.csv", key="download_survival_cox")


main()
