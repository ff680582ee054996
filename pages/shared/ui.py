"""Shared pieces of every page: the store, the dataset switch, the global filters, the URL, caching,
downloads and error display.

State lives in three places, each with one job:

- ``st.session_state`` holds what the user chose (dataset, filters, page controls) for the whole
  browser session, across pages;
- the URL mirrors those choices so a view can be shared by link. It is read when a session starts
  (or when a page's controls are first drawn) and rewritten at the end of every run by
  ``finish_run``, because moving between pages clears the query string;
- ``st.cache_data`` keeps query results, keyed by the spec's plain-data form, the filters'
  URL form and ``Store.version()``, so every cache entry drops when a load commits.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Collection
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from core.datasets import DATASETS, ensure_dataset
from core.errors import TenureError
from core.export import to_safe_csv
from core.ingest import table_aliases
from core.ingest_read import file_columns, inspect_file
from core.models import registry
from core.population import Filters, segment_attributes
from core.schema import CANONICAL_TABLES
from core.store import DB_ENV_VAR, Store, resolve_db_path
from pages.shared import cached, url_params

CUSTOM_DATASET = "custom"
DATASET_PARAM = "dataset"
GLOBAL_PARAMS = ("dataset", "from", "to")
SEGMENT_PARAM_PREFIX = "seg."
# Segment attributes offered first, in this order, when the users table has them.
PREFERRED_ATTRIBUTES = ("country", "channel", "platform", "plan")

FROM_KEY = "filter_from"
TO_KEY = "filter_to"
SEGMENT_KEY_PREFIX = "filter_seg."

_URL_AT_START = "_tenure_url_at_start"
_PAGE_PARAMS = "_tenure_page_params"
_REMEMBERED = "_tenure_remembered"
_SEEDED_KEYS = "_tenure_seeded_keys"
_SESSION_STARTED = "_tenure_session_started"
_FILTERS_SEEDED = "_tenure_filters_seeded"
_DATASET = "_tenure_dataset"
_STORE_PATH = "_tenure_store_path"
_FILTERS = "_tenure_filters"
_SEGMENT_OPTIONS = "_tenure_segment_options"


# --- The run: URL in, URL out -------------------------------------------------------------------


def start_run() -> None:
    """Call first in every run: snapshot the URL and, once per session, take the dataset from it."""
    st.session_state[_URL_AT_START] = st.query_params.to_dict()
    st.session_state[_PAGE_PARAMS] = {}
    st.session_state[_SEEDED_KEYS] = []
    st.session_state.setdefault(_REMEMBERED, {})
    if _SESSION_STARTED in st.session_state:
        return
    st.session_state[_SESSION_STARTED] = True
    choices = dataset_choices()
    wanted = url_at_start().get(DATASET_PARAM)
    if wanted and wanted not in choices:
        st.warning(
            f"URL parameter 'dataset={wanted}' names no dataset; showing "
            f"'{choices[default_dataset()]}' (choose one of {', '.join(choices)})."
        )
        wanted = None
    st.session_state[_DATASET] = wanted or default_dataset()


def url_at_start() -> dict[str, str]:
    """The query parameters the browser sent with this run, before this run changed any."""
    return st.session_state.get(_URL_AT_START, {})


def share_in_url(params: dict[str, str]) -> None:
    """Put this page's controls into the URL (alongside the dataset and the filters)."""
    st.session_state[_PAGE_PARAMS] = dict(params)


def finish_run() -> None:
    """Call last in every run: remember page controls and write the whole view into the URL."""
    remembered = st.session_state[_REMEMBERED]
    for key in st.session_state[_SEEDED_KEYS]:
        if key in st.session_state:
            remembered[key] = st.session_state[key]
    params: dict[str, str] = {}
    if st.session_state.get(_DATASET, default_dataset()) != default_dataset():
        params[DATASET_PARAM] = st.session_state[_DATASET]
    filters = st.session_state.get(_FILTERS)
    if filters is not None:
        params.update(filters.to_query_params())
    params.update(st.session_state.get(_PAGE_PARAMS, {}))
    if params != st.query_params.to_dict():
        st.query_params.from_dict(params)


