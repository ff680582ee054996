"""Data: what the store holds (tables, date ranges, previews, load history), loading a file into
it, and switching dataset."""

from __future__ import annotations

import tempfile
from pathlib import Path

import streamlit as st

from core.errors import TenureError
from core.ingest import BadRowsError, MissingColumnsError, ingest_file
from core.models import registry
from core.schema import CANONICAL_TABLES
from core.store import Store
from pages.shared import cached, ui

UPLOAD_DIR = Path(tempfile.gettempdir()) / "tenure-uploads"
LAST_LOAD = "_data_last_load"


def _dataset_section(store: Store) -> None:
    st.subheader("Dataset")
    left, right = st.columns([1, 2])
    ui.dataset_switch(left, key="data_dataset")
    meta = store.meta()
    right.caption(f"Store file: `{store.path}`")
    if meta.get("source"):
        right.caption(meta["source"])


def _tables_section(store: Store) -> None:
    info = cached.store_info(store)
    st.subheader("Tables")
    tables = cached.tables_frame(info)
    st.dataframe(tables, hide_index=True, key="data_tables")
    ui.download_csv(tables, "tables.csv", key="download_tables")
    name = st.selectbox("Preview", list(tables["table"]), key="data_preview_table")
    preview = cached.preview(store, name)
    st.dataframe(preview, hide_index=True, key="data_preview")
    ui.download_csv(preview, f"{name}_preview.csv", key="download_preview")
    st.subheader("Load history")
    history = cached.load_history_frame(info)
    if history.empty:
        st.caption("Nothing loaded yet.")
    else:
        st.dataframe(history, hide_index=True, key="data_history")
        ui.download_csv(history, "load_history.csv", key="download_history")


def _upload_section(store: Store) -> None:
    st.subheader("Load a file")
    st.caption(
        f"Loads into the selected store (`{store.path.name}`). The whole file is checked first and "
        "loaded in one transaction: all or nothing, unless bad rows are skipped."
    )
    uploaded = st.file_uploader(
        "CSV, CSV.gz or Parquet file", type=["csv", "gz", "parquet", "tsv", "txt"], key="data_upload"
    )
    if uploaded is None:
        return
    table = st.selectbox("Target table", list(CANONICAL_TABLES), key="data_table")
    folder = UPLOAD_DIR / uploaded.file_id
    path = folder / Path(uploaded.name).name
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        path.write_bytes(uploaded.getbuffer())
    try:
        columns, suggested = ui.suggested_column_map(store, path, table)
    except TenureError as error:
        ui.show_file_error(error, path, uploaded.name)
        return
    st.markdown("**Column mapping**")
    column_map = ui.column_map_editor(columns, table, suggested, key=f"data_mapping_{table}")
    spec = CANONICAL_TABLES[table]
    missing = [
        name
        for name in spec.column_names
        if name not in column_map.values() and name != spec.extras_json_column
    ]
    constants: dict[str, str] = {}
    if missing:
        st.markdown("**Constants for missing columns** (left empty: not set)")
        for column, name in zip(st.columns(min(len(missing), 4)) * len(missing), missing, strict=False):
            value = column.text_input(name, key=f"data_constant_{table}_{name}")
            if value:
                constants[name] = value
    skip_bad_rows = st.checkbox(
        "Skip bad rows (load the good ones, write the bad ones to a rejects file)", key="data_skip_bad"
    )
    if not st.button("Load", type="primary", key="data_load"):
        return
    rejects = folder / f"{path.name}.rejects.csv"
    current_models = int(registry.saved_models(store)["current_data"].sum())
    try:
        with st.spinner(f"Loading {uploaded.name} into {table}..."):
            result = ingest_file(
                store,
                path,
                table=table,
                column_map=column_map,
                constants=constants,
                skip_bad_rows=skip_bad_rows,
                rejects_path=rejects,
                source_name=uploaded.name,
            )
    except BadRowsError as error:
        ui.show_file_error(error.with_skip("tick 'Skip bad rows' above and load again"), path, uploaded.name)
        st.dataframe(error.bad_rows, hide_index=True, key="data_bad_rows")
        ui.download_csv(error.bad_rows, f"{path.stem}_bad_rows.csv", key="download_bad_rows")
        return
    except MissingColumnsError as error:
        column = error.missing[0]
        hint = (
            f"under 'Column mapping', choose the file column that holds {column}, or give {column} a value "
            "under 'Constants for missing columns'; then load again"
        )
        ui.show_file_error(error.with_hint(hint), path, uploaded.name)
        return
    except TenureError as error:
        ui.show_file_error(error, path, uploaded.name)
        return
    st.session_state[LAST_LOAD] = {
        "summary": result.summary(),
        "rejects": result.rejects_path.read_text() if result.rows_rejected and result.rejects_path else None,
        # The name the summary gives them ("1 rejected -> NAME"), so the download is that file.
        "rejects_name": rejects.name,
        # Every load makes the models trained before it out of date; say so once, here.
        "outdated_models": 0 if result.already_loaded else current_models,
    }
    st.rerun()


def _last_load() -> None:
    last = st.session_state.get(LAST_LOAD)
    if not last:
        return
    st.success(last["summary"], icon=":material/check_circle:")
    if last["rejects"]:
        st.download_button(
            "Download rejected rows",
            data=last["rejects"],
            file_name=last["rejects_name"],
            mime="text/csv",
            on_click="ignore",
            key="download_rejects",
        )
    outdated = last.get("outdated_models", 0)
    if outdated:
        one = outdated == 1
        st.info(
            f"{outdated} registered model{' was' if one else 's were'} {registry.STALE_NOTE}: the pages flag "
            f"{'it' if one else 'them'}, and {'its' if one else 'their'} metrics and held-out scores do not "
            "include the new rows. Train again on the Models page to include them.",
            icon=":material/model_training:",
        )
        st.page_link("pages/models/models.py", label="Go to Models", icon=":material/model_training:")


def main() -> None:
    store = ui.get_store()
    st.title("Data")
    _last_load()
    _dataset_section(store)
    _tables_section(store)
    _upload_section(store)


main()
