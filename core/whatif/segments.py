"""Segments a targeting rule may use besides the ``users`` table: each user's lifecycle stage and
churn-risk decile, both as of their own assignment.

A rule about users "at risk" or "in the riskiest tenth" must read each user as they were when they
were assigned: a stage or a score computed today would use what the assigned variant did to
them (look-ahead), and the estimate would credit the policy with its own effect.

- ``lifecycle_stage``: the point-in-time stage of core/lifecycle.py (``StageSpec``'s thresholds,
  default 7/7/14/30 days), read at the assignment instant by ``stages_at_sql``: only activity
  events before assignment count, the stage is that at the end of the assignment's UTC day (as
  the Lifecycle page would show it, minus the day's events after assignment), and a user
  assigned at their own start (e.g. their first event) is ``new``. Values: ``new``, ``active``,
  ``reactivated``, ``at_risk``, ``dormant``, ``churned``, ``not_started`` (no start by then).
- ``churn_risk_decile``: a saved model's churn probability (``score_model``'s ``churn_prob``,
  over the model's own horizon) as of the midnight that starts the user's UTC assignment day (so
  only events of earlier days are read; users assigned on the same day share one scoring run,
  as for predicted LTV in core/experiments/ltv.py), ranked among the experiment's scored users:
  ``decile = ceil(10 * r / n)``, r the rank of churn_prob from the lowest (ties share their
  average rank), n the scored users; 10 = highest risk. A user the model cannot score at that
  instant (no start before it) has no decile and matches only a rule's default row.

Values are text, as rules compare them (``"10"``, not 10).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import TenureError
from core.experiments.assignments import clean_assignments_sql
from core.experiments.ltv import score_at_instants
from core.lifecycle import NOT_STARTED, STAGES, StageSpec, stages_at_sql
from core.models.training import model_kind
from core.store import Store, quote_identifier
from core.whatif.users import attribute_columns

LIFECYCLE_STAGE = "lifecycle_stage"
CHURN_RISK_DECILE = "churn_risk_decile"
SEGMENT_ATTRIBUTES: tuple[str, ...] = (LIFECYCLE_STAGE, CHURN_RISK_DECILE)
DECILES = 10
RISK_COLUMNS = ("user_id", "as_of", "churn_prob", "status", CHURN_RISK_DECILE)

Progress = Callable[[float, str], None]


def stages_at_assignment(store: Store, experiment: str, spec: StageSpec | None = None) -> pd.DataFrame:
    """Each clean assigned user's lifecycle stage at their assignment (module docstring).

    Returns:
        DataFrame ``user_id, lifecycle_stage``, one row per clean assigned user, by user_id.
    """
    instants = f"SELECT user_key, assigned_time AS as_of_time FROM ({clean_assignments_sql()})"
    stages, params = stages_at_sql(store, spec or StageSpec(), instants, [experiment])
    return store.query_df(
        f"SELECT a.user_id, s.stage AS {LIFECYCLE_STAGE} FROM ({clean_assignments_sql()}) a "
        f"JOIN ({stages}) s ON s.user_key = a.user_key ORDER BY a.user_id",
        [experiment, *params],
    )


def risk_deciles(churn_prob: pd.Series) -> pd.Series:
    """``ceil(10 * r / n)`` with r the average rank from the lowest among the non-missing values;
    missing values stay missing.

    Example:
        >>> risk_deciles(pd.Series([0.1, 0.9, None, 0.5])).tolist()
        [4.0, 10.0, nan, 7.0]
    """
    ranks = churn_prob.rank(method="average")
    scored = int(churn_prob.notna().sum())
    return np.ceil(DECILES * ranks / max(scored, 1))


def churn_risk_at_assignment(
    store: Store, experiment: str, model_dir: str | Path, progress: Progress | None = None
) -> pd.DataFrame:
    """Each clean assigned user's churn probability and risk decile at assignment (module docstring).

    Scores every user at their own assignment day in one pass (``score_at_instants``).

    Returns:
        DataFrame ``RISK_COLUMNS`` by user_id: ``as_of`` the midnight starting the assignment
        day, ``status`` as in ``score_at_instants``, the decile 1..10 (float, NaN unless scored).
    """
    model_kind(model_dir)  # refuses a folder that is not a saved model, before any query
    users = store.query_df(
        f"SELECT user_id, date_trunc('day', assigned_time) AS as_of FROM ({clean_assignments_sql()}) "
        "ORDER BY user_id",
        [experiment],
    )
    scored = score_at_instants(store, model_dir, users, ("churn_prob",), progress)
    scored[CHURN_RISK_DECILE] = risk_deciles(scored["churn_prob"])
    return scored[list(RISK_COLUMNS)].sort_values("user_id").reset_index(drop=True)


def segment_values(
    store: Store,
    experiment: str,
    names: Iterable[str],
    model_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """The segment attributes ``names`` (of ``SEGMENT_ATTRIBUTES``) of every clean assigned user,
    as text (None where a user has no value): ``user_id`` then one column per name.

    Raises:
        TenureError: ``churn_risk_decile`` without ``model_dir``.
    """
    wanted = [name for name in SEGMENT_ATTRIBUTES if name in set(names)]
    frame = store.query_df(f"SELECT user_id FROM ({clean_assignments_sql()}) ORDER BY user_id", [experiment])
    if LIFECYCLE_STAGE in wanted:
        stages = stages_at_assignment(store, experiment).set_index("user_id")[LIFECYCLE_STAGE]
        frame[LIFECYCLE_STAGE] = frame["user_id"].map(stages).astype(object)
    if CHURN_RISK_DECILE in wanted:
        if model_dir is None:
            raise TenureError(
                f"{CHURN_RISK_DECILE} needs a trained model to score users at assignment",
                "give a model folder (--model DIR), e.g. one listed by 'python -m core models'",
            )
        risk = churn_risk_at_assignment(store, experiment, model_dir, progress).set_index("user_id")
        deciles = frame["user_id"].map(risk[CHURN_RISK_DECILE])
        frame[CHURN_RISK_DECILE] = [None if pd.isna(d) else str(int(d)) for d in deciles]
    return frame


def rule_attributes(
    store: Store,
    experiment: str,
    model_dir: str | Path | None = None,
    progress: Progress | None = None,
    segments: pd.DataFrame | None = None,
) -> dict[str, list[str]]:
    """Every attribute a rule on ``experiment`` may use, with the values its users have.

    ``users`` columns (values as text, sorted), then ``lifecycle_stage`` (in the lifecycle's
    order), then, with ``model_dir``, ``churn_risk_decile`` ("1".."10", scoring the users as of
    their assignment: see ``churn_risk_at_assignment`` for the cost). An attribute no user has a
    value of is listed with no values. ``segments``: ``segment_values`` of those names when the
    caller already has them (the page scores the deciles once for the list and the estimates).
    """
    attributes: dict[str, list[str]] = {}
    for column in attribute_columns(store):
        if column in SEGMENT_ATTRIBUTES:
            continue
        values = store.query_df(
            f"SELECT DISTINCT CAST(u.{quote_identifier(column)} AS VARCHAR) AS value "
            f"FROM ({clean_assignments_sql()}) a JOIN users u USING (user_id) "
            "WHERE value IS NOT NULL ORDER BY value",
            [experiment],
        )
        attributes[column] = [str(v) for v in values["value"]]
    names = [LIFECYCLE_STAGE] + ([CHURN_RISK_DECILE] if model_dir is not None else [])
    if segments is None:
        segments = segment_values(store, experiment, names, model_dir, progress)
    present = set(segments[LIFECYCLE_STAGE].dropna())
    attributes[LIFECYCLE_STAGE] = [s for s in (*STAGES, NOT_STARTED) if s in present]
    if model_dir is not None:
        deciles = set(segments[CHURN_RISK_DECILE].dropna())
        attributes[CHURN_RISK_DECILE] = [str(d) for d in range(1, DECILES + 1) if str(d) in deciles]
    return attributes