def seed_control(
    key: str,
    default: Any,
    *,
    param: str | None = None,
    parse: Callable[[str], Any] | None = None,
    options: Collection[Any] | None = None,
) -> None:
    """Give the widget ``key`` its starting value before it is drawn.

    In order: the value it already has this session; the URL parameter ``param`` (parsed by
    ``parse``, which raises ``TenureError`` or ``ValueError`` on a bad value: then a warning and the
    next source); the value it had when the page was last left; ``default``.

    ``options``: the values the widget offers now, when they depend on the store (event names,
    attributes, variants). A value it is not among, kept from another dataset or experiment, falls
    back to ``default``; a list (a multiselect's) keeps only its offered entries. Checked on every
    run, since the store can change under a value the session already holds.
    """
    st.session_state[_SEEDED_KEYS].append(key)
    if key not in st.session_state:
        st.session_state[key] = _starting_value(key, default, param, parse)
    if options is not None:
        offered = _offered(st.session_state[key], options, default)
        if offered != st.session_state[key]:
            st.session_state[key] = offered


def _offered(value: Any, options: Collection[Any], default: Any) -> Any:
    """``value`` if it is among ``options`` (a list: its entries that are), else ``default``."""
    if isinstance(value, list):
        return [entry for entry in value if entry in options]
    return value if value in options else default


def _starting_value(key: str, default: Any, param: str | None, parse: Callable[[str], Any] | None) -> Any:
    """``seed_control``'s sources after the session's own value: the URL, the last visit, ``default``."""
    text = url_at_start().get(param) if param else None
    if text is not None:
        try:
            return parse(text) if parse else text
        except (TenureError, ValueError) as error:
            st.warning(f"URL parameter '{param}={text}' was ignored: {error}")
    return st.session_state[_REMEMBERED].get(key, default)


def seed_choice(key: str, options: list[str], *, param: str) -> None:
    """``seed_control`` for a choice among ``options`` that depend on the store (attributes, saved
    models): a remembered or linked value no longer offered falls back to the first option."""
    seed_control(key, options[0], param=param, parse=url_params.choice(options, param), options=options)


def seed_optional_choice(key: str, none: str, options: list[str], *, param: str) -> None:
    """``seed_choice`` with a leading value that means none (no breakdown, no excluded event),
    the default."""
    choices = [none, *options]
    seed_control(key, none, param=param, parse=url_params.choice(choices, param), options=choices)


def linked_selectbox(label: str, options: list[str], key: str, param: str, **kwargs) -> str:
    """A selectbox over store-dependent ``options``, kept in the URL as ``param`` (``seed_choice``)."""
    seed_choice(key, options, param=param)
    return st.selectbox(label, options, key=key, **kwargs)


def model_namer(store: Store) -> Callable[[str], str]:
    """A selectbox ``format_func`` that shows a registered model's folder under its registry id
    (flagged when a load came after it), as the Models page names it; other values unchanged."""
    labels = registry.model_labels(registry.saved_models(store))
    return lambda value: labels.get(value, value)


# --- The dataset and the store ------------------------------------------------------------------


def dataset_choices() -> dict[str, str]:
    """The datasets one can switch between: a custom store named by ``$TENURE_DB``, then the built-ins."""
    choices: dict[str, str] = {}
    custom = os.environ.get(DB_ENV_VAR)
    if custom:
        choices[CUSTOM_DATASET] = f"Custom store ({Path(custom).name})"
    for name, dataset in DATASETS.items():
        choices[name] = dataset.label
    return choices


def default_dataset() -> str:
    return CUSTOM_DATASET if os.environ.get(DB_ENV_VAR) else next(iter(DATASETS))


def current_dataset() -> str:
    return st.session_state.get(_DATASET, default_dataset())


def dataset_switch(container: Any, key: str) -> None:
    """A selectbox that switches the dataset for the whole session (sidebar and Data page)."""
    choices = dataset_choices()
    st.session_state[key] = current_dataset()

    def switch() -> None:
        st.session_state[_DATASET] = st.session_state[key]

    container.selectbox(
        "Dataset",
        options=list(choices),
        format_func=choices.__getitem__,
        key=key,
        on_change=switch,
        help="A built-in dataset is built on first use; a custom store comes from $TENURE_DB.",
    )


@st.cache_resource(show_spinner=False)
def _open_store(path: str) -> Store:
    """One ``Store`` per DuckDB file per process: every session reads through its own cursors."""
    return Store(path)


@st.cache_resource(show_spinner=False)
def _build_lock(name: str) -> threading.Lock:
    """Serialises builds of one dataset across sessions of this process."""
    return threading.Lock()


