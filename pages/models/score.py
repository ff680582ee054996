"""Score: score the users of an uploaded events file with a saved model, without loading the file
into the store (core/models/upload_scoring.py does the work; this page wires widgets to it).

For tests and scripted runs, a file already on the server can stand in for the upload:
``st.session_state["score_events_path"]`` (and ``"score_users_path"``) hold its path.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

from core import figures_scoring
from core.errors import TenureError
from core.ingest import BadRowsError, MissingColumnsError
from core.models import registry
from core.models.drift import MIN_EVENTS, MIN_HISTORY_DAYS
from core.models.spec import default_as_of
from core.models.training import median_weeks_meaning
from core.models.upload_scoring import (
    DEFAULT_MODELS_DIR,
    MAX_SCORE_EVENTS,
    MAX_UPLOAD_BYTES,
    UploadScoreReport,
    model_folders,
    score_upload,
)
from core.store import PROJECT_ROOT, Store
from pages.shared import ui

UPLOAD_DIR = Path(tempfile.gettempdir()) / "tenure-score-uploads"
EVENTS_PATH_KEY = "score_events_path"
USERS_PATH_KEY = "score_users_path"
RESULT_KEY = "_score_result"
OTHER_FOLDER = "(another folder)"


def _saved_upload(uploaded: Any) -> Path:
    """The uploaded file written to a private temporary folder (the ingest reads a path)."""
    folder = UPLOAD_DIR / uploaded.file_id
    path = folder / Path(uploaded.name).name
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        path.write_bytes(uploaded.getbuffer())
    return path


def _file_input(label: str, key: str, path_key: str) -> tuple[Path, str] | None:
    """(path on the server, name to show) of an uploaded file, or of the path in session state."""
    uploaded = st.file_uploader(label, type=["csv", "gz", "parquet", "tsv", "txt"], key=key)
    if uploaded is not None:
        return _saved_upload(uploaded), uploaded.name
    scripted = st.session_state.get(path_key)
    if scripted:
        return Path(scripted), Path(scripted).name
    return None


def _shown(path: Path) -> str:
    """``path`` relative to the project when it lies inside it (the project itself in full)."""
    try:
        relative = path.relative_to(PROJECT_ROOT)
    except ValueError:
        return str(path)
    return str(relative) if relative.parts else str(path)


def _train_hint() -> str:
    """How to get a model, with an as-of date that suits this store (its end less the horizon)."""
    data_end = ui.get_store().data_end()
    if data_end is None:
        return "Load events on the Data page, then train a model on the Models page"
    as_of = default_as_of(data_end).isoformat()
    return (
        f"Train one on the Models page, or with `python -m core train --as-of {as_of} --model all "
        f"--out {_shown(DEFAULT_MODELS_DIR)}/{as_of}`"
    )


def _model_input() -> Path | None:
    """The model folder: a registered one (named by its registry id, as on the Models page), one
    found under sample_data/models, or any folder typed in."""
    store = ui.get_store()
    registered = [Path(path) for path in registry.saved_model_paths(store)]
    found = [str(path) for path in dict.fromkeys([*registered, *model_folders(DEFAULT_MODELS_DIR)])]
    model_name = ui.model_namer(store)
    choice = st.selectbox(
        "Model",
        [*found, OTHER_FOLDER],
        key="score_model_choice",
        format_func=lambda value: value if value == OTHER_FOLDER else _model_shown(value, model_name),
    )
    if choice != OTHER_FOLDER:
        return Path(choice)
    typed = st.text_input("Path of a model folder (holding model.json)", key="score_model_path")
    return Path(typed) if typed.strip() else None


def _model_shown(folder: str, model_name: Callable[[str], str]) -> str:
    """A registered model's id, else the folder relative to the project."""
    name = model_name(folder)
    return name if name != folder else _shown(Path(folder))


def _mapping_editor(path: Path) -> dict[str, str]:
    """File column -> canonical events column, prefilled by the ingest's automatic mapping."""
    with Store(":memory:") as scratch:
        columns, suggested = ui.suggested_column_map(scratch, path, "events")
    return ui.column_map_editor(columns, "events", suggested, key="score_mapping")


def _run(
    events: tuple[Path, str],
    users: tuple[Path, str] | None,
    model: Path,
    as_of: dt.date | None,
    column_map: dict[str, str],
    skip_bad_rows: bool,
) -> None:
    path, name = events
    bar = st.progress(0.0, text=f"Reading {name}...")
    rejects = UPLOAD_DIR / f"{path.stem}.rejects.csv"
    try:
        report = score_upload(
            path,
            model,
            None if as_of is None else dt.datetime.combine(as_of, dt.time()),
            column_map=column_map,
            skip_bad_rows=skip_bad_rows,
            rejects_path=rejects,
            users_path=None if users is None else users[0],
            source_name=name,
            progress=lambda fraction, message: bar.progress(min(max(fraction, 0.0), 1.0), text=message),
        )
    except BadRowsError as error:
        bar.empty()
        ui.show_file_error(error.with_skip("tick 'Skip bad rows' above and score again"), path, name)
        st.dataframe(error.bad_rows, hide_index=True, key="score_bad_rows")
        ui.download_csv(error.bad_rows, f"{Path(name).stem}_bad_rows.csv", key="download_score_bad_rows")
        return
    except MissingColumnsError as error:
        bar.empty()
        hint = f"open 'Column mapping' above, choose the file column that holds {error.missing[0]}, then score again"
        ui.show_file_error(error.with_hint(hint), path, name)
        return
    except TenureError as error:
        bar.empty()
        ui.show_file_error(error, path, name)
        return
    bar.empty()
    rejected = report.events.rejects_path
    st.session_state[RESULT_KEY] = {
        "report": report,
        "rejects": rejected.read_text(encoding="utf-8") if rejected and report.events.rows_rejected else None,
    }


