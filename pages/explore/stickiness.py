"""Explore / Stickiness: users by number of active days (or weeks) in a span, and DAU, WAU, MAU
and DAU/MAU over time. Every control is kept in the URL."""

from __future__ import annotations

import streamlit as st

from core import figures_lifecycle
from core.errors import TenureError
from core.stickiness import MAU_DAYS, SPAN_LABELS, SPANS, WAU_DAYS, StickinessSpec
from pages.shared import cached, cached_lifecycle, ui

ANY_EVENT = ""


def main() -> None:
    store = ui.get_store()
    filters = ui.get_filters()
    st.title("Stickiness")
    st.caption(f"Stickiness of {ui.describe_filters(filters)}.")
    event_names = cached.event_names(store)
    if not event_names:
        st.info("This store has no events yet: load a file on the Data page.")
        st.page_link("pages/data/data.py", label="Go to Data", icon=":material/database:")
        return

    def known_event(text: str) -> str:
        if text not in event_names:
            raise ValueError(f"no event named '{text}'")
        return text

    def known_span(text: str) -> str:
        if text not in SPANS:
            raise ValueError(f"span must be one of {', '.join(SPANS)}")
        return text

    ui.seed_control("st_event", ANY_EVENT, param="event", parse=known_event)
    ui.seed_control("st_span", "7d", param="span", parse=known_span)
    left, right = st.columns(2)
    event = left.selectbox(
        "Event",
        [ANY_EVENT, *event_names],
        key="st_event",
        format_func=lambda name: name or "Any event",
        help="The event that makes a day active.",
    )
    span = right.selectbox("Span", SPANS, key="st_span", format_func=SPAN_LABELS.__getitem__)
    try:
        spec = StickinessSpec(event=event or None, span=span)  # type: ignore[arg-type]
        with st.spinner("Counting active days..."):
            histogram = cached_lifecycle.stickiness_histogram(store, spec, filters)
            series = cached_lifecycle.active_users_series(store, spec, filters)
    except TenureError as error:
        ui.show_error(error)
        return
    ui.share_in_url(spec.to_query_params())
    if series.empty or series["mau"].max() == 0:
        st.info(f"No activity for these filters ({ui.describe_filters(filters)}).")
        return

    latest = series.iloc[-1]
    columns = st.columns(4)
    columns[0].metric("DAU (last day)", f"{latest['dau']:,}")
    columns[1].metric("WAU (last day)", f"{latest['wau']:,}")
    columns[2].metric("MAU (last day)", f"{latest['mau']:,}")
    columns[3].metric("DAU/MAU (last day)", f"{latest['dau_mau']:.1%}")
    st.caption(
        f"On {latest['day'].isoformat()}, the data end's day (possibly partial). An active day is a UTC day with at "
        f"least one {'event' if spec.event is None else repr(spec.event) + ' event'}. WAU: users active in the "
        f"{WAU_DAYS} days ending that day; MAU: in the {MAU_DAYS} days ending that day."
    )
    st.plotly_chart(
        figures_lifecycle.stickiness_chart(
            histogram, spec.unit, f"Users by active {spec.unit}: {SPAN_LABELS[span].lower()}"
        ),
        key="st_histogram",
    )
    st.caption(
        {
            "7d": "Users active on k of the 7 days ending with the data end's day.",
            "4w": "Users active in k of the 4 blocks of 7 days ending with the data end's day.",
            "month": "Users active on k days of each calendar month; the month holding the data's end is partial.",
        }[span]
        + " Share: of the users active at least once in the span."
    )
    with st.expander("Histogram table", expanded=False):
        st.dataframe(histogram, hide_index=True, key="st_histogram_table")
        ui.download_csv(histogram, f"stickiness_{span}.csv", key="download_stickiness")
    st.plotly_chart(figures_lifecycle.active_users_chart(series), key="st_series")
    with st.expander("DAU, WAU, MAU per day", expanded=False):
        st.dataframe(series, hide_index=True, key="st_series_table")
        ui.download_csv(series, "active_users.csv", key="download_active_users")


main()
