"""Command-line tools the deploy tests run: found on PATH, or the test is skipped (CI: failed).

The Prometheus tools come from Debian's packages (.ci/ensure-prometheus installs them). A
developer without them gets a skip with the install command; CI, which installs them, must
never skip silently, so ``CI=true`` turns the skip into a failure.
"""

from __future__ import annotations

import os
import shutil

import pytest

INSTALL_HINT = (
    "{tool} not found; install it with `sudo apt-get install -y --no-install-recommends "
    "prometheus prometheus-alertmanager` (Debian/Ubuntu) or run .ci/ensure-prometheus"
)


def require(tool: str, hint: str = INSTALL_HINT) -> str:
    """The tool's path; skips the test without it (fails it when ``CI=true``)."""
    found = shutil.which(tool)
    if found:
        return found
    message = hint.format(tool=tool)
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"CI=true: {message}", pytrace=False)
    pytest.skip(message)
