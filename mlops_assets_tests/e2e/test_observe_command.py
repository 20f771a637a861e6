"""``mlops-assets observe`` (``make observe``) as a user runs it: a process until Ctrl-C.

The command runs with demo timings on free ports and a temporary state folder: it says where
everything is, a degraded day pushed to its Pushgateway comes back as an alert on its console
and in ``<state>/observability/alerts.jsonl``, and SIGTERM stops it with nothing left behind.
A port already taken is refused in one line before anything starts.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops_assets import observe, settings
from mlops_assets.lib import pipeline_metrics as pm
from mlops_assets.processes import (
    HOST,
    console_script,
    free_port,
    live_group_members,
    spawn_logged,
    wait_for,
)
from mlops_assets_tests.e2e.isolation import server_environment
from mlops_assets_tests.e2e.observability import require_stack

pytestmark = pytest.mark.e2e

DEGRADED = {"usable": True, "labelled_rows": 912, "roc_auc": 0.52, "validation_roc_auc": 0.71}
TIMEOUT = 60.0


def command(ports: dict[str, int]) -> list[str]:
    return [
        *console_script("mlops-assets", "mlops_assets.cli"),
        "observe",
        "--timings",
        "demo",
        f"--prometheus-port={ports[observe.PROMETHEUS]}",
        f"--pushgateway-port={ports[observe.PUSHGATEWAY]}",
        f"--alertmanager-port={ports[observe.ALERTMANAGER]}",
        f"--receiver-port={ports['receiver']}",
        f"--service-port={ports['service']}",
    ]


@pytest.fixture
def ports() -> dict[str, int]:
    require_stack()
    return {name: free_port() for name in (*observe.DEFAULT_PORTS, "service")}


@pytest.fixture
def running(
    tmp_path: Path, ports: dict[str, int]
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    log = tmp_path / "observe.log"
    env = server_environment({settings.STATE_DIR_VAR: str(tmp_path / "state")})
    process = spawn_logged(command(ports), cwd=tmp_path, env=env, log_path=log)
    try:
        yield process, log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_observe_shows_an_alert_from_a_pushed_day_and_stops_cleanly(
    running: tuple[subprocess.Popen[bytes], Path], ports: dict[str, int], tmp_path: Path
) -> None:
    process, log = running
    wait_for(
        lambda: "ready; Ctrl-C stops" in log.read_text(),
        TIMEOUT,
        0.2,
        what="observe to be ready",
        diagnose=log.read_text,
    )
    gateway = f"http://{HOST}:{ports[observe.PUSHGATEWAY]}"
    assert f"export {pm.GATEWAY_VAR}={gateway}" in log.read_text()
    samples = pm.day_samples("2013-08-05", "2", performance=DEGRADED)
    pm.push(gateway, "model_performance", samples)

    wait_for(
        lambda: "[firing] ModelAucDrop: Model v2: ROC AUC on 2013-08-05" in log.read_text(),
        TIMEOUT,
        0.5,
        what="the alert on the console",
        diagnose=log.read_text,
    )
    journal = tmp_path / "state" / "observability" / "alerts.jsonl"
    notes = [json.loads(line) for line in journal.read_text().splitlines()]
    labels = [alert["labels"] for note in notes for alert in note["alerts"]]
    wanted = {"alertname": "ModelAucDrop", "day": "2013-08-05", "model_version": "2"}
    # ServiceDown (nothing serves on the service port) may come first: any order.
    assert any(wanted.items() <= found.items() for found in labels), labels

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0, log.read_text()
    assert live_group_members(process.pid) == []
    # The data stays in the state folder for the next start.
    assert (tmp_path / "state" / "observability" / "prometheus-data").is_dir()


def test_a_port_in_use_is_refused_before_anything_starts(
    tmp_path: Path, ports: dict[str, int]
) -> None:
    with socket.socket() as holder:
        holder.bind((HOST, ports[observe.PROMETHEUS]))
        holder.listen()
        env = server_environment({settings.STATE_DIR_VAR: str(tmp_path / "state")})
        done = subprocess.run(command(ports), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"error: port(s) in use: prometheus {HOST}:{ports[observe.PROMETHEUS]}; "
        "choose others (--help)"
    )
    assert not (tmp_path / "state" / "observability" / "prometheus-data").exists()
