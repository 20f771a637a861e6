"""End to end: a real ``dagster dev`` (webserver + daemon) turns landing files into partitions.

The server is started the way a developer starts it (``mlops-assets dev``) on a private state
folder and a free port on 127.0.0.1, and is observed only through its GraphQL API. Nothing is
launched by hand: the landing sensor and the automation sensor must do all the work.

Runtime is dominated by the two 15 s sensor intervals; expect roughly two minutes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import requests

from mlops_assets.lib.source import replay
from mlops_assets_tests.e2e.processes import (
    HOST,
    default_signals,
    free_port,
    live_group_members,
    stop_process_group,
    wait_for,
)

pytestmark = pytest.mark.e2e

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LOCATION = "mlops_assets"
REPOSITORY = "__repository__"
LANDING_SENSOR = "landing_sensor"
AUTOMATION_SENSOR = "automation_sensor"
DAY1, DAY2 = date(2013, 1, 1), date(2013, 1, 2)
RAW_ASSETS = ("raw_flights", "raw_weather")
FEATURES = "flight_features"
REFERENCE_ASSETS = ("planes", "airports", "airlines")

STARTUP_TIMEOUT = 120.0  # webserver answering and the code location loaded
FIRST_DAY_TIMEOUT = 300.0  # references, then raw day, then features (three sensor hops)
NEW_DAY_TIMEOUT = 180.0  # raw day, then features (two sensor hops)
TICK_TIMEOUT = 60.0  # one more landing-sensor tick (15 s interval)
STOP_TIMEOUT = 20.0  # SIGTERM grace period before SIGKILL

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class DagsterDev:
    """A running ``mlops-assets dev`` and a GraphQL client for it."""

    process: subprocess.Popen[bytes]
    port: int
    state: Path
    log_path: Path
    http: requests.Session

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    # -- plumbing ---------------------------------------------------------------------------

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as error:
            return f"(no server log: {error})"
        return "\n".join(ANSI_ESCAPE.sub("", text).splitlines()[-lines:])

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise AssertionError(
                f"mlops-assets dev exited with code {code}; log tail:\n{self.log_tail()}"
            )

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        self.check_alive()
        response = self.http.post(
            f"{self.base_url}/graphql",
            json={"query": query, "variables": variables or {}},
            timeout=30,
        )
        response.raise_for_status()
        payload = response.json()
        if payload.get("errors"):
            raise AssertionError(f"GraphQL errors: {json.dumps(payload['errors'], indent=1)}")
        return dict(payload["data"])

    # -- observations -----------------------------------------------------------------------

    def materializations(self, asset: str, partitions: list[str]) -> list[dict[str, Any]]:
        """Every materialization event of ``asset`` for ``partitions`` (partition, runId)."""
        data = self.graphql(
            """
            query Materializations($key: AssetKeyInput!, $partitions: [String!]) {
              assetOrError(assetKey: $key) {
                __typename
                ... on Asset {
                  assetMaterializations(partitions: $partitions) { partition runId timestamp }
                }
              }
            }
            """,
            {"key": {"path": [asset]}, "partitions": partitions},
        )
        result = data["assetOrError"]
        if result["__typename"] == "AssetNotFoundError":
            return []
        assert result["__typename"] == "Asset", result
        return list(result["assetMaterializations"])

    def materialized(self, asset: str, day: date) -> list[dict[str, Any]]:
        return self.materializations(asset, [day.isoformat()])

    def runs(self, **tags: str) -> list[dict[str, Any]]:
        """Runs (newest first) carrying all ``tags``; each with its tags as a dict."""
        data = self.graphql(
            """
            query Runs($filter: RunsFilter) {
              runsOrError(filter: $filter) {
                __typename
                ... on Runs { results { runId status creationTime tags { key value } } }
                ... on PythonError { message }
              }
            }
            """,
            {"filter": {"tags": [{"key": k, "value": v} for k, v in tags.items()]}},
        )
        result = data["runsOrError"]
        assert result["__typename"] == "Runs", result
        return [
            {**run, "tags": {t["key"]: t["value"] for t in run["tags"]}}
            for run in result["results"]
        ]

    def run(self, run_id: str) -> dict[str, Any]:
        matches = [r for r in self.runs() if r["runId"] == run_id]
        assert len(matches) == 1, f"run {run_id} not found"
        return matches[0]

    def sensor_ticks(self, sensor: str, limit: int = 10) -> list[dict[str, Any]]:
        data = self.graphql(
            """
            query Ticks($selector: SensorSelector!, $limit: Int) {
              sensorOrError(sensorSelector: $selector) {
                __typename
                ... on Sensor {
                  sensorState { status ticks(limit: $limit) { tickId status timestamp runIds } }
                }
                ... on PythonError { message }
              }
            }
            """,
            {
                "selector": {
                    "repositoryLocationName": LOCATION,
                    "repositoryName": REPOSITORY,
                    "sensorName": sensor,
                },
                "limit": limit,
            },
        )
        result = data["sensorOrError"]
        assert result["__typename"] == "Sensor", result
        return list(result["sensorState"]["ticks"])

    def diagnostics(self) -> str:
        """Runs, last sensor ticks and the server log tail, for failure messages."""
        parts = []
        try:
            for run in self.runs():
                tags = run["tags"]
                parts.append(
                    f"  run {run['runId'][:8]} {run['status']:<9} "
                    f"sensor={tags.get('dagster/sensor_name')} "
                    f"partition={tags.get('dagster/partition')} files={tags.get('mlops/files')}"
                )
            for sensor in (LANDING_SENSOR, AUTOMATION_SENSOR):
                for tick in self.sensor_ticks(sensor, limit=3):
                    parts.append(f"  tick {sensor} {tick['status']} runs={tick['runIds']}")
        except Exception as error:  # diagnostics must never hide the real failure
            parts.append(f"  (could not query the server: {error!r})")
        return "runs and ticks:\n" + "\n".join(parts) + f"\nserver log tail:\n{self.log_tail()}"

    @contextlib.contextmanager
    def report_on_failure(self) -> Iterator[None]:
        """Prints diagnostics (shown by pytest with the failure) when the block raises."""
        try:
            yield
        except BaseException:
            print(self.diagnostics())
            raise


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """A private state folder whose landing zone already holds day 1 and the references."""
    folder = tmp_path / "state"
    replay(folder / "landing", DAY1, 1)
    return folder


@pytest.fixture
def dagster_dev(tmp_path: Path, state: Path) -> Iterator[DagsterDev]:
    """``mlops-assets dev`` on ``state``, bound to 127.0.0.1 on a free port, ready to query."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update(
        MLOPS_STATE_DIR=str(state),
        MLOPS_ENV="local",
        DAGSTER_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="true",
        DVC_NO_ANALYTICS="1",
        PYTHONUNBUFFERED="1",
    )
    script = Path(sys.executable).with_name("mlops-assets")
    entry = [str(script)] if script.exists() else [sys.executable, "-m", "mlops_assets.cli"]
    command = [*entry, "dev", "--host", HOST, "--port", str(port)]
    log_path = tmp_path / "dagster_dev.log"
    http = requests.Session()
    http.trust_env = False  # no proxies: every request goes to 127.0.0.1 only
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=default_signals,
        )
    server = DagsterDev(process, port, state, log_path, http)
    try:
        wait_for(
            lambda: _ready(server),
            STARTUP_TIMEOUT,
            interval=1.0,
            what=f"dagster dev to answer on {server.base_url} with {LOCATION} loaded",
            diagnose=server.log_tail,
        )
        yield server
    finally:
        http.close()
        escalations = stop_process_group(process, STOP_TIMEOUT)
        if any(step.startswith("SIGKILL") for step in escalations):
            warnings.warn(f"dagster dev needed SIGKILL to stop: {escalations}", stacklevel=1)
        leftovers = live_group_members(process.pid)
        assert not leftovers, f"dagster dev left processes behind: {leftovers}"


