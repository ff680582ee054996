"""Cold page loads: how long each page of the app takes to run the first time, on the sample store.

Usage: python bench/bench_pages.py [--store sample_data/tenure.duckdb] [--repeat 1]

Each page runs in a fresh process (so no cached result is reused) under
``streamlit.testing.v1.AppTest``, on a copy of the store; the time is that of the page's first
run after the home page, the same work a browser session does when it opens the page. Timings
exclude the browser's drawing.

The Experiments and What-if pages run only their open tab's work. The script also opens each of
their tabs cold, one per process. For the Experiments page it estimates what one cold visit would
cost if every tab ran: the sum of the tabs' times with the part they share (listing and reviewing
the experiment) counted once. The shared part is taken to be the cheapest tab's whole time, which
it cannot exceed, so the estimate errs low. The What-if page's Downloads tab runs every estimate
that does not wait for a button, which is what each visit ran before.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PAGES = (
    ("pages/explore/retention.py", ""),
    ("pages/explore/survival.py", ""),
    ("pages/explore/lifecycle.py", ""),
    ("pages/explore/funnels.py", ""),
    ("pages/explore/stickiness.py", ""),
    ("pages/experiments/experiments.py", ""),
    ("pages/whatif/whatif.py", ""),
    ("pages/models/models.py", ""),
    ("pages/data/data.py", ""),
)
EXPERIMENT_PAGE = "pages/experiments/experiments.py"
# Pages that run only their open tab, with their tabs' names in the URL (the first opens by default).
TABBED_PAGES = {
    EXPERIMENT_PAGE: ("results", "over-time", "survival", "segments", "planning", "ltv"),
    "pages/whatif/whatif.py": ("click-rate", "long-term", "early-read", "scenario", "downloads"),
}
TIMEOUT_SECONDS = 600


def app_on_home_page(query: str):
    """An ``AppTest`` of the app after its home page's run, with ``query`` (``a=1&b=2``) in the
    URL for the next page (so that page is timed alone)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT_SECONDS)
    at.run()
    for pair in filter(None, query.split("&")):
        name, _, value = pair.partition("=")
        at.query_params[name] = value
    return at


def time_one_page(page: str, query: str) -> float:
    """Run in a child process: the seconds of ``page``'s first run (after the home page)."""
    at = app_on_home_page(query)
    started = time.perf_counter()
    at.switch_page(page).run()
    elapsed = time.perf_counter() - started
    if at.exception:
        raise SystemExit(f"{page}?{query}: the page raised {at.exception[0].value}")
    return elapsed


def cold_seconds(store: Path, page: str, query: str, repeat: int) -> float:
    """The best of ``repeat`` cold runs of ``page``, each in a new process on a new copy of ``store``."""
    timings = []
    for _ in range(max(1, repeat)):
        with tempfile.TemporaryDirectory() as folder:
            copy = Path(shutil.copy(store, Path(folder) / "store.duckdb"))
            output = subprocess.run(
                [sys.executable, __file__, "--child", page, query],
                env={**os.environ, "TENURE_DB": str(copy)},
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT,
            ).stdout
        timings.append(float(output.strip().splitlines()[-1]))
    return min(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=ROOT / "sample_data" / "tenure.duckdb")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--child", nargs=2, metavar=("PAGE", "QUERY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(f"{time_one_page(*args.child):.3f}")
        return
    for page, query in PAGES:
        seconds = cold_seconds(args.store, page, query, args.repeat)
        print(f"page  {page:<36} cold run {seconds:6.2f}s", flush=True)
    for page, names in TABBED_PAGES.items():
        tabs = {tab: cold_seconds(args.store, page, f"tab={tab}", args.repeat) for tab in names}
        first = names[0]
        shown = "  ".join(f"{tab}={seconds:.2f}s" for tab, seconds in tabs.items())
        if page == EXPERIMENT_PAGE:  # its tabs' work is disjoint beyond the shared review
            every_tab = sum(tabs.values()) - (len(tabs) - 1) * min(tabs.values())
            shown += f"  every tab, estimated {every_tab:.2f}s ({every_tab / tabs[first]:.1f}x)"
        print(f"{Path(page).stem}  open tab only ({first}) {tabs[first]:.2f}s  per tab: {shown}")


if __name__ == "__main__":
    main()
