"""End to end: the production flavour on PostgreSQL (Dagster instance and MLflow registry).

A throwaway PostgreSQL cluster (the ``postgres`` fixture, ``postgres.py``: 127.0.0.1, free
port, password auth) holds two databases: ``dagster`` for the instance configured by
``deploy/dagster.yaml`` (copied into a temporary DAGSTER_HOME, connection from the
DAGSTER_PG_* variables) and ``mlflow`` for the tracking store and model registry
(``MLFLOW_TRACKING_URI=postgresql+psycopg2://...``). Every
other resource is the production flavour (``MLOPS_ENV=production``) on local stand-ins:
folders for landing, lake, DVC remote and MLflow artifacts, a bare git repository for the data
registry. Three weeks are replayed through the landing sensor and the automation
(``LocalDaemon``), then the training group and the Bento that follows a promotion are
materialized in one run.

Checked by querying PostgreSQL directly: the runs and asset materializations are in
``dagster``, the registered model, its version and the champion alias in ``mlflow``; no SQLite
file appears anywhere. Faults: a wrong Dagster database password stops the instance from
loading, naming the authentication failure; a wrong MLflow password fails candidate_model
with the same reason and registers nothing; a missing production variable stops the
definitions from loading.

Runtime: about 2.5 to 3 minutes on 2 cores: the cluster starts in ~1 s, the instance creates
its schema in ~5 s, 21 days through the graph take ~80 to 95 s (each run opens ~100 short
PostgreSQL connections: Dagster's run and event storages use no connection pool outside the
webserver, ~12 ms each with scram here), training and the Bento ~25 s, the wrong Dagster
password ~12 s (dagster-postgres retries the connection 5 times) and the wrong MLflow password
~21 s (the step's retry back-off).
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest

from mlops_assets import settings
from mlops_assets.definitions import build_defs
from mlops_assets.defs.training import TRACKING_RETRY
from mlops_assets.lib.model_tags import CHAMPION
from mlops_assets.lib.pseudonyms import KEY_VARIABLE as PSEUDONYM_KEY_VAR
from mlops_assets.lib.replay import replay
from mlops_assets.local_daemon import LocalDaemon, RunOutcome
from mlops_assets.processes import HOST
from mlops_assets.resources.environments import PRODUCTION_VARS, MissingSettingError
from mlops_assets_tests import deployed
from mlops_assets_tests.e2e.postgres import ROLE, PostgresCluster

pytestmark = pytest.mark.e2e

DEPLOY_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "dagster.yaml"
FIRST_DAY = deployed.TRAIN_START
DAYS = deployed.TRAIN_DAYS
DAY_KEYS = [str(FIRST_DAY + timedelta(days=n)) for n in range(DAYS)]
MODEL_NAME = settings.MODEL_NAME  # the default of MlflowTracking
WRONG_PASSWORD = "not-the-password-7f3a"
AUTH_FAILED = f'password authentication failed for user "{ROLE}"'
SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass
class Production:
    """The production flavour on a throwaway PostgreSQL, after three weeks and a training."""

    cluster: PostgresCluster
    root: Path
    env: dict[str, str] = field(repr=False)  # holds the passwords
    instance: dg.DagsterInstance
    defs: dg.Definitions
    data_runs: list[RunOutcome]
    training: dg.ExecuteInProcessResult
    timings: dict[str, float] = field(default_factory=dict)

    def materializations(self, asset: str) -> int:
        records = self.instance.fetch_materializations(dg.AssetKey(asset), limit=1000).records
        return len(records)


def production_env(root: Path, cluster: PostgresCluster) -> dict[str, str]:
    """MLOPS_ENV=production on local stand-ins, Dagster and MLflow on the cluster."""
    origin = root / "registry.git"
    subprocess.run(
        ["git", "init", "-q", "--bare", "--initial-branch=main", str(origin)],
        check=True,
        timeout=30,
    )
    home = root / "dagster_home"
    home.mkdir()
    shutil.copyfile(DEPLOY_CONFIG, home / "dagster.yaml")
    return {
        settings.ENV_VAR: "production",
        settings.STATE_DIR_VAR: str(root / "state"),
        "MLOPS_LANDING_URL": str(root / "landing"),
        "MLOPS_LAKE_URL": str(root / "lake"),
        "MLOPS_REGISTRY_GIT_URL": str(origin),
        "MLOPS_DVC_REMOTE_URL": str(root / "dvc-remote"),
        "MLFLOW_TRACKING_URI": cluster.url("mlflow", scheme="postgresql+psycopg2"),
        "MLFLOW_ARTIFACT_LOCATION": (root / "mlflow-artifacts").as_uri(),
        PSEUDONYM_KEY_VAR: secrets.token_urlsafe(32),
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": HOST,
        "DAGSTER_PG_PORT": str(cluster.port),
        "DAGSTER_PG_USER": ROLE,
        "DAGSTER_PG_PASSWORD": cluster.password,
        "DAGSTER_PG_DB": "dagster",
        # The Bento build imports the service, which refuses production without an API key.
        "MLOPS_API_KEY": secrets.token_urlsafe(18),
    }


@pytest.fixture(scope="module")
def production(
    postgres: PostgresCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Production]:
    root = tmp_path_factory.mktemp("production")
    env = production_env(root, postgres)
    timings: dict[str, float] = {}
    with pytest.MonkeyPatch.context() as patch, postgres.report_on_failure():
        for name, value in env.items():
            patch.setenv(name, value)  # dg.EnvVar reads the process environment at run time
        started = time.monotonic()
        instance = dg.DagsterInstance.get()  # from DAGSTER_HOME, as the daemon loads it
        timings["instance"] = time.monotonic() - started
        try:
            defs = build_defs(env)
            started = time.monotonic()
            replay(Path(env["MLOPS_LANDING_URL"]), FIRST_DAY, DAYS)
            loop = LocalDaemon(defs, instance, root / "state" / "cursors.json")
            data_runs = loop.run_until_idle()
            timings["days"] = time.monotonic() - started
            started = time.monotonic()
            # The training group and the Bento a promotion triggers, in one run: the automation
            # would also start a batch prediction per feature day (21 runs, not the point here).
            training = dg.materialize(
                list(defs.assets or []),  # type: ignore[arg-type]
                selection=deployed.TRAINING | dg.AssetSelection.assets("bento"),
                instance=instance,
                resources=dict(defs.resources or {}),
                run_config=deployed.run_config(),
                raise_on_error=False,
            )
            timings["training_and_bento"] = time.monotonic() - started
            yield Production(postgres, root, env, instance, defs, data_runs, training, timings)
        finally:
            print(f"timings (s): { {k: round(v, 1) for k, v in timings.items()} }")
            instance.dispose()


def _step_errors(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(
        e.step_failure_data.error.to_string()
        for e in result.all_events
        if e.is_step_failure and e.step_failure_data and e.step_failure_data.error
    )


def _sqlite_files(*folders: Path) -> list[Path]:
    """Files that are SQLite databases (by name or by their header) under ``folders``."""
    found = []
    for folder in folders:
        for path in folder.rglob("*"):
            if not path.is_file() or path.is_symlink():
                continue
            if path.suffix in (".db", ".sqlite", ".sqlite3"):
                found.append(path)
                continue
            with path.open("rb") as handle:
                if handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC:
                    found.append(path)
    return found


# -- tests ------------------------------------------------------------------------------------


def test_runs_and_registry_live_in_postgres(production: Production) -> None:
    cluster, instance = production.cluster, production.instance
    with cluster.report_on_failure():
        failed = [o for o in production.data_runs if not o.success]
        assert not failed, failed
        assert production.training.success, _step_errors(production.training)
        materialized = {
            e.asset_key.to_user_string()
            for e in production.training.get_asset_materialization_events()
            if e.asset_key
        }
        assert materialized == {
            "training_set",
            "candidate_model",
            "champion_model",
            "model_trial",
            "model_card",
            "bento",
        }

        # The instance loaded from DAGSTER_HOME is the Postgres one, not SQLite.
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"

        # Every run is a row of dagster.runs, and nothing else is.
        [(count,)] = cluster.query("dagster", "SELECT count(*) FROM runs")
        assert count == instance.get_runs_count()
        expected = {o.run_id for o in production.data_runs} | {production.training.run_id}
        stored = {row[0] for row in cluster.query("dagster", "SELECT run_id FROM runs")}
        assert stored == expected

        # Every raw and feature day was materialized into dagster.event_logs.
        rows = cluster.query(
            "dagster",
            "SELECT asset_key, partition FROM event_logs "
            "WHERE dagster_event_type = 'ASSET_MATERIALIZATION'",
        )
        for asset in ("raw_flights", "flight_features"):
            key = dg.AssetKey(asset).to_string()
            partitions = sorted(p for k, p in rows if k == key)
            assert partitions == DAY_KEYS, (asset, partitions)
        training_keys = {dg.AssetKey(a).to_string() for a in ("candidate_model", "bento")}
        assert training_keys <= {k for k, _ in rows}

        # The registered model, version 1 and the champion alias are rows of the mlflow DB.
        assert cluster.query("mlflow", "SELECT name FROM registered_models") == [(MODEL_NAME,)]
        versions = cluster.query(
            "mlflow", "SELECT version FROM model_versions WHERE name = %s", (MODEL_NAME,)
        )
        assert versions == [(1,)]
        aliases = cluster.query(
            "mlflow",
            "SELECT alias, version FROM registered_model_aliases WHERE name = %s",
            (MODEL_NAME,),
        )
        assert (CHAMPION, 1) in aliases, aliases
        [(experiment, artifacts)] = cluster.query(
            "mlflow",
            "SELECT name, artifact_location FROM experiments WHERE name <> 'Default'",
        )
        assert artifacts == production.env["MLFLOW_ARTIFACT_LOCATION"], (experiment, artifacts)
        [champion] = [
            m
            for m in production.training.asset_materializations_for_node("model_gate")
            if m.asset_key == dg.AssetKey("champion_model")
        ]
        assert str(champion.metadata["model_version"].value) == "1"

        # The other production stand-ins were used: artifacts, git remote, DVC remote.
        assert any(Path(production.root / "mlflow-artifacts").rglob("MLmodel"))
        commits = subprocess.run(
            [
                "git",
                "--git-dir",
                production.env["MLOPS_REGISTRY_GIT_URL"],
                "rev-list",
                "--count",
                "main",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert commits.returncode == 0 and int(commits.stdout) >= DAYS, commits
        assert any(Path(production.env["MLOPS_DVC_REMOTE_URL"]).rglob("*"))

        # Nothing fell back to SQLite (Dagster or MLflow defaults) anywhere in the deployment.
        assert _sqlite_files(production.root) == []


def test_wrong_dagster_password_names_the_authentication_failure(
    production: Production, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(DEPLOY_CONFIG, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", WRONG_PASSWORD)
    [(runs_before,)] = production.cluster.query("dagster", "SELECT count(*) FROM runs")

    with production.cluster.report_on_failure():
        started = time.monotonic()
        with pytest.raises(Exception) as raised:
            dg.DagsterInstance.get()
        elapsed = time.monotonic() - started

        # dagster-postgres retries the connection, then raises "too many retries for DB
        # connection" from the driver's error: the reason is the direct cause in the traceback.
        error = raised.value
        shown = "".join(traceback.format_exception(error))
        assert type(error).__name__ == "DagsterPostgresException", shown
        assert str(error) == "too many retries for DB connection"
        assert error.__cause__ is not None and AUTH_FAILED in str(error.__cause__), shown
        assert AUTH_FAILED in shown and f"port {production.cluster.port}" in shown
        assert WRONG_PASSWORD not in shown and production.cluster.password not in shown
        assert elapsed < 60.0, f"{elapsed:.1f} s to fail"
        assert production.cluster.query("dagster", "SELECT count(*) FROM runs") == [(runs_before,)]


def test_wrong_mlflow_password_fails_candidate_and_registers_nothing(
    production: Production, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow.store.db.utils

    cluster = production.cluster
    bad_uri = cluster.url("mlflow", password=WRONG_PASSWORD, scheme="postgresql+psycopg2")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", bad_uri)  # resolved when the run starts
    # MLflow retries creating its engine 10 times (~100 s of sleeps) per attempt of the step;
    # one try per attempt keeps the test to the step's own retry back-off.
    monkeypatch.setattr(mlflow.store.db.utils, "MAX_RETRY_COUNT", 1)
    versions_before = cluster.query("mlflow", "SELECT name, version FROM model_versions")
    runs_before = cluster.query("mlflow", "SELECT run_uuid, status FROM runs")
    candidates_before = production.materializations("candidate_model")

    with cluster.report_on_failure():
        started = time.monotonic()
        result = dg.materialize(
            list(production.defs.assets or []),  # type: ignore[arg-type]
            selection=dg.AssetSelection.assets("candidate_model"),
            instance=production.instance,
            resources=dict(production.defs.resources or {}),
            run_config={
                "ops": {"candidate_model": deployed.run_config()["ops"]["candidate_model"]}
            },
            raise_on_error=False,
        )
        elapsed = time.monotonic() - started

        assert not result.success
        errors = _step_errors(result)
        assert AUTH_FAILED in errors, errors
        assert WRONG_PASSWORD not in errors and cluster.password not in errors
        types = [e.event_type_value for e in result.all_events]
        assert types.count("STEP_UP_FOR_RETRY") == TRACKING_RETRY.max_retries, types
        assert types.count("STEP_FAILURE") == 1, types
        back_off = sum(
            TRACKING_RETRY.calculate_delay(n) for n in range(1, TRACKING_RETRY.max_retries + 1)
        )
        assert elapsed < back_off + 30.0, f"{elapsed:.1f} s to fail ({back_off} s of back-off)"

        # Nothing reached the registry or the tracking store, nothing was materialized.
        assert (
            cluster.query("mlflow", "SELECT name, version FROM model_versions") == versions_before
        )
        assert cluster.query("mlflow", "SELECT run_uuid, status FROM runs") == runs_before
        assert production.materializations("candidate_model") == candidates_before


def test_missing_production_variable_stops_loading() -> None:
    env = {name: f"/srv/{name.lower()}" for name in PRODUCTION_VARS} | {"MLOPS_ENV": "production"}
    with pytest.raises(MissingSettingError, match="MLOPS_LAKE_URL"):
        build_defs({k: v for k, v in env.items() if k != "MLOPS_LAKE_URL"})
