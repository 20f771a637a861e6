"""Alertmanager, where Dagster-side failures are posted as alerts (``lib.alerts``)."""

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
from pydantic import Field

from mlops_assets.lib.alerts import ALERTMANAGER_URL_VAR, DAGSTER_UI_URL_VAR, TIMEOUT, Alert

# What became of a run's alerts (the value of the run tag `jobs.ALERT_DELIVERY_TAG`).
DELIVERED, UNDELIVERED, OFF = "delivered", "failed", "off"


@dataclass(frozen=True)
class Delivery:
    """The outcome of one ``send``: ``status`` is DELIVERED, UNDELIVERED or OFF."""

    status: str
    error: str = ""


class Alertmanager(dg.ConfigurableResource):
    """An Alertmanager's API (``POST /api/v2/alerts``).

    Sending never raises: a run-status sensor's cursor moves past a run whatever its function
    does (Dagster does not repeat a sensor's side effects), so raising would lose the alert all
    the same and only hide the others of the tick. A failed post is retried, then logged, and
    the caller records it on the run.

    Attributes:
        url: Base address, e.g. ``http://alertmanager:9093``; empty = alerts off.
        ui_url: Base address of the Dagster UI, for links from the alerts; empty = no links.
        timeout_seconds: Per attempt.
        attempts: Posts before giving up (a second one rides out a restart).
    """

    url: str = Field(default="", description="Alertmanager base address; empty: alerts off.")
    ui_url: str = Field(default="", description="Dagster UI base address, for run links.")
    timeout_seconds: float = Field(default=TIMEOUT, description="Seconds per attempt.")
    attempts: int = Field(default=2, description="Posts before an alert counts as undelivered.")

    @property
    def enabled(self) -> bool:
        """Whether an address is configured."""
        return bool(self.url.strip())

    def send(self, alerts: Sequence[Alert], log: Any = None) -> Delivery:
        """Posts ``alerts`` in one request, retried; never raises.

        Args:
            alerts: What to post.
            log: A logger (the sensor's ``context.log``) told about an undelivered post.
        """
        from mlops_assets.lib.alerts import DeliveryError, post

        if not self.enabled:
            return Delivery(OFF)
        error = ""
        for attempt in range(max(1, self.attempts)):
            if attempt:
                time.sleep(0.5)
            try:
                post(self.url, alerts, timeout=self.timeout_seconds)
                return Delivery(DELIVERED)
            except DeliveryError as failure:
                error = str(failure)
        names = ", ".join(sorted({alert.name for alert in alerts}))
        if log is not None:
            log.error(f"alert(s) {names} not delivered after {self.attempts} attempt(s): {error}")
        return Delivery(UNDELIVERED, error)


def alertmanager_from(env: Mapping[str, str]) -> Alertmanager:
    """The resource for ``env``: ``MLOPS_ALERTMANAGER_URL`` and ``MLOPS_DAGSTER_UI_URL``."""
    return Alertmanager(
        url=env.get(ALERTMANAGER_URL_VAR, "").strip(),
        ui_url=env.get(DAGSTER_UI_URL_VAR, "").strip(),
    )
