"""The code location: every asset, check, job, sensor and resource of the environment.

Loading this module imports Dagster and the wiring only; pandas, pandera, DVC and the other
heavy libraries are imported inside the functions that use them (dagster_k8s too: only when
``MLOPS_K8S_STEP_PODS=true`` asks for the step-pod job).
"""

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import dagster as dg

from mlops_assets.defs import automation, deployment, features, ingestion, monitoring, training
from mlops_assets.resources import build_resources

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

daily_data_job = dg.define_asset_job(
    "daily_data",
    # Selection objects, not strings: parsing a string loads the ANTLR parser (~0.15 s).
    selection=dg.AssetSelection.groups("ingestion", "features"),
    description="One day through ingestion and features (what the sensors do for a new day).",
)
# Kubernetes settings of training pods, read by the K8sRunLauncher (deploy/helm) from the run
# tag `dagster-k8s/config`; every other run launcher ignores the tag. Training holds a window
# of feature days in memory and fits LightGBM on all cores, so it gets bigger pods than the
# other runs (which get the code server's resources, deploy/helm/values.yaml).
K8S_CONFIG_TAG = "dagster-k8s/config"
TRAINING_K8S_CONFIG: dict[str, Any] = {
    "container_config": {
        "resources": {
            "requests": {"cpu": "2", "memory": "4Gi"},
            "limits": {"cpu": "4", "memory": "8Gi"},
        }
    }
}
# `true` adds `training_step_pods`: training with one Kubernetes pod per step.
STEP_PODS_VAR = "MLOPS_K8S_STEP_PODS"

# The training group plus the drift reference (monitoring.RETRAIN_ASSETS, also what the
# retrain sensor requests): the reference belongs to the champion, so a promotion refreshes it
# in the same run (it is skipped with the gate's output when the challenger is rejected).
TRAINING_SELECTION = dg.AssetSelection.assets(*monitoring.RETRAIN_ASSETS)
training_job = dg.define_asset_job(
    "training",
    selection=TRAINING_SELECTION,
    description="Training set, candidate, champion gate, model card and drift reference.",
    # `tags` without `run_tags`: the tag annotates the job and is copied onto each of its runs.
    tags={K8S_CONFIG_TAG: TRAINING_K8S_CONFIG},
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
    monitoring.drift_reference,
    monitoring.drift_report,
    monitoring.model_performance,
]


def step_pods_enabled(env: Mapping[str, str]) -> bool:
    """Whether ``MLOPS_K8S_STEP_PODS`` asks for the step-pod training job.

    Raises:
        ValueError: for a value other than true/false/1/0 (or empty).
    """
    value = env.get(STEP_PODS_VAR, "").strip().lower()
    if value not in ("", "true", "false", "1", "0"):
        raise ValueError(f"{STEP_PODS_VAR} must be 'true' or 'false', got {value!r}")
    return value in ("true", "1")


def training_step_pods_job() -> "UnresolvedAssetJobDefinition":
    """Training with one Kubernetes pod per step (``dagster_k8s.k8s_job_executor``).

    Each step pod gets the training resources. Steps hand data over through the IO manager, so
    this needs the production flavour (lake on object storage), a K8sRunLauncher deployment and
    the code location's image; the run pod itself only orchestrates.
    """
    # Imported here: dagster_k8s loads the Kubernetes client (~2.5 s, twice `import dagster`).
    from dagster_k8s import k8s_job_executor

    return dg.define_asset_job(
        "training_step_pods",
        selection=TRAINING_SELECTION,
        description="Training with one Kubernetes pod per step (MLOPS_K8S_STEP_PODS=true).",
        executor_def=k8s_job_executor.configured({"step_k8s_config": TRAINING_K8S_CONFIG}),
    )


def build_defs(env: Mapping[str, str] | None = None) -> dg.Definitions:
    """The definitions with resources for ``env`` (the process environment by default)."""
    env = os.environ if env is None else env
    jobs: list[Any] = [daily_data_job, reference_job, training_job, deployment_job]
    if step_pods_enabled(env):
        jobs.append(training_step_pods_job())
    return dg.Definitions(
        assets=ASSETS,
        jobs=jobs,
        sensors=[
            automation.landing_sensor,
            automation.automation_sensor,
            monitoring.retrain_sensor,
        ],
        resources=build_resources(env),
        # Steps of a run share one process: every extra process re-imports the code location.
        executor=dg.in_process_executor,
    )


defs = build_defs()
