"""The What-if page's early-read tab: a policy's long-term value for recent users, before it is
observed, from the surrogate index (core/whatif/surrogate.py), with its backtest beside it.

The estimate alone cannot be judged; the backtest replays it as the data stood some months ago,
for users whose outcome has been observed since, so the reader sees whether the index found
what happened. Definitions: docs/METRICS.md, "What-if: surrogate index (early read of long-term
effects)".
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.errors import TenureError
from core.experiments.assignments import latest_assigning
from core.store import Store
from core.whatif.surrogate import DEFAULT_BACK_DAYS, DEFAULT_SURROGATE_DAYS
from pages.shared import cached_experiments, cached_whatif, ui, url_params

OUTCOMES = {"retention": "Day-D retention", "revenue": "Revenue per user over D days"}
SURROGATE_WINDOWS = (7, 14)
DEFAULT_OUTCOME_DAYS = 90
RUN_KEY = "wi_early_run"


def _quality(quality: dict[str, float]) -> str:
    return ", ".join(
        f"{name} {int(value):,}" if name == "users" else f"{name} {value:.3g}"
        for name, value in quality.items()
    )


def _default_experiment(store: Store, experiments: list[str]) -> str:
    """The experiment that assigned users last (``latest_assigning``), else the first listed."""
    return latest_assigning(cached_experiments.overview(store), experiments) or experiments[0]


def _controls(experiments: list[str], default: str, params: dict[str, str]) -> dict:
    ui.seed_control(
        "wi_early_experiment",
        default,
        param="early_experiment",
        parse=url_params.choice(experiments, "early_experiment"),
    )
    ui.seed_control(
        "wi_early_outcome",
        "retention",
        param="early_outcome",
        parse=url_params.choice(list(OUTCOMES), "early_outcome"),
    )
    ui.seed_control(
        "wi_early_days",
        DEFAULT_OUTCOME_DAYS,
        param="early_days",
        parse=url_params.whole(8, 3650, "early_days"),
    )
    windows = [str(days) for days in SURROGATE_WINDOWS]
    ui.seed_control(
        "wi_early_window",
        DEFAULT_SURROGATE_DAYS,
        param="early_window",
        parse=lambda text: int(url_params.choice(windows, "early_window")(text)),
    )
    first, second, third, fourth = st.columns(4)
    experiment = first.selectbox("Experiment", experiments, key="wi_early_experiment")
    kind = second.selectbox(
        "Long-term outcome", list(OUTCOMES), format_func=OUTCOMES.get, key="wi_early_outcome"
    )
    days = third.number_input("Outcome day D", 8, 3650, step=1, key="wi_early_days")
    window = fourth.selectbox(
        "Surrogates: the first N days",
        SURROGATE_WINDOWS,
        key="wi_early_window",
        help="Each user's sessions, clicks, purchases and revenue in their first N days after assignment.",
    )
    params.update(
        early_experiment=experiment, early_outcome=kind, early_days=str(int(days)), early_window=str(window)
    )
    return {"experiment": experiment, "outcome": f"{kind}:{int(days)}", "surrogate_days": int(window)}


def early_read_section(store: Store, experiments: list[str], params: dict[str, str]) -> dict:
    """The tab's widgets and results; returns its part of the page's JSON download."""
    st.caption(
        "For users assigned too recently for their long-term outcome to be known: a model trained on "
        "earlier users predicts it from their first N days (the surrogate index, Athey, Chetty, Imbens & "
        "Kang 2019), and each variant's value is the weighted mean of those predictions. The backtest "
        "beside it repeats the estimate as the data stood "
        f"{DEFAULT_BACK_DAYS} days ago and compares it with what those users then did."
    )
    if not experiments:
        st.info("No experiment with recorded propensities: load assignments with a `propensity` column.")
        return {}
    question = _controls(experiments, _default_experiment(store, experiments), params)
    if not st.button(
        "Estimate early read", key=RUN_KEY, icon=":material/play_arrow:"
    ) and not st.session_state.get(f"{RUN_KEY}_done"):
        st.caption("Training the index and its backtest takes about ten seconds on the sample.")
        return {}
    st.session_state[f"{RUN_KEY}_done"] = True
    try:
        with st.spinner("Training the surrogate index and replaying it on earlier cohorts..."):
            result = cached_whatif.surrogate(store, question)
            backtest = cached_whatif.surrogate_backtest(store, question)
    except TenureError as error:
        ui.show_error(error)
        return {}
    for warning in result.warnings:
        st.warning(warning)
    estimate_column, check_column = st.columns(2)
    with estimate_column:
        st.markdown(f"**Estimate for recent users** (as of {result.as_of:%Y-%m-%d})")
        st.dataframe(result.estimates, hide_index=True)
        st.dataframe(result.differences, hide_index=True)
        st.caption(
            f"Model trained on {result.training_users:,} users whose outcome is observed; held out: "
            f"{_quality(result.model_quality)}. Weighting: {result.weighting}. `older_actual` is the observed "
            "value among the experiment's earlier users."
        )
    with check_column:
        as_of = backtest.attrs["as_of"]
        missed = int((~backtest["inside"]).sum())
        st.markdown(f"**Backtest** (as of {as_of:%Y-%m-%d}, against outcomes observed since)")
        st.caption(
            f"Model trained on {backtest.attrs['training_users']:,} users whose outcome was observed then; "
            f"held out: {_quality(backtest.attrs['model_quality'])}."
        )
        shown = backtest.copy()
        shown.attrs = {}  # dates and dicts the table cannot carry: they are in the heading and caption
        st.dataframe(shown, hide_index=True)
        if missed:
            st.warning(
                f"{missed} of {len(backtest)} backtest figures fall outside their interval: the index did not find "
                "what happened on earlier cohorts, so do not rely on its estimate for recent ones."
            )
        else:
            st.success("Every backtest figure is inside its interval.")
    table = pd.concat(
        [result.estimates.assign(part="estimate"), backtest.assign(part="backtest")], ignore_index=True
    )
    ui.download_csv(table, "whatif_early_read.csv", key="wi_early_csv")
    return {
        "early_read": {
            "question": question,
            "estimates": result.estimates.to_dict(orient="records"),
            "differences": result.differences.to_dict(orient="records"),
            "backtest": backtest.to_dict(orient="records"),
        }
    }
