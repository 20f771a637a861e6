"""The Kubernetes deployment (deploy/helm/values.yaml for the official Dagster chart), no cluster.

There is no `helm` binary here, so the parts of the chart that turn our values into Dagster
configuration are mirrored below from the chart's templates (`dagsterYaml.runLauncher.k8s`,
`dagsterYaml.runCoordinator.queued`, `dagsterYaml.concurrency` and the user deployments'
`k8sContainerContext`). What they produce is then checked by Dagster and dagster-k8s
themselves: the run launcher's config schema, a real instance with the K8sRunLauncher (a
throwaway kubeconfig, nothing is contacted) and the Kubernetes Job the launcher would submit.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import jsonschema
import pytest
import yaml
from dagster._config import process_config, resolve_to_config_type
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.launcher import LaunchRunContext
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster._core.storage.dagster_run import DagsterRun
from dagster_k8s import K8sRunLauncher
from dagster_k8s.job import (
    construct_dagster_k8s_job,
    get_job_name_from_run_id,
    get_user_defined_k8s_config,
)
from kubernetes.client import V1Job

from mlops_assets import definitions, settings
from mlops_assets.defs import jobs
from mlops_assets.resources.environments import PRODUCTION_VARS

ROOT = Path(__file__).resolve().parents[2]
VALUES = ROOT / "deploy" / "helm" / "values.yaml"
SECRETS = ROOT / "deploy" / "helm" / "secrets.example.yaml"
SCHEMA = ROOT / "mlops_assets_tests" / "fixtures" / "dagster_helm_values.schema.json"
DOCKERFILE = ROOT / "Dockerfile"

# `helm install dagster dagster/dagster -n mlops`: the release name contains the chart name, so
# the chart's "fullname" is the release name.
NAMESPACE = "mlops"
FULLNAME = "dagster"
CHART_DAGSTER_HOME = "/opt/dagster/dagster_home"  # the chart's default global.dagsterHome
CHART_PG_SECRET = "dagster-postgresql-secret"  # the chart's default global.postgresqlSecretName

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
  - name: test
    cluster: {server: "https://127.0.0.1:6443"}
users:
  - name: test
    user: {token: not-a-real-token}
contexts:
  - name: test
    context: {cluster: test, user: test, namespace: mlops}
current-context: test
"""


# -- Helm, mirrored ---------------------------------------------------------------------------
def helm_values() -> dict[str, Any]:
    """values.yaml as Helm sees it after merging: a null removes the chart's default."""

    def drop_nulls(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: drop_nulls(v) for k, v in node.items() if v is not None}
        if isinstance(node, list):
            return [drop_nulls(v) for v in node]
        return node

    return drop_nulls(yaml.safe_load(VALUES.read_text()))


def _names(refs: list[dict[str, Any]] | None) -> list[str]:
    return [ref["name"] for ref in refs or [] if "name" in ref]


