"""The single-host deployment (deploy/compose.yaml), checked without a Docker engine.

`docker compose config` validates the file where the compose plugin exists; the structural
checks below always run: services, variables, what reaches which service, ports, paths.
"""

from __future__ import annotations

import importlib.util  # [template:only with_streaming]
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_assets import registry_access
from mlops_assets.lib import release  # [template:only with_service_delivery]
from mlops_assets.lib import scoring_bundles as bundles  # [template:only with_streaming]
from mlops_assets.lib import stream_sink as sink  # [template:only with_streaming]
from mlops_assets.resources.environments import PRODUCTION_VARS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / "compose" / ".env.example"
INSTANCE = DEPLOY / "dagster.yaml"
WORKSPACE = DEPLOY / "compose" / "workspace.yaml"
DAGSTER_HOME = "/opt/dagster/dagster_home"  # ENV DAGSTER_HOME of the Dockerfile

SERVICES = {
    "postgres",
    "minio",
    "minio-init",
    "registry-init",
    "mlflow",
    "registry-accounts",
    "dagster-code",
    "dagster-webserver",
    "dagster-daemon",
    "ui-proxy",
    "bento",
    "prometheus",  # [template:only with_observability]
    "pushgateway",  # [template:only with_observability]
    "alertmanager",  # [template:only with_observability]
    "grafana",  # [template:only with_observability]
    "kafka",  # [template:only with_streaming]
    "kafka-topics",  # [template:only with_streaming]
    "stream-scorer",  # [template:only with_streaming]
}
# [template:if with_observability]
OBSERVABILITY_SERVICES = ("prometheus", "pushgateway", "alertmanager", "grafana")
# [template:end]
DAGSTER_SERVICES = ("dagster-code", "dagster-webserver", "dagster-daemon")
ONE_SHOT = [
    "minio-init",
    "registry-init",
    "registry-accounts",
    "kafka-topics",  # [template:only with_streaming]
]
# ${VAR}, ${VAR:-default}, ${VAR:?message}, $VAR; `$$` is a literal dollar.
VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}|\$([A-Za-z_][A-Za-z0-9_]*)")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def env_example() -> dict[str, str]:
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"not KEY=value: {line!r}"
            assert key not in pairs, f"{key} twice in .env.example"
            pairs[key] = value
    return pairs


def variables_used() -> set[str]:
    text = "\n".join(
        line for line in COMPOSE.read_text().splitlines() if not line.lstrip().startswith("#")
    )
    return {
        match.group(1) or match.group(2)
        for match in VARIABLE.finditer(text)
        if match.group(0) != "$$"
    }


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {key: str(value) for key, value in env.items()}


def _docker_compose_works() -> bool:
    if shutil.which("docker") is None:
        return False
    done = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, text=True, timeout=30
    )
    return done.returncode == 0


def test_docker_compose_config() -> None:
    if not _docker_compose_works():
        pytest.skip("`docker compose` is not available here (no compose plugin)")
    done = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_every_service_is_there(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == SERVICES
    for name, service in compose["services"].items():
        for dependency in service.get("depends_on", {}):
            assert dependency in compose["services"], f"{name} depends on unknown {dependency}"


def test_every_variable_is_in_env_example() -> None:
    used = variables_used()
    listed = set(env_example())
    assert used - listed == set(), "used in compose.yaml, missing in .env.example"
    assert listed - used == set(), "listed in .env.example, used nowhere"


def test_env_example_holds_no_real_secret() -> None:
    for key, value in env_example().items():
        if re.search(r"PASSWORD|SECRET|API_KEY", key):
            assert value == "change-me", f"{key} in .env.example must be a placeholder"
    ignore = (DEPLOY / "compose" / ".gitignore").read_text().splitlines()
    assert ".env" in ignore


def test_production_settings_reach_every_dagster_process(compose: dict[str, Any]) -> None:
    # The instance config (deploy/dagster.yaml) reads its connection from the environment.
    instance_vars = set(re.findall(r"env:\s*([A-Z_][A-Z0-9_]*)", INSTANCE.read_text()))
    assert {"DAGSTER_PG_HOST", "DAGSTER_PG_PASSWORD"} <= instance_vars
    for name in DAGSTER_SERVICES:
        env = environment(compose["services"][name])
        missing = (set(PRODUCTION_VARS) | instance_vars) - set(env)
        assert not missing, f"{name} lacks {sorted(missing)}"
        assert env["MLOPS_ENV"] == "production"
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert env["DAGSTER_PG_HOST"] == "postgres"
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
            assert env[key], f"{name} lacks {key}"


def test_published_ports_bind_to_loopback(compose: dict[str, Any]) -> None:
    published = 0
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name}: {port}"
            published += 1
    assert published >= 5
    internal = ["postgres", "dagster-code", "dagster-webserver"]
    internal.append("pushgateway")  # [template:only with_observability]
    internal.append("kafka")  # [template:only with_streaming]
    for name in internal:
        assert "ports" not in compose["services"][name], f"{name} must stay internal"


