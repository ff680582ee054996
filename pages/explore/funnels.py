"""Explore / Funnels: step counts and conversion with intervals, time between steps, who dropped,
conversion by week, segments compared, and the editable lifecycle funnel. Controls live in the URL."""

from __future__ import annotations

import streamlit as st

from core import figures_funnels
from core.durations import format_duration, parse_duration
from core.errors import TenureError
from core.funnels import MAX_STEPS, MIN_STEPS, ORDERS, FunnelSpec, LifecycleFunnelSpec
from core.population import Filters
from core.store import Store
from pages.shared import cached, cached_funnels, ui, url_params

ORDER_LABELS = {
    "ordered": "Ordered: other events allowed between steps",
    "strict": "Strict: each step is the very next event",
    "any": "Any order within the window",
}
NO_CHOICE = ""
ANY_EVENT = ""


def _window(text: str) -> str:
    return format_duration(parse_duration(text, "window"))


def _seed_controls(event_names: list[str], breakdowns: list[str]) -> None:
    ui.seed_control(
        "fun_steps",
        event_names[: min(3, len(event_names))],
        param="steps",
        parse=url_params.names(event_names, "event name"),
        options=event_names,
    )
    ui.seed_control("fun_window", "7d", param="window", parse=_window)
    ui.seed_control("fun_order", "ordered", param="order", parse=url_params.choice(ORDERS, "order"))
    ui.seed_optional_choice("fun_exclude", NO_CHOICE, event_names, param="exclude")
    ui.seed_optional_choice("fun_by", NO_CHOICE, breakdowns, param="by")


def _draw_controls(event_names: list[str], breakdowns: list[str]) -> dict[str, str]:
    """The controls as URL parameters (``FunnelSpec.from_query_params`` builds the spec)."""
    steps = st.multiselect(
        "Steps (in order)",
        event_names,
        key="fun_steps",
        max_selections=MAX_STEPS,
        help="2 to 10 distinct event names; the order in which you pick them is the funnel's order.",
    )
    first, second, third, fourth = st.columns(4)
    window = first.text_input(
        "Window", key="fun_window", help="Conversion window from the first step: 30m, 12h, 7d, 2w."
    )
    order = second.selectbox("Order", ORDERS, key="fun_order", format_func=ORDER_LABELS.__getitem__)
    exclude = third.selectbox(
        "Exclusion event",
        [NO_CHOICE, *[name for name in event_names if name not in steps]],
        key="fun_exclude",
        format_func=lambda name: name or "None",
        help="Doing it ends a try: steps at or after it no longer count.",
    )
    by = fourth.selectbox(
        "Breakdown", [NO_CHOICE, *breakdowns], key="fun_by", format_func=lambda name: name or "None"
    )
    params = {"steps": ",".join(steps), "window": window, "order": order}
    if exclude:
        params["exclude"] = exclude
    if by:
        params["by"] = by
    return params


def main() -> None:
    store = ui.get_store()
    filters = ui.get_filters()
    st.title("Funnels")
    st.caption(f"Funnels of {ui.describe_filters(filters)}.")
    event_names = cached.event_names(store)
    if not event_names:
        st.info("This store has no events yet: load a file on the Data page.")
        st.page_link("pages/data/data.py", label="Go to Data", icon=":material/database:")
        return
    breakdowns = cached.breakdown_options(store)
    funnel_tab, lifecycle_tab = st.tabs(["Funnel", "Lifecycle funnel"])
    with funnel_tab:
        _seed_controls(event_names, breakdowns)
        params = _draw_controls(event_names, breakdowns)
        if len(event_names) < MIN_STEPS:
            st.info(
                f"This store has one event name ('{event_names[0]}'): a funnel needs at least two. "
                "The Lifecycle funnel tab works from that one event."
            )
        elif len(params["steps"].split(",")) < MIN_STEPS or not params["steps"]:
            st.info("Choose at least two steps to see a funnel.")
        else:
            try:
                spec = FunnelSpec.from_query_params(params)
                _funnel(store, spec, filters)
            except TenureError as error:
                ui.show_error(error)
    with lifecycle_tab:
        lifecycle_params = _lifecycle(store, filters, event_names)
    ui.share_in_url({**params, **lifecycle_params})


