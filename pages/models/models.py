"""Models: train churn and LTV models in the background, compare the registered models (metrics,
ROC and precision-recall curves, calibration, LTV deciles), browse and download their scores, and
follow one user's events around the as-of date."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import streamlit as st

from core import figures_models
from core.errors import TenureError
from core.models import jobs, registry, results, timeline
from core.models.choices import AVAILABLE_MODELS, SPLITS
from core.models.gbm import GBMConfig
from core.models.sequence_config import SequenceConfig
from core.models.spec import DEFAULT_HORIZON_DAYS, ModelSpec, default_as_of
from core.population import Filters
from core.store import Store
from pages.shared import cached_models, ui

JOB_KEY = "models_job"
SEEN_JOB_KEY = "models_job_seen"
COMPARE_KEY = "models_compare"
MANAGE_ERROR_KEY = "models_manage_error"
POLL_SECONDS = 1.0
MAX_USER_CHOICES = 1000
DEFAULT_TREES = GBMConfig().num_trees
MODEL_LABELS = {
    "seq": "Transformer over event histories (seq)",
    "gru": "GRU over event histories (gru)",
    "btyd": "BG/NBD + Gamma-Gamma (btyd)",
    "gbm": "Gradient boosting (gbm)",
}
# The GRU is the sequence model's cheaper variant: off by default, so one click trains the
# transformer and both baselines.
DEFAULT_MODELS = ("seq", "btyd", "gbm")
DEFAULT_EPOCHS = SequenceConfig().max_epochs
SPLIT_LABELS = {
    "users": "Users: fit on 80%, evaluate on 20% at the as-of date",
    "backtest": "Backtest: fit one horizon earlier, evaluate every user",
}
REGISTRY_SHOWN = ["model_id", "kind", "as_of", "horizon_days", "split", "seed", "created_at", "current_data"]


def _job() -> jobs.TrainingJob | None:
    return st.session_state.get(JOB_KEY)


@st.fragment(run_every=POLL_SECONDS)
def _running_panel() -> None:
    """Redrawn every second while a run is in progress; the whole page reruns when it ends."""
    job = _job()
    if job is None:
        return
    snapshot = job.snapshot()
    if snapshot.finished:
        st.rerun()
    st.progress(snapshot.fraction, text=f"Training in the background: {snapshot.message}")
    st.button("Cancel", key="models_cancel", on_click=job.cancel, icon=":material/cancel:")


def _outcome(job: jobs.TrainingJob) -> None:
    snapshot = job.snapshot()
    if snapshot.status == "done":
        if st.session_state.get(SEEN_JOB_KEY) != str(job.run_dir):
            st.session_state[SEEN_JOB_KEY] = str(job.run_dir)
            st.session_state[COMPARE_KEY] = list(snapshot.model_ids)
        st.success(f"Trained and registered {', '.join(snapshot.model_ids)} in {job.run_dir}.")
    elif snapshot.status == "cancelled":
        st.info("Training was cancelled: nothing was saved or registered.")
    elif isinstance(snapshot.error, TenureError):
        ui.show_error(snapshot.error, prefix="Training failed")
    else:
        st.error(f"Training failed: {snapshot.error}")


def _start(store: Store, filters: Filters, values: dict) -> None:
    chosen = [name for name in AVAILABLE_MODELS if values[name]]
    if not chosen:
        st.warning("Choose at least one model to train.")
        return
    try:
        spec = ModelSpec(dt.datetime.combine(values["as_of"], dt.time()), int(values["horizon"]))
        st.session_state[JOB_KEY] = jobs.start_training(
            store,
            spec,
            chosen,
            values["split"],
            int(values["seed"]),
            jobs.default_models_dir(store),
            filters=filters,
            gbm_config=GBMConfig(num_trees=int(values["trees"])),
            sequence_config=SequenceConfig(max_epochs=int(values["epochs"])),
        )
    except TenureError as error:
        ui.show_error(error)


def _train_section(store: Store, filters: Filters, data_end: pd.Timestamp, expanded: bool) -> None:
    job = _job()
    running = job is not None and not job.snapshot().finished
    with st.expander("Train models", expanded=expanded or job is not None):
        st.caption(
            f"Fits the chosen models on {ui.describe_filters(filters)} at the as-of date T, evaluates them on "
            f"held-out users over [T, T + horizon), saves them under {jobs.default_models_dir(store)} and "
            "registers them in the store. The page stays usable while they train."
        )
        as_of_offered = default_as_of(data_end)
        with st.form("models_train_form", border=False):
            first, second, third, fourth = st.columns(4)
            values = {
                "as_of": first.date_input(
                    "As-of date",
                    value=as_of_offered,
                    max_value=data_end.date(),
                    key="models_as_of",
                    help="T: features use events before it, labels the horizon after it. "
                    "T + horizon must not be after the data's end.",
                ),
                "horizon": second.number_input(
                    "Horizon (days)", min_value=1, value=DEFAULT_HORIZON_DAYS, step=1, key="models_horizon"
                ),
                "split": third.selectbox("Split", SPLITS, format_func=SPLIT_LABELS.get, key="models_split"),
                "seed": fourth.number_input("Seed", min_value=0, value=0, step=1, key="models_seed"),
            }
            columns = st.columns(len(AVAILABLE_MODELS))
            for column, name in zip(columns, AVAILABLE_MODELS, strict=True):
                values[name] = column.checkbox(
                    MODEL_LABELS.get(name, name), value=name in DEFAULT_MODELS, key=f"models_train_{name}"
                )
            epochs, trees, _ = st.columns([1, 1, 2])
            values["epochs"] = epochs.number_input(
                "Sequence model epochs (at most)",
                min_value=1,
                value=DEFAULT_EPOCHS,
                step=1,
                key="models_epochs",
                help="seq and gru stop earlier after 3 epochs without a better loss on their early-stopping users.",
            )
            values["trees"] = trees.number_input(
                "GBM trees", min_value=1, value=DEFAULT_TREES, step=10, key="models_trees"
            )
            submitted = st.form_submit_button(
                "Train", type="primary", disabled=running, icon=":material/model_training:"
            )
        if submitted and not running:
            _start(store, filters, values)
            job = _job()
            running = job is not None and not job.snapshot().finished
        if running:
            _running_panel()
        elif job is not None:
            _outcome(job)


def _choose_models(models: pd.DataFrame) -> pd.DataFrame:
    """The models to compare (newest run's by default); says when some predate the latest load."""
    ids = models["model_id"].tolist()
    labels = dict(zip(ids, map(registry.model_label, ids, models["current_data"]), strict=True))
    newest_run = models["run_dir"].iloc[0]
    default = models.loc[models["run_dir"] == newest_run, "model_id"].tolist()
    current = st.session_state.get(COMPARE_KEY)
    st.session_state[COMPARE_KEY] = (
        default if current is None else [model for model in current if model in ids]
    )
    chosen = st.multiselect(
        "Models to compare",
        ids,
        key=COMPARE_KEY,
        format_func=labels.__getitem__,
        help="Models of one run share their evaluation users; models of different runs may not.",
    )
    chosen_models = models.set_index("model_id").loc[chosen].reset_index()
    stale = int((~chosen_models["current_data"]).sum())
    if stale:
        st.caption(
            f"{stale} of the chosen models {'was' if stale == 1 else 'were'} {registry.STALE_NOTE}: "
            f"{'its' if stale == 1 else 'their'} metrics and held-out scores describe the data as it was "
            "then. Train again to include the new data."
        )
    return chosen_models


def _registry_table(models: pd.DataFrame) -> None:
    with st.expander(f"Registered models ({len(models)})", expanded=False):
        st.dataframe(models[REGISTRY_SHOWN], hide_index=True, key="models_registry")
        st.caption(
            "current_data: trained on the data the store holds now (no load since). "
            "The same list on the command line: `python -m core models list`."
        )


def _metrics_section(chosen: pd.DataFrame) -> pd.DataFrame:
    st.subheader("Metrics side by side")
    table = registry.metrics_frame(chosen)
    numeric = table.drop(columns=["kind", "calibration_method"]).set_index("model_id").T
    numeric.index.name = "metric"
    st.dataframe(numeric.reset_index(), hide_index=True, key="models_metrics")
    ui.download_csv(numeric.reset_index(), "model_metrics.csv", key="download_model_metrics")
    st.caption(
        "Churn metrics of the calibrated probabilities on each model's evaluation users; LTV metrics of "
        "revenue in [T, T + horizon). Definitions: docs/METRICS.md, 'Churn and lifetime value models'."
    )
    return table


def _charts_section(table: pd.DataFrame, comparison: cached_models.Comparison) -> None:
    order = table["model_id"].tolist()
    by_id = table.set_index("model_id")
    roc_tab, pr_tab, calibration_tab, decile_tab = st.tabs(
        ["ROC", "Precision-recall", "Calibration", "LTV deciles"]
    )
    with roc_tab:
        st.plotly_chart(
            figures_models.roc_figure(comparison.roc, by_id["churn_roc_auc"].dropna().to_dict(), order),
            key="models_roc",
        )
    with pr_tab:
        st.plotly_chart(
            figures_models.pr_figure(
                comparison.pr,
                by_id["churn_churn_rate"].dropna().to_dict(),
                by_id["churn_pr_auc"].dropna().to_dict(),
                order,
            ),
            key="models_pr",
        )
    with calibration_tab:
        st.plotly_chart(
            figures_models.calibration_figure(comparison.reliability, order), key="models_calibration"
        )
        st.caption(
            "Evaluation users binned by predicted churn probability (10 equal-width bins); empty bins are not "
            "drawn. Raw: the model's own probabilities; calibrated: after the calibrator fitted on validation users."
        )
    with decile_tab:
        st.plotly_chart(figures_models.decile_figure(comparison.deciles, order), key="models_deciles")
        st.caption(
            "Evaluation users ranked by predicted LTV into ten groups; decile 1 holds the highest predictions."
        )


def _scores_section(predictions: pd.DataFrame, model_ids: list[str]) -> pd.DataFrame:
    st.subheader("Scores of the evaluation users")
    first, second, third = st.columns([2, 2, 1])
    shown_models = first.multiselect("Model", model_ids, default=model_ids, key="models_scores_models")
    churn_range = second.slider(
        "Churn probability",
        min_value=0.0,
        max_value=1.0,
        value=(0.0, 1.0),
        step=0.01,
        key="models_scores_churn",
    )
    min_ltv = third.number_input(
        "Min predicted LTV", value=None, step=1.0, key="models_scores_min_ltv", placeholder="any"
    )
    scores = results.filter_scores(predictions, shown_models, churn_range, min_ltv)
    st.caption(f"{len(scores):,} of {len(predictions):,} rows, highest churn probability first.")
    st.dataframe(scores, hide_index=True, key="models_scores")
    ui.download_csv(scores, "model_scores.csv", key="download_model_scores")
    return scores


def _timeline_section(
    store: Store, chosen: pd.DataFrame, predictions: pd.DataFrame, scores: pd.DataFrame
) -> None:
    st.subheader("One user")
    left, right = st.columns(2)
    model_id = left.selectbox("Model", chosen["model_id"].tolist(), key="models_timeline_model")
    pool = scores if (scores["model_id"] == model_id).any() else predictions
    users = (
        pool.loc[pool["model_id"] == model_id, "user_id"].drop_duplicates().head(MAX_USER_CHOICES).tolist()
    )
    if not users:
        st.info("This model has no evaluation users.")
        return
    ui.seed_control("models_timeline_user", users[0], options=users)
    user_id = right.selectbox(
        "User",
        users,
        key="models_timeline_user",
        help=f"The model's evaluation users in the score table above (its filters apply), at most {MAX_USER_CHOICES}.",
    )
    model = chosen.set_index("model_id").loc[model_id]
    as_of = pd.Timestamp(model["as_of"])
    horizon = int(model["horizon_days"])
    horizon_end = as_of + pd.Timedelta(days=horizon)
    row = predictions[(predictions["model_id"] == model_id) & (predictions["user_id"] == user_id)].iloc[0]
    first, second, third, fourth = st.columns(4)
    first.metric("Churn probability", f"{row['churn_prob']:.3f}")
    second.metric("Predicted LTV", f"{row['ltv_pred']:.2f}")
    third.metric("Churned", "yes" if int(row["churned"]) else "no")
    fourth.metric("Actual LTV", f"{row['ltv_actual']:.2f}")
    events = timeline.user_timeline(store, user_id, as_of.to_pydatetime(), horizon)
    st.plotly_chart(figures_models.timeline_figure(events, as_of, horizon_end), key="models_timeline")
    st.caption(
        f"As-of {as_of:%Y-%m-%d %H:%M}, horizon end {horizon_end:%Y-%m-%d %H:%M} (UTC): the model saw the "
        "events before the as-of date; no event after it means the user churned."
    )
    others = predictions[predictions["user_id"] == user_id]
    with st.expander("Scores of this user by every chosen model, and the events", expanded=False):
        st.dataframe(others, hide_index=True, key="models_user_scores")
        st.dataframe(events, hide_index=True, key="models_user_events")
        ui.download_csv(events, f"user_{user_id}_events.csv", key="download_user_events")
    try:
        table, curve = cached_models.user_explanation(store, model["path"], user_id, as_of.to_pydatetime())
    except TenureError as error:
        ui.show_error(error, prefix="Attributions")
        return
    if table is None:
        st.info(
            f"Attributions (which events moved the score most) are available for sequence models; "
            f"{model['kind']} models score per-user aggregates, not single events."
        )
    else:
        st.markdown("**Events that moved the churn probability most**")
        st.caption(
            "Integrated gradients over the events' embeddings: each event's share of the change from a "
            "history with the same number of blank events to this user's own (raw, uncalibrated) churn "
            "probability; positive pushed towards churn. The contributions add up to that change."
        )
        st.dataframe(table, hide_index=True, key="models_attributions")
        if curve is not None:
            st.markdown("**Weekly survival over the horizon**")
            st.caption(
                "S(w): the network's probability that this user is seen again on or after the start of "
                "week w within the horizon (docs/METRICS.md, Sequence models); uncalibrated, so S(0) "
                "can differ a little from 1 - the calibrated churn probability."
            )
            st.plotly_chart(figures_models.user_survival_figure(curve, horizon), key="models_user_survival")


def _register_clicked(store: Store) -> None:
    """Callbacks run before the next script run draws any widget, so they may set widget state."""
    try:
        ids = registry.register(store, st.session_state["models_register_dir"].strip())
    except TenureError as error:
        st.session_state[MANAGE_ERROR_KEY] = error
        return
    st.session_state[COMPARE_KEY] = ids


def _remove_clicked(store: Store) -> None:
    try:
        registry.remove(store, st.session_state["models_remove_ids"])
    except TenureError as error:
        st.session_state[MANAGE_ERROR_KEY] = error
    st.session_state["models_remove_ids"] = []


def _manage_section(store: Store, models: pd.DataFrame) -> None:
    error = st.session_state.pop(MANAGE_ERROR_KEY, None)
    with st.expander("Register or remove models", expanded=error is not None):
        if error is not None:
            ui.show_error(error)
        left, right = st.columns(2)
        folder = left.text_input(
            "Run folder",
            key="models_register_dir",
            help="A folder written by `python -m core train --out DIR`.",
        )
        left.button(
            "Register",
            key="models_register",
            disabled=not folder.strip(),
            on_click=_register_clicked,
            args=(store,),
        )
        doomed = right.multiselect(
            "Remove from the registry", models["model_id"].tolist(), key="models_remove_ids"
        )
        right.button(
            "Remove", key="models_remove", disabled=not doomed, on_click=_remove_clicked, args=(store,)
        )
        st.caption("Removing a model forgets it here; its folder stays on disk.")


def main() -> None:
    store = ui.get_store()
    filters = ui.get_filters()
    st.title("Models")
    st.caption(
        "Churn and lifetime-value models: train them, compare them on held-out users, see each user's "
        "scores. Definitions: docs/METRICS.md, 'Comparing models'."
    )
    data_end = store.data_end()
    if data_end is None:
        st.info("This store has no events yet: load a file on the Data page.")
        st.page_link("pages/data/data.py", label="Go to Data", icon=":material/database:")
        return
    models = registry.with_current_data(store, registry.list_models(store))
    _train_section(store, filters, data_end, expanded=models.empty)
    if models.empty:
        st.info(
            "No models are registered for this store yet: train some above, or register a run folder "
            "written by `python -m core train` (below, or `python -m core models register DIR`)."
        )
        _manage_section(store, models)
        return
    chosen = _choose_models(models)
    _registry_table(models)
    if chosen.empty:
        st.info("Choose models to compare.")
        _manage_section(store, models)
        return
    try:
        comparison = cached_models.comparison(chosen)
    except TenureError as error:
        ui.show_error(error)
        _manage_section(store, models)
        return
    table = _metrics_section(chosen)
    _charts_section(table, comparison)
    scores = _scores_section(comparison.predictions, chosen["model_id"].tolist())
    _timeline_section(store, chosen, comparison.predictions, scores)
    _manage_section(store, models)


main()
