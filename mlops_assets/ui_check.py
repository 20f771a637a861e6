"""A real-browser check of the Dagster UI: the global asset lineage graph in headless Chromium.

Starts the project's UI the way a developer does (``mlops-assets dev``) on a state folder and
a free port of 127.0.0.1, waits (bounded) until the webserver answers and the code location
has loaded, opens the global asset lineage page (``/asset-groups``, every group expanded) in
headless Chromium, waits until the graph shows a node for every asset of the code location,
saves a PNG screenshot and stops the server with everything it started.

The expected asset and group names come from ``mlops_assets.definitions.defs``, so an asset
added to the project is required on the page without touching this file.

Usage (default screenshot: ``<state>/ui/lineage.png``; exit code 1 if something is missing,
2 if the check could not run)::

    uv run mlops-assets ui-check --state DIR --out FILE

Browser: Debian's Chromium (``apt-get install -y --no-install-recommends chromium``), driven
by the ``playwright`` package with ``executable_path``: Playwright's own browser download is
never used. ``MLOPS_CHROMIUM`` or ``--chromium`` names another binary. Playwright is a
development dependency, imported only when the check runs: this is a check for developers and
CI, and the production image (``uv sync --no-dev``) carries neither it nor a browser.

Only 127.0.0.1 is contacted: Chromium runs without background networking, component updates,
sync or proxy, and the page may request nothing but the server under test (``blob:`` and
``data:`` URLs aside); anything else is aborted and listed in the report.

Selectors (Dagster 1.13 webapp; CSS-module class names keep their ``File_class__`` prefix):
an asset node is an SVG ``foreignObject`` holding ``[class*="AssetNode_assetName__"]`` (its
``[data-tooltip]`` child carries the full name when nodes are drawn in full; zoomed out,
the name is the text, middle-truncated past 18 characters); a group box is a
``foreignObject.group`` whose ``[data-tooltip]`` is the group name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from mlops_assets import settings
from mlops_assets.dev_server import LOCATION, REPOSITORY, DevServer

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Route

LINEAGE_PATH = "/asset-groups"  # Dagster UI: "Lineage" in the navigation (global asset lineage)
STARTUP_TIMEOUT = 120.0  # webserver answering and the code location loaded
GRAPH_TIMEOUT = 60.0  # the page showing every asset node
# Tall: the UI fits the graph to the width, and the lineage graph is taller than wide.
VIEWPORT = (1920, 2400)
CHROMIUM_VAR = "MLOPS_CHROMIUM"
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = (
    "Chromium not found: install it with `apt-get install -y --no-install-recommends chromium` "
    f"(Debian/Ubuntu; .ci/ensure-chromium does this) or set {CHROMIUM_VAR} to a Chromium binary"
)
PLAYWRIGHT_HINT = (
    "the playwright package is missing: it is a development dependency of this project, "
    "installed by `uv sync` (or `make setup`) with the default dev group, not by `--no-dev`"
)
# Chromium as root needs no sandbox; the rest keeps it off the network (the machine has none
# but the loopback: without them Chromium keeps trying Google's hosts).
CHROMIUM_ARGS = (
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--no-proxy-server",
    "--metrics-recording-only",
    "--safebrowsing-disable-auto-update",
)
# Dagster's "Join the community" dialog would cover the graph: dismissed as its own button does.
DISMISS_NUX = "window.localStorage.setItem('communityNux', JSON.stringify('1'));"
COLLECT_GRAPH = """
() => {
  const assets = [];
  const groups = [];
  for (const node of document.querySelectorAll('svg foreignObject')) {
    if (node.classList.contains('group')) {
      const label = node.querySelector('[data-tooltip]');
      if (label) {
        groups.push({
          name: label.getAttribute('data-tooltip'),
          collapsed: !!node.querySelector('[class*="CollapsedGroupNode_"]'),
        });
      }
      continue;
    }
    for (const label of node.querySelectorAll('[class*="AssetNode_assetName__"]')) {
      const full = label.querySelector('[data-tooltip]');
      const box = label.getBoundingClientRect();
      assets.push({
        name: full ? full.getAttribute('data-tooltip') : label.textContent.trim(),
        box: [box.x, box.y, box.width, box.height].map(Math.round),
      });
    }
  }
  return {assets, groups};
}
"""


class UICheckError(AssertionError):
    """The UI did not show what the code location defines (or could not be checked)."""


@dataclass(frozen=True)
class ExpectedLineage:
    """What the lineage graph must show: asset keys (with their node labels) and groups."""

    labels: dict[str, str]  # asset key (user string) -> name on its node (last path part)
    groups: tuple[str, ...]


def expected_lineage() -> ExpectedLineage:
    """Every asset key and group of the project's code location, from its definitions."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # preview/beta warnings of the definitions
        from mlops_assets.definitions import defs

        keys = defs.resolve_all_asset_keys()
        groups = {spec.key: spec.group_name for spec in defs.resolve_all_asset_specs()}
    labels = {key.to_user_string(): key.path[-1] for key in sorted(keys)}
    return ExpectedLineage(
        labels=labels, groups=tuple(sorted({groups[k] or "default" for k in keys}))
    )


