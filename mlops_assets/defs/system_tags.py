"""The tags Dagster itself puts on runs, which the project reads.

Dagster exports no constants for them; a unit test compares them with Dagster's own.
"""

SENSOR_NAME_TAG = "dagster/sensor_name"  # the sensor that requested a run
RUN_KEY_TAG = "dagster/run_key"  # its de-duplication key: a later daemon skips it
