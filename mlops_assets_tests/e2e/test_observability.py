"""Alerts travel: real Prometheus, Pushgateway and Alertmanager, and a webhook receiver.

Each test starts its own stack on free ports of 127.0.0.1 from the repository's files in
deploy/observability, rendered into a temporary folder with test timings: scrape and rule
evaluation every second, every alert's ``for`` shortened to ``FOR`` and Alertmanager's group
waits to one second (the rules' expressions, labels and annotations are untouched). The
receiver is an ``http.server`` in a thread that records every notification.

- A degraded day pushed with ``lib.pipeline_metrics`` raises ``ModelAucDrop`` at the receiver
  with the day and the model version in its labels; a healthy newer day pushed in its place
  resolves it.
- A service target that is down raises ``ServiceDown`` and nothing else, while the
  Pushgateway and Prometheus are scraped.

The binaries come from Debian's packages (.ci/ensure-prometheus); without them the tests are
skipped with the install command, and fail when ``CI=true``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_assets.lib import pipeline_metrics
from mlops_assets.processes import HOST, LoggedServer, free_port, spawn_logged, wait_for
from mlops_assets_tests.e2e.isolation import server_environment

pytestmark = pytest.mark.e2e

OBSERVABILITY = Path(__file__).resolve().parents[2] / "deploy" / "observability"
BINARIES = ("prometheus", "prometheus-alertmanager", "prometheus-pushgateway")
INSTALL_HINT = (
    "{tool} not found; install it with `sudo apt-get install -y --no-install-recommends "
    "prometheus prometheus-alertmanager prometheus-pushgateway` (Debian/Ubuntu) or run "
    ".ci/ensure-prometheus"
)
INTERVAL = "1s"  # scrape and rule evaluation
FOR = "1s"  # every alert's `for`: pending for one evaluation, then firing
ALERT_TIMEOUT = 60.0  # seconds for a notification to reach the receiver
SERVICE_JOB = "mlops-assets-service"
DEGRADED = {"usable": True, "labelled_rows": 912, "roc_auc": 0.52, "validation_roc_auc": 0.71}
HEALTHY = {"usable": True, "labelled_rows": 874, "roc_auc": 0.70, "validation_roc_auc": 0.71}


def require(tool: str) -> str:
    """The tool's path; skips the test without it (fails it when ``CI=true``)."""
    found = shutil.which(tool)
    if found:
        return found
    hint = INSTALL_HINT.format(tool=tool)
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"CI=true: {hint}", pytrace=False)
    pytest.skip(hint)


@dataclass
class Daemon(LoggedServer):
    """One of the stack's servers: its process, port, log and readiness URL."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    NAME = "daemon"
    STOP_GRACE = 10.0
    STARTUP_TIMEOUT = 30.0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @classmethod
    def spawn(cls, name: str, command: list[str], root: Path, port: int) -> Daemon:
        log_path = root / f"{name}.log"
        process = spawn_logged(command, cwd=root, env=server_environment(), log_path=log_path)
        daemon = cls(process, port, log_path)
        daemon.NAME = name
        return daemon

    def wait_ready(self, timeout: float | None = None) -> float:
        return self.wait_http(f"{self.url}/-/ready", timeout, interval=0.2)

    def get_json(self, path: str) -> Any:
        import urllib.request

        with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as response:
            return json.loads(response.read())


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1 that keeps every notification it is sent."""

    server: ThreadingHTTPServer
    notifications: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server.server_address[1]}/alerts"

    def alerts(self, status: str | None = None) -> list[dict[str, Any]]:
        """Every alert of every notification so far (only those with ``status`` if given)."""
        found = [alert for note in list(self.notifications) for alert in note["alerts"]]
        return [a for a in found if status is None or a["status"] == status]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    notifications: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            notifications.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # pytest shows what matters on failure

    server = ThreadingHTTPServer((HOST, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Receiver(server, notifications)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def render_rules(root: Path) -> list[str]:
    """The repository's rule files with every ``for`` set to ``FOR``; their paths."""
    paths = []
    for source in sorted((OBSERVABILITY / "rules").glob("*.yml")):
        if source.name.endswith("_test.yml"):
            continue
        groups = yaml.safe_load(source.read_text())
        for group in groups["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    rule["for"] = FOR
        target = root / "rules" / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump(groups, sort_keys=False))
        paths.append(str(target))
    return paths


@dataclass
class Stack:
    prometheus: Daemon
    pushgateway: Daemon
    alertmanager: Daemon
    service_port: int  # nothing listens there: the service's target is down

    def daemons(self) -> list[Daemon]:
        return [self.prometheus, self.pushgateway, self.alertmanager]

    def active_alerts(self) -> list[dict[str, Any]]:
        """Alerts Prometheus holds (pending or firing)."""
        return list(self.prometheus.get_json("/api/v1/alerts")["data"]["alerts"])

    def up(self) -> dict[str, float]:
        """The last value of ``up`` per scrape job."""
        result = self.prometheus.get_json("/api/v1/query?query=up")["data"]["result"]
        return {item["metric"]["job"]: float(item["value"][1]) for item in result}

    def report(self) -> str:
        return "\n".join(f"{d.NAME} log tail:\n{d.log_tail(30)}" for d in self.daemons())


@pytest.fixture
def stack(tmp_path: Path, receiver: Receiver) -> Iterator[Stack]:
    binaries = {name: require(name) for name in BINARIES}
    ports = {name: free_port() for name in (*BINARIES, "service")}

    alertmanager_config = yaml.safe_load((OBSERVABILITY / "alertmanager.yml").read_text())
    alertmanager_config["route"].update(group_wait="1s", group_interval="1s")
    for item in alertmanager_config["receivers"]:
        for webhook in item.get("webhook_configs", []):
            webhook["url"] = receiver.url
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(alertmanager_config))

    config = yaml.safe_load((OBSERVABILITY / "prometheus.yml").read_text())
    config["global"].update(scrape_interval=INTERVAL, evaluation_interval=INTERVAL)
    config["rule_files"] = render_rules(tmp_path)
    targets = {
        SERVICE_JOB: ports["service"],
        "pushgateway": ports["prometheus-pushgateway"],
        "prometheus": ports["prometheus"],
    }
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [f"{HOST}:{targets[job['job_name']]}"]}]
    config["alerting"]["alertmanagers"] = [
        {"static_configs": [{"targets": [f"{HOST}:{ports['prometheus-alertmanager']}"]}]}
    ]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))

    def listen(name: str) -> str:
        return f"--web.listen-address={HOST}:{ports[name]}"

    commands = {
        "prometheus-pushgateway": [
            binaries["prometheus-pushgateway"],
            listen("prometheus-pushgateway"),
            "--persistence.file=",  # Debian's default is a file under /var/lib
        ],
        "prometheus-alertmanager": [
            binaries["prometheus-alertmanager"],
            f"--config.file={tmp_path / 'alertmanager.yml'}",
            f"--storage.path={tmp_path / 'alertmanager-data'}",
            listen("prometheus-alertmanager"),
            "--cluster.listen-address=",  # no HA gossip on 0.0.0.0:9094
        ],
        "prometheus": [
            binaries["prometheus"],
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
            listen("prometheus"),
        ],
    }
    started: list[Daemon] = []
    try:
        for name, command in commands.items():
            started.append(Daemon.spawn(name, command, tmp_path, ports[name]))
        for daemon in started:
            with daemon.report_on_failure():
                daemon.wait_ready()
        pushgateway, alertmanager, prometheus = started
        yield Stack(prometheus, pushgateway, alertmanager, ports["service"])
    finally:
        left = {daemon.NAME: daemon.shutdown() for daemon in started}
        assert not any(left.values()), f"processes left behind: {left}"


