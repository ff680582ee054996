"""Smoke test of bench/bench_models.py on the small simulated store: one model and the oracle."""

from __future__ import annotations

from pathlib import Path

from bench.bench_models import QUALITY_COLUMNS, markdown, run_case, sample_cases, select_models
from core.models.training import AVAILABLE_MODELS


def test_select_models_skips_unavailable_names() -> None:
    models, skipped = select_models("btyd, no-such-model,gbm")
    assert models == ["btyd", "gbm"]
    assert skipped == ["no-such-model"]
    assert set(models) <= set(AVAILABLE_MODELS)


def test_sample_case_reports_the_model_and_the_oracle(small_store_path: Path, tmp_path: Path) -> None:
    cases = sample_cases(small_store_path)
    # 2026-04-02's 90-day horizon ends at the period end, after the last event: only 2026-01-02 runs.
    assert [(case.split, case.spec.as_of.date().isoformat()) for case in cases] == [
        ("users", "2026-01-02"),
        ("backtest", "2026-01-02"),
    ]
    rows, folders = run_case(cases[0], ["btyd"], 0, tmp_path)
    assert [row["model"] for row in rows] == ["btyd", "oracle"]
    assert all(tuple(row) == QUALITY_COLUMNS for row in rows)
    model, oracle = rows
    assert model["eval_users"] == oracle["eval_users"] > 0
    assert model["ltv_mean_actual"] == oracle["ltv_mean_actual"]
    assert model["scored_users"] > model["eval_users"]
    assert model["users_per_s"] == model["scored_users"] / model["score_s"]
    assert oracle["train_s"] is None
    assert (folders["btyd"] / "model.json").is_file()
    table = markdown(rows, list(QUALITY_COLUMNS)).splitlines()
    assert len(table) == 4
    assert table[3].startswith("| sample | users | 2026-01-02 | 90 | oracle |")
