"""The pipeline's Prometheus metrics: names, help texts, label sets, and their exposition.

The pipeline is batch work: a run ends, so nothing stays up for Prometheus to scrape. Its
numbers go to a Pushgateway instead, one group per source (``job`` and ``asset`` in the
grouping key, never ``day``): a push replaces the group, so Prometheus sees the newest day
of each source and an alert about an older day resolves once a newer day is pushed.

# [template:if with_observability]
The alert and recording rules in ``deploy/observability/rules/pipeline.yml``, and the series
of their unit tests, use only the names and label sets defined here
(``mlops_assets_tests/deploy/test_observability.py`` checks it).
# [template:end]
Everything is a gauge: a pushed counter would restart at every push.

No Dagster and no Prometheus client here: the text format is small and fixed
(https://prometheus.io/docs/instrumenting/exposition_formats/), and stdlib ``urllib``
pushes it.
"""

from __future__ import annotations

import base64
import math
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlops_assets.lib.retraining import ModelHealth

# Where the pipeline pushes (a Pushgateway's base URL); unset: the pipeline pushes nothing.
GATEWAY_VAR = "MLOPS_PUSHGATEWAY_URL"
# The Pushgateway job of every pipeline metric; ``asset`` names the pushing source.
JOB = "mlops_pipeline"
GROUP_LABEL = "asset"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PUSH_TIMEOUT = 5.0  # seconds; a push is small, and a slow gateway must not hold a run


@dataclass(frozen=True)
class Metric:
    """One metric family: its name, help text and label names (all are gauges)."""

    name: str
    help: str
    labels: tuple[str, ...]
    type: str = "gauge"


DAY_LABELS = ("day", "model_version")

DRIFT_SHARE = Metric(
    "mlops_day_drift_share",
    "Share of the monitored columns that drifted on the day (drift_report)",
    DAY_LABELS,
)
DAY_DRIFTED = Metric(
    "mlops_day_drifted",
    "1 when the day's drift share is over the drift policy's threshold, else 0",
    DAY_LABELS,
)
DRIFT_STREAK_DAYS = Metric(
    "mlops_drift_streak_days",
    "Consecutive monitored days of the model, up to and including the day, that drifted",
    DAY_LABELS,
)
ROC_AUC = Metric(
    "mlops_day_roc_auc",
    "ROC AUC of the model's predictions against the day's actual arrivals",
    DAY_LABELS,
)
VALIDATION_ROC_AUC = Metric(
    "mlops_day_validation_roc_auc",
    "ROC AUC of the model that predicted the day, on its validation holdout",
    DAY_LABELS,
)
LABELLED_ROWS = Metric(
    "mlops_day_labelled_rows",
    "Flights of the day with a known label (cancelled and diverted flights have none)",
    DAY_LABELS,
)
PERFORMANCE_USABLE = Metric(
    "mlops_day_performance_usable",
    "1 when the day has enough labels of both classes to judge the model by, else 0",
    DAY_LABELS,
)
CONTRACT_FAILURES = Metric(
    "mlops_contract_failures",
    "Failure cases of the dataset's contract on the day (0: the contract passed)",
    ("dataset", "day"),
)
LANDING_ARRIVAL = Metric(
    "mlops_landing_last_arrival_timestamp_seconds",
    "Unix time at which the newest landed day (label day) arrived in the landing zone",
    ("day",),
)
RETRAINING_FAILED = Metric(
    "mlops_retraining_last_run_failed",
    "1 when the newest retraining run failed, else 0 (day: its as-of day; model_version: "
    "the champion it was to replace)",
    DAY_LABELS,
)
RETRAINING_FINISHED = Metric(
    "mlops_retraining_last_run_timestamp_seconds",
    "Unix time at which the newest retraining run ended",
    DAY_LABELS,
)

ROLLING_ROC_AUC = Metric(
    "mlops_model_rolling_roc_auc",
    "Mean ROC AUC of the model over its last usable monitored days, up to the day (the "
    "retraining policy's window; absent until the window is full)",
    DAY_LABELS,
)
ROLLING_AUC_DROP = Metric(
    "mlops_model_rolling_auc_drop",
    "The model's validation ROC AUC minus its rolling ROC AUC (the retraining policy retrains "
    "above its max_auc_drop)",
    DAY_LABELS,
)
CHAMPION = Metric(
    "mlops_champion_info",
    "1 for the registry's champion version",
    ("model_version",),
)
GATE_DECISIONS = Metric(
    "mlops_gate_decisions",
    "Decisions of the gate recorded in the Dagster instance, by kind (a running total)",
    ("decision",),
)
GATE_LAST_DECISION = Metric(
    "mlops_gate_last_decision_timestamp_seconds",
    "Unix time of the gate's newest decision, on the challenger it judged",
    ("decision", "model_version"),
)
TRIAL_RUNNING = Metric(
    "mlops_trial_running",
    "1 while the challenger is on live trial against the champion, 0 once it ended",
    ("model_version", "champion_version", "mode"),
)
RETRAINING_RUNS = Metric(
    "mlops_retraining_runs",
    "Retraining runs requested by the retraining sensor, by final status (a running total)",
    ("status",),
)
PUSH_MISSES = Metric(
    "mlops_pipeline_push_misses",
    "Pushes of this source that did not reach the Pushgateway, counted on the pushing host",
    (),
)

