"""Streamed predictions in the graph: which days a tick requests, what a day reports."""

from datetime import date

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from mlops_assets.lib.features import LABEL_COLUMN
from mlops_assets.lib.stream_monitoring import (
    day_summary,
    parts_digest,
    plan_stream_days,
    preview,
    stream_performance,
)

SPAN = {"first_day": date(2013, 1, 1), "end_day": date(2014, 1, 1)}
DAY = "2013-01-22"


def test_days_with_new_parts_are_requested_once() -> None:
    listing = {DAY: ["part-a.parquet"], "2013-01-23": ["part-b.parquet", "part-c.parquet"]}
    first = plan_stream_days(listing, {}, **SPAN)
    assert [(r.day, r.parts) for r in first.requests] == [(DAY, 1), ("2013-01-23", 2)]
    assert first.requests[0].run_key == f"stream-{DAY}-{parts_digest(['part-a.parquet'])}"
    # Nothing new: nothing requested, the cursor stays as it was.
    again = plan_stream_days(listing, first.seen, **SPAN)
    assert again.requests == [] and again.seen == first.seen
    # A new micro-batch on one day requests that day only, with a new run key.
    listing[DAY] = ["part-a.parquet", "part-d.parquet"]
    later = plan_stream_days(listing, first.seen, **SPAN)
    assert [r.day for r in later.requests] == [DAY]
    assert later.requests[0].run_key != first.requests[0].run_key
    # Part order in a listing does not matter: the same parts are the same day.
    shuffled = {day: list(reversed(parts)) for day, parts in listing.items()}
    assert plan_stream_days(shuffled, later.seen, **SPAN).requests == []


def test_folders_that_are_not_partition_days_are_skipped_once_with_the_reason() -> None:
    listing = {
        "2012-12-31": ["part-a.parquet"],
        "2013-1-5": ["part-b.parquet"],
        "notes": ["part-c.parquet"],
        "2013-02-01": [],  # a folder without parts yet
        DAY: ["part-d.parquet"],
    }
    plan = plan_stream_days(listing, {}, **SPAN)
    assert [r.day for r in plan.requests] == [DAY]
    assert plan.skipped == [
        "2012-12-31: outside the partitions (2013-01-01 .. before 2014-01-01)",
        "2013-1-5: not a YYYY-MM-DD day folder",
        "notes: not a YYYY-MM-DD day folder",
    ]
    assert "2013-02-01" not in plan.seen
    assert plan_stream_days(listing, plan.seen, **SPAN).skipped == []


def predictions(versions: list[str], latencies_ms: list[float]) -> pd.DataFrame:
    n = len(versions)
    sent = [1000.0 + i for i in range(n)]
    return pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "flight_date": [DAY] * n,
            "carrier": ["AA"] * n,
            "flight": list(range(1, n + 1)),
            "origin": ["JFK"] * n,
            "probability": [0.1 * (i + 1) for i in range(n)],
            "delayed": [i % 2 == 0 for i in range(n)],
            "threshold": [0.5] * n,
            "model_version": versions,
            "sent_at": sent,
            "scored_at": [s + ms / 1000 for s, ms in zip(sent, latencies_ms, strict=True)],
        }
    )


def test_a_day_reports_events_duplicates_versions_and_latency() -> None:
    frame = predictions(["1", "1", "1", "2"], [10.0, 20.0, 30.0, 40.0])
    summary = day_summary(frame, received=6)
    assert summary["events"] == 4 and summary["duplicates_dropped"] == 2
    assert summary["model_versions"] == {"1": 3, "2": 1}
    assert summary["latency_ms_p50"] == pytest.approx(25.0, abs=0.01)
    assert summary["latency_ms_max"] == pytest.approx(40.0, abs=0.01)
    assert summary["latency_ms_p50"] <= summary["latency_ms_p95"] <= summary["latency_ms_p99"]
    assert summary["delayed_share"] == 0.5
    table = preview(frame)
    assert table.splitlines()[0].split("|")[1].strip() == "flight_date"
    assert "sent_at" not in table and "event_id" not in table


def test_an_empty_day_reports_no_events_and_no_latency() -> None:
    empty = predictions([], [])
    assert day_summary(empty, received=0) == {
        "events": 0,
        "duplicates_dropped": 0,
        "model_versions": {},
    }
    assert preview(empty) == "no streamed predictions"


def labels_for(frame: pd.DataFrame, delayed: list[float | None]) -> pd.DataFrame:
    keys = frame[["flight_date", "carrier", "flight", "origin"]].copy()
    keys["flight_date"] = pd.to_datetime(keys["flight_date"])  # as flight_features stores it
    return keys.assign(**{LABEL_COLUMN: delayed})


def test_streamed_predictions_are_judged_on_labels_and_against_the_batch() -> None:
    stream = predictions(["1"] * 4 + ["2"] * 2, [5.0] * 6)
    stream.loc[4:, "flight"] = [1, 2]  # v2 answered flights 1 and 2 again, later
    truth = [1.0, 0.0, None, 1.0]  # flight 3 was cancelled: no label
    labels = labels_for(stream.iloc[:4], truth)
    batch = stream.iloc[:4].drop(columns=["event_id", "sent_at", "scored_at"]).copy()
    batch.loc[1, "probability"] += 0.001  # the batch scored flight 2 a hair apart
    table, meta = stream_performance(stream, labels, batch)
    by_version = table.set_index("model_version")
    assert list(by_version.index) == ["1", "2", "all"]
    assert (meta["events"], meta["status"]) == (6, "ok")
    v1 = by_version.loc["1"]
    assert (v1["flights"], v1["labelled_flights"], v1["batch_flights"]) == (4, 3, 4)
    expected = roc_auc_score([True, False, True], stream.loc[[0, 1, 3], "probability"])
    assert v1["roc_auc"] == pytest.approx(expected)
    assert meta["v1_roc_auc"] == round(expected, 4)
    assert v1["accuracy"] == pytest.approx(2 / 3)  # decisions True, False, False
    assert meta["v1_batch_max_gap"] == pytest.approx(0.001)
    assert meta["v1_batch_agreement"] == 1.0
    # v2's answers have no batch of their own version to compare with.
    assert by_version.loc["2", "batch_flights"] == 0 and "v2_batch_max_gap" not in meta
    # The day: each flight's newest answer (v2 for flights 1 and 2).
    assert (meta["flights"], meta["labelled_flights"], meta["batch_flights"]) == (4, 3, 2)


def test_a_day_without_labels_or_batch_is_reported_not_judged() -> None:
    stream = predictions(["1", "1"], [5.0, 5.0])
    labels = labels_for(stream, [None, None])
    batch = stream.iloc[:0].drop(columns=["event_id", "sent_at", "scored_at"])
    table, meta = stream_performance(stream, labels, batch)
    assert meta == {
        "events": 2,
        "status": "no labels",
        "flights": 2,
        "labelled_flights": 0,
        "batch_flights": 0,
        "v1_flights": 2,
        "v1_labelled_flights": 0,
        "v1_batch_flights": 0,
    }
    assert table["roc_auc"].isna().all() and table["accuracy"].isna().all()
