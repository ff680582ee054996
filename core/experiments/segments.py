"""One experiment's metric table per value of a user attribute (country, channel, platform, ...).

Segment breakdowns answer "did the change work differently for iOS users?", and they are where
most false discoveries of an A/B review come from: ten segments times five metrics is fifty
tests, and at the 5% level two or three of them look significant by chance. So this view

- computes every segment's moment sums in one DuckDB query (variant x segment) and runs the same
  per-metric statistics as the whole-experiment review (``analysis.compare``);
- adjusts every p-value with Benjamini-Hochberg across ALL segment x metric x variant tests and
  says in words how many tests were run, and that a segment difference found this way is a
  hypothesis for a new experiment, not a conclusion (Kohavi, Tang & Xu 2020, ch. 3 and 19);
- shows segments with fewer than ``min_users`` users in an arm without a test (their interval
  would be too wide to read and their p-value noise);
- answers the question people actually mean, "does the effect differ across segments?", with
  Cochran's Q test of heterogeneity per metric (Cochran 1954; Higgins & Thompson 2002 for I^2).

Users without a ``users`` row, or with a NULL value, form the segment ``(none)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from core.errors import TenureError
from core.experiments.analysis import CONTRACT_COLUMNS, Options, compare, experiment_arms
from core.experiments.assignments import ExperimentUsers
from core.experiments.metrics import Design, MetricSpec, per_user_sql, value_columns
from core.experiments.moments import moments_sql
from core.population import segment_attributes
from core.store import Store, quote_identifier

NO_SEGMENT = "(none)"
DEFAULT_MIN_USERS = 100
"""Fewest users per arm (for that metric) for a segment's row to get a test."""

SEGMENT_COLUMNS = ["segment", *CONTRACT_COLUMNS]
HETEROGENEITY_COLUMNS = ["metric", "variant", "segments", "q", "df", "p_value", "i_squared", "pooled_effect"]


@dataclass
class SegmentReview:
    """The per-segment metric table, the heterogeneity tests and what the reader must be told.

    Attributes:
        results: one row per segment x metric x variant: ``segment`` then the columns of
            ``Review.results`` (``p_adjusted`` is Benjamini-Hochberg over every tested row), plus
            ``segment_users`` (the segment's users in the review) and ``tested`` (False where an
            arm has fewer than ``min_users`` users: no interval, no p-value).
        heterogeneity: one row per metric x variant: Cochran's Q over the tested segments, its
            degrees of freedom (segments - 1), p-value, I^2 and the inverse-variance pooled effect.
        tests: how many tests the table holds (tested rows).
    """

    design: Design
    options: Options
    attribute: str
    users: ExperimentUsers
    control: str
    min_users: int
    results: pd.DataFrame
    heterogeneity: pd.DataFrame
    tests: int
    warnings: list[str] = field(default_factory=list)

    @property
    def segments(self) -> list[str]:
        """The segments in display order (most users first, ``(none)`` last)."""
        return list(dict.fromkeys(self.results["segment"]))


def segmented_user_sql(store: Store, design: Design, attribute: str) -> tuple[str, dict[str, object]]:
    """``per_user_sql`` with one more column, ``segment``: the user's ``attribute`` as text.

    A user with several ``users`` rows takes the smallest non-NULL value (deterministic); a user
    without a row or with NULL takes ``(none)``.
    """
    known = segment_attributes(store)
    if attribute not in known:
        raise TenureError(
            f"segment attribute '{attribute}' is not a column of the users table",
            f"use one of: {', '.join(known) or 'none (load a users table with attributes)'}",
        )
    user_sql, params = per_user_sql(store, design)
    column = quote_identifier(attribute)
    sql = (
        f"SELECT p.*, coalesce(s.segment, $no_segment) AS segment FROM ({user_sql}) p "
        f"LEFT JOIN (SELECT user_id, min(CAST({column} AS VARCHAR)) AS segment FROM users "
        "WHERE user_id IS NOT NULL GROUP BY user_id) s ON p.user_id = s.user_id"
    )
    return sql, {**params, "no_segment": NO_SEGMENT}


def segment_moments(store: Store, design: Design, attribute: str) -> pd.DataFrame:
    """Moment sums per variant (``g0``) and segment (``g1``), in one query."""
    sql, params = segmented_user_sql(store, design, attribute)
    return store.query_df(moments_sql(sql, design, ["variant", "segment"]), params)


