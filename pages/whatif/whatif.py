"""What-if: what a recommendation policy or a targeting rule would have done, estimated from logs.

Four views over core/whatif: the click rate of a target recommendation policy from the
recommendations log (off-policy, per shown slot), the day-D retention and D-day revenue per user
of a variant or a rule from an experiment with propensities (with the weighted survival curve),
an early read of a long-term outcome for recent users (surrogate index, with its backtest),
and a scenario that projects the current user base's retained users and revenue under the chosen
strategy. Every estimate shows its interval and diagnostics; on a simulated store the ground truth
is shown next to it, labelled. Every control is kept in the URL (uploaded files are not), and so
is the open tab.

Every tab draws its controls on every run, so that their values and the URL survive a switch of
tab, but the long-term estimates run only while the Long-term, Scenario or Downloads tab is open
(the scenario takes its effects from them) and the scenario's baseline only while the Scenario or
Downloads tab is: a cold visit to the Click rate tab reads neither.
"""

from __future__ import annotations

import streamlit as st

from core import figures_whatif
from core.errors import TenureError
from pages.shared import cached_whatif, ui, url_params, whatif_early_read
from pages.shared.whatif_click_rate import click_rate_section
from pages.shared.whatif_long_term import long_term_section
from pages.shared.whatif_scenario import scenario_section

# Tab label -> its name in the URL.
TABS = {
    "Click rate": "click-rate",
    "Long-term outcomes": "long-term",
    "Early read": "early-read",
    "Scenario": "scenario",
    "Downloads": "downloads",
}


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
    ui.seed_control("wi_tab", "Click rate", param="tab", parse=url_params.tab(TABS))
    click_tab, long_tab, early_tab, scenario_tab, download_tab = st.tabs(
        list(TABS), key="wi_tab", on_change="rerun"
    )
    params: dict[str, str] = {"tab": TABS[st.session_state["wi_tab"]]}
    document: dict = {}
    with click_tab:
        document.update(click_rate_section(store, policies, truth, params))
    with long_tab:
        results, long_term = long_term_section(
            store,
            experiments,
            truth,
            params,
            estimate=long_tab.open or scenario_tab.open or download_tab.open,
        )
        document.update(long_term)
    with early_tab:
        document.update(whatif_early_read.early_read_section(store, experiments, params))
    with scenario_tab:
        document.update(
            scenario_section(store, results, params, estimate=scenario_tab.open or download_tab.open)
        )
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
