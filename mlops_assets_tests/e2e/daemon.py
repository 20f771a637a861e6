"""A real ``mlops-assets dev`` (webserver + daemon) for end-to-end tests, seen through GraphQL.

``DagsterDev`` is the package's ``DevServer`` (started the way a developer does, on a private
state folder and a free port of 127.0.0.1; the ``servers`` fixture starts and stops it) plus
the queries the tests read it with: runs, materializations with their metadata, check
executions, sensor ticks, and a diagnostic report for failures. Nothing here launches a run.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from datetime import date
from typing import Any

from mlops_assets.dev_server import LOCATION, REPOSITORY, DevServer

LANDING_SENSOR = "landing_sensor"
AUTOMATION_SENSOR = "automation_sensor"
RETRAIN_SENSOR = "retrain_sensor"
TRIAL_SENSOR = "trial_sensor"
SENSORS = (LANDING_SENSOR, AUTOMATION_SENSOR, RETRAIN_SENSOR, TRIAL_SENSOR)
SENSOR_TAG = "dagster/sensor_name"
PARTITION_TAG = "dagster/partition"
RUN_KEY_TAG = "dagster/run_key"

# The run worker's first engine event (dagster's code server).
WORKER_STARTED = re.compile(r"Started process for run \(pid: (\d+)\)")

BROKEN = ("FAILURE", "CANCELED", "CANCELING")
FINISHED = ("SUCCESS", *BROKEN)

# Every metadata value type the project writes, as a fragment (``...Entry``).
METADATA_FRAGMENT = """
fragment Entry on MetadataEntry {
  label
  ... on TextMetadataEntry { text }
  ... on FloatMetadataEntry { floatValue }
  ... on IntMetadataEntry { intRepr }
  ... on BoolMetadataEntry { boolValue }
  ... on PathMetadataEntry { path }
  ... on UrlMetadataEntry { url }
  ... on MarkdownMetadataEntry { mdStr }
  ... on JsonMetadataEntry { jsonString }
}
"""


def metadata_dict(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """GraphQL metadata entries as ``{label: value}`` (ints as int, text as str, ...)."""
    values: dict[str, Any] = {}
    for entry in entries:
        value: Any = None
        for field in ("text", "floatValue", "boolValue", "path", "url", "mdStr", "jsonString"):
            if field in entry:
                value = entry[field]
                break
        else:
            if "intRepr" in entry:
                value = int(entry["intRepr"])
        values[entry["label"]] = value
    return values


class DagsterDev(DevServer):
    """A running ``mlops-assets dev`` observed through GraphQL: runs, events, checks, ticks."""

    # -- observations -----------------------------------------------------------------------

    def materializations(
        self, asset: str, partitions: list[str] | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Materialization events of ``asset`` (newest first): partition, runId, timestamp
        (ms, as a string) and ``metadata`` as a dict."""
        data = self.graphql(
            """
            query Materializations($key: AssetKeyInput!, $partitions: [String!], $limit: Int) {
              assetOrError(assetKey: $key) {
                __typename
                ... on Asset {
                  assetMaterializations(partitions: $partitions, limit: $limit) {
                    partition runId timestamp metadataEntries { ...Entry }
                  }
                }
              }
            }
            """
            + METADATA_FRAGMENT,
            {"key": {"path": [asset]}, "partitions": partitions, "limit": limit},
        )
        result = data["assetOrError"]
        if result["__typename"] == "AssetNotFoundError":
            return []
        assert result["__typename"] == "Asset", result
        return [
            {**event, "metadata": metadata_dict(event.pop("metadataEntries"))}
            for event in result["assetMaterializations"]
        ]

    def materialized(self, asset: str, day: date) -> list[dict[str, Any]]:
        return self.materializations(asset, [day.isoformat()])

    def observations(self, asset: str, limit: int = 10) -> list[dict[str, Any]]:
        """Observation events of ``asset`` (newest first), like ``materializations``."""
        data = self.graphql(
            """
            query Observations($key: AssetKeyInput!, $limit: Int) {
              assetOrError(assetKey: $key) {
                __typename
                ... on Asset {
                  assetObservations(limit: $limit) {
                    runId timestamp metadataEntries { ...Entry }
                  }
                }
              }
            }
            """
            + METADATA_FRAGMENT,
            {"key": {"path": [asset]}, "limit": limit},
        )
        result = data["assetOrError"]
        if result["__typename"] == "AssetNotFoundError":
            return []
        return [
            {**event, "metadata": metadata_dict(event.pop("metadataEntries"))}
            for event in result["assetObservations"]
        ]

    def check_executions(self, asset: str, check: str, partition: str) -> list[dict[str, Any]]:
        """Executions of an asset check for one partition (newest first), with evaluation."""
        data = self.graphql(
            """
            query Checks($key: AssetKeyInput!, $check: String!, $partition: String) {
              assetCheckExecutions(
                assetKey: $key, checkName: $check, partition: $partition, limit: 10
              ) {
                runId status partition
                evaluation { success severity description partition }
              }
            }
            """,
            {"key": {"path": [asset]}, "check": check, "partition": partition},
        )
        return list(data["assetCheckExecutions"])

    def runs(self, **tags: str) -> list[dict[str, Any]]:
        """Runs (newest first) carrying all ``tags``; each with its tags as a dict."""
        data = self.graphql(
            """
            query Runs($filter: RunsFilter) {
              runsOrError(filter: $filter) {
                __typename
                ... on Runs {
                  results {
                    runId status creationTime startTime endTime
                    tags { key value }
                    assetSelection { path }
                  }
                }
                ... on PythonError { message }
              }
            }
            """,
            {"filter": {"tags": [{"key": k, "value": v} for k, v in tags.items()]}},
        )
        result = data["runsOrError"]
        assert result["__typename"] == "Runs", result
        return [
            {
                **run,
                "tags": {t["key"]: t["value"] for t in run["tags"]},
                "assets": sorted("/".join(a["path"]) for a in run["assetSelection"] or []),
            }
            for run in result["results"]
        ]

    def run(self, run_id: str) -> dict[str, Any]:
        matches = [r for r in self.runs() if r["runId"] == run_id]
        assert len(matches) == 1, f"run {run_id} not found"
        return matches[0]

    def runs_since(self, timestamp: float) -> list[dict[str, Any]]:
        """Runs created after ``timestamp`` (seconds since the epoch)."""
        return [r for r in self.runs() if r["creationTime"] > timestamp]

    def _selector(self, sensor: str) -> dict[str, str]:
        return {
            "repositoryLocationName": LOCATION,
            "repositoryName": REPOSITORY,
            "sensorName": sensor,
        }

    def sensor_ticks(self, sensor: str, limit: int = 10) -> list[dict[str, Any]]:
        """The sensor's last ticks (newest first): status, timestamp, runIds, skipReason,
        error."""
        data = self.graphql(
            """
            query Ticks($selector: SensorSelector!, $limit: Int) {
              sensorOrError(sensorSelector: $selector) {
                __typename
                ... on Sensor {
                  sensorState {
                    status
                    ticks(limit: $limit) {
                      tickId status timestamp runIds skipReason error { message }
                    }
                  }
                }
                ... on PythonError { message }
              }
            }
            """,
            {"selector": self._selector(sensor), "limit": limit},
        )
        result = data["sensorOrError"]
        assert result["__typename"] == "Sensor", result
        return list(result["sensorState"]["ticks"])

    def ticks_after(self, sensor: str, timestamp: float, limit: int = 50) -> list[dict[str, Any]]:
        """Finished ticks of ``sensor`` that started after ``timestamp`` (newest first)."""
        return [
            t
            for t in self.sensor_ticks(sensor, limit=limit)
            if t["timestamp"] > timestamp and t["status"] != "STARTED"
        ]

    def set_sensor_cursor(self, sensor: str, cursor: str | None) -> None:
        """Sets (None: clears) a sensor's cursor, as the UI's "edit cursor" does."""
        data = self.graphql(
            """
            mutation Cursor($selector: SensorSelector!, $cursor: String) {
              setSensorCursor(sensorSelector: $selector, cursor: $cursor) {
                __typename
                ... on Sensor {
                  sensorState { typeSpecificData { ... on SensorData { lastCursor } } }
                }
                ... on PythonError { message }
              }
            }
            """,
            {"selector": self._selector(sensor), "cursor": cursor},
        )
        result = data["setSensorCursor"]
        assert result["__typename"] == "Sensor", result
        assert result["sensorState"]["typeSpecificData"]["lastCursor"] == cursor, result

    def backfills(self) -> list[dict[str, Any]]:
        data = self.graphql(
            """
            {
              partitionBackfillsOrError(limit: 20) {
                ... on PartitionBackfills {
                  results { id status numPartitions assetSelection { path } }
                }
              }
            }
            """
        )
        return list(data["partitionBackfillsOrError"].get("results", []))

    def messages(self, run_id: str) -> list[str]:
        """The messages of a run's events, oldest first (engine events, failures, logs); a
        step failure is followed by its error and the error's causes."""
        data = self.graphql(
            """
            fragment Error on PythonError { message causes { message } }
            query Logs($runId: ID!) {
              logsForRun(runId: $runId, limit: 5000) {
                __typename
                ... on EventConnection {
                  events {
                    ... on MessageEvent { message }
                    ... on ExecutionStepFailureEvent { error { ...Error } }
                  }
                }
              }
            }
            """,
            {"runId": run_id},
        )
        result = data["logsForRun"]
        assert result["__typename"] == "EventConnection", result
        texts = []
        for event in result["events"]:
            error = event.get("error") or {}
            found = [event.get("message"), error.get("message")]
            found += [cause["message"] for cause in error.get("causes") or []]
            texts += [text for text in found if text]
        return texts

    def worker_pid(self, run_id: str) -> int | None:
        """The process id the run's worker recorded when it started, if it has."""
        for message in self.messages(run_id):
            found = WORKER_STARTED.search(message)
            if found:
                return int(found.group(1))
        return None

    def launch(
        self, job: str, run_config: dict[str, Any], tags: dict[str, str] | None = None
    ) -> str:
        """Launches a run of ``job`` as the UI's launchpad does; returns its run id."""
        data = self.graphql(
            """
            mutation Launch($params: ExecutionParams!) {
              launchRun(executionParams: $params) {
                __typename
                ... on LaunchRunSuccess { run { runId } }
                ... on PythonError { message }
                ... on RunConfigValidationInvalid { errors { message } }
              }
            }
            """,
            {
                "params": {
                    "selector": {
                        "repositoryLocationName": LOCATION,
                        "repositoryName": REPOSITORY,
                        "jobName": job,
                    },
                    "runConfigData": run_config,
                    "executionMetadata": {
                        "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]
                    },
                }
            },
        )
        result = data["launchRun"]
        assert result["__typename"] == "LaunchRunSuccess", result
        return str(result["run"]["runId"])

    # -- failure reports --------------------------------------------------------------------

    def diagnostics(self, runs: int = 25) -> str:
        """Recent runs, backfills, sensor ticks and the server log tail, for failure
        messages."""
        parts = []
        try:
            for run in self.runs()[:runs]:
                tags = run["tags"]
                parts.append(
                    f"  run {run['runId'][:8]} {run['status']:<9} "
                    f"sensor={tags.get(SENSOR_TAG)} partition={tags.get(PARTITION_TAG)} "
                    f"backfill={tags.get('dagster/backfill')} assets={','.join(run['assets'])} "
                    f"reason={tags.get('mlops/retrain_reason')}"
                )
            for backfill in self.backfills():
                parts.append(
                    f"  backfill {backfill['id']} {backfill['status']} "
                    f"partitions={backfill['numPartitions']}"
                )
            for sensor in SENSORS:
                for tick in self.sensor_ticks(sensor, limit=4):
                    error = (tick.get("error") or {}).get("message", "")
                    parts.append(
                        f"  tick {sensor} {tick['status']} runs={tick['runIds']} "
                        f"skip={tick.get('skipReason')!r} {error[:500]}"
                    )
        except Exception as error:  # diagnostics must never hide the real failure
            parts.append(f"  (could not query the server: {error!r})")
        return (
            "runs, backfills and ticks:\n"
            + "\n".join(parts)
            + f"\nserver log tail ({self.log_path}):\n{self.log_tail()}"
        )

    @contextlib.contextmanager
    def report_on_failure(self) -> Iterator[None]:
        """Prints diagnostics (shown by pytest with the failure) when the block raises."""
        try:
            yield
        except BaseException:
            print(self.diagnostics())
            raise