def render_run_launcher(values: Mapping[str, Any]) -> dict[str, Any]:
    """`run_launcher` of the instance, as `dagsterYaml.runLauncher.k8s` renders it."""
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    glob = values.get("global", {})
    config: dict[str, Any] = {
        "load_incluster_config": k8s["loadInclusterConfig"],
        "job_namespace": k8s.get("jobNamespace") or NAMESPACE,
        "image_pull_policy": k8s["imagePullPolicy"],
        "service_account_name": glob.get("serviceAccountName") or FULLNAME,
        "dagster_home": glob.get("dagsterHome", CHART_DAGSTER_HOME),
        "instance_config_map": f"{FULLNAME}-instance",
        "postgres_password_secret": glob.get("postgresqlSecretName", CHART_PG_SECRET),
    }
    if k8s.get("kubeconfigFile"):
        config["kubeconfig_file"] = k8s["kubeconfigFile"]
    if values.get("imagePullSecrets"):
        config["image_pull_secrets"] = values["imagePullSecrets"]
    if "image" in k8s:
        image = k8s["image"]
        config["job_image"] = f"{image['repository']}:{image['tag']}"
    if k8s.get("envConfigMaps"):
        config["env_config_maps"] = _names(k8s["envConfigMaps"])
    if k8s.get("envSecrets"):
        config["env_secrets"] = _names(k8s["envSecrets"])
    for key, name in (
        ("envVars", "env_vars"),
        ("volumeMounts", "volume_mounts"),
        ("volumes", "volumes"),
        ("labels", "labels"),
        ("resources", "resources"),
        ("schedulerName", "scheduler_name"),
        ("securityContext", "security_context"),
    ):
        if k8s.get(key):
            config[name] = k8s[key]
    if k8s.get("failPodOnRunFailure"):
        config["fail_pod_on_run_failure"] = True
    if k8s.get("runK8sConfig"):
        run = k8s["runK8sConfig"]
        config["run_k8s_config"] = {
            name: run[key]
            for key, name in (
                ("containerConfig", "container_config"),
                ("podSpecConfig", "pod_spec_config"),
                ("podTemplateSpecMetadata", "pod_template_spec_metadata"),
                ("jobSpecConfig", "job_spec_config"),
                ("jobMetadata", "job_metadata"),
            )
            if run.get(key)
        }
    return {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": config}


def _empty(value: Any) -> bool:
    """Sprig's notion of empty (`compact`, `if`): nil, "", 0, false, empty list or map."""
    return value is None or value == "" or value == 0 or value is False or value in ([], {})


def render_queue(values: Mapping[str, Any]) -> dict[str, Any]:
    """`run_coordinator` and `concurrency` of the instance, as the chart renders them.

    Raises:
        AssertionError: where the chart's template would `fail` (limits set twice).
    """
    daemon = values["dagsterDaemon"]
    coordinator = daemon["runCoordinator"]
    assert daemon["enabled"] and coordinator["enabled"]
    assert coordinator["type"] == "QueuedRunCoordinator"
    queued = coordinator["config"].get("queuedRunCoordinator") or {}
    concurrency = values.get("concurrency", {})
    enabled = bool(concurrency.get("enabled"))
    pools = concurrency.get("pools", {})
    runs = concurrency.get("runs", {})

    queue: dict[str, Any] = {}
    if any(not _empty(v) for v in queued.values()):
        if not enabled or "maxConcurrentRuns" in queued:
            queue["max_concurrent_runs"] = queued.get("maxConcurrentRuns", -1)
        if queued.get("tagConcurrencyLimits"):
            queue["tag_concurrency_limits"] = queued["tagConcurrencyLimits"]
        for key, name in (
            ("dequeueIntervalSeconds", "dequeue_interval_seconds"),
            ("dequeueUseThreads", "dequeue_use_threads"),
            ("dequeueNumWorkers", "dequeue_num_workers"),
        ):
            if queued.get(key):
                queue[name] = queued[key]
        block = queued.get("blockOpConcurrencyLimitedRuns")
        if block:
            queue["block_op_concurrency_limited_runs"] = {
                "enabled": block["enabled"],
                "op_concurrency_slot_buffer": block["opConcurrencySlotBuffer"],
            }
    rendered: dict[str, Any] = {
        "run_coordinator": {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
            **({"config": queue} if queue else {}),
        }
    }
    if enabled:
        assert "maxConcurrentRuns" not in runs or "maxConcurrentRuns" not in queued, (
            "chart fails: maxConcurrentRuns set in concurrency.runs and the run coordinator"
        )
        assert not (runs.get("tagConcurrencyLimits") and queued.get("tagConcurrencyLimits")), (
            "chart fails: tagConcurrencyLimits set in concurrency.runs and the run coordinator"
        )
        section: dict[str, Any] = {}
        if "defaultLimit" in pools:
            section.setdefault("pools", {})["default_limit"] = pools["defaultLimit"]
        if pools.get("granularity"):
            section.setdefault("pools", {})["granularity"] = pools["granularity"]
        if "maxConcurrentRuns" in runs:
            section.setdefault("runs", {})["max_concurrent_runs"] = runs["maxConcurrentRuns"]
        if runs.get("tagConcurrencyLimits"):
            section.setdefault("runs", {})["tag_concurrency_limits"] = runs["tagConcurrencyLimits"]
        rendered["concurrency"] = section
    return rendered


def render_recovery(values: Mapping[str, Any]) -> dict[str, Any]:
    """`run_monitoring`, `run_retries` and `additionalInstanceConfig` as the chart renders them
    (`templates/configmap-instance.yaml`)."""
    daemon = values["dagsterDaemon"]
    monitoring, retries = daemon.get("runMonitoring", {}), daemon.get("runRetries", {})
    rendered: dict[str, Any] = {}
    if monitoring.get("enabled"):
        rendered["run_monitoring"] = {
            "enabled": True,
            "start_timeout_seconds": monitoring.get("startTimeoutSeconds", 300),
            "poll_interval_seconds": monitoring.get("pollIntervalSeconds", 120),
            "free_slots_after_run_end_seconds": monitoring.get("freeSlotsAfterRunEndSeconds", 0),
        }
    if retries.get("enabled"):
        rendered["run_retries"] = {"enabled": True}
        if retries.get("maxRetries"):
            rendered["run_retries"]["max_retries"] = retries["maxRetries"]
    extra = values.get("additionalInstanceConfig") or {}
    assert not set(extra) & set(rendered), f"rendered twice: {set(extra) & set(rendered)}"
    return {**rendered, **extra}


def code_server_context(values: Mapping[str, Any]) -> dict[str, Any]:
    """Container context the chart hands to `dagster api grpc` (includeConfigInLaunchedRuns).

    Mirrors `dagsterUserDeployments.k8sContainerContext`; names of the chart's own config maps
    and service accounts are approximations and not asserted.
    """
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"]
    k8s: dict[str, Any] = {
        "image_pull_policy": deployment["image"]["pullPolicy"],
        "env_config_maps": [
            f"{FULLNAME}-{deployment['name']}-user-env",
            *_names(deployment.get("envConfigMaps")),
        ],
        "namespace": NAMESPACE,
        "service_account_name": f"{FULLNAME}-user-deployments",
        "run_k8s_config": {"pod_spec_config": {"automount_service_account_token": True}},
    }
    if deployment.get("envSecrets"):
        k8s["env_secrets"] = _names(deployment["envSecrets"])
    for key, name in (
        ("volumeMounts", "volume_mounts"),
        ("volumes", "volumes"),
        ("labels", "labels"),
        ("resources", "resources"),
        ("schedulerName", "scheduler_name"),
    ):
        if deployment.get(key):
            k8s[name] = deployment[key]
    if isinstance(deployment.get("env"), list):
        k8s["env"] = deployment["env"]
    return {"k8s": k8s}


def image_of(values: Mapping[str, Any]) -> str:
    image = values["dagster-user-deployments"]["deployments"][0]["image"]
    return f"{image['repository']}:{image['tag']}"


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return helm_values()


@pytest.fixture(scope="module")
def production_defs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dg.Definitions]:
    """The code location as the image loads it in the cluster (production flavour)."""
    env = {
        settings.ENV_VAR: "production",
        settings.STATE_DIR_VAR: str(tmp_path_factory.mktemp("state")),
        "MLOPS_LANDING_URL": "s3://mlops/landing",
        "MLOPS_LAKE_URL": "s3://mlops/lake",
        "MLOPS_REGISTRY_GIT_URL": "https://git.example.com/registry.git",
        "MLOPS_DVC_REMOTE_URL": "s3://mlops/dvc",
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "MLOPS_PSEUDONYM_KEY": "a-production-key-of-forty-characters-000",
    }
    assert set(PRODUCTION_VARS) <= set(env)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        patch.delenv(jobs.STEP_PODS_VAR, raising=False)
        yield definitions.build_defs()


