"""One what-if: the value of a target policy estimated from a log, with intervals and diagnostics.

The flow: the log goes into a temporary table (``log.open_log``); the target gives its
probabilities (``targets``); when DM/DR/SNDR are asked for, a reward model is cross-fitted (each
half of the requests is predicted by a model fitted on a sample of the other half, so no row's
own reward enters its prediction); DuckDB joins every evaluated row to its weight, q and direct
term and sums them per request; numpy turns those sums into estimates and bootstrap intervals
(``estimators``); DM's interval adds the reward model's own variance from refits on subsamples
(``dm_variance``); ``diagnostics`` adds ESS, the largest weight, the unsupported share and the
agreement between estimators.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.errors import TenureError
from core.store import Store
from core.whatif import diagnostics
from core.whatif.dm_variance import dm_interval, subsample_variance, weighted_cells
from core.whatif.estimators import ESTIMATORS, RequestSums, bootstrap_draws, percentile_interval
from core.whatif.log import LOG_TABLE, LogSpec, open_log
from core.whatif.reward_model import RewardModel, sample_rows
from core.whatif.targets import expected_reward, parse_target

MODEL_ESTIMATORS = {"dm", "dr", "sndr"}


@dataclass(frozen=True)
class WhatIfSpec:
    """What to estimate and how.

    Args:
        target: the target policy, as ``--target`` text (see ``targets.parse_target``).
        log_policy: the logging policy whose rows are read (None: all rows).
        estimators: any of ipw, snipw, dm, dr, sndr.
        seed: seeds the bootstrap, the row samples, the folds and the models.
        resamples: bootstrap resamples (200).
        level: interval level (0.95).
        fit_fraction: the earliest share of the log where learned targets are fitted (0.3).
        epsilon: the greedy target's exploration (0.1).
        max_model_rows: rows sampled to fit a reward model (200,000).
        dm_refits: refits of each cross-fitted reward model on subsamples, which give DM's
            interval the model's own variance (3; 0: DM's interval is the request bootstrap's
            alone, with the model held fixed: sampling only).
        dm_refit_share: the share of a model's training requests each refit keeps (0.5: half
            samples, whose spread around the full fit is the full fit's own variance).
    """

    target: str
    log_policy: str | None = None
    estimators: tuple[str, ...] = ESTIMATORS
    seed: int = 0
    resamples: int = 200
    level: float = 0.95
    fit_fraction: float = 0.3
    epsilon: float = 0.1
    max_model_rows: int = 200_000
    dm_refits: int = 3
    dm_refit_share: float = 0.5


@dataclass(frozen=True)
class WhatIfResult:
    """An estimate and its diagnostics; ``to_dict()`` is the CLI's fixed contract.

    rows / logged_value: the evaluated rows and their mean reward (the logging policy's own
    value on them). estimates: estimator, value, ci_low, ci_high. details: the rest (support
    mode, requests, agreement, warnings, the target's note).
    """

    target: str
    rows: int
    logged_value: float
    ess: float
    max_weight: float
    unsupported_share: float
    estimates: pd.DataFrame
    warnings: tuple[str, ...] = ()
    details: dict = field(default_factory=dict)

    def to_dict(self, details: bool = False) -> dict:
        result = {
            "target": self.target,
            "rows": self.rows,
            "logged_value": self.logged_value,
            "ess": self.ess,
            "max_weight": self.max_weight,
            "unsupported_share": self.unsupported_share,
            "estimates": [
                {key: _number(value) if key != "estimator" else value for key, value in row.items()}
                for row in self.estimates.to_dict(orient="records")
            ],
        }
        if details:
            result["details"] = {**self.details, "warnings": list(self.warnings)}
        return result


def _number(value: object) -> float | None:
    number = float(value)
    return None if np.isnan(number) else number


def parse_estimators(text: str) -> tuple[str, ...]:
    """'ipw,dr' -> ('ipw', 'dr'); unknown names are bad input."""
    names = tuple(name.strip().lower() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in ESTIMATORS]
    if unknown or not names:
        raise TenureError(
            f"--estimators: unknown estimator {', '.join(unknown) or '(none)'}",
            f"choose from {','.join(ESTIMATORS)}",
        )
    return tuple(dict.fromkeys(names))


@contextmanager
def _timed(timings: dict[str, float] | None, step: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    if timings is not None:
        timings[step] = timings.get(step, 0.0) + time.perf_counter() - started


def evaluate(store: Store, spec: WhatIfSpec, timings: dict[str, float] | None = None) -> WhatIfResult:
    """Estimate ``spec.target``'s expected reward per shown slot from the log.

    ``timings``, when given, receives the seconds spent per step (open_log, target,
    reward_models, dm_refits, per_request, support, bootstrap), for benchmarks.
    """
    unknown = [name for name in spec.estimators if name not in ESTIMATORS]
    if unknown or not spec.estimators:
        raise TenureError(
            f"unknown estimator {', '.join(unknown) or '(none)'}", f"choose from {','.join(ESTIMATORS)}"
        )
    if spec.dm_refits > 0 and not 0.0 < spec.dm_refit_share < 1.0:
        raise TenureError(
            f"dm_refit_share {spec.dm_refit_share} is not strictly between 0 and 1", "use e.g. 0.5"
        )
    target = parse_target(spec.target, spec.epsilon)
    model_variances: list[float] = []
    with store.cursor() as cursor:
        with _timed(timings, "open_log"):
            log = open_log(cursor, LogSpec(spec.log_policy, spec.fit_fraction), spec.seed)
        scope = "time_window = 'eval'" if target.learns_from_log else "TRUE"
        if target.learns_from_log and (log.fit_rows == 0 or log.eval_rows == 0):
            raise TenureError(
                f"target {target.name} is learned from the log's first {spec.fit_fraction:.0%} and evaluated "
                f"on the rest, but the log has {log.fit_rows} and {log.eval_rows} rows there",
                "use a longer log or a fit fraction strictly between 0 and 1",
            )
        with _timed(timings, "target"):
            target_probabilities = target.probabilities(cursor, log, spec.seed)
        probabilities = target_probabilities.probabilities
        with _timed(timings, "per_request"):
            cells = cursor.execute(
                f"SELECT fold, context, item, position FROM {LOG_TABLE} WHERE {scope} GROUP BY ALL"
            ).df()
            context_rows = np.where(probabilities.shape[0] > 1, cells["context"].to_numpy(), 0)
            cells["pi"] = probabilities[context_rows, cells["item"].to_numpy(), cells["position"].to_numpy()]
            cells["q"] = 0.0
            cells["direct"] = 0.0
            counts = cursor.execute(
                f"SELECT fold, context, position, count(*) AS rows FROM {LOG_TABLE} WHERE {scope} "
                "GROUP BY ALL ORDER BY ALL"
            ).df()
        if MODEL_ESTIMATORS & set(spec.estimators):
            model_variances = _cross_fit(cursor, log, cells, probabilities, counts, scope, spec, timings)
        with _timed(timings, "per_request"):
            cursor.register("whatif_cells", cells)
            per_request = cursor.execute(
                f"""SELECT count(*) AS rows, sum(w) AS weight, sum(w * reward) AS weighted_reward,
                           sum(w * (reward - q)) AS weighted_residual, sum(direct) AS direct,
                           sum(reward) AS reward, sum(w * w) AS weight_square, max(w) AS max_weight
                    FROM (SELECT l.request_key, l.reward, c.pi / l.propensity AS w, c.q, c.direct
                          FROM {LOG_TABLE} l JOIN whatif_cells c USING (fold, context, item, position)
                          WHERE {scope})
                    GROUP BY request_key
                    ORDER BY request_key"""
            ).df()
            cursor.unregister("whatif_cells")
        with _timed(timings, "support"):
            support = diagnostics.logging_support(cursor, log)
            whole_log = diagnostics.logging_support_whole_log(cursor, log)
        cursor.execute(f"DROP TABLE {LOG_TABLE}")
    with _timed(timings, "bootstrap"):
        sums = RequestSums(*(per_request[name].to_numpy(dtype=np.float64) for name in RequestSums._fields))
        point, draws = bootstrap_draws(sums, spec.estimators, spec.resamples, spec.seed)
        low, high = percentile_interval(draws, spec.level)
        estimates = pd.DataFrame(
            {"estimator": list(spec.estimators), "value": point, "ci_low": low, "ci_high": high}
        )
        dm_details = _dm_interval(estimates, draws, model_variances, spec)
    counts = counts.groupby(["context", "position"], as_index=False)["rows"].sum()
    rows = int(per_request["rows"].sum())
    ess = diagnostics.effective_sample_size(per_request["weight"].sum(), per_request["weight_square"].sum())
    unsupported = diagnostics.unsupported_share(probabilities, support.supported, counts)
    spread, overlap = diagnostics.agreement(estimates)
    words = diagnostics.warnings_in_words(unsupported, ess, rows, overlap, target_probabilities.note)
    details = {
        "log_policy": spec.log_policy,
        "window": "after the fit window" if target.learns_from_log else "all rows",
        "requests": len(per_request),
        "bootstrap_unit": "request" if log.has_requests else "row",
        "support_mode": support.mode,
        "unsupported_share_whole_log": diagnostics.unsupported_share(probabilities, whole_log, counts),
        "estimate_spread": spread,
        "intervals_overlap": overlap,
        "mean_weight": float(per_request["weight"].sum() / rows),
        "target_note": target_probabilities.note,
        **dm_details,
    }
    return WhatIfResult(
        target=spec.target,
        rows=rows,
        logged_value=float(per_request["reward"].sum() / rows),
        ess=ess,
        max_weight=float(per_request["max_weight"].max()),
        unsupported_share=unsupported,
        estimates=estimates,
        warnings=tuple(words),
        details=details,
    )


def _dm_interval(
    estimates: pd.DataFrame, draws: np.ndarray, model_variances: list[float], spec: WhatIfSpec
) -> dict:
    """Widen DM's row of ``estimates`` by the model variance (in place); the details that say
    what DM's interval holds."""
    if "dm" not in spec.estimators:
        return {}
    if not model_variances:
        return {"dm_interval": "sampling only", "dm_model_sd": None}
    column = spec.estimators.index("dm")
    low, high, _ = dm_interval(
        float(estimates.loc[column, "value"]), draws[:, column], model_variances, spec.dm_refits, spec.level
    )
    estimates.loc[column, ["ci_low", "ci_high"]] = [low, high]
    return {
        "dm_interval": f"sampling and model ({spec.dm_refits} refits per fold)",
        "dm_model_sd": float(np.sqrt(sum(model_variances))),
    }


def _cross_fit(
    cursor,
    log,
    cells: pd.DataFrame,
    probabilities: np.ndarray,
    counts: pd.DataFrame,
    scope: str,
    spec: WhatIfSpec,
    timings: dict[str, float] | None,
) -> list[float]:
    """Fill ``cells`` q (logged item) and direct (sum_a pi_e q) with fold f predicted by a model
    fitted on the other fold's rows (of the evaluated scope).

    Returns each fold model's variance of its DM contribution, from ``spec.dm_refits`` refits on
    subsamples (empty when DM is not asked for or refits are off).
    """
    window = "eval" if scope != "TRUE" else None
    rows = float(counts["rows"].sum())
    variances = []
    for fold in (0, 1):
        in_fold = cells["fold"].to_numpy() == fold
        if not in_fold.any():
            continue
        with _timed(timings, "reward_models"):
            train = sample_rows(cursor, window, 1 - fold, spec.max_model_rows, spec.seed)
            if train.empty:
                train = sample_rows(cursor, window, fold, spec.max_model_rows, spec.seed)
            model = RewardModel(seed=spec.seed).fit(
                log,
                train["context"].to_numpy(),
                train["item"].to_numpy(),
                train["position"].to_numpy(),
                train["reward"].to_numpy(),
            )
            q, direct = _fold_predictions(
                log,
                model,
                probabilities,
                cells.loc[in_fold, "context"].to_numpy(),
                cells.loc[in_fold, "item"].to_numpy(),
                cells.loc[in_fold, "position"].to_numpy(),
            )
            cells.loc[in_fold, "q"] = q
            cells.loc[in_fold, "direct"] = direct
        if "dm" in spec.estimators and spec.dm_refits > 1:
            with _timed(timings, "dm_refits"):
                variances.append(
                    _refit_variance(
                        log, model, train, counts[counts["fold"] == fold], probabilities, rows, spec
                    )
                )
    return variances


def _fold_predictions(
    log,
    model: RewardModel,
    probabilities: np.ndarray,
    context: np.ndarray,
    item: np.ndarray,
    position: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """q of each logged cell (context, item, position) and its direct term sum_a pi_e q.

    Scores only what is needed: the logged cells and, per context and position, the items the
    target gives a positive probability. A target that ranks (popularity) needs a few items
    per position; one that spreads over every item (uniform, greedy's exploration) needs the
    whole (contexts x items x positions) grid, which is then scored as one block.
    """
    contexts, index = np.unique(context, return_inverse=True)
    pi = (
        probabilities[contexts]
        if probabilities.shape[0] > 1
        else np.broadcast_to(probabilities, (len(contexts), *probabilities.shape[1:]))
    )
    row, candidate, slot = np.nonzero(pi > 0)
    if len(row) + len(context) >= pi.size:
        reward = model.predict(log, contexts)
        direct = expected_reward(probabilities, reward, contexts)
        return reward[index, item, position], direct[index, position]
    q = model.predict_cells(log, context, item, position)
    candidate_q = model.predict_cells(log, contexts[row], candidate, slot)
    n_positions = pi.shape[2]
    direct = np.bincount(
        row * n_positions + slot,
        weights=pi[row, candidate, slot] * candidate_q,
        minlength=pi.shape[0] * n_positions,
    ).reshape(-1, n_positions)
    return q, direct[index, position]


def _refit_variance(
    log,
    model: RewardModel,
    train: pd.DataFrame,
    fold_counts: pd.DataFrame,
    probabilities: np.ndarray,
    rows: float,
    spec: WhatIfSpec,
) -> float:
    """The model variance of one fold's DM contribution (``dm_variance`` steps 1-3)."""
    needed = weighted_cells(fold_counts, probabilities, spec.seed)
    refits = model.refit_subsamples(
        train["reward"].to_numpy(),
        train["request"].to_numpy(),
        spec.dm_refit_share,
        spec.dm_refits,
        spec.seed,
    )
    contributions = [
        float(needed.weight @ refit.predict_cells(log, needed.context, needed.item, needed.position)) / rows
        for refit, _ in refits
    ]
    share = float(np.mean([kept for _, kept in refits]))
    return subsample_variance(np.asarray(contributions), share)
