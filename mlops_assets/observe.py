"""The observability stack on one host: Prometheus, the Pushgateway, Alertmanager, a receiver.

``mlops-assets observe`` (``make observe``) runs it beside the local state; the end-to-end
tests run the same code with test timings. The configuration is the repository's
``deploy/observability`` rendered into a folder: the scrape targets and the receiver URL are
filled in, every other line is the reviewed file (in tests, the intervals and every alert's
``for`` are shortened). The receiver is a small HTTP server in a thread that keeps, prints
and appends to a JSON-lines file every notification Alertmanager sends.

Standard library and PyYAML only: the binaries come from Debian's packages
(``.ci/ensure-prometheus``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from mlops_assets import settings
from mlops_assets.lib.alerts import ALERTMANAGER_URL_VAR
from mlops_assets.lib.pipeline_metrics import GATEWAY_VAR
from mlops_assets.processes import HOST, LoggedServer, spawn_logged

CONFIG_DIR = settings.project_root() / "deploy" / "observability"
PROMETHEUS, PUSHGATEWAY, ALERTMANAGER = "prometheus", "pushgateway", "alertmanager"
# Debian's binary names (the upstream names are alertmanager and pushgateway).
BINARIES = {
    PROMETHEUS: "prometheus",
    PUSHGATEWAY: "prometheus-pushgateway",
    ALERTMANAGER: "prometheus-alertmanager",
}
INSTALL_HINT = (
    "{tool} not found; install it with `sudo apt-get install -y --no-install-recommends "
    "prometheus prometheus-alertmanager prometheus-pushgateway` (Debian/Ubuntu) or run "
    ".ci/ensure-prometheus"
)
SERVICE_JOB = "mlops-assets-service"
RECEIVER_PATH = "/alerts"
# The ports of deploy/observability's files (and the Makefile's SERVE_PORT for the service).
DEFAULT_PORTS = {PROMETHEUS: 9090, PUSHGATEWAY: 9091, ALERTMANAGER: 9093, "receiver": 5001}
DEFAULT_SERVICE_PORT = 3001


class MissingToolError(RuntimeError):
    """A binary of the stack is not installed."""


def binary(name: str) -> str:
    """The path of one of the stack's binaries (``BINARIES`` values).

    Raises:
        MissingToolError: with the command that installs it.
    """
    found = shutil.which(name)
    if not found:
        raise MissingToolError(INSTALL_HINT.format(tool=name))
    return found


@dataclass(frozen=True)
class Timings:
    """How often Prometheus scrapes and evaluates, and how long alerts and groups wait.

    ``None`` keeps the value of the repository's files (the production timings).
    """

    interval: str | None = None
    alert_for: str | None = None
    group_wait: str | None = None
    group_interval: str | None = None


# Fast enough that an alert reaches the receiver within seconds of its series.
TEST_TIMINGS = Timings(interval="1s", alert_for="1s", group_wait="1s", group_interval="1s")
# The demo replays a day in seconds: with the files' `for` (minutes) nothing would fire.
DEMO_TIMINGS = Timings(interval="2s", alert_for="2s", group_wait="2s", group_interval="10s")
TIMINGS = {"production": Timings(), "demo": DEMO_TIMINGS}


def _load(name: str) -> Any:
    import yaml

    return yaml.safe_load((CONFIG_DIR / name).read_text())


def _dump(path: Path, document: Any) -> Path:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def render_rules(root: Path, timings: Timings) -> list[Path]:
    """The repository's rule files (not their tests), each alert's ``for`` per ``timings``."""
    paths = []
    for source in sorted((CONFIG_DIR / "rules").glob("*.yml")):
        if source.name.endswith("_test.yml"):
            continue
        groups = _load(f"rules/{source.name}")
        for group in groups["groups"]:
            for rule in group["rules"]:
                if "alert" in rule and timings.alert_for:
                    rule["for"] = timings.alert_for
        paths.append(_dump(root / "rules" / source.name, groups))
    return paths


def render_prometheus(
    root: Path, ports: Mapping[str, int], service_targets: list[str], timings: Timings
) -> Path:
    """``prometheus.yml`` with this host's targets, the rendered rules and ``timings``."""
    config = _load("prometheus.yml")
    if timings.interval:
        config["global"].update(
            scrape_interval=timings.interval, evaluation_interval=timings.interval
        )
    config["rule_files"] = [str(path) for path in render_rules(root, timings)]
    targets = {
        SERVICE_JOB: service_targets,
        PUSHGATEWAY: [f"{HOST}:{ports[PUSHGATEWAY]}"],
        PROMETHEUS: [f"{HOST}:{ports[PROMETHEUS]}"],
    }
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": targets[job["job_name"]]}]
    config["alerting"]["alertmanagers"] = [
        {"static_configs": [{"targets": [f"{HOST}:{ports[ALERTMANAGER]}"]}]}
    ]
    return _dump(root / "prometheus.yml", config)