@pytest.fixture
def k8s_instance(values: dict[str, Any], tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """An instance configured like the chart's, with a throwaway kubeconfig."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    launcher = render_run_launcher(values)
    launcher["config"].update(load_incluster_config=False, kubeconfig_file=str(kubeconfig))
    overrides = {
        "run_launcher": launcher,
        **render_queue(values),
        **render_recovery(values),
        "telemetry": {"enabled": False},
    }
    with dg.instance_for_test(overrides=overrides) as instance:
        yield instance


def _run(
    instance: dg.DagsterInstance, defs: dg.Definitions, job_name: str, values: dict[str, Any]
) -> DagsterRun:
    """A run of ``job_name`` as the launcher receives it: job tags, code server origin."""
    job = defs.resolve_job_def(job_name)
    origin = JobPythonOrigin(
        job_name=job_name,
        repository_origin=RepositoryPythonOrigin(
            executable_path="/opt/venv/bin/python",
            code_pointer=ModuleCodePointer(
                "mlops_assets.definitions", "defs", working_directory="/app"
            ),
            container_image=image_of(values),
            container_context=code_server_context(values),
        ),
    )
    return instance.create_run_for_job(job, tags=job.run_tags, job_code_origin=origin)


def _container(job: V1Job) -> Any:
    return job.spec.template.spec.containers[0]


def _env(container: Any) -> dict[str, Any]:
    return {var.name: var for var in container.env or []}


# -- the run launcher -------------------------------------------------------------------------
def test_rendered_run_launcher_config_validates(values: dict[str, Any]) -> None:
    rendered = render_run_launcher(values)
    result = process_config(
        resolve_to_config_type(K8sRunLauncher.config_type()), rendered["config"]
    )
    assert result.success, result.errors
    config = result.value
    assert config is not None
    assert config["env_secrets"] == ["mlops-assets-env"]
    assert "MLOPS_ENV=production" in config["env_vars"]
    assert config["load_incluster_config"] is True
    assert config["postgres_password_secret"] == "dagster-postgresql-secret"


def test_k8s_run_launcher_constructs(k8s_instance: dg.DagsterInstance) -> None:
    launcher = k8s_instance.run_launcher
    assert isinstance(launcher, K8sRunLauncher)
    assert launcher.job_namespace == NAMESPACE
    assert launcher.env_secrets == ["mlops-assets-env"]
    assert launcher.image_pull_policy == "IfNotPresent"
    assert launcher.fail_pod_on_run_failure is True
    # The queue the chart renders is one the instance accepts (Dagster refuses run limits in
    # both the run coordinator and `concurrency`).
    assert k8s_instance.run_coordinator.__class__.__name__ == "QueuedRunCoordinator"
    concurrency = k8s_instance.get_concurrency_config()
    assert concurrency.pool_config.default_pool_limit == 1
    assert concurrency.run_queue_config is not None
    assert concurrency.run_queue_config.max_concurrent_runs == 8


def test_a_crashed_run_is_retried_once_and_frees_its_slots(
    k8s_instance: dg.DagsterInstance,
) -> None:
    """The chart's instance recovers from a dead run pod as deploy/dagster.yaml does: one
    retry (not of a run that failed in its own code), the dead run's pool slots freed, one
    run at a time per day."""
    import yaml

    single_host = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
    assert k8s_instance.run_retries_enabled
    assert k8s_instance.run_retries_max_retries == single_host["run_retries"]["max_retries"] == 1
    assert not k8s_instance.run_retries_retry_on_asset_or_op_failure
    assert not single_host["run_retries"]["retry_on_asset_or_op_failure"]
    settings = k8s_instance.run_monitoring_settings
    assert settings["free_slots_after_run_end_seconds"] > 0
    assert settings == {**settings, **single_host["run_monitoring"]}
    queue = k8s_instance.get_concurrency_config().run_queue_config
    assert queue is not None
    per_day = [
        limit for limit in queue.tag_concurrency_limits if limit["key"] == "dagster/partition"
    ]
    assert per_day == [
        {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
    ]
    assert per_day[0] in single_host["concurrency"]["runs"]["tag_concurrency_limits"]


def test_run_limits_in_two_places_are_refused(values: dict[str, Any], tmp_path: Path) -> None:
    """Why values.yaml clears the coordinator's own limits: Dagster refuses both at once."""
    clashing = copy.deepcopy(values)
    queued = clashing["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    queued["maxConcurrentRuns"] = 3
    with pytest.raises(AssertionError, match="chart fails"):
        render_queue(clashing)
    queued.pop("maxConcurrentRuns")
    queued["blockOpConcurrencyLimitedRuns"] = {"enabled": False, "opConcurrencySlotBuffer": 1}
    overrides = render_queue(clashing)
    with pytest.raises(DagsterInvalidConfigError, match="incompatible"):  # noqa: SIM117
        with dg.instance_for_test(overrides=overrides) as instance:
            instance.get_concurrency_config()


# -- the Kubernetes Job of a run --------------------------------------------------------------
def test_training_job_tag_asks_for_bigger_pods(production_defs: dg.Definitions) -> None:
    training = production_defs.resolve_job_def("training")
    assert json.loads(training.run_tags[jobs.K8S_CONFIG_TAG]) == (jobs.TRAINING_K8S_CONFIG)
    user_config = get_user_defined_k8s_config(training.run_tags)
    assert user_config.container_config["resources"] == {
        "requests": {"cpu": "2", "memory": "4Gi"},
        "limits": {"cpu": "4", "memory": "8Gi"},
    }
    for name in ("daily_data", "reference_data", "deployment"):
        tags = production_defs.resolve_job_def(name).run_tags
        assert jobs.K8S_CONFIG_TAG not in tags


def test_training_run_job_spec(
    k8s_instance: dg.DagsterInstance, production_defs: dg.Definitions, values: dict[str, Any]
) -> None:
    """The V1Job of a training run: our image, secrets as envFrom, the tag's resources."""
    launcher = k8s_instance.run_launcher
    assert isinstance(launcher, K8sRunLauncher)
    run = _run(k8s_instance, production_defs, "training", values)
    # What K8sRunLauncher._launch_k8s_job_with_args does, spelled out.
    context = launcher.get_container_context_for_run(run)
    job = construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(job_image=image_of(values), run_launcher=launcher),
        args=["dagster", "api", "execute_run", "{}"],
        job_name=get_job_name_from_run_id(run.run_id),
        user_defined_k8s_config=context.run_k8s_config,
        component="run_worker",
    )
    container = _container(job)
    assert container.image == "registry.example.com/mlops/mlops-assets:0.1.0"
    assert container.image_pull_policy == "IfNotPresent"
    secrets = [source.secret_ref.name for source in container.env_from if source.secret_ref]
    assert secrets == ["mlops-assets-env"]
    assert container.resources.requests == {"cpu": "2", "memory": "4Gi"}
    assert container.resources.limits == {"cpu": "4", "memory": "8Gi"}
    env = _env(container)
    assert env["MLOPS_ENV"].value == "production"
    assert env["DAGSTER_HOME"].value == CHART_DAGSTER_HOME
    assert env["DAGSTER_PG_PASSWORD"].value_from.secret_key_ref.name == "dagster-postgresql-secret"
    assert job.metadata.namespace is None or job.metadata.namespace == NAMESPACE
    assert job.spec.ttl_seconds_after_finished == 86400
    pod = job.spec.template.spec
    assert pod.security_context.run_as_non_root is True
    assert pod.security_context.run_as_user == 10001
    assert container.security_context.allow_privilege_escalation is False


@pytest.mark.parametrize(
    ("job_name", "requests", "limits"),
    [
        ("training", {"cpu": "2", "memory": "4Gi"}, {"cpu": "4", "memory": "8Gi"}),
        # Without a tag a run gets the code server's resources (includeConfigInLaunchedRuns).
        ("daily_data", {"cpu": "500m", "memory": "1Gi"}, {"cpu": "1", "memory": "2Gi"}),
    ],
)
def test_launch_run_submits_the_job(
    k8s_instance: dg.DagsterInstance,
    production_defs: dg.Definitions,
    values: dict[str, Any],
    job_name: str,
    requests: dict[str, str],
    limits: dict[str, str],
) -> None:
    """The launcher's own code path, with the Kubernetes API call recorded instead of sent."""
    launcher = k8s_instance.run_launcher
    assert isinstance(launcher, K8sRunLauncher)
    submitted: list[tuple[V1Job, str]] = []

    def record(body: V1Job, namespace: str, **_: Any) -> None:
        submitted.append((body, namespace))

    launcher._api_client.create_namespaced_job_with_retries = record
    run = _run(k8s_instance, production_defs, job_name, values)
    launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))

    [(job, namespace)] = submitted
    assert namespace == NAMESPACE
    container = _container(job)
    assert container.image == image_of(values)
    # `python -m dagster api execute_run ...` with the interpreter the code server reported.
    assert container.args[:5] == ["/opt/venv/bin/python", "-m", "dagster", "api", "execute_run"]
    assert container.resources.requests == requests
    assert container.resources.limits == limits
    secrets = {source.secret_ref.name for source in container.env_from if source.secret_ref}
    assert secrets == {"mlops-assets-env"}
    env = _env(container)
    assert env["MLOPS_ENV"].value == "production"
    assert env["MLOPS_K8S_STEP_PODS"].value == "false"
    assert job.metadata.labels["dagster/job"] == job_name
    stored = k8s_instance.get_run_by_id(run.run_id)
    assert stored is not None
    assert stored.tags["dagster/image"] == image_of(values)


