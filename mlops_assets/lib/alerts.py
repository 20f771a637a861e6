"""Alerts for Alertmanager's API: payloads built from what the orchestrator knows, and the post.

Dagster-side failures (a failed run, a failed blocking check) reach the same Alertmanager as
Prometheus' alerts, so routing, grouping and the Slack and e-mail receivers stay in one file.
That file is ``deploy/observability/alertmanager.yml``.  # [template:only with_observability]
Alertmanager's v2 API takes a JSON list of
``{labels, annotations, startsAt, endsAt, generatorURL}``; the labels identify an alert (two
posts with the same labels are one alert), the annotations describe it.

Annotations name what failed and where to look, never data values: a step's error message may
quote the row that broke a contract, so only step keys and error types are sent; the run page
in the Dagster UI (``generatorURL``) has the rest.

A failure is an event, not a state Prometheus re-evaluates, so every alert is posted with an
``endsAt`` ``ALERT_TTL`` after it started (without one, Alertmanager would resolve it after its
``resolve_timeout``, five minutes). A later successful run posts the same labels with
``endsAt`` set to its end, which resolves the alert at once.

Standard library only.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

ALERTMANAGER_URL_VAR = "MLOPS_ALERTMANAGER_URL"
DAGSTER_UI_URL_VAR = "MLOPS_DAGSTER_UI_URL"
API_PATH = "/api/v2/alerts"

RUN_FAILED = "DagsterRunFailed"
CHECK_FAILED = "DagsterBlockingCheckFailed"
SEVERITY = "warning"
# How long an unresolved failure stays firing (Alertmanager repeats it every repeat_interval).
ALERT_TTL = timedelta(hours=24)
# Seconds per post: sensors have 60 s per evaluation and Alertmanager answers in milliseconds.
TIMEOUT = 3.0
DESCRIPTION_LIMIT = 1000
ASSETS_SHOWN = 5  # asset names in the `assets` label; more are counted


class DeliveryError(RuntimeError):
    """Alertmanager did not accept the alerts (unreachable, refused, or an error status)."""


@dataclass(frozen=True)
class Alert:
    """One alert as Alertmanager's v2 API takes it."""

    labels: Mapping[str, str]
    annotations: Mapping[str, str] = field(default_factory=dict)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    generator_url: str = ""

    @property
    def name(self) -> str:
        """The ``alertname`` label."""
        return self.labels["alertname"]

    def payload(self) -> dict[str, Any]:
        """The alert as one element of the API's JSON list."""
        body: dict[str, Any] = {
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
        }
        if self.starts_at is not None:
            body["startsAt"] = _timestamp(self.starts_at)
        if self.ends_at is not None:
            body["endsAt"] = _timestamp(self.ends_at)
        if self.generator_url:
            body["generatorURL"] = self.generator_url
        return body


def _timestamp(moment: datetime) -> str:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")


