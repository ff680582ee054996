"""What a model saw in training, recorded next to it so that a scored file can be compared with it.

Definitions (docs/METRICS.md, "Ad hoc scoring of an uploaded file"), all times UTC:

- The **training profile** of a model fitted at as-of date T (the fit as-of: T, or T - H in a
  backtest) describes the events before T of the users of the population at T (users whose first
  event is before T, after the global filters):
  - ``event_names``: each event name with its number of events, most frequent first (at most
    ``MAX_PROFILE_EVENT_NAMES``; ``event_names_complete`` is false when there were more);
  - ``first_event``: the earliest of those events; ``as_of``: T. Together the **training window**;
  - ``history_days`` (T - the user's first event, in days of 86,400 s) and ``history_events``
    (the user's events before T): their minimum, 1st, 5th, 50th, 95th, 99th percentiles
    (``quantile_cont``, linear interpolation) and maximum over the users;
  - ``users``: the number of users;
  - ``attributes``: the attribute columns of the ``users`` table (what a model may read of a user
    besides their events).
- ``train`` writes it into each model folder's ``model.json`` under the key ``training_profile``
  (added after the model's own save: the models' loaders ignore it, and folders without it
  still load). The sequence model and any later kind get it the same way.
- Folders saved before the profile existed fall back, in order, on: the GBM's feature vocabulary
  (its event names: complete only when fewer than its ``MAX_EVENT_NAMES``; its attribute
  columns), the ``data_window``
  in ``model.json``, and the ``data_window`` of ``metrics.json`` in the folder above. What none
  of them records is reported as not checked, never guessed.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from core.models.artifacts import MODEL_FILE, write_model_json
from core.models.features import MAX_EVENT_NAMES
from core.population import Filters, StartSpec, population_sql, segment_attributes
from core.store import Store

PROFILE_KEY = "training_profile"
PROFILE_VERSION = 1
MAX_PROFILE_EVENT_NAMES = 1000
QUANTILES = (("p01", 0.01), ("p05", 0.05), ("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
HISTORY_MEASURES = ("history_days", "history_events")
METRICS_FILE = "metrics.json"  # written by train next to the model folders (core/models/training.py)

_MICROSECONDS_PER_DAY = 86_400_000_000


def user_histories_sql(
    store: Store, as_of: dt.datetime, filters: Filters | None = None
) -> tuple[str, list[Any]]:
    """CTEs ``histories(user_id, first_event, history_days, history_events)`` of the population at T.

    The population is the users whose first event is before T (after the filters); their
    history is their events before T.
    """
    population, params = population_sql(store, StartSpec(), filters or Filters())
    sql = f"""