# -- step pods ----------------------------------------------------------------------------------
def test_step_pod_job_only_when_asked(tmp_path: Path) -> None:
    base = {settings.STATE_DIR_VAR: str(tmp_path)}
    without = definitions.build_defs(base)
    names = {job.name for job in without.resolve_all_job_defs()}
    assert "training_step_pods" not in names
    assert {"daily_data", "training", "deployment", "reference_data"} <= names

    with_pods = definitions.build_defs({**base, jobs.STEP_PODS_VAR: "true"})
    job = with_pods.resolve_job_def("training_step_pods")
    assert job.executor_def.name == "k8s"
    config = job.executor_def.config_schema.resolve_config({})  # type: ignore[attr-defined]
    assert config.success, config.errors
    assert (
        config.value["config"]["step_k8s_config"]["container_config"]["resources"]
        == (jobs.TRAINING_K8S_CONFIG["container_config"]["resources"])
    )
    training = with_pods.resolve_job_def("training")
    assert training.executor_def.name == "in_process"
    assert set(job.asset_layer.executable_asset_keys) == set(
        training.asset_layer.executable_asset_keys
    )

    for defs in (without, with_pods):
        dg.Definitions.validate_loadable(defs)


def test_step_pods_in_production_flavour(
    production_defs: dg.Definitions, monkeypatch: pytest.MonkeyPatch
) -> None:
    dg.Definitions.validate_loadable(production_defs)
    monkeypatch.setenv(jobs.STEP_PODS_VAR, "true")
    with_pods = definitions.build_defs()
    dg.Definitions.validate_loadable(with_pods)
    assert with_pods.resolve_job_def("training_step_pods").executor_def.name == "k8s"