def _funnel(store: Store, spec: FunnelSpec, filters: Filters) -> None:
    with st.spinner("Walking the funnel..."):
        table = cached_funnels.funnel_table(store, spec, filters)
        overall = cached_funnels.funnel_table(store, spec, filters, by_group=False)
    if overall["users"].iloc[0] == 0:
        st.info(f"No user of this selection ({ui.describe_filters(filters)}) did '{spec.steps[0]}'.")
        return
    first, second, third = st.columns(3)
    first.metric("Entered the funnel", f"{overall['users'].iloc[0]:,}")
    second.metric("Completed", f"{overall['users'].iloc[-1]:,}")
    third.metric("Overall conversion", f"{overall['conversion_from_start'].iloc[-1]:.1%}")
    st.caption(
        f"A user reaches step k when events of steps 1..k happen {ORDER_LABELS[spec.order].split(':')[0].lower()} "
        f"within {format_duration(spec.window)} of step 1 (the longest try counts; events at the same instant "
        "follow the funnel's order)"
        + (f"; '{spec.exclusion}' ends a try" if spec.exclusion else "")
        + ". Intervals: 95% Wilson score. Definitions: docs/METRICS.md, Funnels."
    )
    st.plotly_chart(figures_funnels.funnel_bars(overall), key="fun_bars")
    with st.expander("Funnel table", expanded=False):
        st.dataframe(overall, hide_index=True, key="fun_table")
        ui.download_csv(overall, "funnel.csv", key="download_funnel")

    st.subheader("Time between steps")
    if spec.order == "any":
        st.info("Steps in any order have no 'previous step': choose ordered or strict to see times.")
    else:
        times = cached_funnels.step_times(store, spec, filters)
        if times.empty:
            st.info("No user reached step 2.")
        else:
            shown = times.assign(
                median=times["median_seconds"].map(_readable),
                q1=times["q1_seconds"].map(_readable),
                q3=times["q3_seconds"].map(_readable),
            )
            st.dataframe(shown, hide_index=True, key="fun_times")
            histogram = cached_funnels.step_time_histogram(store, spec, filters)
            st.plotly_chart(figures_funnels.step_time_histogram(histogram), key="fun_histogram")

    st.subheader("Who dropped?")
    _drop_offs(store, spec, filters)

    st.subheader("Conversion over time")
    weekly = cached_funnels.conversion_over_time(store, spec, filters)
    st.caption(
        "Users by the week of their first step-1 event, counting the steps they reached within the "
        f"window ({format_duration(spec.window)}) after it, so that every week had the same time to convert. "
        "Dotted, open points: weeks whose window has not run out by the data's end; they can still rise."
    )
    st.plotly_chart(figures_funnels.conversion_over_time(weekly), key="fun_weekly")
    with st.expander("Weekly table", expanded=False):
        st.dataframe(weekly, hide_index=True, key="fun_weekly_table")
        ui.download_csv(weekly, "funnel_by_week.csv", key="download_funnel_weekly")

    if spec.breakdown:
        st.subheader(f"Segments compared: {spec.breakdown}")
        st.plotly_chart(figures_funnels.conversion_bars(table), key="fun_segments")
        st.dataframe(table, hide_index=True, key="fun_segment_table")
        ui.download_csv(table, "funnel_segments.csv", key="download_funnel_segments")


