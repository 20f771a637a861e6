"""End to end in a real browser: a gzipped drift report opens in one click through the viewer.

A real Evidently page is stored the way ``drift_report`` stores it (shared script and font,
the page gzipped, the folder's viewer page) and served by the handler ``make reports`` runs
(``http.server``'s static files, 127.0.0.1, a free port); headless Chromium opens the link the
UI shows and must draw the report. A name the viewer refuses and a report that is not there
are shown as messages. Runtime: a few seconds (Chromium's start).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import pytest

from mlops_assets import ui_check
from mlops_assets.lib.report_assets import share_assets, store_page
from mlops_assets_tests.e2e.test_ui import require_chromium

pytestmark = pytest.mark.e2e

DAY = "2013-02-01"


def _report_page() -> str:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    frame = pd.DataFrame({"distance": [100.0, 250.0, 500.0, 1000.0] * 10})
    data = Dataset.from_pandas(
        frame, data_definition=DataDefinition(numerical_columns=["distance"])
    )
    return Report([DataDriftPreset()]).run(data, data).get_html_str(as_iframe=False)


@contextlib.contextmanager
def report_server(root: Path) -> Iterator[str]:
    """The static server of ``make reports`` over ``root``, in a thread; yields its URL."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("reports")
    page = share_assets(_report_page())
    stored = store_page("drift", DAY, page.html)
    for relative, payload in {
        **page.files,
        stored.relative: stored.payload,
        stored.viewer: stored.viewer_html,
    }.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(payload)
    with report_server(root) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    chromium = require_chromium()
    with sync_playwright() as playwright:
        launched = ui_check.launch_chromium(playwright, chromium)
        try:
            yield launched
        finally:
            launched.close()


def open_page(browser: Any, url: str) -> tuple[Any, list[str]]:
    """A new page at ``url``; the requests it made are listed as they happen."""
    page = browser.new_page()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(url, wait_until="load", timeout=30_000)
    return page, requests


def test_the_link_draws_the_gzipped_report(browser: Any, served: str) -> None:
    address = store_page("drift", DAY, "").address
    page, requests = open_page(browser, f"{served}/{address}")
    try:
        # Evidently draws the widgets into the root element; the column name is in them.
        page.wait_for_function(
            "() => document.querySelector('[id^=root_metric_]')?.innerText.includes('distance')",
            timeout=30_000,
        )
        assert "Loading the report" not in page.inner_text("body")
        assert f"{served}/drift/{DAY}.html.gz" in requests
        assert any(url.startswith(f"{served}/assets/evidently-") for url in requests)
        assert all(url.startswith(served) for url in requests), requests
    finally:
        page.close()


@pytest.mark.parametrize(
    ("report", "message"),
    [
        ("../assets/evidently", "No report named"),
        ("2013-02-02", "HTTP 404"),
    ],
)
def test_a_bad_or_missing_report_is_a_message(
    browser: Any, served: str, report: str, message: str
) -> None:
    page, requests = open_page(browser, f"{served}/drift/view.html?report={report}")
    try:
        page.wait_for_function(
            "() => !document.body.innerText.includes('Loading the report')", timeout=30_000
        )
        assert message in page.inner_text("#status")
        # Nothing but the viewer and the report it asked for: no other folder was reached.
        paths = {urlsplit(url).path for url in requests}
        assert paths <= {"/drift/view.html", f"/drift/{report}.html.gz"}, paths
    finally:
        page.close()
