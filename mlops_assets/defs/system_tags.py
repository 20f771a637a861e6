"""The tags Dagster itself puts on runs, which the project reads.

Dagster exports no constants for them; a unit test compares them with Dagster's own.
"""

from collections.abc import Mapping

from mlops_assets.lib.audit import ACTOR_TAG

SENSOR_NAME_TAG = "dagster/sensor_name"  # the sensor that requested a run
RUN_KEY_TAG = "dagster/run_key"  # its de-duplication key: a later daemon skips it
SCHEDULE_NAME_TAG = "dagster/schedule_name"  # the schedule that requested a run
BACKFILL_ID_TAG = "dagster/backfill"  # the backfill a run belongs to
AUTOMATION_CONDITION_TAG = "dagster/from_automation_condition"  # requested by a condition


def run_actor(tags: Mapping[str, str], run_id: str) -> str:
    """Who launched a run: its actor tag, else the sensor that asked, else nobody known.

    Dagster's open-source UI has no users: a launch from it names its actor only through the
    ``mlops/actor`` tag added in the launchpad (docs/governance.md).
    """
    declared = tags.get(ACTOR_TAG, "").strip()
    if declared:
        return declared
    if tags.get(SENSOR_NAME_TAG):
        return f"sensor {tags[SENSOR_NAME_TAG]}"
    return f"unattributed (run {run_id[:8]}, no {ACTOR_TAG} tag)"


def automated_by(tags: Mapping[str, str]) -> str | None:
    """What requested a run without a person: a sensor, schedule, backfill or condition.

    None for a launch by hand (the UI's launchpad, the command line, the API).
    """
    for tag, what in (
        (SENSOR_NAME_TAG, "sensor"),
        (SCHEDULE_NAME_TAG, "schedule"),
        (BACKFILL_ID_TAG, "backfill"),
        (AUTOMATION_CONDITION_TAG, "automation condition"),
    ):
        if tags.get(tag):
            return f"{what} {tags[tag]}"
    return None
