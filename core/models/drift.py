"""Where scored data falls outside what the model was trained on, and users too new to score.

Definitions (docs/METRICS.md, "Ad hoc scoring of an uploaded file"), for a store being scored at
as-of date T with a model whose training profile is core/models/training_profile.py's:

- **Ignored events**: events with ``event_time >= T`` (features read events before T only).
- **Events before the training window**: events before T and before the training profile's
  ``first_event``.
- **Unknown event names**: names of events before T that are not among the training profile's
  event names, with their number of events. When the profile holds only the most frequent names
  (a GBM vocabulary), such a name is one the model has no feature for.
- **Missing attributes**: attribute columns of the training data's ``users`` table that the
  scored store's ``users`` table lacks; the model then reads them as unknown (NULL) for every user.
- **History outside training**: a scored user's ``history_days`` or ``history_events`` (as in the
  training profile, at T) below the training minimum (shorter) or above the training maximum
  (longer).
- **Flags** of a scored user (one row per user and flag):
  - ``few_events``: fewer than ``min_events`` (default ``MIN_EVENTS`` = 2) events before T;
  - ``short_history``: first event less than ``min_history_days`` (default ``MIN_HISTORY_DAYS``
    = 7) days before T.
  Such a user still gets scores: the flag says they rest on too little history to trust.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd

from core.models.training_profile import HISTORY_MEASURES, TrainingProfile, user_histories_sql
from core.population import segment_attributes
from core.store import Store

MIN_EVENTS = 2
MIN_HISTORY_DAYS = 7.0
FLAG_COLUMNS = ("user_id", "flag", "reason")
FLAGS = ("few_events", "short_history")
MEASURE_LABELS = {"history_days": "days of history", "history_events": "events of history"}


@dataclass(frozen=True)
class HistoryCheck:
    """One history measure of the scored users against its training range.

    Attributes:
        measure: ``history_days`` or ``history_events``.
        training_min, training_max: the range seen in training.
        median: the scored users' median.
        users_shorter, users_longer: scored users below the minimum / above the maximum.
    """

    measure: str
    training_min: float
    training_max: float
    median: float
    users_shorter: int
    users_longer: int


@dataclass(frozen=True)
class DriftReport:
    """What the scored data holds that the model did not see (module docstring).

    Attributes:
        as_of: T.
        profile: the model's training profile the checks compared with.
        events_after_as_of: ignored events (``event_time >= T``).
        events_before_training: events before T and before the training window (None: the
            window's start is not recorded).
        unknown_events: DataFrame ``event_name, events`` of unknown names, most events first
            (empty when every name is known or the names are not recorded).
        names_checked: whether the training event names were recorded.
        history: the checks of ``HISTORY_MEASURES`` the profile records.
        missing_attributes: training attribute columns the scored users lack.
    """

    as_of: dt.datetime
    profile: TrainingProfile
    events_after_as_of: int
    events_before_training: int | None
    unknown_events: pd.DataFrame
    names_checked: bool
    history: tuple[HistoryCheck, ...]
    missing_attributes: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        """One sentence per finding, for the CLI's stderr and the page."""
        as_of = pd.Timestamp(self.as_of).isoformat()
        lines = []
        if self.events_after_as_of:
            lines.append(f"{self.events_after_as_of:,} events on or after the as-of date {as_of} are ignored")
        if self.events_before_training:
            lines.append(
                f"{self.events_before_training:,} events are before the model's training window "
                f"(its first event: {self.profile.first_event.isoformat()})"
            )
        if not self.names_checked:
            lines.append("event names not checked: the model folder records none")
        elif len(self.unknown_events):
            shown = ", ".join(
                f"{name} ({int(count):,})"
                for name, count in self.unknown_events.head(5).itertuples(index=False)
            )
            more = ", ..." if len(self.unknown_events) > 5 else ""
            seen = (
                "seen in training" if self.profile.event_names_complete else "among the model's event names"
            )
            lines.append(f"{len(self.unknown_events):,} event names not {seen}: {shown}{more}")
        for check in self.history:
            label = MEASURE_LABELS[check.measure]
            if check.users_shorter:
                lines.append(
                    f"{check.users_shorter:,} users have fewer {label} than any training user "
                    f"(training minimum {check.training_min:,.1f})"
                )
            if check.users_longer:
                lines.append(
                    f"{check.users_longer:,} users have more {label} than any training user "
                    f"(training maximum {check.training_max:,.1f})"
                )
        if self.missing_attributes:
            lines.append(
                f"the model was trained with the users' {', '.join(self.missing_attributes)}; the file "
                "gives none, so they are unknown for every user (give a users file with them)"
            )
        if not self.history:
            lines.append("history lengths not checked: the model folder records no training histories")
        return lines


def drift_report(store: Store, profile: TrainingProfile, as_of: dt.datetime) -> DriftReport:
    """Compare the events of ``store`` at ``as_of`` with ``profile`` (module docstring)."""
    as_of = pd.Timestamp(as_of).to_pydatetime()
    first = None if profile.first_event is None else profile.first_event.to_pydatetime()
    after, before_training = store.query_one(
        "SELECT count(*) FILTER (WHERE event_time >= ?), "
        "count(*) FILTER (WHERE event_time < ? AND event_time < CAST(? AS TIMESTAMP)) FROM events",
        [as_of, as_of, first],
    )
    names_checked = profile.event_names is not None
    if names_checked:
        unknown = store.query_df(
            "SELECT event_name, count(*) AS events FROM events "
            "WHERE event_time < ? AND NOT list_contains(CAST(? AS VARCHAR[]), event_name) "
            "GROUP BY event_name ORDER BY events DESC, event_name",
            [as_of, list(profile.event_names or ())],
        )
    else:
        unknown = pd.DataFrame({"event_name": pd.Series(dtype=object), "events": pd.Series(dtype="int64")})
    checks = []
    histories, params = user_histories_sql(store, as_of)
    for measure in HISTORY_MEASURES:
        recorded = getattr(profile, measure)
        low, high = recorded.get("min"), recorded.get("max")
        if low is None or high is None:
            continue
        row = store.query_one(
            f"WITH {histories} SELECT coalesce(median({measure}), 'NaN'), "
            f"count(*) FILTER (WHERE {measure} < ?), count(*) FILTER (WHERE {measure} > ?) FROM histories",
            [*params, low, high],
        )
        checks.append(HistoryCheck(measure, float(low), float(high), float(row[0]), int(row[1]), int(row[2])))
    return DriftReport(
        as_of=as_of,
        profile=profile,
        events_after_as_of=int(after),
        events_before_training=None if first is None else int(before_training),
        unknown_events=unknown.astype({"events": "int64"}),
        names_checked=names_checked,
        history=tuple(checks),
        missing_attributes=tuple(
            column for column in profile.attributes or () if column not in set(segment_attributes(store))
        ),
    )


def history_flags(
    store: Store,
    as_of: dt.datetime,
    min_events: int = MIN_EVENTS,
    min_history_days: float = MIN_HISTORY_DAYS,
) -> pd.DataFrame:
    """Flags of the users with too little history at ``as_of`` (module docstring).

    Returns:
        DataFrame ``FLAG_COLUMNS``, one row per flagged user and flag, sorted by user and flag.
    """
    as_of = pd.Timestamp(as_of).to_pydatetime()
    histories, params = user_histories_sql(store, as_of)
    return store.query_df(
        f"""WITH {histories}
SELECT user_id, 'few_events' AS flag,
    printf('%d event(s) before the as-of date; at least %d needed', history_events, CAST(? AS BIGINT))
        AS reason
FROM histories WHERE history_events < ?
UNION ALL
SELECT user_id, 'short_history' AS flag,
    printf('first event %.1f days before the as-of date; at least %g needed', history_days, CAST(? AS DOUBLE))
        AS reason
FROM histories WHERE history_days < ?
ORDER BY user_id, flag""",
        [*params, min_events, min_events, min_history_days, min_history_days],
    ).reset_index(drop=True)
