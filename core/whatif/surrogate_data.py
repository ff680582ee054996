"""Per-user surrogates and long-term outcomes for the surrogate index, in one DuckDB query.

The surrogate index (core/whatif/surrogate.py) needs, for every user seen by the data's end
``as_of``: when they started, the variant and propensity of an experiment where they were
assigned, a few counts over their first days (the surrogates), their long-term outcome and
whether each window has ended by ``as_of``. Everything after ``as_of`` is invisible, so the
same query run with an earlier ``as_of`` is the data as it stood then (the backtest).

Start: a user assigned in the experiment (by ``as_of``) starts at their assignment time; any
other user at their first event. Elapsed time e = (event_time - start) in days; events before
the start never count.

Surrogates, over 0 <= e < N (N = ``surrogate_days``): ``sessions`` (distinct session ids),
``clicks`` (events named ``click_event``), ``purchases`` (events named ``purchase_event``),
``revenue`` (sum, missing = 0), ``active_days`` (distinct k = floor(e), the user's own days
since start), ``events``; ``tenure_days`` = days from the first event to the start (0 when the
start is the first event). Complete when start + N days <= as_of.

Long-term outcomes (the A/B review's definitions, docs/METRICS.md):
- ``retention:D``: 1 if any event has D <= e < D + 1, else 0; observed when start + D + 1 <= as_of;
- ``revenue:D``: the sum of revenue over 0 <= e < D; observed when start + D <= as_of.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from core.errors import TenureError
from core.experiments.assignments import clean_assignments_sql
from core.population import keyed_events_sql, segment_attributes
from core.store import Store, quote_identifier
from core.whatif.users import Outcome
from core.whatif.users import parse_outcome as parse_user_outcome

SURROGATES = ("sessions", "clicks", "purchases", "revenue", "active_days", "events")
DEFAULT_OUTCOME_DAYS = 90
LongTermOutcome = Outcome
"""A long-term outcome is a per-user outcome (``core.whatif.users.Outcome``) of kind retention or revenue."""


def parse_outcome(text: str) -> Outcome:
    """``retention`` / ``revenue`` (D = 90) or ``retention:D`` / ``revenue:D``.

    Example:
        >>> parse_outcome("retention")
        Outcome(kind='retention', days=90)
    """
    raw = str(text).strip()
    head, _, argument = raw.partition(":")
    if head.strip().lower() not in ("retention", "revenue"):
        raise TenureError(
            f"outcome '{raw}' is not retention:D or revenue:D",
            "use retention:D or revenue:D with D a whole number of days, e.g. retention:90",
        )
    outcome = parse_user_outcome(f"{head}:{argument.strip() or DEFAULT_OUTCOME_DAYS}")
    if outcome.days < 1:
        raise TenureError(f"outcome '{raw}': {outcome.days} days is out of range", "use 1 day or more")
    return outcome


def attribute_columns(store: Store) -> list[str]:
    """The ``users`` columns used as model inputs: the segment attributes."""
    return segment_attributes(store)


def surrogate_frame_sql(
    store: Store,
    experiment: str,
    outcome: LongTermOutcome,
    surrogate_days: int,
    as_of: pd.Timestamp,
    outcome_end: pd.Timestamp | None = None,
    click_event: str = "click",
    purchase_event: str = "purchase",
) -> tuple[str, dict[str, Any]]:
    """The per-user SELECT (named parameters): one row per user with an event or an assignment
    by ``as_of``.

    Columns: user_id, start_time, variant, propensity (NULL for users not assigned), the
    ``SURROGATES``, tenure_days, outcome, surrogates_complete, outcome_observed (by ``as_of``),
    outcome_known (by ``outcome_end``), then the attribute columns as text.

    Args:
        as_of: the data's end as far as starts, assignments, surrogates and the training
            outcomes go.
        outcome_end: read the outcome from events up to this later time (the backtest's actual
            values); default ``as_of``.
    """
    outcome_end = as_of if outcome_end is None else max(outcome_end, as_of)
    params: dict[str, Any] = {
        "experiment": experiment,
        "as_of": as_of.to_pydatetime(),
        "end": outcome_end.to_pydatetime(),
        "sdays": surrogate_days,
        "odays": outcome.days,
        "oend": outcome.window_end_days,
        "horizon": max(surrogate_days, outcome.window_end_days),
        "click": click_event,
        "purchase": purchase_event,
    }
    assigned = (
        clean_assignments_sql()
        .replace("experiment = ?", "experiment = $experiment")
        .replace("FROM assignments WHERE", "FROM assignments WHERE assigned_time <= $as_of AND")
    )
    if outcome.kind == "retention":
        outcome_sql = "max((e >= $odays AND e < $odays + 1)::INTEGER)"
    else:
        outcome_sql = "sum(coalesce(revenue, 0)) FILTER (WHERE e < $odays)"
    window = "e < $sdays AND event_time <= $as_of"
    attributes = attribute_columns(store)
    attribute_sql = "".join(
        f", CAST(u.{quote_identifier(c)} AS VARCHAR) AS {quote_identifier(c)}" for c in attributes
    )
    sql = (
        f"WITH a AS ({assigned}), "
        f"ev AS (SELECT user_key, user_id, event_time, event_name, revenue, session_id "
        f"FROM {keyed_events_sql(store)} WHERE event_time <= $end), "
        "f AS (SELECT user_key, min(user_id) AS user_id, min(event_time) AS first_time FROM ev "
        "WHERE event_time <= $as_of GROUP BY user_key), "
        "s AS (SELECT coalesce(f.user_key, a.user_key) AS user_key, coalesce(a.user_id, f.user_id) AS user_id, "
        "coalesce(a.assigned_time, f.first_time) AS start_time, f.first_time, a.variant, a.propensity "
        "FROM f FULL OUTER JOIN a USING (user_key)), "
        "x AS (SELECT ev.user_key, ev.event_time, ev.event_name, ev.revenue, ev.session_id, "
        "epoch_us(ev.event_time - s.start_time) / 86400000000.0 AS e "
        "FROM ev JOIN s USING (user_key) "
        "WHERE ev.event_time >= s.start_time AND ev.event_time < s.start_time + to_days($horizon)), "
        "w AS (SELECT user_key, "
        f"count(DISTINCT session_id) FILTER (WHERE {window}) AS sessions, "
        f"count(*) FILTER (WHERE {window} AND event_name = $click) AS clicks, "
        f"count(*) FILTER (WHERE {window} AND event_name = $purchase) AS purchases, "
        f"sum(coalesce(revenue, 0)) FILTER (WHERE {window}) AS revenue, "
        f"count(DISTINCT floor(e)) FILTER (WHERE {window}) AS active_days, "
        f"count(*) FILTER (WHERE {window}) AS events, "
        f"{outcome_sql} AS outcome FROM x GROUP BY user_key) "
        "SELECT s.user_id, s.start_time, s.variant, s.propensity, "
        + ", ".join(f"coalesce(w.{c}, 0)::DOUBLE AS {c}" for c in SURROGATES)
        + ", coalesce(epoch_us(s.start_time - s.first_time) / 86400000000.0, 0) AS tenure_days, "
        "coalesce(w.outcome, 0)::DOUBLE AS outcome, "
        "s.start_time + to_days($sdays) <= $as_of AS surrogates_complete, "
        "s.start_time + to_days($oend) <= $as_of AS outcome_observed, "
        "s.start_time + to_days($oend) <= $end AS outcome_known"
        f"{attribute_sql} "
        "FROM s LEFT JOIN w USING (user_key) LEFT JOIN users u ON u.user_id = s.user_id "
        "ORDER BY s.user_id"
    )
    return sql, params


def surrogate_frame(
    store: Store,
    experiment: str,
    outcome: LongTermOutcome,
    surrogate_days: int,
    as_of: pd.Timestamp,
    outcome_end: pd.Timestamp | None = None,
    click_event: str = "click",
    purchase_event: str = "purchase",
) -> pd.DataFrame:
    """The frame of ``surrogate_frame_sql``."""
    sql, params = surrogate_frame_sql(
        store, experiment, outcome, surrogate_days, as_of, outcome_end, click_event, purchase_event
    )
    return store.query_df(sql, params)
