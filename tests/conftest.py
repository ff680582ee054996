"""Shared fixtures: small simulated stores built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
from app_helpers import app, tiny_store  # noqa: F401  (the page tests' fixtures, shared)

from core.simulate import SimulationConfig, simulate_store
from core.store import Store

SAMPLE_DB = Path(__file__).resolve().parents[1] / "sample_data" / "tenure.duckdb"


@pytest.fixture(scope="session")
def small_store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated store of 800 users (seed 1) with every canonical table and the truth schema.

    Shared by many tests: treat it as read-only (open it with ``Store(path, read_only=True)``).
    """
    path = tmp_path_factory.mktemp("simulated") / "small.duckdb"
    simulate_store(path, SimulationConfig(users=800, seed=1))
    return path


@pytest.fixture(scope="module")
def sample_store() -> Store:
    """The default generated store (built by `make test`), read-only: its experiments and truth
    schema are what the A/B tests check against."""
    if not SAMPLE_DB.exists():
        pytest.fail(f"{SAMPLE_DB} is missing: run `make sample-data` (make test builds it)")
    with Store(SAMPLE_DB, read_only=True) as store:
        yield store
