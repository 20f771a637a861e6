"""Streamed predictions back in the graph: which days to record, and what a day tells.

The stream scorer writes its predictions to the lake sink (``lib.stream_sink``) in parts
named by their content, one folder per flight date. A sensor compares the part names of each
day with those it saw (``plan_stream_days``) and requests the days that changed; the day's
asset records the deduplicated predictions with ``day_summary``, and once the day's labels
land ``stream_performance`` judges them and compares them with the batch predictions of the
same model version (the same scoring code: the gap should be ~0).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from mlops_assets.lib.features import KEY_COLUMNS, LABEL_COLUMN

if TYPE_CHECKING:
    import pandas as pd

# Percentiles of the event-to-prediction latency reported for a day.
LATENCY_PERCENTILES = (50, 95, 99)
PREVIEW_ROWS = 10
PREVIEW_COLUMNS = [*KEY_COLUMNS, "probability", "delayed", "model_version"]


@dataclass(frozen=True)
class StreamDayRequest:
    """Record ``day`` again: its parts are now those digested in the run key."""

    day: str
    parts: int
    run_key: str


@dataclass(frozen=True)
class StreamPlan:
    """What a stream-sensor tick should do.

    Attributes:
        requests: One request per day whose parts changed, in date order.
        skipped: Sink folders that are not a day of the partitions, with the reason.
        seen: The new cursor state: day -> digest of the day's part names.
    """

    requests: list[StreamDayRequest]
    skipped: list[str]
    seen: dict[str, str]


def parts_digest(parts: Sequence[str]) -> str:
    """A short digest of a day's part names (names are digests of their events already)."""
    return hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()[:16]


def plan_stream_days(
    listing: Mapping[str, Sequence[str]],
    seen: Mapping[str, str],
    *,
    first_day: date,
    end_day: date,
) -> StreamPlan:
    """Decides which days a stream-sensor tick requests.

    A day is requested when its set of parts differs from the one seen at the last request
    (a new micro-batch adds a part; the same batch written again is the same part, so it
    changes nothing). Run keys hold the digest of the parts, so the same parts never yield
    two runs, even if the cursor is lost. Folders that are not a partition day are skipped
    once, with the reason.

    Args:
        listing: Day folder -> part names (``lib.stream_sink.days`` and ``parts``).
        seen: Cursor state from the previous tick.
        first_day: First partition day.
        end_day: Day after the last partition day.
    """
    requests: list[StreamDayRequest] = []
    skipped: list[str] = []
    after = dict(seen)
    for day, parts in sorted(listing.items()):
        if not parts:
            continue
        digest = parts_digest(parts)
        if seen.get(day) == digest:
            continue
        after[day] = digest
        reason = _not_a_partition(day, first_day, end_day)
        if reason:
            skipped.append(f"{day}: {reason}")
            continue
        requests.append(StreamDayRequest(day, len(parts), f"stream-{day}-{digest}"))
    return StreamPlan(requests, skipped, after)


def _not_a_partition(day: str, first_day: date, end_day: date) -> str:
    try:
        parsed = date.fromisoformat(day)
    except ValueError:
        return "not a YYYY-MM-DD day folder"
    if parsed.isoformat() != day:
        return "not a YYYY-MM-DD day folder"
    if not first_day <= parsed < end_day:
        return f"outside the partitions ({first_day} .. before {end_day})"
    return ""


def day_summary(predictions: pd.DataFrame, received: int) -> dict[str, Any]:
    """What a day of streamed predictions holds, as metadata.

    Args:
        predictions: The day's predictions, one row per event id (``stream_sink.read_day``).
        received: Rows in the day's parts before deduplication (an event delivered twice,
            e.g. redelivered after a broker restart, is in two parts).

    Returns:
        ``events``, ``duplicates_dropped``, ``model_versions`` (version -> events), the
        ``latency_ms_p50/p95/p99/max`` from ``sent_at`` (producer) to ``scored_at`` (scorer),
        and ``delayed_share``; latencies are absent for a day without events.
    """
    import numpy as np

    events = len(predictions)
    versions = predictions["model_version"].astype(str).value_counts().sort_index()
    out: dict[str, Any] = {
        "events": events,
        "duplicates_dropped": max(received - events, 0),
        "model_versions": {str(v): int(n) for v, n in versions.items()},
    }
    if not events:
        return out
    latency = (predictions["scored_at"] - predictions["sent_at"]).to_numpy(dtype=float) * 1000
    for p in LATENCY_PERCENTILES:
        out[f"latency_ms_p{p}"] = round(float(np.percentile(latency, p)), 2)
    out["latency_ms_max"] = round(float(latency.max()), 2)
    out["delayed_share"] = round(float(predictions["delayed"].astype(bool).mean()), 4)
    return out


