"""The oracle's predictions are the simulator's truth rows, for the right users, or a clear refusal."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from core.errors import TenureError
from core.models.labels import labels
from core.models.oracle import ORACLE_COLUMNS, has_truth, oracle_predictions, truth_dates
from core.models.spec import ModelSpec
from core.store import Store

AS_OF = pd.Timestamp("2026-01-02")  # the default run's period end (2026-07-01) minus 180 days


def _direct(path: Path, as_of: pd.Timestamp, horizon: int) -> pd.DataFrame:
    """truth.user_outcomes read with plain DuckDB, without the store layer."""
    connection = duckdb.connect(str(path), read_only=True)
    try:
        return connection.execute(
            "SELECT user_id, churn_prob, expected_revenue FROM truth.user_outcomes "
            "WHERE as_of = ? AND horizon_days = ?",
            [as_of.to_pydatetime(), horizon],
        ).df()
    finally:
        connection.close()


def test_oracle_returns_the_truth_rows(small_store_path: Path) -> None:
    expected = _direct(small_store_path, AS_OF, 90).sort_values("user_id", ignore_index=True)
    assert len(expected) > 100
    with Store(small_store_path, read_only=True) as store:
        oracle = oracle_predictions(store, ModelSpec(AS_OF, horizon_days=90))
    assert tuple(oracle.columns) == ORACLE_COLUMNS
    assert oracle["user_id"].tolist() == expected["user_id"].tolist()
    np.testing.assert_allclose(oracle["churn_prob"], expected["churn_prob"])
    np.testing.assert_allclose(oracle["ltv_pred"], expected["expected_revenue"])


def test_oracle_covers_exactly_the_model_population(small_store_path: Path) -> None:
    """Every user who started before T has a truth row, and nobody else: the oracle can score them all."""
    spec = ModelSpec(AS_OF, horizon_days=90)
    with Store(small_store_path, read_only=True) as store:
        oracle = oracle_predictions(store, spec)
        observed = labels(store, spec)
    assert set(oracle["user_id"]) == set(observed["user_id"])
    joined = observed.merge(oracle, on="user_id")
    # The truth is the mean of many continuations; one observed future is close to it on average.
    assert abs(joined["churn_prob"].mean() - joined["churned"].mean()) < 0.05
    assert (
        joined.loc[joined["churned"], "churn_prob"].mean()
        > joined.loc[~joined["churned"], "churn_prob"].mean()
    )


def test_truth_dates_lists_each_as_of(small_store_path: Path) -> None:
    with Store(small_store_path, read_only=True) as store:
        dates = truth_dates(store)
    assert dates["as_of"].tolist() == [pd.Timestamp("2026-01-02"), pd.Timestamp("2026-04-02")]
    assert dates["horizon_days"].tolist() == [90, 90]
    for row in dates.itertuples(index=False):
        assert row.users == len(_direct(small_store_path, pd.Timestamp(row.as_of), 90))


def test_oracle_refuses_a_date_without_truth(small_store_path: Path) -> None:
    with Store(small_store_path, read_only=True) as store, pytest.raises(TenureError) as raised:
        oracle_predictions(store, ModelSpec(pd.Timestamp("2026-02-01"), horizon_days=90))
    assert "2026-02-01" in raised.value.message
    assert "2026-01-02T00:00:00 / 90 days" in raised.value.hint


def test_oracle_refuses_other_activity(small_store_path: Path) -> None:
    with Store(small_store_path, read_only=True) as store, pytest.raises(TenureError):
        oracle_predictions(store, ModelSpec(AS_OF, horizon_days=90, activity_events=("purchase",)))


def test_oracle_refuses_a_store_without_truth() -> None:
    with Store(":memory:") as store:
        assert not has_truth(store)
        with pytest.raises(TenureError) as raised:
            oracle_predictions(store, ModelSpec(AS_OF, horizon_days=90))
    assert "truth.user_outcomes" in raised.value.message
