"""Alerts travel: real Prometheus, Pushgateway and Alertmanager, and a webhook receiver.

Each test starts its own stack on free ports of 127.0.0.1 from the repository's files in
deploy/observability, rendered into a temporary folder with test timings: scrape and rule
evaluation every second, every alert's ``for`` shortened to ``FOR`` and Alertmanager's group
waits to one second (the rules' expressions, labels and annotations are untouched). The
receiver is an ``http.server`` in a thread that records every notification.

- A degraded day pushed with ``lib.pipeline_metrics`` raises ``ModelAucDrop`` at the receiver
  with the day and the model version in its labels; a healthy newer day pushed in its place
  resolves it.
- A service target that is down raises ``ServiceDown`` and nothing else, while the
  Pushgateway and Prometheus are scraped.

The binaries come from Debian's packages (.ci/ensure-prometheus); without them the tests are
skipped with the install command, and fail when ``CI=true``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops_assets import observe
from mlops_assets.lib import pipeline_metrics
from mlops_assets.observe import Receiver, Stack
from mlops_assets.processes import HOST, free_port, wait_for
from mlops_assets_tests.e2e.observability import ALERT_TIMEOUT, observed_stack, wait_for_alerts

pytestmark = pytest.mark.e2e

SERVICE_JOB = observe.SERVICE_JOB
DEGRADED = {"usable": True, "labelled_rows": 912, "roc_auc": 0.52, "validation_roc_auc": 0.71}
HEALTHY = {"usable": True, "labelled_rows": 874, "roc_auc": 0.70, "validation_roc_auc": 0.71}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with observe.receiving() as running:
        yield running


@pytest.fixture
def stack(tmp_path: Path, receiver: Receiver) -> Iterator[Stack]:
    """The stack with test timings; the service's target is a port where nothing listens."""
    with observed_stack(tmp_path, receiver.url, [f"{HOST}:{free_port()}"]) as running:
        yield running


def test_a_degraded_day_raises_the_auc_drop_alert_at_the_receiver(
    stack: Stack, receiver: Receiver
) -> None:
    samples = pipeline_metrics.day_samples("2013-08-05", "2", performance=DEGRADED)
    pipeline_metrics.push(stack.pushgateway.url, "model_performance", samples)

    (alert,) = wait_for_alerts(receiver, stack, "ModelAucDrop")
    assert alert["labels"] == {
        "alertname": "ModelAucDrop",
        "severity": "warning",
        "job": pipeline_metrics.JOB,
        pipeline_metrics.GROUP_LABEL: "model_performance",
        "day": "2013-08-05",
        "model_version": "2",
    }
    assert alert["annotations"]["summary"] == (
        "Model v2: ROC AUC on 2013-08-05 is 0.190 below validation"
    )

    # A healthy newer day replaces the group: the alert resolves at the receiver.
    samples = pipeline_metrics.day_samples("2013-08-06", "2", performance=HEALTHY)
    pipeline_metrics.push(stack.pushgateway.url, "model_performance", samples)
    (resolved,) = wait_for_alerts(receiver, stack, "ModelAucDrop", "resolved")
    assert resolved["labels"]["day"] == "2013-08-05"


def test_a_down_service_target_raises_service_down_and_nothing_else(
    stack: Stack, receiver: Receiver
) -> None:
    (alert,) = wait_for(
        lambda: receiver.alerts("firing"),
        ALERT_TIMEOUT,
        0.5,
        what="ServiceDown at the receiver",
        diagnose=stack.report,
    )
    assert alert["labels"] == {
        "alertname": "ServiceDown",
        "severity": "critical",
        "job": SERVICE_JOB,
        "instance": f"{HOST}:{stack.service_targets[0].split(':')[1]}",
    }
    # The other targets are scraped, so every other rule is evaluated on live data.
    assert stack.up() == {SERVICE_JOB: 0.0, "pushgateway": 1.0, "prometheus": 1.0}
    time.sleep(3)  # a few more evaluations: still nothing else
    assert [a["labels"]["alertname"] for a in stack.active_alerts()] == ["ServiceDown"]
    assert {a["labels"]["alertname"] for a in receiver.alerts()} == {"ServiceDown"}
