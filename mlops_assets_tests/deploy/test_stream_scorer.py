"""The stream scorer on Kubernetes (deploy/stream-scorer), checked without a cluster.

kustomize renders the directory as `kubectl apply -k` would; every object is validated
strictly against the Kubernetes schemas (kubernetes-validate). The rest ties the scorer to the
code location of deploy/helm/values.yaml: the same image and tag, the same Secret (so the
scoring bundles and the stream sink resolve under the same lake), the image's user, and a
readiness check that is run here against real sockets.
"""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_assets.lib import scoring_bundles, stream_sink
from mlops_assets_tests.deploy.manifests import kustomize, named, validation_errors

ROOT = Path(__file__).resolve().parents[2]
SCORER = ROOT / "deploy" / "stream-scorer"
VALUES = ROOT / "deploy" / "helm" / "values.yaml"
SECRETS = ROOT / "deploy" / "helm" / "secrets.example.yaml"
DOCKERFILE = ROOT / "Dockerfile"

APP = "mlops-assets-stream-scorer"
NAME_LABEL = "app.kubernetes.io/name"
EXPECTED = {
    ("ServiceAccount", APP),
    ("ConfigMap", f"{APP}-settings"),
    ("Deployment", APP),
    ("NetworkPolicy", APP),
}
# What the scorer needs from the code location's Secret: the lake (bundles in, predictions
# out), its credentials, and the key the pipeline pseudonymizes tail numbers with.
FROM_THE_PIPELINE = (
    "MLOPS_LAKE_URL",
    "MLOPS_PSEUDONYM_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
)
# Roots that default to <MLOPS_LAKE_URL>/...: set for one process only, they would part ways.
ROOT_VARIABLES = (scoring_bundles.ROOT_VARIABLE, stream_sink.ROOT_VARIABLE)


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return kustomize(SCORER)


@pytest.fixture(scope="module")
def deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return named(objects, "Deployment")[APP]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    [only] = deployment["spec"]["template"]["spec"]["containers"]
    return dict(only)


def code_location() -> dict[str, Any]:
    """The user-code deployment of the Dagster chart's values."""
    values = yaml.safe_load(VALUES.read_text())
    [deployment] = values["dagster-user-deployments"]["deployments"]
    return dict(deployment)


def settings_map(objects: list[dict[str, Any]]) -> dict[str, str]:
    return dict(named(objects, "ConfigMap")[f"{APP}-settings"]["data"])


def kafka_ports(url: str) -> set[int]:
    """The ports of the bootstrap servers of a ``kafka://host:port[,host:port]`` URL."""
    scheme, _, servers = url.partition("://")
    assert scheme == "kafka", url
    return {int(server.rsplit(":", 1)[1]) for server in servers.split(",")}


def test_renders_every_object_strictly_valid(objects: list[dict[str, Any]]) -> None:
    found = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert sorted(found) == sorted(EXPECTED)
    assert {o["metadata"]["namespace"] for o in objects} == {"mlops"}
    assert validation_errors(objects) == []
    # Secrets never go through git: the code location's is created in the cluster.
    assert not any(o["kind"] == "Secret" for o in objects)


def test_a_misspelt_field_fails_validation(tmp_path: Path) -> None:
    copy = Path(shutil.copytree(SCORER, tmp_path / "stream-scorer"))
    path = copy / "deployment.yaml"
    text = path.read_text()
    assert text.count("allowPrivilegeEscalation: false") == 1
    path.write_text(text.replace("allowPrivilegeEscalation", "allowPrivilegeEscalations"))
    assert validation_errors(kustomize(copy)) == [
        f"Deployment/{APP} at spec/template/spec/containers/0/securityContext: "
        "Additional properties are not allowed ('allowPrivilegeEscalations' was unexpected)"
    ]


def test_runs_the_code_locations_image_and_the_project_command(
    deployment: dict[str, Any],
) -> None:
    ctr = container(deployment)
    image = code_location()["image"]
    assert ctr["image"] == f"{image['repository']}:{image['tag']}"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert ctr["command"] == [next(iter(scripts)), "stream-score"]
    assert "ports" not in ctr  # it serves nothing


