"""The prediction log: whole parts only, lost lines counted, an empty day is an empty frame."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pandas as pd

from mlops_assets.lib.prediction_log import (
    COLUMNS,
    PredictionLogWriter,
    default_root,
    log_line,
    read_day,
)

RESULT = {
    "flight_date": "2013-01-22",
    "carrier": "UA",
    "flight": 1545,
    "origin": "EWR",
    "probability": 0.25,
    "delayed": True,
    "threshold": 0.2,
    "model_version": "1",
}


def lines(n: int, day: str = "2013-01-22", start: int = 0) -> list[dict[str, Any]]:
    return [
        log_line(
            {**RESULT, "flight_date": day, "flight": start + i},
            request_id=f"r{start + i}",
            role="champion",
            served=True,
            mode="off",
        )
        for i in range(n)
    ]


def test_a_line_holds_the_named_columns_only():
    line = log_line(
        {**RESULT, "tailnum": "N14228", "temp": 39.0},
        request_id="x",
        role="challenger",
        served=False,
        mode="shadow",
    )
    assert list(line) == COLUMNS
    assert line["served"] is False and line["role"] == "challenger" and line["mode"] == "shadow"
    assert line["time"].endswith("+00:00")


def test_lines_land_per_flight_date_in_whole_parts(tmp_path: Path):
    root = str(tmp_path / "log")
    writer = PredictionLogWriter(root, flush_seconds=60)
    writer.append(lines(3, "2013-01-22") + lines(2, "2013-01-23", start=10))
    writer.close()
    assert writer.written == 5 and writer.lost == 0
    parts = sorted(str(p.relative_to(tmp_path / "log")) for p in (tmp_path / "log").rglob("*.*"))
    assert len(parts) == 2, parts  # one part per day, no staged file left behind
    for part in parts:
        day, name = part.split("/")
        assert day in ("2013-01-22", "2013-01-23")
        assert name.startswith("part-") and name.endswith(".jsonl"), name
    day = read_day(root, "2013-01-22")
    assert list(day.columns) == COLUMNS
    assert sorted(day["flight"]) == [0, 1, 2]
    assert list(read_day(root, "2013-01-23")["request_id"]) == ["r10", "r11"]


def test_a_reader_during_writes_never_sees_a_torn_line(tmp_path: Path):
    root = str(tmp_path / "log")
    writer = PredictionLogWriter(root, flush_lines=50, flush_seconds=0.01)
    stop = threading.Event()
    seen: list[int] = []
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                frame = read_day(root, "2013-01-22")  # json.loads fails on a torn line
                assert frame["request_id"].notna().all()
                seen.append(len(frame))
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=reader)
    thread.start()
    for batch in range(200):
        writer.append(lines(25, start=batch * 25))
    writer.close()
    stop.set()
    thread.join(30)
    assert not errors, errors[0]
    assert seen == sorted(seen), "a reader saw lines disappear"
    assert len(read_day(root, "2013-01-22")) == 5000
    assert writer.lost == 0


def test_an_unwritable_root_counts_lost_lines_and_never_raises(tmp_path: Path, caplog: Any):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the log's folder should be")
    counted: list[int] = []
    writer = PredictionLogWriter(str(blocker), flush_seconds=60, on_lost=counted.append)
    writer.append(lines(7))
    assert writer.flush() == 0
    writer.append(lines(3))
    writer.close()
    writer.append(lines(2))  # after close: counted too, not raised
    assert writer.lost == 12 and sum(counted) == 12 and writer.written == 0
    assert "lines lost" in caplog.text


def test_reading_a_day_without_predictions_gives_the_empty_frame(tmp_path: Path):
    frame = read_day(str(tmp_path / "nothing-here"), "2013-01-22")
    assert list(frame.columns) == COLUMNS and frame.empty
    assert frame["probability"].dtype == "float64"
    pd.testing.assert_frame_equal(frame, read_day(str(tmp_path), "2013-01-22"))


def test_the_default_root_is_the_state_folder_unless_set(tmp_path: Path):
    assert default_root({"MLOPS_STATE_DIR": str(tmp_path)}) == str(tmp_path / "prediction_log")
    assert default_root({"MLOPS_PREDICTION_LOG": "s3://lake/predictions"}) == (
        "s3://lake/predictions"
    )
    production = {"MLOPS_ENV": "production", "MLOPS_LAKE_URL": "s3://mlops/lake/"}
    assert default_root(production) == "s3://mlops/lake/prediction_log"  # where it is read
    assert default_root({**production, "MLOPS_PREDICTION_LOG": "/var/log/p"}) == "/var/log/p"
