"""Tenure: the app shell. `streamlit run app.py`

Every run draws the frame shared by all pages (navigation, dataset switch, global filters), runs
the selected page, then writes the view into the URL so it can be shared by link.
"""

from __future__ import annotations

import streamlit as st

from pages.shared import ui
from pages.shared.views import HOME, VIEW_GROUPS

st.set_page_config(page_title="Tenure", layout="wide")

# The navigation: Home, then one group per line of pages/shared/views.py (a feature adds its view
# there, with its page file in a pages/ sub-folder; Home links it by itself).
PAGE_GROUPS: dict[str, list[st.Page]] = {
    "": [st.Page(HOME.path, title=HOME.title, icon=HOME.icon, default=True)],
    **{
        group: [st.Page(view.path, title=view.title, icon=view.icon) for view in views]
        for group, views in VIEW_GROUPS.items()
    },
}

ui.start_run()
page = st.navigation(PAGE_GROUPS)
ui.dataset_switch(st.sidebar, key="sidebar_dataset")
store = ui.open_current_store()
ui.sidebar_filters(store)
page.run()
ui.finish_run()