def test_settings_come_from_the_code_locations_secret(
    objects: list[dict[str, Any]], deployment: dict[str, Any]
) -> None:
    ctr = container(deployment)
    env = {var["name"]: var.get("value") for var in ctr["env"]}
    assert env["MLOPS_ENV"] == "production"
    secrets = [s["secretRef"]["name"] for s in ctr["envFrom"] if "secretRef" in s]
    assert secrets == [ref["name"] for ref in code_location()["envSecrets"]]
    assert not any(s["secretRef"].get("optional") for s in ctr["envFrom"] if "secretRef" in s)
    example = {
        doc["metadata"]["name"]: doc["stringData"]
        for doc in yaml.safe_load_all(SECRETS.read_text())
        if doc
    }
    for name in FROM_THE_PIPELINE:
        assert name in example[secrets[0]], f"{secrets[0]} has no {name}"
    maps = [s["configMapRef"]["name"] for s in ctr["envFrom"] if "configMapRef" in s]
    assert maps == [f"{APP}-settings"]
    data = settings_map(objects)
    assert kafka_ports(data["MLOPS_STREAM_URL"])
    assert data["MLOPS_LOG_FORMAT"] == "json"
    # The roots of the bundles and the sink are the defaults under MLOPS_LAKE_URL on both
    # sides: set by neither the scorer nor the code location.
    location_env = {var["name"] for var in code_location()["env"]}
    for name in ROOT_VARIABLES:
        assert name not in env and name not in data and name not in location_env, name


def test_the_broker_url_is_one_the_scorer_takes(objects: list[dict[str, Any]]) -> None:
    brokers = pytest.importorskip("mlops_assets.streaming.brokers")
    url = settings_map(objects)["MLOPS_STREAM_URL"]
    assert brokers.parse_url(url).scheme == "kafka"


def test_pod_runs_unprivileged_on_a_read_only_filesystem(
    objects: list[dict[str, Any]], deployment: dict[str, Any]
) -> None:
    pod = deployment["spec"]["template"]["spec"]
    user = re.search(r"useradd --uid (\d+) --gid (\d+)", DOCKERFILE.read_text())
    assert user is not None
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True
    assert (context["runAsUser"], context["runAsGroup"]) == (int(user[1]), int(user[2]))
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    account = named(objects, "ServiceAccount")[pod["serviceAccountName"]]
    assert account["automountServiceAccountToken"] is False
    ctr = container(deployment)
    assert ctr["securityContext"]["readOnlyRootFilesystem"] is True
    assert ctr["securityContext"]["allowPrivilegeEscalation"] is False
    assert ctr["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert ctr["resources"]["requests"] and ctr["resources"]["limits"]
    # The one writable path, TMPDIR, is an emptyDir.
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in ctr["volumeMounts"]}
    env = {var["name"]: var.get("value") for var in ctr["env"]}
    assert "emptyDir" in volumes[mounts[env["TMPDIR"]]]


def test_rollouts_hand_the_partitions_over(deployment: dict[str, Any]) -> None:
    spec = deployment["spec"]
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert 0 < spec["progressDeadlineSeconds"] <= 900
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert labels["app.kubernetes.io/part-of"] == "mlops-assets"
    # Time for the micro-batch under way to be written and acknowledged after SIGTERM.
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] >= 30


def test_network_policy_admits_nothing_and_reaches_dns_storage_and_kafka(
    objects: list[dict[str, Any]], deployment: dict[str, Any]
) -> None:
    [policy] = named(objects, "NetworkPolicy").values()
    spec = policy["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    assert spec["ingress"] == []
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert spec["podSelector"]["matchLabels"].items() <= labels.items()
    egress = {(p["port"], p["protocol"]) for rule in spec["egress"] for p in rule["ports"]}
    kafka = {(port, "TCP") for port in kafka_ports(settings_map(objects)["MLOPS_STREAM_URL"])}
    assert egress == {(53, "UDP"), (53, "TCP"), (443, "TCP"), *kafka}


def test_ready_means_connected_to_a_broker(deployment: dict[str, Any]) -> None:
    ctr = container(deployment)
    # Not alive-or-restart: a scorer waiting for its first champion has no connection yet.
    assert "livenessProbe" not in ctr and "startupProbe" not in ctr
    command = ctr["readinessProbe"]["exec"]["command"]
    assert command == ["python", "-m", "mlops_assets.streaming.health"]
