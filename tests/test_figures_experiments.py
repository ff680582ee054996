"""The Experiments page's figures and display tables: traces carry the input frame's values
(rates x 100, in points), and every shown figure is a formatted column of the review table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core import figures_experiments as fe
from core.experiments.summary import LTV_LABEL


def cumulative_frame() -> pd.DataFrame:
    days = pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-03"])
    rows = []
    for metric, scale in (("conversion:purchase", 0.01), ("revenue", 1.0)):
        for variant, shift in (("b", 0.0), ("c", 0.5)):
            diff = (np.array([3.0, 2.0, 1.5]) + shift) * scale
            half = np.array([2.0, 1.0, 0.8]) * scale
            rows.append(
                pd.DataFrame(
                    {
                        "metric": metric,
                        "variant": variant,
                        "day": days,
                        "diff": diff,
                        "ci_low": diff - half,
                        "ci_high": diff + half,
                        "seq_ci_low": diff - 2 * half,
                        "seq_ci_high": diff + 2 * half,
                    }
                )
            )
    return pd.concat(rows, ignore_index=True)


def traces(figure) -> dict[str, np.ndarray]:
    return {trace.name: np.asarray(trace.y, dtype=float) for trace in figure.data}


@pytest.mark.parametrize(("metric", "scale"), [("conversion:purchase", 100.0), ("revenue", 1.0)])
def test_cumulative_figure_draws_the_chosen_rows(metric: str, scale: float) -> None:
    frame = cumulative_frame()
    figure = fe.cumulative_figure(frame, metric, "c", days=14)
    rows = frame[(frame["metric"] == metric) & (frame["variant"] == "c")]
    drawn = traces(figure)
    np.testing.assert_allclose(drawn["estimate"], rows["diff"] * scale)
    np.testing.assert_allclose(drawn["fixed-horizon 95% band"], rows["ci_low"] * scale)
    np.testing.assert_allclose(drawn["fixed-horizon 95% band upper"], rows["ci_high"] * scale)
    np.testing.assert_allclose(drawn["always-valid 95% band"], rows["seq_ci_low"] * scale)
    np.testing.assert_allclose(drawn["always-valid 95% band upper"], rows["seq_ci_high"] * scale)
    assert list(pd.to_datetime(figure.data[-1].x)) == list(rows["day"])
    unit = "percentage points" if scale == 100.0 else ""
    assert unit in figure.layout.yaxis.title.text


def test_cumulative_figure_without_rows_says_so() -> None:
    figure = fe.cumulative_figure(cumulative_frame(), "events", "b", days=14)
    assert not figure.data
    assert figure.layout.annotations[0].text == "No days to show"


def review_rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "metric": ["conversion:purchase", "revenue", "events", "predicted_ltv_90d"],
            "variant": ["b"] * 4,
            "control_value": [0.1234, 12.5, 24.25, 40.0],
            "variant_value": [0.1456, 13.75, 25.0, 41.5],
            "abs_diff": [0.0222, 1.25, 0.75, 1.5],
            "rel_diff": [0.18, 0.1, 0.031, 0.0375],
            "ci_low": [0.01, -0.5, 0.1, -1.0],
            "ci_high": [0.0344, 3.0, 1.4, 4.0],
            "rel_ci_low": [0.08, -0.04, 0.004, -0.025],
            "rel_ci_high": [0.28, 0.24, 0.058, 0.1],
            "p_value": [0.00001, 0.16, 0.024, 0.24],
            "p_adjusted": [0.00004, 0.32, 0.072, 0.32],
            "seq_ci_low": [0.002, -1.5, -0.3, np.nan],
            "seq_ci_high": [0.0424, 4.0, 1.8, np.nan],
            "chance_to_beat": [0.9999, 0.92, 0.988, 0.88],
            "expected_loss": [0.00001, 0.05, 0.004, 0.2],
            "cuped": [False, True, True, False],
            "variance_reduction": [np.nan, 0.123, 0.456, np.nan],
        }
    )


def test_results_display_formats_every_column_in_its_unit() -> None:
    shown = fe.results_display(review_rows(), days=14, correction="bh", cuped=True).set_index("metric")
    rate = shown.loc["conversion to purchase within 14 days"]
    assert rate["control value"] == "12.3%" and rate["variant value"] == "14.6%"
    assert rate["abs diff [95% CI]"] == "+2.22 pts [+1.00, +3.44]"
    assert rate["relative diff"] == "+18.0%"
    assert rate["p-value"] == "<0.0001"
    assert rate["adjusted p (Benjamini-Hochberg)"] == "<0.0001"
    assert rate[fe.ALWAYS_VALID] == "[+0.20 pts, +4.24 pts]"
    assert rate["chance to beat control"] == "100.0%"
    assert rate["CUPED variance reduction"] == "not applied"
    money = shown.loc["revenue per user over 14 days"]
    assert money["abs diff [95% CI]"] == "+1.25 [-0.50, +3.00]"
    assert money["p-value"] == "0.1600" and money["adjusted p (Benjamini-Hochberg)"] == "0.3200"
    assert money["expected loss"] == "0.05"
    assert money["CUPED variance reduction"] == "12.3%"
    assert shown.loc["events per user over 14 days", "CUPED variance reduction"] == "45.6%"
    ltv = shown.loc[LTV_LABEL]
    assert "model-based" in LTV_LABEL
    assert ltv[fe.ALWAYS_VALID] == "n/a"
    plain = fe.results_display(review_rows(), days=14, correction="holm", cuped=False)
    assert "CUPED variance reduction" not in plain.columns
    assert "adjusted p (Holm)" in plain.columns


def test_relative_effects_figure_has_one_marker_per_metric() -> None:
    rows = review_rows()
    figure = fe.relative_effects_figure(rows, days=14)
    (trace,) = figure.data
    np.testing.assert_allclose(np.asarray(trace.x, dtype=float), rows["rel_diff"] * 100)
    np.testing.assert_allclose(trace.error_x.array, (rows["rel_ci_high"] - rows["rel_diff"]) * 100)
    np.testing.assert_allclose(trace.error_x.arrayminus, (rows["rel_diff"] - rows["rel_ci_low"]) * 100)
    assert list(trace.y) == [fe.metric_label(str(name), 14) for name in rows["metric"]]


def test_overview_display_keeps_the_overview_figures() -> None:
    overview = pd.DataFrame(
        {
            "experiment": ["a", "b"],
            "variants": [2, 3],
            "users": [100, 250],
            "excluded_multiple": [0, 2],
            "first_assigned": pd.to_datetime(["2026-01-01 10:00", "2026-02-01 00:00"]),
            "last_assigned": pd.to_datetime(["2026-01-10", "2026-02-05"]),
            "days_running": [30.6, 4.2],
            "status": ["stopped", "running"],
            "srm_p_value": [0.5, 0.00001],
            "srm": ["passed", "failed"],
        }
    )
    shown = fe.overview_display(overview)
    assert shown["days running"].tolist() == [31, 4]
    assert shown["first assigned"].tolist() == ["2026-01-01", "2026-02-01"]
    assert shown["SRM p"].tolist() == ["0.5000", "<0.0001"]
    assert shown["SRM check"].tolist() == ["passed", "failed"]


def test_rmst_display_keeps_the_rmst_figures() -> None:
    rmst = pd.DataFrame(
        {
            "variant": ["b"],
            "rmst": [20.456],
            "rmst_control": [18.0],
            "diff": [2.456],
            "se": [1.0],
            "ci_low": [0.496],
            "ci_high": [4.416],
            "p_value": [0.0138],
            "tau_days": [30.0],
        }
    )
    shown = fe.rmst_display(rmst).iloc[0]
    assert shown["RMST (days)"] == "20.46" and shown["control RMST (days)"] == "18.00"
    assert shown["difference [95% CI]"] == "+2.46 [+0.50, +4.42]"
    assert shown["p-value"] == "0.0138" and shown["horizon (days)"] == 30.0
