"""Shared fixtures: an isolated state folder and small slices of the real demo data."""

from __future__ import annotations

import fcntl
import io
import os
import shutil
from collections.abc import Callable, Iterator
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

    Never used directly: modules open their own copy with ``deployed.deployed_copy``. Under
    pytest-xdist the workers share one build (``shared_build``), as they share the machine.
    """
    from mlops_assets_tests.deployed import build_deployed_state

    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return build_deployed_state(tmp_path_factory.mktemp("deployed") / "state")
    # Every worker's base temp is a folder of the run's own: the parent is the run's.
    run_dir = tmp_path_factory.getbasetemp().parent
    return shared_build(run_dir / "deployed", build_deployed_state)


def shared_build(folder: Path, build: Callable[[Path], Path]) -> Path:
    """``build(folder / "state")`` once for all the workers of a run: the first one to take
    the lock builds, the others wait for it and read the same folder (never written again).

    A build that failed leaves no marker: the next worker to take the lock starts it afresh.
    """
    folder.mkdir(parents=True, exist_ok=True)
    state, done = folder / "state", folder / "built"
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            shutil.rmtree(state, ignore_errors=True)
            build(state)
            done.touch()
    return state


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist, the slow modules first: end-to-end, then the asset tests.

    Workers take whole modules (``--dist loadfile``, module fixtures start once), so a long
    module sent last would run alone at the end while the other worker idles. A run without
    workers keeps the collection order.
    """
    if not hasattr(config, "workerinput"):
        return
    e2e = {item.path for item in items if item.get_closest_marker("e2e")}

    def rank(item: pytest.Item) -> int:
        if item.path in e2e:
            return 0
        return 1 if item.path.parent.name == "assets" else 2

    items.sort(key=rank)  # stable: each module keeps its order


@pytest.fixture
def steps_mirrored(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every line a step writes reaches the console before the step's capture ends.

    Dagster mirrors a step's captured output to the console with ``tail -F``, which polls
    once a second and is stopped when the step ends: on a busy machine a step's last lines
    (its failure) can be lost from the console, never from the event log (dagster#23336).
    """
    monkeypatch.setenv("DAGSTER_COMPUTE_LOG_TAIL_WAIT_AFTER_FINISH", "1.5")


STRAY_STATE = ("mlflow.db", "mlruns", "mlartifacts", ".dvc")


@pytest.fixture(scope="session", autouse=True)
def nothing_written_outside_the_state_folder() -> Iterator[None]:
    """Fails the session if a tool fell back to a default location in the project root."""
    root = settings.project_root()
    before = {name for name in STRAY_STATE if (root / name).exists()}
    yield
    stray = {name for name in STRAY_STATE if (root / name).exists()} - before
    assert not stray, f"written outside the state folder: {sorted(stray)} in {root}"