def shown_as(label: str, text: str) -> bool:
    """Whether a node text shows ``label``, whole or middle-truncated (``flight_…ures``)."""
    if text == label:
        return True
    if "…" not in text:
        return False
    head, _, tail = text.partition("…")
    return len(head) + len(tail) < len(label) and label.startswith(head) and label.endswith(tail)


@dataclass
class LineageReport:
    """What the browser saw on the lineage page and what it missed."""

    url: str
    screenshot: Path
    expected: ExpectedLineage
    shown_assets: list[str]
    shown_groups: list[str]
    collapsed_groups: list[str]
    blocked_requests: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    leftover_processes: list[int] = field(default_factory=list)

    @property
    def missing_assets(self) -> list[str]:
        """Asset keys without a node on the page (labels shared by keys are counted)."""
        unmatched = list(self.shown_assets)
        missing = []
        for key, label in self.expected.labels.items():
            match = next((text for text in unmatched if shown_as(label, text)), None)
            if match is None:
                missing.append(key)
            else:
                unmatched.remove(match)
        return missing

    @property
    def missing_groups(self) -> list[str]:
        """Groups without a box on the page."""
        return [g for g in self.expected.groups if g not in self.shown_groups]

    @property
    def ok(self) -> bool:
        """Whether every asset and group is shown."""
        return not self.missing_assets and not self.missing_groups

    def problems(self) -> str:
        """A readable account of what is missing, empty when nothing is."""
        lines = []
        if self.missing_assets:
            lines.append(f"asset nodes missing from the lineage graph: {self.missing_assets}")
        if self.missing_groups:
            lines.append(f"asset groups missing from the lineage graph: {self.missing_groups}")
        if lines:
            lines.append(f"shown assets: {sorted(self.shown_assets)}")
            lines.append(f"shown groups: {sorted(self.shown_groups)}")
            if self.collapsed_groups:
                lines.append(f"collapsed groups (their assets are hidden): {self.collapsed_groups}")
            lines.append(f"page: {self.url}; screenshot: {self.screenshot}")
        return "\n".join(lines)

    def summary(self) -> str:
        """One line of counts and timings (plus the requests blocked, if any)."""
        found = len(self.expected.labels) - len(self.missing_assets)
        timings = ", ".join(f"{name} {secs:.1f} s" for name, secs in self.timings.items())
        text = (
            f"lineage graph: {found}/{len(self.expected.labels)} assets, "
            f"{len(self.expected.groups) - len(self.missing_groups)}/{len(self.expected.groups)}"
            f" groups; screenshot {self.screenshot} ({timings})"
        )
        if self.blocked_requests:
            text += f"\nblocked requests off 127.0.0.1: {self.blocked_requests}"
        return text

    def raise_for_missing(self) -> None:
        """Raises :class:`UICheckError` naming what is missing, if anything is."""
        if not self.ok:
            raise UICheckError(self.problems())