def _readable(seconds: float) -> str:
    if seconds != seconds:  # NaN
        return "-"
    for size, unit in ((86_400, "d"), (3_600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _drop_offs(store: Store, spec: FunnelSpec, filters: Filters) -> None:
    steps = list(range(2, len(spec.steps) + 1))
    step = st.selectbox(
        "Dropped before step",
        steps,
        key="fun_drop_step",
        format_func=lambda number: f"{number}. {spec.steps[number - 1]}",
    )
    if step not in steps:
        return
    users = cached_funnels.funnel_users(store, spec, filters, int(step), "dropped")
    st.caption(
        f"{len(users):,} user{'' if len(users) == 1 else 's'} reached step {step - 1} "
        f"({spec.steps[step - 2]}) but not step {step} ({spec.steps[step - 1]})."
    )
    st.dataframe(users, hide_index=True, height=240, key="fun_dropped")
    ui.download_csv(
        users, f"dropped_before_step_{step}.csv", label="Download users", key="download_fun_dropped"
    )


# The lifecycle funnel's settings in the URL: (widget key, URL parameter, spec field).
LIFECYCLE_NUMBERS = (
    ("life_activation", "life_activation", "activation_days"),
    ("life_active_days", "life_active_days", "active_days"),
    ("life_engagement", "life_engagement", "engagement_days"),
    ("life_loyal", "life_loyal", "loyal_weeks"),
    ("life_loyal_of", "life_loyal_of", "loyal_of_weeks"),
)


def _whole_number(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 365:
        raise ValueError("must be a whole number from 1 to 365")
    return value


def _seed_lifecycle_controls(event_names: list[str]) -> None:
    defaults = LifecycleFunnelSpec()
    ui.seed_optional_choice("life_key", ANY_EVENT, event_names, param="life_key")
    purchase_default = defaults.purchase_event if defaults.purchase_event in event_names else event_names[0]
    ui.seed_control(
        "life_purchase",
        purchase_default,
        param="life_purchase",
        parse=url_params.choice(event_names, "life_purchase"),
        options=event_names,
    )
    for key, param, field in LIFECYCLE_NUMBERS:
        ui.seed_control(key, getattr(defaults, field), param=param, parse=_whole_number)


def _lifecycle(store: Store, filters: Filters, event_names: list[str]) -> dict[str, str]:
    """Draws the lifecycle funnel tab; returns its settings for the URL."""
    _seed_lifecycle_controls(event_names)
    st.caption(
        "acquired → activated (the key event within N days of the start) → engaged (K active days "
        "within M days) → converted (a purchase) → repeat (a second purchase) → loyal (active in at "
        "least L of the last W complete weeks). Each stage requires the previous ones."
    )
    first, second, third, fourth = st.columns(4)
    key_event = first.selectbox(
        "Key event",
        [ANY_EVENT, *event_names],
        key="life_key",
        format_func=lambda name: name or "Any later event",
    )
    activation_days = second.number_input("Activated within (days)", 1, 365, key="life_activation")
    active_days = third.number_input("Engaged: active days (K)", 1, 365, key="life_active_days")
    engagement_days = fourth.number_input("… within (days)", 1, 365, key="life_engagement")
    first, second, third = st.columns(3)
    purchase = first.selectbox("Purchase event", event_names, key="life_purchase")
    loyal_weeks = second.number_input("Loyal: active weeks", 1, 52, key="life_loyal")
    loyal_of = third.number_input("… of the last weeks", 1, 52, key="life_loyal_of")
    settings = {
        "life_key": key_event or "",
        "life_purchase": purchase,
        **{param: str(int(st.session_state[key])) for key, param, _ in LIFECYCLE_NUMBERS},
    }
    defaults = LifecycleFunnelSpec()
    unchanged = {"life_key": "", "life_purchase": defaults.purchase_event}
    unchanged.update({param: str(getattr(defaults, field)) for _, param, field in LIFECYCLE_NUMBERS})
    # Only settings that differ from the defaults go into the URL, to keep shared links short.
    settings = {param: value for param, value in settings.items() if value != unchanged[param]}
    try:
        spec = LifecycleFunnelSpec(
            key_event=key_event or None,
            activation_days=int(activation_days),
            active_days=int(active_days),
            engagement_days=int(engagement_days),
            purchase_event=purchase,
            loyal_weeks=int(loyal_weeks),
            loyal_of_weeks=int(loyal_of),
        )
        table = cached_funnels.lifecycle_funnel(store, spec, filters)
    except TenureError as error:
        ui.show_error(error)
        return settings
    if table["users"].iloc[0] == 0:
        st.info(f"No users match these filters ({ui.describe_filters(filters)}).")
        return settings
    st.plotly_chart(figures_funnels.funnel_bars(table, title="Lifecycle funnel"), key="life_bars")
    st.dataframe(table, hide_index=True, key="life_table")
    ui.download_csv(table, "lifecycle_funnel.csv", key="download_lifecycle")
    return settings


main()