METRICS: tuple[Metric, ...] = (
    DRIFT_SHARE,
    DAY_DRIFTED,
    DRIFT_STREAK_DAYS,
    ROC_AUC,
    VALIDATION_ROC_AUC,
    LABELLED_ROWS,
    PERFORMANCE_USABLE,
    CONTRACT_FAILURES,
    LANDING_ARRIVAL,
    RETRAINING_FAILED,
    RETRAINING_FINISHED,
    ROLLING_ROC_AUC,
    ROLLING_AUC_DROP,
    CHAMPION,
    GATE_DECISIONS,
    GATE_LAST_DECISION,
    TRIAL_RUNNING,
    RETRAINING_RUNS,
    PUSH_MISSES,
)


@dataclass(frozen=True)
class Sample:
    """One value of a metric, with a value for each of the metric's labels."""

    metric: Metric
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if set(self.labels) != set(self.metric.labels):
            raise ValueError(
                f"{self.metric.name} takes labels {list(self.metric.labels)}, "
                f"got {sorted(self.labels)}"
            )


def day_samples(
    day: str,
    model_version: str,
    *,
    drift: Mapping[str, Any] | None = None,
    performance: Mapping[str, Any] | None = None,
    health: ModelHealth | None = None,
) -> list[Sample]:
    """A monitored day as samples: drift, streak and real performance, where known.

    Args:
        day: The partition key (``YYYY-MM-DD``).
        model_version: The model that predicted the day.
        drift: ``drift_report`` metadata (``DriftResult.summary``): ``drift_share`` and
            ``drifted``. An empty day (``status`` ``empty day``) gives no drift samples.
        performance: ``model_performance`` metadata (``DayPerformance.summary``): ``usable``,
            ``labelled_rows`` and, when defined, ``roc_auc`` and ``validation_roc_auc``.
        health: The model's drift streak and rolling ROC AUC up to the day
            (``lib.retraining.model_health``).
    """
    labels = {"day": day, "model_version": model_version}
    samples: list[Sample] = []

    def add(metric: Metric, value: Any) -> None:
        if value is not None:
            samples.append(Sample(metric, float(value), labels))

    if drift is not None and "drift_share" in drift:
        add(DRIFT_SHARE, drift["drift_share"])
        add(DAY_DRIFTED, bool(drift["drifted"]))
    if health is not None:
        add(DRIFT_STREAK_DAYS, health.drift_streak)
        add(ROLLING_ROC_AUC, health.rolling_roc_auc)
        add(ROLLING_AUC_DROP, health.rolling_auc_drop)
    if performance is not None:
        add(PERFORMANCE_USABLE, bool(performance.get("usable")))
        add(LABELLED_ROWS, performance.get("labelled_rows"))
        add(ROC_AUC, performance.get("roc_auc"))
        add(VALIDATION_ROC_AUC, performance.get("validation_roc_auc"))
    return samples


def contract_samples(dataset: str, day: str, failures: int) -> list[Sample]:
    """A dataset's contract verdict on a day: its failure cases (0 when it passed)."""
    return [Sample(CONTRACT_FAILURES, float(failures), {"dataset": dataset, "day": day})]


def landing_samples(day: str, arrived_at: datetime) -> list[Sample]:
    """The newest landed day and when it arrived (an aware datetime)."""
    if arrived_at.tzinfo is None:
        raise ValueError("arrived_at must carry a time zone")
    return [Sample(LANDING_ARRIVAL, arrived_at.timestamp(), {"day": day})]


def retraining_samples(
    day: str, model_version: str, *, failed: bool, finished_at: datetime
) -> list[Sample]:
    """The newest retraining run: whether it failed and when it ended."""
    if finished_at.tzinfo is None:
        raise ValueError("finished_at must carry a time zone")
    labels = {"day": day, "model_version": model_version}
    return [
        Sample(RETRAINING_FAILED, float(failed), labels),
        Sample(RETRAINING_FINISHED, finished_at.timestamp(), labels),
    ]


