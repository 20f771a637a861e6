"""Reading events with the Bento's request contract: every refusal names the field and rule."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from mlops_assets.lib import scoring
from mlops_assets.streaming.events import (
    Event,
    EventReader,
    Refusal,
    dead_letter_event,
    prediction_event,
)
from mlops_assets_tests.streaming.flights import flight_event

TAIL = "N14228"  # the example's tail number: never in a reason


@pytest.fixture(scope="module")
def reader(champion: scoring.ScoringBundle) -> EventReader:
    return EventReader(champion.request_fields())


def encode(document: Any) -> bytes:
    return json.dumps(document).encode()


def test_a_valid_event_is_read_with_the_request_model(champion, reader):
    event = flight_event(dict(scoring.EXAMPLE_REQUEST), sent_at=1.5)
    read = reader.read(encode(event))
    assert isinstance(read, Event)
    assert read.event_id == "2013-01-01/UA/1545/EWR/515" and read.sent_at == 1.5
    model = scoring.request_model(champion.request_fields())
    assert read.flight == model(**scoring.EXAMPLE_REQUEST).model_dump()
    assert reader.sensitive == ("tailnum",)


EXAMPLE = flight_event(dict(scoring.EXAMPLE_REQUEST))


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"event_id": "a", "sent_at": 1, "flight": {', "payload: malformed JSON"),
        (b"\xff\xfe" + TAIL.encode(), "payload: not UTF-8 text"),
        (encode([EXAMPLE]), "payload: not a JSON object"),
        (encode({**EXAMPLE, "event_id": ""}), "event_id: required"),
        (encode({**EXAMPLE, "event_id": 7}), "event_id: required"),
        (encode({**EXAMPLE, "sent_at": "now"}), "sent_at: required, a number"),
        (encode({**EXAMPLE, "sent_at": True}), "sent_at: required, a number"),
        (encode({**EXAMPLE, "sent_at": -1}), "sent_at: must be a finite"),
        (encode({**EXAMPLE, "flight": TAIL}), "flight: required, a JSON object"),
        (encode({**EXAMPLE, "tailnum": TAIL}), "tailnum: not a field of an event"),
        (
            encode({**EXAMPLE, "flight": {**EXAMPLE["flight"], "tailnum": "n-" + TAIL}}),
            "flight.tailnum: String should match pattern",
        ),
        (
            encode({**EXAMPLE, "flight": {**EXAMPLE["flight"], "dest": TAIL}}),
            "flight.dest: breaks the contract rule known_airport",
        ),
        (
            encode({**EXAMPLE, "flight": {**EXAMPLE["flight"], "dep_delay": 12}}),
            "flight.dep_delay: Extra inputs are not permitted [extra_forbidden]",
        ),
        (
            encode({**EXAMPLE, "flight": {**EXAMPLE["flight"], "distance": "1400"}}),
            "flight.distance: Input should be a valid integer [int_type]",
        ),
        (
            encode({**EXAMPLE, "flight": {**EXAMPLE["flight"], "month": 2, "day": 31}}),
            "day is out of range for month",
        ),
    ],
)
def test_refusals_name_the_field_and_rule_never_the_value(reader, payload, reason):
    read = reader.read(payload)
    assert isinstance(read, Refusal)
    assert reason in read.reason
    assert TAIL not in read.reason and "1400" not in read.reason
    assert read.payload_bytes == len(payload)
    assert read.payload_sha256 == hashlib.sha256(payload).hexdigest()
    letter = dead_letter_event(read, received_at=3.0)
    assert set(letter) == {"event_id", "reason", "received_at", "payload_bytes", "payload_sha256"}
    assert TAIL not in json.dumps(letter)


def test_a_refusal_keeps_a_usable_event_id(reader):
    bad = {**EXAMPLE, "flight": {**EXAMPLE["flight"], "carrier": "ZZ"}}
    read = reader.read(encode(bad))
    assert isinstance(read, Refusal) and read.event_id == EXAMPLE["event_id"]
    assert "flight.carrier: breaks the contract rule known_carrier" in read.reason


def test_many_errors_are_cut_to_a_few(reader):
    flight = {k: "x" for k in EXAMPLE["flight"]}
    read = reader.read(encode({**EXAMPLE, "flight": flight}))
    assert isinstance(read, Refusal)
    assert read.reason.count("flight.") == 5 and read.reason.endswith("more")


def test_a_prediction_event_names_the_version_and_no_tail_number(champion, reader):
    read = reader.read(encode(flight_event(dict(scoring.EXAMPLE_REQUEST), sent_at=2.0)))
    assert isinstance(read, Event)
    [result] = scoring.score(champion, [read.flight])
    event = prediction_event(read, result, scored_at=2.5)
    assert list(event) == [
        "event_id", "flight_date", "carrier", "flight", "origin", "probability",
        "delayed", "threshold", "model_version", "sent_at", "scored_at",
    ]  # fmt: skip
    assert event["model_version"] == "1" and event["sent_at"] == 2.0
    assert TAIL not in json.dumps(event)