def test_referenced_paths_exist(compose: dict[str, Any]) -> None:
    named = set(compose.get("volumes", {}))
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in named, f"{name}: volume {source} is not declared"
        build = service.get("build")
        if build:
            context = DEPLOY / build["context"]
            assert (context / build.get("dockerfile", "Dockerfile")).is_file()


def test_scripts_parse() -> None:
    scripts = ["postgres-init.sh", "minio-init.sh"]
    scripts.append("kafka-topics.sh")  # [template:only with_streaming]
    for script in scripts:
        done = subprocess.run(["sh", "-n", str(DEPLOY / "compose" / script)], capture_output=True)
        assert done.returncode == 0, done.stderr


def test_dagster_processes_share_the_instance_and_the_workspace(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in DAGSTER_SERVICES:
        mounts = services[name]["volumes"]
        assert f"./dagster.yaml:{DAGSTER_HOME}/dagster.yaml:ro" in mounts, name
        assert f"dagster-storage:{DAGSTER_HOME}/storage" in mounts, name
        assert services[name]["image"] == "${MLOPS_IMAGE}"

    code = services["dagster-code"]["command"]
    assert code[:3] == ["dagster", "api", "grpc"]
    assert code[code.index("-m") + 1] == "mlops_assets.definitions"
    [server] = [
        entry["grpc_server"] for entry in yaml.safe_load(WORKSPACE.read_text())["load_from"]
    ]
    assert server["host"] == "dagster-code"
    assert str(server["port"]) == code[code.index("-p") + 1]
    for name in ("dagster-webserver", "dagster-daemon"):
        command = services[name]["command"]
        workspace = command[command.index("-w") + 1]
        assert f"./compose/workspace.yaml:{workspace}:ro" in services[name]["volumes"]
        assert services[name]["depends_on"]["dagster-code"]["condition"] == "service_healthy"


def test_long_running_services_have_healthchecks(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if name in ONE_SHOT:
            assert service["restart"] == "no"
            continue
        assert "healthcheck" in service, f"{name} has no healthcheck"
        assert service["restart"] == "unless-stopped"


def test_mlflow_server(compose: dict[str, Any]) -> None:
    mlflow = compose["services"]["mlflow"]
    shell, flag, script = mlflow["command"]
    assert (shell, flag) == ("sh", "-c")
    # The configuration is written where the server reads it, then the basic-auth app starts.
    assert script == (
        'mlops-assets registry-auth-config "$$MLFLOW_AUTH_CONFIG_PATH"'
        f" && exec mlflow server --app-name {registry_access.APP_NAME}"
    )
    env = environment(mlflow)
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith(
        "postgresql+psycopg2://"
    )  # psycopg2, not psycopg 3
    assert env["MLFLOW_BACKEND_STORE_URI"].endswith("@postgres:5432/${MLFLOW_PG_DB}")
    assert env["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"
    # The Host header of the Dagster processes' requests must be allowed.
    allowed = env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert "mlflow:5000" in allowed
    postgres = environment(compose["services"]["postgres"])
    assert postgres["MLFLOW_PG_DB"] == "${MLFLOW_PG_DB}"
    assert postgres["MLFLOW_AUTH_PG_DB"] == "${MLFLOW_AUTH_PG_DB}"
    init = (DEPLOY / "compose" / "postgres-init.sh").read_text()
    assert '"$MLFLOW_PG_DB" "$MLFLOW_AUTH_PG_DB"' in init


def test_mlflow_accounts_live_in_postgres_with_secrets_from_the_env_file(
    compose: dict[str, Any],
) -> None:
    env = environment(compose["services"]["mlflow"])
    assert env["MLFLOW_AUTH_CONFIG_PATH"].startswith("/tmp/")  # the image's user may write it
    database = env[registry_access.AUTH_DATABASE_VAR]
    assert database.startswith("postgresql+psycopg2://")
    assert database.endswith("@postgres:5432/${MLFLOW_AUTH_PG_DB}")
    assert env["MLFLOW_AUTH_ADMIN_USERNAME"] == "${MLFLOW_ADMIN_USERNAME}"
    for key in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", env[key]), f"{key}: no default allowed"


def test_registry_accounts_before_the_pipeline(compose: dict[str, Any]) -> None:
    """The one-shot signs in as the administrator; the Dagster processes as the pipeline."""
    services = compose["services"]
    accounts = services["registry-accounts"]
    assert accounts["command"] == ["mlops-assets", "registry-accounts"]
    assert accounts["depends_on"]["mlflow"]["condition"] == "service_healthy"
    env = environment(accounts)
    server = environment(services["mlflow"])
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["MLFLOW_TRACKING_USERNAME"] == server["MLFLOW_AUTH_ADMIN_USERNAME"]
    assert env["MLFLOW_TRACKING_PASSWORD"] == server["MLFLOW_AUTH_ADMIN_PASSWORD"]
    for name in (
        registry_access.PIPELINE_USERNAME_VAR,
        registry_access.PIPELINE_PASSWORD_VAR,
        registry_access.READER_USERNAME_VAR,
        registry_access.READER_PASSWORD_VAR,
    ):
        assert env[name], name
    for name in DAGSTER_SERVICES:
        dagster = environment(services[name])
        assert dagster["MLFLOW_TRACKING_USERNAME"] == env[registry_access.PIPELINE_USERNAME_VAR]
        assert dagster["MLFLOW_TRACKING_PASSWORD"] == env[registry_access.PIPELINE_PASSWORD_VAR]
    code = services["dagster-code"]["depends_on"]
    assert code["registry-accounts"]["condition"] == "service_completed_successfully"


def test_the_ui_is_reached_through_the_proxy_only(compose: dict[str, Any]) -> None:
    services = compose["services"]
    webserver = services["dagster-webserver"]
    assert "ports" not in webserver and "network_mode" not in webserver
    command = webserver["command"]
    proxy = services["ui-proxy"]
    assert re.fullmatch(r"quay\.io/oauth2-proxy/oauth2-proxy:v\d+\.\d+\.\d+-alpine", proxy["image"])
    env = environment(proxy)
    assert (
        env["OAUTH2_PROXY_UPSTREAMS"]
        == f"http://dagster-webserver:{command[command.index('-p') + 1]}/"
    )
    listen = env["OAUTH2_PROXY_HTTP_ADDRESS"].rsplit(":", 1)[1]
    assert proxy["ports"] == [f"127.0.0.1:${{DAGSTER_UI_PORT}}:{listen}"]
    assert proxy["depends_on"]["dagster-webserver"]["condition"] == "service_healthy"
    # OIDC from the env file; the secrets have no default.
    assert env["OAUTH2_PROXY_PROVIDER"] == "oidc"
    assert env["OAUTH2_PROXY_OIDC_ISSUER_URL"] == "${OIDC_ISSUER_URL}"
    for key in ("OAUTH2_PROXY_CLIENT_SECRET", "OAUTH2_PROXY_COOKIE_SECRET"):
        assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]+\}", env[key]), f"{key}: no default allowed"
    assert env["OAUTH2_PROXY_REDIRECT_URL"].endswith("/oauth2/callback")
    # The health check asks the proxy's own unauthenticated endpoint, on the port it listens on.
    assert f"http://localhost:{listen}/ping" in proxy["healthcheck"]["test"]


def test_bento_service(compose: dict[str, Any]) -> None:
    bento = compose["services"]["bento"]
    assert bento["profiles"] == ["serving"]
    env = environment(bento)
    assert env["MLOPS_ENV"] == "production"
    assert env["MLOPS_API_KEY"].startswith("${MLOPS_API_KEY")
    assert env["BENTOML_DO_NOT_TRACK"] == "true"


# [template:if with_service_delivery]
def test_bento_runs_the_released_image(compose: dict[str, Any]) -> None:
    """The image is the one variable a release writes (release.env), in the release's scheme."""
    image = compose["services"]["bento"]["image"]
    match = re.fullmatch(r"\$\{MLOPS_SERVICE_IMAGE:-([^}]+)\}", image)
    assert match, image
    for reference in (match.group(1), env_example()["MLOPS_SERVICE_IMAGE"]):
        repository, _, version = reference.rpartition(":")
        assert reference == release.image_reference(f"flight_delay_service:{version}")
        assert repository == release.DEFAULT_IMAGE_REPOSITORY


# [template:end]
def test_bento_healthcheck_asks_the_readiness_endpoint(compose: dict[str, Any]) -> None:
    """The same readiness the Kubernetes probe asks for, on the port the service listens on."""
    bento = compose["services"]["bento"]
    test = bento["healthcheck"]["test"]
    assert test[0] == "CMD"
    urls = re.findall(r"https?://[^'\"\s]+", " ".join(test))
    assert urls == ["http://localhost:3000/readyz"]
    assert [port.rsplit(":", 1)[1] for port in bento["ports"]] == ["3000"]
    for key in ("interval", "timeout", "retries"):
        assert bento["healthcheck"][key]
    # [template:if with_streaming]


# -- profile `streaming` --------------------------------------------------------------------
STREAMING_SERVICES = ("kafka", "kafka-topics", "stream-scorer")
# What the scorer shares with the Dagster processes: where the champion's bundle is published,
# where predictions land, the lake's store and the pseudonym key.
SHARED_WITH_THE_SCORER = (
    "MLOPS_ENV",
    "MLOPS_LAKE_URL",
    bundles.ROOT_VARIABLE,
    sink.ROOT_VARIABLE,
    "MLOPS_PSEUDONYM_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
)


def kafka_settings(compose: dict[str, Any]) -> dict[str, str]:
    return environment(compose["services"]["kafka"])


def listener_port(listeners: str, name: str) -> int:
    """The port of one listener in a Kafka listener list (``NAME://host:port,...``)."""
    [port] = [
        int(item.rsplit(":", 1)[1])
        for item in listeners.split(",")
        if item.startswith(f"{name}://")
    ]
    return port


def test_streaming_services_are_an_optional_profile(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in STREAMING_SERVICES:
        assert services[name]["profiles"] == ["streaming"], name
    # The official image, pinned: a new broker arrives by a reviewed change only.
    assert re.fullmatch(r"apache/kafka:\d+\.\d+\.\d+", services["kafka"]["image"])
    assert services["kafka-topics"]["image"] == services["kafka"]["image"]
    assert services["stream-scorer"]["image"] == "${MLOPS_IMAGE}"


def test_kafka_is_one_kraft_node_on_an_internal_network(compose: dict[str, Any]) -> None:
    services = compose["services"]
    kafka = services["kafka"]
    env = kafka_settings(compose)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert voters == [
        f"{env['KAFKA_NODE_ID']}@kafka:{listener_port(env['KAFKA_LISTENERS'], controller)}"
    ]
    assert env["CLUSTER_ID"]  # required by the image in KRaft mode
    # One broker: internal topics with more replicas than brokers would never be created.
    for key, value in env.items():
        if key.endswith(("_REPLICATION_FACTOR", "_MIN_ISR")):
            assert value == "1", key
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    # The log dirs on a named volume: topics and the consumer group's offsets outlive the container.
    assert kafka["volumes"] == [f"kafka-data:{env['KAFKA_LOG_DIRS']}"]
    # No published port; the network is internal and only the scorer and the topic setup join it.
    assert "ports" not in kafka
    assert compose["networks"]["stream"] == {"internal": True}
    on_stream = {name for name, s in services.items() if "stream" in s.get("networks", [])}
    assert on_stream == set(STREAMING_SERVICES)
    assert kafka["networks"] == ["stream"]
    # The health check asks the broker on its own client listener.
    port = listener_port(env["KAFKA_LISTENERS"], "PLAINTEXT")
    assert f"localhost:{port}" in kafka["healthcheck"]["test"]
    assert kafka["healthcheck"]["start_period"]


def test_the_scorer_reaches_the_advertised_listener(compose: dict[str, Any]) -> None:
    env = kafka_settings(compose)
    [advertised] = env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    scorer = environment(compose["services"]["stream-scorer"])
    # Clients are sent to the advertised address after the first contact: it must be the one
    # the scorer dials, on the port the broker listens on.
    assert scorer["MLOPS_STREAM_URL"] == advertised.replace("PLAINTEXT://", "kafka://")
    port = listener_port(env["KAFKA_LISTENERS"], "PLAINTEXT")
    assert scorer["MLOPS_STREAM_URL"] == f"kafka://kafka:{port}"
    topics = environment(compose["services"]["kafka-topics"])
    assert topics["KAFKA_BOOTSTRAP"] == f"kafka:{port}"


def test_topics_are_created_before_the_scorer(compose: dict[str, Any]) -> None:
    services = compose["services"]
    setup = services["kafka-topics"]
    assert setup["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert setup["entrypoint"] == ["/bin/sh", "/kafka-topics.sh"]
    assert "./compose/kafka-topics.sh:/kafka-topics.sh:ro" in setup["volumes"]
    script = (DEPLOY / "compose" / "kafka-topics.sh").read_text()
    assert "--if-not-exists" in script  # every `up` runs it again
    env = environment(setup)
    assert int(env["STREAM_PARTITIONS"]) >= 1
    scorer = services["stream-scorer"]["depends_on"]
    assert scorer["kafka"]["condition"] == "service_healthy"
    assert scorer["kafka-topics"]["condition"] == "service_completed_successfully"
    assert scorer["minio-init"]["condition"] == "service_completed_successfully"


def test_topics_are_the_stream_subjects(compose: dict[str, Any]) -> None:
    subjects = pytest.importorskip("mlops_assets.streaming.subjects")
    topics = environment(compose["services"]["kafka-topics"])["STREAM_TOPICS"].split()
    assert sorted(topics) == sorted(
        [subjects.SCHEDULED, subjects.PREDICTIONS, subjects.DEAD_LETTER]
    )


def test_stream_scorer_shares_the_pipeline_settings(compose: dict[str, Any]) -> None:
    services = compose["services"]
    scorer = services["stream-scorer"]
    assert scorer["command"] == ["mlops-assets", "stream-score"]
    env = environment(scorer)
    for name in DAGSTER_SERVICES:
        dagster = environment(services[name])
        for key in SHARED_WITH_THE_SCORER:
            assert env[key] == dagster[key], f"{key}: stream-scorer and {name} differ"
    # Stated, and equal to the defaults the lake would give (one place for each, either way).
    for module in (bundles, sink):
        unset = {k: v for k, v in env.items() if k != module.ROOT_VARIABLE}
        assert env[module.ROOT_VARIABLE] == module.default_root(unset), module.ROOT_VARIABLE
    # It needs neither the instance's database nor the registry: no credentials of theirs.
    assert not {k for k in env if k.startswith(("DAGSTER_PG_", "MLFLOW_"))}
    assert set(scorer["networks"]) == {"default", "stream"}  # MinIO and Kafka
    assert scorer["stop_grace_period"]


def test_scorer_health_is_the_broker_connection_check(compose: dict[str, Any]) -> None:
    test = compose["services"]["stream-scorer"]["healthcheck"]["test"]
    assert test == ["CMD", "python", "-m", "mlops_assets.streaming.health"]
    assert importlib.util.find_spec("mlops_assets.streaming.health") is not None
    # [template:end]
    # [template:if with_observability]


# -- profile `observability` ----------------------------------------------------------------
def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source of a service's volumes."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        found[target] = source
    return found


def test_observability_services_are_an_optional_profile(compose: dict[str, Any]) -> None:
    for name in OBSERVABILITY_SERVICES:
        service = compose["services"][name]
        assert service["profiles"] == ["observability"], name
        # Pinned images: a new Prometheus or Grafana arrives by a reviewed change only.
        image = service["image"]
        assert re.fullmatch(r"[a-z/]+:v?\d+\.\d+\.\d+", image), f"{name}: {image}"


def test_dagster_processes_know_the_gateway_and_alertmanager(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("dagster-code", "dagster-daemon"):
        env = environment(services[name])
        assert env["MLOPS_PUSHGATEWAY_URL"] == "http://pushgateway:9091", name
        assert env["MLOPS_ALERTMANAGER_URL"] == "http://alertmanager:9093", name


def test_prometheus_reads_the_compose_config_and_the_rules(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    config_path = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    config_path = config_path.split("=", 1)[1]
    volumes = mounts(prometheus)
    assert volumes[config_path] == "./observability/prometheus.compose.yml"
    config = yaml.safe_load((DEPLOY / "observability" / "prometheus.compose.yml").read_text())
    # rule_files are relative to the config file, in the container as in the repository.
    for rule_file in config["rule_files"]:
        folder, _, name = rule_file.rpartition("/")
        container_folder = str(Path(config_path).parent / folder)
        assert volumes[container_folder] == f"./observability/{folder}", rule_file
        assert (DEPLOY / "observability" / folder / name).is_file(), rule_file
    # Every target is a compose service at the port it listens on inside the network.
    ports = {"bento": 3000, "pushgateway": 9091, "alertmanager": 9093, "localhost": 9090}
    targets = [
        target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    ] + [
        t for am in config["alerting"]["alertmanagers"] for t in am["static_configs"][0]["targets"]
    ]
    for target in targets:
        host, port = target.split(":")
        assert host == "localhost" or host in compose["services"], target
        assert ports[host] == int(port), target


def test_alertmanager_reads_the_repository_config(compose: dict[str, Any]) -> None:
    alertmanager = compose["services"]["alertmanager"]
    config_path = next(a for a in alertmanager["command"] if a.startswith("--config.file="))
    assert mounts(alertmanager)[config_path.split("=", 1)[1]] == "./observability/alertmanager.yml"


def test_grafana_is_provisioned_and_signed_in(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    env = environment(grafana)
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    # The password comes from the .env only: no default in this file.
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
    volumes = mounts(grafana)
    provisioning = DEPLOY / volumes["/etc/grafana/provisioning"]
    [datasource] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert datasource["isDefault"] is True
    [provider] = yaml.safe_load((provisioning / "dashboards" / "mlops_assets.yml").read_text())[
        "providers"
    ]
    # The provider reads the folder the dashboards are mounted at.
    dashboards = volumes[provider["options"]["path"]]
    assert dashboards == "./observability/dashboards"
    assert sorted((DEPLOY / dashboards).glob("*.json")), "no dashboards to load"
    # [template:end]