def segment_review(
    store: Store,
    design: Design,
    options: Options | None = None,
    attribute: str = "country",
    min_users: int = DEFAULT_MIN_USERS,
) -> SegmentReview:
    """The review's metric table per value of ``users.attribute``.

    ``options.correction`` is not used: segment tables are always adjusted with
    Benjamini-Hochberg over all their tests (a family-wise correction over dozens of tests
    would hide every real difference; a false discovery rate is the honest trade for a search).
    """
    options = options or Options()
    if min_users < 2:
        raise TenureError(f"minimum users per arm {min_users} is too small", "use 2 or more (default 100)")
    users, control = experiment_arms(store, design.experiment, options)
    variants = list(users.users)
    moments = segment_moments(store, design, attribute)
    moments["g0"] = moments["g0"].astype(str)
    moments["g1"] = moments["g1"].astype(str)
    tables = []
    for segment in _segment_order(moments, design):
        part = moments[moments["g1"] == segment]
        by_variant = {str(row["g0"]): row for _, row in part.iterrows()}
        empty = _empty_row(moments)
        by_variant = {variant: by_variant.get(variant, empty) for variant in variants}
        table = _fill_values(compare(by_variant, design, options, control), by_variant, design, control)
        table.insert(0, "segment", segment)
        table["segment_users"] = int(part[[f"n{i}" for i in range(len(design.metrics))]].max(axis=1).sum())
        tables.append(table)
    results = pd.concat(tables, ignore_index=True)
    results = _untest_small(results, min_users)
    results["p_adjusted"] = benjamini_hochberg(results["p_value"].to_numpy(dtype=float))
    heterogeneity = cochran_q_table(results)
    tests = int(results["tested"].sum())
    result = SegmentReview(
        design=design,
        options=options,
        attribute=attribute,
        users=users,
        control=control,
        min_users=min_users,
        results=results,
        heterogeneity=heterogeneity,
        tests=tests,
    )
    result.warnings = _warnings(result)
    return result


def _segment_order(moments: pd.DataFrame, design: Design) -> list[str]:
    """Most users first; ``(none)`` last whatever its size."""
    sizes = moments.assign(size=moments[[f"n{i}" for i in range(len(design.metrics))]].max(axis=1))
    totals = sizes.groupby("g1")["size"].sum().sort_values(ascending=False, kind="stable")
    order = [s for s in totals.index if s != NO_SEGMENT]
    return order + ([NO_SEGMENT] if NO_SEGMENT in totals.index else [])


def _fill_values(
    table: pd.DataFrame, by_variant: dict[str, pd.Series], design: Design, control: str
) -> pd.DataFrame:
    """Each arm's value where the test could not run (an arm with fewer than 2 users): a
    segment's row still shows what was measured."""
    table = table.copy()
    for position, row in table.iterrows():
        index = next(i for i, spec in enumerate(design.metrics) if spec.name == row["metric"])
        spec = design.metrics[index]
        for column, variant in (("control_value", control), ("variant_value", row["variant"])):
            if pd.isna(row[column]):
                table.at[position, column] = _arm_value(by_variant[str(variant)], index, spec)
    return table


def _arm_value(moments: pd.Series, index: int, spec: MetricSpec) -> float:
    """The arm's mean (a ratio of sums for ratio metrics) from its moment sums; NaN for no user."""
    columns = value_columns(index, spec)
    if not float(moments[f"n{index}"] or 0):
        return float("nan")
    denominator = float(moments[f"s__{columns[1]}"]) if spec.is_ratio else float(moments[f"n{index}"])
    return float(moments[f"s__{columns[0]}"]) / denominator if denominator else float("nan")


def _empty_row(moments: pd.DataFrame) -> pd.Series:
    """Moment sums of an arm with no user in a segment: every sum 0."""
    return pd.Series(0.0, index=[c for c in moments.columns if c not in ("g0", "g1")])


