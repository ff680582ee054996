"""The real app in a real browser: `streamlit run app.py` against a tiny store, each page opened in
Debian's headless Chromium, failing on any exception box or error in the browser console.

Full-page screenshots land in tests/screenshots/ (gitignored) for a look by eye.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from app_helpers import build_tiny_store

from core.store import Store

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "tests" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Resource failures are checked through the responses themselves (is_app_failure): the console
# line carries no URL, and resources from other hosts cannot load on an offline machine.
RESOURCE_ERROR = "Failed to load resource"
SERVER_START_SECONDS = 90
PAGE_SECONDS = 60
# (path and query, heading the page shows when it has finished, screenshot name)
# A shared link is often the first request a freshly started server gets: the deep link comes
# first so that the test covers it (no "Page not found", the shell and its filters drawn).
PAGES = (
    ("/retention?period=day&by=country", "Retention", "retention"),
    ("/survival?by=country&cox=plan", "Survival", "survival"),
    ("/lifecycle?period=week", "Lifecycle", "lifecycle"),
    ("/funnels?steps=session_start,view,purchase&window=30d&by=country", "Funnels", "funnels"),
    ("/stickiness?span=4w", "Stickiness", "stickiness"),
    ("/experiments?correction=bh&cuped=1", "Experiments", "experiments"),
    # Only the open tab runs: each other tab is opened from its URL.
    ("/experiments?tab=over-time", "Experiments", "experiments_over_time"),
    ("/experiments?tab=survival", "Experiments", "experiments_survival"),
    ("/experiments?tab=segments", "Experiments", "experiments_segments"),
    ("/experiments?tab=planning", "Experiments", "experiments_planning"),
    ("/experiments?tab=ltv", "Experiments", "experiments_ltv"),
    ("/whatif?horizon=30&estimators=ipw&resamples=20", "What-if", "whatif"),
    ("/whatif?tab=long-term", "What-if", "whatif_long_term"),
    ("/whatif?tab=scenario&horizon=30", "What-if", "whatif_scenario"),
    ("/models", "Models", "models"),
    ("/score", "Score", "score"),
    ("/data", "Data", "data"),
    ("/", "tiny", "home"),
    ("/?seg.country=US&from=2025-09-10", "tiny", "home_filtered"),
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (make chromium)"),
]


def is_app_failure(server_url: str, url: str, status: int) -> bool:
    """A failed response from the app's own server, other than the frontend's base-path probes.

    On a page like /retention the frontend first asks /retention/_stcore/health and host-config
    (to find a base path the app might be served under) and gets 404s: that is expected.
    """
    if status < 400 or not url.startswith(server_url):
        return False
    path = url.removeprefix(server_url).split("?")[0]
    return not (status == 404 and "/_stcore/" in path and not path.startswith("/_stcore/"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_healthy(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"streamlit exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(
        f"streamlit did not answer {url}/_stcore/health in {SERVER_START_SECONDS}s:\n{log.read_text()}"
    )


def add_tiny_experiment(path: Path) -> None:
    """Every tiny user in a two-variant experiment from their first event, so the Experiments
    page renders a whole review (table, charts, survival, segments, planning) in the browser."""
    with Store(path) as store, store.transaction() as cursor:
        cursor.execute(
            "INSERT INTO assignments (user_id, experiment, variant, assigned_time, propensity) "
            "SELECT user_id, 'tiny_test', CASE WHEN hash(user_id) % 2 = 0 THEN 'control' ELSE 'treatment' END, "
            "min(event_time), 0.5 FROM events GROUP BY user_id"
        )


def add_tiny_recommendations(path: Path) -> None:
    """Two logged policies over the tiny users (3 requests each, 2 positions, 4 items, uniform
    propensities), so the What-if page offers its click-rate view in the browser."""
    with Store(path) as store, store.transaction() as cursor:
        cursor.execute(
            "INSERT INTO recommendations (rec_time, request_id, user_id, policy, item_id, position, propensity, reward) "
            "SELECT min(e.event_time) + to_days(CAST(r.n AS INTEGER)), e.user_id || '-' || r.n, e.user_id, "
            "CASE WHEN hash(e.user_id) % 2 = 0 THEN 'popular' ELSE 'random' END, "
            "'i' || ((hash(e.user_id) + r.n + p.position) % 4), p.position, 0.25, "
            "CAST((hash(e.user_id) + r.n * p.position) % 5 = 0 AS DOUBLE) "
            "FROM events e, range(3) r(n), (VALUES (1), (2)) p(position) GROUP BY e.user_id, r.n, p.position"
        )


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("browser")
    store = folder / "tiny.duckdb"
    build_tiny_store(store)
    add_tiny_experiment(store)
    add_tiny_recommendations(store)
    port = free_port()
    log = folder / "streamlit.log"
    env = {**os.environ, "TENURE_DB": str(store)}
    with log.open("w") as output:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                "app.py",
                "--server.port",
                str(port),
                "--server.address",
                "127.0.0.1",
                "--server.headless",
                "true",
                "--server.fileWatcherType",
                "none",
                "--browser.gatherUsageStats",
                "false",
            ],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(url, server, log)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=15)


def test_every_page_renders_in_chromium(server_url: str) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1440, "height": 1000})
            for path, heading, name in PAGES:
                page = context.new_page()
                console_errors: list[str] = []
                page.on(
                    "console",
                    lambda message, errors=console_errors: (
                        errors.append(message.text)
                        if message.type == "error" and not message.text.startswith(RESOURCE_ERROR)
                        else None
                    ),
                )
                page.on("pageerror", lambda error, errors=console_errors: errors.append(str(error)))
                page.on(
                    "response",
                    lambda response, errors=console_errors: (
                        errors.append(f"HTTP {response.status} for {response.url}")
                        if is_app_failure(server_url, response.url, response.status)
                        else None
                    ),
                )
                page.goto(server_url + path, timeout=PAGE_SECONDS * 1000)
                page.get_by_role("heading", name=heading, exact=True).first.wait_for(
                    timeout=PAGE_SECONDS * 1000
                )
                wait_until_idle(page)
                # The app scrolls inside its main container: grow the window to the content's height.
                height = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
                page.set_viewport_size({"width": 1440, "height": min(max(int(height), 1000), 8000)})
                wait_until_idle(page)
                page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
                if page.get_by_text("Page not found").count():
                    problems.append(f"{path}: 'Page not found' shown")
                if not page.get_by_text("Filters").count():
                    problems.append(f"{path}: the sidebar's global filters are missing")
                exceptions = page.locator('[data-testid="stException"]')
                if exceptions.count():
                    problems.append(f"{path}: exception shown: {exceptions.first.inner_text()[:500]}")
                problems += [f"{path}: console error: {text}" for text in console_errors]
                page.close()
        finally:
            browser.close()
    assert not problems, "\n".join(problems)


def test_a_table_downloads_as_the_core_computes_it(server_url: str, tmp_path: Path) -> None:
    """A download button writes its CSV only when clicked: the file must still be the whole table."""
    sync_api = pytest.importorskip("playwright.sync_api")
    from core.export import to_safe_csv
    from core.population import Filters
    from core.retention import RetentionSpec, retention_table

    # The server's store is built by the same deterministic function; retention reads only events.
    build_tiny_store(tmp_path / "same.duckdb")
    with Store(tmp_path / "same.duckdb", read_only=True) as store:
        expected = to_safe_csv(retention_table(store, RetentionSpec(), Filters()))
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(accept_downloads=True).new_page()
            page.goto(server_url + "/retention", timeout=PAGE_SECONDS * 1000)
            page.get_by_role("heading", name="Retention", exact=True).first.wait_for(
                timeout=PAGE_SECONDS * 1000
            )
            wait_until_idle(page)
            page.get_by_text("Retention table", exact=True).click()
            with page.expect_download(timeout=PAGE_SECONDS * 1000) as download:
                page.get_by_role("button", name="Download CSV").first.click()
            assert download.value.suggested_filename == "retention_week_classic.csv"
            saved = tmp_path / "downloaded.csv"
            download.value.save_as(saved)
        finally:
            browser.close()
    assert saved.read_text(encoding="utf-8") == expected


def script_state(page) -> str | None:
    """The app's script-run state as its root element tells it (``running``, ``notRunning``, ...).

    The header's status widget is no witness: with the minimal toolbar it stays hidden while a
    script runs, so a page could look idle for seconds before its last elements (or an
    exception) arrive.
    """
    return page.evaluate(
        "() => document.querySelector('[data-testid=\"stApp\"]')?.getAttribute('data-test-script-state') ?? null"
    )


def wait_until_idle(page) -> None:
    """Wait until the script run is over and every element is drawn, and stays so for a moment."""
    deadline = time.monotonic() + PAGE_SECONDS
    quiet_since = None
    while time.monotonic() < deadline:
        running = (
            script_state(page) != "notRunning"
            or page.locator('[data-testid="stStatusWidget"]').count() > 0
            or page.locator('[data-testid="stSkeleton"]').count() > 0
        )
        if running:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > 1.5:
            return
        page.wait_for_timeout(250)
    raise AssertionError("the app kept running for longer than the page timeout")
