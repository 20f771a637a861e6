"""The broker chosen by one URL, and the fetch-timeout guard of the NATS batch subscriber."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import nats.errors
import pytest
from faststream.kafka import KafkaBroker
from faststream.nats import NatsBroker

from mlops_assets.streaming import brokers


def test_the_url_selects_the_broker():
    assert isinstance(brokers.broker_from_url("nats://127.0.0.1:4222"), NatsBroker)
    assert isinstance(brokers.broker_from_url("kafka://kafka:9092"), KafkaBroker)
    assert brokers.parse_url("kafka://a:9092, b:9092") == brokers.BrokerUrl(
        "kafka", ("a:9092", "b:9092")
    )
    assert brokers.parse_url("nats://a:4222,b:4222").servers == ("nats://a:4222", "nats://b:4222")


def test_the_url_comes_from_the_environment_or_the_local_default():
    assert brokers.stream_url({}) == brokers.DEFAULT_URL == "nats://127.0.0.1:4222"
    assert brokers.stream_url({brokers.URL_VARIABLE: " kafka://k:9092 "}) == "kafka://k:9092"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:4222", "MLOPS_STREAM_URL must start with one of nats://, kafka://"),
        ("127.0.0.1:4222", "must start with one of"),
        ("kafka://", "MLOPS_STREAM_URL names no server after kafka://"),
        ("nats:// , ", "names no server"),
    ],
)
def test_a_url_without_a_known_broker_is_refused(url, message):
    with pytest.raises(brokers.BrokerUrlError, match=message):
        brokers.broker_from_url(url)


def subscriber_fetching(outcome: Any) -> Any:
    async def fetch(batch: int, timeout: float | None = None) -> Any:
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return SimpleNamespace(subscription=SimpleNamespace(fetch=fetch))


@pytest.mark.parametrize("raised", [TimeoutError(), nats.errors.TimeoutError()])
def test_a_fetch_timeout_reaches_the_subscriber_as_the_nats_timeout(raised):
    # FastStream's batch loop ends a batch on nats.errors.TimeoutError; the built-in one,
    # raised by nats-py's fetch at a deadline, would end the loop and drop the batch.
    subscriber = subscriber_fetching(raised)
    assert brokers.guard_fetch_timeouts(subscriber)
    with pytest.raises(nats.errors.TimeoutError):
        asyncio.run(subscriber.subscription.fetch(10, timeout=0.02))
    assert not brokers.guard_fetch_timeouts(subscriber)  # guarded once


def test_fetched_messages_and_other_errors_pass_the_guard():
    subscriber = subscriber_fetching(["m1", "m2"])
    brokers.guard_fetch_timeouts(subscriber)
    assert asyncio.run(subscriber.subscription.fetch(10)) == ["m1", "m2"]
    failing = subscriber_fetching(nats.errors.ConnectionClosedError())
    brokers.guard_fetch_timeouts(failing)
    with pytest.raises(nats.errors.ConnectionClosedError):
        asyncio.run(failing.subscription.fetch(10))


def test_a_subscriber_without_a_subscription_is_left_alone():
    assert not brokers.guard_fetch_timeouts(SimpleNamespace(subscription=None))
    assert not brokers.guard_fetch_timeouts(object())


def test_an_unreachable_nats_server_is_reported_now_and_then(caplog):
    report = brokers.ConnectionReport("nats://127.0.0.1:1")
    with caplog.at_level("INFO", logger=brokers.BROKER_LOGGER.name):
        for _ in range(5):  # the client's attempts, one a second
            asyncio.run(report.failed(ConnectionRefusedError(111, "refused")))
        asyncio.run(report.back())
        asyncio.run(report.failed(ConnectionRefusedError(111, "refused")))
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "broker nats://127.0.0.1:1: ConnectionRefusedError(111, 'refused'); retrying every second",
        "broker nats://127.0.0.1:1: reconnected",
        "broker nats://127.0.0.1:1: ConnectionRefusedError(111, 'refused'); retrying every second",
    ]