@pytest.mark.parametrize(
    ("value", "enabled"),
    [("", False), ("false", False), ("0", False), ("true", True), ("TRUE", True), ("1", True)],
)
def test_step_pods_switch(value: str, enabled: bool) -> None:
    assert jobs.step_pods_enabled({jobs.STEP_PODS_VAR: value}) is enabled


def test_step_pods_switch_refuses_other_values() -> None:
    with pytest.raises(ValueError, match="MLOPS_K8S_STEP_PODS"):
        jobs.step_pods_enabled({jobs.STEP_PODS_VAR: "yes please"})


def test_loading_the_code_location_does_not_import_dagster_k8s() -> None:
    """dagster_k8s (and the Kubernetes client) cost ~2.5 s: only the step-pod job loads it."""
    code = (
        "import sys, warnings; warnings.simplefilter('ignore'); "
        "import mlops_assets.definitions; "
        "print(sorted(m for m in ('dagster_k8s', 'kubernetes') if m in sys.modules))"
    )
    env = {k: v for k, v in os.environ.items() if k != jobs.STEP_PODS_VAR}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


# -- the values file itself -------------------------------------------------------------------
def _schema_without_required() -> dict[str, Any]:
    """The vendored chart schema (fixtures/README.md), as checked here.

    `required` is dropped (Helm validates values merged over chart defaults we do not have),
    and references to kubernetesjsonschema.dev are dropped (offline), which leaves the chart's
    own hints for those objects (an object, a list, a map of strings).
    """
    schema = json.loads(SCHEMA.read_text())

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("https://kubernetesjsonschema.dev/"):
                del node["$ref"]
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(schema)
    for definition in schema["definitions"].values():
        definition.pop("required", None)
    return schema


