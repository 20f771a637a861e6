"""``mlops-assets dev`` as a child process: started on a free port, ready, stopped.

``DevServer.spawn`` starts the server the way a developer does (``mlops-assets dev``), on a
state folder of its own and a free port of 127.0.0.1, without waiting; ``wait_ready`` waits
(bounded) until the webserver answers and the code location has loaded, failing at once with
the load error or the server's log. ``shutdown`` stops it with everything it started (webserver,
daemon, code server). Used by ``mlops-assets ui-check`` and the end-to-end tests.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlops_assets import settings
from mlops_assets.processes import (
    HOST,
    LoggedServer,
    console_script,
    free_port,
    http_get_ok,
    http_post_json,
    spawn_logged,
    wait_for,
)

LOCATION = "mlops_assets"  # the code location (pyproject's [tool.dagster])
REPOSITORY = "__repository__"
STARTUP_TIMEOUT = 150.0  # webserver answering and the code location loaded
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
WORKSPACE_QUERY = """
{
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message stack } }
      }
    }
  }
}
"""


def dev_environment(state: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The server's environment: this one without DAGSTER_HOME, on ``state``, no telemetry."""
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update(
        {settings.STATE_DIR_VAR: str(state), settings.ENV_VAR: "local", "PYTHONUNBUFFERED": "1"}
    )
    settings.telemetry_off(env)
    env.update(extra or {})
    return env


class DevServer(LoggedServer):
    """A running ``mlops-assets dev`` (its own process group) and its GraphQL endpoint."""

    NAME = "mlops-assets dev"
    STOP_GRACE = 20.0
    STARTUP_TIMEOUT = STARTUP_TIMEOUT

    def __init__(
        self, process: subprocess.Popen[bytes], port: int, state: Path, log_path: Path
    ) -> None:
        self.process = process
        self.port = port
        self.state = state
        self.log_path = log_path

    @classmethod
    def spawn(cls, state: Path, log_path: Path, env: Mapping[str, str] | None = None) -> DevServer:
        """Starts ``mlops-assets dev`` on ``state`` (127.0.0.1, a free port) without waiting.

        ``env`` adds variables to the server's environment.
        """
        port = free_port()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        process = spawn_logged(
            [
                *console_script("mlops-assets", "mlops_assets.cli"),
                "dev",
                "--host",
                HOST,
                "--port",
                str(port),
            ],
            cwd=settings.project_root(),
            env=dev_environment(state, env),
            log_path=log_path,
        )
        return cls(process, port, state, log_path)

    @property
    def base_url(self) -> str:
        """The webserver's address."""
        return f"http://{HOST}:{self.port}"

    def log_tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines of the log, without terminal colours."""
        return "\n".join(ANSI_ESCAPE.sub("", self.log_text()).splitlines()[-lines:])

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """The ``data`` of a GraphQL query (AssertionError on GraphQL errors or a dead server)."""
        self.check_alive()
        payload = http_post_json(
            f"{self.base_url}/graphql", {"query": query, "variables": variables or {}}
        )
        if payload.get("errors"):
            raise AssertionError(f"GraphQL errors: {json.dumps(payload['errors'], indent=1)}")
        return dict(payload["data"])

    def ready(self) -> bool:
        """Whether the webserver answers and the code location has loaded.

        Raises:
            AssertionError: the code location failed to load, or the server has exited.
        """
        self.check_alive()
        if not http_get_ok(f"{self.base_url}/server_info"):
            return False
        try:
            data = self.graphql(WORKSPACE_QUERY)
        except (OSError, ValueError):  # not answering yet, or not with JSON
            return False
        entries = data["workspaceOrError"].get("locationEntries", [])
        for entry in entries:
            error = entry["locationOrLoadError"]
            if error and error["__typename"] == "PythonError":
                raise AssertionError(
                    f"code location {entry['name']} failed to load: {error['message']}\n"
                    + "".join(error["stack"])
                )
        return any(
            e["name"] == LOCATION
            and e["loadStatus"] == "LOADED"
            and (e["locationOrLoadError"] or {}).get("__typename") == "RepositoryLocation"
            for e in entries
        )

    def wait_ready(self, timeout: float | None = None) -> float:
        """Waits until :meth:`ready`, at most ``timeout`` s (default ``STARTUP_TIMEOUT``).

        Returns:
            The seconds waited.
        """
        started = time.monotonic()
        wait_for(
            self.ready,
            self.STARTUP_TIMEOUT if timeout is None else timeout,
            interval=0.5,
            what=f"dagster dev to answer on {self.base_url} with {LOCATION} loaded",
            diagnose=self.log_tail,
        )
        return time.monotonic() - started
