"""The scorer's micro-batches: one model per batch, sink before acknowledgement, refusals named.

The handler runs on FastStream's test brokers of NATS and Kafka (the same handler code); the
real broker's faults (restart, a killed scorer, redelivery) are in e2e/test_stream_scorer.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Annotated, Any

import pytest
from faststream import Context

from mlops_assets.lib import scoring, scoring_bundles, stream_sink
from mlops_assets.lib.pseudonyms import Pseudonymizer
from mlops_assets.streaming import brokers
from mlops_assets.streaming.microbatch import (
    Champion,
    MicroBatchScorer,
    NoChampionError,
    ScorerSettings,
)
from mlops_assets.streaming.scorer import attach
from mlops_assets.streaming.subjects import DEAD_LETTER, PREDICTIONS, SCHEDULED
from mlops_assets_tests.streaming.flights import (
    EVENT_DAY,
    PSEUDONYM_KEY,
    as_version,
    flight_event,
)

DAY = EVENT_DAY.isoformat()


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def roots(tmp_path: Path, champion: scoring.ScoringBundle) -> dict[str, Path]:
    """Bundle and sink roots, the champion (version 1) published."""
    bundles, sink = tmp_path / "scoring_bundles", tmp_path / "stream_sink"
    scoring_bundles.publish(str(bundles), champion)
    return {"bundles": bundles, "sink": sink}


def scorer_for(roots: dict[str, Path], poll_s: float = 0.0, clock: Any = None) -> MicroBatchScorer:
    champion = Champion(str(roots["bundles"]), poll_s, **({"clock": clock} if clock else {}))
    return MicroBatchScorer(champion, str(roots["sink"]), Pseudonymizer(PSEUDONYM_KEY))


def payloads(requests: list[dict[str, Any]], sent_at: float = 1.0) -> list[bytes]:
    return [json.dumps(flight_event(r, sent_at)).encode() for r in requests]


def sink_text(root: Path) -> str:
    return "".join(p.read_bytes().decode("latin-1") for p in root.rglob("*") if p.is_file())


def test_a_batch_is_scored_as_the_service_scores_it(roots, champion, requests):
    batch = requests[:60]
    bad = {**batch[1], "dest": "NOWHERE"}
    bodies = [*payloads(batch), payloads([batch[0]])[0], b"{not json", payloads([bad])[0]]
    result = scorer_for(roots).score_batch(bodies)

    # The service's scores: the same contract, the tail numbers pseudonymized with the same key
    # (so that the lake's planes, pseudonymized with it, are found).
    pseudonyms = Pseudonymizer(PSEUDONYM_KEY)
    assert {pseudonyms.pseudonym(r["tailnum"]) for r in batch} & set(champion.planes["tailnum"])
    model = scoring.request_model(champion.request_fields())
    expected = scoring.score(
        champion,
        pseudonyms.records([model(**r).model_dump() for r in batch], ["tailnum"]),
    )
    assert [p["probability"] for p in result.predictions] == [e["probability"] for e in expected]
    assert {p["model_version"] for p in result.predictions} == {"1"} and result.version == "1"
    assert result.duplicates == 1
    reasons = [d["reason"] for d in result.dead_letters]
    assert reasons[0].startswith("payload: malformed JSON")
    assert reasons[1].startswith("flight.dest: breaks the contract rule known_airport")
    assert result.dead_letters[1]["event_id"] == flight_event(bad)["event_id"]
    # In the sink: one row per event, no tail number (raw or pseudonym) anywhere.
    stored = stream_sink.read_day(str(roots["sink"]), DAY)
    assert len(stored) == 60 and stored["event_id"].is_unique
    assert not any(r["tailnum"] and r["tailnum"] in sink_text(roots["sink"]) for r in batch)


def test_the_champion_switches_between_batches_only_when_polled(roots, champion, requests):
    clock = FakeClock()
    scorer = scorer_for(roots, poll_s=1.0, clock=clock)
    assert scorer.score_batch(payloads(requests[:5])).version == "1"
    scoring_bundles.publish(str(roots["bundles"]), as_version(champion, "2"))
    clock.now = 0.5  # not polled yet: the batch stays with version 1, whole
    assert not scorer.champion.due()
    first = scorer.score_batch(payloads(requests[5:10]))
    assert {p["model_version"] for p in first.predictions} == {"1"}
    clock.now = 1.0
    assert scorer.champion.due()  # the handler then loads it off the event loop
    second = scorer.score_batch(payloads(requests[10:15]))
    assert {p["model_version"] for p in second.predictions} == {"2"}
    stored = stream_sink.read_day(str(roots["sink"]), DAY)
    assert sorted(stored.groupby("model_version").size().to_dict().items()) == [("1", 10), ("2", 5)]


def test_a_bundle_that_cannot_load_keeps_the_old_champion(roots, champion, requests, caplog):
    scorer = scorer_for(roots)
    scorer.score_batch(payloads(requests[:2]))
    scoring_bundles.publish(str(roots["bundles"]), as_version(champion, "3"))
    (roots["bundles"] / "3" / "classifier.json").write_text("{")
    with caplog.at_level(logging.ERROR):
        result = scorer.score_batch(payloads(requests[2:4]))
    assert result.version == "1" and len(result.predictions) == 2
    assert "cannot load the scoring bundle of version 3: kept 1" in caplog.text


def test_without_a_champion_nothing_is_scored_nor_written(tmp_path, requests):
    roots = {"bundles": tmp_path / "none", "sink": tmp_path / "sink"}
    with pytest.raises(NoChampionError, match="no champion's scoring bundle is published"):
        scorer_for(roots).score_batch(payloads(requests[:3]))
    assert not roots["sink"].exists()


def test_a_sink_that_cannot_be_written_fails_the_batch(roots, requests):
    roots["sink"].write_text("a file where the sink's folder should be")
    with pytest.raises(OSError):
        scorer_for(roots).score_batch(payloads(requests[:3]))
    assert roots["sink"].read_text().startswith("a file")


BROKERS = {
    "nats": "nats://127.0.0.1:4222",
    "kafka": "kafka://127.0.0.1:9092",
}


def test_brokers(kind: str, broker: Any) -> Any:
    from faststream.kafka import TestKafkaBroker
    from faststream.nats import TestNatsBroker

    return (TestKafkaBroker if kind == "kafka" else TestNatsBroker)(broker)


test_brokers.__test__ = False  # type: ignore[attr-defined]


def collector(store: list[dict[str, Any]]) -> Any:
    async def collect(message: Annotated[Any, Context("message")]) -> None:
        store.append(json.loads(message.body))

    return collect


async def run_on_test_broker(
    kind: str, scorer: MicroBatchScorer, batches: list[list[bytes]]
) -> dict[str, list[dict[str, Any]]]:
    """Publishes each batch (Kafka: as one batch; NATS: event by event) to the handler; returns
    what it published to the predictions and dead-letter subjects."""
    broker: Any = brokers.broker_from_url(BROKERS[kind])
    attach(broker, scorer, ScorerSettings(retry_s=0.0))
    out: dict[str, list[dict[str, Any]]] = {PREDICTIONS: [], DEAD_LETTER: []}
    # Downstream consumers: on NATS, of the JetStream stream the handler publishes to.
    options = {} if kind == "kafka" else {"stream": brokers.flights_stream()}
    for subject, store in out.items():
        broker.subscriber(subject, **options)(collector(store))
    async with test_brokers(kind, broker) as client:
        for batch in batches:
            if kind == "kafka":
                await client.publish_batch(*batch, topic=SCHEDULED)
            else:
                for body in batch:
                    await client.publish(body, SCHEDULED)
    return out


@pytest.mark.parametrize("kind", sorted(BROKERS))
def test_the_handler_writes_publishes_and_refuses_on_both_brokers(kind, roots, requests):
    good = payloads(requests[:20])
    batches = [[*good[:10], b"[1, 2"], [*good[5:20], json.dumps({"event_id": "x"}).encode()]]
    out = asyncio.run(run_on_test_broker(kind, scorer_for(roots), batches))
    stored = stream_sink.read_day(str(roots["sink"]), DAY)
    assert len(stored) == 20 and stored["event_id"].is_unique  # 5 sent twice: one row each
    assert {p["event_id"] for p in out[PREDICTIONS]} == set(stored["event_id"])
    assert {p["model_version"] for p in out[PREDICTIONS]} == {"1"}
    reasons = sorted(d["reason"] for d in out[DEAD_LETTER])
    assert reasons[0].startswith("payload: malformed JSON")
    assert reasons[1].startswith("sent_at: required, a number")


@pytest.mark.parametrize("kind", sorted(BROKERS))
def test_a_failed_sink_publishes_nothing_and_leaves_the_batch_unacknowledged(
    kind, roots, requests, caplog
):
    roots["sink"].write_text("not a folder")
    with caplog.at_level(logging.ERROR):
        out = asyncio.run(run_on_test_broker(kind, scorer_for(roots), [payloads(requests[:4])]))
    assert out == {PREDICTIONS: [], DEAD_LETTER: []}
    assert "events not acknowledged" in caplog.text
    # Once the sink is back, the same events (delivered again) are scored.
    roots["sink"].unlink()
    out = asyncio.run(run_on_test_broker(kind, scorer_for(roots), [payloads(requests[:4])]))
    assert len(out[PREDICTIONS]) == 4 == len(stream_sink.read_day(str(roots["sink"]), DAY))