def _dataset_path(name: str) -> Path:
    if name == CUSTOM_DATASET:
        return resolve_db_path()
    dataset = DATASETS[name]
    if dataset.default_path.exists():
        return dataset.default_path
    with (
        _build_lock(name),
        st.status(f"Building the '{dataset.label}' store (first use only)...", expanded=True) as status,
    ):
        bar = st.progress(0.0, text="starting")

        def progress(fraction: float, message: str) -> None:
            bar.progress(min(max(float(fraction), 0.0), 1.0), text=message)

        path = ensure_dataset(name, progress=progress)
        status.update(label=f"Built the '{dataset.label}' store", state="complete", expanded=False)
    return path


def open_current_store() -> Store:
    """The selected dataset's store (built first when it is a missing built-in); stops the run on error."""
    try:
        path = _dataset_path(current_dataset())
        store = _open_store(str(path.resolve()))
    except TenureError as error:
        show_error(error)
        st.stop()
    st.session_state[_STORE_PATH] = str(store.path.resolve())
    return store


def get_store() -> Store:
    """The store this run works on (opened by the app shell before the page runs)."""
    return _open_store(st.session_state[_STORE_PATH])


# --- Global filters ------------------------------------------------------------------------------


def segment_attribute_names(store: Store) -> list[str]:
    """Attributes of ``users`` to segment by: country, channel, platform, plan first."""
    attributes = segment_attributes(store)
    preferred = [name for name in PREFERRED_ATTRIBUTES if name in attributes]
    return preferred + [name for name in attributes if name not in preferred]


def _seed_filters_from_url(store: Store, options: dict[str, list[str]]) -> None:
    """Once per session: the URL's filters become the sidebar's values; bad ones are reported."""
    params = url_at_start()
    for key in ("from", "to"):
        try:
            parsed = Filters.from_query_params({key: params.get(key, "")})
        except TenureError as error:
            st.warning(f"{error}; that filter was ignored.")
            continue
        value = parsed.start_date if key == "from" else parsed.end_date
        if value is not None:
            st.session_state[FROM_KEY if key == "from" else TO_KEY] = value
    for attribute, values in Filters.from_query_params(
        {key: value for key, value in params.items() if key.startswith(SEGMENT_PARAM_PREFIX)}
    ).segments:
        if attribute not in options:
            st.warning(
                f"URL parameter '{SEGMENT_PARAM_PREFIX}{attribute}' names no attribute of the users "
                f"table; ignored (attributes: {', '.join(options) or 'none'})."
            )
            continue
        known = [value for value in values if value in options[attribute]]
        unknown = [value for value in values if value not in options[attribute]]
        if unknown:
            st.warning(f"Unknown {attribute} value(s) in the URL ignored: {', '.join(unknown)}.")
        st.session_state[SEGMENT_KEY_PREFIX + attribute] = known


def sidebar_filters(store: Store) -> Filters:
    """The global filters, drawn in the sidebar; shared by all pages and kept in the URL."""
    span = cached.event_span(store)
    attributes = segment_attribute_names(store)
    options = {attribute: cached.segment_values(store, attribute) for attribute in attributes}
    if not st.session_state.get(_FILTERS_SEEDED):
        st.session_state[_FILTERS_SEEDED] = True
        _seed_filters_from_url(store, options)

    sidebar = st.sidebar
    sidebar.subheader("Filters")
    sidebar.caption("Users whose start falls in the range and who match every segment.")
    chosen = [st.session_state.get(FROM_KEY), st.session_state.get(TO_KEY)]
    known_days = [day for day in (*span, *chosen) if day is not None]
    low = min(known_days, default=None)
    high = max(known_days, default=None)
    # One per row: two side by side in the sidebar leave room for the year only.
    start_date = sidebar.date_input(
        "Start from", value=None, min_value=low, max_value=high, key=FROM_KEY, format="YYYY-MM-DD"
    )
    end_date = sidebar.date_input(
        "Start to", value=None, min_value=low, max_value=high, key=TO_KEY, format="YYYY-MM-DD"
    )
    segments: list[tuple[str, tuple[str, ...]]] = []
    for attribute in attributes:
        key = SEGMENT_KEY_PREFIX + attribute
        current = st.session_state.get(key, [])
        if any(value not in options[attribute] for value in current):
            st.session_state[key] = [value for value in current if value in options[attribute]]
        values = sidebar.multiselect(
            attribute.replace("_", " ").capitalize(),
            options=options[attribute],
            key=key,
            placeholder="All",
        )
        if values:
            segments.append((attribute, tuple(values)))
    if start_date and end_date and start_date > end_date:
        sidebar.warning("'Start from' is after 'Start to': no user can match.")
    filters = Filters(start_date, end_date, tuple(segments))
    st.session_state[_FILTERS] = filters
    return filters