def _untest_small(results: pd.DataFrame, min_users: int) -> pd.DataFrame:
    """Blank the interval and the p-value of rows where an arm has fewer than ``min_users``."""
    results = results.copy()
    enough = (results["control_users"] >= min_users) & (results["variant_users"] >= min_users)
    results["tested"] = enough & results["p_value"].notna()
    untested = ~results["tested"]
    blanked = ["ci_low", "ci_high", "rel_ci_low", "rel_ci_high", "p_value", "se"]
    results.loc[untested, [c for c in blanked if c in results.columns]] = float("nan")
    return results


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values over the finite entries; NaN entries stay NaN.

    p_adj(i) = min over j with rank(j) >= rank(i) of min(1, m * p(j) / rank(j)), m the number of
    finite p-values (Benjamini & Hochberg 1995).
    """
    adjusted = np.full(len(p_values), np.nan)
    finite = np.isfinite(p_values)
    if finite.any():
        adjusted[finite] = stats.false_discovery_control(p_values[finite], method="bh")
    return adjusted


def cochran_q(effects: np.ndarray, standard_errors: np.ndarray) -> tuple[float, int, float, float, float]:
    """Cochran's Q test that k effects share one true value.

    With weights w_i = 1 / se_i^2 and the pooled effect d = sum(w_i d_i) / sum(w_i):
    Q = sum(w_i (d_i - d)^2), chi-square with k - 1 degrees of freedom under the null;
    I^2 = max(0, (Q - (k - 1)) / Q), the share of the spread beyond chance.

    Returns:
        (Q, degrees of freedom, p-value, I^2, pooled effect); NaN where k < 2.
    """
    effects = np.asarray(effects, dtype=float)
    weights = 1.0 / np.asarray(standard_errors, dtype=float) ** 2
    k = len(effects)
    if k < 2:
        return float("nan"), max(k - 1, 0), float("nan"), float("nan"), float("nan")
    pooled = float(np.sum(weights * effects) / np.sum(weights))
    q = float(np.sum(weights * (effects - pooled) ** 2))
    df = k - 1
    i_squared = max(0.0, (q - df) / q) if q > 0 else 0.0
    return q, df, float(stats.chi2.sf(q, df)), i_squared, pooled


def cochran_q_table(results: pd.DataFrame) -> pd.DataFrame:
    """Cochran's Q per metric and variant over the tested segments with a positive se."""
    rows = []
    for (metric, variant), part in results.groupby(["metric", "variant"], sort=False):
        usable = part[part["tested"] & (part["se"] > 0)]
        q, df, p_value, i_squared, pooled = cochran_q(
            usable["abs_diff"].to_numpy(dtype=float), usable["se"].to_numpy(dtype=float)
        )
        rows.append(
            {
                "metric": metric,
                "variant": variant,
                "segments": len(usable),
                "q": q,
                "df": df,
                "p_value": p_value,
                "i_squared": i_squared,
                "pooled_effect": pooled,
            }
        )
    return pd.DataFrame(rows, columns=HETEROGENEITY_COLUMNS)


def _warnings(review: SegmentReview) -> list[str]:
    notes: list[str] = []
    if review.users.srm_failed:
        notes.append(
            f"Sample ratio mismatch (p = {review.users.srm_p_value:.2g} < 0.001): assignment or logging is "
            "broken, so no segment figure below can be trusted."
        )
    segments = review.segments
    variants = review.results["variant"].nunique()
    notes.append(
        f"{review.tests:,} tests were run ({len(segments)} {review.attribute} segments x "
        f"{len(review.design.metrics)} metrics x {variants} variant comparison{'s' if variants > 1 else ''}, "
        "less the untested rows); the adjusted p-values control the false discovery rate "
        "(Benjamini-Hochberg) across all of them. A difference between segments found this way is a "
        "hypothesis to confirm with a new experiment, not a conclusion."
    )
    untested = review.results[~review.results["tested"]]
    if not untested.empty:
        names = ", ".join(dict.fromkeys(untested["segment"]))
        notes.append(
            f"{len(untested):,} rows have fewer than {review.min_users:,} users in an arm and are shown "
            f"without an interval or a test ({names})."
        )
    differing = review.heterogeneity[review.heterogeneity["p_value"] < review.options.alpha]
    for row in differing.itertuples():
        notes.append(
            f"{row.metric} ({row.variant}): the effect differs across {review.attribute} segments "
            f"(Cochran's Q = {row.q:.1f} on {row.df} df, p = {row.p_value:.2g}, I^2 = {row.i_squared:.0%})."
        )
    return notes
