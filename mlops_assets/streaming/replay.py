"""The replay producer: a real day's scheduled flights published as events, at a steady rate.

``mlops-assets stream-replay --day 2013-07-15 --rate 200`` reads the day's flights from the
data source (``lib/source.py``, the same the landing replay copies), joins each with the
weather at its origin in its departure hour, and publishes one event per flight to
``flights.scheduled`` in the order of their scheduled departures::

    {"event_id": "2013-07-15/UA/1545/EWR/515", "sent_at": 1764590000.25, "flight": {...}}

``flight`` holds exactly the fields of the service's ``/predict`` request, as a client sends
them (the tail number raw: the scorer pseudonymizes it, as the service does). Event ids are
deterministic (``<flight_date>/<carrier>/<flight>/<origin>/<sched_dep_time>``) and, on NATS,
also the ``Nats-Msg-Id`` header: the same day replayed twice within the stream's duplicate
window is stored once. ``sent_at`` is stamped when the event is handed to the broker.

Events go out paced (event ``i`` not before ``i / rate`` seconds), with up to ``IN_FLIGHT``
publications awaiting the broker's acknowledgement; a publication that is not acknowledged
is retried (the id makes the retry harmless) until ``RETRY_FOR_S`` has passed.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from mlops_assets.streaming.subjects import MESSAGE_ID_HEADER, SCHEDULED, STREAM, STREAM_SUBJECTS

if TYPE_CHECKING:
    from mlops_assets.lib.replay import DataSource

# Publications awaiting their acknowledgement at once: enough to hide the round trip at
# thousands of events per second, few enough that a stalled broker stops the producer soon.
IN_FLIGHT = 256
# How long one event is retried (broker restarting, stream not there yet) before giving up.
RETRY_FOR_S = 30.0
RETRY_PAUSE_S = 0.2
ACK_TIMEOUT_S = 2.0
CONNECT_TIMEOUT_S = 10.0
# The source's text for a missing value.
MISSING = ("", "NA")


@dataclass(frozen=True)
class FlightEvent:
    """One scheduled flight as an event, before it is sent.

    Attributes:
        event_id: ``<flight_date>/<carrier>/<flight>/<origin>/<sched_dep_time>``.
        flight: The request fields of the flight, as JSON values.
    """

    event_id: str
    flight: dict[str, Any]

    def body(self, sent_at: float) -> bytes:
        """The event's JSON, stamped with ``sent_at`` (unix seconds)."""
        return json.dumps(
            {"event_id": self.event_id, "sent_at": sent_at, "flight": self.flight},
            separators=(",", ":"),
        ).encode()


@dataclass(frozen=True)
class ReplayReport:
    """What a replay sent.

    Attributes:
        sent: Events the broker acknowledged.
        duplicates: Of those, events the broker already had (same id, within its window).
        seconds: From the first publication to the last acknowledgement.
        rate: The rate asked for (events per second).
        retries: Publications tried again after a failure.
    """

    sent: int
    duplicates: int
    seconds: float
    rate: float
    retries: int

    @property
    def achieved(self) -> float:
        """Events per second achieved."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line for the console."""
        return (
            f"sent {self.sent} events in {self.seconds:.2f} s: {self.achieved:.0f} events/s "
            f"(asked {self.rate:g}); {self.duplicates} already on the broker, "
            f"{self.retries} retries"
        )


def event_id(flight: dict[str, Any]) -> str:
    """The deterministic id of a flight's event (the flight date is local at the origin)."""
    day = date(flight["year"], flight["month"], flight["day"]).isoformat()
    parts = (day, flight["carrier"], flight["flight"], flight["origin"], flight["sched_dep_time"])
    return "/".join(str(part) for part in parts)


def _value(text: str, kind: str) -> Any:
    """A source text as the JSON value a client sends (numbers are numbers, missing is null)."""
    if text in MISSING:
        return None
    if kind == "int":
        return int(text)
    return float(text) if kind == "float" else text