def test_a_degraded_day_raises_the_auc_drop_alert_at_the_receiver(
    stack: Stack, receiver: Receiver
) -> None:
    def arrived(status: str) -> list[dict[str, Any]]:
        return [
            alert
            for alert in receiver.alerts(status)
            if alert["labels"]["alertname"] == "ModelAucDrop"
        ]

    samples = pipeline_metrics.day_samples("2013-08-05", "2", performance=DEGRADED)
    pipeline_metrics.push(stack.pushgateway.url, "model_performance", samples)

    (alert,) = wait_for(
        lambda: arrived("firing"),
        ALERT_TIMEOUT,
        0.5,
        what="ModelAucDrop at the receiver",
        diagnose=stack.report,
    )
    assert alert["labels"] == {
        "alertname": "ModelAucDrop",
        "severity": "warning",
        "job": pipeline_metrics.JOB,
        pipeline_metrics.GROUP_LABEL: "model_performance",
        "day": "2013-08-05",
        "model_version": "2",
    }
    assert alert["annotations"]["summary"] == (
        "Model v2: ROC AUC on 2013-08-05 is 0.190 below validation"
    )

    # A healthy newer day replaces the group: the alert resolves at the receiver.
    samples = pipeline_metrics.day_samples("2013-08-06", "2", performance=HEALTHY)
    pipeline_metrics.push(stack.pushgateway.url, "model_performance", samples)
    (resolved,) = wait_for(
        lambda: arrived("resolved"),
        ALERT_TIMEOUT,
        0.5,
        what="ModelAucDrop resolved at the receiver",
        diagnose=stack.report,
    )
    assert resolved["labels"]["day"] == "2013-08-05"


def test_a_down_service_target_raises_service_down_and_nothing_else(
    stack: Stack, receiver: Receiver
) -> None:
    (alert,) = wait_for(
        lambda: receiver.alerts("firing"),
        ALERT_TIMEOUT,
        0.5,
        what="ServiceDown at the receiver",
        diagnose=stack.report,
    )
    assert alert["labels"] == {
        "alertname": "ServiceDown",
        "severity": "critical",
        "job": SERVICE_JOB,
        "instance": f"{HOST}:{stack.service_port}",
    }
    # The other targets are scraped, so every other rule is evaluated on live data.
    assert stack.up() == {SERVICE_JOB: 0.0, "pushgateway": 1.0, "prometheus": 1.0}
    time.sleep(3)  # a few more evaluations: still nothing else
    assert [a["labels"]["alertname"] for a in stack.active_alerts()] == ["ServiceDown"]
    assert {a["labels"]["alertname"] for a in receiver.alerts()} == {"ServiceDown"}
