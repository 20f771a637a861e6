"""The code location: every asset, check, job, sensor and resource of the environment.

Loading this module imports Dagster and the wiring only; pandas, pandera, DVC and the other
heavy libraries are imported inside the functions that use them.
"""

from collections.abc import Mapping

import dagster as dg

from mlops_assets.defs import automation, deployment, features, ingestion, training
from mlops_assets.resources import build_resources

daily_data_job = dg.define_asset_job(
    "daily_data",
    # Selection objects, not strings: parsing a string loads the ANTLR parser (~0.15 s).
    selection=dg.AssetSelection.groups("ingestion", "features"),
    description="One day through ingestion and features (what the sensors do for a new day).",
)
training_job = dg.define_asset_job(
    "training",
    selection=dg.AssetSelection.groups("training"),
    description="Training set, candidate, champion gate and model card.",
)
deployment_job = dg.define_asset_job(
    "deployment",
    selection=dg.AssetSelection.assets(deployment.bento),
    description="Build and export the champion's Bento.",
)
reference_job = dg.define_asset_job(
    "reference_data", selection=dg.AssetSelection.groups("reference")
)

ASSETS = [
    ingestion.planes,
    ingestion.airports,
    ingestion.airlines,
    ingestion.raw_flights,
    ingestion.raw_weather,
    features.flight_features,
    training.training_set,
    training.candidate_model,
    training.champion_model,
    training.model_card,
    deployment.bento,
    deployment.batch_predictions,
]


def build_defs(env: Mapping[str, str] | None = None) -> dg.Definitions:
    """The definitions with resources for ``env`` (the process environment by default)."""
    return dg.Definitions(
        assets=ASSETS,
        jobs=[daily_data_job, reference_job, training_job, deployment_job],
        sensors=[automation.landing_sensor, automation.automation_sensor],
        resources=build_resources(env),
        # Steps of a run share one process: every extra process re-imports the code location.
        executor=dg.in_process_executor,
    )


defs = build_defs()
