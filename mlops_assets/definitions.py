"""The code location: every asset, check, job, sensor and resource of the environment.

Loading this module imports Dagster and the wiring only; pandas, pandera, DVC and the other
heavy libraries are imported inside the functions that use them.
"""

import dagster as dg

from mlops_assets.defs import automation, features, ingestion
from mlops_assets.defs.partitions import daily_partitions
from mlops_assets.resources import build_resources

daily_data_job = dg.define_asset_job(
    "daily_data",
    selection="group:ingestion or group:features",
    partitions_def=daily_partitions,
    description="One day through ingestion and features (what the sensors do for a new day).",
)
reference_job = dg.define_asset_job("reference_data", selection="group:reference")

defs = dg.Definitions(
    assets=[
        ingestion.planes,
        ingestion.airports,
        ingestion.airlines,
        ingestion.raw_flights,
        ingestion.raw_weather,
        features.flight_features,
    ],
    jobs=[daily_data_job, reference_job],
    sensors=[automation.landing_sensor, automation.automation_sensor],
    resources=build_resources(),
    executor=dg.in_process_executor,
)