def _schema_errors(values: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(_schema_without_required())
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(values)
    ]


def test_values_validate_against_the_chart_schema(values: dict[str, Any]) -> None:
    assert _schema_errors(values) == []


def test_chart_schema_catches_a_misspelt_key(values: dict[str, Any]) -> None:
    broken = copy.deepcopy(values)
    broken["runLauncher"]["config"]["k8sRunLauncher"]["envSecret"] = [{"name": "x"}]
    broken["dagsterDaemon"]["runCoordinator"]["type"] = "QueueRunCoordinator"
    errors = _schema_errors(broken)
    assert any("envSecret" in error for error in errors), errors
    assert any("QueueRunCoordinator" in error for error in errors), errors


def test_values_match_the_image(values: dict[str, Any]) -> None:
    """The chart runs `dagster api grpc -h 0.0.0.0 -p <port> <args>` as the image's user."""
    deployment = values["dagster-user-deployments"]["deployments"][0]
    dockerfile = DOCKERFILE.read_text()
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert cmd[:3] == ["dagster", "api", "grpc"]
    assert cmd[cmd.index("-p") + 1] == str(deployment["port"])
    assert cmd[-2:] == deployment["dagsterApiGrpcArgs"]
    user = re.search(r"^USER (\d+):(\d+)$", dockerfile, re.MULTILINE)
    assert user is not None
    assert deployment["podSecurityContext"]["runAsUser"] == int(user.group(1))
    assert deployment["podSecurityContext"]["runAsGroup"] == int(user.group(2))
    assert deployment["podSecurityContext"]["runAsNonRoot"] is True
    assert values["postgresql"]["enabled"] is False
    assert values["generatePostgresqlPasswordSecret"] is False


def test_secret_example_carries_every_production_setting(values: dict[str, Any]) -> None:
    secrets = {doc["metadata"]["name"]: doc for doc in yaml.safe_load_all(SECRETS.read_text())}
    env_secret = secrets["mlops-assets-env"]["stringData"]
    missing = set(PRODUCTION_VARS) - set(env_secret)
    assert not missing, f"secrets.example.yaml lacks {sorted(missing)}"
    assert {"MLFLOW_ARTIFACT_LOCATION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(
        env_secret
    )
    assert "postgresql-password" in secrets[values["global"]["postgresqlSecretName"]]["stringData"]
    deployment = values["dagster-user-deployments"]["deployments"][0]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    for refs in (deployment["envSecrets"], launcher["envSecrets"]):
        assert set(_names(refs)) <= set(secrets)
    # The pipeline's MLflow account reaches the code server and every run pod with the rest.
    assert {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} <= set(env_secret)


# -- the UI behind oauth2-proxy: deploy/helm/oauth2-proxy-values.yaml ---------------------------
UI_PROXY_VALUES = ROOT / "deploy" / "helm" / "oauth2-proxy-values.yaml"


