"""Shared fixtures: an isolated state folder and small slices of the real demo data."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from mlops_assets import settings
from mlops_assets.lib import source

settings.telemetry_off()


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh state folder for the test, selected through MLOPS_STATE_DIR."""
    state = tmp_path / "state"
    monkeypatch.setenv(settings.STATE_DIR_VAR, str(state))
    monkeypatch.delenv(settings.ENV_VAR, raising=False)
    return state


def _read(name: str) -> pd.DataFrame:
    return pd.read_csv(
        io.BytesIO(source.read_source_csv(name)),
        dtype=str,
        keep_default_na=False,
        na_values=["", "NA"],
    )


@pytest.fixture(scope="session")
def tables() -> dict[str, pd.DataFrame]:
    """The source tables as strings, read once per session."""
    return {name: _read(name) for name in ("flights", "weather", "planes", "airports", "airlines")}


def day_slice(frame: pd.DataFrame, day: date) -> pd.DataFrame:
    """Rows of one day, as the landing file would hold them."""
    mask = (
        (frame["year"] == str(day.year))
        & (frame["month"] == str(day.month))
        & (frame["day"] == str(day.day))
    )
    return frame[mask].reset_index(drop=True)


def validated_day(tables: dict[str, pd.DataFrame], day: date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The day's flights and weather, validated against their contracts like the pipeline."""
    from mlops_assets.lib import contracts

    carriers, airports = tables["airlines"]["carrier"], tables["airports"]["faa"]
    flights = contracts.validate(
        day_slice(tables["flights"], day),
        contracts.flights_schema(carriers, airports, day),
        source="flights",
    )
    weather = contracts.validate(
        day_slice(tables["weather"], day), contracts.weather_schema(day), source="weather"
    )
    return flights, weather


@pytest.fixture(scope="session")
def deployed_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A deployed state (champion, Bento, a predicted day), built once for the session.

    Never used directly: modules open their own copy with ``deployed.deployed_copy``.
    """
    from mlops_assets_tests.deployed import build_deployed_state

    return build_deployed_state(tmp_path_factory.mktemp("deployed") / "state")


STRAY_STATE = ("mlflow.db", "mlruns", "mlartifacts", ".dvc")


@pytest.fixture(scope="session", autouse=True)
def nothing_written_outside_the_state_folder() -> Iterator[None]:
    """Fails the session if a tool fell back to a default location in the project root."""
    root = settings.project_root()
    before = {name for name in STRAY_STATE if (root / name).exists()}
    yield
    stray = {name for name in STRAY_STATE if (root / name).exists()} - before
    assert not stray, f"written outside the state folder: {sorted(stray)} in {root}"
