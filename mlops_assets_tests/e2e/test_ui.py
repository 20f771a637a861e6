"""End to end in a real browser: the Dagster UI's global asset lineage graph shows every asset.

``mlops-assets dev`` runs on a fresh state folder and a free port of 127.0.0.1; headless
Chromium (Debian's package, driven by Playwright) opens the lineage page and a screenshot is
taken once every asset node of the code location is on it (see ``ui_check.py``). Without Chromium
the test is skipped with the install command, and fails when ``CI=true``.

Runtime: roughly 45 to 70 s, most of it ``dagster dev`` starting (code server, daemon and
webserver) and stopping.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from mlops_assets import ui_check

pytestmark = pytest.mark.e2e

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MIN_PNG_BYTES = 20_000  # an empty or blank page compresses to far less


def require_chromium() -> str:
    """Chromium and Playwright; skips the test without them (fails it when ``CI=true``)."""
    chromium = ui_check.find_chromium()
    if chromium is not None and ui_check.playwright_available():
        return chromium
    problem = ui_check.INSTALL_HINT if chromium is None else ui_check.PLAYWRIGHT_HINT
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"CI=true: {problem}", pytrace=False)
    pytest.skip(problem)


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (fails if it is not a PNG)."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE, f"{path} is not a PNG: {head[:8]!r}"
    assert head[12:16] == b"IHDR", f"{path}: no IHDR chunk first"
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


@pytest.mark.timeout(300)
def test_lineage_graph_shows_every_asset(state_dir: Path, tmp_path: Path) -> None:
    chromium = require_chromium()
    expected = ui_check.expected_lineage()
    assert expected.labels and expected.groups, "the code location defines no assets"
    out = tmp_path / "lineage.png"

    report = ui_check.check_lineage(
        state_dir,
        out,
        chromium=chromium,
        log_path=tmp_path / "dagster_dev.log",
        expected=expected,
    )
    print(report.summary())

    assert report.ok, report.problems()
    assert not report.missing_assets and not report.missing_groups
    assert not report.collapsed_groups, f"groups left collapsed: {report.collapsed_groups}"
    assert out.is_file(), f"no screenshot at {out}"
    assert png_size(out) == ui_check.VIEWPORT, f"unexpected screenshot size {png_size(out)}"
    assert out.stat().st_size >= MIN_PNG_BYTES, f"screenshot too small: {out.stat().st_size} B"
    assert not report.leftover_processes, f"left behind: {report.leftover_processes}"
