"""The local broker: a real nats-server with JetStream on 127.0.0.1, restarted on its store."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from mlops_assets import settings
from mlops_assets.processes import HOST, live_group_members
from mlops_assets.streaming import local, nats_server

SUBJECT = "probe.events"


async def publish(url: str, payload: bytes, msg_id: str) -> tuple[int, bool]:
    """Creates the stream if missing, publishes once; returns (sequence, duplicate)."""
    import nats

    client = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        js = client.jetstream()
        await js.add_stream(name="PROBE", subjects=["probe.>"])
        ack = await js.publish(SUBJECT, payload, headers={"Nats-Msg-Id": msg_id})
        return ack.seq, bool(ack.duplicate)
    finally:
        await client.close()


async def stored(url: str) -> list[bytes]:
    """Every message of the stream, in order."""
    import nats

    client = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        js = client.jetstream()
        info = await js.stream_info("PROBE")
        return [
            (await js.get_msg("PROBE", seq)).data or b""
            for seq in range(info.state.first_seq, info.state.last_seq + 1)
        ]
    finally:
        await client.close()


def test_the_binary_is_the_environments():
    found = nats_server.binary()
    assert found.name == "nats-server" and found.exists()


def test_default_store_is_under_the_state_folder(tmp_path: Path):
    store = nats_server.default_store({settings.STATE_DIR_VAR: str(tmp_path)})
    assert store == tmp_path.resolve() / "stream" / "nats"


def test_start_publish_restart_keeps_the_message_and_stop_leaves_nothing(tmp_path: Path):
    server = nats_server.start(tmp_path / "store")
    try:
        assert server.url == f"nats://{HOST}:{server.port}"
        info = nats_server.server_info(server.port)
        assert info and info["jetstream"] is True and info["host"] == HOST
        assert asyncio.run(publish(server.url, b"one", "event-1")) == (1, False)
        pid = server.process.pid

        server.restart()

        assert server.process.pid != pid and server.running
        assert asyncio.run(stored(server.url)) == [b"one"]
        # The same id again within the dedup window: acknowledged as a duplicate, not stored.
        assert asyncio.run(publish(server.url, b"one", "event-1"))[1] is True
        assert asyncio.run(stored(server.url)) == [b"one"]
        assert any((tmp_path / "store").rglob("*.blk")), "JetStream keeps its data in the store"
    finally:
        assert server.stop() == []  # SIGTERM was enough
    assert not server.running and live_group_members(server.process.pid) == []
    assert nats_server.port_free(server.port)
    assert nats_server.server_info(server.port) is None


def test_a_taken_port_is_refused_with_its_address(tmp_path: Path):
    with nats_server.running(tmp_path / "store") as server:
        with pytest.raises(nats_server.NatsServerError, match=f"{HOST}:{server.port} is in use"):
            local.run_foreground(tmp_path / "other", server.port, {})
        assert not (tmp_path / "other").exists()


def test_a_server_that_cannot_start_reports_its_log_and_leaves_nothing(tmp_path: Path):
    with socket.socket() as squatter:  # something that is not NATS holds the port
        squatter.bind((HOST, 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(nats_server.NatsServerError, match="address already in use") as raised:
            nats_server.start(tmp_path / "store", port)
    assert "log tail" in str(raised.value)
    assert not [
        pid for pid in os.listdir("/proc") if pid.isdigit() and _is_server_on(int(pid), port)
    ]


def _is_server_on(pid: int, port: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return command[0].endswith(b"nats-server") and str(port).encode() in command
