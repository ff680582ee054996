"""Tenure: the app shell. `streamlit run app.py`

Every run draws the frame shared by all pages (navigation, dataset switch, global filters), runs
the selected page, then writes the view into the URL so it can be shared by link.
"""

from __future__ import annotations

import streamlit as st

from pages.shared import ui

st.set_page_config(page_title="Tenure", layout="wide")

# The page registry: one line per group. A feature adds its group here and its page file in a pages/ sub-folder.
PAGE_GROUPS: dict[str, list[st.Page]] = {
    "": [st.Page("pages/home/home.py", title="Home", icon=":material/home:", default=True)],
    "Explore": [
        st.Page("pages/explore/retention.py", title="Retention", icon=":material/grid_on:"),
        st.Page("pages/explore/survival.py", title="Survival", icon=":material/timeline:"),
        st.Page("pages/explore/lifecycle.py", title="Lifecycle", icon=":material/cycle:"),
        st.Page("pages/explore/funnels.py", title="Funnels", icon=":material/filter_alt:"),
        st.Page("pages/explore/stickiness.py", title="Stickiness", icon=":material/push_pin:"),
    ],
    "Experiments": [
        st.Page("pages/experiments/experiments.py", title="Experiments", icon=":material/science:"),
        st.Page("pages/whatif/whatif.py", title="What-if", icon=":material/alt_route:"),
    ],
    "Models": [
        st.Page("pages/models/models.py", title="Models", icon=":material/model_training:"),
        st.Page("pages/models/score.py", title="Score", icon=":material/online_prediction:"),
    ],
    "Data": [st.Page("pages/data/data.py", title="Data", icon=":material/database:")],
}

ui.start_run()
page = st.navigation(PAGE_GROUPS)
ui.dataset_switch(st.sidebar, key="sidebar_dataset")
store = ui.open_current_store()
ui.sidebar_filters(store)
page.run()
ui.finish_run()
