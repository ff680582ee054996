"""Entry for direct links served before the app shell has registered its pages.

See ``pages/__init__.py``: the files at the top of ``pages/`` exist only so that a shared link
opened as the first request after a start finds its page; each runs ``app.py``, whose
``st.navigation`` then routes to the real page in its group folder.
"""

from __future__ import annotations

import runpy
from pathlib import Path

APP_SCRIPT = Path(__file__).resolve().parents[2] / "app.py"


def run_app_shell() -> None:
    runpy.run_path(str(APP_SCRIPT), run_name="__main__")