def day_rows(csv_bytes: bytes, days: Iterable[date]) -> dict[date, list[dict[str, str]]]:
    """The rows of a day dataset's CSV for each of ``days`` (by its year, month, day columns).

    The csv module, not pandas: one pass over the year's file, keeping only the wanted days.
    """
    wanted = {(str(d.year), str(d.month), str(d.day)): d for d in days}
    reader = csv.reader(io.StringIO(csv_bytes.decode()))
    header = next(reader)
    year, month, day = (header.index(name) for name in ("year", "month", "day"))
    found: dict[date, list[dict[str, str]]] = {d: [] for d in wanted.values()}
    for row in reader:
        hit = wanted.get((row[year].lstrip("0"), row[month].lstrip("0"), row[day].lstrip("0")))
        if hit is not None:
            found[hit].append(dict(zip(header, row, strict=True)))
    return found


def flight_events(days: Iterable[date], source: DataSource | None = None) -> list[FlightEvent]:
    """The events of every scheduled flight of ``days``, day by day in order of departure.

    Each flight carries the request fields (``lib.scoring.REQUEST_FLIGHT_FIELDS``) and the
    weather at its origin in its departure hour (``WEATHER_FIELDS``, null when the source has
    no observation), typed as the request model wants them.

    Args:
        days: The flight dates (local at the origin).
        source: A module with the source interface (default ``mlops_assets.lib.source``).
    """
    from mlops_assets.lib import source as default_source
    from mlops_assets.lib.features import WEATHER_FIELDS
    from mlops_assets.lib.scoring import REQUEST_FLIGHT_FIELDS, request_fields

    upstream: Any = source if source is not None else default_source
    kinds = {spec.name: spec.kind for spec in request_fields([], [])}
    wanted = sorted(set(days))
    flights = day_rows(upstream.read_source_csv("flights"), wanted)
    weather = day_rows(upstream.read_source_csv("weather"), wanted)
    events: list[FlightEvent] = []
    for day in wanted:
        hours = {(row["origin"], row["time_hour"]): row for row in weather[day]}
        day_events = []
        for row in flights[day]:
            flight = {name: _value(row[name], kinds[name]) for name in REQUEST_FLIGHT_FIELDS}
            observed = hours.get((row["origin"], row["time_hour"]), {})
            flight |= {name: _value(observed.get(name, ""), kinds[name]) for name in WEATHER_FIELDS}
            day_events.append(FlightEvent(event_id(flight), flight))
        day_events.sort(key=lambda e: (e.flight["sched_dep_time"], e.event_id))
        events += day_events
    return events


# A publication: (event id, body) -> whether the broker already had that id.
Publish = Callable[[str, bytes], Awaitable[bool]]


async def publish_paced(
    publish: Publish,
    events: Sequence[FlightEvent],
    rate: float,
    *,
    clock: Callable[[], float] = time.time,
) -> ReplayReport:
    """Publishes ``events`` at ``rate`` events per second through ``publish``.

    Event ``i`` is stamped and handed over not before ``i / rate`` seconds after the start;
    at most ``IN_FLIGHT`` publications wait for their acknowledgement at once.

    Raises:
        ValueError: ``rate`` is not positive.
        RuntimeError: an event could not be published within ``RETRY_FOR_S`` (the message
            names it and how many went out before).
    """
    if rate <= 0:
        raise ValueError("the rate must be a positive number of events per second")
    slots = asyncio.Semaphore(IN_FLIGHT)
    duplicates = retries = 0

    async def send(event: FlightEvent) -> None:
        nonlocal duplicates, retries
        try:
            give_up = time.monotonic() + RETRY_FOR_S
            while True:
                try:
                    duplicate = await publish(event.event_id, event.body(clock()))
                    duplicates += duplicate  # after the await: tasks interleave there
                    return
                except Exception as error:  # the client's errors differ by broker
                    if time.monotonic() >= give_up:
                        raise RuntimeError(
                            f"event {event.event_id} not acknowledged within {RETRY_FOR_S:.0f} s"
                            f": {type(error).__name__}: {error}"
                        ) from error
                    retries += 1
                    await asyncio.sleep(RETRY_PAUSE_S)
        finally:
            slots.release()

    started = time.monotonic()
    pending: set[asyncio.Task[None]] = set()
    for index, event in enumerate(events):
        due = started + index / rate
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        await slots.acquire()
        task = asyncio.create_task(send(event))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    seconds = time.monotonic() - started
    return ReplayReport(len(events), duplicates, seconds, rate, retries)


