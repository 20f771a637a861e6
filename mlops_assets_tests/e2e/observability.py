"""The observability stack for end-to-end tests: ``mlops_assets.observe`` with test timings.

Free ports of 127.0.0.1, the server environment of the harness, and the binaries' absence
skipped with the install command (a failure when ``CI=true``: CI installs them).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlops_assets import observe
from mlops_assets.processes import free_port, wait_for
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


ALERT_TIMEOUT = 60.0  # seconds for a notification to reach the receiver


def wait_for_alerts(
    receiver: observe.Receiver,
    stack: observe.Stack,
    name: str,
    status: str = "firing",
    **labels: str,
) -> list[dict[str, Any]]:
    """The ``name`` alerts with ``status`` and ``labels`` at the receiver, waited for."""
    return list(
        wait_for(
            lambda: [
                alert
                for alert in receiver.alerts(status, name)
                if labels.items() <= alert["labels"].items()
            ],
            ALERT_TIMEOUT,
            0.5,
            what=f"{name} {status} at the receiver",
            diagnose=lambda: f"{stack.report()}\nactive: {stack.active_alerts()}",
        )
    )
