"""The stream scorer on a real NATS server with JetStream: every fault of the design, nothing lost.

``mlops-assets stream-score`` runs as its own process (as in production) against a
``nats-server -js`` on 127.0.0.1; events go in through the NATS client, as any producer's
would. Each test checks what came out: the lake's stream sink (one prediction per event id,
whole parts only), the dead-letter subject (a reason per refused event) and the predictions
subject (every prediction names its model version).
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlops_assets import settings
from mlops_assets.lib import scoring, scoring_bundles, stream_sink
from mlops_assets.lib.pseudonyms import KEY_VARIABLE as PSEUDONYM_KEY_VAR
from mlops_assets.processes import LoggedServer, console_script, spawn_logged, wait_for
from mlops_assets.streaming.brokers import URL_VARIABLE
from mlops_assets.streaming.nats_server import NatsServer
from mlops_assets.streaming.subjects import (
    CONSUMER,
    DEAD_LETTER,
    MESSAGE_ID_HEADER,
    PREDICTIONS,
    SCHEDULED,
    STREAM,
    STREAM_SUBJECTS,
)
from mlops_assets_tests.e2e.isolation import server_environment
from mlops_assets_tests.e2e.nats import running_nats
from mlops_assets_tests.streaming.flights import (
    EVENT_DAY,
    PSEUDONYM_KEY,
    as_version,
    champion_bundle,
    flight_event,
    flight_requests,
)

pytestmark = pytest.mark.e2e

DAY = EVENT_DAY.isoformat()
# Redelivery of a killed scorer's batch after 2 s (production: 30 s); the champion polled
# every 0.2 s: the tests wait for both.
ACK_WAIT_S = 2.0
POLL_S = 0.2
RESULT_WAIT_S = 30.0


@dataclass
class StreamScorer(LoggedServer):
    """``mlops-assets stream-score`` as a child process."""

    NAME = "stream-score"
    STOP_GRACE = 10.0
    STARTUP_TIMEOUT = 30.0

    process: Any
    log_path: Path

    @classmethod
    def spawn(cls, url: str, roots: dict[str, Path], log_path: Path) -> StreamScorer:
        env = server_environment(
            {
                URL_VARIABLE: url,
                scoring_bundles.ROOT_VARIABLE: str(roots["bundles"]),
                stream_sink.ROOT_VARIABLE: str(roots["sink"]),
                PSEUDONYM_KEY_VAR: PSEUDONYM_KEY,
                settings.STATE_DIR_VAR: str(roots["state"]),
            },
            scrub=(settings.ENV_VAR,),
        )
        command = [*console_script("mlops-assets", "mlops_assets.cli"), "stream-score"]
        command += ["--ack-wait", str(ACK_WAIT_S), "--poll", str(POLL_S)]
        process = spawn_logged(command, cwd=roots["state"], env=env, log_path=log_path)
        return cls(process, log_path)

    def wait_ready(self, timeout: float | None = None) -> float:
        """Waits until the scorer has its champion and subscribes."""
        started = time.monotonic()

        def ready() -> bool:
            self.check_alive()
            return "stream scorer on nats://" in self.log_text()

        wait_for(ready, timeout or self.STARTUP_TIMEOUT, 0.1, what="the stream scorer to start")
        return time.monotonic() - started


@pytest.fixture(scope="module")
def events(tables: dict[str, pd.DataFrame]) -> list[dict[str, Any]]:
    """Six days of real flights as events (about 4,900, distinct ids), in departure order."""
    days = [EVENT_DAY + timedelta(days=n) for n in range(6)]
    return [flight_event(r) for day in days for r in flight_requests(tables, day)]


@dataclass
class Stream:
    """The module's broker and scorer (a test that kills the scorer leaves its successor)."""

    broker: NatsServer
    roots: dict[str, Path]
    champion: scoring.ScoringBundle
    scorer: StreamScorer
    started: list[StreamScorer]

    def start_scorer(self) -> StreamScorer:
        log = self.roots["state"] / f"stream-score-{len(self.started)}.log"
        self.scorer = StreamScorer.spawn(self.broker.url, self.roots, log)
        self.started.append(self.scorer)
        with self.scorer.report_on_failure():
            self.scorer.wait_ready()
        return self.scorer


