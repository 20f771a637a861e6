"""Drive the sensors and declarative automation in-process, exactly as the daemon would.

The main job uses this to push replayed days through the graph without a running daemon:
each tick evaluates the same sensor and automation conditions the daemon evaluates and
executes the runs they request on the same Dagster instance, tagged like the daemon's runs
(sensor name and run key), so a daemon started later on that instance skips them.
"""

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from mlops_assets.defs.automation import LANDING_SENSOR
from mlops_assets.defs.jobs import AUTOMATION_TRIGGER, TRIGGER_TAG
from mlops_assets.defs.loggers import json_lines_logger, text_console_logger
from mlops_assets.defs.system_tags import RUN_KEY_TAG, SENSOR_NAME_TAG


@dataclass
class RunOutcome:
    """One executed run.

    Attributes:
        error: One line on why the run failed: the failed step and its ``dg.Failure``
            description (a broken contract, a refused gate), or the type and message of an
            unexpected exception.
        stack: The unexpected exception with its stack trace; ``None`` for a deliberate
            ``dg.Failure``, whose details (metadata, failed checks) are in the UI.
    """

    trigger: str
    assets: list[str]
    partition: str | None
    success: bool
    run_id: str
    error: str | None = None
    stack: str | None = None

    def failure_report(self) -> str:
        """What a console says about a failed run: one line, plus the stack of a bug."""
        day = f"{self.partition} " if self.partition else ""
        if self.stack is None:
            return f"{day}blocked: {self.error} (details in the UI)"
        return f"{day}FAILED: {self.error} (run {self.run_id})\n{self.stack}"


@dataclass
class LoopState:
    """Cursors of the in-process ticks, persisted next to the Dagster home."""

    landing_cursor: str | None = None
    automation_cursor: Any = None
    sensor_cursors: dict[str, str | None] = field(default_factory=dict)
    outcomes: list[RunOutcome] = field(default_factory=list)


def _failure(result: dg.ExecuteInProcessResult) -> tuple[str, str | None]:
    """One line on why a run failed, and the stack trace if it was not a ``dg.Failure``.

    A step that raised ``dg.Failure`` stopped on purpose and its description says why; any
    other exception is a bug, reported with its stack.
    """
    lines, stacks = [], []
    for event in result.get_step_failure_events():
        data = event.step_failure_data
        expected = data.user_failure_data.description if data.user_failure_data else None
        if expected:
            lines.append(f"{event.step_key}: {_first_line(expected)}")
        elif data.error is not None:
            lines.append(f"{event.step_key}: {_first_line(_user_error(data.error).message)}")
            stacks.append(data.error.to_string())
        else:
            lines.append(f"{event.step_key}: failed")
    if not lines:  # the run failed outside any step (resources, configuration)
        failure = result.get_run_failure_event()
        error = failure.job_failure_data.error if failure else None
        lines.append(f"run: {_first_line(_user_error(error).message)}" if error else "run failed")
        stacks += [error.to_string()] if error else []
    return "; ".join(lines), "\n".join(stacks) or None


def _user_error(error: Any) -> Any:
    # Dagster wraps what the code raised ("Error occurred while executing op ..."); the
    # wrapped exception is the news.
    while error.cause is not None and error.cls_name.startswith("Dagster"):
        error = error.cause
    return error


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


