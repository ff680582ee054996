"""Breakdowns: which group each user falls in, for the views that compare groups.

Survival curves, funnels and lifecycle stages are compared across the same kinds of groups, so
the grouping is defined once:

- ``attribute:COLUMN`` (or just ``COLUMN``): the value of a ``users`` column, as text; users
  without a ``users`` row or with a NULL value are in the group "(none)";
- ``cohort:PERIOD``: the calendar period (day, ISO week starting Monday, month) of the user's
  start, named by its first day (YYYY-MM-DD);
- ``experiment:NAME``: the user's variant in experiment NAME (``assignments``); users never
  assigned are in "(none)", users assigned to more than one variant in "(several)".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from core.errors import TenureError
from core.population import segment_attributes
from core.schema import user_key_sql
from core.store import Store, quote_identifier

BreakdownKind = Literal["attribute", "cohort", "experiment"]
KINDS: tuple[str, ...] = ("attribute", "cohort", "experiment")
COHORT_PERIODS: tuple[str, ...] = ("day", "week", "month")
MISSING_GROUP = "(none)"
SEVERAL_GROUPS = "(several)"


@dataclass(frozen=True)
class Breakdown:
    """One way to group users (see the module docstring)."""

    kind: BreakdownKind
    name: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise TenureError(f"unknown breakdown '{self.kind}'", f"use one of {', '.join(KINDS)}")
        if not self.name:
            raise TenureError(f"breakdown '{self.kind}' needs a name", "for example cohort:month, country")
        if self.kind == "cohort" and self.name not in COHORT_PERIODS:
            raise TenureError(f"cohort breakdown by '{self.name}'", f"use one of {', '.join(COHORT_PERIODS)}")

    def to_text(self) -> str:
        """The form ``parse_breakdown`` reads: ``country``, ``cohort:month``, ``experiment:NAME``."""
        return self.name if self.kind == "attribute" else f"{self.kind}:{self.name}"

    @property
    def label(self) -> str:
        """Words for a legend or a caption."""
        if self.kind == "attribute":
            return self.name
        if self.kind == "cohort":
            return f"{self.name}ly cohort" if self.name != "day" else "daily cohort"
        return f"variant in {self.name}"


def parse_breakdown(text: str | None) -> Breakdown | None:
    """``'country'`` / ``'attribute:country'`` / ``'cohort:week'`` / ``'experiment:NAME'``; empty -> None."""
    if text is None or not str(text).strip():
        return None
    kind, separator, name = str(text).strip().partition(":")
    if not separator:
        return Breakdown("attribute", kind)
    if kind not in KINDS:
        # A users column may itself contain a colon.
        return Breakdown("attribute", str(text).strip())
    return Breakdown(kind, name)  # type: ignore[arg-type]


def _cohort_start_sql(time_sql: str, period: str) -> str:
    unit = {"day": "day", "week": "week", "month": "month"}[period]
    return f"strftime(date_trunc('{unit}', {time_sql}), '%Y-%m-%d')"


def group_sql(
    store: Store, breakdown: Breakdown, population: str, by_key: bool = False
) -> tuple[str, list[Any]]:
    """A SELECT of ``(user, "group")`` for every user of ``population``, and its own parameters.

    Args:
        population: a SELECT of ``(user_id, start_time)`` (or ``(user_key, start_time)`` when
            ``by_key``), e.g. from ``core.population.population_sql``. Its parameters come first:
            bind ``population_params + returned_params``.
        by_key: users are named by ``user_key`` (``users`` and ``assignments`` rows are matched
            through ``user_key_sql``).

    Raises:
        TenureError: the attribute is not a ``users`` column, or the experiment is unknown.
    """
    user = "user_key" if by_key else "user_id"
    other_user = user_key_sql() if by_key else "user_id"
    if breakdown.kind == "cohort":
        return (
            f'SELECT p.{user}, {_cohort_start_sql("p.start_time", breakdown.name)} AS "group" '
            f"FROM ({population}) p"
        ), []
    if breakdown.kind == "attribute":
        known = segment_attributes(store)
        if breakdown.name not in known:
            raise TenureError(
                f"cannot break down by '{breakdown.name}': it is not a column of the users table",
                f"use one of: {', '.join(sorted(known)) or 'none (load a users table)'}",
            )
        column = quote_identifier(breakdown.name)
        return (
            f"SELECT p.{user}, coalesce(u.value, '{MISSING_GROUP}') AS \"group\" FROM ({population}) p "
            f"LEFT JOIN (SELECT {other_user} AS {user}, min(CAST({column} AS VARCHAR)) AS value "
            f"FROM users GROUP BY ALL) u USING ({user})"
        ), []
    experiments = store.query_df("SELECT DISTINCT experiment FROM assignments")["experiment"].tolist()
    if breakdown.name not in experiments:
        raise TenureError(
            f"no experiment named '{breakdown.name}' in the assignments table",
            f"use one of: {', '.join(sorted(map(str, experiments))) or 'none (load assignments)'}",
        )
    return (
        f"SELECT p.{user}, CASE WHEN a.variants IS NULL THEN '{MISSING_GROUP}' "
        f"WHEN a.variants > 1 THEN '{SEVERAL_GROUPS}' ELSE a.variant END AS \"group\" "
        f"FROM ({population}) p LEFT JOIN (SELECT {other_user} AS {user}, count(DISTINCT variant) AS variants, "
        f"min(variant) AS variant FROM assignments WHERE experiment = ? GROUP BY ALL) a USING ({user})"
    ), [breakdown.name]


def breakdown_options(store: Store) -> list[str]:
    """The breakdowns this store offers, as ``parse_breakdown`` text: users attributes, start
    cohorts by week and month, and ``experiment:NAME`` for every experiment in ``assignments``."""
    experiments = store.query_df("SELECT DISTINCT experiment FROM assignments ORDER BY experiment")
    return [
        *segment_attributes(store),
        "cohort:week",
        "cohort:month",
        *(f"experiment:{name}" for name in experiments["experiment"].astype(str)),
    ]
