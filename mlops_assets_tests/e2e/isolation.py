"""The process environment of an end-to-end module: loopback only, nothing inherited.

A developer's shell (or a CI runner) may export proxies, MLflow or AWS settings; none of them
may reach a test or the servers it starts. ``isolated_process`` scrubs them from this
process, forbids connections off 127.0.0.1 (``LoopbackOnly``), and restores the environment
and MLflow's process globals afterwards, so that the rest of the session does not inherit the
address of a server that no longer exists. ``server_environment`` is the same scrubbed
environment for a child process.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from mlops_assets import settings
from mlops_assets.processes import HOST

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
LOCAL_ONLY = "127.0.0.1,localhost"
# Process-wide MLflow settings a developer may have exported; the tests must not use them.
MLFLOW_CONTEXT_VARS = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_RUN_ID",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
)
# AWS settings a developer (or CI) may have exported; none of them may reach the tests.
AWS_CONTEXT_VARS = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_REGION",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_ENDPOINT_URL_S3",  # a service-specific endpoint would win over AWS_ENDPOINT_URL
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_CA_BUNDLE",
    "MLFLOW_S3_ENDPOINT_URL",  # MLflow must find the endpoint through AWS_ENDPOINT_URL alone
    "MLFLOW_S3_IGNORE_TLS",
)
# Scrubbed from every end-to-end module's process: the flavour is chosen by each test.
SCRUBBED = (*PROXY_VARS, *MLFLOW_CONTEXT_VARS, *AWS_CONTEXT_VARS, settings.ENV_VAR)


class LoopbackOnly:
    """Refuses (and records) any connection of this process to an address off 127.0.0.1.

    Installed on ``socket.socket.connect``: MLflow, Dagster and their dependencies must talk to
    the local servers only (no telemetry, no proxy, no other host).
    """

    def __init__(self) -> None:
        self.violations: list[Any] = []
        self._connect = socket.socket.connect
        self._connect_ex = socket.socket.connect_ex

    def _check(self, sock: socket.socket, address: Any) -> None:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return  # Unix sockets and the like stay on the machine
        host = str(address[0])
        if host == "localhost" or host == "::1" or host.startswith("127."):
            return
        self.violations.append(address)
        raise OSError(f"e2e: connection to {address!r} refused, only {HOST} is allowed")

    def install(self) -> None:
        guard = self

        def connect(sock: socket.socket, address: Any) -> None:
            guard._check(sock, address)
            guard._connect(sock, address)

        def connect_ex(sock: socket.socket, address: Any) -> int:
            guard._check(sock, address)
            return guard._connect_ex(sock, address)

        socket.socket.connect = connect  # type: ignore[method-assign]
        socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]

    def uninstall(self) -> None:
        socket.socket.connect = self._connect  # type: ignore[method-assign]
        socket.socket.connect_ex = self._connect_ex  # type: ignore[method-assign]


def _mlflow_globals() -> tuple[Any, Any, Any]:
    """MLflow's process-wide tracking URI, registry URI and active experiment (if imported)."""
    if "mlflow" not in sys.modules:
        return (None, None, None)  # their values before MLflow is first used
    from mlflow.tracking import fluent
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    return (
        tracking_utils._tracking_uri,
        registry_utils._registry_uri,
        fluent._active_experiment_id,
    )


def _restore_mlflow(saved: tuple[Any, Any, Any]) -> None:
    if "mlflow" not in sys.modules:
        return
    import mlflow
    from mlflow.tracking import fluent
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    while mlflow.active_run() is not None:  # asserted by the tests; never leak it
        mlflow.end_run(status="KILLED")
    (
        tracking_utils._tracking_uri,
        registry_utils._registry_uri,
        fluent._active_experiment_id,
    ) = saved


@contextlib.contextmanager
def isolated_process(scrub: Iterable[str] = SCRUBBED) -> Iterator[LoopbackOnly]:
    """Loopback only, no proxies, no inherited context; environment and MLflow restored after.

    ``MlflowTracking.training_run`` calls ``mlflow.set_tracking_uri`` / ``set_registry_uri``
    and dagster-mlflow calls ``mlflow.set_experiment``: each also writes ``os.environ``.
    Changes the block makes to ``os.environ`` are undone too.

    Raises:
        AssertionError: on exit, if a connection off 127.0.0.1 was attempted.
    """
    saved_env = dict(os.environ)
    saved_mlflow = _mlflow_globals()
    for name in scrub:
        os.environ.pop(name, None)
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = LOCAL_ONLY
    settings.telemetry_off()
    guard = LoopbackOnly()
    guard.install()
    try:
        yield guard
    finally:
        guard.uninstall()
        _restore_mlflow(saved_mlflow)
        os.environ.clear()
        os.environ.update(saved_env)
    assert not guard.violations, f"connections off {HOST} were attempted: {guard.violations}"


def server_environment(
    extra: Mapping[str, str] | None = None, scrub: Iterable[str] = ()
) -> dict[str, str]:
    """The environment of a server process: this one without proxies (and ``scrub``), no
    telemetry, unbuffered output, plus ``extra``."""
    dropped = {*PROXY_VARS, *scrub}
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    settings.telemetry_off(env)
    env.update(NO_PROXY=LOCAL_ONLY, no_proxy=LOCAL_ONLY, PYTHONUNBUFFERED="1")
    env.update(extra or {})
    return env
