"""The Experiments page's model-based metric: a registered 90-day BG/NBD model scores the users
of a small experiment on demand, and its row is shown marked as model-based."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from app_helpers import APP, open_tab, table_with
from model_helpers import AS_OF, HORIZON_DAYS, SEED
from streamlit.testing.v1 import AppTest

from core.experiments.ltv import predicted_ltv
from core.experiments.summary import LTV_LABEL
from core.models import registry
from core.models.spec import ModelSpec
from core.models.training import train_models
from core.store import Store

PAGE = "pages/experiments/experiments.py"
EXPERIMENT = "ltv_page_exp"
ASSIGNMENT_DAYS = pd.date_range("2026-02-02", periods=3, freq="D")
DAYS = 14


@pytest.fixture(scope="module")
def store_with_model(small_store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A copy of the simulated store with a 120-user experiment and a registered BG/NBD model."""
    folder = tmp_path_factory.mktemp("ltv_page")
    path = Path(shutil.copy(small_store_path, folder / "store.duckdb"))
    with Store(path) as store:
        users = store.query_df(
            "SELECT user_id FROM events GROUP BY user_id HAVING min(event_time) < '2026-02-01' "
            "ORDER BY user_id LIMIT 120"
        )["user_id"].tolist()
        rows = [
            (
                user,
                EXPERIMENT,
                "control" if index % 2 == 0 else "treatment",
                (ASSIGNMENT_DAYS[index % 3] + pd.Timedelta(hours=index % 24)).to_pydatetime(),
            )
            for index, user in enumerate(users)
        ]
        with store.transaction() as cursor:
            cursor.executemany(
                "INSERT INTO assignments (user_id, experiment, variant, assigned_time) VALUES (?, ?, ?, ?)",
                rows,
            )
        run_dir = folder / "models"
        train_models(store, ModelSpec(AS_OF, HORIZON_DAYS), ["btyd"], "users", SEED, run_dir)
        registry.register(store, run_dir)
    return path, run_dir / "btyd"


def test_predicted_ltv_is_computed_on_demand_and_marked_model_based(
    store_with_model: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, model = store_with_model
    monkeypatch.setenv("TENURE_DB", str(path))
    at = AppTest.from_file(APP, default_timeout=300)
    at.query_params["experiment"] = EXPERIMENT
    at.query_params["metrics"] = "revenue"
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    assert LTV_LABEL not in set(table_with(at, "metric", "variant", "p-value")["metric"])
    open_tab(at, "exp_tab", "Predicted LTV")
    chooser = at.selectbox(key="exp_ltv_model")  # named by its registry id, as on the Models page
    assert chooser.options == ["models/btyd"] and chooser.value == str(model)
    next(button for button in at.button if button.label == "Compute predicted LTV").click().run()
    assert not at.exception, at.exception
    assert list(table_with(at, "metric", "variant", "p-value")["metric"]) == [LTV_LABEL]
    assert any("model-based" in text.value for text in at.caption)
    open_tab(at, "exp_tab", "Results")  # the computed rows join the review's table
    results = table_with(at, "metric", "variant", "control value", "variant value").set_index("metric")
    assert list(results.index) == ["revenue per user over 14 days", LTV_LABEL]
    with Store(path) as store:  # the app holds the file open: same configuration
        scored = predicted_ltv(store, EXPERIMENT, model, DAYS)
    scored = scored[scored["status"] == "scored"]
    for column, variant in (("control value", "control"), ("variant value", "treatment")):
        expected = float(np.mean(scored.loc[scored["variant"] == variant, "ltv_pred"]))
        assert results.loc[LTV_LABEL, column] == f"{expected:,.2f}"
    assert results.loc[LTV_LABEL, "adjusted p (Holm)"] != "n/a"
