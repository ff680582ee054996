"""Home: which data this is, its headline figures and activity, and the way to each view."""

from __future__ import annotations

import streamlit as st

from core import figures
from core.datasets import DATASETS
from pages.shared import cached, ui
from pages.shared.views import VIEW_GROUPS

# Link cards per row: the largest group (Explore) fits one row.
VIEWS_PER_ROW = 5


def _day(value: object) -> str:
    return "-" if value is None else str(value)[:10]


def main() -> None:
    store = ui.get_store()
    filters = ui.get_filters()
    meta = store.meta()
    dataset = DATASETS.get(meta.get("dataset", ""))
    st.title(dataset.label if dataset else meta.get("dataset") or store.path.stem)
    if meta.get("source"):
        st.caption(meta["source"])
    st.caption(
        f"Store `{store.path}` · figures for {ui.describe_filters(filters)} · data end {cached.data_end(store)}."
    )

    headline = cached.headline(store, filters)
    if not headline.events:
        st.info("No events match: load a file on the Data page, or widen the filters.")
        st.page_link("pages/data/data.py", label="Go to Data", icon=":material/database:")
        return
    first, second, third, fourth = st.columns(4)
    first.metric("Users", f"{headline.users:,}", border=True)
    second.metric("Events", f"{headline.events:,}", border=True)
    third.metric("First event", _day(headline.first_event), border=True)
    fourth.metric("Last event", _day(headline.last_event), border=True)
    first, second, third, fourth = st.columns(4)
    first.metric(
        "Daily active users",
        f"{headline.daily_active_users:,.0f}",
        border=True,
        help="Mean over the last 28 days of the users with an event that day (Stickiness shows each day).",
    )
    second.metric(
        "Weekly active users",
        f"{headline.weekly_active_users:,.0f}",
        border=True,
        help="Mean over the last 12 complete ISO weeks of the users with an event that week.",
    )
    third.metric(
        "Revenue",
        f"{headline.revenue:,.0f}",
        border=True,
        help="Sum of revenue over the selected users' events.",
    )
    fourth.metric(
        "Paying users", f"{headline.paying_share:.1%}", border=True, help="Share of users with revenue."
    )

    st.subheader("Activity")
    period = st.segmented_control("Granularity", ("day", "week", "month"), default="week", key="home_period")
    series = cached.activity(store, filters, period or "week")
    st.plotly_chart(figures.activity_chart(series), key="home_activity")

    st.subheader("Views")
    for views in VIEW_GROUPS.values():
        columns = st.columns(VIEWS_PER_ROW)
        for column, view in zip(columns, views, strict=False):
            with column.container(border=True):
                st.page_link(view.path, label=view.title, icon=view.icon)
                st.caption(view.description)


main()
