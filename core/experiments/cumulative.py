"""The effect as it stood day after day: cumulative over users assigned up to each day.

A PM who looks at an experiment every day sees the estimate move and its interval shrink. This
view replays that: for each assignment day d, every user assigned on or before d (with their
full-window metric values), the difference against the control, its fixed-horizon 95% interval,
and the always-valid interval (``sequential.py``), which is the one that may be read at every
look. It is vectorised over days in numpy from daily moment sums (one DuckDB query), so the
intervals use the normal approximation: for rates the unpooled two-proportion variance, for
means the Welch variance s_c^2/n_c + s_v^2/n_v, for ratios the delta method. On the last day they
equal the review table's figures; its always-valid interval is the one the table shows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from core.experiments.metrics import Design, MetricSpec, covariate_columns, value_columns
from core.experiments.sequential import mixing_variance, running_interval, running_p_value

COLUMNS = [
    "metric",
    "variant",
    "day",
    "control_users",
    "variant_users",
    "control_value",
    "variant_value",
    "diff",
    "ci_low",
    "ci_high",
    "seq_ci_low",
    "seq_ci_high",
    "seq_p_value",
    "cuped",
]


def cumulative_from_moments(
    moments: pd.DataFrame, design: Design, control: str, alpha: float = 0.05, cuped: bool = False
) -> pd.DataFrame:
    """The cumulative table from moment sums per variant ``g0`` and day ``g1``.

    With ``cuped``, rates and means are adjusted as in the review (the coefficient from the
    pooled arms, recomputed each day from the users so far); ratio metrics are not adjusted here.
    """
    days = np.sort(moments["g1"].unique())
    frames = []
    for index, spec in enumerate(design.metrics):
        running = {
            str(variant): _running_sums(part, days, index, spec)
            for variant, part in moments.groupby("g0", sort=True)
        }
        if control not in running:
            continue
        adjust = cuped and not spec.is_ratio
        for variant, sums in running.items():
            if variant == control:
                continue
            if adjust:
                pooled = {k: running[control][k] + sums[k] for k in sums}
                theta, x_pooled = _cuped_coefficient(pooled, index, spec)
                adjust_arm = np.isfinite(theta).any() and np.nanmax(np.abs(theta)) > 0
            else:
                adjust_arm = False
            if adjust_arm:
                c_mean, c_var, c_n = _adjusted(running[control], index, spec, theta, x_pooled)
                v_mean, v_var, v_n = _adjusted(sums, index, spec, theta, x_pooled)
            else:
                c_mean, c_var, c_n = _estimates(running[control], spec)
                v_mean, v_var, v_n = _estimates(sums, spec)
            with np.errstate(all="ignore"):
                diff = v_mean - c_mean
                variance = c_var / c_n + v_var / v_n
            frame = pd.DataFrame(
                {
                    "metric": spec.name,
                    "variant": str(variant),
                    "day": pd.to_datetime(days),
                    "control_users": c_n.astype(int),
                    "variant_users": v_n.astype(int),
                    "control_value": c_mean,
                    "variant_value": v_mean,
                    "diff": diff,
                }
            )
            half = stats.norm.ppf(1 - alpha / 2) * np.sqrt(variance)
            frame["ci_low"], frame["ci_high"] = diff - half, diff + half
            frame["seq_ci_low"], frame["seq_ci_high"], frame["seq_p_value"] = _sequential(
                diff, variance, alpha
            )
            frame["cuped"] = bool(adjust_arm)
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(frames, ignore_index=True)[COLUMNS]


def _running_sums(
    part: pd.DataFrame, days: np.ndarray, index: int, spec: MetricSpec
) -> dict[str, np.ndarray]:
    """Cumulative moment sums of one variant over the full day grid (days without users add 0):
    ``n``, then ``s__col`` and ``ss__a__b`` of the metric's value and covariate columns."""
    aligned = part.set_index("g1").reindex(days)
    mine = value_columns(index, spec) + covariate_columns(index, spec)
    wanted = [
        c for c in part.columns if c.startswith(("s__", "ss__")) and all(n in mine for n in c.split("__")[1:])
    ]
    sums = {column: np.cumsum(aligned[column].fillna(0).to_numpy(dtype=float)) for column in wanted}
    sums["n"] = np.cumsum(aligned[f"n{index}"].fillna(0).to_numpy(dtype=float))
    return sums


