"""The code location: every asset, check, job, sensor and resource of the environment.

Loading this module imports Dagster and the wiring only; pandas, pandera, DVC and the other
heavy libraries are imported inside the functions that use them (dagster_k8s too: only when
``MLOPS_K8S_STEP_PODS=true`` asks for the step-pod job).
"""

import os
from collections.abc import Mapping

import dagster as dg

from mlops_assets.defs import (
    alerting,
    approval,
    audit,
    automation,
    deployment,
    features,
    ingestion,
    jobs,
    loggers,
    monitoring,
    observability,
    retraining,
    streaming,  # [template:only with_streaming]
    training,
    trials,
)
from mlops_assets.resources import build_resources

ASSETS: list[dg.AssetsDefinition | dg.AssetSpec] = [
    ingestion.planes,
    ingestion.airports,
    ingestion.airlines,
    ingestion.raw_flights,
    ingestion.raw_weather,
    features.flight_features,
    training.training_set,
    training.candidate_model,
    training.model_gate,
    training.model_card,
    deployment.bento,
    deployment.release,  # [template:only with_service_delivery]
    deployment.batch_predictions,
    monitoring.drift_reference,
    monitoring.drift_report,
    monitoring.model_performance,
    trials.challenger_predictions,
    trials.online_predictions,
    trials.trial_evaluation,
    audit.audit_trail,
    *streaming.ASSETS,  # [template:only with_streaming]
]
SENSORS = [
    automation.landing_sensor,
    automation.automation_sensor,
    retraining.retrain_sensor,
    trials.trial_sensor,
    observability.pipeline_metrics_sensor,
    approval.approval_expiry_sensor,
    *alerting.SENSORS,
    *audit.SENSORS,
    *streaming.SENSORS,  # [template:only with_streaming]
]


def build_defs(env: Mapping[str, str] | None = None) -> dg.Definitions:
    """The definitions with resources for ``env`` (the process environment by default)."""
    env = os.environ if env is None else env
    return dg.Definitions(
        assets=ASSETS,
        jobs=[*jobs.code_location_jobs(env), approval.approve_model],
        sensors=SENSORS,
        resources=build_resources(env),
        # MLOPS_LOG_FORMAT=json: run logs as JSON lines (also for the local loop's runs).
        loggers=loggers.run_loggers(env),
        # Steps of a run share one process: every extra process re-imports the code location.
        executor=dg.in_process_executor,
    )


defs = build_defs()
