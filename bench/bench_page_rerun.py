"""What one page costs the server on each run: a cold run, then reruns with every result cached.

Usage: python bench/bench_page_rerun.py [--page pages/explore/retention.py] [--query "period=day"]
       [--store sample_data/tenure.duckdb] [--reruns 5]

A page's script runs again on every widget change, so the work it does after its cached results
(building figures, writing downloads) is paid on each click. The script runs the page under
``streamlit.testing.v1.AppTest`` on a copy of the store: once cold, then ``--reruns`` times with
the same controls (every cached call answered from the cache). It prints the cold time, the best
rerun, and what one run sends to the browser: the Plotly figures' JSON (what ``st.plotly_chart``
serialises) and the CSV text written for download buttons during the run.
Timings exclude the browser's drawing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_pages import app_on_home_page  # noqa: E402 (after the path is set)


class Sizes:
    """Counts the bytes of figure JSON and download CSV that a page run produces."""

    def __init__(self) -> None:
        self.figure_bytes = 0
        self.csv_bytes = 0

    def install(self) -> None:
        import plotly.io

        import pages.shared.ui as ui

        to_json, to_csv = plotly.io.to_json, ui.to_safe_csv

        def counted_json(*args, **kwargs):
            text = to_json(*args, **kwargs)
            self.figure_bytes += len(text)
            return text

        def counted_csv(*args, **kwargs):
            text = to_csv(*args, **kwargs)
            self.csv_bytes += len(text)
            return text

        plotly.io.to_json = counted_json
        ui.to_safe_csv = counted_csv

    def reset(self) -> None:
        self.figure_bytes = self.csv_bytes = 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--page", default="pages/explore/retention.py")
    parser.add_argument("--query", default="period=day")
    parser.add_argument("--store", type=Path, default=ROOT / "sample_data" / "tenure.duckdb")
    parser.add_argument("--reruns", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        os.environ["TENURE_DB"] = str(shutil.copy(args.store, Path(folder) / "store.duckdb"))
        sizes = Sizes()
        sizes.install()
        at = app_on_home_page(args.query)
        sizes.reset()
        started = time.perf_counter()
        at.switch_page(args.page).run()
        cold = time.perf_counter() - started
        if at.exception:
            raise SystemExit(f"{args.page}?{args.query}: the page raised {at.exception[0].value}")
        reruns = []
        for _ in range(max(1, args.reruns)):
            sizes.reset()
            started = time.perf_counter()
            at.run()
            reruns.append(time.perf_counter() - started)
    print(
        f"page  {args.page}?{args.query}  cold {cold:.2f}s  rerun {min(reruns):.2f}s (best of {len(reruns)})  "
        f"figures {sizes.figure_bytes / 1e6:.2f} MB  csv written {sizes.csv_bytes / 1e6:.2f} MB per run"
    )


if __name__ == "__main__":
    main()
