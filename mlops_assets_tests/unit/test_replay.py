"""Replaying the data source into a landing zone (``lib/replay.py``)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from mlops_assets.lib.replay import replay


def test_replay_writes_one_file_per_dataset_and_day(tmp_path: Path):
    summary = replay(tmp_path, date(2013, 1, 30), 2)
    names = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.csv"))
    assert names == [
        "flights/2013-01-30.csv",
        "flights/2013-01-31.csv",
        "reference/airlines.csv",
        "reference/airports.csv",
        "reference/planes.csv",
        "weather/2013-01-30.csv",
        "weather/2013-01-31.csv",
    ]
    assert summary.rows["flights"] > 1500
    assert not list(tmp_path.rglob(".*.tmp"))


def test_replay_of_a_day_without_weather_is_header_only(tmp_path: Path):
    replay(tmp_path, date(2013, 12, 31), 1, include_reference=False)
    text = (tmp_path / "weather" / "2013-12-31.csv").read_text()
    assert text.strip().startswith("origin,year") and len(text.strip().splitlines()) == 1