def _cross(sums: dict[str, np.ndarray], a: str, b: str) -> np.ndarray:
    return sums[f"ss__{a}__{b}"] if f"ss__{a}__{b}" in sums else sums[f"ss__{b}__{a}"]


def _cuped_coefficient(
    pooled: dict[str, np.ndarray], index: int, spec: MetricSpec
) -> tuple[np.ndarray, np.ndarray]:
    """theta = cov(y, x) / var(x) over both arms so far, and the pooled covariate mean."""
    y, x = value_columns(index, spec)[0], covariate_columns(index, spec)[0]
    n = pooled["n"]
    with np.errstate(all="ignore"):
        y_mean, x_mean = pooled[f"s__{y}"] / n, pooled[f"s__{x}"] / n
        cov = (_cross(pooled, y, x) - n * y_mean * x_mean) / (n - 1)
        var_x = (_cross(pooled, x, x) - n * x_mean**2) / (n - 1)
        theta = np.where(var_x > 0, cov / var_x, 0.0)
    return theta, x_mean


def _adjusted(
    sums: dict[str, np.ndarray], index: int, spec: MetricSpec, theta: np.ndarray, x_pooled: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One arm's CUPED-adjusted mean and per-user variance: y - theta (x - pooled mean of x)."""
    y, x = value_columns(index, spec)[0], covariate_columns(index, spec)[0]
    n = sums["n"]
    with np.errstate(all="ignore"):
        y_mean, x_mean = sums[f"s__{y}"] / n, sums[f"s__{x}"] / n
        var_y = (_cross(sums, y, y) - n * y_mean**2) / (n - 1)
        var_x = (_cross(sums, x, x) - n * x_mean**2) / (n - 1)
        cov = (_cross(sums, y, x) - n * y_mean * x_mean) / (n - 1)
        variance = var_y - 2 * theta * cov + theta**2 * var_x
    return y_mean - theta * (x_mean - x_pooled), np.maximum(variance, 0.0), n


def _estimates(sums: dict[str, np.ndarray], spec: MetricSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per day: the arm's estimate, the per-user variance behind its standard error, the count."""
    n = sums["n"]
    values = [k.removeprefix("s__") for k in sums if k.startswith("s__") and not k.startswith("s__pre_")]
    with np.errstate(all="ignore"):
        if spec.is_ratio:
            y = next(v for v in values if v.endswith("_num"))
            x = next(v for v in values if v.endswith("_den"))
            sy, sx = sums[f"s__{y}"], sums[f"s__{x}"]
            syy, sxx, sxy = _cross(sums, y, y), _cross(sums, x, x), _cross(sums, x, y)
            ratio = sy / sx
            x_mean = sx / n
            linear = (syy - 2 * ratio * sxy + ratio**2 * sxx) / (n - 1) / x_mean**2
            return ratio, linear, n
        column = values[0]
        mean = sums[f"s__{column}"] / n
        if spec.is_rate:
            return mean, mean * (1 - mean), n
        variance = (_cross(sums, column, column) - n * mean**2) / (n - 1)
        return mean, np.maximum(variance, 0.0), n


def _sequential(
    diff: np.ndarray, variance: np.ndarray, alpha: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The running always-valid interval and p-value, one look per day, from the first day both
    arms have a usable variance; the mixing variance is tuned to the last day's sample."""
    low, high, p_value = (np.full(len(diff), np.nan) for _ in range(3))
    usable = np.isfinite(diff) & np.isfinite(variance) & (variance > 0)
    if not usable.any():
        return low, high, p_value
    first = int(np.argmax(usable))
    tail = slice(first, None)
    if not usable[tail].all():
        return low, high, p_value
    tau2 = mixing_variance(float(variance[-1]), alpha)
    interval = running_interval(diff[tail], variance[tail], tau2, alpha)
    low[tail], high[tail] = interval.low, interval.high
    p_value[tail] = running_p_value(diff[tail], variance[tail], tau2)
    return low, high, p_value
