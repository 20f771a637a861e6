"""The servers of the end-to-end tests, and the registry that stops every one of them.

Each server class knows how to start its program (``spawn``: a free port of 127.0.0.1, a
process group of its own, its output in a log file, an environment without proxies or
inherited settings) and when it is ready (``wait_ready``, bounded). ``Servers``, the
``servers`` fixture of ``conftest.py``, starts them for a test module and stops them all at
its end, failing if one of them left a process behind. The process plumbing itself (free
ports, bounded waits, process-group teardown, log tails) is ``mlops_assets.processes``.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests

from mlops_assets import registry_access, settings
from mlops_assets.lib.pseudonyms import KEY_VARIABLE as PSEUDONYM_KEY_VAR
from mlops_assets.processes import HOST, LoggedServer, console_script, free_port, spawn_logged
from mlops_assets.serving.auth import ACCESS_VARIABLES
from mlops_assets.serving.workers import WORKERS_VARIABLE
from mlops_assets_tests.e2e.daemon import DagsterDev
from mlops_assets_tests.e2e.isolation import MLFLOW_CONTEXT_VARS, server_environment
from mlops_assets_tests.e2e.s3 import REGION, aws_environment

REQUEST_TIMEOUT = 30.0
S = TypeVar("S", bound=LoggedServer)


# -- mlflow server ----------------------------------------------------------------------------


@dataclass
class MlflowServer(LoggedServer):
    """``mlflow server``: SQLite backend store, proxied artifact store, both under ``root``."""

    NAME = "mlflow server"
    STOP_GRACE = 15.0
    STARTUP_TIMEOUT = 90.0  # database migrations, then uvicorn answering /health

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    root: Path
    admin: tuple[str, str] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @classmethod
    def spawn(
        cls, root: Path, port: int | None = None, admin: tuple[str, str] | None = None
    ) -> MlflowServer:
        """Starts the server in the background; ``wait_ready`` waits for it.

        ``port`` (default: a free one) and an existing ``root`` start it again where a
        stopped one was: same address, same runs, models and artifacts. ``admin`` (name,
        password) runs the basic-auth app as production does (``registry_access``): its
        accounts in ``root``, that administrator created on the first start.
        """
        root.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        command = [
            *console_script("mlflow", "mlflow"),
            "server",
            "--host",
            HOST,
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--workers",
            "1",
        ]
        # Job execution forks ~10 processes (~2 GB) and doubles the start-up time.
        settings_env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        if admin is not None:
            config = registry_access.write_auth_config(
                root / "basic_auth.ini", f"sqlite:///{root / 'basic_auth.db'}"
            )
            command += ["--app-name", registry_access.APP_NAME]
            settings_env |= {
                "MLFLOW_AUTH_CONFIG_PATH": str(config),
                "MLFLOW_AUTH_ADMIN_USERNAME": admin[0],
                "MLFLOW_AUTH_ADMIN_PASSWORD": admin[1],
                "MLFLOW_FLASK_SERVER_SECRET_KEY": "e2e-only-secret-key",
            }
        env = server_environment(settings_env, scrub=MLFLOW_CONTEXT_VARS)
        log_path = root / "mlflow_server.log"
        process = spawn_logged(command, cwd=root, env=env, log_path=log_path)
        return cls(process, port, log_path, root, admin)

    def wait_ready(self, timeout: float | None = None) -> float:
        """Polls ``/health`` until it answers 200; returns the seconds waited."""
        return self.wait_http(f"{self.url}/health", timeout)


# -- bentoml serve ----------------------------------------------------------------------------


def private_home(store: Path, root: Path) -> Path:
    """A BENTOML_HOME of its own for one server, serving the bentos and models of ``store``.

    ``bentoml serve`` empties ``$BENTOML_HOME/prometheus_multiproc_dir`` when it starts, so a
    second server on the same home would wipe the first one's metrics (the first then reports
    the second's). Each server gets its own home whose ``bentos`` and ``models`` are links to
    the deployment's store: the same Bento, served side by side.
    """
    home = root / "bentoml_home"
    home.mkdir(parents=True, exist_ok=True)
    for name in ("bentos", "models"):
        (home / name).symlink_to(store / name, target_is_directory=True)
    return home


@dataclass
class BentoServer(LoggedServer):
    """``bentoml serve <tag>`` from a private home on ``store`` and an HTTP session for it."""

    NAME = "bentoml serve"
    STOP_GRACE = 20.0
    STARTUP_TIMEOUT = 90.0  # imports, model load and warm-up, then /readyz

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    http: requests.Session

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @classmethod
    def spawn(
        cls,
        tag: str,
        store: Path,
        root: Path,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> BentoServer:
        """Starts the server in the background; ``wait_ready`` waits for it.

        The server gets this process' environment without access settings (API key, token
        keys, rate limit), flavour, model override or pseudonym key, with one worker process
        (``env`` sets them); its
        state folder is the one holding ``store`` (whose key file gives the pseudonym key
        locally); ``port`` is a free one unless given (e.g. a scrape target).
        """
        root.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        command = [*console_script("bentoml", "bentoml"), "serve", tag]
        command += ["--host", HOST, "--port", str(port)]
        server_env = server_environment(
            {
                "BENTOML_HOME": str(private_home(store, root)),
                settings.STATE_DIR_VAR: str(store.resolve().parent),
                # One worker unless a test asks for more: each loads the models (time, memory).
                WORKERS_VARIABLE: "1",
                **(env or {}),
            },
            scrub=(*ACCESS_VARIABLES, settings.ENV_VAR, "MLOPS_BENTO_MODEL", PSEUDONYM_KEY_VAR),
        )
        log_path = root / "bentoml_serve.log"
        process = spawn_logged(command, cwd=root, env=server_env, log_path=log_path)
        http = requests.Session()
        http.trust_env = False  # no proxies: only 127.0.0.1
        return cls(process, port, log_path, http)

    def wait_ready(self, timeout: float | None = None) -> float:
        """Polls ``/readyz`` until it answers 200; returns the seconds waited."""
        return self.wait_http(f"{self.url}/readyz", timeout)

    def post(self, path: str, payload: Any = None, **kwargs: Any) -> requests.Response:
        """POSTs ``payload`` as JSON (or raw ``data=``/``headers=`` via kwargs)."""
        self.check_alive()
        if payload is not None:
            kwargs["json"] = payload
        return self.http.post(f"{self.url}{path}", timeout=REQUEST_TIMEOUT, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        self.check_alive()
        return self.http.get(f"{self.url}{path}", timeout=REQUEST_TIMEOUT, **kwargs)

    def stop(self) -> list[str]:
        """Closes the HTTP session, then stops the server (see ``LoggedServer.stop``)."""
        self.http.close()
        return super().stop()


# -- moto_server (S3) -------------------------------------------------------------------------


@dataclass
class MotoServer(LoggedServer):
    """``moto_server``: a real S3 API, in memory."""

    NAME = "moto_server"
    STOP_GRACE = 10.0
    STARTUP_TIMEOUT = 30.0  # answers within a couple of seconds

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    @classmethod
    def spawn(cls, root: Path) -> MotoServer:
        """Starts the server in the background; ``wait_ready`` waits for it."""
        root.mkdir(parents=True, exist_ok=True)
        port = free_port()
        inherited_aws = [name for name in os.environ if name.startswith("AWS_")]
        env = server_environment(aws_environment(f"http://{HOST}:{port}", root), inherited_aws)
        command = [*console_script("moto_server", "moto.server"), "-H", HOST, "-p", str(port)]
        log_path = root / "moto_server.log"
        return cls(spawn_logged(command, cwd=root, env=env, log_path=log_path), port, log_path)

    def wait_ready(self, timeout: float | None = None) -> float:
        """Polls the S3 API (ListBuckets) until it answers 200; returns the seconds waited."""
        return self.wait_http(f"{self.endpoint}/", timeout, interval=0.2)

    def client(self) -> Any:
        """A boto3 S3 client bound to this server (independent of the environment)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