def render_alertmanager(root: Path, receiver_url: str, timings: Timings) -> Path:
    """``alertmanager.yml`` sending to ``receiver_url``, with ``timings``' group waits."""
    config = _load("alertmanager.yml")
    if timings.group_wait:
        config["route"]["group_wait"] = timings.group_wait
    if timings.group_interval:
        config["route"]["group_interval"] = timings.group_interval
    for item in config["receivers"]:
        for webhook in item.get("webhook_configs", []):
            webhook["url"] = receiver_url
    return _dump(root / "alertmanager.yml", config)


@dataclass
class Daemon(LoggedServer):
    """One of the stack's servers: its process, port and log."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    NAME = "daemon"
    STOP_GRACE = 10.0
    STARTUP_TIMEOUT = 30.0

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://{HOST}:{self.port}"

    def wait_ready(self, timeout: float | None = None) -> float:
        """Waits until ``/-/ready`` answers (all three servers have it)."""
        return self.wait_http(f"{self.url}/-/ready", timeout, interval=0.2)

    def get_json(self, path: str) -> Any:
        """The JSON answer of ``GET path``."""
        import urllib.request

        with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as response:
            return json.loads(response.read())


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1 that keeps every notification it is sent.

    Each notification is also appended to ``journal`` (JSON lines) and passed to
    ``on_notification`` when given.
    """

    server: ThreadingHTTPServer
    notifications: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Where Alertmanager sends notifications."""
        return f"http://{HOST}:{self.server.server_address[1]}{RECEIVER_PATH}"

    def alerts(self, status: str | None = None, name: str | None = None) -> list[dict[str, Any]]:
        """Every alert of every notification so far, filtered by ``status`` and alert name."""
        found = [alert for note in list(self.notifications) for alert in note["alerts"]]
        return [
            alert
            for alert in found
            if (status is None or alert["status"] == status)
            and (name is None or alert["labels"].get("alertname") == name)
        ]


@contextlib.contextmanager
def receiving(
    port: int = 0,
    journal: Path | None = None,
    on_notification: Callable[[dict[str, Any]], None] | None = None,
) -> Iterator[Receiver]:
    """A running receiver (``port`` 0: a free one), shut down when the block ends."""
    notifications: list[dict[str, Any]] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            note = json.loads(body)
            with lock:
                notifications.append(note)
                if journal is not None:
                    with journal.open("a") as out:
                        out.write(json.dumps(note, sort_keys=True) + "\n")
            if on_notification is not None:
                on_notification(note)
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # notifications are reported by on_notification, not as access lines

    server = ThreadingHTTPServer((HOST, port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Receiver(server, notifications)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@dataclass
class Stack:
    """The running stack: its three servers and where the service is scraped."""

    prometheus: Daemon
    pushgateway: Daemon
    alertmanager: Daemon
    service_targets: list[str]

    def daemons(self) -> list[Daemon]:
        """The three servers."""
        return [self.prometheus, self.pushgateway, self.alertmanager]

    def active_alerts(self) -> list[dict[str, Any]]:
        """Alerts Prometheus holds (pending or firing)."""
        return list(self.prometheus.get_json("/api/v1/alerts")["data"]["alerts"])

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The result vector of an instant query."""
        import urllib.parse

        path = "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        return list(self.prometheus.get_json(path)["data"]["result"])

    def up(self) -> dict[str, float]:
        """The last value of ``up`` per scrape job."""
        return {item["metric"]["job"]: float(item["value"][1]) for item in self.query("up")}

    def report(self) -> str:
        """The servers' log tails, for a failure message."""
        return "\n".join(f"{d.NAME} log tail:\n{d.log_tail(30)}" for d in self.daemons())


