"""``mlops-assets stream-replay`` against a real NATS server with JetStream."""

from __future__ import annotations

import asyncio
import json
from datetime import date
from typing import Any

import pandas as pd
import pytest

from mlops_assets import cli
from mlops_assets.streaming import replay
from mlops_assets.streaming.nats_server import NatsServer
from mlops_assets.streaming.subjects import MESSAGE_ID_HEADER, SCHEDULED, STREAM
from mlops_assets_tests.conftest import day_slice

pytestmark = pytest.mark.e2e
DAY = date(2013, 7, 15)


async def scheduled(url: str) -> tuple[int, Any]:
    """The count of events on ``flights.scheduled`` and the first one stored."""
    import nats

    client = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        js = client.jetstream()
        info = await js.stream_info(STREAM, subjects_filter=SCHEDULED)
        first = await js.get_msg(STREAM, info.state.first_seq)
        return int((info.state.subjects or {}).get(SCHEDULED, 0)), first
    finally:
        await client.close()


def test_a_day_is_on_the_stream_once_even_when_replayed_again(
    fresh_nats_broker: NatsServer,
    tables: dict[str, pd.DataFrame],
    capsys: pytest.CaptureFixture[str],
):
    flights = len(day_slice(tables["flights"], DAY))
    command = ["stream-replay", "--day", DAY.isoformat(), "--rate", "5000"]
    command += ["--url", fresh_nats_broker.url]

    assert cli.main(command) == 0
    assert f"sent {flights} events" in capsys.readouterr().out
    count, first = asyncio.run(scheduled(fresh_nats_broker.url))
    assert count == flights
    event = json.loads(first.data)
    assert set(event) == {"event_id", "sent_at", "flight"}
    assert first.headers[MESSAGE_ID_HEADER] == event["event_id"]
    assert event["event_id"].startswith(f"{DAY.isoformat()}/")

    # The same day again: every event is acknowledged as a duplicate, none stored twice.
    assert cli.main(command) == 0
    assert f"{flights} already on the broker" in capsys.readouterr().out
    assert asyncio.run(scheduled(fresh_nats_broker.url))[0] == flights


def test_without_a_broker_the_command_fails_in_bounded_time_saying_so(
    fresh_nats_broker: NatsServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    url = fresh_nats_broker.url
    fresh_nats_broker.stop()
    monkeypatch.setattr(replay, "CONNECT_TIMEOUT_S", 1.0)
    assert cli.main(["stream-replay", "--day", DAY.isoformat(), "--limit", "5", "--url", url]) == 1
    assert f"no broker answers at {url}" in capsys.readouterr().err


def test_a_broker_restarted_mid_replay_loses_nothing(
    fresh_nats_broker: NatsServer, tables: dict[str, pd.DataFrame]
):
    flights = len(day_slice(tables["flights"], DAY))
    events = replay.flight_events([DAY])  # read before the clock starts

    async def replay_with_a_restart() -> tuple[replay.ReplayReport, bool]:
        sending = asyncio.create_task(replay.replay_events(fresh_nats_broker.url, events, 1000))
        await asyncio.sleep(0.4)  # a few hundred events acknowledged, more on their way
        await asyncio.to_thread(fresh_nats_broker.restart)
        restarted_mid_replay = not sending.done()
        return await sending, restarted_mid_replay

    pid = fresh_nats_broker.process.pid
    report, restarted_mid_replay = asyncio.run(replay_with_a_restart())
    assert restarted_mid_replay and fresh_nats_broker.process.pid != pid
    assert report.sent == flights
    # Every event once: those stored before the restart survived it (JetStream's store), those
    # sent during it were sent again or buffered by the client, duplicates dropped by their id.
    assert asyncio.run(scheduled(fresh_nats_broker.url))[0] == flights