def _ready(server: DagsterDev) -> bool:
    """Whether the webserver answers and the code location has loaded (fails on load error)."""
    server.check_alive()
    try:
        info = server.http.get(f"{server.base_url}/server_info", timeout=5)
        if info.status_code != 200:
            return False
        data = server.graphql(
            """
            {
              workspaceOrError {
                __typename
                ... on Workspace {
                  locationEntries {
                    name
                    loadStatus
                    locationOrLoadError { __typename ... on PythonError { message stack } }
                  }
                }
              }
            }
            """
        )
    except requests.RequestException:
        return False
    entries = data["workspaceOrError"].get("locationEntries", [])
    for entry in entries:
        error = entry["locationOrLoadError"]
        if error and error["__typename"] == "PythonError":
            raise AssertionError(
                f"code location {entry['name']} failed to load: {error['message']}\n"
                + "".join(error["stack"])
            )
    return any(
        e["name"] == LOCATION
        and e["loadStatus"] == "LOADED"
        and (e["locationOrLoadError"] or {}).get("__typename") == "RepositoryLocation"
        for e in entries
    )


def _materialized_by(server: DagsterDev, asset: str, day: date) -> dict[str, Any]:
    """The single run that materialized ``asset`` for ``day``."""
    events = server.materialized(asset, day)
    assert len(events) == 1, f"{asset}[{day}]: expected one materialization, got {events}"
    return server.run(events[0]["runId"])


