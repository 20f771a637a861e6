"""Local and production flavours of every resource, chosen from ``MLOPS_ENV`` only here."""

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg

from mlops_assets import settings
from mlops_assets.lib.alerts import ALERTMANAGER_URL_VAR, DAGSTER_UI_URL_VAR
from mlops_assets.lib.pipeline_metrics import GATEWAY_VAR
from mlops_assets.lib.prediction_log import ROOT_VARIABLE as PREDICTION_LOG_VAR
from mlops_assets.lib.prediction_log import default_root
from mlops_assets.lib.pseudonyms import KEY_VARIABLE as PSEUDONYM_KEY_VAR
from mlops_assets.lib.release import (
    DEFAULT_IMAGE_REPOSITORY,
    IMAGE_REPOSITORY_VAR,
    image_repository,
)
from mlops_assets.lib.relocation import relocate
from mlops_assets.resources import streaming  # [template:only with_streaming]
from mlops_assets.resources.alertmanager import alertmanager_from
from mlops_assets.resources.audit import AUDIT_URL_VAR, AuditTrail
from mlops_assets.resources.bentos import BentoStore, local_bentos
from mlops_assets.resources.data_registry import DataRegistryResource
from mlops_assets.resources.deployment_repo import DeploymentRepo, local_deployment_repo
from mlops_assets.resources.lake import LakeIOManager, LakeReader
from mlops_assets.resources.landing import LandingZone
from mlops_assets.resources.metrics_gateway import MetricsGateway
from mlops_assets.resources.prediction_log import PredictionLog
from mlops_assets.resources.pseudonyms import PseudonymKey
from mlops_assets.resources.reports import ReportStore
from mlops_assets.resources.tracking import MlflowTracking, local_tracking

DEPLOY_REPO_VAR = "MLOPS_DEPLOY_REPO_URL"
# Production settings and the component that reads them (docs/deploy.md lists every variable).
PRODUCTION_VARS: dict[str, str] = {
    "MLOPS_LANDING_URL": "landing zone root, e.g. s3://bucket/landing",
    "MLOPS_LAKE_URL": "lake root, e.g. s3://bucket/lake",
    "MLOPS_REGISTRY_GIT_URL": "git URL of the DVC data registry",
    "MLOPS_DVC_REMOTE_URL": "DVC remote of the data registry, e.g. s3://bucket/dvc",
    "MLFLOW_TRACKING_URI": "MLflow tracking server or database, e.g. https://mlflow.internal",
    PSEUDONYM_KEY_VAR: "secret key of the pseudonyms of personal data, 32+ characters; the "
    "prediction service needs the same one (docs/data.md, Personal data)",
}
# Optional production settings, with what happens when they are not set.
OPTIONAL_PRODUCTION_VARS: dict[str, str] = {
    "MLFLOW_ARTIFACT_LOCATION": "artifact root of the experiment, e.g. s3://bucket/mlflow "
    "(required when MLFLOW_TRACKING_URI is a database URI; a server decides by itself)",
    "MLOPS_BENTO_EXPORT_DIR": "where exported bentos are written (default <state>/bentoml/exports)",
    "MLOPS_REPORTS_URL": "where drift reports (HTML, JSON) are written "
    "(default <MLOPS_LAKE_URL>/reports)",
    "MLOPS_REPORTS_PUBLIC_URL": "web address that serves MLOPS_REPORTS_URL, for links in the UI "
    "(default: no links, paths only)",
    PREDICTION_LOG_VAR: "where the prediction service logs its answers, read back daily "
    "(default <MLOPS_LAKE_URL>/prediction_log)",
    DEPLOY_REPO_VAR: "git remote of the deployment repository Argo CD watches "
    "(default <state>/deployment/remote.git, which no cluster watches)",
    IMAGE_REPOSITORY_VAR: "where CI pushes the service image built from each bento "
    f"(default {DEFAULT_IMAGE_REPOSITORY})",
    GATEWAY_VAR: "Pushgateway the pipeline pushes its metrics to, e.g. http://pushgateway:9091 "
    "(default: no pushes)",
    ALERTMANAGER_URL_VAR: "Alertmanager that failed runs and blocking checks are posted to, e.g. "
    "http://alertmanager:9093 (default: no alerts from Dagster)",
    DAGSTER_UI_URL_VAR: "address of the Dagster UI, for run links in those alerts (default: none)",
    settings.LANDING_MANIFESTS_VAR: "required: a landing day waits for its manifest; optional: "
    "a day without one is ingested unchecked (default required; docs/data.md)",
    AUDIT_URL_VAR: "where the audit trail is kept, e.g. s3://audit-bucket/trail, ideally a bucket "
    "with Object Lock (default <MLOPS_LAKE_URL>/audit)",
    "MLOPS_STATE_DIR": "local working folder of runs: registry work tree, BentoML store "
    "(default <project>/state)",
    "MLFLOW_TRACKING_USERNAME": "the pipeline's account on an MLflow server with basic-auth "
    "(docs/deploy.md#access-control; default: no sign-in)",
    "MLFLOW_TRACKING_PASSWORD": "its password (default: none)",
    **streaming.OPTIONAL_PRODUCTION_VARS,  # [template:only with_streaming]
}
# Tracking URIs that name a database: without an artifact location MLflow would write ./mlruns.
DATABASE_SCHEMES = ("postgresql", "mysql", "sqlite", "mssql")


class MissingSettingError(RuntimeError):
    """A production setting is not in the environment."""


def _metrics(env: Mapping[str, str], where: settings.Locations) -> MetricsGateway:
    misses = where.observability / "push_misses.json"
    return MetricsGateway(url=env.get(GATEWAY_VAR, ""), misses_file=str(misses))