@pytest.fixture(scope="module")
def stream(
    tables: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stream]:
    """A NATS server and one scorer process with the champion (version 1) published."""
    root = tmp_path_factory.mktemp("stream")
    roots = {name: root / name for name in ("bundles", "sink", "state")}
    roots["state"].mkdir()
    champion = champion_bundle(tables, "1")
    scoring_bundles.publish(str(roots["bundles"]), champion)
    with running_nats(root / "nats") as broker:
        created = Stream(broker, roots, champion, None, [])  # type: ignore[arg-type]
        try:
            created.start_scorer()
            yield created
        finally:
            for scorer in created.started:
                if scorer.process.poll() is None:
                    leftovers = scorer.shutdown()
                    assert not leftovers, f"the stream scorer left processes behind: {leftovers}"
            for scorer in created.started:  # a scorer never logs a traceback
                assert "Traceback" not in scorer.log_text(), scorer.log_tail()


# -- the producer's and the consumer's side, through the NATS client --------------------------


async def _publish(
    url: str, bodies: list[tuple[str | None, bytes]], rate: float | None, retry_for_s: float
) -> int:
    """Publishes ``(message id, body)`` pairs to flights.scheduled, awaiting JetStream's acks.

    Paced at ``rate`` events per second, else as fast as 256 acknowledgements in flight allow.
    A publication that fails (the broker restarting) is retried for ``retry_for_s``.
    """
    import nats

    client = await nats.connect(url, reconnect_time_wait=0.2, max_reconnect_attempts=-1)
    stream = client.jetstream()
    await stream.add_stream(name=STREAM, subjects=list(STREAM_SUBJECTS))
    started, retries = time.monotonic(), 0

    async def send(key: str | None, body: bytes) -> None:
        nonlocal retries
        headers = {MESSAGE_ID_HEADER: key} if key else None
        deadline = time.monotonic() + retry_for_s
        while True:
            try:
                await stream.publish(SCHEDULED, body, headers=headers, timeout=1.0)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                retries += 1
                await asyncio.sleep(0.1)

    window: list[Any] = []
    for i, (key, body) in enumerate(bodies):
        if rate:
            await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
            await send(key, body)
            continue
        window.append(send(key, body))
        if len(window) == 256:
            await asyncio.gather(*window)
            window = []
    await asyncio.gather(*window)
    await client.close()
    return retries


def publish(
    broker: NatsServer,
    events: list[dict[str, Any]] | list[dict[str, Any] | bytes],
    *,
    rate: float | None = None,
    retry_for_s: float = 0.0,
    with_ids: bool = True,
) -> int:
    """Publishes ``events`` (a dict is sent as JSON, bytes as they are); returns the retries."""
    bodies = [
        (e["event_id"] if with_ids and isinstance(e, dict) else None, encode(e)) for e in events
    ]
    return asyncio.run(_publish(broker.url, bodies, rate, retry_for_s))


def encode(event: dict[str, Any] | bytes) -> bytes:
    return event if isinstance(event, bytes) else json.dumps(event).encode()


async def _stored(url: str, subject: str) -> list[dict[str, Any]]:
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    client = await nats.connect(url)
    stream = client.jetstream()
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.ALL, filter_subject=subject, ack_policy=AckPolicy.NONE
    )
    info = await stream.stream_info(STREAM, subjects_filter=subject)
    count = (info.state.subjects or {}).get(subject, 0)
    subscription = await stream.pull_subscribe(subject, stream=STREAM, config=config)
    out: list[dict[str, Any]] = []
    while len(out) < count:
        out += [json.loads(m.data) for m in await subscription.fetch(count - len(out), 5.0)]
    await client.close()
    return out


def stored(broker: NatsServer, subject: str) -> list[dict[str, Any]]:
    """Every message JetStream holds on ``subject``."""
    return asyncio.run(_stored(broker.url, subject))


def sink(stream: Stream, ids: set[str], raw: bool = False) -> pd.DataFrame:
    """The sink's rows of the events ``ids``: one per event, or every stored row (``raw``)."""
    root = str(stream.roots["sink"])
    read = stream_sink.read_raw if raw else stream_sink.read_day
    frames = [read(root, day) for day in stream_sink.days(root)]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["event_id"])
    return rows[rows["event_id"].isin(ids)].reset_index(drop=True)