population AS ({population}),
before AS (
    SELECT e.user_id, e.event_time, e.event_name FROM events e
    WHERE e.event_time < ? AND e.user_id IN (SELECT user_id FROM population WHERE start_time < ?)
),
histories AS (
    SELECT user_id, min(event_time) AS first_event,
        (epoch_us(CAST(? AS TIMESTAMP)) - epoch_us(min(event_time))) / {_MICROSECONDS_PER_DAY}.0
            AS history_days,
        count(*) AS history_events
    FROM before GROUP BY user_id
)"""
    return sql, [*params, as_of, as_of, as_of]


def _quantile_columns(measure: str) -> str:
    parts = [f"min({measure}) AS {measure}__min"]
    parts += [f"quantile_cont({measure}, {q}) AS {measure}__{name}" for name, q in QUANTILES]
    parts.append(f"max({measure}) AS {measure}__max")
    return ", ".join(parts)


def training_profile(store: Store, as_of: dt.datetime, filters: Filters | None = None) -> dict[str, Any]:
    """The training profile at ``as_of`` (module docstring) as JSON-ready data."""
    as_of = pd.Timestamp(as_of).to_pydatetime()
    histories, params = user_histories_sql(store, as_of, filters)
    summary = store.query_df(
        f"WITH {histories} SELECT count(*) AS users, min(first_event) AS first_event, "
        f"{', '.join(_quantile_columns(measure) for measure in HISTORY_MEASURES)} FROM histories",
        params,
    ).iloc[0]
    names = store.query_df(
        f"WITH {histories} SELECT event_name, count(*) AS events FROM before "
        "GROUP BY event_name ORDER BY events DESC, event_name LIMIT ?",
        [*params, MAX_PROFILE_EVENT_NAMES + 1],
    )
    complete = len(names) <= MAX_PROFILE_EVENT_NAMES
    names = names.head(MAX_PROFILE_EVENT_NAMES)
    first_event = summary["first_event"]
    return {
        "version": PROFILE_VERSION,
        "as_of": as_of.isoformat(),
        "first_event": None if pd.isna(first_event) else pd.Timestamp(first_event).isoformat(),
        "users": int(summary["users"]),
        "event_names": {
            str(name): int(count) for name, count in zip(names["event_name"], names["events"], strict=True)
        },
        "event_names_complete": complete,
        "attributes": segment_attributes(store),
        **{
            measure: {
                stat: (
                    None if pd.isna(summary[f"{measure}__{stat}"]) else float(summary[f"{measure}__{stat}"])
                )
                for stat in ("min", *(name for name, _ in QUANTILES), "max")
            }
            for measure in HISTORY_MEASURES
        },
    }


def write_training_profile(directory: str | Path, profile: dict[str, Any]) -> Path:
    """Add ``profile`` to ``directory/model.json`` under ``training_profile``; returns the path."""
    directory = Path(directory)
    document = json.loads((directory / MODEL_FILE).read_text(encoding="utf-8"))
    document[PROFILE_KEY] = profile
    return write_model_json(directory, document)


@dataclass(frozen=True)
class TrainingProfile:
    """What is known of a model's training data; None where the model folder does not record it.

    Attributes:
        sources: where each part came from (``model.json training_profile``, ``GBM vocabulary``,
            ``model.json data_window``, ``metrics.json``), for the report.
        event_names: the event names seen in training; None = not recorded.
        event_names_complete: False when ``event_names`` holds only the most frequent names.
        first_event, as_of: the training window ``[first_event, as_of)``.
        history_days, history_events: ``min, p01, p05, p50, p95, p99, max`` over the users.
        attributes: the ``users`` attribute columns of the training data; None = not recorded.
    """

    sources: tuple[str, ...] = ()
    event_names: tuple[str, ...] | None = None
    event_names_complete: bool = False
    first_event: pd.Timestamp | None = None
    as_of: pd.Timestamp | None = None
    history_days: dict[str, float | None] = field(default_factory=dict)
    history_events: dict[str, float | None] = field(default_factory=dict)
    attributes: tuple[str, ...] | None = None


def _timestamp(value: Any) -> pd.Timestamp | None:
    if value is None:
        return None
    try:
        moment = pd.Timestamp(value)
    except (TypeError, ValueError):
        return None
    return None if pd.isna(moment) else moment


def _read_json(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return document if isinstance(document, dict) else {}


def _model_attributes(document: dict[str, Any], vocabulary: Any, recorded: Any) -> tuple[str, ...] | None:
    """The attribute columns the model reads: its feature vocabulary's when it has one, none for a
    BTYD model (it reads events only), else the training data's (``recorded``; None = unknown)."""
    if isinstance(vocabulary, dict) and "attributes" in vocabulary:
        return tuple(str(column) for column, _ in vocabulary["attributes"])
    if document.get("kind") == "btyd":
        return ()
    return None if recorded is None else tuple(str(column) for column in recorded)


def load_training_profile(directory: str | Path) -> TrainingProfile:
    """The training profile of the model folder ``directory``, with the fallbacks of the module docstring."""
    directory = Path(directory)
    document = _read_json(directory / MODEL_FILE)
    recorded = document.get(PROFILE_KEY)
    vocabulary = (document.get("features") or {}).get("vocabulary")
    if isinstance(recorded, dict):
        return TrainingProfile(
            sources=(f"{MODEL_FILE} {PROFILE_KEY}",),
            event_names=tuple(recorded.get("event_names", {})),
            event_names_complete=bool(recorded.get("event_names_complete", False)),
            first_event=_timestamp(recorded.get("first_event")),
            as_of=_timestamp(recorded.get("as_of")),
            history_days=dict(recorded.get("history_days") or {}),
            history_events=dict(recorded.get("history_events") or {}),
            attributes=_model_attributes(document, vocabulary, recorded.get("attributes")),
        )
    sources: list[str] = []
    event_names: tuple[str, ...] | None = None
    complete = False
    if isinstance(vocabulary, dict) and "event_names" in vocabulary:
        event_names = tuple(str(name) for name in vocabulary["event_names"])
        complete = len(event_names) < MAX_EVENT_NAMES
        sources.append("GBM vocabulary")
    attributes = _model_attributes(document, vocabulary, None)
    window = document.get("data_window") if isinstance(document.get("data_window"), dict) else {}
    first_event, as_of = _timestamp(window.get("first_event")), _timestamp(window.get("as_of"))
    if first_event is not None or as_of is not None:
        sources.append(f"{MODEL_FILE} data_window")
    if first_event is None or as_of is None:
        metrics = _read_json(directory.parent / METRICS_FILE)
        run_window = metrics.get("data_window") if isinstance(metrics.get("data_window"), dict) else {}
        fit_labels = run_window.get("fit_labels") or [None]
        if first_event is None and run_window.get("first_event") is not None:
            first_event = _timestamp(run_window.get("first_event"))
            sources.append(METRICS_FILE)
        if as_of is None and fit_labels[0] is not None:
            as_of = _timestamp(fit_labels[0])
            if METRICS_FILE not in sources:
                sources.append(METRICS_FILE)
    return TrainingProfile(tuple(sources), event_names, complete, first_event, as_of, attributes=attributes)