def _commands(root: Path, ports: Mapping[str, int], config: Mapping[str, Path]) -> dict:
    def listen(name: str) -> str:
        return f"--web.listen-address={HOST}:{ports[name]}"

    return {
        PUSHGATEWAY: [
            binary(BINARIES[PUSHGATEWAY]),
            listen(PUSHGATEWAY),
            "--persistence.file=",  # Debian's default is a file under /var/lib
        ],
        ALERTMANAGER: [
            binary(BINARIES[ALERTMANAGER]),
            f"--config.file={config[ALERTMANAGER]}",
            f"--storage.path={root / 'alertmanager-data'}",
            listen(ALERTMANAGER),
            "--cluster.listen-address=",  # no HA gossip on 0.0.0.0:9094
        ],
        PROMETHEUS: [
            binary(BINARIES[PROMETHEUS]),
            f"--config.file={config[PROMETHEUS]}",
            f"--storage.tsdb.path={root / 'prometheus-data'}",
            listen(PROMETHEUS),
        ],
    }


@contextlib.contextmanager
def running_stack(
    root: Path,
    ports: Mapping[str, int],
    receiver_url: str,
    service_targets: list[str],
    *,
    timings: Timings = Timings(),
    env: dict[str, str] | None = None,
) -> Iterator[Stack]:
    """Renders the configuration into ``root``, starts the three servers, waits until ready.

    Every server is stopped when the block ends; one left behind fails the block.

    Raises:
        MissingToolError: a binary is not installed (nothing was started).
    """
    root.mkdir(parents=True, exist_ok=True)
    config = {
        PROMETHEUS: render_prometheus(root, ports, service_targets, timings),
        ALERTMANAGER: render_alertmanager(root, receiver_url, timings),
    }
    commands = _commands(root, ports, config)
    started: dict[str, Daemon] = {}
    try:
        for name, command in commands.items():
            log_path = root / f"{name}.log"
            process = spawn_logged(
                command, cwd=root, env=dict(os.environ) if env is None else env, log_path=log_path
            )
            daemon = started[name] = Daemon(process, ports[name], log_path)
            daemon.NAME = name
        for daemon in started.values():
            with daemon.report_on_failure():
                daemon.wait_ready()
        yield Stack(
            started[PROMETHEUS], started[PUSHGATEWAY], started[ALERTMANAGER], service_targets
        )
    finally:
        left = {name: daemon.shutdown() for name, daemon in started.items()}
        if any(left.values()):
            raise RuntimeError(f"processes left behind: {left}")


class PortInUseError(RuntimeError):
    """A port the stack needs is taken."""


def check_ports_free(ports: Mapping[str, int]) -> None:
    """Raises ``PortInUseError`` naming every port of ``ports`` something already holds."""
    import socket

    taken = []
    for name, port in ports.items():
        with socket.socket() as probe:
            try:
                probe.bind((HOST, port))
            except OSError:
                taken.append(f"{name} {HOST}:{port}")
    if taken:
        raise PortInUseError(f"port(s) in use: {', '.join(taken)}; choose others (--help)")


def describe(note: Mapping[str, Any]) -> str:
    """One line per alert of a notification, for the console."""
    lines = []
    for alert in note.get("alerts", []):
        labels = alert.get("labels", {})
        summary = alert.get("annotations", {}).get("summary", "")
        lines.append(f"[{alert.get('status')}] {labels.get('alertname')}: {summary}")
    return "\n".join(lines)


def run_foreground(
    root: Path,
    ports: Mapping[str, int],
    service_port: int,
    *,
    timings: Timings = Timings(),
    env: dict[str, str] | None = None,
) -> None:
    """Runs the stack until SIGINT or SIGTERM (``timings``: the repository's by default).

    Data (Prometheus' TSDB, Alertmanager's silences) stays in ``root`` across runs; every
    notification is printed and appended to ``root / "alerts.jsonl"``.
    """
    import signal

    check_ports_free(ports)
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())

    def show(note: dict[str, Any]) -> None:
        print(describe(note), flush=True)

    journal = root / "alerts.jsonl"
    root.mkdir(parents=True, exist_ok=True)
    with (
        receiving(ports["receiver"], journal, show) as receiver,
        running_stack(
            root, ports, receiver.url, [f"{HOST}:{service_port}"], timings=timings, env=env
        ) as stack,
    ):
        print(
            f"Prometheus    {stack.prometheus.url}\n"
            f"Alertmanager  {stack.alertmanager.url}\n"
            f"Pushgateway   {stack.pushgateway.url}\n"
            f"alerts        {receiver.url} -> {journal}\n"
            f"scraping the service at {HOST}:{service_port} (make serve)\n"
            "runs push and alert when started with:\n"
            f"  export {GATEWAY_VAR}={stack.pushgateway.url} "
            f"{ALERTMANAGER_URL_VAR}={stack.alertmanager.url}\n"
            "ready; Ctrl-C stops",
            flush=True,
        )
        stopped.wait()
