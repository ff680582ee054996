"""Explore / Lifecycle: new, returning, resurrecting and dormant users per period with the quick
ratio, a drill-down to the users of any bar, and each user's stage on a date with the transitions
between two dates. Every control is kept in the URL."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import streamlit as st

from core import figures_lifecycle
from core.errors import TenureError
from core.lifecycle import (
    PERIODS,
    STAGE_LABELS,
    STAGES,
    STATUSES,
    LifecycleSpec,
    StageSpec,
    transition_matrix,
)
from core.population import Filters, StartSpec
from core.store import Store
from pages.shared import cached, cached_lifecycle, ui, url_params

START_LABELS = {"first_event": "First event", "signup": "Signup", "event": "First event of a name"}
THRESHOLDS = (
    ("lc_new", "new", "New within (days)", 7, "N: a user is new while their start is less than N days old."),
    ("lc_at_risk", "at_risk", "At risk after (days)", 7, "A: no activity for at least A days."),
    ("lc_dormant", "dormant", "Dormant after (days)", 14, "W: no activity for at least W days."),
    ("lc_churned", "churned", "Churned after (days)", 30, "C: no activity for at least C days."),
)


def _whole_days(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _seed_controls(event_names: list[str], first_day: dt.date, last_day: dt.date) -> None:
    ui.seed_control("lc_period", "week", param="period", parse=url_params.choice(PERIODS, "period"))
    ui.seed_control(
        "lc_start",
        "first_event",
        param="start",
        parse=url_params.start_kind(event_names),
    )
    ui.seed_control(
        "lc_start_event",
        event_names[0],
        param="start",
        parse=url_params.start_event(event_names, event_names[0]),
        options=event_names,
    )
    ui.seed_control(
        "lc_activity", [], param="activity", parse=url_params.names(event_names, "event"), options=event_names
    )
    ui.seed_control("lc_as_of", last_day, param="stage_at", parse=url_params.iso_date("stage_at"))
    ui.seed_control(
        "lc_compare",
        last_day - dt.timedelta(days=30),
        param="stage_from",
        parse=url_params.iso_date("stage_from"),
    )
    for key, param, _, default, _ in THRESHOLDS:
        ui.seed_control(key, default, param=param, parse=_whole_days)
    for key, label in (("lc_as_of", "As of"), ("lc_compare", "Compare with")):
        # A date from the URL or another dataset, kept within the data's days.
        chosen = st.session_state[key]
        kept = min(max(chosen or last_day, first_day), last_day)
        if chosen is not None and kept != chosen:
            st.info(
                f"'{label}' {chosen.isoformat()} lies outside the data ({first_day.isoformat()} to "
                f"{last_day.isoformat()}): {kept.isoformat()} is used."
            )
        st.session_state[key] = kept


def _draw_controls(event_names: list[str]) -> LifecycleSpec:
    first, second, third, fourth = st.columns([1, 1, 1, 2])
    period = first.selectbox(
        "Period", PERIODS, key="lc_period", help="UTC days, ISO weeks from Monday, calendar months."
    )
    start_kind = second.selectbox(
        "Start", tuple(START_LABELS), key="lc_start", format_func=START_LABELS.__getitem__
    )
    start_event = third.selectbox(
        "Start event",
        event_names,
        key="lc_start_event",
        disabled=start_kind != "event",
        help="Used when Start is 'First event of a name'.",
    )
    activity = fourth.multiselect(
        "Activity events",
        event_names,
        key="lc_activity",
        placeholder="Any event",
        help="Only these events make a user active; empty means any event.",
    )
    start_text = StartSpec(start_kind, start_event if start_kind == "event" else None).to_text()
    return LifecycleSpec.from_query_params(
        {"period": period, "start": start_text, "activity": ",".join(activity)}
    )


def main() -> None:
    store = ui.get_store()
    filters = ui.get_filters()
    st.title("Lifecycle")
    st.caption(f"Lifecycle of {ui.describe_filters(filters)}.")
    event_names = cached.event_names(store)
    first_day, last_day = cached.event_span(store)
    if not event_names or last_day is None:
        st.info("This store has no events yet: load a file on the Data page.")
        st.page_link("pages/data/data.py", label="Go to Data", icon=":material/database:")
        return
    first_day = first_day or last_day
    _seed_controls(event_names, first_day, last_day)
    try:
        spec = _draw_controls(event_names)
    except TenureError as error:
        ui.show_error(error)
        return
    try:
        with st.spinner("Counting users per period..."):
            table = cached_lifecycle.lifecycle_table(store, spec, filters)
    except TenureError as error:
        ui.show_error(error)
        return
    if table.empty or table["active"].sum() == 0:
        st.info(f"No users match these filters ({ui.describe_filters(filters)}).")
        ui.share_in_url(spec.to_query_params())
        return

    st.plotly_chart(figures_lifecycle.lifecycle_chart(table), key="lc_chart")
    st.caption(
        f"For each {spec.period} (UTC), every user active in it or in the one before is exactly one of: "
        "**new** (their start falls in it; a user counts as active in their start period even without "
        "an activity event), **returning** (active in it and the one before), **resurrecting** (active, "
        "not in the one before, not new), **dormant** (active in the one before, not in it; drawn below zero). "
        "**Quick ratio** = (new + resurrecting) / dormant. The last period holds the data's end "
        f"({cached.data_end(store)}) and is **partial**."
    )
    with st.expander("Lifecycle table", expanded=False):
        st.dataframe(table, hide_index=True, key="lc_table")
        ui.download_csv(table, f"lifecycle_{spec.period}.csv", key="download_lifecycle")
    _drill_down(store, spec, filters, table)
    stage_params = _stages(store, spec, filters, first_day, last_day)
    ui.share_in_url({**spec.to_query_params(), **stage_params})


def _drill_down(store: Store, spec: LifecycleSpec, filters: Filters, table: pd.DataFrame) -> None:
    st.subheader("Who are they?")
    left, right = st.columns([1, 2])
    periods = list(table["period"])
    period = left.selectbox(
        "Period",
        periods,
        index=max(len(periods) - 2, 0),
        key="lc_drill_period",
        format_func=lambda day: day.isoformat(),
    )
    status = (
        right.segmented_control("Status", STATUSES, default="dormant", key="lc_drill_status") or "dormant"
    )
    users = cached_lifecycle.lifecycle_users(store, spec, filters, period, status)
    st.caption(
        f"{len(users):,} {status} user{'' if len(users) == 1 else 's'} in the {spec.period} of {period.isoformat()}."
    )
    st.dataframe(users, hide_index=True, height=220, key="lc_drill_users")
    ui.download_csv(
        users, f"lifecycle_{period.isoformat()}_{status}.csv", label="Download users", key="download_lc_users"
    )


def _stages(
    store: Store, spec: LifecycleSpec, filters: Filters, first_day: dt.date, last_day: dt.date
) -> dict[str, str]:
    st.subheader("Stages on a date")
    columns = st.columns(6)
    as_of = columns[0].date_input(
        "As of (end of day)", key="lc_as_of", min_value=first_day, max_value=last_day
    )
    compare = columns[1].date_input("Compare with", key="lc_compare", min_value=first_day, max_value=last_day)
    thresholds = {
        param: int(column.number_input(label, min_value=1, step=1, key=key, help=help_text))
        for column, (key, param, label, _, help_text) in zip(columns[2:], THRESHOLDS, strict=True)
    }
    params = {
        "stage_at": as_of.isoformat(),
        "stage_from": compare.isoformat(),
        **{k: str(v) for k, v in thresholds.items()},
    }
    try:
        stage_spec = StageSpec.from_query_params({**params, **spec.to_query_params()})
    except TenureError as error:
        ui.show_error(error)
        return params
    stages = cached_lifecycle.stage_table(store, stage_spec, filters, as_of)
    left, right = st.columns([3, 2])
    left.plotly_chart(
        figures_lifecycle.stage_chart(stages, f"Users by stage at the end of {as_of.isoformat()}"),
        key="lc_stage_chart",
    )
    shown = stages.assign(stage=stages["stage"].map(STAGE_LABELS))
    right.dataframe(
        shown,
        hide_index=True,
        key="lc_stage_table",
        column_config={
            "share": st.column_config.NumberColumn(format="percent"),
            "revenue_share": st.column_config.NumberColumn("revenue share", format="percent"),
        },
    )
    right.caption(
        f"Stages, first match wins: **new** (start less than {stage_spec.new_days} days before), **churned** "
        f"(no activity for {stage_spec.churned_days}+ days), **dormant** ({stage_spec.dormant_days}+), **at risk** "
        f"({stage_spec.at_risk_days}+), **reactivated** (came back within the last {stage_spec.new_days} days after a gap "
        f"of {stage_spec.dormant_days}+ days), **active** (otherwise). Revenue: events of the {stage_spec.revenue_days} "
        "days ending with the date."
    )
    ui.download_csv(stages, f"stages_{as_of.isoformat()}.csv", key="download_stages")

    first, second = sorted((compare, as_of))
    st.markdown(
        f"**Transitions from {first.isoformat()} to {second.isoformat()}** (every user started by then counted once)"
    )
    transitions = cached_lifecycle.stage_transitions(store, stage_spec, filters, first, second)
    left, right = st.columns(2)
    left.plotly_chart(
        figures_lifecycle.transition_heatmap(transition_matrix(transitions)), key="lc_transition_heatmap"
    )
    right.plotly_chart(figures_lifecycle.transition_sankey(transitions), key="lc_transition_sankey")
    ui.download_csv(
        transitions, f"transitions_{first.isoformat()}_{second.isoformat()}.csv", key="download_transitions"
    )

    stage = st.selectbox("Users in stage", STAGES, key="lc_stage_users", format_func=STAGE_LABELS.__getitem__)
    users = cached_lifecycle.stage_users(store, stage_spec, filters, as_of, stage)
    st.caption(
        f"{len(users):,} user{'' if len(users) == 1 else 's'} {STAGE_LABELS[stage].lower()} at the end of {as_of.isoformat()}."
    )
    st.dataframe(users, hide_index=True, height=220, key="lc_stage_user_table")
    ui.download_csv(
        users, f"stage_{stage}_{as_of.isoformat()}.csv", label="Download users", key="download_stage_users"
    )
    return params


main()
