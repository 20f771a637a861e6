"""The scorer's health check (compose and Kubernetes): a broker connection is established."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_assets.streaming import health


def check(url: str) -> int:
    """The check's exit code as the containers run it, with ``MLOPS_STREAM_URL=url``."""
    done = subprocess.run(
        [sys.executable, "-m", "mlops_assets.streaming.health"],
        env={"MLOPS_STREAM_URL": url},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.stderr == ""
    return done.returncode


def test_ports_are_read_from_every_broker_of_the_url():
    assert health.broker_ports("kafka://a:9092,b:9093") == {"2384", "2385"}
    assert health.broker_ports("nats://127.0.0.1:4222") == {"107E"}


def test_healthy_only_while_a_connection_to_a_broker_is_established():
    if not Path("/proc/net/tcp").exists():
        pytest.skip("no /proc/net/tcp here")
    with socket.create_server(("127.0.0.1", 0)) as broker:
        port = broker.getsockname()[1]
        url = f"kafka://127.0.0.1:{port + 1},127.0.0.1:{port}"
        assert check(url) == 1  # a listener, nobody connected
        with socket.create_connection(("127.0.0.1", port)):
            accepted, _ = broker.accept()
            with accepted:
                assert check(url) == 0
                assert check(f"kafka://127.0.0.1:{port + 1}") == 1  # another broker
        assert check(url) == 1  # closed: waiting to close, not established
    assert health.main({}) == 1  # no broker configured
