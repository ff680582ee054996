"""What-if scenario view: retained users and revenue of the current user base over the next H days,
under the current strategy and under a chosen one.

Definitions (docs/METRICS.md, "What-if: scenario view"); T is the data's end (the latest event):

- **Current base**: users with an event in ``(T - A, T]`` (A = ``active_days``, 30 by default,
  the churned threshold of the lifecycle stages in core/lifecycle.py: a user idle for 30 days is
  churned there, so the base is every user not churned at T).
- **Per-user baseline** (what each base user does over ``(T, T + H]`` under the current
  strategy), from one of:
  - ``observed``: the same base one horizon earlier, at T0 = T - H: users with an event in
    ``(T0 - A, T0]``; their share with any event in ``(T0, T]`` (retained) and their mean revenue
    there. Every current base user gets these two numbers (the past horizon is taken to repeat).
  - a saved churn/LTV model with horizon H (``core.models.training.score_model`` at T): each base
    user's ``1 - churn_prob`` and ``ltv_pred`` (the model's churn is "no activity in the next H
    days", the same retained as above). Base users the model cannot score (no event before T)
    get the mean of the scored users; their number is reported.
- **Effect**: a relative effect e of the chosen strategy on each figure, with an interval: the
  estimated per-user what-if (core/whatif/user_policies.py) turned into a ratio by
  ``relative_effect``, or a number the user typed (an assumption).
- **Reach** r: the share of the base the chosen strategy reaches (1 = everyone).
- **Projection**: retained users = sum_i p_i under the current strategy and
  sum_i min(1, p_i (1 + r e)) under the chosen one; revenue = sum_i v_i and
  sum_i max(0, v_i (1 + r e)). The interval of a projected figure is the figure at the effect's
  interval ends (the baseline is taken as known: only the effect's uncertainty is propagated).

Every input and output carries ``source``: ``estimated`` (measured from the data, a model or an
experiment) or ``assumption`` (typed in by the user, or computed from something typed in).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd

from core.errors import TenureError
from core.models.training import score_model
from core.store import Store
from core.whatif.user_policies import UserPolicyValue

ESTIMATED = "estimated"
ASSUMPTION = "assumption"
OBSERVED = "observed"
DEFAULT_HORIZON_DAYS = 90
DEFAULT_ACTIVE_DAYS = 30
LOGGED = "logged"
BASELINE_COLUMNS = ("user_id", "retained_prob", "revenue")
INPUT_COLUMNS = ("input", "value", "ci_low", "ci_high", "source", "note")
PROJECTION_COLUMNS = ("figure", "strategy", "value", "ci_low", "ci_high", "source")
STRATEGIES = ("current", "chosen", "difference")

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class BaselineSpec:
    """Which users and which per-user baseline.

    Attributes:
        horizon_days: H, the projection's horizon.
        active_days: A, the base is every user with an event in the last A days.
        model_dir: a saved model folder with horizon H, or None for the observed baseline.
    """

    horizon_days: int = DEFAULT_HORIZON_DAYS
    active_days: int = DEFAULT_ACTIVE_DAYS
    model_dir: str | None = None

    def __post_init__(self) -> None:
        for name in ("horizon_days", "active_days"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise TenureError(f"{name} must be a whole number of days, at least 1, not '{value}'")


@dataclass(frozen=True)
class Effect:
    """A relative effect of the chosen strategy against the current one (0.05 = +5%).

    Attributes:
        relative: the point value.
        ci_low, ci_high: its interval (equal to ``relative`` for a typed-in number).
        source: ``estimated`` or ``assumption``.
        note: where it comes from, in words.
    """

    relative: float
    ci_low: float
    ci_high: float
    source: str
    note: str = ""

    @classmethod
    def assumed(cls, relative: float, note: str = "typed in") -> Effect:
        return cls(float(relative), float(relative), float(relative), ASSUMPTION, note)


class Baseline(NamedTuple):
    """The current base and each user's baseline figures.

    Attributes:
        users: ``BASELINE_COLUMNS``, one row per base user.
        as_of: T, the data's end.
        source: ``observed`` or the model folder.
        note: how the baseline was measured, in words.
        filled: base users given the scored users' mean (model baseline only).
    """

    users: pd.DataFrame
    as_of: pd.Timestamp
    source: str
    note: str
    filled: int = 0


class Scenario(NamedTuple):
    """The projection with its inputs: ``INPUT_COLUMNS`` and ``PROJECTION_COLUMNS`` frames."""

    inputs: pd.DataFrame
    projection: pd.DataFrame


def _data_end(store: Store) -> pd.Timestamp:
    end = store.data_end()
    if end is None:
        raise TenureError("the store has no events", "load events before projecting a scenario")
    return end


def current_base(store: Store, active_days: int = DEFAULT_ACTIVE_DAYS) -> pd.DataFrame:
    """The user ids with an event in ``(T - active_days, T]``, T the data's end, sorted."""
    return store.query_df(
        "WITH b AS (SELECT max(event_time) AS data_end FROM events) "
        "SELECT DISTINCT e.user_id FROM events e CROSS JOIN b "
        "WHERE e.event_time > b.data_end - to_days(CAST($active AS INTEGER)) ORDER BY e.user_id",
        {"active": int(active_days)},
    )


