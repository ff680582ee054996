"""One user's story around an as-of date: their events before and after it, and, for models that
can say so, which events moved their score.

- **Timeline**: the user's events with ``event_time < T + H``; ``window`` is ``before`` for
  ``event_time < T`` (what the models saw) and ``after`` for ``T <= event_time < T + H`` (the
  labels' window: no ``after`` event means the user churned).
- **Attributions**: a model kind that can attribute a user's score to their events registers an
  ``Attributor`` with ``register_attributor(kind, attributor)`` when its module is imported. It
  returns one row per event before T with ``ATTRIBUTION_COLUMNS`` (``contribution``: the event's
  signed effect on the churn probability, in the model's own definition), largest effect first.
  Kinds without one (BG/NBD and GBM work on per-user aggregates, not on single events) give None.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from importlib import import_module
from pathlib import Path

import pandas as pd

from core.models.artifacts import MODEL_FILE
from core.store import Store

TIMELINE_COLUMNS = ("event_time", "event_name", "revenue", "window")
ATTRIBUTION_COLUMNS = ("event_time", "event_name", "contribution")

Attributor = Callable[[Path, Store, str, dt.datetime], pd.DataFrame]

_ATTRIBUTORS: dict[str, Attributor] = {}
_SURVIVAL: dict[str, Attributor] = {}
# Kinds whose attributor lives in a module that is imported on first use (it needs torch).
LAZY_ATTRIBUTORS = {"seq": "core.models.attribution", "gru": "core.models.attribution"}


def user_timeline(store: Store, user_id: str, as_of: dt.datetime, horizon_days: int) -> pd.DataFrame:
    """The user's events before ``as_of + horizon_days`` (module docstring), oldest first.

    Returns:
        DataFrame ``TIMELINE_COLUMNS``; ``revenue`` NULL counted as 0.
    """
    horizon_end = pd.Timestamp(as_of) + pd.Timedelta(days=int(horizon_days))
    return store.query_df(
        """
        SELECT event_time, event_name, coalesce(revenue, 0) AS revenue,
               CASE WHEN event_time < ? THEN 'before' ELSE 'after' END AS "window"
        FROM events
        WHERE user_id = ? AND event_time < ?
        ORDER BY event_time, event_name
        """,
        [pd.Timestamp(as_of).to_pydatetime(), str(user_id), horizon_end.to_pydatetime()],
    )


def register_attributor(kind: str, attributor: Attributor, survival: Attributor | None = None) -> None:
    """Make ``attributions`` (and ``user_survival`` when given) answer for models of ``kind``
    (called by the kind's module on import)."""
    _ATTRIBUTORS[kind] = attributor
    if survival is not None:
        _SURVIVAL[kind] = survival


def has_attributions(kind: str) -> bool:
    return kind in _ATTRIBUTORS or kind in LAZY_ATTRIBUTORS


def _kind(model_dir: Path) -> str | None:
    path = model_dir / MODEL_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return document.get("kind") if isinstance(document, dict) else None


def attributions(
    model_dir: str | Path, store: Store, user_id: str, as_of: dt.datetime
) -> pd.DataFrame | None:
    """Which of the user's events before ``as_of`` moved the model's score most; None when the
    model's kind has no attributions (module docstring)."""
    directory = Path(model_dir)
    kind = _kind(directory) or ""
    if kind in LAZY_ATTRIBUTORS and kind not in _ATTRIBUTORS:
        import_module(LAZY_ATTRIBUTORS[kind])  # registers itself; imports torch only when needed
    attributor = _ATTRIBUTORS.get(kind)
    if attributor is None:
        return None
    table = attributor(directory, store, str(user_id), as_of)
    order = table["contribution"].abs().sort_values(ascending=False, kind="stable").index
    return table.loc[order, list(ATTRIBUTION_COLUMNS)].reset_index(drop=True)


def user_survival(
    model_dir: str | Path, store: Store, user_id: str, as_of: dt.datetime
) -> pd.DataFrame | None:
    """``week, survival``: the user's weekly survival curve S(w) over the model's horizon, for
    model kinds that predict one (sequence models); None for the others."""
    directory = Path(model_dir)
    kind = _kind(directory) or ""
    if kind in LAZY_ATTRIBUTORS and kind not in _SURVIVAL:
        import_module(LAZY_ATTRIBUTORS[kind])
    survival = _SURVIVAL.get(kind)
    return None if survival is None else survival(directory, store, str(user_id), as_of)
