"""Shared by the registry, job and Models page tests: a small simulated store with enough history
to train on, and a tiny training run."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from core.models.gbm import GBMConfig
from core.models.sequence_config import SequenceConfig
from core.models.spec import ModelSpec
from core.models.training import train_models
from core.simulate import SimulationConfig, simulate_store
from core.store import Store

AS_OF = "2026-03-01"
HORIZON_DAYS = 90
SEED = 0
TINY_GBM = GBMConfig(num_trees=5)


def build_model_store(path: Path, users: int = 300) -> Path:
    """A simulated store (seed 1) of ``users`` users over a year from 2025-07-01."""
    simulate_store(path, SimulationConfig(users=users, seed=1))
    return path


def copy_store(source: Path, target: Path) -> Path:
    """A private copy of a store file, for tests that write to it."""
    shutil.copy(source, target)
    return target


TINY_SEQUENCE = SequenceConfig(max_epochs=2, max_events=8, hidden=16, layers=1, heads=2, batch_size=64)


def train_run(store_path: Path, out: Path, models: Sequence[str] = ("btyd", "gbm")) -> Path:
    """Train ``models`` (tiny GBM and sequence models) at ``AS_OF`` on the store, read-only;
    returns the run folder."""
    with Store(store_path, read_only=True) as store:
        train_models(
            store,
            ModelSpec(AS_OF, HORIZON_DAYS),
            list(models),
            "users",
            SEED,
            out,
            gbm_config=TINY_GBM,
            sequence_config=TINY_SEQUENCE,
        )
    return out
