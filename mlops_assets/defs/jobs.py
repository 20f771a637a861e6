"""Jobs, their selections and the run tags: the names runs are launched and found by.

Sensors request these jobs, the main job and the tests launch them, the UI shows the tags on
every run; each name is defined here once.
"""

from collections.abc import Mapping
from typing import Any

import dagster as dg

from mlops_assets.defs import deployment, monitoring, training

DAILY_DATA_JOB = "daily_data"
TRAINING_JOB = "training"
DEPLOYMENT_JOB = "deployment"
REFERENCE_JOB = "reference_data"
TRAINING_STEP_PODS_JOB = "training_step_pods"

# Run tags. `TRIGGER_TAG` says what started a run (one of the *_TRIGGER values).
TRIGGER_TAG = "mlops/trigger"
LANDING_TRIGGER = "landing"
AUTOMATION_TRIGGER = "automation"
RETRAIN_TRIGGER = "retrain"
BOOTSTRAP_TRIGGER = "bootstrap"
TRIAL_TRIGGER = "trial"
# The landing files a landing run reads.
FILES_TAG = "mlops/files"
# Why a retraining run was requested, by which condition, on which day and champion.
REASON_TAG = "mlops/retrain_reason"
CONDITION_TAG = "mlops/retrain_condition"
AS_OF_TAG = "mlops/retrain_as_of"
CHAMPION_TAG = "mlops/retrain_champion"
# Tags of the run that ends a trial: its outcome (promote, retire) and why.
TRIAL_OUTCOME_TAG = "mlops/trial_outcome"
TRIAL_REASON_TAG = "mlops/trial_reason"
# What became of a failed run's alerts: delivered, failed (Alertmanager unreachable) or off.
ALERT_DELIVERY_TAG = "mlops/alert_delivery"

# What a training run materializes: the training group and the drift reference. The reference
# belongs to the champion, so a promotion refreshes it in the same run (it is skipped with the
# gate's output when the challenger is rejected).
TRAINING_ASSETS: list[dg.AssetKey] = [
    training.training_set.key,
    training.candidate_model.key,
    training.CHAMPION_KEY,
    training.TRIAL_KEY,
    training.model_card.key,
    monitoring.drift_reference.key,
]
TRAINING_SELECTION = dg.AssetSelection.assets(*TRAINING_ASSETS)
# What the run that ends a trial materializes (with the training job): the gate's two outputs
# and, after a promotion, what belongs to the champion (skipped after a retirement).
TRIAL_CONCLUSION_ASSETS: list[dg.AssetKey] = [
    training.CHAMPION_KEY,
    training.TRIAL_KEY,
    training.model_card.key,
    monitoring.drift_reference.key,
]

# Kubernetes settings of training pods, read by the K8sRunLauncher (docs/deploy.md) from the run
# tag `dagster-k8s/config`; every other run launcher ignores the tag. Training holds a window
# of feature days in memory and fits LightGBM on all cores, so it gets bigger pods than the
# other runs (which get the code server's resources from the Helm values).
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

daily_data_job = dg.define_asset_job(
    DAILY_DATA_JOB,
    # Selection objects, not strings: parsing a string loads the ANTLR parser (~0.15 s).
    selection=dg.AssetSelection.groups("ingestion", "features"),
    description="One day through ingestion and features (what the sensors do for a new day).",
)
training_job = dg.define_asset_job(
    TRAINING_JOB,
    selection=TRAINING_SELECTION,
    description="Training set, candidate, champion gate, model card and drift reference.",
    # `tags` without `run_tags`: the tag annotates the job and is copied onto each of its runs.
    tags={K8S_CONFIG_TAG: TRAINING_K8S_CONFIG},
)
deployment_job = dg.define_asset_job(
    DEPLOYMENT_JOB,
    selection=dg.AssetSelection.assets(deployment.bento),
    description="Build and export the champion's Bento.",
)
reference_job = dg.define_asset_job(REFERENCE_JOB, selection=dg.AssetSelection.groups("reference"))


def step_pods_enabled(env: Mapping[str, str]) -> bool:
    """Whether ``MLOPS_K8S_STEP_PODS`` asks for the step-pod training job.

    Raises:
        ValueError: for a value other than true/false/1/0 (or empty).
    """
    value = env.get(STEP_PODS_VAR, "").strip().lower()
    if value not in ("", "true", "false", "1", "0"):
        raise ValueError(f"{STEP_PODS_VAR} must be 'true' or 'false', got {value!r}")
    return value in ("true", "1")


def training_step_pods_job() -> Any:
    """Training with one Kubernetes pod per step (``dagster_k8s.k8s_job_executor``).

    Each step pod gets the training resources. Steps hand data over through the IO manager, so
    this needs the production flavour (lake on object storage), a K8sRunLauncher deployment and
    the code location's image; the run pod itself only orchestrates.
    """
    # Imported here: dagster_k8s loads the Kubernetes client (~2.5 s, twice `import dagster`).
    from dagster_k8s import k8s_job_executor

    return dg.define_asset_job(
        TRAINING_STEP_PODS_JOB,
        selection=TRAINING_SELECTION,
        description="Training with one Kubernetes pod per step (MLOPS_K8S_STEP_PODS=true).",
        executor_def=k8s_job_executor.configured({"step_k8s_config": TRAINING_K8S_CONFIG}),
    )


def code_location_jobs(env: Mapping[str, str]) -> list[Any]:
    """The jobs of the code location for ``env`` (the step-pod job only when asked for)."""
    found: list[Any] = [daily_data_job, reference_job, training_job, deployment_job]
    if step_pods_enabled(env):
        found.append(training_step_pods_job())
    return found
