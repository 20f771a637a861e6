"""Where the pipeline's metrics go: a Prometheus Pushgateway, or nowhere.

A push is a side channel of monitoring: it never fails a run. A push that cannot be delivered
is logged as a warning, recorded in the materialization's metadata and counted per source on
the pushing host; the next push that arrives carries the count
(``mlops_pipeline_push_misses``), so a gap in the metrics is visible in Prometheus itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import dagster as dg

from mlops_assets.lib import pipeline_metrics
from mlops_assets.lib.pipeline_metrics import Sample

PUSH_KEY = "metrics_push"
# Short: a run waits for at most this long on a gateway that does not answer.
PUSH_TIMEOUT = 2.0


class MetricsGateway(dg.ConfigurableResource):
    """The Pushgateway the pipeline pushes its metrics to (``MLOPS_PUSHGATEWAY_URL``).

    Attributes:
        url: The gateway's base URL, e.g. ``http://127.0.0.1:9091``; empty: pushes are off.
        misses_file: JSON file counting undelivered pushes per source.
        timeout: Seconds a push may take.
    """

    url: str = ""
    misses_file: str = ""
    timeout: float = PUSH_TIMEOUT

    def publish(self, source: str, samples: Sequence[Sample], log: Any) -> dict[str, Any]:
        """Replaces ``source``'s group on the gateway with ``samples``; never raises.

        Args:
            source: The pushing asset or sensor (the group's ``asset`` label).
            samples: What to push; nothing is pushed when empty.
            log: Where a missed push is reported (a run's or sensor's logger).

        Returns:
            Metadata saying what happened: ``metrics_push`` (and ``metrics_push_misses``);
            empty when pushes are off.
        """
        if not self.url:
            return {}  # pushes are off: nothing worth a metadata entry
        if not samples:
            return {PUSH_KEY: "nothing to push"}
        with self._misses() as misses:
            counted = [*samples, pipeline_metrics.misses_sample(misses.get(source, 0))]
            try:
                pipeline_metrics.push(self.url, source, counted, timeout=self.timeout)
            except (OSError, ValueError) as error:
                misses[source] = misses.get(source, 0) + 1
                log.warning(
                    f"metrics of {source} not pushed to {self.url}: {error} "
                    f"(missed push {misses[source]} of {source}; the run goes on)"
                )
                return {PUSH_KEY: f"missed: {error}", "metrics_push_misses": misses[source]}
        return {PUSH_KEY: f"pushed {len(samples)} sample(s) to {self.url}"}

    @contextlib.contextmanager
    def _misses(self) -> Iterator[dict[str, int]]:
        """The miss counts, locked against other runs on the host and saved afterwards."""
        if not self.misses_file:
            yield {}
            return
        path = Path(self.misses_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                misses = json.loads(path.read_text()) if path.exists() else {}
            except (OSError, ValueError):
                misses = {}  # a broken count is not worth failing a run for
            before = dict(misses)
            yield misses
            if misses != before:
                partial = path.with_suffix(".tmp")
                partial.write_text(json.dumps(misses, sort_keys=True))
                os.replace(partial, path)