def preview(predictions: pd.DataFrame, rows: int = PREVIEW_ROWS) -> str:
    """The first rows of the day as a Markdown table (never more than ``PREVIEW_COLUMNS``)."""
    if predictions.empty:
        return "no streamed predictions"
    return str(predictions[PREVIEW_COLUMNS].head(rows).to_markdown(index=False))


def stream_performance(
    stream: pd.DataFrame, labels: pd.DataFrame, batch: pd.DataFrame
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Streamed predictions of a day judged on its labels and against the batch predictions.

    Per model version (a promotion mid-day gives two): the streamed flights that have a
    label (cancelled and diverted flights have none), the ROC AUC (when both classes are
    present) and the accuracy of the decisions; and the flights the batch predictions scored
    with the same version, with the largest probability gap (the same scoring code and
    model: it should be ~0) and the share of decisions that agree. The day's totals judge
    each flight's newest streamed answer.

    Args:
        stream: The day's ``stream_predictions``.
        labels: The day's ``flight_features`` (flight key and label).
        batch: The day's ``batch_predictions``.

    Returns:
        One row per model version and one ``all`` row, and the metadata: the day's status
        and totals, and per version the numbers under ``v<version>_...``.
    """
    import pandas as pd

    from mlops_assets.lib.predictions import keyed

    # Two events of one flight (two producers, two ids) count once: the newest answer.
    stream = keyed(stream).sort_values(["scored_at", "event_id"])
    labelled = keyed(labels)[[*KEY_COLUMNS, LABEL_COLUMN]].dropna(subset=[LABEL_COLUMN])
    batch = keyed(batch)
    rows = [
        _judged(str(version), own.drop_duplicates(KEY_COLUMNS, keep="last"), labelled, batch)
        for version, own in stream.groupby("model_version", sort=True)
    ]
    newest = stream.drop_duplicates(KEY_COLUMNS, keep="last")
    rows.append(_judged(ALL_VERSIONS, newest, labelled, batch))
    table = pd.DataFrame(rows, columns=PERFORMANCE_COLUMNS)
    return table, _performance_metadata(len(stream), table)


ALL_VERSIONS = "all"
PERFORMANCE_COLUMNS = [
    "model_version",
    "flights",
    "labelled_flights",
    "roc_auc",
    "accuracy",
    "batch_flights",
    "batch_max_gap",
    "batch_agreement",
]


def _judged(
    version: str, own: pd.DataFrame, labelled: pd.DataFrame, batch: pd.DataFrame
) -> dict[str, Any]:
    """One row of ``PERFORMANCE_COLUMNS`` for the flights ``own`` (one answer per flight)."""
    from sklearn.metrics import roc_auc_score

    judged = own.merge(labelled, on=KEY_COLUMNS)
    truth = judged[LABEL_COLUMN].astype(bool)
    decided = judged["delayed"].astype(bool)
    row: dict[str, Any] = {
        "model_version": version,
        "flights": len(own),
        "labelled_flights": len(judged),
        "roc_auc": float(roc_auc_score(truth, judged["probability"]))
        if truth.nunique() == 2
        else None,
        "accuracy": float((decided == truth).mean()) if len(judged) else None,
    }
    # Only the batch answers of the same model version compare: the same code and model.
    same = own.merge(batch, on=[*KEY_COLUMNS, "model_version"], suffixes=("", "_batch"))
    row["batch_flights"] = len(same)
    if len(same):
        row["batch_max_gap"] = float((same["probability"] - same["probability_batch"]).abs().max())
        agree = same["delayed"].astype(bool) == same["delayed_batch"].astype(bool)
        row["batch_agreement"] = float(agree.mean())
    return row


def _performance_metadata(events: int, table: pd.DataFrame) -> dict[str, Any]:
    """The ``all`` row as the day's numbers, each version's under ``v<version>_``.

    The ``status`` is ``ok``, ``no labels`` or ``one class`` (ROC AUC undefined).
    """
    import pandas as pd

    out: dict[str, Any] = {"events": events}
    day = table[table["model_version"] == ALL_VERSIONS].iloc[0]
    out["status"] = (
        "no labels"
        if not day["labelled_flights"]
        else "one class"
        if pd.isna(day["roc_auc"])
        else "ok"
    )
    for row in table.to_dict("records"):
        prefix = "" if row["model_version"] == ALL_VERSIONS else f"v{row['model_version']}_"
        for column, value in row.items():
            name = str(column)
            if name == "model_version" or value is None or value != value:  # None, NaN
                continue
            if name in ("roc_auc", "accuracy", "batch_agreement"):
                value = round(float(value), 4)
            out[prefix + name] = int(value) if name.endswith("flights") else value
    return out