def find_chromium(explicit: str | None = None) -> str | None:
    """The Chromium binary: ``explicit``, ``MLOPS_CHROMIUM``, else the first one on PATH."""
    for candidate in (explicit, os.environ.get(CHROMIUM_VAR)):
        if candidate:
            found = shutil.which(candidate)
            return found if found else None
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def playwright_available() -> bool:
    """Whether the playwright package (a development dependency) can be imported."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True


def lineage_url(base_url: str, groups: tuple[str, ...]) -> str:
    """The global lineage page with every group expanded.

    Both group-id spellings the UI uses are given: with and without its per-code-location
    feature flag.
    """
    ids = [f"global@global:{g}" for g in groups]
    ids += [f"{REPOSITORY}@{LOCATION}:{g}" for g in groups]
    return f"{base_url}{LINEAGE_PATH}?expanded={quote(','.join(ids), safe='@:,')}"


def launch_chromium(playwright: Any, executable: str) -> Browser:
    """Headless Chromium from ``executable``, kept off the network (``CHROMIUM_ARGS``)."""
    browser: Browser = playwright.chromium.launch(
        executable_path=executable,
        headless=True,
        chromium_sandbox=False,
        args=list(CHROMIUM_ARGS),
    )
    return browser


def capture_lineage(
    browser: Browser,
    base_url: str,
    expected: ExpectedLineage,
    out: Path,
    *,
    timeout: float = GRAPH_TIMEOUT,
    viewport: tuple[int, int] = VIEWPORT,
) -> LineageReport:
    """Opens the lineage page and screenshots it once the graph is complete and settled.

    Waits for every expected asset node (or the timeout) and a settled layout, and saves a
    screenshot of what is shown either way.
    """
    url = lineage_url(base_url, expected.groups)
    blocked: list[str] = []

    def only_loopback(route: Route) -> None:
        request_url = route.request.url
        if request_url.startswith((base_url + "/", "blob:", "data:")):
            route.continue_()
        else:
            blocked.append(request_url)
            route.abort("blockedbyclient")

    context = browser.new_context(
        viewport={"width": viewport[0], "height": viewport[1]},
        service_workers="block",
        locale="en-US",
        timezone_id="UTC",
    )
    try:
        context.route("**/*", only_loopback)
        context.add_init_script(DISMISS_NUX)
        page = context.new_page()
        page.goto(url, wait_until="domcontentloaded", timeout=timeout * 1000)
        shown = _wait_for_graph(page, expected, timeout)
        with contextlib.suppress(Exception):
            page.evaluate("document.fonts.ready.then(() => true)")
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=False)
    finally:
        context.close()
    return LineageReport(
        url=url,
        screenshot=out,
        expected=expected,
        shown_assets=[a["name"] for a in shown["assets"]],
        shown_groups=[g["name"] for g in shown["groups"]],
        collapsed_groups=[g["name"] for g in shown["groups"] if g["collapsed"]],
        blocked_requests=blocked,
    )


def _wait_for_graph(page: Page, expected: ExpectedLineage, timeout: float) -> dict[str, Any]:
    """Polls the graph until every expected asset and group is shown and the boxes settle.

    The viewport animates to fit, so the node boxes must stop moving. Returns the last
    observation, also on timeout.
    """
    deadline = time.monotonic() + timeout
    previous: dict[str, Any] | None = None
    while True:
        shown: dict[str, Any] = page.evaluate(COLLECT_GRAPH)
        report_so_far = LineageReport(
            url="",
            screenshot=Path(),
            expected=expected,
            shown_assets=[a["name"] for a in shown["assets"]],
            shown_groups=[g["name"] for g in shown["groups"]],
            collapsed_groups=[],
        )
        if report_so_far.ok and shown == previous:
            return shown
        if time.monotonic() >= deadline:
            return shown
        previous = shown
        page.wait_for_timeout(300)


def check_lineage(
    state: Path,
    out: Path | None = None,
    *,
    chromium: str | None = None,
    log_path: Path | None = None,
    expected: ExpectedLineage | None = None,
    startup_timeout: float = STARTUP_TIMEOUT,
    graph_timeout: float = GRAPH_TIMEOUT,
    viewport: tuple[int, int] = VIEWPORT,
) -> LineageReport:
    """Starts the UI on ``state``, screenshots its lineage graph to ``out`` and stops it.

    Args:
        state: the state folder (``MLOPS_STATE_DIR`` of the server); created if missing.
        out: the PNG to write; default ``<state>/ui/lineage.png``.
        chromium: the browser binary; default :func:`find_chromium`.
        log_path: the server log; default ``<state>/ui/dagster_dev.log``.
        expected: what the graph must show; default :func:`expected_lineage`.
        startup_timeout: seconds for the server to answer with the code location loaded.
        graph_timeout: seconds for the page to show every asset node.
        viewport: the browser window (and screenshot) size in pixels.

    Returns:
        The report; :meth:`LineageReport.raise_for_missing` turns missing nodes into an error.

    Raises:
        UICheckError: no Chromium or Playwright, or the server did not come up in time.
    """
    from playwright.sync_api import sync_playwright

    executable = find_chromium(chromium)
    if executable is None:
        raise UICheckError(INSTALL_HINT)
    state = state.resolve()
    out = (out or state / "ui" / "lineage.png").resolve()
    log_path = (log_path or state / "ui" / "dagster_dev.log").resolve()
    state.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    started = time.monotonic()
    server = DevServer.spawn(state, log_path)
    try:
        with server.report_on_failure(), sync_playwright() as playwright:
            # Both overlap with the server's start-up.
            browser = launch_chromium(playwright, executable)
            try:
                if expected is None:
                    expected = expected_lineage()
                server.wait_ready(startup_timeout)
                timings["server start"] = time.monotonic() - started
                page_started = time.monotonic()
                report = capture_lineage(
                    browser,
                    server.base_url,
                    expected,
                    out,
                    timeout=graph_timeout,
                    viewport=viewport,
                )
                timings["page"] = time.monotonic() - page_started
            finally:
                browser.close()
    finally:
        stop_started = time.monotonic()
        leftovers = server.shutdown()
        timings["server stop"] = time.monotonic() - stop_started
    timings["total"] = time.monotonic() - started
    report.timings = timings
    report.leftover_processes = leftovers
    return report


def run(state: Path | None = None, out: Path | None = None, **options: Any) -> int:
    """``mlops-assets ui-check``: checks the lineage graph and prints the outcome.

    ``options`` are those of :func:`check_lineage` (browser, time-outs, viewport).

    Returns:
        The exit code: 0 when every asset and group is shown, 1 when some are missing, 2 when
        the check could not run (no Playwright or Chromium, the server did not come up).
    """
    settings.telemetry_off()
    state = state if state is not None else settings.locations().state
    # The definitions are read in this process too: on the same state folder.
    os.environ[settings.STATE_DIR_VAR] = str(state.resolve())
    if not playwright_available():
        print(f"error: {PLAYWRIGHT_HINT}", file=sys.stderr)
        return 2
    try:
        report = check_lineage(state, out, **options)
    except AssertionError as error:  # UICheckError and wait_for's time-outs
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report.summary())
    if report.leftover_processes:
        print(f"warning: processes left behind: {report.leftover_processes}", file=sys.stderr)
    if not report.ok:
        print(f"error: {report.problems()}", file=sys.stderr)
        return 1
    return 0
