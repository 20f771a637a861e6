"""The tags Dagster itself puts on runs, which the project reads.

Dagster exports no constants for them; a unit test compares them with Dagster's own.
"""

from collections.abc import Mapping

from mlops_assets.lib.audit import ACTOR_TAG

SENSOR_NAME_TAG = "dagster/sensor_name"  # the sensor that requested a run
RUN_KEY_TAG = "dagster/run_key"  # its de-duplication key: a later daemon skips it


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