def _results(result: dict[str, Any]) -> None:
    report: UploadScoreReport = result["report"]
    st.success(report.summary(), icon=":material/check_circle:")
    columns = st.columns(4)
    columns[0].metric("Users scored", f"{len(report.scores):,}")
    columns[1].metric("Flagged users", f"{report.flagged_users:,}")
    columns[2].metric("Events ignored (on or after as-of)", f"{report.drift.events_after_as_of:,}")
    columns[3].metric("Unknown event names", f"{len(report.drift.unknown_events):,}")
    notes = report.drift.lines()
    if report.events.rows_rejected:
        notes.insert(0, report.events.summary())
    if report.users_not_scored:
        notes.append(
            f"{report.users_not_scored:,} users have no event before the as-of date and are not scored"
        )
    if notes:
        st.warning(
            "**What the scores leave out, and where the file differs from the training data**\n\n"
            + "\n".join(f"- {note}" for note in notes),
            icon=":material/warning:",
        )
    if result["rejects"]:
        st.download_button(
            "Download rejected rows",
            data=result["rejects"],
            file_name=f"{Path(report.source).stem}_rejects.csv",
            mime="text/csv",
            on_click="ignore",
            key="download_score_rejects",
        )
    if len(report.drift.unknown_events):
        st.dataframe(report.drift.unknown_events, hide_index=True, key="score_unknown_events")
    st.subheader("Score distribution")
    st.plotly_chart(figures_scoring.score_distribution_figure(report.scores), key="score_histograms")
    left, right = st.columns(2)
    left.markdown("**Most at risk** (highest churn_prob)")
    left.dataframe(report.most_at_risk(), hide_index=True, key="score_at_risk")
    right.markdown("**Most valuable** (highest ltv_pred)")
    right.dataframe(report.most_valuable(), hide_index=True, key="score_valuable")
    st.subheader("All scored users")
    st.caption(
        f"flag: few_events = fewer than {MIN_EVENTS} events before the as-of date; short_history = first "
        f"event less than {MIN_HISTORY_DAYS:g} days before it. Their scores rest on too little history "
        f"to trust. median_weeks_to_churn: {median_weeks_meaning(report.model_kind)} "
        "(docs/METRICS.md)."
    )
    st.dataframe(report.scores_with_flags(), hide_index=True, key="score_table")
    stem = Path(report.source).name.split(".")[0]
    ui.download_csv(report.scores, f"{stem}_scores.csv", label="Download scores", key="download_scores")
    ui.download_csv(report.flags, f"{stem}_scores.flags.csv", label="Download flags", key="download_flags")


def main() -> None:
    st.title("Score")
    st.caption(
        "Score the users of an events file with a saved churn/LTV model. The file is checked like a "
        "load (Data page), read into a private in-memory store, scored and discarded: the store is "
        f"never changed. Limits: {MAX_SCORE_EVENTS:,} events and {MAX_UPLOAD_BYTES / 1024**2:,.0f} MiB."
    )
    model = _model_input()
    if model is None or not (model / "model.json").is_file():
        where = f"`{_shown(model)}` holds no model.json" if model is not None else "No model folder chosen"
        st.info(
            f"{where}. {_train_hint()}; or type the path of a folder holding model.json.",
            icon=":material/info:",
        )
        return
    events = _file_input("Events file (CSV, CSV.gz or Parquet)", "score_upload", EVENTS_PATH_KEY)
    users = _file_input("Users file with attributes (optional)", "score_users_upload", USERS_PATH_KEY)
    as_of = st.date_input(
        "As-of date (UTC midnight)",
        value=None,
        key="score_as_of",
        help="Users are scored from their events before this date. Left empty: the day of the file's last "
        "event, the latest date at which every user's history is complete in the file.",
    )
    if events is None:
        st.info("Upload an events file to score.", icon=":material/upload_file:")
        return
    column_map: dict[str, str] = {}
    with st.expander("Column mapping"):
        try:
            column_map = _mapping_editor(events[0])
        except TenureError as error:
            ui.show_file_error(error, events[0], events[1])
            return
    skip_bad_rows = st.checkbox(
        "Skip bad rows (score the good ones, list the bad ones in a rejects file)", key="score_skip_bad"
    )
    if st.button("Score", type="primary", key="score_run"):
        st.session_state.pop(RESULT_KEY, None)
        _run(events, users, model, as_of, column_map, skip_bad_rows)
    result = st.session_state.get(RESULT_KEY)
    if result:
        _results(result)


main()
