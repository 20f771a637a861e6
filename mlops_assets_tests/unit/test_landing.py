from __future__ import annotations

import gzip
import json
import os
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from mlops_assets.lib import landing, manifest
from mlops_assets.lib.landing import LandingFileError, read_csv
from mlops_assets.lib.replay import replay

FIRST, END = date(2013, 1, 1), date(2014, 1, 1)


def tick(root: Path, seen: dict[str, str], ready=True, *, require=True, now=None):
    """The plan of a landing-sensor tick on ``root``, as the sensor makes it."""
    return landing.plan_landing_runs(
        landing.scan(root),
        seen,
        first_day=FIRST,
        end_day=END,
        references_ready=ready,
        listing=lambda day: manifest.listing(root, day),
        require_manifests=require,
        now=now,
    )


@pytest.fixture(scope="module")
def one_day(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2013-01-01 as the replay delivers it (files and manifest), replayed once."""
    root = tmp_path_factory.mktemp("one_day")
    replay(root, date(2013, 1, 1), 1, include_reference=False)
    return root


def copy_day(one_day: Path, root: Path) -> None:
    """A fresh copy of ``one_day`` in ``root`` (a test may change it)."""
    shutil.copytree(one_day, root, dirs_exist_ok=True)


def touch(root: Path, rel: str, payload: bytes = b"a,b\n1,2\n") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def test_first_tick_requests_references_and_defers_days(tmp_path: Path):
    replay(tmp_path, date(2013, 1, 1), 2)
    first = tick(tmp_path, {}, ready=False)
    assert first.references is not None
    assert first.references[0] == ("airlines", "airports", "planes")
    assert first.days == []
    assert len(first.deferred) == 4
    second = tick(tmp_path, first.seen, ready=True)
    assert second.references is None
    assert [(r.day, r.datasets) for r in second.days] == [
        (date(2013, 1, 1), ("flights", "weather")),
        (date(2013, 1, 2), ("flights", "weather")),
    ]


def test_cursor_prevents_duplicates_and_sees_redeliveries(one_day: Path, tmp_path: Path):
    copy_day(one_day, tmp_path)
    first = tick(tmp_path, {})
    assert len(first.days) == 1
    again = tick(tmp_path, first.seen)
    assert again.days == [] and again.references is None
    # A re-delivered file (new size/mtime) is planned again, with a different run key.
    path = tmp_path / "weather" / "2013-01-01.csv"
    path.write_bytes(path.read_bytes() + b"\n")
    os.utime(path, ns=(1, 1))
    redelivered = tick(tmp_path, first.seen)
    assert [r.datasets for r in redelivered.days] == [("weather",)]
    assert redelivered.days[0].run_key != first.days[0].run_key
    # The day's flights, landed before and unchanged, are named for the day's run.
    assert first.days[0].landed == () and redelivered.days[0].landed == ("flights",)


def test_a_redelivery_names_only_other_files_landed_before_and_unchanged(
    one_day: Path, tmp_path: Path
):
    copy_day(one_day, tmp_path)
    first = tick(tmp_path, {})
    for name in ("flights", "weather"):  # both changed: nothing landed before is left
        path = tmp_path / name / "2013-01-01.csv"
        path.write_bytes(path.read_bytes() + b"\n")
    [both] = tick(tmp_path, first.seen).days
    assert both.datasets == ("flights", "weather") and both.landed == ()
    # Flights not in the cursor are new; the weather, handled at its fingerprint, is landed.
    seen = {k: v for k, v in tick(tmp_path, {}).seen.items() if not k.startswith("flights/")}
    [flights] = tick(tmp_path, seen).days
    assert flights.datasets == ("flights",) and flights.landed == ("weather",)


def test_run_keys_are_stable_if_the_cursor_is_lost(one_day: Path, tmp_path: Path):
    copy_day(one_day, tmp_path)
    a = tick(tmp_path, {})
    b = tick(tmp_path, {})
    assert [r.run_key for r in a.days] == [r.run_key for r in b.days]


def test_out_of_range_and_badly_named_files_are_skipped_once(tmp_path: Path):
    touch(tmp_path, "flights/2012-12-31.csv")
    touch(tmp_path, "flights/2014-01-01.csv")
    touch(tmp_path, "weather/2013-02-30.csv")
    touch(tmp_path, "weather/today.csv")
    touch(tmp_path, "reference/gates.csv")
    touch(tmp_path, "flights/.2013-01-01.csv.abc.tmp")  # an in-flight write
    result = tick(tmp_path, {})
    assert result.days == [] and result.references is None
    text = "\n".join(result.skipped)
    assert "flights/2012-12-31.csv: 2012-12-31 is outside the partition range" in text
    assert "flights/2014-01-01.csv: 2014-01-01 is outside the partition range" in text
    assert "weather/2013-02-30.csv: '2013-02-30' is not a calendar date" in text
    assert "weather/today.csv: file name must be YYYY-MM-DD.csv" in text
    assert "unknown reference file 'gates.csv'" in text
    assert len(result.skipped) == 5
    assert tick(tmp_path, result.seen).skipped == []


def test_landing_path_rejects_unknown_dataset(tmp_path: Path):
    with pytest.raises(ValueError, match="unknown dataset"):
        landing.landing_path(tmp_path, "boats", date(2013, 1, 1))


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"", "file is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary content"),
        (b"PK\x03\x04\xff\xfe\xfa\xfb garbage", "not UTF-8"),
        (b'year,month\n"2013,1\n', "not a parseable CSV"),
    ],
)
def test_landing_file_that_is_not_csv(tmp_path: Path, payload: bytes, expected: str):
    path = tmp_path / "2013-01-05.csv"
    path.write_bytes(payload)
    with pytest.raises(LandingFileError, match=expected) as info:
        read_csv(path)
    assert str(path) in str(info.value)


@pytest.fixture
def landing_day(one_day: Path, tmp_path: Path) -> Path:
    """A real flights landing file (2013-01-01), as the replay delivers it."""
    copy_day(one_day, tmp_path)
    return tmp_path / "flights" / "2013-01-01.csv"


def test_a_gzipped_delivery_is_named_as_gzip(landing_day: Path):
    landing_day.write_bytes(gzip.compress(landing_day.read_bytes()))
    with pytest.raises(LandingFileError) as info:
        read_csv(landing_day)
    assert str(info.value) == (
        f"{landing_day}: not a CSV file (gzip-compressed data; deliver the uncompressed CSV)"
    )


def test_a_utf8_error_names_the_byte_and_its_line(landing_day: Path):
    good = landing_day.read_bytes()
    offset = good.index(b"\n", 5000) + 3  # inside a row, a Latin-1 "é"
    landing_day.write_bytes(good[:offset] + b"\xe9" + good[offset:])
    line = good[:offset].count(b"\n") + 1
    with pytest.raises(LandingFileError) as info:
        read_csv(landing_day)
    assert str(info.value) == (
        f"{landing_day}: not a CSV file (not UTF-8 text: invalid continuation byte 0xe9 "
        f"at byte offset {offset}, line {line})"
    )


# -- completeness: a day's files wait for the manifest that lists them ---------------------

DELIVERED_AT = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


def delivered(root: Path, *rels: str) -> None:
    """Sets the arrival time of landing files to ``DELIVERED_AT``."""
    stamp = int(DELIVERED_AT.timestamp() * 1e9)
    for rel in rels:
        os.utime(root / rel, ns=(stamp, stamp))


def test_a_day_without_its_manifest_waits_and_says_for_how_long(one_day: Path, tmp_path: Path):
    copy_day(one_day, tmp_path)
    manifest.manifest_path(tmp_path, date(2013, 1, 1)).unlink()
    delivered(tmp_path, "flights/2013-01-01.csv", "weather/2013-01-01.csv")
    waiting = tick(tmp_path, {}, now=DELIVERED_AT + timedelta(minutes=12))
    assert waiting.days == [] and waiting.seen == {}
    assert waiting.waiting == [
        f"{name}/2013-01-01.csv: waiting for its manifest manifests/2013-01-01.json "
        "(arrived 12 min ago)"
        for name in ("flights", "weather")
    ]
    later = tick(tmp_path, waiting.seen, now=DELIVERED_AT + timedelta(hours=3, minutes=5))
    assert "(arrived 3 h 5 min ago)" in later.waiting[0]
    # Optional manifests: the day goes ahead as it is.
    assert [r.datasets for r in tick(tmp_path, {}, require=False).days] == [("flights", "weather")]

    manifest.write_manifest(tmp_path, date(2013, 1, 1))
    complete = tick(tmp_path, waiting.seen)
    assert [r.datasets for r in complete.days] == [("flights", "weather")]
    assert complete.waiting == [] and ",manifest=" in complete.days[0].run_key
    assert "manifests/2013-01-01.json" in complete.seen


def test_a_file_the_manifest_does_not_list_waits_for_one_that_does(one_day: Path, tmp_path: Path):
    copy_day(one_day, tmp_path)
    path = manifest.manifest_path(tmp_path, date(2013, 1, 1))
    both = path.read_text()
    data = json.loads(both)
    del data["files"]["weather/2013-01-01.csv"]
    path.write_text(json.dumps(data))
    delivered(tmp_path, "weather/2013-01-01.csv")
    first = tick(tmp_path, {}, now=DELIVERED_AT + timedelta(seconds=40))
    assert [r.datasets for r in first.days] == [("flights",)]
    assert first.waiting == [
        "weather/2013-01-01.csv: not listed in manifests/2013-01-01.json, waiting for a "
        "manifest that lists it (arrived 40 s ago)"
    ]
    # The upstream re-delivers the manifest listing both: the weather goes ahead.
    path.write_text(both)
    os.utime(path, ns=(1, 1))
    second = tick(tmp_path, first.seen)
    assert [r.datasets for r in second.days] == [("weather",)] and second.waiting == []
    # A manifest re-delivered alone (a corrected count) delivers its day again, as a whole.
    path.write_text(both + "\n")
    third = tick(tmp_path, second.seen)
    assert [r.datasets for r in third.days] == [("flights", "weather")]
    assert len({r.run_key for r in (*first.days, *second.days, *third.days)}) == 3


def test_a_listed_file_that_never_came_and_an_invalid_manifest_are_reported(
    one_day: Path, tmp_path: Path
):
    copy_day(one_day, tmp_path)
    (tmp_path / "weather" / "2013-01-01.csv").unlink()
    delivered(tmp_path, "manifests/2013-01-01.json")
    result = tick(tmp_path, {}, now=DELIVERED_AT + timedelta(minutes=30))
    assert [r.datasets for r in result.days] == [("flights",)]
    assert result.waiting == [
        "weather/2013-01-01.csv: listed in manifests/2013-01-01.json but not delivered "
        "(the manifest arrived 30 min ago)"
    ]
    manifest.manifest_path(tmp_path, date(2013, 1, 1)).write_text("{not json")
    broken = tick(tmp_path, {})
    assert broken.days == []
    [reason] = broken.waiting
    assert reason.startswith(
        "flights/2013-01-01.csv: waiting for a valid manifest (manifests/2013-01-01.json is "
        "not a valid manifest (JSONDecodeError: "
    )
