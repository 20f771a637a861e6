"""The data half of the graph on real slices: sensor -> ingestion -> features, and bad input.

Runs go through the same landing sensor and automation conditions the daemon evaluates
(``LocalDaemon``), on a throwaway Dagster instance and state folder.
"""

from __future__ import annotations

import gzip
import hashlib
import subprocess
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from mlops_assets import settings
from mlops_assets.definitions import build_defs
from mlops_assets.defs.automation import LANDING_SENSOR
from mlops_assets.lib.data_registry import DataRegistry
from mlops_assets.lib.landing import manifest_path
from mlops_assets.lib.replay import replay
from mlops_assets.local_daemon import LocalDaemon
from mlops_assets_tests.deliveries import redeliver
from mlops_assets_tests.faults import failure_text, refused_commits, staged_leftovers

DAY = "2013-01-01"
FIRST = date.fromisoformat(DAY)


class Pipeline:
    def __init__(self, state: Path, instance: dg.DagsterInstance):
        self.state = state
        self.where = settings.locations({settings.STATE_DIR_VAR: str(state)})
        self.instance = instance
        self.defs = build_defs({settings.STATE_DIR_VAR: str(state)})
        self.loop = LocalDaemon(self.defs, instance, state / "cursors.json")

    def lake(self, asset: str, partition: str | None = None) -> Path:
        name = f"{partition}.parquet" if partition else ".parquet"
        return self.where.lake / asset / name if partition else self.where.lake / f"{asset}.parquet"

    def digest(self, asset: str, partition: str) -> str:
        return hashlib.sha256(self.lake(asset, partition).read_bytes()).hexdigest()

    def materializations(self, asset: str, partition: str) -> list[Any]:
        records = self.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]),
            limit=100,
        ).records
        return [r.asset_materialization for r in records]

    def failed_checks(self, run_id: str) -> list[Any]:
        return [c for c in self.check_results(run_id) if not c.passed]

    def check_results(self, run_id: str) -> list[Any]:
        return [
            e.dagster_event.event_specific_data
            for e in self.instance.all_logs(run_id)
            if e.dagster_event and e.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"
        ]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    state = tmp_path_factory.mktemp("pipeline") / "state"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(settings.STATE_DIR_VAR, str(state))
        with dg.instance_for_test() as instance:
            pipe = Pipeline(state, instance)
            replay(pipe.where.landing, date(2013, 1, 1), 2)
            outcomes = pipe.loop.run_until_idle()
            assert all(o.success for o in outcomes), [o.error for o in outcomes]
            yield pipe


def test_days_flow_from_landing_to_features(pipeline: Pipeline):
    for day in ("2013-01-01", "2013-01-02"):
        for asset in ("raw_flights", "raw_weather", "flight_features"):
            assert pipeline.lake(asset, day).exists(), (asset, day)
    triggers = [(o.trigger, o.partition, tuple(o.assets)) for o in pipeline.loop.state.outcomes]
    assert ("landing", None, ("airlines", "airports", "planes")) in triggers
    # One run per complete day carries its features; automation does not request them again.
    assert ("landing", DAY, ("raw_flights", "raw_weather", "flight_features")) in triggers
    assert not [t for t in triggers if "flight_features" in t[2] and t[0] != "landing"]


def test_materializations_carry_rows_hashes_paths_and_versions(pipeline: Pipeline):
    raw = pipeline.materializations("raw_flights", DAY)[0]
    assert raw.metadata["dagster/row_count"].value == 842
    assert raw.metadata["landing_path"].value.endswith("landing/flights/2013-01-01.csv")
    assert raw.metadata["bytes"].value == pipeline.lake("raw_flights", DAY).stat().st_size
    assert raw.tags["dagster/data_version"] == raw.metadata["content_hash"].value

    feats = pipeline.materializations("flight_features", DAY)[0]
    meta = {k: v.value for k, v in feats.metadata.items()}
    assert meta["dagster/row_count"] == 842
    assert 0.0 < meta["delayed_share"] < 1.0
    registry = DataRegistry(pipeline.where.data_registry, str(pipeline.where.dvc_remote))
    assert registry.recorded_md5(meta["registry_path"], meta["registry_rev"]) == meta["dvc_md5"]
    # The registry version is the lake file, bit for bit.
    lake_md5 = hashlib.md5(pipeline.lake("flight_features", DAY).read_bytes()).hexdigest()
    assert meta["dvc_md5"] == lake_md5