def wait_for_sink(stream: Stream, ids: set[str], what: str = "") -> pd.DataFrame:
    """Waits until the sink has a prediction for every event of ``ids``; returns them."""

    def complete() -> bool:
        stream.scorer.check_alive()
        return len(sink(stream, ids)) == len(ids)

    with stream.scorer.report_on_failure():
        wait_for(complete, RESULT_WAIT_S, 0.1, what=what or f"{len(ids)} predictions in the sink")
    return sink(stream, ids)


async def _consumer_state(url: str) -> tuple[int, int]:
    import nats

    client = await nats.connect(url)
    info = await client.jetstream().consumer_info(STREAM, CONSUMER)
    await client.close()
    return int(info.num_pending), int(info.num_ack_pending)


def consumer_state(stream: Stream) -> tuple[int, int]:
    """The scorer's consumer: events not delivered yet, delivered and not acknowledged."""
    return asyncio.run(_consumer_state(stream.broker.url))


def wait_until_all_acknowledged(stream: Stream) -> None:
    def done() -> bool:
        stream.scorer.check_alive()
        return consumer_state(stream) == (0, 0)

    with stream.scorer.report_on_failure():
        wait_for(done, RESULT_WAIT_S, 0.1, what="every event acknowledged")


def ids_of(events: list[dict[str, Any]]) -> set[str]:
    return {e["event_id"] for e in events}


class Producer(threading.Thread):
    """Publishes events in the background at ``rate``, retrying through a broker outage."""

    def __init__(self, stream: Stream, events: list[dict[str, Any]], rate: float) -> None:
        super().__init__(daemon=True)
        self.stream, self.events, self.rate = stream, events, rate
        self.retries = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.retries = publish(self.stream.broker, self.events, rate=self.rate, retry_for_s=20)
        except BaseException as error:  # reported by finish()
            self.error = error

    def finish(self) -> int:
        self.join(RESULT_WAIT_S)
        assert not self.is_alive(), "the producer did not finish"
        assert self.error is None, f"the producer failed: {self.error!r}"
        return self.retries


# -- the faults ---------------------------------------------------------------------------------


def test_bad_events_go_to_the_dead_letter_subject_and_repeated_ids_are_scored_once(stream, events):
    good = events[:200]
    bad_contract = {**events[200], "flight": {**events[200]["flight"], "distance": -3}}
    leaky = {**events[201], "flight": {**events[201]["flight"], "dep_delay": 7.0}}
    malformed = b'{"event_id": "x", "sent_at": 1, "flight": {'
    publish(stream.broker, [*good, malformed, bad_contract, leaky])
    # The same ids again, as a producer retrying without a message id would send them.
    publish(stream.broker, good[:50], with_ids=False)

    scored = wait_for_sink(stream, ids_of(good))
    assert set(scored["model_version"]) == {"1"}
    wait_until_all_acknowledged(stream)
    letters = stored(stream.broker, DEAD_LETTER)
    reasons = {letter["event_id"]: letter["reason"] for letter in letters}
    assert reasons[None].startswith("payload: malformed JSON")
    assert reasons[bad_contract["event_id"]].startswith(
        "flight.distance: Input should be greater than or equal to 1"
    )
    assert reasons[leaky["event_id"]].startswith("flight.dep_delay: Extra inputs are not permitted")
    assert len(letters) == 3
    tails = {e["flight"]["tailnum"] for e in (bad_contract, leaky)}
    assert not any(tail in json.dumps(letters) for tail in tails)
    # The repeated ids are through too: still one prediction each, in the sink and out.
    assert len(sink(stream, ids_of(good))) == 200
    assert not sink(stream, ids_of([bad_contract, leaky])).size
    predictions = [p for p in stored(stream.broker, PREDICTIONS) if p["event_id"] in ids_of(good)]
    assert sorted(p["event_id"] for p in predictions) == sorted(ids_of(good))
    assert all(p["model_version"] == "1" and "tailnum" not in p for p in predictions)


