"""The lake sink of streamed predictions: atomic parts, idempotent by event id."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from mlops_assets.lib import stream_sink


def prediction(event_id: str, day: str = "2013-07-01", version: str = "3", **extra: Any) -> dict:
    return {
        "event_id": event_id,
        "flight_date": day,
        "carrier": "UA",
        "flight": 1545,
        "origin": "EWR",
        "probability": 0.25,
        "delayed": False,
        "threshold": 0.3,
        "model_version": version,
        "sent_at": 100.0,
        "scored_at": 100.01,
        **extra,
    }


def test_a_batch_lands_in_one_part_per_flight_date(tmp_path: Path):
    rows = [prediction("a"), prediction("b"), prediction("c", day="2013-07-02")]
    written = stream_sink.write_batch(str(tmp_path), rows)
    assert [w.split("/")[0] for w in written] == ["2013-07-01", "2013-07-02"]
    assert stream_sink.days(str(tmp_path)) == ["2013-07-01", "2013-07-02"]
    day = stream_sink.read_day(str(tmp_path), "2013-07-01")
    assert list(day.columns) == stream_sink.COLUMNS
    assert list(day["event_id"]) == ["a", "b"]
    assert day["flight"].dtype == "int64" and day["delayed"].dtype == "bool"


def test_the_same_batch_twice_is_the_same_file(tmp_path: Path):
    rows = [prediction("b"), prediction("a")]
    first = stream_sink.write_batch(str(tmp_path), rows)
    again = stream_sink.write_batch(str(tmp_path), list(reversed(rows)))
    assert first == again
    assert len(stream_sink.parts(str(tmp_path), "2013-07-01")) == 1
    assert len(stream_sink.read_raw(str(tmp_path), "2013-07-01")) == 2


def test_an_event_in_two_batches_counts_once_the_first_scored(tmp_path: Path):
    stream_sink.write_batch(str(tmp_path), [prediction("a", scored_at=5.0, probability=0.1)])
    stream_sink.write_batch(
        str(tmp_path),
        [prediction("a", scored_at=9.0, probability=0.9), prediction("b", scored_at=9.0)],
    )
    assert len(stream_sink.read_raw(str(tmp_path), "2013-07-01")) == 3
    day = stream_sink.read_day(str(tmp_path), "2013-07-01")
    assert list(day["event_id"]) == ["a", "b"]
    assert day.loc[0, "probability"] == 0.1


def test_a_batch_of_two_versions_is_refused_and_nothing_is_written(tmp_path: Path):
    with pytest.raises(ValueError, match="one model version, got 3, 4"):
        stream_sink.write_batch(str(tmp_path), [prediction("a"), prediction("b", version="4")])
    assert stream_sink.days(str(tmp_path)) == []


def test_a_row_missing_a_field_is_refused_and_nothing_is_written(tmp_path: Path):
    row = prediction("a")
    del row["scored_at"]
    with pytest.raises(ValueError, match=r"miss the field.*scored_at"):
        stream_sink.write_batch(str(tmp_path), [prediction("b"), row])
    assert stream_sink.days(str(tmp_path)) == []


def test_a_killed_writer_leaves_nothing_readers_see_and_is_swept_once_old(tmp_path: Path):
    stream_sink.write_batch(str(tmp_path), [prediction("a")])
    folder = tmp_path / "2013-07-01"
    old = folder / ".part-dead.parquet.0123.tmp"
    fresh = folder / ".part-live.parquet.4567.tmp"
    old.write_bytes(b"half a par")
    fresh.write_bytes(b"half a par")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    assert all(name.startswith("part-") for name in stream_sink.parts(str(tmp_path), "2013-07-01"))
    assert len(stream_sink.read_day(str(tmp_path), "2013-07-01")) == 1
    stream_sink.write_batch(str(tmp_path), [prediction("b")])
    assert not old.exists() and fresh.exists()  # a writer may still be on the fresh one


def test_an_empty_sink_reads_as_an_empty_frame(tmp_path: Path):
    assert stream_sink.days(str(tmp_path / "nothing")) == []
    empty = stream_sink.read_day(str(tmp_path), "2013-07-01")
    assert empty.empty and list(empty.columns) == stream_sink.COLUMNS
    assert stream_sink.write_batch(str(tmp_path), []) == []


def test_default_root_per_environment(tmp_path: Path):
    assert stream_sink.default_root({"MLOPS_STATE_DIR": str(tmp_path)}) == str(
        tmp_path.resolve() / "lake" / "stream_sink"
    )
    production = {"MLOPS_ENV": "production", "MLOPS_LAKE_URL": "s3://b/lake/"}
    assert stream_sink.default_root(production) == "s3://b/lake/stream_sink"
    assert stream_sink.default_root({**production, "MLOPS_STREAM_SINK": "s3://x"}) == "s3://x"