class LocalDaemon:
    """Ticks the landing sensor and the automation conditions and runs what they request."""

    def __init__(
        self,
        defs: dg.Definitions,
        instance: dg.DagsterInstance,
        cursor_file: Path,
        log_level: str = "CRITICAL",
        extra_sensors: tuple[str, ...] = (),
    ):
        """Sets up the ticks; ``log_level`` is the console threshold of the runs' own logs.

        As under the daemon, a run's logs go to the instance (the UI) and a failure comes
        back in the ``RunOutcome``: the console stays quiet unless asked for a lower level.
        At ERROR or below, a deliberate failure (``dg.Failure``) prints one line, a bug its
        stack (with the code location's console loggers, ``defs/loggers.py``). A sensor's
        log reaches the console from WARNING up (or from ``log_level`` if lower).
        """
        self.defs = defs
        self.log_level = log_level
        self.extra_sensors = extra_sensors
        self.instance = instance
        self.cursor_file = cursor_file
        self.state = LoopState()
        if cursor_file.exists():
            saved = json.loads(cursor_file.read_text())
            self.state.landing_cursor = saved.get("landing")
            if saved.get("automation"):
                self.state.automation_cursor = dg.deserialize_value(saved["automation"])
            self.state.sensor_cursors = dict(saved.get("sensors") or {})
        self._resources = dict(defs.resources or {})
        self._job = defs.resolve_implicit_global_asset_job_def()
        # A deliberate failure comes back in the RunOutcome as one line (details in the UI);
        # its stack on the console says nothing more. A bug keeps its stack.
        self._one_line_failures = self._job.loggers.get("console") in (
            text_console_logger,
            json_lines_logger,
        )

    def _execute(
        self,
        trigger: str,
        keys: list[dg.AssetKey],
        partition: str | None,
        tags: dict[str, str],
        run_config: dict[str, Any] | None = None,
    ) -> RunOutcome:
        # The code location's asset job with an asset selection, as the daemon launches runs:
        # the run records its selection, which automation reads (a parent updated by a run
        # that also executed the child does not request the child again).
        result = self._job.execute_in_process(
            asset_selection=keys,
            partition_key=partition,
            instance=self.instance,
            tags=tags,
            raise_on_error=False,
            run_config={
                **(run_config or {}),
                "loggers": {"console": {"config": self._console_config()}},
            },
        )
        error, stack = (None, None) if result.success else _failure(result)
        outcome = RunOutcome(
            trigger,
            [k.to_user_string() for k in keys],
            partition,
            result.success,
            result.run_id,
            error,
            stack,
        )
        self.state.outcomes.append(outcome)
        return outcome

    def _console_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"log_level": self.log_level}
        if self._one_line_failures:
            config["expected_failure_stacks"] = False
        return config

    def _save(self) -> None:
        automation = self.state.automation_cursor
        self.cursor_file.parent.mkdir(parents=True, exist_ok=True)
        self.cursor_file.write_text(
            json.dumps(
                {
                    "landing": self.state.landing_cursor,
                    "automation": None if automation is None else dg.serialize_value(automation),
                    "sensors": self.state.sensor_cursors,
                }
            )
        )

    def tick_landing(self) -> list[RunOutcome]:
        """One landing-sensor tick; executes the requested runs in order."""
        return self.tick_sensor(LANDING_SENSOR, "landing")

    def tick_sensor(self, name: str, trigger: str | None = None) -> list[RunOutcome]:
        """One tick of the sensor ``name``; executes its run requests in order.

        Like the daemon, a request whose run key this sensor already used is skipped, and a
        request for a job runs that job's asset selection with the request's run config.
        """
        sensor = self._sensor(name)
        cursor = (
            self.state.landing_cursor
            if name == LANDING_SENSOR
            else self.state.sensor_cursors.get(name)
        )
        # A context manager: resources with nested resources (the lake IO manager holds the
        # data registry) are opened and closed in its scope.
        with dg.build_sensor_context(
            instance=self.instance,
            cursor=cursor,
            resources=self._resources,
            definitions=self.defs,
            sensor_name=name,
        ) as context:
            # The daemon keeps a sensor's log with its tick, for the UI; here there is no tick,
            # so the console gets its warnings only, unless a lower level was asked for.
            context.log.setLevel(min(logging.getLevelName(self.log_level.upper()), logging.WARNING))
            data = sensor.evaluate_tick(context)
        if name == LANDING_SENSOR:
            self.state.landing_cursor = data.cursor
        else:
            self.state.sensor_cursors[name] = data.cursor
        self._save()
        outcomes = []
        for request in data.run_requests or []:
            tags = {**request.tags, SENSOR_NAME_TAG: name}
            if request.run_key:
                if self._run_key_used(name, request.run_key):
                    continue
                tags[RUN_KEY_TAG] = request.run_key
            keys = list(request.asset_selection or []) or self._job_assets(
                request.job_name or sensor.job_name
            )
            outcomes.append(
                self._execute(
                    trigger or name,
                    keys,
                    request.partition_key,
                    tags,
                    dict(request.run_config or {}),
                )
            )
        return outcomes

    def _sensor(self, name: str) -> dg.SensorDefinition:
        # The sensor as defined, not get_sensor_def's resource-bound copy (which warns that
        # it will stop binding): the tick gets the resources from its context.
        for sensor in self.defs.sensors or ():
            if sensor.name == name:
                return sensor
        raise ValueError(f"no sensor named {name!r} in the definitions")

    def _run_key_used(self, sensor: str, run_key: str) -> bool:
        runs = self.instance.get_run_records(
            filters=dg.RunsFilter(tags={SENSOR_NAME_TAG: sensor, RUN_KEY_TAG: run_key}), limit=1
        )
        return bool(runs)

    def _job_assets(self, job_name: str | None) -> list[dg.AssetKey]:
        if not job_name:
            raise ValueError("a sensor request without assets needs a job")
        job = self.defs.resolve_job_def(job_name)
        return sorted(job.asset_layer.selected_asset_keys, key=lambda k: k.to_user_string())

    def tick_automation(self) -> list[RunOutcome]:
        """One evaluation of every automation condition; one run per requested partition."""
        result = dg.evaluate_automation_conditions(
            defs=self.defs, instance=self.instance, cursor=self.state.automation_cursor
        )
        self.state.automation_cursor = result.cursor
        self._save()
        by_partition: dict[str | None, list[dg.AssetKey]] = {}
        for key in sorted(self.defs.resolve_all_asset_keys(), key=lambda k: k.to_user_string()):
            if result.get_num_requested(key):
                for partition in sorted(result.get_requested_partitions(key), key=str):
                    by_partition.setdefault(partition, []).append(key)
        # Unpartitioned assets first (a new champion's drift reference before the days that
        # compare against it), then the days in date order: the order of an asset backfill.
        return [
            self._execute("automation", keys, partition, {TRIGGER_TAG: AUTOMATION_TRIGGER})
            for partition, keys in sorted(
                by_partition.items(), key=lambda kv: (kv[0] is not None, str(kv[0]))
            )
        ]

    def run_until_idle(self, max_ticks: int = 50) -> list[RunOutcome]:
        """Alternates landing and automation ticks until neither requests anything.

        A round whose only runs were landed days is the last: the automation and the other
        sensors ticked after those runs and found nothing, and a next landing tick would
        find nothing either (a new delivery aside, which is the next round's).
        """
        if self.state.automation_cursor is None:
            self.tick_automation()  # the first evaluation only establishes the cursor
        done: list[RunOutcome] = []
        for _ in range(max_ticks):
            landed = self.tick_landing()
            ran = self.tick_automation()
            for name in self.extra_sensors:
                ran += self.tick_sensor(name)
            done += landed + ran
            if not ran and all(o.partition is not None for o in landed):
                break
        return done