@pytest.mark.timeout(900)
def _assert_day_flowed_by_sensors(server: DagsterDev, day: date, timeout: float) -> None:
    """Waits for the day's raw and feature partitions and checks which sensor ran them."""
    key = day.isoformat()
    wait_for(
        lambda: all(server.materialized(a, day) for a in (*RAW_ASSETS, FEATURES)),
        timeout,
        what=f"raw_flights, raw_weather and flight_features for {key}",
    )
    for asset in RAW_ASSETS:
        run = _materialized_by(server, asset, day)
        assert run["tags"].get("dagster/sensor_name") == LANDING_SENSOR, (asset, run)
        assert run["tags"].get("dagster/partition") == key, (asset, run)
        assert run["tags"].get("mlops/trigger") == "landing", (asset, run)
    run = _materialized_by(server, FEATURES, day)
    assert run["tags"].get("dagster/sensor_name") == AUTOMATION_SENSOR, run
    assert run["tags"].get("dagster/partition") == key, run


def test_new_landing_day_is_materialized_by_the_daemon(
    dagster_dev: DagsterDev, state: Path
) -> None:
    server = dagster_dev
    landing = state / "landing"
    day1 = DAY1.isoformat()
    with server.report_on_failure():
        # Day 1 and the references were waiting when the server started: the landing sensor
        # materializes the references, then the day's raw files; automation follows with
        # the features.
        _assert_day_flowed_by_sensors(server, DAY1, FIRST_DAY_TIMEOUT)

        # A new day arrives while the server runs: no reference files this time.
        replay(landing, DAY2, 1, include_reference=False)
        _assert_day_flowed_by_sensors(server, DAY2, NEW_DAY_TIMEOUT)

        # At least one landing tick after the last landing run: unchanged files must not be
        # requested again (the run keys and the cursor both carry file fingerprints).
        last_landing_run = max(
            r["creationTime"] for r in server.runs(**{"dagster/sensor_name": LANDING_SENSOR})
        )
        wait_for(
            lambda: any(
                t["timestamp"] > last_landing_run and t["status"] in ("SKIPPED", "SUCCESS")
                for t in server.sensor_ticks(LANDING_SENSOR)
            ),
            TICK_TIMEOUT,
            what="a landing-sensor tick after the last landing run",
        )
        landing_runs = server.runs(**{"dagster/sensor_name": LANDING_SENSOR})
        day1_runs = [r for r in landing_runs if r["tags"].get("dagster/partition") == day1]
        assert len(day1_runs) == 1, f"duplicate landing runs for {day1}: {day1_runs}"
        assert day1_runs[0]["tags"].get("mlops/files") == "flights,weather", day1_runs
        reference_runs = [r for r in landing_runs if "dagster/partition" not in r["tags"]]
        assert len(reference_runs) == 1, f"expected one reference run: {reference_runs}"
        assert reference_runs[0]["tags"].get("mlops/files") == ",".join(sorted(REFERENCE_ASSETS)), (
            reference_runs
        )
        for asset in (*RAW_ASSETS, FEATURES):
            for day in (DAY1, DAY2):
                events = server.materialized(asset, day)
                assert len(events) == 1, f"{asset}[{day}] materialized {len(events)} times"
        broken = [r for r in server.runs() if r["status"] in ("FAILURE", "CANCELED", "CANCELING")]
        assert not broken, f"runs did not succeed: {broken}"
