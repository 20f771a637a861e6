"""The observability stack for end-to-end tests: ``mlops_assets.observe`` with test timings.

Free ports of 127.0.0.1, the server environment of the harness, and the binaries' absence
skipped with the install command (a failure when ``CI=true``: CI installs them).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops_assets import observe
from mlops_assets.processes import free_port
from mlops_assets_tests.e2e.isolation import server_environment


def require_stack() -> None:
    """Skips the test without the stack's binaries (fails it when ``CI=true``)."""
    try:
        for name in observe.BINARIES.values():
            observe.binary(name)
    except observe.MissingToolError as error:
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(f"CI=true: {error}", pytrace=False)
        pytest.skip(str(error))


@contextlib.contextmanager
def observed_stack(
    root: Path, receiver_url: str, service_targets: list[str]
) -> Iterator[observe.Stack]:
    """Prometheus, the Pushgateway and Alertmanager on free ports, with test timings."""
    require_stack()
    ports = {name: free_port() for name in observe.BINARIES}
    with observe.running_stack(
        root,
        ports,
        receiver_url,
        service_targets,
        timings=observe.TEST_TIMINGS,
        env=server_environment(),
    ) as stack:
        yield stack
