"""End to end: who may change the model registry, against ``mlflow server --app-name basic-auth``.

The server runs as in production (``registry_access``: its configuration file, the
administrator from the environment, ``default_permission`` NO_PERMISSIONS), on 127.0.0.1 with
SQLite stores. ``mlops-assets registry-accounts`` creates the pipeline's and the reader's
accounts as the administrator. Then, through the project's own ``MlflowTracking``: the pipeline
registers a challenger and moves the champion alias; the reader reads both but is refused
(403) when it registers a version or moves an alias, and the registry is unchanged; an account
without grants reads nothing; no or wrong credentials get 401; a new password replaces the old.

Runtime: ~15 s for the server to answer, a few seconds for the rest.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import pandas as pd
import pytest
import requests

from mlops_assets import cli, registry_access, settings
from mlops_assets.lib.model_tags import CHALLENGER, CHAMPION
from mlops_assets.resources.tracking import MlflowTracking
from mlops_assets_tests.conftest import validated_day
from mlops_assets_tests.e2e.servers import MlflowServer, Servers

pytestmark = pytest.mark.e2e

ADMIN = ("admin", "admin-e2e-password")
PIPELINE = ("pipeline", "pipeline-e2e-password")
READER = ("reader", "reader-e2e-password")
MODEL = settings.MODEL_NAME  # what registry-accounts grants on, as in production


@contextlib.contextmanager
def environment(values: dict[str, str | None]) -> Iterator[None]:
    """This process' environment with ``values`` set (None: unset), restored afterwards."""
    before = {name: os.environ.get(name) for name in values}
    try:
        _set(values)
        yield
    finally:
        _set(before)