def test_a_broker_restarted_mid_stream_loses_nothing(stream, events):
    batch = events[300:1300]
    producer = Producer(stream, batch, rate=1000)
    producer.start()
    wait_for(lambda: len(sink(stream, ids_of(batch))) > 100, RESULT_WAIT_S, 0.05, what="scoring")
    outage = time.monotonic()
    stream.broker.restart()
    outage = time.monotonic() - outage
    producer.finish()
    started = time.monotonic()
    scored = wait_for_sink(stream, ids_of(batch), what="every event after the broker restart")
    print(f"broker down {outage:.2f} s; all scored {time.monotonic() - started:.2f} s later")
    assert scored["event_id"].is_unique and set(scored["model_version"]) == {"1"}
    wait_until_all_acknowledged(stream)


def part_count(stream: Stream) -> int:
    """Parts in the sink (a listing: cheap enough to poll while a backlog is scored)."""
    root = str(stream.roots["sink"])
    return sum(len(stream_sink.parts(root, day)) for day in stream_sink.days(root))


def kill_mid_batch(scorer: StreamScorer, stream: Stream) -> tuple[int, int]:
    """SIGKILLs the scorer while it holds a delivered, unacknowledged batch.

    The scorer is frozen (SIGSTOP) to read its consumer's state: with a batch in hand it is
    killed, else it goes on a moment and is frozen again.

    Returns:
        Events not delivered yet and events delivered but not acknowledged at the kill.
    """
    for _ in range(100):
        scorer.process.send_signal(signal.SIGSTOP)
        time.sleep(0.05)  # what it sent before it froze reaches the server
        pending, unacknowledged = consumer_state(stream)
        if unacknowledged:
            scorer.process.send_signal(signal.SIGKILL)
            scorer.process.wait(10)
            return pending, unacknowledged
        scorer.process.send_signal(signal.SIGCONT)
        time.sleep(0.005)
    raise AssertionError("the scorer never held a batch to be killed with")


def test_a_scorer_killed_mid_batch_leaves_whole_parts_and_its_successor_resumes(stream, events):
    batch = events[1300:3800]
    before = part_count(stream)
    publish(stream.broker, batch)  # a backlog: the scorer is busy with a batch at any moment
    wait_for(lambda: part_count(stream) > before, RESULT_WAIT_S, 0.005, what="a first part")
    pending, unacknowledged = kill_mid_batch(stream.scorer, stream)
    # Whole parts only: each reads as a whole, a staged file is hidden from readers.
    root = stream.roots["sink"]
    for day in stream_sink.days(str(root)):
        for name in stream_sink.parts(str(root), day):
            assert len(pd.read_parquet(root / day / name)) > 0

    stream.start_scorer()
    scored = wait_for_sink(stream, ids_of(batch), what="every event after the scorer's restart")
    wait_until_all_acknowledged(stream)
    stored_rows = sink(stream, ids_of(batch), raw=True)
    again = len(stored_rows) - len(scored)
    print(f"killed with {unacknowledged} unacknowledged and {pending} pending; {again} rescored")
    # Resumed from its acknowledged position: at most the unacknowledged events came back.
    assert scored["event_id"].is_unique and again <= unacknowledged


def test_a_champion_published_mid_stream_switches_between_batches(stream, events):
    batch = events[3800:4800]
    producer = Producer(stream, batch, rate=500)
    producer.start()
    wait_for(lambda: len(sink(stream, ids_of(batch))) > 50, RESULT_WAIT_S, 0.05, what="scoring")
    scoring_bundles.publish(str(stream.roots["bundles"]), as_version(stream.champion, "2"))
    producer.finish()
    scored = wait_for_sink(stream, ids_of(batch))
    # Every part (a micro-batch's day) holds one version; in scoring order, 1 then 2 only.
    rows = sink(stream, ids_of(batch), raw=True).sort_values("scored_at", kind="stable")
    versions = rows["model_version"].tolist()
    assert versions == sorted(versions) and set(versions) == {"1", "2"}, versions
    parts = [
        set(pd.read_parquet(stream.roots["sink"] / day / name)["model_version"])
        for day in stream_sink.days(str(stream.roots["sink"]))
        for name in stream_sink.parts(str(stream.roots["sink"]), day)
    ]
    assert all(len(versions) == 1 for versions in parts)
    published = [p for p in stored(stream.broker, PREDICTIONS) if p["event_id"] in ids_of(batch)]
    assert {p["model_version"] for p in published} == {"1", "2"}
    assert scored["event_id"].is_unique
