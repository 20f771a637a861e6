"""The stream scorer: flight events in, predictions out, in micro-batches (docs/streaming.md).

A FastStream app on the broker of ``MLOPS_STREAM_URL`` (NATS JetStream locally, Kafka in
production: the same handler, ``brokers.batch_subscriber``). For each micro-batch of
``flights.scheduled`` the handler has ``microbatch.MicroBatchScorer`` validate, pseudonymize,
score (one champion per batch) and write it to the lake's stream sink, THEN publishes the
predictions to ``flights.predictions`` and the refusals to ``flights.dead_letter``, THEN
acknowledges the batch. A crash anywhere before the acknowledgement leaves the events on the
broker to be delivered again: at least once, never lost, and the sink keeps one prediction per
event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from faststream import Context

from mlops_assets.streaming import brokers
from mlops_assets.streaming.microbatch import (
    BatchResult,
    Champion,
    MicroBatchScorer,
    ScorerSettings,
    wait_for_champion,
)
from mlops_assets.streaming.subjects import DEAD_LETTER, PREDICTIONS, SCHEDULED

if TYPE_CHECKING:
    from faststream import FastStream

    from mlops_assets.lib.pseudonyms import Pseudonymizer
    from mlops_assets.streaming.brokers import Broker

logger = logging.getLogger(__name__)
# The handler's view of the batch it acknowledges (FastStream's message of NATS or Kafka).
BatchMessage = Annotated[Any, Context("message")]


@dataclass
class Progress:
    """Counts for the progress line."""

    batches: int = 0
    scored: int = 0
    refused: int = 0
    duplicates: int = 0
    failures: int = 0
    since: float = field(default_factory=time.monotonic)

    def add(self, result: BatchResult, report_s: float) -> None:
        """Counts a batch; logs the line and starts over when ``report_s`` has passed."""
        self.batches += 1
        self.scored += len(result.predictions)
        self.refused += len(result.dead_letters)
        self.duplicates += result.duplicates
        elapsed = time.monotonic() - self.since
        if elapsed >= report_s:
            logger.info(
                "%d events scored by version %s in %d batches (%.0f/s), %d refused, "
                "%d repeated ids, %d failed batches in the last %.0f s",
                self.scored,
                result.version,
                self.batches,
                self.scored / elapsed,
                self.refused,
                self.duplicates,
                self.failures,
                elapsed,
            )
            self.batches = self.scored = self.refused = self.duplicates = self.failures = 0
            self.since = time.monotonic()


def attach(broker: Broker, scorer: MicroBatchScorer, config: ScorerSettings) -> Any:
    """Subscribes the scorer's handler to ``flights.scheduled`` on ``broker``.

    Returns:
        The subscriber (FastStream's).
    """
    progress = Progress()
    subscriber = brokers.batch_subscriber(
        broker,
        SCHEDULED,
        max_events=config.max_events,
        max_wait_s=config.max_wait_s,
        ack_wait_s=config.ack_wait_s,
    )

    async def score_events(payloads: list[bytes], message: BatchMessage) -> None:
        try:
            if scorer.champion.due():  # a new champion loads in seconds: not on the loop
                await asyncio.to_thread(scorer.champion.current)
            result = scorer.score_batch(payloads)
            # Written to the sink first: published and acknowledged only once it is stored.
            await brokers.publish_all(
                broker, PREDICTIONS, [(p["event_id"], p) for p in result.predictions]
            )
            await brokers.publish_all(
                broker, DEAD_LETTER, [(d["event_id"], d) for d in result.dead_letters]
            )
        except Exception as error:  # nothing acknowledged: the broker delivers the batch again
            progress.failures += 1
            logger.error("batch of %d events not acknowledged: %r", len(payloads), error)
            with contextlib.suppress(Exception):
                await message.nack()
            await asyncio.sleep(config.retry_s)
            return
        await message.ack()
        progress.add(result, config.report_s)

    subscriber(score_events)
    return subscriber


def build_app(
    url: str,
    champion: Champion,
    sink_root: str,
    pseudonyms: Pseudonymizer,
    config: ScorerSettings,
) -> FastStream:
    """The FastStream app of the scorer on the broker of ``url`` (not started)."""
    from faststream import FastStream

    broker = brokers.broker_from_url(url)
    subscriber = attach(broker, MicroBatchScorer(champion, sink_root, pseudonyms), config)

    async def started() -> None:
        brokers.guard_fetch_timeouts(subscriber)

    return FastStream(broker, logger=logger, after_startup=[started])


def run_foreground(url: str, config: ScorerSettings, env: dict[str, str] | None = None) -> None:
    """Runs the scorer until SIGINT or SIGTERM (``mlops-assets stream-score``).

    The roots come from the environment (``lib.scoring_bundles.default_root``,
    ``lib.stream_sink.default_root``), the pseudonym key as for the service. Waits for a
    champion if none is published yet.

    Raises:
        BrokerUrlError: ``url`` names no broker this project uses.
        PseudonymKeyError: No pseudonym key.
        ConnectionError: The broker cannot be reached at start.
    """
    import os

    from mlops_assets.lib import scoring_bundles, stream_sink
    from mlops_assets.lib.pseudonyms import service_pseudonymizer

    env = dict(os.environ) if env is None else env
    brokers.parse_url(url)  # a bad URL fails before anything waits
    pseudonyms = service_pseudonymizer(env)
    bundles_root, sink_root = scoring_bundles.default_root(env), stream_sink.default_root(env)
    champion = Champion(bundles_root, config.poll_s)
    app = build_app(url, champion, sink_root, pseudonyms, config)

    async def main() -> None:
        await wait_for_champion(bundles_root, config.poll_s)
        # Loaded before subscribing (pandas, LightGBM: seconds), not while a batch waits.
        champion.current()
        version = champion.version
        # As in the service: start-up objects never die; kept out of the collector's full
        # passes, which otherwise pause a batch for 0.2-0.3 s every few seconds under load.
        gc.collect()
        gc.freeze()
        logger.info(
            "stream scorer on %s: %s -> %s and %s; champion %s (bundles %s), sink %s",
            url, SCHEDULED, PREDICTIONS, DEAD_LETTER, version, bundles_root, sink_root,
        )  # fmt: skip
        try:
            await app.run()
        except OSError as error:  # refused, unreachable: say where, not a traceback
            raise ConnectionError(f"cannot reach the broker at {url}: {error}") from error

    asyncio.run(main())