def observed_rates(store: Store, spec: BaselineSpec) -> tuple[int, float, float]:
    """(users, retained share, revenue per user) of the base one horizon before the data's end,
    over the following horizon (module docstring)."""
    first, end = store.query_one("SELECT min(event_time), max(event_time) FROM events")
    if first is None:
        raise TenureError("the store has no events", "load events before projecting a scenario")
    needed = pd.Timedelta(days=spec.horizon_days + spec.active_days)
    if pd.Timestamp(end) - pd.Timestamp(first) < needed:
        raise TenureError(
            f"the events span {(pd.Timestamp(end) - pd.Timestamp(first)).days} days, fewer than the "
            f"horizon ({spec.horizon_days}) plus the active window ({spec.active_days}) that the observed "
            "baseline needs",
            "shorten the horizon or the active window, or use a saved model's scores",
        )
    users, retained, revenue = store.query_one(
        """WITH b AS (SELECT max(event_time) - to_days(CAST($horizon AS INTEGER)) AS t0 FROM events),
        past AS (
            SELECT DISTINCT e.user_id FROM events e CROSS JOIN b
            WHERE e.event_time > b.t0 - to_days(CAST($active AS INTEGER)) AND e.event_time <= b.t0),
        later AS (
            SELECT e.user_id, sum(coalesce(e.revenue, 0)) AS revenue FROM events e CROSS JOIN b
            WHERE e.event_time > b.t0 AND e.event_time <= b.t0 + to_days(CAST($horizon AS INTEGER))
            GROUP BY e.user_id)
        SELECT count(*), count(l.user_id), coalesce(sum(l.revenue), 0)
        FROM past p LEFT JOIN later l USING (user_id)""",
        {"horizon": spec.horizon_days, "active": spec.active_days},
    )
    if not users:
        raise TenureError(
            f"no user had an event in the {spec.active_days} days before {spec.horizon_days} days before "
            "the data's end",
            "shorten the horizon or lengthen the active window",
        )
    return int(users), float(retained) / users, float(revenue) / users


def baseline(store: Store, spec: BaselineSpec, progress: Progress | None = None) -> Baseline:
    """The current base with each user's baseline (module docstring)."""
    as_of = _data_end(store)
    base = current_base(store, spec.active_days)
    if spec.model_dir is None:
        users, retained, revenue = observed_rates(store, spec)
        frame = base.assign(retained_prob=retained, revenue=revenue)
        t0 = (as_of - pd.Timedelta(days=spec.horizon_days)).date().isoformat()
        note = (
            f"observed: of the {users:,} users active in the {spec.active_days} days before {t0}, "
            f"{retained:.1%} had an event in the next {spec.horizon_days} days, with {revenue:,.2f} "
            "revenue per user"
        )
        return Baseline(frame[list(BASELINE_COLUMNS)], as_of, OBSERVED, note)
    scores = score_model(
        store,
        spec.model_dir,
        as_of.to_pydatetime(),
        progress=progress,
        users=base["user_id"].astype(str).tolist(),
    )
    if scores.empty:
        raise TenureError(
            f"the model in {spec.model_dir} scored none of the {len(base):,} base users",
            "use the observed baseline, or a model trained on this store",
        )
    scored = pd.DataFrame(
        {
            "user_id": scores["user_id"].astype(str),
            "retained_prob": 1.0 - scores["churn_prob"].to_numpy(dtype=float),
            "revenue": scores["ltv_pred"].to_numpy(dtype=float),
        }
    )
    frame = base.assign(user_id=base["user_id"].astype(str)).merge(scored, on="user_id", how="left")
    filled = int(frame["retained_prob"].isna().sum())
    frame = frame.fillna(
        {"retained_prob": scored["retained_prob"].mean(), "revenue": scored["revenue"].mean()}
    )
    note = f"model scores: each user's 1 - churn_prob and ltv_pred from {spec.model_dir}"
    if filled:
        note += f"; {filled:,} users the model could not score get the scored users' mean"
    return Baseline(frame[list(BASELINE_COLUMNS)], as_of, str(spec.model_dir), note, filled)


