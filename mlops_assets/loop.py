"""Drive the sensors and declarative automation in-process, exactly as the daemon would.

The main job uses this to push replayed days through the graph without a running daemon:
each tick evaluates the same sensor and automation conditions the daemon evaluates and
executes the runs they request on the same Dagster instance, tagged like the daemon's runs
(sensor name and run key), so a daemon started later on that instance skips them.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG
from dagster_shared.serdes import deserialize_value, serialize_value

from mlops_assets.defs.automation import LANDING_SENSOR, landing_sensor


@dataclass
class RunOutcome:
    """One executed run."""

    trigger: str
    assets: list[str]
    partition: str | None
    success: bool
    run_id: str
    error: str | None = None


@dataclass
class LoopState:
    """Cursors of the in-process ticks, persisted next to the Dagster home."""

    landing_cursor: str | None = None
    automation_cursor: Any = None
    outcomes: list[RunOutcome] = field(default_factory=list)


class LocalLoop:
    """Ticks the landing sensor and the automation conditions and runs what they request."""

    def __init__(
        self,
        defs: dg.Definitions,
        instance: dg.DagsterInstance,
        cursor_file: Path,
        log_level: str = "WARNING",
    ):
        self.defs = defs
        self.log_level = log_level
        self.instance = instance
        self.cursor_file = cursor_file
        self.state = LoopState()
        if cursor_file.exists():
            saved = json.loads(cursor_file.read_text())
            self.state.landing_cursor = saved.get("landing")
            if saved.get("automation"):
                self.state.automation_cursor = deserialize_value(saved["automation"])
        self._assets = list(defs.assets or [])
        self._resources = dict(defs.resources or {})

    def _execute(
        self, trigger: str, keys: list[dg.AssetKey], partition: str | None, tags: dict[str, str]
    ) -> RunOutcome:
        result = dg.materialize(
            self._assets,  # type: ignore[arg-type]
            selection=keys,
            partition_key=partition,
            instance=self.instance,
            resources=self._resources,
            tags=tags,
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": self.log_level}}}},
        )
        error = None
        if not result.success:
            failures = [e for e in result.all_events if e.is_step_failure]
            error = (
                "; ".join(
                    (e.step_failure_data.user_failure_data.description or "")
                    if e.step_failure_data and e.step_failure_data.user_failure_data
                    else (e.message or "")
                    for e in failures
                )
                or "run failed"
            )
        outcome = RunOutcome(
            trigger,
            [k.to_user_string() for k in keys],
            partition,
            result.success,
            result.run_id,
            error,
        )
        self.state.outcomes.append(outcome)
        return outcome

    def _save(self) -> None:
        automation = self.state.automation_cursor
        self.cursor_file.parent.mkdir(parents=True, exist_ok=True)
        self.cursor_file.write_text(
            json.dumps(
                {
                    "landing": self.state.landing_cursor,
                    "automation": serialize_value(automation) if automation is not None else None,
                }
            )
        )

    def tick_landing(self) -> list[RunOutcome]:
        """One landing-sensor tick; executes the requested runs in order."""
        context = dg.build_sensor_context(
            instance=self.instance,
            cursor=self.state.landing_cursor,
            resources=self._resources,
            definitions=self.defs,
            sensor_name=LANDING_SENSOR,
        )
        data = landing_sensor.evaluate_tick(context)
        self.state.landing_cursor = data.cursor
        self._save()
        outcomes = []
        for request in data.run_requests or []:
            tags = {**request.tags, SENSOR_NAME_TAG: LANDING_SENSOR}
            if request.run_key:
                tags[RUN_KEY_TAG] = request.run_key
            outcomes.append(
                self._execute(
                    "landing", list(request.asset_selection or []), request.partition_key, tags
                )
            )
        return outcomes

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
        return [
            self._execute("automation", keys, partition, {"mlops/trigger": "automation"})
            for partition, keys in sorted(by_partition.items(), key=lambda kv: str(kv[0]))
        ]

    def run_until_idle(self, max_ticks: int = 50) -> list[RunOutcome]:
        """Alternates landing and automation ticks until neither requests anything."""
        if self.state.automation_cursor is None:
            self.tick_automation()  # the first evaluation only establishes the cursor
        done: list[RunOutcome] = []
        for _ in range(max_ticks):
            ran = self.tick_landing() + self.tick_automation()
            if not ran:
                break
            done += ran
        return done