def test_nothing_new_means_no_runs(pipeline: Pipeline):
    assert pipeline.loop.tick_landing() == []
    assert pipeline.loop.tick_automation() == []


def _bad_flights(pipeline: Pipeline, mutate) -> bytes:
    good = pd.read_csv(
        pipeline.where.landing / "flights" / "2013-01-02.csv", dtype=str, keep_default_na=False
    )
    good["day"] = "1"  # a plausible file for the day under test
    bad = mutate(good)
    return bad if isinstance(bad, bytes) else bad.to_csv(index=False).encode()


def _blank_date_parts(df: Any) -> Any:
    df.loc[3, "year"], df.loc[4, "month"], df.loc[5, "day"] = "", "", ""
    return df


def _latin1_byte(df: Any) -> bytes:
    text = df.to_csv(index=False).encode()
    return text[:5000] + b"\xe9" + text[5000:]


BAD_DELIVERIES = {
    "empty file": (lambda df: b"", "file is empty"),
    "not csv": (lambda df: b"\x89PNG\r\n\x1a\n\x00binary", "not a CSV file"),
    "gzip": (
        lambda df: gzip.compress(df.to_csv(index=False).encode()),
        "not a CSV file (gzip-compressed data; deliver the uncompressed CSV)",
    ),
    "not utf-8": (
        _latin1_byte,
        "(not UTF-8 text: invalid continuation byte 0xe9 at byte offset 5000, line ",
    ),
    "header only": (lambda df: df.iloc[0:0], "non_empty_day"),
    "missing column": (
        lambda df: df.drop(columns=["carrier"]),
        "carrier: column_in_dataframe",
    ),
    "blank date parts": (_blank_date_parts, "year: not_nullable"),
    "extra column": (
        lambda df: df.assign(gate="A1"),
        "gate: column_in_schema",
    ),
    "wrong type": (
        lambda df: df.assign(distance="far"),
        "distance: coerce_dtype('int64')",
    ),
    "out of range": (
        lambda df: df.assign(minute="75"),
        "minute: in_range(0, 59)",
    ),
    "duplicate keys": (
        lambda df: df.assign(flight="1"),
        "<table>: unique_key(year, month, day, carrier, flight, origin)",
    ),
    "a duplicate row": (
        lambda df: pd.concat([df, df.iloc[[7]]], ignore_index=True),
        "<table>: unique_key(year, month, day, carrier, flight, origin)",
    ),
    "unknown airport": (
        lambda df: df.assign(dest="QQQ"),
        "dest: known_airport",
    ),
    "unknown carrier": (
        lambda df: df.assign(carrier="Q9"),
        "carrier: known_carrier",
    ),
}
# The whole one-line error of these: only the bad rows, and nothing but the missing column.
ONE_LINE = {
    "missing column": "raw_flights: contract 'flights' failed: carrier: column_in_dataframe",
    "blank date parts": (
        "raw_flights: contract 'flights' failed: year: not_nullable; month: not_nullable; "
        "day: not_nullable at row(s) 4, 5, 6"
    ),
    "a duplicate row": (
        "raw_flights: contract 'flights' failed: <table>: unique_key(year, month, day, "
        "carrier, flight, origin) broken by (2013, 1, 1, B6, 125, JFK) at row(s) 8, 944"
    ),
}


