"""What to trust in an off-policy estimate: weights, support and agreement between estimators.

- ESS = (sum w)^2 / sum w^2 (Kish's effective sample size): how many rows of an on-policy log the
  weighted log is worth; a small ESS means a few rows carry the estimate.
- max weight: the largest single w = pi_e / pi_0.
- unsupported share: the mean over evaluated rows of the target's probability, at the row's
  position, on items the logging policy never showed there. What "never showed" means depends
  on what the logging propensities reveal about the logging policy (``logging_support``). Every
  estimator that weights rows (IPW, SNIPW, DR, SNDR) cannot see that mass: it is biased when the
  share is above 0, and DM relies on the reward model's extrapolation there.
- agreement: max - min of the point estimates, and whether all intervals share a common point.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd

from core.whatif.log import LOG_TABLE, Log

PROPENSITY_TOLERANCE = 1e-9
MIN_REPEATED_SHARE = 0.5


def effective_sample_size(weight_sum: float, weight_square_sum: float) -> float:
    """Kish's ESS, (sum w)^2 / sum w^2; 0 when every weight is 0."""
    return float(weight_sum**2 / weight_square_sum) if weight_square_sum > 0 else 0.0


@dataclass(frozen=True)
class Support:
    """Which (item, position) pairs the logging policy is known to show, shape (1 or C, K, P).

    mode:
    - ``context-free``: the logged propensity of every (item, position) is the same in all rows;
      the supported pairs are those shown anywhere in the log (exact but for pairs too rare to
      have been drawn).
    - ``per context``: the propensity is constant within each context value but differs between
      them (a policy of the logged context), and at least half of the rows share their (context,
      item, position) with another row, so that constancy is evidence; a pair is supported in a
      context when it was shown in a row with that context.
    - ``whole log``: the propensity varies within a context too (it adapts over time, or to
      something the log does not hold, such as a hidden taste); the policy's support per context
      cannot be told apart from luck, so the pairs shown anywhere count as supported: the share is
      then a lower bound.
    """

    mode: str
    supported: np.ndarray


def logging_support(cursor: duckdb.DuckDBPyConnection, log: Log) -> Support:
    """The logging policy's support, read from every row of the log (both windows)."""
    shape = (len(log.items), len(log.positions))
    spread = (
        f"SELECT coalesce(max(high - low), 0) FROM (SELECT max(propensity) AS high, min(propensity) AS low "
        f"FROM {LOG_TABLE} GROUP BY {{}})"
    )
    pair_spread = cursor.execute(spread.format("item, position")).fetchone()[0]
    cell_spread = cursor.execute(spread.format("context, item, position")).fetchone()[0]
    repeated = cursor.execute(
        f"""SELECT coalesce(sum(rows) FILTER (WHERE rows > 1) / sum(rows), 0) FROM (
              SELECT count(*) AS rows FROM {LOG_TABLE} GROUP BY context, item, position)"""
    ).fetchone()[0]
    # Constancy within a context is evidence only where contexts repeat; with (nearly) unique
    # contexts, such as continuous features, it holds trivially and says nothing.
    per_context = cell_spread <= PROPENSITY_TOLERANCE and repeated >= MIN_REPEATED_SHARE
    if pair_spread <= PROPENSITY_TOLERANCE or not per_context or len(log.contexts) == 1:
        mode = "context-free" if pair_spread <= PROPENSITY_TOLERANCE else "whole log"
        shown = cursor.execute(f"SELECT DISTINCT item, position FROM {LOG_TABLE}").fetchnumpy()
        supported = np.zeros((1, *shape), dtype=bool)
        supported[0, shown["item"], shown["position"]] = True
        return Support(mode, supported)
    shown = cursor.execute(f"SELECT DISTINCT context, item, position FROM {LOG_TABLE}").fetchnumpy()
    supported = np.zeros((len(log.contexts), *shape), dtype=bool)
    supported[shown["context"], shown["item"], shown["position"]] = True
    return Support("per context", supported)


def unsupported_share(probabilities: np.ndarray, supported: np.ndarray, counts: pd.DataFrame) -> float:
    """Row-weighted mean of the target's mass on unsupported pairs at each row's position.

    Args:
        probabilities: the target's (1 or C, K, P) array.
        supported: the logging support's (1 or C, K, P) array.
        counts: evaluated rows per (context, position): columns context, position, rows.
    """
    if counts.empty:
        return 0.0
    context = counts["context"].to_numpy()
    position = counts["position"].to_numpy()
    pi = probabilities[context if probabilities.shape[0] > 1 else np.zeros_like(context), :, position]
    hole = ~supported[context if supported.shape[0] > 1 else np.zeros_like(context), :, position]
    mass = (pi * hole).sum(axis=1)
    rows = counts["rows"].to_numpy(dtype=np.float64)
    return float((mass * rows).sum() / rows.sum())


def agreement(estimates: pd.DataFrame) -> tuple[float, bool]:
    """(max - min of the point estimates, whether every interval shares a common point)."""
    values = estimates["value"].dropna()
    if values.empty:
        return float("nan"), True
    spread = float(values.max() - values.min())
    overlap = bool(estimates["ci_low"].max() <= estimates["ci_high"].min())
    return spread, overlap


def warnings_in_words(unsupported: float, ess: float, rows: int, overlap: bool, note: str) -> list[str]:
    """The caveats a reader must see next to the numbers, as sentences."""
    messages = []
    if unsupported > 0:
        messages.append(
            f"{unsupported:.1%} of the target's probability is on items the logging policy never showed "
            "in that position: the weighted estimates (IPW, SNIPW, DR, SNDR) miss it and are biased; "
            "DM guesses it from the reward model."
        )
    if rows and ess < 0.01 * rows:
        messages.append(
            f"the effective sample size is {ess:.0f} of {rows} rows: a few rows carry the weighted estimates."
        )
    if not overlap:
        messages.append("the estimators' intervals do not overlap: the reward model or the weights are off.")
    if note:
        messages.append(note + ".")
    return messages


def logging_support_whole_log(cursor: duckdb.DuckDBPyConnection, log: Log) -> np.ndarray:
    """The pairs shown anywhere in the log, (1, K, P): the most lenient support."""
    shown = cursor.execute(f"SELECT DISTINCT item, position FROM {LOG_TABLE}").fetchnumpy()
    supported = np.zeros((1, len(log.items), len(log.positions)), dtype=bool)
    supported[0, shown["item"], shown["position"]] = True
    return supported
