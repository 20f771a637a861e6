"""A state folder with a trained champion, its Bento and a day of batch predictions.

Built through the real graph (replay -> sensors/automation -> training job -> automation),
shared by the deployment asset tests, the serving end-to-end tests and the serving benchmark.
A test session builds it once (``build_deployed_state``, the ``deployed_state`` fixture) and
each module works on its own copy (``deployed_copy``): the state folder is relocatable, so a
copy is a deployment of its own, and the graph is not run again for every module.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from mlops_assets import settings
from mlops_assets.definitions import build_defs
from mlops_assets.lib.features import WEATHER_FIELDS
from mlops_assets.lib.replay import replay
from mlops_assets.lib.scoring import REQUEST_FLIGHT_FIELDS
from mlops_assets.local_daemon import LocalDaemon
from mlops_assets.serving.auth import ACCESS_VARIABLES
from mlops_assets_tests.deliveries import land_day

TRAIN_START = date(2013, 1, 1)
TRAIN_DAYS = 21
AS_OF = "2013-01-21"
# The first day after the training window: predicted by the champion once it lands.
PREDICT_DAY = date(2013, 1, 22)
TRAINING = dg.AssetSelection.groups("training")


def run_config(margin: float = 0.005, **training: Any) -> dict[str, Any]:
    """Training run config for a three-week window (small model, lowered floors)."""
    return {
        "ops": {
            "training_set": {"config": {"days": 21, "validation_days": 5, "as_of": AS_OF}},
            "candidate_model": {"config": {"n_estimators": 60, **training}},
            # A three-week window cannot reach the production floors.
            "model_gate": {"config": {"margin": margin, "min_roc_auc": 0.5, "min_pr_auc": 0.1}},
        }
    }


def latest_metadata(
    instance: dg.DagsterInstance, asset: str, partition: str | None = None
) -> dict[str, Any]:
    """Metadata of the latest materialization of ``asset`` (or of one partition).

    Raises:
        LookupError: when it has not been materialized.
    """
    key = dg.AssetKey(asset)
    if partition is None:
        event = instance.get_latest_materialization_event(key)
    else:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
        ).records
        event = records[0].event_log_entry if records else None
    if event is None or event.asset_materialization is None:
        raise LookupError(f"{asset} {partition or ''} is not materialized")
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


@dataclass
class Deployment:
    """Handles on a deployed state."""

    state: Path
    instance: dg.DagsterInstance
    defs: dg.Definitions
    loop: LocalDaemon

    @property
    def resources(self) -> dict[str, Any]:
        """The local resources of the state."""
        return dict(self.defs.resources or {})

    @property
    def bentoml_home(self) -> Path:
        """BENTOML_HOME of the state."""
        return settings.locations({settings.STATE_DIR_VAR: str(self.state)}).bentoml_home

    def train(
        self, config: dict[str, Any] | None = None, tags: Mapping[str, str] | None = None
    ) -> dg.ExecuteInProcessResult:
        """Runs the training job (as the UI or a sensor would), then the automation."""
        # Like a launch of the training job: the run records its asset selection.
        result = self.defs.resolve_job_def("training").execute_in_process(
            asset_selection=list(TRAINING.resolve(self.defs.resolve_asset_graph())),
            instance=self.instance,
            run_config=config or run_config(),
            tags=tags,
            raise_on_error=False,
        )
        self.loop.run_until_idle()
        return result

    def land(self, day: date, days: int = 1) -> None:
        """Lands new days and lets sensors and automation process them."""
        replay(self.state / "landing", day, days, include_reference=False)
        self.loop.run_until_idle()

    def land_edited(self, day: date, edit: Callable[[pd.DataFrame], None]) -> None:
        """Lands a real day after ``edit`` changed its flights file, then runs the loop."""
        land_day(self.state / "landing", day, edit)
        self.loop.run_until_idle()

    def metadata(self, asset: str, partition: str | None = None) -> dict[str, Any]:
        """Metadata of the latest materialization of ``asset`` (or of one partition)."""
        return latest_metadata(self.instance, asset, partition)

    def count(self, asset: str) -> int:
        """Number of materializations of ``asset``."""
        key = dg.AssetKey(asset)
        return len(self.instance.fetch_materializations(key, limit=1000).records)


def shuffle_labels(flights: pd.DataFrame) -> None:
    """The day's arrival delays shuffled among its flights: the model is no better than chance."""
    import numpy as np

    rng = np.random.default_rng(7)
    order = rng.permutation(len(flights))
    for column in ("arr_delay", "arr_time"):
        flights[column] = flights[column].to_numpy()[order]
    # Keep the contract: a flight without a departure has no arrival either.
    no_departure = flights["dep_time"] == "NA"
    flights.loc[no_departure, ["arr_delay", "arr_time"]] = "NA"