@pytest.mark.parametrize("case", list(BAD_DELIVERIES))
def test_bad_redelivery_fails_clearly_and_loses_nothing(pipeline: Pipeline, case: str):
    mutate, expected = BAD_DELIVERIES[case]
    before_raw = pipeline.digest("raw_flights", DAY)
    before_features = pipeline.digest("flight_features", DAY)
    stored = len(pipeline.materializations("raw_flights", DAY))
    landing_file = redeliver(
        pipeline.where.landing, "flights", FIRST, _bad_flights(pipeline, mutate)
    )

    outcomes = pipeline.loop.tick_landing()
    assert [(o.partition, o.success) for o in outcomes] == [(DAY, False)]
    error = outcomes[0].error or ""
    assert expected in error
    if case in ONE_LINE:
        assert error == ONE_LINE[case]
    assert "\n" not in error and outcomes[0].stack is None  # one line; a deliberate failure
    # The failed contract is visible as a failed blocking check with the file, every broken
    # rule and the failure table.
    [check] = pipeline.failed_checks(outcomes[0].run_id)
    assert check.check_name == "contract" and not check.passed
    assert check.partition == DAY
    assert str(landing_file) in (check.description or "")
    assert expected in (check.description or "")
    # Nothing stored, nothing earlier overwritten, nothing downstream requested.
    assert pipeline.digest("raw_flights", DAY) == before_raw
    assert staged_leftovers(pipeline.where.lake / "raw_flights") == []
    assert len(pipeline.materializations("raw_flights", DAY)) == stored
    assert pipeline.loop.tick_automation() == []
    assert pipeline.digest("flight_features", DAY) == before_features


