"""What every saved model folder shares: ``model.json`` beside the model's own text files.

Models are saved as JSON (and, for boosted trees, LightGBM's text format): nothing is ever
pickled, so a model folder from anyone can be loaded without running code from it.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

MODEL_FILE = "model.json"


def library_versions(**extra: str) -> dict[str, str]:
    """The versions that produced a model (Python, numpy, pandas, duckdb, plus ``extra``)."""
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "duckdb": duckdb.__version__,
        **extra,
    }


def write_model_json(directory: Path, document: dict[str, Any]) -> Path:
    """Write ``document`` as ``directory/model.json`` (sorted keys, UTF-8); returns the path."""
    path = directory / MODEL_FILE
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path