def relative_effect(result: UserPolicyValue, versus: str = LOGGED, estimator: str = "aipw") -> Effect:
    """The target's effect on ``result``'s outcome, relative to ``versus``.

    ``versus`` is ``logged`` (the mean outcome as logged: the experiment's own assignment) or a
    variant W (the policy "everyone gets W"). Against a variant the interval is the difference's
    own (it accounts for the two estimates sharing users) divided by W's value; against the logged
    mean it is the target's interval divided by that mean. The denominator is taken as known.
    """
    if versus == LOGGED:
        reference = float(result.logged_value)
        estimate = result.estimate(estimator)
        value, low, high = (
            estimate.value - reference,
            estimate.ci_low - reference,
            estimate.ci_high - reference,
        )
        note = f"{estimator} estimate of {result.target} / logged mean - 1 ({result.outcome})"
    elif result.target == versus:
        return Effect(0.0, 0.0, 0.0, ESTIMATED, f"{result.target} is the current strategy")
    else:
        policies = result.policies
        chosen = policies[(policies["policy"] == f"everyone {versus}") & (policies["estimator"] == estimator)]
        differences = result.differences
        row = differences[
            (differences["policy"] == f"{result.target} - {versus}") & (differences["estimator"] == estimator)
        ]
        if chosen.empty or row.empty:
            raise TenureError(
                f"no {estimator} estimate of '{result.target}' against 'everyone {versus}' for {result.outcome}",
                "compare with the logged assignment or another variant",
            )
        reference = float(chosen["value"].iloc[0])
        value, low, high = (float(row[column].iloc[0]) for column in ("value", "ci_low", "ci_high"))
        note = f"{estimator} difference {result.target} - everyone {versus} / everyone {versus} ({result.outcome})"
    if not np.isfinite(reference) or reference <= 0:
        raise TenureError(
            f"the reference value of {result.outcome} is {reference:g}: no relative effect",
            "type the effect in as an assumption instead",
        )
    return Effect(value / reference, low / reference, high / reference, ESTIMATED, note)


def _scaled(values: np.ndarray, multiplier: float, cap: float | None) -> float:
    scaled = np.maximum(values * multiplier, 0.0)
    if cap is not None:
        scaled = np.minimum(scaled, cap)
    return float(scaled.sum())


def project(
    users: pd.DataFrame,
    retention: Effect,
    revenue: Effect,
    reach: float = 1.0,
    reach_source: str = ESTIMATED,
    horizon_days: int = DEFAULT_HORIZON_DAYS,
) -> pd.DataFrame:
    """``PROJECTION_COLUMNS``: for retained users and revenue, the current, chosen and difference rows.

    Args:
        users: ``BASELINE_COLUMNS`` (one row per base user).
        retention, revenue: the relative effects on each user's retained probability and revenue.
        reach: the share of the base the chosen strategy reaches, in [0, 1].
        reach_source: ``assumption`` when the reach was typed in.
    """
    if not 0.0 <= reach <= 1.0:
        raise TenureError(f"reach {reach} is not a share between 0 and 1", "use e.g. 0.5 for half the base")
    rows = []
    figures = (
        (f"users retained (any event in the next {horizon_days} days)", "retained_prob", retention, 1.0),
        (f"revenue over the next {horizon_days} days", "revenue", revenue, None),
    )
    for figure, column, effect, cap in figures:
        values = users[column].to_numpy(dtype=float)
        current = float(values.sum())
        chosen = [
            _scaled(values, 1.0 + reach * e, cap) for e in (effect.relative, effect.ci_low, effect.ci_high)
        ]
        low, high = min(chosen[1:]), max(chosen[1:])
        source = ASSUMPTION if ASSUMPTION in (effect.source, reach_source) else ESTIMATED
        rows.append((figure, "current", current, current, current, ESTIMATED))
        rows.append((figure, "chosen", chosen[0], low, high, source))
        rows.append((figure, "difference", chosen[0] - current, low - current, high - current, source))
    return pd.DataFrame(rows, columns=list(PROJECTION_COLUMNS))


def scenario(
    base: Baseline,
    retention: Effect,
    revenue: Effect,
    reach: float = 1.0,
    reach_source: str = ESTIMATED,
    horizon_days: int = DEFAULT_HORIZON_DAYS,
) -> Scenario:
    """The projection and the table of every input it used, each with its source."""
    users = base.users
    reach_note = "every user of the base" if reach_source == ESTIMATED else "typed in"
    inputs = [
        (
            "users in the current base",
            float(len(users)),
            np.nan,
            np.nan,
            ESTIMATED,
            f"active as of {base.as_of}",
        ),
        (
            "mean baseline retained probability",
            float(users["retained_prob"].mean()) if len(users) else np.nan,
            np.nan,
            np.nan,
            ESTIMATED,
            base.note,
        ),
        (
            "mean baseline revenue per user",
            float(users["revenue"].mean()) if len(users) else np.nan,
            np.nan,
            np.nan,
            ESTIMATED,
            base.note,
        ),
        (
            "relative effect on retention",
            retention.relative,
            retention.ci_low,
            retention.ci_high,
            retention.source,
            retention.note,
        ),
        (
            "relative effect on revenue",
            revenue.relative,
            revenue.ci_low,
            revenue.ci_high,
            revenue.source,
            revenue.note,
        ),
        ("share of the base reached", float(reach), np.nan, np.nan, reach_source, reach_note),
    ]
    return Scenario(
        pd.DataFrame(inputs, columns=list(INPUT_COLUMNS)),
        project(users, retention, revenue, reach, reach_source, horizon_days),
    )
