"""Micro-batches of the stream: one champion per batch, the sink written before anything else.

For each micro-batch the broker hands over:

1. between batches, the champion is looked up (``lib.scoring_bundles.champion_version``, at
   most every ``poll_s``) and a new one loaded before the batch, so one batch is scored by one
   model and every prediction names its version;
2. every event is read with the request contract of that bundle (``events.EventReader``);
   refused ones become dead-letter events with their reason, a repeated event id is scored once;
3. the sensitive fields are pseudonymized with the service's key, then the valid events are
   scored together by ``lib.scoring.score``;
4. the predictions are written to the lake's stream sink (atomic, idempotent by event id).

No broker in here (``scorer`` publishes and acknowledges); the standard library at import.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlops_assets.lib.pseudonyms import Pseudonymizer
    from mlops_assets.lib.scoring import ScoringBundle
    from mlops_assets.streaming.events import Event, EventReader, Refusal

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScorerSettings:
    """How the scorer batches, waits and retries.

    Attributes:
        max_events: At most this many events in one micro-batch.
        max_wait_s: A batch is handed over when full or this long after its fetch started
            (bounds the latency an event waits for its batch to fill).
        ack_wait_s: NATS: an unacknowledged event is delivered again after this long (a
            crashed scorer's batch comes back to its successor).
        poll_s: The champion pointer is read at most this often (between batches).
        retry_s: After a failed batch (sink or broker unavailable), wait this long.
        report_s: A progress line is logged at most this often.
    """

    max_events: int = 500
    max_wait_s: float = 0.02
    ack_wait_s: float = 30.0
    poll_s: float = 1.0
    retry_s: float = 1.0
    report_s: float = 10.0


class NoChampionError(RuntimeError):
    """No scoring bundle has been published yet (the message names where it was looked for)."""


class Champion:
    """The champion's scoring bundle, switched between micro-batches when a new one is published.

    Args:
        root: Root of the published scoring bundles (``lib.scoring_bundles``).
        poll_s: The pointer is read at most this often.
        clock: Monotonic clock (seconds).
    """

    def __init__(
        self, root: Any, poll_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.root = root
        self.poll_s = poll_s
        self.clock = clock
        self.version: str | None = None
        self.bundle: ScoringBundle | None = None
        self.reader: EventReader | None = None
        self._polled = -float("inf")
        self._failed: str | None = None

    def due(self) -> bool:
        """Whether ``current`` will read the pointer (and maybe load a new champion)."""
        return self.bundle is None or self.clock() - self._polled >= self.poll_s

    def current(self) -> tuple[ScoringBundle, EventReader]:
        """The bundle to score the next batch with (a newly published one when the poll is due).

        Raises:
            NoChampionError: Nothing published yet.
        """
        if self.due():
            self._polled = self.clock()
            self._switch()
        if self.bundle is None or self.reader is None:
            raise NoChampionError(
                f"no champion's scoring bundle is published under {self.root} yet "
                "(the scoring_bundle asset publishes it when a champion exists)"
            )
        return self.bundle, self.reader

    def _switch(self) -> None:
        from mlops_assets.lib import scoring_bundles
        from mlops_assets.streaming.events import EventReader

        try:
            version = scoring_bundles.champion_version(self.root)
        except scoring_bundles.BundleError as error:  # a pointer being replaced, a store hiccup
            logger.error("%s: kept version %s", error, self.version)
            return
        if version is None or version == self.version or version == self._failed:
            return
        try:
            bundle = scoring_bundles.load(self.root, version)
            reader = EventReader(bundle.request_fields())
            warm_up(bundle)
        except Exception:  # the old champion keeps scoring; the next publication is tried
            self._failed = version
            logger.exception(
                "cannot load the scoring bundle of version %s: kept %s", version, self.version
            )
            return
        previous, self.version, self.bundle, self.reader = self.version, version, bundle, reader
        logger.info("scoring with model version %s (was %s)", version, previous)


def warm_up(bundle: ScoringBundle) -> None:
    """Scores the contract's example once, so the first batch pays no parsing or import."""
    from mlops_assets.lib.scoring import EXAMPLE_REQUEST, score

    score(bundle, [dict(EXAMPLE_REQUEST)])


@dataclass
class BatchResult:
    """What one micro-batch gave.

    Attributes:
        predictions: Prediction events (written to the sink), in event order.
        dead_letters: Dead-letter events of the refused payloads.
        duplicates: Events whose id came earlier in the same batch (scored once).
        version: The model version that scored the batch.
    """

    predictions: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0
    version: str | None = None


class MicroBatchScorer:
    """Validates, pseudonymizes, scores and writes one micro-batch (no broker in here).

    Args:
        champion: The champion's bundle, switched between batches.
        sink_root: Root of the stream sink (``lib.stream_sink``).
        pseudonyms: The service's pseudonymizer (``lib.pseudonyms.service_pseudonymizer``).
    """

    def __init__(self, champion: Champion, sink_root: Any, pseudonyms: Pseudonymizer) -> None:
        self.champion = champion
        self.sink_root = sink_root
        self.pseudonyms = pseudonyms

    def score_batch(self, payloads: list[bytes]) -> BatchResult:
        """Scores the valid events of ``payloads`` with one model and writes them to the sink.

        Raises:
            NoChampionError: Nothing published yet (nothing is written).
            OSError: The sink cannot be written (nothing is written).
        """
        from mlops_assets.lib import stream_sink
        from mlops_assets.streaming.events import Refusal, dead_letter_event, prediction_event

        bundle, reader = self.champion.current()
        received_at = time.time()
        result = BatchResult(version=self.champion.version)
        events: list[Event] = []
        seen: set[str] = set()
        for payload in payloads:
            read = reader.read(payload)
            if isinstance(read, Refusal):
                result.dead_letters.append(dead_letter_event(read, received_at))
            elif read.event_id in seen:
                result.duplicates += 1
            else:
                seen.add(read.event_id)
                events.append(read)
        scored, failed = self._score(bundle, reader, events)
        result.dead_letters += [dead_letter_event(r, received_at) for r in failed]
        scored_at = time.time()
        result.predictions = [prediction_event(e, r, scored_at) for e, r in scored]
        if result.predictions:
            stream_sink.write_batch(self.sink_root, result.predictions)
        return result

    def _score(
        self, bundle: ScoringBundle, reader: EventReader, events: list[Event]
    ) -> tuple[list[tuple[Event, dict[str, Any]]], list[Refusal]]:
        """Scores the events together; when that fails, one by one, refusing those that fail."""
        from mlops_assets.lib.scoring import score
        from mlops_assets.streaming.events import Refusal

        requests = self.pseudonyms.records([e.flight for e in events], reader.sensitive)
        if not requests:
            return [], []
        try:
            return list(zip(events, score(bundle, requests), strict=True)), []
        except Exception:  # a flight the features cannot score must not block the others
            logger.exception(
                "scoring a batch of %d events failed: scoring them one by one", len(events)
            )
        scored, failed = [], []
        for event, request in zip(events, requests, strict=True):
            try:
                scored.append((event, score(bundle, [request])[0]))
            except Exception as error:
                reason = f"flight: the model cannot score it ({type(error).__name__})"
                failed.append(Refusal(event.event_id, reason, 0, ""))
        return scored, failed


async def wait_for_champion(
    bundles_root: Any, poll_s: float, timeout_s: float | None = None
) -> str:
    """Waits until a champion's bundle is published; returns its version.

    A scorer may start before the first champion exists (a new deployment).

    Raises:
        NoChampionError: ``timeout_s`` passed without one.
    """
    import asyncio

    from mlops_assets.lib import scoring_bundles

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    announced = False
    while (version := scoring_bundles.champion_version(bundles_root)) is None:
        if deadline is not None and time.monotonic() >= deadline:
            raise NoChampionError(f"no champion's scoring bundle published under {bundles_root}")
        if not announced:
            logger.info("waiting for a champion's scoring bundle under %s", bundles_root)
            announced = True
        await asyncio.sleep(poll_s)
    return version