def _plain(value: Any) -> Any:
    """A JSON value: None for missing (NaN, NA, NaT), ISO 8601 for timestamps."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value.item() if hasattr(value, "item") else value


def day_requests(deployment: Deployment, on: date = PREDICT_DAY) -> list[dict[str, Any]]:
    """One request per flight of the day ``on``: its scheduled fields and its origin's weather
    in the departure hour, as a caller knows them.

    The flights come from the landing file, validated against their contract: the lake holds
    the tail numbers as pseudonyms, a caller sends them as they are.
    """
    from mlops_assets.lib import contracts
    from mlops_assets.lib.landing import landing_path, read_csv

    where = settings.locations({settings.STATE_DIR_VAR: str(deployment.state)})
    lake = where.lake
    day = on.isoformat()
    schema = contracts.flights_schema(
        pd.read_parquet(lake / "airlines.parquet")["carrier"],
        pd.read_parquet(lake / "airports.parquet")["faa"],
        on,
    )
    path = landing_path(where.landing, "flights", on)
    flights = contracts.validate(read_csv(path), schema, source=str(path))
    weather = pd.read_parquet(lake / "raw_weather" / f"{day}.parquet")
    assert str(flights["time_hour"].dtype) == "datetime64[ns, UTC]", flights.dtypes
    hours = {(str(r["origin"]), r["time_hour"]): r for r in weather.to_dict("records")}
    assert len(hours) == len(weather), "weather must have one row per origin and hour"
    out = []
    for flight in flights.to_dict("records"):
        hour = hours.get((str(flight["origin"]), flight["time_hour"]), {})
        request = {name: _plain(flight[name]) for name in REQUEST_FLIGHT_FIELDS}
        request.update({name: _plain(hour.get(name)) for name in WEATHER_FIELDS})
        out.append(request)
    return out


@contextlib.contextmanager
def state_instance(state: Path) -> Iterator[dg.DagsterInstance]:
    """The Dagster instance of ``state``: ``<state>/dagster_home`` with the project's
    dagster.yaml (as ``prepare_dagster_home`` installs it), so a copy of the state carries
    its history."""
    home = settings.locations({settings.STATE_DIR_VAR: str(state)}).dagster_home
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(settings.project_root() / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance


def open_deployment(
    state: Path, instance: dg.DagsterInstance, env: Mapping[str, str] | None = None
) -> Deployment:
    """Handles on ``state`` (deployed or not): its resources, loop cursors and instance."""
    defs = build_defs({settings.STATE_DIR_VAR: str(state), **(env or {})})
    return Deployment(state, instance, defs, LocalDaemon(defs, instance, state / "cursors.json"))


def deploy(
    state: Path, instance: dg.DagsterInstance, env: Mapping[str, str] | None = None
) -> Deployment:
    """Replays three weeks, trains and promotes a champion, lets the Bento build, then
    lands ``PREDICT_DAY`` so the champion predicts it.

    The caller sets ``MLOPS_STATE_DIR`` to ``state`` for the duration (resources read it);
    ``env`` adds settings of the resources (e.g. ``MLOPS_PUSHGATEWAY_URL``).
    """
    deployment = open_deployment(state, instance, env)
    replay(state / "landing", TRAIN_START, TRAIN_DAYS)  # the reference tables too
    deployment.loop.run_until_idle()
    result = deployment.train()
    if not result.success:
        raise RuntimeError("training the first champion failed")
    deployment.land(PREDICT_DAY)
    return deployment


@contextlib.contextmanager
def _local_settings(state: Path) -> Iterator[None]:
    """``state`` as the state folder of the local flavour, without access settings, in the block."""
    import pytest

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(settings.STATE_DIR_VAR, str(state))
        mp.delenv(settings.ENV_VAR, raising=False)
        for variable in ACCESS_VARIABLES:
            mp.delenv(variable, raising=False)
        yield


def build_deployed_state(state: Path) -> Path:
    """``deploy`` into ``state`` on the state's own Dagster instance, closed when done."""
    # The automation evaluations log every asset at DEBUG: thousands of captured lines.
    dagster_logger = logging.getLogger("dagster")
    level = dagster_logger.level
    dagster_logger.setLevel(logging.WARNING)
    try:
        with _local_settings(state), state_instance(state) as instance:
            deploy(state, instance)
    finally:
        dagster_logger.setLevel(level)
    return state


@contextlib.contextmanager
def deployed_copy(
    template: Path, state: Path, env: Mapping[str, str] | None = None
) -> Iterator[Deployment]:
    """A copy of the deployed ``template`` at ``state``, opened as a deployment of its own.

    ``MLOPS_STATE_DIR`` points at the copy for the block (the resources re-point the copied
    stores on open); the template is never written. ``env`` adds settings of the resources.
    """
    shutil.copytree(template, state, symlinks=True)
    with _local_settings(state), state_instance(state) as instance:
        yield open_deployment(state, instance, env)