def get_filters() -> Filters:
    """The global filters of this run (drawn by the app shell before the page runs)."""
    return st.session_state.get(_FILTERS, Filters())


def describe_filters(filters: Filters) -> str:
    """One line saying which users a view covers."""
    if filters.is_empty:
        return "all users"
    parts = []
    if filters.start_date or filters.end_date:
        since = filters.start_date.isoformat() if filters.start_date else "the beginning"
        until = filters.end_date.isoformat() if filters.end_date else "the end"
        parts.append(f"starting {since} to {until}")
    parts += [f"{attribute} in {', '.join(values)}" for attribute, values in filters.segments]
    return "users " + "; ".join(parts)


# --- Output helpers ------------------------------------------------------------------------------


def show_error(error: TenureError, *, prefix: str | None = None) -> None:
    """A problem the user can fix: what is wrong, then what to do."""
    text = f"{prefix}: {error.message}" if prefix else error.message
    if error.hint:
        text += f"  \n**What to do:** {error.hint}"
    st.error(text, icon=":material/error:")


def download_csv(
    frame: pd.DataFrame, file_name: str, *, label: str = "Download CSV", key: str | None = None
) -> None:
    """A download button for ``frame`` as CSV that spreadsheets open without running formulas.

    The CSV is written when the button is clicked, not on every run of the page: a page reruns
    on each widget change, and writing a large table each time (0.9 s for a daily retention table
    of 130,000 cells) slowed every rerun for a file that is rarely fetched.
    """
    st.download_button(
        label,
        data=partial(to_safe_csv, frame.copy()),
        file_name=file_name,
        mime="text/csv",
        key=key or f"download_{file_name}",
        on_click="ignore",
        icon=":material/download:",
    )


def suggested_column_map(store: Store, path: Path, table: str) -> tuple[list[str], dict[str, str]]:
    """A file's columns and, for each that the ingest would map by itself, its canonical column.

    Same rules as the ingest's automatic mapping: a canonical name (any case) first, then an
    alias; when two file columns could feed one canonical column, only the first is suggested.
    """
    spec = CANONICAL_TABLES[table]
    with store.cursor() as cursor:
        sniffed, _ = file_columns(cursor, inspect_file(path))
    columns = [name for name, _ in sniffed]
    aliases = table_aliases(spec)
    suggested: dict[str, str] = {}
    for rank in (0, 1):
        for column in columns:
            lower = column.lower()
            target = (
                lower if rank == 0 and lower in spec.column_names else aliases.get(lower) if rank else None
            )
            if target and column not in suggested and target not in suggested.values():
                suggested[column] = target
    return columns, suggested


KEEP_COLUMN = "(extra column)"


def column_map_editor(columns: list[str], table: str, suggested: dict[str, str], key: str) -> dict[str, str]:
    """File column -> canonical column of ``table``, prefilled by the ingest's automatic aliases
    (``suggested``) and editable; returns the mapping to pass to the ingest (extra columns map to "")."""
    spec = CANONICAL_TABLES[table]
    frame = pd.DataFrame(
        {"file column": columns, "canonical column": [suggested.get(name, KEEP_COLUMN) for name in columns]}
    )
    edited = st.data_editor(
        frame,
        hide_index=True,
        disabled=["file column"],
        column_config={
            "canonical column": st.column_config.SelectboxColumn(
                options=[KEEP_COLUMN, *spec.column_names], required=True
            )
        },
        key=key,
    )
    # An extra column is passed as "SRC=" (keep it as it is), so that choosing "(extra column)"
    # for a column the ingest would map by its name (``timestamp``, ``amount``) is obeyed.
    return {
        source: "" if target == KEEP_COLUMN else target
        for source, target in zip(edited["file column"], edited["canonical column"], strict=True)
    }


def show_file_error(error: TenureError, path: Path, name: str) -> None:
    """The error with an upload's own name in place of its temporary copy's path."""
    named = TenureError(error.message.replace(str(path), name), error.hint)
    show_error(named, prefix=name if name not in named.message else None)