def _local(env: Mapping[str, str]) -> dict[str, Any]:
    where = settings.locations(dict(env))
    # A copied or moved state is re-pointed at its own folder before any resource uses it.
    relocate(where)
    registry = DataRegistryResource(path=str(where.data_registry), dvc_remote=str(where.dvc_remote))
    return {
        "io_manager": LakeIOManager(base_url=str(where.lake), data_registry=registry),
        "lake": LakeReader(base_url=str(where.lake)),
        "landing": LandingZone(
            url=str(where.landing), require_manifests=settings.manifests_required(env)
        ),
        "data_registry": registry,
        "tracking": local_tracking(where.state),
        "bentos": local_bentos(where.state, image_repository(env)),
        "deployment_repo": local_deployment_repo(where.state),
        "metrics": _metrics(env, where),
        "prediction_log": PredictionLog(root=default_root(env)),
        "reports": ReportStore(
            base_url=str(where.reports),
            public_url=f"http://127.0.0.1:{settings.REPORTS_PORT}",
        ),
        "alertmanager": alertmanager_from(env),
        "audit": AuditTrail(url=str(where.audit)),
        "pseudonyms": PseudonymKey(
            key=dg.EnvVar(PSEUDONYM_KEY_VAR) if env.get(PSEUDONYM_KEY_VAR) else "",
            key_file=str(where.pseudonym_key),
        ),
        **streaming.stream_resources(env),  # [template:only with_streaming]
    }


def _production(env: Mapping[str, str]) -> dict[str, Any]:
    missing = [name for name in PRODUCTION_VARS if not env.get(name)]
    if missing:
        details = "; ".join(f"{name} ({PRODUCTION_VARS[name]})" for name in missing)
        raise MissingSettingError(f"MLOPS_ENV=production needs these variables: {details}")
    artifacts = env.get("MLFLOW_ARTIFACT_LOCATION", "")
    scheme = env["MLFLOW_TRACKING_URI"].split(":", 1)[0].split("+", 1)[0].lower()
    if scheme in DATABASE_SCHEMES and not artifacts:
        raise MissingSettingError(
            "MLFLOW_TRACKING_URI names a database, so MLflow needs MLFLOW_ARTIFACT_LOCATION "
            "(e.g. s3://bucket/mlflow); without it artifacts would land in ./mlruns"
        )
    where = settings.locations(dict(env))
    registry = DataRegistryResource(
        path=str(where.data_registry),
        dvc_remote=dg.EnvVar("MLOPS_DVC_REMOTE_URL"),
        git_remote=dg.EnvVar("MLOPS_REGISTRY_GIT_URL"),
    )
    return {
        "io_manager": LakeIOManager(base_url=dg.EnvVar("MLOPS_LAKE_URL"), data_registry=registry),
        "lake": LakeReader(base_url=dg.EnvVar("MLOPS_LAKE_URL")),
        "tracking": MlflowTracking(
            tracking_uri=dg.EnvVar("MLFLOW_TRACKING_URI"), artifact_location=artifacts
        ),
        "landing": LandingZone(
            url=dg.EnvVar("MLOPS_LANDING_URL"),
            require_manifests=settings.manifests_required(env),
        ),
        "data_registry": registry,
        "prediction_log": PredictionLog(
            root=env.get(PREDICTION_LOG_VAR)
            or env["MLOPS_LAKE_URL"].rstrip("/") + "/prediction_log"
        ),
        # Bentos are built on the run's disk and exported for the image build.
        "bentos": BentoStore(
            home=str(where.bentoml_home),
            export_dir=env.get("MLOPS_BENTO_EXPORT_DIR") or str(where.bentoml_home / "exports"),
            image_repository=image_repository(env),
        ),
        "deployment_repo": _production_deployment_repo(env, where.state),
        "metrics": _metrics(env, where),
        "reports": ReportStore(
            base_url=env.get("MLOPS_REPORTS_URL") or env["MLOPS_LAKE_URL"].rstrip("/") + "/reports",
            public_url=env.get("MLOPS_REPORTS_PUBLIC_URL", ""),
        ),
        "alertmanager": alertmanager_from(env),
        "audit": AuditTrail(
            url=env.get(AUDIT_URL_VAR) or env["MLOPS_LAKE_URL"].rstrip("/") + "/audit"
        ),
        "pseudonyms": PseudonymKey(key=dg.EnvVar(PSEUDONYM_KEY_VAR), production=True),
        **streaming.stream_resources(env),  # [template:only with_streaming]
    }


def _production_deployment_repo(env: Mapping[str, str], state: Path) -> DeploymentRepo:
    local = local_deployment_repo(state)
    if not env.get(DEPLOY_REPO_VAR):
        return local
    # A real remote (its URL may carry a token: an EnvVar, never shown); never created here.
    return DeploymentRepo(
        url=dg.EnvVar(DEPLOY_REPO_VAR), checkout=local.checkout, manifests=local.manifests
    )


def build_resources(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Resources for the environment named by ``MLOPS_ENV`` (``local`` by default).

    Raises:
        MissingSettingError: in production, naming every missing variable.
    """
    env = os.environ if env is None else env
    flavour = settings.environment(dict(env))
    return _production(env) if flavour == "production" else _local(env)


@contextlib.contextmanager
def resolved(*names: str, env: Mapping[str, str] | None = None) -> Iterator[Any]:
    """The named resources with their settings resolved, for use outside a Dagster run.

    A production resource holds ``dg.EnvVar`` references that Dagster resolves when a run
    starts; the command line (restore, reproduce, rollback) gets them resolved here.

    Yields:
        An object with one attribute per name, e.g. ``resolved("tracking").tracking``.
    """
    resources = build_resources(env)
    with dg.build_resources({name: resources[name] for name in names}) as built:
        yield built