def truncate(text: str, limit: int = DESCRIPTION_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, marked with an ellipsis when cut."""
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def run_url(ui_url: str, run_id: str) -> str:
    """The run's page in the Dagster UI, or ``""`` without a UI address."""
    return f"{ui_url.rstrip('/')}/runs/{run_id}" if ui_url else ""


def partition_labels(partition: str | None) -> dict[str, str]:
    """``day`` for a daily partition (the label every pipeline alert uses), else ``partition``.

    A partition range (``first...last``) or any other key goes into ``partition``.
    """
    if not partition:
        return {}
    try:
        date.fromisoformat(partition)
    except ValueError:
        return {"partition": partition}
    return {"day": partition}


def assets_label(assets: Iterable[str]) -> str:
    """Sorted asset names, the first ``ASSETS_SHOWN`` of them and a count of the others."""
    names = sorted(set(assets))
    if len(names) <= ASSETS_SHOWN:
        return ",".join(names)
    return ",".join(names[:ASSETS_SHOWN]) + f" +{len(names) - ASSETS_SHOWN} more"


def run_failed(
    *,
    job: str,
    run_id: str,
    partition: str | None,
    assets: Iterable[str],
    failed_steps: Mapping[str, str],
    message: str,
    at: datetime,
    ui_url: str = "",
) -> Alert:
    """``DagsterRunFailed`` for one run.

    Args:
        job: The run's job name.
        run_id: The run, named in the annotations and linked by ``generatorURL``.
        partition: The run's partition key (or ``first...last`` for a range), if any.
        assets: The run's asset selection (empty for a job without one).
        failed_steps: Step key -> error type of each failed step (not the error message:
            it may quote data).
        message: The run's failure message (Dagster's own sentence about the run).
        at: When the run failed.
        ui_url: Base address of the Dagster UI, for the link.
    """
    labels = {"alertname": RUN_FAILED, "severity": SEVERITY, "job": job}
    labels.update(partition_labels(partition))
    selection = assets_label(assets)
    if selection:
        labels["assets"] = selection
    where = f" for {partition}" if partition else ""
    steps = "; ".join(f"{step} ({kind})" for step, kind in failed_steps.items())
    description = f"Run {run_id} of {job}{where} failed. {message.strip()}"
    if steps:
        description += f" Failed steps: {steps}."
    return Alert(
        labels=labels,
        annotations={
            "summary": f"Dagster run of {job}{where} failed",
            "description": truncate(description),
            "run_id": run_id,
        },
        starts_at=at,
        ends_at=at + ALERT_TTL,
        generator_url=run_url(ui_url, run_id),
    )


def check_failed(
    *,
    asset: str,
    check: str,
    partition: str | None,
    job: str,
    run_id: str,
    description: str,
    at: datetime,
    ui_url: str = "",
) -> Alert:
    """``DagsterBlockingCheckFailed`` for one failed blocking check of one partition.

    The labels are the asset, the check and the partition (not the job or the run), so any
    later run whose check passes on the same partition resolves it.

    Args:
        asset: The checked asset.
        check: The check's name.
        partition: The checked partition, if any.
        job: The run's job name (annotations only).
        run_id: The run that evaluated the check (annotations and link).
        description: The check's own description of the failure (contracts name the rules
            broken and the rows, not the values).
        at: When the check was evaluated.
        ui_url: Base address of the Dagster UI, for the link.
    """
    labels = {"alertname": CHECK_FAILED, "severity": SEVERITY, "asset": asset, "check": check}
    labels.update(partition_labels(partition))
    where = f" on {partition}" if partition else ""
    return Alert(
        labels=labels,
        annotations={
            "summary": f"Blocking check {check} of {asset} failed{where}: downstream is blocked",
            "description": truncate(description or f"check {check} failed"),
            "run_id": run_id,
            "job": job,
        },
        starts_at=at,
        ends_at=at + ALERT_TTL,
        generator_url=run_url(ui_url, run_id),
    )


def resolved(alert: Alert, at: datetime, run_id: str = "", ui_url: str = "") -> Alert:
    """The same alert (same labels) ending at ``at``: Alertmanager resolves it.

    Args:
        alert: The alert as it was posted (only its labels identify it).
        at: When it ended.
        run_id: The run that resolved it, if any (annotation and link).
        ui_url: Base address of the Dagster UI, for the link.
    """
    annotations = dict(alert.annotations)
    if run_id:
        annotations["resolved_by_run_id"] = run_id
    return replace(
        alert,
        annotations=annotations,
        ends_at=at,
        generator_url=run_url(ui_url, run_id) if run_id else alert.generator_url,
    )


def post(url: str, alerts: Sequence[Alert], timeout: float = TIMEOUT) -> None:
    """Posts ``alerts`` to the Alertmanager at ``url`` (its base address) in one request.

    Raises:
        DeliveryError: naming the address and what went wrong; nothing else.
    """
    if not alerts:
        return
    endpoint = url.rstrip("/") + API_PATH
    body = json.dumps([alert.payload() for alert in alerts]).encode()
    request = urllib.request.Request(
        endpoint, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace").strip()[:200]
        raise DeliveryError(f"{endpoint} answered {error.code}: {detail}") from error
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise DeliveryError(f"{endpoint} unreachable: {reason}") from error
