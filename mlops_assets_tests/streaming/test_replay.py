"""The replay producer's events and pacing (the broker side: e2e/test_stream_replay.py)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import date
from typing import Any

import pandas as pd
import pytest

from mlops_assets.lib.scoring import known_airports, request_fields, request_model
from mlops_assets.streaming import replay
from mlops_assets_tests.conftest import day_slice

DAY = date(2013, 7, 15)


@pytest.fixture(scope="module")
def events() -> list[replay.FlightEvent]:
    return replay.flight_events([DAY])


def test_one_event_per_flight_of_the_day_with_a_deterministic_unique_id(
    events: list[replay.FlightEvent], tables: dict[str, pd.DataFrame]
):
    flights = day_slice(tables["flights"], DAY)
    assert len(events) == len(flights) > 900
    ids = [e.event_id for e in events]
    assert len(set(ids)) == len(ids)
    assert ids == [e.event_id for e in replay.flight_events([DAY])]  # the same on every run
    first = events[0].flight
    key = (first["carrier"], first["flight"], first["origin"], first["sched_dep_time"])
    assert events[0].event_id == "2013-07-15/{}/{}/{}/{}".format(*key)
    expected = set(
        "2013-07-15/"
        + flights["carrier"]
        + "/"
        + flights["flight"]
        + "/"
        + flights["origin"]
        + "/"
        + flights["sched_dep_time"]
    )
    assert set(ids) == expected
    departures = [e.flight["sched_dep_time"] for e in events]
    assert departures == sorted(departures)  # in the order they happen


def test_every_flight_is_a_valid_request_with_exactly_the_request_fields(
    events: list[replay.FlightEvent], tables: dict[str, pd.DataFrame]
):
    model = request_model(
        request_fields(list(tables["airlines"]["carrier"]), known_airports(tables["airports"]))
    )
    for event in events:
        assert set(event.flight) == set(model.model_fields)
        model.model_validate(event.flight)  # raises on a field or a rule the service refuses


def test_the_tail_number_is_sent_raw_and_the_weather_is_the_origins_in_that_hour(
    events: list[replay.FlightEvent], tables: dict[str, pd.DataFrame]
):
    flights = {
        (r["carrier"], int(r["flight"]), r["origin"], int(r["sched_dep_time"])): r
        for r in day_slice(tables["flights"], DAY).to_dict("records")
    }
    weather = {
        (r["origin"], r["time_hour"]): r
        for r in day_slice(tables["weather"], DAY).to_dict("records")
    }
    missing_tail = 0
    for event in events:
        f = event.flight
        source = flights[(f["carrier"], f["flight"], f["origin"], f["sched_dep_time"])]
        if pd.isna(source["tailnum"]):
            missing_tail += 1
            assert f["tailnum"] is None
        else:
            assert f["tailnum"] == source["tailnum"]  # raw, as a client knows it
        assert f["time_hour"] == source["time_hour"]
        hour = weather.get((f["origin"], f["time_hour"]))
        if hour is not None and not pd.isna(hour["temp"]):
            assert f["temp"] == float(hour["temp"]) and isinstance(f["temp"], float)
        else:
            assert f["temp"] is None
    assert isinstance(events[0].flight["distance"], int)
    assert missing_tail < len(events)


def test_the_body_is_the_event_schema_stamped_when_sent(events: list[replay.FlightEvent]):
    body = json.loads(events[0].body(1764590000.25))
    assert body == {
        "event_id": events[0].event_id,
        "sent_at": 1764590000.25,
        "flight": events[0].flight,
    }


def test_a_day_without_flights_and_bad_options_are_refused_before_connecting():
    closed = "nats://127.0.0.1:1"  # nothing listens: connecting would fail differently
    with pytest.raises(ValueError, match="no flights on 2014-06-01"):
        replay.replay_day(closed, date(2014, 6, 1), 100)
    with pytest.raises(ValueError, match="rate must be a positive"):
        replay.replay_day(closed, DAY, 0)
    with pytest.raises(ValueError, match="limit must be at least 1"):
        replay.replay_day(closed, DAY, 100, limit=0)


class Recorder:
    """A broker stand-in that keeps what it was handed and when (the pacing is under test)."""

    def __init__(self, failures: int = 0, known: frozenset[str] = frozenset()) -> None:
        self.sent: list[tuple[float, str, dict[str, Any]]] = []
        self.failures = failures
        self.known = known

    async def __call__(self, event_id: str, body: bytes) -> bool:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker restarting")
        await asyncio.sleep(0.002)  # an acknowledgement's round trip
        self.sent.append((time.monotonic(), event_id, json.loads(body)))
        return event_id in self.known


def test_events_go_out_paced_not_in_bursts(events: list[replay.FlightEvent]):
    recorder = Recorder(known=frozenset({events[0].event_id, events[1].event_id}))
    report = asyncio.run(replay.publish_paced(recorder, events[:60], rate=200))
    assert (report.sent, report.duplicates, report.retries) == (60, 2, 0)
    assert [e for _, e, _ in recorder.sent] == [e.event_id for e in events[:60]]
    assert 59 / 200 <= report.seconds < 59 / 200 + 0.25
    assert 170 < report.achieved <= 205
    times = [t for t, _, _ in recorder.sent]
    busiest = max(sum(1 for t in times if start <= t < start + 0.05) for start in times)
    assert busiest <= 200 * 0.05 + 3  # at most a few events early in any 50 ms
    stamps = [body["sent_at"] for _, _, body in recorder.sent]
    assert stamps == sorted(stamps) and stamps[-1] - stamps[0] >= 59 / 200 - 0.01


def test_a_failed_publication_is_retried_and_nothing_is_lost(events: list[replay.FlightEvent]):
    recorder = Recorder(failures=3)
    report = asyncio.run(replay.publish_paced(recorder, events[:20], rate=1000))
    assert report.retries == 3 and report.sent == 20
    assert sorted(e for _, e, _ in recorder.sent) == sorted(e.event_id for e in events[:20])


def test_an_event_never_acknowledged_fails_the_replay_naming_it(
    events: list[replay.FlightEvent], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(replay, "RETRY_FOR_S", 0.3)
    recorder = Recorder(failures=10**6)
    with pytest.raises(RuntimeError, match=f"event {events[0].event_id} not acknowledged"):
        asyncio.run(replay.publish_paced(recorder, events[:1], rate=100))
    assert recorder.sent == []
