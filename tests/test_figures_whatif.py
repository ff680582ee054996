"""Tables and figures of the What-if page (core/figures_whatif.py), from hand-built results."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from test_whatif_scenario import user_policy_value

from core import figures_whatif
from core.whatif.scenario import ASSUMPTION, ESTIMATED, Effect, project

TRUTH = pd.DataFrame(
    {
        "policy": ["a", "b"],
        "click_rate": [0.1, 0.2],
        "retention_30d": [0.21, 0.26],
        "revenue_90d_per_user": [5.0, 6.0],
    }
)


def test_truth_value_reads_one_policy() -> None:
    assert figures_whatif.truth_value(TRUTH, "b", "click_rate") == 0.2
    assert figures_whatif.truth_value(TRUTH, "c", "click_rate") is None
    assert figures_whatif.truth_value(None, "a", "click_rate") is None


def test_click_rate_table_and_figure() -> None:
    estimates = pd.DataFrame(
        {"estimator": ["ipw", "dr"], "value": [0.11, 0.12], "ci_low": [0.09, 0.1], "ci_high": [0.13, 0.15]}
    )
    table = figures_whatif.click_rate_table(estimates, "policy:a", 0.1)
    assert table.columns.tolist() == list(figures_whatif.ESTIMATE_COLUMNS)
    assert table[figures_whatif.TRUTH_LABEL].tolist() == [0.1, 0.1]
    figure = figures_whatif.estimates_figure(table, 0.105, "t", "click rate", percent=True)
    estimate, truth = figure.data
    assert list(estimate.x) == [0.11, 0.12]
    assert list(estimate.error_x.array) == pytest.approx([0.02, 0.03])
    assert list(estimate.error_x.arrayminus) == pytest.approx([0.02, 0.02])
    assert truth.name == figures_whatif.TRUTH_LABEL and list(truth.x) == [0.1, 0.1]
    assert any(shape.x0 == 0.105 for shape in figure.layout.shapes)
    no_truth = figures_whatif.estimates_figure(
        figures_whatif.click_rate_table(estimates, "uniform", None), None, "t", "v"
    )
    assert len(no_truth.data) == 1 and not no_truth.layout.shapes


def test_user_policy_table_has_target_policies_logged_and_truth() -> None:
    result = user_policy_value()
    table = figures_whatif.user_policy_table(result, TRUTH, "retention_30d")
    assert table["policy"].tolist() == ["everyone a", "everyone b", "logged"]
    assert table[figures_whatif.TRUTH_LABEL].iloc[:2].tolist() == [0.21, 0.26]
    assert np.isnan(table[figures_whatif.TRUTH_LABEL].iloc[2])
    assert table.loc[table["policy"] == "logged", "value"].item() == 0.22
    rule = user_policy_value(target="rule")
    rule_table = figures_whatif.user_policy_table(rule, TRUTH, "retention_30d")
    assert rule_table["policy"].tolist()[0] == "rule"
    assert np.isnan(rule_table[figures_whatif.TRUTH_LABEL].iloc[0])
    figure = figures_whatif.estimates_figure(rule_table, rule.logged_value, "t", "retention", percent=True)
    assert len(figure.data[0].x) == 3


def test_survival_figure_draws_each_policys_band() -> None:
    curve = pd.DataFrame(
        {
            "policy": ["a"] * 3 + ["b"] * 3,
            "day": [0.0, 30.0, 90.0] * 2,
            "survival": [1, 0.6, 0.3, 1, 0.5, 0.2],
            "ci_low": [1, 0.5, 0.2, np.nan, np.nan, np.nan],
            "ci_high": [1, 0.7, 0.4, np.nan, np.nan, np.nan],
        }
    )
    figure = figures_whatif.survival_figure(curve)
    band, line_a, line_b = figure.data
    assert band.fill == "toself" and not band.showlegend
    assert list(band.x) == [0, 30, 90, 90, 30, 0]
    assert list(band.y) == [1, 0.7, 0.4, 0.2, 0.5, 1]
    assert [line_a.name, line_b.name] == ["a", "b"]
    assert list(line_a.y) == [1, 0.6, 0.3] and line_a.line.color == band.fillcolor
    both = figures_whatif.survival_figure(curve.assign(ci_low=curve["survival"] - 0.05, ci_high=1.0))
    assert [trace.fill for trace in both.data] == ["toself", None, "toself", None]
    table = figures_whatif.survival_table(curve, [90, 30])
    assert table[["policy", "day"]].values.tolist() == [["a", 30.0], ["a", 90.0], ["b", 30.0], ["b", 90.0]]
    assert table.loc[0, "ci_low"] == 0.5 and table.loc[0, "ci_high"] == 0.7


def test_attribute_values_table_counts_and_cuts_values() -> None:
    values = [str(day) for day in range(1, 16)]
    table = figures_whatif.attribute_values_table(
        {"platform": ["android", "ios"], "day": values, "empty": []}, 12
    )
    assert table["attribute"].tolist() == ["platform", "day", "empty"]
    assert table["value_count"].tolist() == [2, 15, 0]
    assert table.loc[0, "values"] == "android, ios"
    assert table.loc[1, "values"] == ", ".join(values[:12]) + ", ... (3 more)"
    assert table.loc[2, "values"] == ""


def test_scenario_figure_marks_assumptions() -> None:
    users = pd.DataFrame({"user_id": ["a", "b"], "retained_prob": [0.5, 0.5], "revenue": [10.0, 20.0]})
    projection = project(users, Effect(0.1, 0.0, 0.2, ESTIMATED), Effect.assumed(0.1))
    figure = figures_whatif.scenario_figure(projection)
    bars = {(trace.xaxis, trace.x[0]): trace for trace in figure.data}
    assert set(bars) == {
        ("x", "current (estimated)"),
        ("x", "chosen (estimated)"),
        ("x2", "current (estimated)"),
        ("x2", f"chosen ({ASSUMPTION})"),
    }
    assert bars[("x2", f"chosen ({ASSUMPTION})")].marker.pattern.shape == "/"
    chosen = bars[("x", "chosen (estimated)")]
    assert chosen.y[0] == pytest.approx(1.1) and chosen.error_y.array[0] == pytest.approx(0.1)


def test_estimates_json_turns_nan_into_null() -> None:
    text = figures_whatif.estimates_json(
        {"a": pd.DataFrame({"x": [1.0, np.nan]}), "b": np.float64(2.5), "c": float("nan")}
    )
    assert json.loads(text) == {"a": [{"x": 1.0}, {"x": None}], "b": 2.5, "c": None}
