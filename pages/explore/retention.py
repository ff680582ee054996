"""Explore / Retention: cohort triangle, retention curves with Wilson bands, the table and a
drill-down to the users of any cell. Every control is kept in the URL."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core import figures
from core.breakdown import parse_breakdown
from core.errors import TenureError
from core.population import Filters, StartSpec
from core.retention import MODES, PERIOD_DAYS, PERIODS, RetentionSpec
from core.store import Store
from pages.shared import cached, ui, url_params

START_LABELS = {"first_event": "First event", "signup": "Signup", "event": "First event of a name"}
MODE_LABELS = {
    "classic": "Classic: active in period k",
    "unbounded": "Unbounded: active in k or later",
    "consecutive": "Consecutive: active in every period 1..k",
}
MODE_DEFINITIONS = {
    "classic": "had at least one return event in period k",
    "unbounded": "had a return event in period k or any later period",
    "consecutive": "had a return event in every period 1..k",
}
WHO_LABELS = {"retained": "Retained", "lost": "Not retained", "eligible": "All eligible"}
WHO_RETAINED = {"retained": True, "lost": False, "eligible": None}
NO_BREAKDOWN = ""


def _max_periods(text: str) -> int | None:
    return RetentionSpec.from_query_params({"max_periods": text}).max_periods


def _seed_controls(event_names: list[str], breakdowns: list[str]) -> None:
    """Starting values: this session's, else the URL's, else those of the last visit, else defaults."""
    ui.seed_control("ret_period", "week", param="period", parse=url_params.choice(PERIODS, "period"))
    ui.seed_control("ret_mode", "classic", param="mode", parse=url_params.choice(MODES, "mode"))
    ui.seed_control("ret_start", "first_event", param="start", parse=url_params.start_kind(event_names))
    ui.seed_control(
        "ret_start_event",
        event_names[0],
        param="start",
        parse=url_params.start_event(event_names, event_names[0]),
        options=event_names,
    )
    ui.seed_control(
        "ret_return",
        [],
        param="return",
        parse=url_params.names(event_names, "return event"),
        options=event_names,
    )
    ui.seed_control("ret_max", None, param="max_periods", parse=_max_periods)
    ui.seed_control("ret_calendar", False, param="calendar", parse=lambda text: text.lower() in ("1", "true"))
    ui.seed_optional_choice("ret_by", NO_BREAKDOWN, breakdowns, param="by")


def _draw_controls(event_names: list[str], breakdowns: list[str]) -> tuple[RetentionSpec, str | None]:
    first, second, third, fourth = st.columns(4)
    period = first.selectbox("Period", PERIODS, key="ret_period", help="Cohort grouping and period length.")
    mode = second.selectbox("Mode", MODES, key="ret_mode", format_func=MODE_LABELS.__getitem__)
    start_kind = third.selectbox(
        "Start", tuple(START_LABELS), key="ret_start", format_func=START_LABELS.__getitem__
    )
    start_event = fourth.selectbox(
        "Start event",
        event_names,
        key="ret_start_event",
        disabled=start_kind != "event",
        help="Used when Start is 'First event of a name'.",
    )
    first, second, third, fourth = st.columns([2, 1, 1, 1], vertical_alignment="bottom")
    return_events = first.multiselect(
        "Return events",
        event_names,
        key="ret_return",
        placeholder="Any event",
        help="Only these events count as a return; empty means any event.",
    )
    max_periods = second.number_input(
        "Max periods", min_value=0, step=1, key="ret_max", placeholder="Automatic"
    )
    by = fourth.selectbox(
        "Breakdown",
        [NO_BREAKDOWN, *breakdowns],
        key="ret_by",
        format_func=lambda name: name or "None",
        help="One curve per value of this users attribute, or per variant of an experiment "
        "(experiment:NAME; '(none)' = never assigned, '(several)' = assigned more than one variant).",
    )
    calendar = third.toggle(
        "Calendar periods",
        key="ret_calendar",
        help="Calendar days/weeks/months instead of 1/7/30 days from each user's start.",
    )
    start_text = StartSpec(start_kind, start_event if start_kind == "event" else None).to_text()
    spec = RetentionSpec.from_query_params(
        {
            "period": period,
            "mode": mode,
            "start": start_text,
            "max_periods": "" if max_periods is None else str(int(max_periods)),
            "return": ",".join(return_events),
            "calendar": "1" if calendar else "0",
        }
    )
    return spec, by or None


def _caption(spec: RetentionSpec, store_end: str) -> str:
    days = PERIOD_DAYS[spec.period]
    start = {
        "first_event": "their first event",
        "signup": "their signup (or first event when no signup is known)",
        "event": f"their first '{spec.start.event_name}' event",
    }[spec.start.kind]
    if spec.calendar:
        periods = f"period k is the k-th calendar {spec.period} after the cohort's"
    else:
        periods = f"period k is the {days}-day window [start + k*{days} days, start + (k+1)*{days} days) from each user's own start"
    returns = "any event" if not spec.return_events else ", ".join(spec.return_events)
    return (
        f"**Cohort**: users whose start ({start}) falls in the same calendar {spec.period}. "
        f"**Period**: {periods}. **Retained** ({spec.mode}): {MODE_DEFINITIONS[spec.mode]}; "
        f"return events: {returns}. **Rate** = retained / eligible, where eligible users are those "
        f"whose period k has ended by the data's end ({store_end}); cells with no eligible user "
        "are incomplete (left blank, marked … when labelled), never counted as churn. Bands: 95% Wilson score intervals."
    )


def main() -> None:
    store = ui.get_store()
    filters = ui.get_filters()
    st.title("Retention")
    st.caption(f"Cohorts of {ui.describe_filters(filters)}.")

    event_names = cached.event_names(store)
    # Cohorts are the table's rows already: the curves break down by attribute or experiment.
    breakdowns = [name for name in cached.breakdown_options(store) if not name.startswith("cohort:")]
    if not event_names:
        st.info("This store has no events yet: load a file on the Data page.")
        st.page_link("pages/data/data.py", label="Go to Data", icon=":material/database:")
        return
    _seed_controls(event_names, breakdowns)
    try:
        spec, by = _draw_controls(event_names, breakdowns)
    except TenureError as error:
        ui.show_error(error)
        return
    ui.share_in_url({**spec.to_query_params(), **({"by": by} if by else {})})

    try:
        with st.spinner("Counting cohorts..."):
            table = cached.retention_table(store, spec, filters)
            overall = cached.retention_curve(store, spec, filters)
            segmented = cached.retention_curve(store, spec, filters, by=by) if by else None
    except TenureError as error:
        ui.show_error(error)
        return
    if table.empty:
        st.info(f"No users match these filters ({ui.describe_filters(filters)}).")
        return

    st.caption(_caption(spec, cached.data_end(store)))
    st.subheader("Cohort triangle")
    st.plotly_chart(figures.retention_heatmap(table), key="ret_heatmap")

    st.subheader("Retention curves")
    if segmented is not None:
        left, right = st.columns(2)
        left.markdown("**Overall**")
        left.plotly_chart(figures.retention_curves(overall), key="ret_curve_overall")
        right.markdown(f"**By {parse_breakdown(by).label}**")
        right.plotly_chart(figures.retention_curves(segmented), key="ret_curve_by")
    else:
        st.plotly_chart(figures.retention_curves(overall), key="ret_curve_overall")

    with st.expander("Retention table", expanded=False):
        st.dataframe(table, hide_index=True, key="ret_table")
        ui.download_csv(table, f"retention_{spec.period}_{spec.mode}.csv", key="download_retention_table")
        curve = segmented if segmented is not None else overall
        st.dataframe(curve, hide_index=True, key="ret_curve_table")
        ui.download_csv(
            curve, f"retention_curve_{spec.period}_{spec.mode}.csv", key="download_retention_curve"
        )

    _drill_down(store, spec, filters, table)


def _drill_down(store: Store, spec: RetentionSpec, filters: Filters, table: pd.DataFrame) -> None:
    st.subheader("Who are they?")
    cohorts = sorted(table["cohort"].unique())
    periods = sorted(table["period"].unique())
    first, second, third = st.columns([2, 1, 2])
    cohort = first.selectbox("Cohort", cohorts, key="drill_cohort", format_func=lambda day: day.isoformat())
    period = second.selectbox("Period", periods, index=min(1, len(periods) - 1), key="drill_period")
    who = third.segmented_control(
        "Users", tuple(WHO_LABELS), default="retained", key="drill_who", format_func=WHO_LABELS.__getitem__
    )
    cell = table[(table["cohort"] == cohort) & (table["period"] == period)].iloc[0]
    if cell["incomplete"]:
        st.info(f"Period {period} of the {cohort.isoformat()} cohort has not ended for any user yet.")
        return
    users = cached.retention_users(store, spec, filters, cohort, int(period), WHO_RETAINED[who or "eligible"])
    st.caption(
        f"{len(users):,} user{'' if len(users) == 1 else 's'} ({cell['retained']:,} retained of {cell['eligible']:,} eligible, "
        f"{cell['excluded']:,} not yet observable)."
    )
    st.dataframe(users, hide_index=True, height=240, key="drill_users")
    ui.download_csv(
        users,
        f"users_{cohort.isoformat()}_p{period}_{who or 'eligible'}.csv",
        label="Download users",
        key="download_drill_users",
    )


main()