def gate_samples(
    decision: str,
    model_version: str,
    decided_at: datetime,
    *,
    champion: str | None,
    totals: Mapping[str, int],
    trial: Mapping[str, str] | None = None,
) -> list[Sample]:
    """The gate's newest decision, its running totals, the champion and the trial state.

    Args:
        decision: What the gate did (``promoted``, ``rejected``, ``trial``, ``promoted after
            trial``, ``retired after trial``).
        model_version: The challenger it judged.
        decided_at: When (an aware datetime).
        champion: The champion version after the decision (None: no champion yet).
        totals: Decisions so far by kind.
        trial: ``model_version``, ``champion_version``, ``mode`` and ``status`` of the newest
            trial (``running`` or how it ended), if there has been one.
    """
    if decided_at.tzinfo is None:
        raise ValueError("decided_at must carry a time zone")
    samples = [
        Sample(
            GATE_LAST_DECISION,
            decided_at.timestamp(),
            {"decision": decision, "model_version": model_version},
        ),
        *(Sample(GATE_DECISIONS, float(n), {"decision": kind}) for kind, n in totals.items()),
    ]
    if champion is not None:
        samples.append(Sample(CHAMPION, 1.0, {"model_version": champion}))
    if trial is not None:
        labels = {name: trial[name] for name in TRIAL_RUNNING.labels}
        samples.append(Sample(TRIAL_RUNNING, float(trial["status"] == "running"), labels))
    return samples


def retraining_totals(statuses: Mapping[str, int]) -> list[Sample]:
    """Retraining runs by final status (``success``, ``failure``, ``canceled``)."""
    return [Sample(RETRAINING_RUNS, float(n), {"status": s}) for s, n in statuses.items()]


def misses_sample(misses: int) -> Sample:
    """How many pushes of a source missed the gateway so far."""
    return Sample(PUSH_MISSES, float(misses))


def day_start(day: str) -> datetime:
    """Midnight UTC of a partition key, for timestamps that stand for a day."""
    return datetime.combine(date.fromisoformat(day), datetime.min.time(), UTC)


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def exposition(samples: Iterable[Sample]) -> str:
    """Samples as Prometheus text exposition lines (``# HELP``/``# TYPE`` once per family).

    Families appear in the order of their first sample, and a family's samples stay
    together, as the format requires. No timestamps: the Pushgateway refuses them.
    """
    families: dict[str, list[Sample]] = {}
    for sample in samples:
        families.setdefault(sample.metric.name, []).append(sample)
    lines: list[str] = []
    for family in families.values():
        metric = family[0].metric
        lines.append(f"# HELP {metric.name} {_escape_help(metric.help)}")
        lines.append(f"# TYPE {metric.name} {metric.type}")
        for sample in family:
            pairs = ",".join(
                f'{name}="{_escape_label(str(sample.labels[name]))}"' for name in metric.labels
            )
            labels = f"{{{pairs}}}" if pairs else ""
            lines.append(f"{metric.name}{labels} {_number(sample.value)}")
    return "".join(f"{line}\n" for line in lines)


def _path_part(label: str, value: str) -> str:
    # The Pushgateway splits the URL path on "/": a value holding one (or an empty value)
    # goes base64-encoded, its documented escape.
    if value and "/" not in value:
        return f"{label}/{urllib.parse.quote(value, safe='')}"
    encoded = base64.urlsafe_b64encode(value.encode()).decode() or "="
    return f"{label}@base64/{encoded}"


def push_url(gateway: str, asset: str, *, job: str = JOB) -> str:
    """The URL of a source's group on a Pushgateway (``gateway``: its base URL)."""
    group = "/".join([_path_part("job", job), _path_part(GROUP_LABEL, asset)])
    return f"{gateway.rstrip('/')}/metrics/{group}"


def push(
    gateway: str, asset: str, samples: Iterable[Sample], *, timeout: float = PUSH_TIMEOUT
) -> None:
    """Replaces the source's group on the Pushgateway with ``samples`` (HTTP PUT).

    Raises:
        urllib.error.HTTPError: the gateway refused the push (e.g. a help text that differs
            from the one another group pushed for the same metric).
        OSError: the gateway could not be reached in ``timeout`` seconds.
    """
    import urllib.request

    request = urllib.request.Request(
        push_url(gateway, asset),
        data=exposition(samples).encode(),
        headers={"Content-Type": CONTENT_TYPE},
        method="PUT",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()
