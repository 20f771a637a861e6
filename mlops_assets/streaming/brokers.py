"""The broker of the stream, chosen by one URL: NATS JetStream locally, Kafka in production.

``MLOPS_STREAM_URL`` names it: ``nats://127.0.0.1:4222`` (the default; several servers as
``nats://a:4222,b:4222``) or ``kafka://host:9092[,host2:9092]``. Everything that differs
between the two (how a batch subscriber is declared, how a message is published with its id)
lives here, so the scorer's handler and the replay producer are the same code on both.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops_assets.streaming.subjects import CONSUMER, MESSAGE_ID_HEADER, STREAM, STREAM_SUBJECTS

if TYPE_CHECKING:
    from faststream.kafka import KafkaBroker
    from faststream.message import StreamMessage
    from faststream.nats import JStream, NatsBroker

    Broker = NatsBroker | KafkaBroker

URL_VARIABLE = "MLOPS_STREAM_URL"
DEFAULT_URL = "nats://127.0.0.1:4222"
SCHEMES = ("nats", "kafka")
# FastStream logs every consumed batch at the broker's level: DEBUG keeps INFO for the
# scorer's own lines (one per interval, not one per batch). Its lines go through this logger,
# so they take the process' format (text or JSON) instead of FastStream's coloured one.
MESSAGE_LOG_LEVEL = logging.DEBUG
BROKER_LOGGER = logging.getLogger("mlops_assets.streaming.broker")
# A NATS client retries a lost server every second, without end: a restarted broker resumes
# the stream, a pod is not restarted for a broker's maintenance.
NATS_RECONNECT_WAIT_S = 1


# A broker that stays unreachable is reported at most this often (the client retries every second).
UNREACHABLE_REPORT_S = 30.0


class BrokerUrlError(ValueError):
    """A broker URL this project cannot use (the message names the variable and the schemes)."""


@dataclass(frozen=True)
class BrokerUrl:
    """A parsed broker URL.

    Attributes:
        scheme: ``nats`` or ``kafka``.
        servers: The servers as the client takes them (``nats://host:port`` or ``host:port``).
    """

    scheme: str
    servers: tuple[str, ...]


def stream_url(env: Mapping[str, str] | None = None) -> str:
    """The broker URL of this environment (``MLOPS_STREAM_URL``, else the local NATS)."""
    env = os.environ if env is None else env
    return env.get(URL_VARIABLE, "").strip() or DEFAULT_URL


def parse_url(url: str) -> BrokerUrl:
    """Splits a broker URL into its scheme and servers.

    Raises:
        BrokerUrlError: An unknown scheme or no server.
    """
    scheme, separator, rest = url.strip().partition("://")
    if not separator or scheme not in SCHEMES:
        raise BrokerUrlError(
            f"{URL_VARIABLE} must start with one of {', '.join(s + '://' for s in SCHEMES)} "
            "(e.g. nats://127.0.0.1:4222 or kafka://kafka:9092)"
        )
    hosts = [h.strip() for h in rest.strip("/").split(",") if h.strip()]
    if not hosts:
        raise BrokerUrlError(f"{URL_VARIABLE} names no server after {scheme}://")
    servers = [f"nats://{h}" for h in hosts] if scheme == "nats" else hosts
    return BrokerUrl(scheme=scheme, servers=tuple(servers))


def broker_from_url(url: str) -> Broker:
    """The FastStream broker of ``url``: a ``NatsBroker`` (JetStream) or a ``KafkaBroker``.

    The broker is not connected yet (FastStream connects it when the app or a test broker
    starts).

    Raises:
        BrokerUrlError: An unknown scheme or no server.
    """
    parsed = parse_url(url)
    if parsed.scheme == "kafka":
        from faststream.kafka import KafkaBroker

        return KafkaBroker(list(parsed.servers), logger=BROKER_LOGGER, log_level=MESSAGE_LOG_LEVEL)
    from faststream.nats import NatsBroker

    connection = ConnectionReport(url)
    return NatsBroker(
        list(parsed.servers),
        error_cb=connection.failed,
        disconnected_cb=connection.lost,
        reconnected_cb=connection.back,
        reconnect_time_wait=NATS_RECONNECT_WAIT_S,
        max_reconnect_attempts=-1,
        logger=BROKER_LOGGER,
        log_level=MESSAGE_LOG_LEVEL,
    )


class ConnectionReport:
    """The log lines of a NATS connection: lost, failing, back.

    The client retries on its own; these say why nothing moves meanwhile (a failure at most
    every ``UNREACHABLE_REPORT_S``).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.reported = -UNREACHABLE_REPORT_S

    async def failed(self, error: Exception) -> None:
        """A connection attempt or the connection failed."""
        import time

        now = time.monotonic()
        if now - self.reported >= UNREACHABLE_REPORT_S:
            self.reported = now
            BROKER_LOGGER.warning("broker %s: %r; retrying every second", self.url, error)

    async def lost(self) -> None:
        """The connection is gone (the client reconnects)."""
        BROKER_LOGGER.warning("broker %s: disconnected", self.url)

    async def back(self) -> None:
        """The client is connected again."""
        self.reported = -UNREACHABLE_REPORT_S
        BROKER_LOGGER.info("broker %s: reconnected", self.url)


def flights_stream() -> JStream:
    """The JetStream stream of the flights subjects (declared by whoever connects first)."""
    from faststream.nats import JStream

    return JStream(STREAM, subjects=list(STREAM_SUBJECTS))


def raw_bodies(message: StreamMessage[Any]) -> list[bytes]:
    """The undecoded bodies of a batch.

    The handler parses them itself, so that a malformed one is refused with a reason instead
    of failing the batch.
    """
    return [bytes(body) for body in message.body]


def batch_subscriber(
    broker: Broker,
    subject: str,
    *,
    max_events: int,
    max_wait_s: float,
    ack_wait_s: float,
) -> Callable[[Any], Any]:
    """A decorator subscribing a handler to micro-batches of ``subject``, acknowledged manually.

    NATS: a JetStream pull consumer ``CONSUMER`` (durable: its acknowledged position survives
    the scorer and the server), unacknowledged messages redelivered after ``ack_wait_s``.
    Kafka: the consumer group ``CONSUMER``, offsets committed by the handler only, from the
    earliest offset for a new group.

    Args:
        broker: A broker of ``broker_from_url``.
        subject: The subject (topic) to consume.
        max_events: At most this many events in one batch.
        max_wait_s: A batch is handed over when full or this long after the fetch started.
        ack_wait_s: NATS: redelivery delay of an unacknowledged message (longer than a batch).
    """
    from faststream import AckPolicy
    from faststream.kafka import KafkaBroker

    if isinstance(broker, KafkaBroker):
        return broker.subscriber(
            subject,
            group_id=CONSUMER,
            batch=True,
            max_records=max_events,
            batch_timeout_ms=max(1, round(max_wait_s * 1000)),
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.MANUAL,
            decoder=raw_bodies,
        )
    from faststream.nats import PullSub
    from nats.js.api import AckPolicy as NatsAckPolicy
    from nats.js.api import ConsumerConfig

    config = ConsumerConfig(
        durable_name=CONSUMER,
        ack_policy=NatsAckPolicy.EXPLICIT,
        ack_wait=ack_wait_s,
        # Several batches in flight at most: unacknowledged events beyond it wait on the server.
        max_ack_pending=max_events * 4,
    )
    return broker.subscriber(
        subject,
        stream=flights_stream(),
        durable=CONSUMER,
        config=config,
        pull_sub=PullSub(batch_size=max_events, timeout=max_wait_s, batch=True),
        ack_policy=AckPolicy.MANUAL,
        decoder=raw_bodies,
    )


def guard_fetch_timeouts(subscriber: Any) -> bool:
    """Makes a started NATS batch subscriber survive a fetch that times out (nats-py 2.16).

    nats-py's ``fetch`` raises the built-in ``TimeoutError`` when a fetch's deadline runs out
    between its two requests, where FastStream 0.7's batch loop expects
    ``nats.errors.TimeoutError``: the loop dies with the batch it collected so far, and those
    events wait for their redelivery (``ack_wait``) before they are scored. Translated, the
    loop ends the batch as at any deadline. Call after the broker started; returns whether
    there was a subscription to guard (a test broker has none).
    """
    import nats.errors

    subscription = getattr(subscriber, "subscription", None)
    fetch = getattr(subscription, "fetch", None)
    if fetch is None or getattr(fetch, "guarded", False):
        return False

    async def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fetch(*args, **kwargs)
        except nats.errors.TimeoutError:
            raise
        except TimeoutError as error:
            raise nats.errors.TimeoutError from error

    guarded.guarded = True  # type: ignore[attr-defined]
    subscription.fetch = guarded  # type: ignore[union-attr]
    return True


async def publish_all(
    broker: Broker, subject: str, messages: list[tuple[str | None, dict[str, Any]]]
) -> None:
    """Publishes ``(id, message)`` pairs to ``subject``, in order; the id is the correlation id.

    NATS: plain publications on the scorer's one connection (the ``FLIGHTS`` stream stores
    them). A server handles a connection's messages in order, so it has the predictions before
    the acknowledgements sent after them, without a round trip per message. The id also goes
    into the ``Nats-Msg-Id`` header, prefixed with the subject (the stream deduplicates by it,
    and the incoming event uses the bare id): a batch published again after a redelivery is
    stored once within the duplicate window.
    Kafka: keyed by the id, each publication awaited until the broker has it.
    """
    import asyncio

    from faststream.kafka import KafkaBroker

    if isinstance(broker, KafkaBroker):
        await asyncio.gather(
            *(
                broker.publish(
                    body,
                    subject,
                    key=None if key is None else key.encode(),
                    correlation_id=key,
                )
                for key, body in messages
            )
        )
        return
    for key, body in messages:
        headers = None if key is None else {MESSAGE_ID_HEADER: f"{subject}:{key}"}
        await broker.publish(body, subject, headers=headers, correlation_id=key)