@pytest.mark.usefixtures("steps_mirrored")
def test_a_rejected_day_is_one_line_on_an_error_level_console(
    pipeline: Pipeline, capfd: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    # The local loop at ERROR: Dagster's step-failure record without the dg.Failure's stack.
    monkeypatch.setattr(pipeline.loop, "log_level", "ERROR")
    before = pipeline.digest("raw_flights", DAY)
    redeliver(pipeline.where.landing, "flights", FIRST, _bad_flights(pipeline, _blank_date_parts))
    capfd.readouterr()
    [outcome] = pipeline.loop.tick_landing()
    printed = capfd.readouterr().err
    assert not outcome.success and outcome.stack is None
    failures = [line for line in printed.splitlines() if "STEP_FAILURE" in line]
    assert len(failures) == 1, printed
    assert failures[0].endswith(
        "Execution of step \"raw_flights\" failed: contract 'flights' failed: "
        "year: not_nullable; month: not_nullable; day: not_nullable at row(s) 4, 5, 6 "
        "(details in the UI)"
    )
    assert "Stack Trace" not in printed and 'File "' not in printed, printed
    assert pipeline.digest("raw_flights", DAY) == before


def test_fixed_redelivery_recovers_the_day(pipeline: Pipeline):
    replay(pipeline.where.landing, date(2013, 1, 1), 1, include_reference=False)
    outcomes = pipeline.loop.tick_landing() + pipeline.loop.tick_automation()
    assert [(o.partition, o.assets, o.success) for o in outcomes] == [
        # The replay rewrote both files: one run through the features, nothing after it.
        (DAY, ["raw_flights", "raw_weather", "flight_features"], True),
    ]


def test_day_with_no_weather_blocks_features(pipeline: Pipeline):
    replay(pipeline.where.landing, date(2013, 12, 31), 1, include_reference=False)
    outcomes = {tuple(o.assets): o for o in pipeline.loop.tick_landing()}
    [day_run] = outcomes.values()
    assert not day_run.success
    assert "non_empty_day" in (day_run.error or "")
    [check] = pipeline.failed_checks(day_run.run_id)
    assert "weather/2013-12-31.csv" in (check.description or "")
    assert "flight_features" in day_run.assets  # its features were skipped inside the run
    assert pipeline.lake("raw_flights", "2013-12-31").exists()  # flights are fine
    assert not pipeline.lake("raw_weather", "2013-12-31").exists()
    assert pipeline.loop.tick_automation() == []
    assert not pipeline.lake("flight_features", "2013-12-31").exists()


def test_leakage_guard_blocks_before_anything_is_stored(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
):
    from mlops_assets.lib import features

    real = features.build_flight_features
    monkeypatch.setattr(
        features,
        "build_flight_features",
        lambda *a: real(*a).assign(dep_delay=1.0),
    )
    registry = DataRegistry(pipeline.where.data_registry, str(pipeline.where.dvc_remote))
    history = registry.history("flight_features/2013-01-02.parquet")
    before = pipeline.digest("flight_features", "2013-01-02")
    result = dg.materialize(
        list(pipeline.defs.assets or []),  # type: ignore[arg-type]
        selection=["flight_features"],
        partition_key="2013-01-02",
        instance=pipeline.instance,
        resources=pipeline.defs.resources,
        raise_on_error=False,
    )
    assert not result.success
    [check] = pipeline.check_results(result.run_id)
    assert check.check_name == "no_leakage" and not check.passed
    assert check.metadata["leaking_columns"].value == ["dep_delay"]
    assert pipeline.digest("flight_features", "2013-01-02") == before
    assert registry.history("flight_features/2013-01-02.parquet") == history


# -- the lake and the data registry agree on every failure ----------------------------------

CHANGED_DAY = "2013-01-02"


def _materialize_changed_day(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> Any:
    """flight_features of CHANGED_DAY with one flight less: new content for both stores."""
    from mlops_assets.lib import features

    real = features.build_flight_features
    monkeypatch.setattr(features, "build_flight_features", lambda *a: real(*a).iloc[:-1])
    return dg.materialize(
        list(pipeline.defs.assets or []),  # type: ignore[arg-type]
        selection=["flight_features"],
        partition_key=CHANGED_DAY,
        instance=pipeline.instance,
        resources=pipeline.defs.resources,
        raise_on_error=False,
    )


class Snapshot:
    """The day's lake file, registry history and materializations, to compare after a fault."""

    def __init__(self, pipeline: Pipeline):
        self.registry = DataRegistry(pipeline.where.data_registry, str(pipeline.where.dvc_remote))
        self.lake_digest = pipeline.digest("flight_features", CHANGED_DAY)
        self.history = self.registry.history(f"flight_features/{CHANGED_DAY}.parquet")
        self.materializations = len(pipeline.materializations("flight_features", CHANGED_DAY))
        latest = pipeline.materializations("flight_features", CHANGED_DAY)[0]
        self.metadata = {k: v.value for k, v in latest.metadata.items()}

    def assert_unchanged(self, pipeline: Pipeline) -> None:
        """Nothing lost, nothing half-written: both stores still hold the last materialization."""
        assert pipeline.digest("flight_features", CHANGED_DAY) == self.lake_digest
        assert staged_leftovers(pipeline.where.lake / "flight_features") == []
        stored = pipeline.materializations("flight_features", CHANGED_DAY)
        assert len(stored) == self.materializations
        path = str(self.metadata["registry_path"])
        # The registry's current version is the lake file of the last materialization.
        assert self.registry.recorded_md5(path, "HEAD") == self.metadata["dvc_md5"]
        lake_md5 = hashlib.md5(pipeline.lake("flight_features", CHANGED_DAY).read_bytes())
        assert lake_md5.hexdigest() == self.metadata["dvc_md5"]
        assert self.registry.read(path, str(self.metadata["registry_rev"])) == (
            pipeline.lake("flight_features", CHANGED_DAY).read_bytes()
        )


def test_a_registry_that_refuses_the_commit_leaves_the_lake_as_it_was(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
):
    before = Snapshot(pipeline)
    with refused_commits(pipeline.where.data_registry) as refusal:
        result = _materialize_changed_day(pipeline, monkeypatch)
    assert not result.success
    text = failure_text(result)
    assert f"could not version flight_features/{CHANGED_DAY}.parquet" in text, text
    assert refusal in text
    before.assert_unchanged(pipeline)
    assert before.registry.history(f"flight_features/{CHANGED_DAY}.parquet") == before.history


def test_a_lake_write_failing_after_the_commit_withdraws_the_version(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
):
    from mlops_assets.lib import storage

    before = Snapshot(pipeline)

    def refused(staged: Any, target: Any) -> None:
        raise PermissionError(13, "Permission denied", str(target))

    monkeypatch.setattr(storage, "promote", refused)
    result = _materialize_changed_day(pipeline, monkeypatch)
    assert not result.success
    text = failure_text(result)
    assert f"cannot write flight_features partition {CHANGED_DAY} to the lake at" in text, text
    assert "PermissionError" in text
    assert "the data registry still records the previous version" in text
    before.assert_unchanged(pipeline)
    # The short-lived version stays in the history, taken back by the commit after it.
    withdrawal, orphan, *earlier = before.registry.history(f"flight_features/{CHANGED_DAY}.parquet")
    assert earlier == before.history
    message = subprocess.run(
        ["git", "-C", str(before.registry.root), "log", "-1", "--format=%s", withdrawal],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert message.startswith(f"Withdraw flight_features/{CHANGED_DAY}.parquet at {orphan[:10]}")


def test_the_day_recovers_once_the_fault_is_gone(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
):
    result = _materialize_changed_day(pipeline, monkeypatch)
    assert result.success
    meta = {
        k: v.value
        for k, v in pipeline.materializations("flight_features", CHANGED_DAY)[0].metadata.items()
    }
    registry = DataRegistry(pipeline.where.data_registry, str(pipeline.where.dvc_remote))
    lake_bytes = pipeline.lake("flight_features", CHANGED_DAY).read_bytes()
    assert hashlib.md5(lake_bytes).hexdigest() == meta["dvc_md5"]
    assert registry.read(meta["registry_path"], meta["registry_rev"]) == lake_bytes
    assert registry.history(meta["registry_path"])[0] == meta["registry_rev"]
    assert staged_leftovers(pipeline.where.lake / "flight_features") == []


@pytest.mark.usefixtures("steps_mirrored")
def test_a_real_defect_blocks_its_day_in_one_line(pipeline: Pipeline, capfd: pytest.CaptureFixture):
    # On 2013-02-12 at 03:00 the EWR weather reports a wind speed of 1,048 mph.
    replay(pipeline.where.landing, date(2013, 2, 12), 1, include_reference=False)
    capfd.readouterr()
    [outcome] = pipeline.loop.tick_landing()
    assert outcome.failure_report() == (
        "2013-02-12 blocked: raw_weather: contract 'weather' failed: "
        "wind_speed: in_range(0, 200) broken by 1048.36058 at row(s) 4 (details in the UI)"
    )
    assert outcome.stack is None
    printed = "".join(capfd.readouterr())
    assert "Traceback" not in printed and "Stack Trace" not in printed, printed
    # The details stay in the UI: the failed check with the file and the failure table.
    [check] = pipeline.failed_checks(outcome.run_id)
    assert check.partition == "2013-02-12"
    assert "weather/2013-02-12.csv" in (check.description or "")
    assert "1048.36058" in check.metadata["failure_cases"].value
    assert pipeline.loop.tick_automation() == []  # no features for the blocked day


# -- complete deliveries: the manifest and the weather coverage ----------------------------


def test_a_file_cut_at_a_line_boundary_is_blocked_by_its_manifest(pipeline: Pipeline):
    # The day is as its manifest describes it (test_fixed_redelivery_recovers_the_day).
    before_raw, before_features = (
        pipeline.digest(asset, DAY) for asset in ("raw_flights", "flight_features")
    )
    stored = len(pipeline.materializations("raw_flights", DAY))
    landing_file = pipeline.where.landing / "flights" / f"{DAY}.csv"
    good = landing_file.read_bytes()
    cut = b"".join(good.splitlines(keepends=True)[:501])  # the header and 500 of 842 rows
    landing_file.write_bytes(cut)  # valid CSV, valid rows: only the manifest can tell

    [outcome] = pipeline.loop.tick_landing()
    assert not outcome.success and outcome.stack is None
    assert outcome.error == (
        f"raw_flights: {landing_file}: does not match its manifest manifests/{DAY}.json: "
        f"500 rows delivered, 842 in the manifest; {len(cut):,} bytes delivered, "
        f"{len(good):,} in the manifest; sha256 {hashlib.sha256(cut).hexdigest()[:12]} "
        f"delivered, {hashlib.sha256(good).hexdigest()[:12]} in the manifest"
    )
    [check] = pipeline.failed_checks(outcome.run_id)
    assert check.check_name == "contract" and not check.passed
    assert check.metadata["rules_broken"].value == ["matches_manifest"]
    # The good day before it is untouched and nothing downstream runs.
    assert pipeline.digest("raw_flights", DAY) == before_raw
    assert len(pipeline.materializations("raw_flights", DAY)) == stored
    assert pipeline.loop.tick_automation() == []
    assert pipeline.digest("flight_features", DAY) == before_features


def test_a_day_whose_manifest_never_came_waits_visibly(
    pipeline: Pipeline, capfd: pytest.CaptureFixture
):
    day = date(2013, 1, 3)
    replay(pipeline.where.landing, day, 1, include_reference=False)
    manifest_path(pipeline.where.landing, day).unlink()
    capfd.readouterr()
    assert pipeline.loop.tick_landing() == []
    assert "landing file waits: flights/2013-01-03.csv: waiting for its manifest " in (
        capfd.readouterr().err
    )
    [sensor] = [s for s in pipeline.defs.sensors or () if s.name == LANDING_SENSOR]
    with dg.build_sensor_context(
        instance=pipeline.instance,
        cursor=pipeline.loop.state.landing_cursor,
        resources=pipeline.defs.resources,
        definitions=pipeline.defs,
    ) as context:
        tick = sensor.evaluate_tick(context)
    assert not tick.run_requests
    assert str(tick.skip_message).startswith(
        "no new landing files; 2 incomplete: flights/2013-01-03.csv: waiting for its manifest "
        "manifests/2013-01-03.json (arrived "
    )
    for asset in ("raw_flights", "raw_weather"):
        assert day.isoformat() not in pipeline.instance.get_materialized_partitions(
            dg.AssetKey(asset)
        )


def test_weather_missing_an_hour_blocks_the_features(pipeline: Pipeline):
    day = "2013-01-02"
    # Below the limit the coverage is recorded: 2013-01-01 lacks five hours upstream.
    covered = {
        k: v.value for k, v in pipeline.materializations("flight_features", DAY)[0].metadata.items()
    }
    assert covered["flights_without_weather"] == 39
    assert covered["flights_without_weather_share"] == 0.0463
    before = pipeline.digest("flight_features", day)
    weather = pd.read_csv(
        pipeline.where.landing / "weather" / f"{day}.csv", dtype=str, keep_default_na=False
    )
    flights = pd.read_parquet(pipeline.lake("raw_flights", day))
    busiest = flights["time_hour"].value_counts().index[0]  # the hour lost at all airports
    lost = int((flights["time_hour"] == busiest).sum())
    kept = weather[pd.to_datetime(weather["time_hour"], utc=True) != busiest]
    assert len(kept) == len(weather) - 3
    redeliver(
        pipeline.where.landing,
        "weather",
        date.fromisoformat(day),
        kept.to_csv(index=False).encode(),
    )
    # The weather file is complete as delivered and valid: only the coverage tells. The
    # re-delivery reads the day's landed flights again and carries the features in its run.
    [outcome] = pipeline.loop.tick_landing()
    assert outcome.assets == ["raw_flights", "raw_weather", "flight_features"]
    assert not outcome.success and outcome.stack is None
    assert outcome.error == (
        f"flight_features: flight_features {day}: {lost} of {len(flights)} flights "
        f"({lost / len(flights):.1%}) have no weather at their origin in their departure hour, "
        f"above the 5% allowed; hours without weather (flights): "
        + (outcome.error or "").split("(flights): ", 1)[1]
    )
    assert f"{busiest:%Y-%m-%d %H}:00 UTC" in (outcome.error or "")
    [check] = pipeline.failed_checks(outcome.run_id)
    assert check.check_name == "weather_coverage" and not check.passed
    assert check.metadata["flights_without_weather"].value == lost
    assert pipeline.digest("flight_features", day) == before
    assert pipeline.loop.tick_automation() == []
