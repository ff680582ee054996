"""The Models page's figures (core/figures_models.py): one trace per model holding the frames'
numbers, empty inputs explained in the figure."""

from __future__ import annotations

import numpy as np
import pandas as pd

from core import figures_models


def _traces(figure, name_part: str) -> list:
    return [trace for trace in figure.data if trace.name and name_part in trace.name]


def test_roc_figure_draws_each_model_over_the_diagonal() -> None:
    roc = pd.DataFrame(
        {
            "model_id": ["a", "a", "a", "b", "b", "b"],
            "threshold": [np.inf, 0.6, 0.2, np.inf, 0.5, 0.1],
            "fpr": [0.0, 0.25, 1.0, 0.0, 0.5, 1.0],
            "tpr": [0.0, 0.75, 1.0, 0.0, 0.5, 1.0],
        }
    )
    figure = figures_models.roc_figure(roc, aucs={"a": 0.81}, model_ids=["a", "b"])
    assert [trace.name for trace in figure.data] == ["chance", "a (AUC 0.810)", "b"]
    assert list(figure.data[1].x) == [0.0, 0.25, 1.0] and list(figure.data[1].y) == [0.0, 0.75, 1.0]
    assert figure.data[1].line.color != figure.data[2].line.color
    empty = figures_models.roc_figure(roc.iloc[0:0])
    assert not empty.data and "No model" in empty.layout.annotations[0].text


def test_pr_figure_has_a_curve_and_a_churn_rate_line_per_model() -> None:
    pr = pd.DataFrame(
        {
            "model_id": ["a"] * 3,
            "threshold": [np.inf, 0.7, 0.1],
            "recall": [0, 0.5, 1],
            "precision": [1, 1, 0.4],
        }
    )
    figure = figures_models.pr_figure(pr, base_rates={"a": 0.4}, aps={"a": 0.7})
    assert [trace.name for trace in figure.data] == ["a (AP 0.700)", "a churn rate"]
    assert list(figure.data[0].y) == [1, 1, 0.4]
    assert list(figure.data[1].y) == [0.4, 0.4]


def test_calibration_figure_has_raw_and_calibrated_panels_without_empty_bins() -> None:
    rows = []
    for which in ("raw", "calibrated"):
        for bin_index, users in enumerate([3, 0, 5]):
            rows.append(
                {
                    "model_id": "a",
                    "which": which,
                    "bin": bin_index,
                    "users": users,
                    "mean_predicted": np.nan if users == 0 else 0.1 + 0.3 * bin_index,
                    "observed_rate": np.nan if users == 0 else 0.2 * bin_index + (which == "raw") * 0.1,
                }
            )
    figure = figures_models.calibration_figure(pd.DataFrame(rows))
    models = [trace for trace in figure.data if trace.name == "a"]
    assert len(models) == 2
    raw, calibrated = models
    assert list(raw.x) == [0.1, 0.7] and list(raw.y) == [0.1, 0.5]
    assert list(calibrated.y) == [0.0, 0.4]
    assert raw.xaxis == "x" and calibrated.xaxis == "x2"
    assert [annotation.text for annotation in figure.layout.annotations] == ["Raw", "Calibrated"]


def test_decile_figure_pairs_actual_bars_with_predicted_lines() -> None:
    deciles = pd.DataFrame(
        {
            "model_id": ["a"] * 3,
            "decile": [1, 2, 3],
            "users": [10, 10, 10],
            "mean_predicted": [30.0, 20.0, 5.0],
            "mean_actual": [28.0, 15.0, 7.0],
        }
    )
    figure = figures_models.decile_figure(deciles)
    (bars,) = _traces(figure, "actual")
    (line,) = _traces(figure, "predicted")
    assert bars.type == "bar" and list(bars.y) == [28.0, 15.0, 7.0]
    assert line.type == "scatter" and list(line.y) == [30.0, 20.0, 5.0]


def test_timeline_figure_marks_the_windows_and_the_dates() -> None:
    events = pd.DataFrame(
        {
            "event_time": pd.to_datetime(["2026-01-01", "2026-02-01", "2026-03-05"]),
            "event_name": ["view", "purchase", "view"],
            "revenue": [0.0, 25.0, 0.0],
            "window": ["before", "before", "after"],
        }
    )
    as_of, end = pd.Timestamp("2026-03-01"), pd.Timestamp("2026-05-30")
    figure = figures_models.timeline_figure(events, as_of, end)
    assert [trace.name for trace in figure.data] == ["before as-of", "after as-of"]
    before = figure.data[0]
    assert list(before.y) == ["view", "purchase"] and before.marker.size[1] > before.marker.size[0]
    assert len(figure.layout.shapes) == 2
    assert {annotation.text for annotation in figure.layout.annotations} == {"as-of", "horizon end"}