# -- the registry -----------------------------------------------------------------------------


class Servers:
    """Starts servers for one test module and stops every one of them at its end."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp = tmp_path_factory
        self._running: list[LoggedServer] = []

    def start(self, server: S, *, wait: bool = True) -> S:
        """Takes charge of a spawned ``server``; waits until it is ready unless ``wait`` is false.

        A server that does not get ready is stopped before the error is raised.
        """
        self._running.append(server)
        if wait:
            try:
                server.wait_ready()  # its error carries the server's log tail
            except BaseException:
                self.stop(server)
                raise
        return server

    def mlflow(self, *, wait: bool = True, admin: tuple[str, str] | None = None) -> MlflowServer:
        """An ``mlflow server`` on a folder of its own (basic-auth with ``admin``)."""
        root = self._tmp.mktemp("mlflow_server")
        return self.start(MlflowServer.spawn(root, admin=admin), wait=wait)

    def mlflow_again(self, stopped: MlflowServer) -> MlflowServer:
        """``stopped`` started again on its folder and port."""
        return self.start(MlflowServer.spawn(stopped.root, stopped.port, stopped.admin))

    def moto(self) -> MotoServer:
        """A ready ``moto_server``."""
        return self.start(MotoServer.spawn(self._tmp.mktemp("moto")))

    def bentoml(
        self,
        tag: str,
        store: Path,
        env: dict[str, str] | None = None,
        *,
        wait: bool = True,
        port: int | None = None,
    ) -> BentoServer:
        """``bentoml serve <tag>`` on the bentos and models of ``store`` (a BentoML home)."""
        root = self._tmp.mktemp("bentoml_serve")
        return self.start(BentoServer.spawn(tag, store, root, env, port), wait=wait)

    def dagster_dev(
        self, state: Path, log_path: Path, env: dict[str, str] | None = None
    ) -> DagsterDev:
        """A ready ``mlops-assets dev`` on ``state``; ``env`` adds to its environment."""
        return self.start(DagsterDev.spawn(state, log_path, env))

    def stop(self, server: LoggedServer) -> None:
        """Stops ``server`` with everything it started; fails if a process is left behind."""
        self._running = [s for s in self._running if s is not server]
        leftovers = server.shutdown()
        assert not leftovers, f"{server.NAME} left processes behind: {leftovers}"

    def stop_all(self) -> None:
        """Stops every server still running, the last started first."""
        errors = []
        for server in reversed(list(self._running)):
            try:
                self.stop(server)
            except AssertionError as error:
                errors.append(str(error))
        assert not errors, "; ".join(errors)