def _set(values: dict[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def signed_in(account: tuple[str, str] | None) -> contextlib.AbstractContextManager[None]:
    """MLflow's client credentials for ``account`` (none: anonymous), restored afterwards."""
    user, password = account or (None, None)
    return environment({"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password})


def registry_accounts(server: MlflowServer, pipeline_password: str) -> int:
    """``mlops-assets registry-accounts`` as the administrator, in this process."""
    env: dict[str, str | None] = {
        "MLFLOW_TRACKING_URI": server.url,
        registry_access.PIPELINE_USERNAME_VAR: PIPELINE[0],
        registry_access.PIPELINE_PASSWORD_VAR: pipeline_password,
        registry_access.READER_USERNAME_VAR: READER[0],
        registry_access.READER_PASSWORD_VAR: READER[1],
    }
    with environment(env), signed_in(ADMIN):
        return cli.main(["registry-accounts"])


@dataclass
class Registry:
    server: MlflowServer
    tracking: MlflowTracking

    def state(self) -> dict[str, Any]:
        """Versions and aliases of the model, read as the administrator."""
        with signed_in(ADMIN):
            client = self.tracking.client()
            versions = client.search_model_versions(f"name = '{MODEL}'")
            model = client.get_registered_model(MODEL)
        return {
            "versions": sorted(int(v.version) for v in versions),
            "aliases": dict(model.aliases),
        }


@pytest.fixture(scope="module")
def starting_server(servers: Servers) -> MlflowServer:
    """The basic-auth server, started; the model is trained while it gets ready."""
    return servers.mlflow(admin=ADMIN, wait=False)


@pytest.fixture(scope="module")
def registry(starting_server: MlflowServer, model: tuple[Any, pd.DataFrame]) -> Registry:
    server = starting_server
    server.wait_ready()
    with server.report_on_failure():
        assert registry_accounts(server, PIPELINE[1]) == 0
    return Registry(server, MlflowTracking(tracking_uri=server.url))


@pytest.fixture(scope="module")
def model(tables: dict[str, pd.DataFrame]) -> tuple[Any, pd.DataFrame]:
    """A small real classifier and an input example (one day, ten trees)."""
    from mlops_assets.lib import contracts, estimator, modeling
    from mlops_assets.lib.features import CATEGORICAL_FEATURES, LABEL_COLUMN, build_flight_features

    planes = contracts.validate(tables["planes"], contracts.planes_schema(), source="planes")
    frame = build_flight_features(*validated_day(tables, date(2013, 1, 3)), planes)
    frame = frame[frame[LABEL_COLUMN].notna()].reset_index(drop=True)
    classifier = modeling.train_classifier(frame, estimator.HyperParameters(n_estimators=10))
    numbers = [c for c in classifier.features if c not in CATEGORICAL_FEATURES]
    example = frame[classifier.features].head(5).astype(dict.fromkeys(numbers, "float64"))
    return classifier, example


@pytest.fixture(scope="module")
def champion(registry: Registry, model: tuple[Any, pd.DataFrame]) -> str:
    """The pipeline registers a challenger and promotes it, as training and the gate do."""
    import mlflow

    tracking = registry.tracking
    with registry.server.report_on_failure(), signed_in(PIPELINE):
        mlflow.set_tracking_uri(tracking.tracking_uri)  # restored by the isolated fixture
        mlflow.set_registry_uri(tracking.tracking_uri)
        experiment = tracking.ensure_experiment()
        with mlflow.start_run(experiment_id=experiment):
            version = tracking.register_challenger(*model, dagster_run_id="e2e-run")
        challenger = tracking.version_by_alias(CHALLENGER)
        tracking.record_gate(challenger, "promoted", "no champion yet", champion=None)
    return version


def test_pipeline_registers_and_promotes(
    registry: Registry, model: tuple[Any, pd.DataFrame], champion: str
) -> None:
    import mlflow

    assert registry.state() == {
        "versions": [int(champion)],
        "aliases": {CHAMPION: champion, CHALLENGER: champion},
    }
    # The next training's challenger, promoted: the champion alias moves.
    tracking = registry.tracking
    with signed_in(PIPELINE):
        with mlflow.start_run(experiment_id=tracking.ensure_experiment()):
            second = tracking.register_challenger(*model, dagster_run_id="e2e-run-2")
        tracking.promote(second, tracking.version_by_alias(CHAMPION))
    assert registry.state() == {
        "versions": [int(champion), int(second)],
        "aliases": {CHAMPION: second, CHALLENGER: second},
    }


def test_reader_reads_but_cannot_change_the_registry(registry: Registry, champion: str) -> None:
    from mlflow.exceptions import MlflowException

    tracking = registry.tracking
    before = registry.state()
    with signed_in(READER):
        current = tracking.version_by_alias(CHAMPION)
        assert current is not None and current.version == before["aliases"][CHAMPION]
        client = tracking.client()
        versions = client.search_model_versions(f"name = '{MODEL}'")
        assert sorted(int(v.version) for v in versions) == before["versions"]

        with pytest.raises(MlflowException) as registering:
            client.create_model_version(MODEL, current.source, run_id=current.run_id)
        with pytest.raises(MlflowException) as moving:
            tracking.promote(str(before["versions"][0]), current)
    for refused in (registering.value, moving.value):
        assert "error code 403" in refused.message, refused.message
        assert "Permission denied" in refused.message, refused.message
    assert registry.state() == before


def test_an_account_without_grants_sees_nothing(registry: Registry, champion: str) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    with signed_in(ADMIN):
        get_app_client(registry_access.APP_NAME, tracking_uri=registry.server.url).create_user(
            "stranger", "stranger-e2e-password"
        )
    with (
        signed_in(("stranger", "stranger-e2e-password")),
        pytest.raises(MlflowException, match="error code 403") as reading,
    ):
        registry.tracking.version_by_alias(CHAMPION)
    assert "Permission denied" in reading.value.message


@pytest.mark.parametrize("account", [None, (PIPELINE[0], "not-the-password")])
def test_no_or_wrong_credentials_are_refused(
    registry: Registry, champion: str, account: tuple[str, str] | None
) -> None:
    before = registry.state()
    http = requests.Session()
    http.trust_env = False
    url = f"{registry.server.url}/api/2.0/mlflow/registered-models/alias"
    answer = http.post(
        url,
        json={"name": MODEL, "alias": CHAMPION, "version": "1"},
        auth=account,
        timeout=10,
    )
    assert answer.status_code == 401, answer.text
    assert "authenticat" in answer.text.lower(), answer.text
    with signed_in(account):
        from mlflow.exceptions import MlflowException

        with pytest.raises(MlflowException, match="401"):
            registry.tracking.version_by_alias(CHAMPION)
    assert registry.state() == before


def test_running_registry_accounts_again_rotates_the_password(
    registry: Registry, champion: str
) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    # A grant changed by hand is set back as well.
    with signed_in(ADMIN):
        auth = get_app_client(registry_access.APP_NAME, tracking_uri=registry.server.url)
        auth.revoke_user_permission(READER[0], "registered_model", MODEL)
        auth.grant_user_permission(READER[0], "registered_model", MODEL, "MANAGE")
    rotated = "pipeline-rotated-password"
    assert registry_accounts(registry.server, rotated) == 0
    with signed_in(ADMIN):
        held = auth.get_user_permission(READER[0], "registered_model", MODEL).permission
    assert held == "READ"
    with signed_in(PIPELINE), pytest.raises(MlflowException, match="401"):
        registry.tracking.version_by_alias(CHAMPION)
    with signed_in((PIPELINE[0], rotated)):
        assert registry.tracking.version_by_alias(CHAMPION) is not None
