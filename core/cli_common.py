"""Pieces every `python -m core` subcommand shares: the --db flag, printing a table, progress.

Each feature's subcommand lives in its own ``core/cli_<feature>.py`` with a
``register(commands)`` function that ``core/cli.py`` calls, so commands grow without one file
holding them all.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from core.errors import TenureError

if TYPE_CHECKING:
    import pandas as pd


def key_value_pairs(pairs: Sequence[str] | None, flag: str) -> dict[str, str]:
    """``['a=b', 'c=d']`` -> ``{'a': 'b', 'c': 'd'}``; a pair without ``=`` is bad input."""
    parsed: dict[str, str] = {}
    for pair in pairs or ():
        key, separator, value = pair.partition("=")
        if not separator or not key.strip():
            raise TenureError(
                f"{flag} '{pair}' is not of the form NAME=VALUE", f"for example {flag} user=user_id"
            )
        parsed[key.strip()] = value
    return parsed


def add_db_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        metavar="PATH",
        help="DuckDB store file (default: $TENURE_DB, else sample_data/tenure.duckdb)",
    )


def add_format_flag(parser: argparse.ArgumentParser, default: str = "csv") -> None:
    parser.add_argument(
        "--format", choices=["csv", "json"], default=default, help=f"output format (default {default})"
    )


def print_frame(frame: pd.DataFrame, output_format: str) -> None:
    """A table on stdout: CSV with formulas neutralised, or JSON records with ISO dates."""
    from core.export import neutralise_formulas

    if output_format == "json":
        print(frame.to_json(orient="records", date_format="iso", double_precision=10))
    else:
        sys.stdout.write(neutralise_formulas(frame).to_csv(index=False))


def stderr_progress(fraction: float, message: str) -> None:
    """One line updated in place on a terminal; one line per step in a log file."""
    if sys.stderr.isatty():
        sys.stderr.write(f"\r[{fraction:6.1%}] {message:<60}")
        if fraction >= 1:
            sys.stderr.write("\n")
    else:
        sys.stderr.write(f"[{fraction:6.1%}] {message}\n")
    sys.stderr.flush()
