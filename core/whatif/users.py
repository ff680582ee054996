"""Per-user outcomes, propensities and pre-assignment features of one experiment, in one query.

The what-if estimators (core/whatif/policy_value.py) need, for every assigned user: the variant
they got and its probability (``assignments.propensity``), their outcome measured from their own
assignment time, and features known at assignment time for the outcome model. All of it comes
from one DuckDB query built on the A/B review's per-user SQL (core/experiments/metrics.py), so an
outcome here means exactly what the same metric means in ``python -m core ab``.

Outcomes (elapsed time e = event_time - assigned_time, in days; the data's end is the latest
event time in the store):
- ``retention:D``: 1 if any event has D <= e < D + 1, else 0;
- ``revenue:D``: the sum of revenue with 0 <= e < D;
- ``events:D``: the number of events with 0 <= e < D;
- ``click_rate:D``: a ratio outcome: the clicks (sum of ``recommendations.reward``) and the
  recommendation slots shown (rows of ``recommendations``) with 0 <= e < D, in the columns
  ``outcome`` and ``denominator``; the policy value is a ratio of means, clicks per shown slot.
  ``click_rate:all`` counts every slot from assignment to the data's end (no user is incomplete):
  the simulator's ``truth.policy_values.click_rate`` is defined that way.
A user whose window has not ended by the data's end (assigned_time + D + 1 days for retention,
assigned_time + D days for revenue and events) is *incomplete*: left out of every estimate and
counted (the incomplete-window rule of docs/METRICS.md).

Features (all at assignment time, so the treatment cannot have changed them):
- every text column of ``users`` except ``user_id`` one-hot encoded (its ``MAX_LEVELS`` most
  common values among the experiment's users; other values and NULL are the all-zero level);
- over the ``PRE_PERIOD_DAYS`` days before assignment: log(1 + events), log(1 + distinct
  sessions), log(1 + revenue), and log(1 + days since the user's first event before assignment)
  (0 for a user with no earlier event), plus a 0/1 flag for "any event before assignment".

Time to churn from assignment (for core/whatif/survival_ipw.py) uses the inactivity rule of
core/survival.py: ``last`` = the latest event at or after assignment (the assignment time when
there is none); churned at ``last`` if ``last <= data end - inactivity days``, else censored at
the data's end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import pandas as pd

from core.errors import TenureError
from core.experiments.assignments import clean_assignments_sql, experiment_names
from core.experiments.metrics import MAX_RETENTION_DAY, Design, MetricSpec, per_user_sql
from core.population import keyed_events_sql
from core.store import Store, quote_identifier

OutcomeKind = Literal["retention", "revenue", "events", "click_rate"]
OUTCOME_KINDS: tuple[str, ...] = ("retention", "revenue", "events", "click_rate")
WHOLE_PERIOD = "all"
PRE_PERIOD_DAYS = 28
MAX_LEVELS = 30
DEFAULT_INACTIVITY_DAYS = 30.0
_MICROSECONDS_PER_DAY = 86_400_000_000
USER_COLUMNS = (
    "user_id",
    "variant",
    "assigned_time",
    "propensity",
    "outcome",
    "eligible",
    "duration_days",
    "churned",
)


@dataclass(frozen=True)
class Outcome:
    """A per-user outcome: ``retention:D``, ``revenue:D``, ``events:D`` or ``click_rate:D``.

    Attributes:
        kind: retention, revenue, events or click_rate.
        days: D (the retention day, or the window's length in days); 0 for ``click_rate:all``
            (from assignment to the data's end).
    """

    kind: OutcomeKind
    days: int

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.days or WHOLE_PERIOD}"

    def design(self, experiment: str) -> Design:
        """The A/B review's design that measures this outcome (metric 0).

        ``click_rate`` is measured on ``recommendations``, not events: its design only gives
        the assigned users' rows (events:D without a pre-period, the cheapest pass).
        """
        if self.kind == "click_rate":
            return Design(experiment, (MetricSpec("events"),), days=max(self.days, 1), pre_period=False)
        if self.kind == "retention":
            return Design(experiment, (MetricSpec("retention", str(self.days)),), days=1)
        return Design(experiment, (MetricSpec(self.kind),), days=self.days)

    @property
    def is_rate(self) -> bool:
        """A 0/1 outcome per user (retention), as opposed to an amount."""
        return self.kind == "retention"

    @property
    def is_ratio(self) -> bool:
        """A ratio of per-user sums (click_rate): the frame has a ``denominator`` column."""
        return self.kind == "click_rate"

    @property
    def window_end_days(self) -> int:
        """Days after assignment by which the window has ended (0: at assignment, always)."""
        return self.days + 1 if self.kind == "retention" else self.days

    def label(self) -> str:
        if self.kind == "retention":
            return f"day-{self.days} retention"
        if self.kind == "click_rate":
            window = f"over {self.days} days" if self.days else "to the data's end"
            return f"clicks per shown recommendation {window}"
        return f"{self.kind} per user over {self.days} days"


def parse_outcome(text: str) -> Outcome:
    """``retention:30`` -> Outcome('retention', 30); ``revenue:90``; ``events:14``; ``click_rate:30``;
    ``click_rate:all`` -> Outcome('click_rate', 0).

    Example:
        >>> parse_outcome("revenue:90")
        Outcome(kind='revenue', days=90)
        >>> parse_outcome("click_rate:all").name
        'click_rate:all'
    """
    raw = str(text).strip()
    head, _, argument = raw.partition(":")
    head = head.strip().lower()
    argument = argument.strip().lower()
    hint = (
        "use retention:D, revenue:D, events:D or click_rate:D with D a whole number of days, e.g. "
        "retention:30 (click_rate:all: to the data's end)"
    )
    if head == "click_rate" and argument == WHOLE_PERIOD:
        return Outcome("click_rate", 0)
    if head not in OUTCOME_KINDS or not argument.isdigit():
        raise TenureError(f"outcome '{raw}' is not retention:D, revenue:D, events:D or click_rate:D", hint)
    days = int(argument)
    if (head != "retention" and days < 1) or days > MAX_RETENTION_DAY:
        raise TenureError(f"outcome '{raw}': {days} days is out of range", hint)
    return Outcome(head, days)  # type: ignore[arg-type]


class UserData(NamedTuple):
    """The per-user frame of one experiment and what its columns are.

    Attributes:
        frame: one row per clean assigned user, ordered by user_id: ``USER_COLUMNS``, then
            ``denominator`` for a ratio outcome (click_rate: the slots shown), ``target`` when a target was given, the attribute columns, then the feature columns.
        variants: the experiment's variants, in sort order.
        attributes: the ``users`` columns used (as text), in the frame under their own names.
        features: the feature columns of the frame (``x0, x1, ...``).
        feature_names: what each feature is, in words (``country=US``, ``log1p_pre_events``).
    """

    frame: pd.DataFrame
    variants: tuple[str, ...]
    attributes: tuple[str, ...]
    features: tuple[str, ...]
    feature_names: tuple[str, ...]

    @property
    def incomplete(self) -> int:
        """Users left out because their outcome's window has not ended by the data's end."""
        return int((~self.frame["eligible"]).sum())


def attribute_columns(store: Store) -> list[str]:
    """The ``users`` columns a rule or the outcome model may use: all but the id and signup time."""
    return [c for c in store.column_names("users") if c not in ("user_id", "signup_time")]


def experiment_variants(store: Store, experiment: str) -> tuple[str, ...]:
    """The variants of ``experiment`` among its clean users; a clear error when it has none."""
    frame = store.query_df(
        f"SELECT DISTINCT variant FROM ({clean_assignments_sql()}) ORDER BY 1", [experiment]
    )
    if frame.empty:
        known = experiment_names(store)
        raise TenureError(
            f"experiment '{experiment}' has no assigned users in the assignments table",
            f"choose one of: {', '.join(known)}" if known else "load an assignments file first",
        )
    return tuple(str(v) for v in frame["variant"])


def _levels(store: Store, experiment: str, attributes: list[str]) -> dict[str, list[str]]:
    """The most common values of each attribute among the experiment's users (one query each)."""
    levels: dict[str, list[str]] = {}
    for column in attributes:
        frame = store.query_df(
            f"SELECT CAST(u.{quote_identifier(column)} AS VARCHAR) AS level, count(*) AS users "
            f"FROM ({clean_assignments_sql()}) a JOIN users u USING (user_id) "
            "WHERE level IS NOT NULL GROUP BY level ORDER BY users DESC, level LIMIT ?",
            [experiment, MAX_LEVELS],
        )
        levels[column] = [str(v) for v in frame["level"]]
    return levels


def user_data_sql(
    store: Store,
    experiment: str,
    outcome: Outcome,
    target_sql: tuple[str, dict[str, Any]] | None = None,
    inactivity_days: float = DEFAULT_INACTIVITY_DAYS,
    segments: pd.DataFrame | None = None,
) -> tuple[str, dict[str, Any], list[str], list[str]]:
    """The per-user SELECT, its named parameters, the attribute columns and the feature names.

    Args:
        target_sql: an SQL expression over the ``users`` row (alias ``u``) and the segments row
            (alias ``seg``) giving the variant a policy assigns, with its parameters
            (core/whatif/rules.py builds it); None for none.
        segments: ``user_id`` and text columns (core/whatif/segments.py) the target may read
            as ``seg.<column>``; they join the query as bound lists, so the users a rule targets
            still come from this one query. Not features of the outcome model.
    """
    design = outcome.design(experiment)
    outcome_sql, params = per_user_sql(store, design)
    params = {
        **params,
        "pre_days": PRE_PERIOD_DAYS,
        "window_end": outcome.window_end_days,
        "inactivity_us": round(inactivity_days * _MICROSECONDS_PER_DAY),
    }
    attributes = attribute_columns(store)
    levels = _levels(store, experiment, attributes)
    events = keyed_events_sql(store)
    pre = "ev.event_time >= a.assigned_time - to_days($pre_days) AND ev.event_time < a.assigned_time"
    activity = (
        "SELECT a.user_key, "
        f"count(*) FILTER (WHERE {pre}) AS pre_events, "
        f"count(DISTINCT ev.session_id) FILTER (WHERE {pre}) AS pre_sessions, "
        f"coalesce(sum(ev.revenue) FILTER (WHERE {pre}), 0) AS pre_revenue, "
        "min(ev.event_time) FILTER (WHERE ev.event_time < a.assigned_time) AS first_time, "
        "max(ev.event_time) FILTER (WHERE ev.event_time >= a.assigned_time) AS last_time "
        f"FROM {events} ev JOIN a ON ev.user_key = a.user_key GROUP BY a.user_key"
    )
    names = ["log1p_pre_events", "log1p_pre_sessions", "log1p_pre_revenue", "log1p_days_since_first"]
    names.append("any_event_before")
    features = [
        "ln(1 + coalesce(t.pre_events, 0))",
        "ln(1 + coalesce(t.pre_sessions, 0))",
        "ln(1 + greatest(coalesce(t.pre_revenue, 0), 0))",
        "ln(1 + coalesce(epoch_us(a.assigned_time - t.first_time) / 86400000000.0, 0))",
        "(t.first_time IS NOT NULL)",
    ]
    for column in attributes:
        for level in levels[column]:
            key = f"level{len(params)}"
            params[key] = level
            features.append(f"(u.{quote_identifier(column)} = ${key})")
            names.append(f"{column}={level}")
    last = "greatest(coalesce(t.last_time, a.assigned_time), a.assigned_time)"
    churned = f"(epoch_us({last}) <= epoch_us(b.data_end) - $inactivity_us)"
    selected = [
        "o.user_id",
        "o.variant",
        "o.assigned_time",
        "a.propensity",
        "o.m0 AS outcome",
        "(o.ok0 AND o.assigned_time + to_days($window_end) <= b.data_end) AS eligible",
        f"(epoch_us(CASE WHEN {churned} THEN {last} ELSE b.data_end END) - epoch_us(a.assigned_time)) "
        f"/ {_MICROSECONDS_PER_DAY}.0 AS duration_days",
        f"{churned} AS churned",
    ]
    ratio = ""
    if outcome.is_ratio:
        selected[4] = "coalesce(r.clicks, 0)::DOUBLE AS outcome"
        selected.append("coalesce(r.slots, 0)::DOUBLE AS denominator")
        ratio = f", r AS ({_clicks_sql(outcome)})"
    if target_sql is not None:
        expression, target_params = target_sql
        params.update(target_params)
        selected.append(f"{expression} AS target")
    selected += [f"u.{quote_identifier(c)} AS {quote_identifier(c)}" for c in attributes]
    selected += [f"coalesce(({f})::DOUBLE, 0) AS x{i}" for i, f in enumerate(features)]
    typed = ", ".join(
        f"CAST(any_value({quote_identifier(c)}) AS VARCHAR) AS {quote_identifier(c)}" for c in attributes
    )
    users = f"(SELECT user_id{', ' + typed if typed else ''} FROM users GROUP BY user_id)"
    segment_join = ""
    if segments is not None:
        columns = [c for c in segments.columns if c != "user_id"]
        params["segment_user_id"] = segments["user_id"].astype(str).tolist()
        unnested = ["unnest($segment_user_id) AS user_id"]
        for index, column in enumerate(columns):
            params[f"segment_{index}"] = [None if pd.isna(v) else str(v) for v in segments[column]]
            unnested.append(f"unnest(CAST($segment_{index} AS VARCHAR[])) AS {quote_identifier(column)}")
        segment_join = f" LEFT JOIN (SELECT {', '.join(unnested)}) seg ON seg.user_id = o.user_id"
    sql = (
        f"WITH a AS ({clean_assignments_sql().replace('experiment = ?', 'experiment = $experiment')}), "
        f"o AS ({outcome_sql}), "
        "b AS (SELECT max(event_time) AS data_end FROM events), "
        f"t AS ({activity}){ratio} "
        f"SELECT {', '.join(selected)} FROM o JOIN a USING (user_key) CROSS JOIN b "
        f"LEFT JOIN t USING (user_key){' LEFT JOIN r USING (user_key)' if ratio else ''} "
        f"LEFT JOIN {users} u ON u.user_id = o.user_id{segment_join} ORDER BY o.user_id"
    )
    return sql, params, attributes, names


def _clicks_sql(outcome: Outcome) -> str:
    """Per assigned user (CTE ``a``): clicks and slots shown in the outcome's window.

    A slot is a row of ``recommendations``; a click its ``reward`` (NULL counts as 0). Bound
    parameter ``$window_end``: the window's days, 0 for no end (``click_rate:all``).
    """
    window = "rec.rec_time >= a.assigned_time AND ($window_end = 0 OR rec.rec_time < a.assigned_time + to_days($window_end))"
    return (
        "SELECT a.user_key, coalesce(sum(rec.reward), 0) AS clicks, count(*) AS slots "
        f"FROM recommendations rec JOIN a ON rec.user_id = a.user_id WHERE {window} GROUP BY a.user_key"
    )


def user_data(
    store: Store,
    experiment: str,
    outcome: Outcome,
    target_sql: tuple[str, dict[str, Any]] | None = None,
    inactivity_days: float = DEFAULT_INACTIVITY_DAYS,
    segments: pd.DataFrame | None = None,
) -> UserData:
    """Run ``user_data_sql``: one row per clean assigned user of ``experiment``."""
    variants = experiment_variants(store, experiment)
    sql, params, attributes, names = user_data_sql(
        store, experiment, outcome, target_sql, inactivity_days, segments
    )
    frame = store.query_df(sql, params)
    frame["eligible"] = frame["eligible"].fillna(False).astype(bool)
    frame["churned"] = frame["churned"].astype(bool)
    features = tuple(f"x{i}" for i in range(len(names)))
    return UserData(frame, variants, tuple(attributes), features, tuple(names))
