"""Shared by the tests of scoring an uploaded file: models trained on the simulated store, and that
store's events and users written out as the files a user would upload. Each test module wraps
these in its own fixtures."""

from __future__ import annotations

from pathlib import Path

import duckdb

from core.cli import main

AS_OF = "2026-03-01"


def export(store_path: Path, sql: str, target: Path) -> Path:
    """Write the rows of ``sql`` on the store file as a CSV with a header (DuckDB's own COPY)."""
    with duckdb.connect(str(store_path), read_only=True) as connection:
        connection.execute(f"COPY ({sql}) TO '{target}' (HEADER, DELIMITER ',')")
    return target


def train_models_at_as_of(store_path: Path, out: Path) -> Path:
    """``train --model all`` on the store at AS_OF, with tiny boosters and sequence models; returns ``out``."""
    args = ["train", "--db", str(store_path), "--as-of", AS_OF, "--model", "all", "--trees", "15"]
    args += ["--epochs", "2", "--max-events", "8", "--no-register"]
    assert main([*args, "--out", str(out)]) == 0
    return out


def export_events(store_path: Path, target: Path) -> Path:
    """Every event of the store, as user_id, event_time, event_name, revenue."""
    return export(store_path, "SELECT user_id, event_time, event_name, revenue FROM events", target)


def export_users(store_path: Path, target: Path) -> Path:
    """The store's users table (their attributes)."""
    return export(store_path, "SELECT * FROM users", target)