# -- the broker (``brokers.broker_from_url``: NATS JetStream or Kafka) ------------------------


class BrokerUnavailableError(RuntimeError):
    """No broker answers at the URL."""


async def ensure_stream(connection: Any) -> None:
    """Declares the flights stream on NATS unless it exists (the scorer declares the same)."""
    from nats.js.errors import NotFoundError

    js = connection.jetstream()
    try:
        await js.stream_info(STREAM)
    except NotFoundError:
        await js.add_stream(name=STREAM, subjects=list(STREAM_SUBJECTS))


def kafka_publisher(broker: Any, subject: str) -> Publish:
    """Publishes with FastStream's Kafka broker; the event id is the record key."""

    async def publish(event_id: str, body: bytes) -> bool:
        await broker.publish(body, subject, key=event_id.encode())
        return False  # a topic does not deduplicate

    return publish


async def nats_publisher(connection: Any, subject: str) -> Publish:
    """Publishes on the broker's NATS connection with JetStream's pipelined publications.

    ``publish_async`` keeps the acknowledgements of many publications in flight on one reply
    subscription: a third of the CPU of a request per event, which leaves the cores to the
    scorer. Each event still waits for its own acknowledgement (at most ``ACK_TIMEOUT_S``).
    """
    js = connection.jetstream(publish_async_max_pending=IN_FLIGHT)
    await ensure_stream(connection)

    async def publish(event_id: str, body: bytes) -> bool:
        headers = {MESSAGE_ID_HEADER: event_id}
        acked = await js.publish_async(subject, body, headers=headers, stream=STREAM)
        ack = await asyncio.wait_for(acked, ACK_TIMEOUT_S)
        return bool(ack.duplicate)

    return publish


async def replay_events(
    url: str, events: Sequence[FlightEvent], rate: float, subject: str = SCHEDULED
) -> ReplayReport:
    """Publishes ``events`` to ``subject`` of the broker at ``url``, paced at ``rate``.

    Raises:
        BrokerUnavailableError: nothing answers at ``url`` within ``CONNECT_TIMEOUT_S``.
    """
    from mlops_assets.streaming.brokers import broker_from_url, parse_url

    kafka = parse_url(url).scheme == "kafka"
    broker: Any = broker_from_url(url)  # publish's options differ between the two brokers
    try:
        try:
            connection = await asyncio.wait_for(broker.connect(), CONNECT_TIMEOUT_S)
        except (TimeoutError, OSError) as error:
            raise BrokerUnavailableError(
                f"no broker answers at {url} within {CONNECT_TIMEOUT_S:.0f} s (start one: "
                "`mlops-assets stream-broker`)"
            ) from error
        publish = (
            kafka_publisher(broker, subject) if kafka else await nats_publisher(connection, subject)
        )
        return await publish_paced(publish, events, rate)
    finally:
        await broker.stop()


def replay_day(url: str, day: date, rate: float, limit: int | None = None) -> ReplayReport:
    """Publishes the scheduled flights of ``day`` (the first ``limit`` of them) at ``rate``.

    Raises:
        ValueError: a bad rate or limit, or a day without flights in the source.
        BrokerUnavailableError: nothing answers at ``url``.
    """
    if limit is not None and limit < 1:
        raise ValueError("the limit must be at least 1")
    if rate <= 0:
        raise ValueError("the rate must be a positive number of events per second")
    events = flight_events([day])[:limit]
    if not events:
        raise ValueError(f"the source has no flights on {day.isoformat()}")
    return asyncio.run(replay_events(url, events, rate))
