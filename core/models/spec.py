"""What a churn/LTV model is asked: the as-of date, the horizon, the activity and the population.

Definitions (docs/METRICS.md, "Churn and lifetime value models"), all times UTC (naive
timestamps, as in the store):

- **As-of date** T (``as_of``): the instant the prediction is made. Features use only events with
  ``event_time < T``; labels use only events with ``T <= event_time < T + H``.
- **Horizon** H (``horizon_days``, default 90 days): the labels' window is ``[T, T + H)``.
- **Activity**: any event, or only events whose name is in ``activity_events`` (empty = any).
- **churn(T, H)**: the user has no activity with ``T <= event_time < T + H``.
- **LTV(T, H)**: the user's revenue (sum of ``revenue``, NULL counted as 0) from events of any
  name with ``T <= event_time < T + H``; undiscounted, in the store's revenue unit.
- **Population**: the users (after the global filters) whose start (``start``: a ``StartSpec``,
  core/population.py) is before T; with ``lookback_days`` = L, only those with an activity event
  in ``[T - L, T)``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.errors import TenureError
from core.population import StartSpec

DEFAULT_HORIZON_DAYS = 90


def default_as_of(data_end: pd.Timestamp) -> dt.date:
    """The latest as-of date whose default horizon the data covers: the day the pages and hints
    offer first, so that a model trained there has its whole horizon observed."""
    return (pd.Timestamp(data_end) - pd.Timedelta(days=DEFAULT_HORIZON_DAYS)).date()


@dataclass(frozen=True)
class ModelSpec:
    """The as-of date, horizon, activity and population of a churn/LTV model (module docstring).

    Args:
        as_of: T, a naive UTC datetime (a tz-aware one is converted to UTC; an ISO string or a
            pandas Timestamp is accepted).
        horizon_days: H in whole days, at least 1.
        activity_events: the event names that count as activity; empty = any event.
        lookback_days: keep only users with an activity event in the L days before T; None = all.
        start: how each user's start is found.
    """

    as_of: dt.datetime
    horizon_days: int = DEFAULT_HORIZON_DAYS
    activity_events: tuple[str, ...] = ()
    lookback_days: int | None = None
    start: StartSpec = field(default_factory=StartSpec)

    def __post_init__(self) -> None:
        object.__setattr__(self, "as_of", _as_naive_utc(self.as_of))
        object.__setattr__(self, "horizon_days", _whole_days(self.horizon_days, "horizon_days"))
        if self.lookback_days is not None:
            object.__setattr__(self, "lookback_days", _whole_days(self.lookback_days, "lookback_days"))
        if isinstance(self.activity_events, str):
            raise TenureError(
                f"activity_events must be a tuple of names, not the string '{self.activity_events}'",
                "write activity_events=('purchase',)",
            )
        names = tuple(str(name) for name in self.activity_events)
        if any(not name for name in names):
            raise TenureError("activity_events holds an empty name", "remove it or name an event")
        object.__setattr__(self, "activity_events", names)
        if not isinstance(self.start, StartSpec):
            raise TenureError("start must be a StartSpec", "build it with StartSpec(kind, event_name)")

    @property
    def horizon_end(self) -> dt.datetime:
        """T + H: the first instant after the labels' window."""
        return self.as_of + dt.timedelta(days=self.horizon_days)

    @property
    def lookback_start(self) -> dt.datetime | None:
        """T - L, the start of the lookback window; None without a lookback."""
        return None if self.lookback_days is None else self.as_of - dt.timedelta(days=self.lookback_days)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data; ``start`` is written like the CLI flag (``event:NAME``)."""
        return {
            "as_of": self.as_of.isoformat(),
            "horizon_days": self.horizon_days,
            "activity_events": list(self.activity_events),
            "lookback_days": self.lookback_days,
            "start": f"event:{self.start.event_name}" if self.start.kind == "event" else self.start.kind,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """Inverse of ``to_dict``; missing keys take their defaults (``as_of`` is required)."""
        if "as_of" not in data:
            raise TenureError("the model spec has no as_of date", "give as_of as YYYY-MM-DDTHH:MM:SS")
        start = str(data.get("start", "first_event"))
        return cls(
            as_of=data["as_of"],
            horizon_days=data.get("horizon_days", DEFAULT_HORIZON_DAYS),
            activity_events=tuple(data.get("activity_events", ())),
            lookback_days=data.get("lookback_days"),
            start=StartSpec("event", start.removeprefix("event:"))
            if start.startswith("event:")
            else StartSpec(start),  # type: ignore[arg-type]
        )


def scoring_spec(fitted: ModelSpec, requested: ModelSpec | None) -> ModelSpec:
    """The spec a fitted model scores at: ``requested`` (None = the fitted one), which must ask for
    the horizon and activity the model was fitted on; its as-of date and population may differ."""
    if requested is None:
        return fitted
    if requested.horizon_days != fitted.horizon_days or requested.activity_events != fitted.activity_events:
        raise TenureError(
            f"the model predicts a {fitted.horizon_days}-day horizon with activity "
            f"{list(fitted.activity_events) or 'any event'}, not {requested.horizon_days} days with "
            f"{list(requested.activity_events) or 'any event'}",
            "score with the model's horizon and activity events, or fit a model for these",
        )
    return requested


def _as_naive_utc(value: Any) -> dt.datetime:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time())
    try:
        moment = pd.Timestamp(value)
    except (TypeError, ValueError) as error:
        raise TenureError(
            f"as_of is not a date and time: '{value}'", "use YYYY-MM-DDTHH:MM:SS (UTC)"
        ) from error
    if pd.isna(moment):
        raise TenureError("as_of is missing", "give the as-of date as YYYY-MM-DDTHH:MM:SS (UTC)")
    if moment.tzinfo is not None:
        moment = moment.tz_convert("UTC").tz_localize(None)
    return moment.to_pydatetime()


def _whole_days(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TenureError(f"{name} must be a whole number of days, not '{value}'", "use e.g. 90")
    if value < 1:
        raise TenureError(f"{name} must be at least 1 day, not {value}", "use e.g. 90")
    return int(value)
