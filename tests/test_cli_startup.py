"""The command line starts fast: building its parser imports no heavy library.

Every ``python -m core`` command builds the whole parser first; a module that imports pandas,
scipy, LightGBM or PyTorch at registration makes even ``--help`` take seconds.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("pandas", "numpy", "scipy", "lightgbm", "torch", "tea_tasting", "duckdb", "lifelines")


def test_building_the_parser_imports_no_heavy_library() -> None:
    code = (
        "import sys\n"
        "from core.cli import build_parser\n"
        "build_parser()\n"
        f"print(','.join(name for name in {HEAVY!r} if name in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