def ui_proxy_problems(proxy: Mapping[str, Any], dagster: Mapping[str, Any]) -> list[str]:
    """Where the proxy's values and the Dagster chart's webserver disagree, or leak a secret."""
    problems = []
    service = dagster["dagsterWebserver"]["service"]
    if service["type"] != "ClusterIP":
        problems.append(f"the webserver's Service is {service['type']}, reachable around the proxy")
    # The chart names the Service <fullname>-dagster-webserver.
    upstream = (
        f"http://{FULLNAME}-dagster-webserver.{NAMESPACE}.svc.cluster.local:{service['port']}/"
    )
    upstreams = re.findall(r'upstreams\s*=\s*\[\s*"([^"]+)"\s*\]', proxy["config"]["configFile"])
    if upstreams != [upstream]:
        problems.append(f"the proxy's upstreams {upstreams} are not the webserver {upstream}")
    for key in ("clientID", "clientSecret", "cookieSecret"):
        if key in proxy["config"]:
            problems.append(f"config.{key} is in the values file: use config.existingSecret")
    if not proxy["config"].get("existingSecret"):
        problems.append("no config.existingSecret")
    if proxy["extraArgs"].get("provider") != "oidc":
        problems.append("the provider is not oidc")
    return problems


@pytest.fixture(scope="module")
def ui_proxy() -> dict[str, Any]:
    return yaml.safe_load(UI_PROXY_VALUES.read_text())


def test_ui_proxy_fronts_the_webserver(ui_proxy: dict[str, Any], values: dict[str, Any]) -> None:
    assert ui_proxy_problems(ui_proxy, values) == []
    commands = "\n".join(
        line for line in UI_PROXY_VALUES.read_text().splitlines() if line.startswith("#")
    )
    assert re.search(r"oauth2-proxy/oauth2-proxy --version \d+\.\d+\.\d+ -n " + NAMESPACE, commands)
    secret = ui_proxy["config"]["existingSecret"]
    assert f"secret generic {secret}" in commands
    for key in ("client-id", "client-secret", "cookie-secret"):  # the keys the chart reads
        assert f"--from-literal={key}=" in commands


def test_ui_proxy_mistakes_are_caught(ui_proxy: dict[str, Any], values: dict[str, Any]) -> None:
    proxy, dagster = copy.deepcopy(ui_proxy), copy.deepcopy(values)
    dagster["dagsterWebserver"]["service"] = {"type": "LoadBalancer", "port": 3000}
    proxy["config"]["cookieSecret"] = "in-the-file"
    problems = ui_proxy_problems(proxy, dagster)
    assert "the webserver's Service is LoadBalancer, reachable around the proxy" in problems
    assert any(p.startswith("the proxy's upstreams") for p in problems), problems
    assert "config.cookieSecret is in the values file: use config.existingSecret" in problems
    # [template:if with_observability]


# -- the observability stack: deploy/helm/observability-values.yaml ------------------------
# kube-prometheus-stack reads what `kubectl kustomize deploy/observability` renders
# (test_observability_stack.py): the names and labels on both sides must meet.
OBSERVABILITY_VALUES = ROOT / "deploy" / "helm" / "observability-values.yaml"
KUSTOMIZATION = ROOT / "deploy" / "observability" / "kustomization.yaml"
SERVICE_RULES = ROOT / "deploy" / "observability" / "rules" / "service.yml"
MONITORING = "monitoring"


def _install_commands() -> str:
    """The comment lines at the top of the values file (the install commands)."""
    return "\n".join(
        line for line in OBSERVABILITY_VALUES.read_text().splitlines() if line.startswith("#")
    )


def observability_wiring_problems(
    stack: Mapping[str, Any], kustomization: Mapping[str, Any], dagster: Mapping[str, Any]
) -> list[str]:
    """Where the stack's values, the kustomization and the code location's env disagree."""
    problems = []
    commands = _install_commands()
    if kustomization["namespace"] != MONITORING or f"-n {MONITORING}" not in commands:
        problems.append(f"not everything is installed in the namespace {MONITORING}")
    # Alertmanager: the Secret kustomize generates, under the key the operator reads.
    spec = stack["alertmanager"]["alertmanagerSpec"]
    secrets = {s["name"]: s for s in kustomization["secretGenerator"]}
    if not spec.get("useExistingSecret") or spec.get("configSecret") not in secrets:
        problems.append(f"Alertmanager reads Secret {spec.get('configSecret')!r}: not generated")
    elif not any(
        f.startswith("alertmanager.yaml=") for f in secrets[spec["configSecret"]]["files"]
    ):
        problems.append("the Alertmanager Secret has no key alertmanager.yaml")
    # Grafana: the sidecar's label and folder annotation are those of every dashboard ConfigMap.
    sidecar = stack["grafana"]["sidecar"]["dashboards"]
    for generator in kustomization["configMapGenerator"]:
        options = generator.get("options", {})
        if options.get("labels", {}).get(sidecar["label"]) != sidecar["labelValue"]:
            problems.append(f"{generator['name']} lacks the sidecar's label {sidecar['label']}")
        if sidecar["folderAnnotation"] not in options.get("annotations", {}):
            problems.append(f"{generator['name']} lacks {sidecar['folderAnnotation']}")
        if not options.get("disableNameSuffixHash"):
            problems.append(f"{generator['name']}: a hashed name leaves stale dashboards")
    # Prometheus: every PrometheusRule is selected, and every job the rules name is scraped.
    prometheus = stack["prometheus"]["prometheusSpec"]
    if prometheus.get("ruleSelectorNilUsesHelmValues") is not False:
        problems.append("Prometheus selects only PrometheusRules labelled with the release")
    jobs = {job["job_name"]: job for job in prometheus["additionalScrapeConfigs"]}
    rules = SERVICE_RULES.read_text()
    for job in re.findall(r'up\{job="([^"]+)"\}', rules):
        if job not in jobs:
            problems.append(f"the rules watch job {job!r}, which is not scraped")
    gateway = jobs.get("pushgateway", {})
    if gateway.get("honor_labels") is not True:
        problems.append("the Pushgateway job must honor the pushed labels")
    # The code location pushes to the gateway Prometheus scrapes and alerts the stack's
    # Alertmanager (the chart names its Service <fullnameOverride>-alertmanager).
    [deployment] = dagster["dagster-user-deployments"]["deployments"]
    env = {item["name"]: item.get("value") for item in deployment["env"]}
    targets = [t for s in gateway.get("static_configs", []) for t in s["targets"]]
    if len(targets) != 1:
        return [*problems, f"the Pushgateway job has targets {targets}, not one"]
    [target] = targets
    if env.get("MLOPS_PUSHGATEWAY_URL") != f"http://{target}":
        problems.append(f"MLOPS_PUSHGATEWAY_URL is not the scraped gateway {target}")
    release_name = re.search(r"--set fullnameOverride=(\S+)", commands)
    if not release_name or not target.startswith(f"{release_name.group(1)}.{MONITORING}.svc:"):
        problems.append(f"the Pushgateway chart's Service is not {target}")
    alertmanager = f"http://{stack['fullnameOverride']}-alertmanager.{MONITORING}.svc:9093"
    if env.get("MLOPS_ALERTMANAGER_URL") != alertmanager:
        problems.append(f"MLOPS_ALERTMANAGER_URL is not {alertmanager}")
    return problems


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    return yaml.safe_load(OBSERVABILITY_VALUES.read_text())


def test_observability_values_pin_the_charts() -> None:
    commands = _install_commands()
    assert re.search(r"kube-prometheus-stack \\\n#\s+--version \d+\.\d+\.\d+ ", commands)
    assert re.search(r"prometheus-pushgateway \\\n#\s+--version \d+\.\d+\.\d+ ", commands)
    assert "kubectl apply -k deploy/observability" in commands


def test_observability_values_meet_the_kustomization_and_the_code_location(
    stack: dict[str, Any], values: dict[str, Any]
) -> None:
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    assert observability_wiring_problems(stack, kustomization, values) == []


def test_observability_wiring_mistakes_are_caught(
    stack: dict[str, Any], values: dict[str, Any]
) -> None:
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    broken = copy.deepcopy(stack)
    broken["alertmanager"]["alertmanagerSpec"]["configSecret"] = "alertmanager-config"
    broken["grafana"]["sidecar"]["dashboards"]["label"] = "dashboard"
    broken["prometheus"]["prometheusSpec"]["additionalScrapeConfigs"].pop()  # the gateway
    problems = observability_wiring_problems(broken, kustomization, values)
    assert "Alertmanager reads Secret 'alertmanager-config': not generated" in problems
    assert "mlops-dashboard-serving lacks the sidecar's label dashboard" in problems
    assert "the rules watch job 'pushgateway', which is not scraped" in problems


def test_grafana_signs_in_with_a_secret(stack: dict[str, Any]) -> None:
    grafana = stack["grafana"]
    assert "adminPassword" not in grafana
    admin = grafana["admin"]
    commands = _install_commands()
    assert f"secret generic {admin['existingSecret']}" in commands
    for key in (admin["userKey"], admin["passwordKey"]):
        assert f"--from-literal={key}=" in commands
    assert grafana["grafana.ini"]["auth.anonymous"]["enabled"] is False


def test_observability_values_scrape_both_colours_of_the_service(stack: dict[str, Any]) -> None:
    jobs = {
        j["job_name"]: j for j in stack["prometheus"]["prometheusSpec"]["additionalScrapeConfigs"]
    }
    relabel = jobs["mlops-assets-service"]["relabel_configs"]
    kept = {r["source_labels"][0]: r["regex"] for r in relabel if r.get("action") == "keep"}
    assert kept["__meta_kubernetes_pod_label_app_kubernetes_io_name"] == "mlops-assets-service"
    assert kept["__meta_kubernetes_pod_ready"] == "true"
    # The serving dashboard tells the colours apart by this label.
    targets = {r.get("target_label") for r in relabel}
    assert "colour" in targets
    # [template:end]
