"""The prediction service on Kubernetes (deploy/service), checked without a cluster.

kustomize (the one built into kubectl) renders the base and the example release overlay as
Argo CD would. Every rendered object is validated against the OpenAPI schemas of the target
Kubernetes version (kubernetes-validate, strict: an unknown field fails), the Argo CD
Application against a schema derived from Argo CD's CRD (fixtures/README.md). The rest are
what no schema sees and a cluster shows only at the worst moment: which pods each Service
selects, probes on the container's port, the security context and the writable paths,
Secrets and ConfigMaps that exist, autoscalers and budgets of existing Deployments, the
release's images, the sync waves that make a one-commit switch safe, and the scrape job
(its relabelling replayed on the rendered pods).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from mlops_assets.lib import prediction_log, release
from mlops_assets.serving import auth
from mlops_assets_tests.deploy.manifests import kustomize, named, validation_errors

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "deploy" / "service"
BASE = SERVICE / "base"
EXAMPLE = SERVICE / "overlays" / "example"
SECRETS = SERVICE / "secret.example.yaml"
APPLICATION = SERVICE / "argocd" / "application.yaml"
SCRAPE = SERVICE / "prometheus-scrape.yaml"
APPLICATION_SCHEMA = ROOT / "mlops_assets_tests" / "fixtures" / "argocd_application.schema.json"
# The kubectl of this environment (a dev dependency), not whichever one is on PATH.

NAME_LABEL = "app.kubernetes.io/name"
WAVE = "argocd.argoproj.io/sync-wave"
PORT = 3000  # where `bentoml serve` listens in the image
EXPECTED = {
    ("ServiceAccount", release.APP),
    ("ConfigMap", f"{release.APP}-settings"),
    ("Service", release.APP),
    ("Service", f"{release.APP}-preview"),
    ("NetworkPolicy", release.APP),
    *(
        (kind, f"{release.APP}-{colour}")
        for kind in ("Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget")
        for colour in release.COLOURS
    ),
}


# -- rendering and checks (plain functions, so the bad-input tests call the same code) --------


def selector_problems(objects: list[dict[str, Any]]) -> list[str]:
    """Services that do not select the pods of exactly one Deployment."""
    deployments = named(objects, "Deployment")
    problems = []
    for name, service in named(objects, "Service").items():
        selector = service["spec"]["selector"]
        matching = [
            deployment
            for deployment, obj in deployments.items()
            if selector.items() <= obj["spec"]["template"]["metadata"]["labels"].items()
        ]
        if len(matching) != 1:
            problems.append(f"Service {name} selects {selector}: pods of {matching or 'none'}")
    return problems


def colour_of(service: Mapping[str, Any]) -> str:
    return str(service["spec"]["selector"][release.COLOUR_LABEL])


def container(deployment: Mapping[str, Any]) -> dict[str, Any]:
    [only] = deployment["spec"]["template"]["spec"]["containers"]
    return dict(only)


def port_number(ctr: Mapping[str, Any], port: int | str) -> int:
    """A port by number or by the container's name for it."""
    if isinstance(port, int):
        return port
    [number] = [p["containerPort"] for p in ctr["ports"] if p.get("name") == port]
    return int(number)


def secret_references(objects: Iterable[dict[str, Any]]) -> set[tuple[str, str | None, bool]]:
    """(Secret, key or None for a whole Secret, optional) for every reference in the pods."""
    refs = set()
    for deployment in named(objects, "Deployment").values():
        ctr = container(deployment)
        for var in ctr.get("env", []):
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                refs.add((ref["name"], ref["key"], bool(ref.get("optional"))))
        for source in ctr.get("envFrom", []):
            if "secretRef" in source:
                ref = source["secretRef"]
                refs.add((ref["name"], None, bool(ref.get("optional"))))
    return refs


def wave(obj: Mapping[str, Any]) -> int:
    return int(obj["metadata"].get("annotations", {}).get(WAVE, "0"))


def relabel(labels: dict[str, str], configs: list[dict[str, Any]]) -> dict[str, str] | None:
    """Prometheus relabelling (keep, drop, replace) of one target; None when dropped."""
    labels = dict(labels)
    for config in configs:
        value = config.get("separator", ";").join(
            labels.get(name, "") for name in config.get("source_labels", [])
        )
        match = re.fullmatch(config.get("regex", "(.*)"), value)
        action = config.get("action", "replace")
        if action == "keep" and not match:
            return None
        if action == "drop" and match:
            return None
        if action == "replace" and match:
            # Prometheus writes groups as $1 or ${1}; Python's expand wants \g<1>.
            template = re.sub(r"\$\{?(\d+)\}?", r"\\g<\1>", config.get("replacement", "$1"))
            labels[config["target_label"]] = match.expand(template)
    return labels


def pod_target(deployment: Mapping[str, Any], pod_ip: str = "10.1.2.3") -> dict[str, str]:
    """The labels Prometheus' pod discovery gives a ready pod of ``deployment``."""

    def clean(name: str) -> str:
        return re.sub(r"[^a-zA-Z0-9_]", "_", name)

    template = deployment["spec"]["template"]["metadata"]
    ctr = container(deployment)
    [port] = ctr["ports"]
    target = {
        "__address__": f"{pod_ip}:{port['containerPort']}",
        "__metrics_path__": "/metrics",
        "__meta_kubernetes_namespace": deployment["metadata"]["namespace"],
        "__meta_kubernetes_pod_name": f"{deployment['metadata']['name']}-abc12",
        "__meta_kubernetes_pod_ready": "true",
    }
    for key, value in template.get("labels", {}).items():
        target[f"__meta_kubernetes_pod_label_{clean(key)}"] = value
    for key, value in template.get("annotations", {}).items():
        target[f"__meta_kubernetes_pod_annotation_{clean(key)}"] = value
    return target


def application_errors(application: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(json.loads(APPLICATION_SCHEMA.read_text()))
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(application)
    ]


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return kustomize(BASE)


@pytest.fixture(scope="module")
def example() -> list[dict[str, Any]]:
    return kustomize(EXAMPLE)


@pytest.fixture(params=["base", "example"])
def rendered(
    request: pytest.FixtureRequest, base: list[dict[str, Any]], example: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    return base if request.param == "base" else example


@pytest.fixture
def service_copy(tmp_path: Path) -> Path:
    """A copy of deploy/service to break (the overlay's `../../base` still resolves)."""
    return Path(shutil.copytree(SERVICE, tmp_path / "service"))


# -- rendering and validation ---------------------------------------------------------------
def test_target_version_is_one_the_validator_knows() -> None:
    # The validator silently falls back to an older schema set for a version it lacks.
    versions = kubernetes_validate.utils.all_versions()
    assert release.KUBERNETES_VERSION in versions, versions


def test_renders_every_object(rendered: list[dict[str, Any]]) -> None:
    found = [(o["kind"], o["metadata"]["name"]) for o in rendered]
    assert len(found) == len(set(found)), "an object is defined twice"
    assert set(found) == EXPECTED
    assert {o["metadata"]["namespace"] for o in rendered} == {"mlops"}


def test_every_object_validates_strictly(rendered: list[dict[str, Any]]) -> None:
    assert validation_errors(rendered) == []


def test_secret_example_validates() -> None:
    secrets = [doc for doc in yaml.safe_load_all(SECRETS.read_text()) if doc]
    assert secrets and validation_errors(secrets) == []


def test_a_misspelt_field_fails_validation(service_copy: Path) -> None:
    # The typo a cluster without strict field validation would drop silently, and with it
    # the read-only root filesystem.
    path = service_copy / "base" / "deployment-blue.yaml"
    text = path.read_text()
    assert text.count("readOnlyRootFilesystem: true") == 1
    path.write_text(text.replace("readOnlyRootFilesystem", "readOnlyRootFileSystem"))
    errors = validation_errors(kustomize(service_copy / "overlays" / "example"))
    assert errors == [
        f"Deployment/{release.APP}-blue at spec/template/spec/containers/0/securityContext: "
        "Additional properties are not allowed ('readOnlyRootFileSystem' was unexpected)"
    ]


# -- blue-green -----------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "live"), [("base", "blue"), ("example", "green")])
def test_live_and_preview_services_select_one_colour_each(
    name: str, live: str, base: list[dict[str, Any]], example: list[dict[str, Any]]
) -> None:
    objects = base if name == "base" else example
    services = named(objects, "Service")
    deployments = named(objects, "Deployment")
    assert selector_problems(objects) == []
    idle = release.other_colour(live)
    for service, colour in ((release.APP, live), (f"{release.APP}-preview", idle)):
        selector = services[service]["spec"]["selector"]
        assert selector == {NAME_LABEL: release.APP, release.COLOUR_LABEL: colour}
        pods = deployments[f"{release.APP}-{colour}"]["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= pods.items()
        [port] = services[service]["spec"]["ports"]
        assert port["port"] == 80
        assert port_number(container(deployments[f"{release.APP}-{colour}"]), port["targetPort"])
        assert port_number(container(deployments[f"{release.APP}-{colour}"]), "http") == PORT


def test_a_service_selecting_a_colour_without_deployment_is_caught(service_copy: Path) -> None:
    overlay = service_copy / "overlays" / "example" / "kustomization.yaml"
    text = overlay.read_text()
    assert text.count("value: green") == 1
    overlay.write_text(text.replace("value: green", "value: purple"))
    objects = kustomize(overlay.parent)
    assert validation_errors(objects) == []  # a valid object, the wrong pods
    assert selector_problems(objects) == [
        f"Service {release.APP} selects {{'{NAME_LABEL}': '{release.APP}', "
        f"'{release.COLOUR_LABEL}': 'purple'}}: pods of none"
    ]


def test_colours_differ_only_in_colour(base: list[dict[str, Any]]) -> None:
    for kind in ("Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
        objects = named(base, kind)
        blue, green = (objects[f"{release.APP}-{colour}"] for colour in release.COLOURS)
        as_green = json.loads(
            json.dumps(blue)
            .replace(f'"{release.APP}-blue"', f'"{release.APP}-green"')
            .replace('"colour": "blue"', '"colour": "green"')
        )
        assert as_green == green, kind


def test_pod_labels_tell_the_colours_apart(base: list[dict[str, Any]]) -> None:
    for colour in release.COLOURS:
        deployment = named(base, "Deployment")[f"{release.APP}-{colour}"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert labels[NAME_LABEL] == release.APP
        assert labels["app.kubernetes.io/part-of"] == "mlops-assets"
        assert labels[release.COLOUR_LABEL] == colour
        assert deployment["spec"]["selector"]["matchLabels"] == {
            NAME_LABEL: release.APP,
            release.COLOUR_LABEL: colour,
        }
        # The HPA owns the replica count; a count here would reset it at every sync.
        assert "replicas" not in deployment["spec"]


def test_sync_waves_switch_traffic_after_the_deployments(rendered: list[dict[str, Any]]) -> None:
    services = [o for o in rendered if o["kind"] == "Service"]
    others = [o for o in rendered if o["kind"] != "Service"]
    assert {wave(s) for s in services} == {1}
    assert max(wave(o) for o in others) < min(wave(s) for s in services)
    for o in rendered:
        if o["kind"] in ("Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
            assert o["metadata"]["annotations"][WAVE] == "0", o["metadata"]["name"]
    for deployment in named(rendered, "Deployment").values():
        # A stuck rollout must turn Degraded (and stop the sync) rather than wait forever.
        assert 0 < deployment["spec"]["progressDeadlineSeconds"] <= 900
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


# -- the pods -------------------------------------------------------------------------------
def test_probes_hit_the_service_endpoints(rendered: list[dict[str, Any]]) -> None:
    for name, deployment in named(rendered, "Deployment").items():
        ctr = container(deployment)
        probes = {kind: ctr[kind]["httpGet"] for kind in ("readinessProbe", "livenessProbe")}
        assert probes["readinessProbe"]["path"] == "/readyz", name
        assert probes["livenessProbe"]["path"] == "/livez", name
        startup = ctr["startupProbe"]
        assert startup["httpGet"]["path"] in ("/livez", "/readyz")
        for probe in (*probes.values(), startup["httpGet"]):
            assert port_number(ctr, probe["port"]) == PORT, name
        # Loading the model may take up to a minute before liveness applies.
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 60


def test_pods_run_unprivileged_on_a_read_only_filesystem(rendered: list[dict[str, Any]]) -> None:
    from bentoml._internal.container.generate import BENTO_UID_GID

    accounts = named(rendered, "ServiceAccount")
    for name, deployment in named(rendered, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        # The user `bentoml containerize` creates in the image.
        assert pod["securityContext"]["runAsUser"] == BENTO_UID_GID
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        assert accounts[pod["serviceAccountName"]]["automountServiceAccountToken"] is False
        ctr = container(deployment)
        context = ctr["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, name
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["capabilities"] == {"drop": ["ALL"]}, name
        assert ctr["resources"]["requests"] and ctr["resources"]["limits"], name
        assert pod["topologySpreadConstraints"] or pod.get("affinity", {}).get("podAntiAffinity")


def test_bentoml_writes_only_to_mounted_empty_dirs(rendered: list[dict[str, Any]]) -> None:
    """`bentoml serve` writes its Prometheus multiprocess files under BENTOML_HOME and its
    sockets and temporary files under TMPDIR: both must sit on a writable volume."""
    for deployment in named(rendered, "Deployment").values():
        pod = deployment["spec"]["template"]["spec"]
        ctr = container(deployment)
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m for m in ctr["volumeMounts"]}
        for mount in mounts.values():
            assert "emptyDir" in volumes[mount["name"]]
            assert not mount.get("readOnly")
        env = {var["name"]: var.get("value") for var in ctr["env"]}
        for variable in ("TMPDIR", "BENTOML_HOME"):
            path = Path(env[variable])
            assert any(path == Path(m) or Path(m) in path.parents for m in mounts), variable
        assert "/tmp" in mounts


def test_environment_of_the_service(rendered: list[dict[str, Any]]) -> None:
    configmaps = named(rendered, "ConfigMap")
    for name, deployment in named(rendered, "Deployment").items():
        ctr = container(deployment)
        env = {var["name"]: var for var in ctr["env"]}
        assert env["MLOPS_ENV"]["value"] == "production", name
        assert env["BENTOML_DO_NOT_TRACK"]["value"] == "true", name
        key = env[auth.API_KEY_VARIABLE]["valueFrom"]["secretKeyRef"]
        assert key == {"name": f"{release.APP}-api-key", "key": "api-key"}, name
        maps = [s["configMapRef"]["name"] for s in ctr["envFrom"] if "configMapRef" in s]
        assert maps and set(maps) <= set(configmaps), name
        # The image's state folder is read-only: the log must be told where to go.
        assert any(prediction_log.ROOT_VARIABLE in configmaps[m]["data"] for m in maps)


def test_every_secret_reference_is_in_the_secret_example(rendered: list[dict[str, Any]]) -> None:
    examples = {
        doc["metadata"]["name"]: doc for doc in yaml.safe_load_all(SECRETS.read_text()) if doc
    }
    references = secret_references(rendered)
    assert (f"{release.APP}-api-key", "api-key", False) in references
    for secret, key, _ in references:
        assert secret in examples, f"{secret} is not in secret.example.yaml"
        if key is not None:
            assert key in examples[secret]["stringData"], f"{secret} has no key {key}"
    assert {secret for secret, _, optional in references if not optional} == {
        f"{release.APP}-api-key",
        f"{release.APP}-pseudonym-key",
    }
    # Secrets never go through git: the kustomization does not list the example.
    assert not any(o["kind"] == "Secret" for o in rendered)
    for doc in examples.values():
        assert set(doc["stringData"].values()) == {"change-me"}


def test_autoscalers_and_budgets_target_existing_deployments(
    rendered: list[dict[str, Any]],
) -> None:
    deployments = named(rendered, "Deployment")
    for name, hpa in named(rendered, "HorizontalPodAutoscaler").items():
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
        assert target["name"] in deployments, name
        assert hpa["spec"]["minReplicas"] >= 2
    for name, pdb in named(rendered, "PodDisruptionBudget").items():
        selector = pdb["spec"]["selector"]["matchLabels"]
        matching = [
            d
            for d, obj in deployments.items()
            if selector.items() <= obj["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert matching == [name], name
        assert pdb["spec"]["minAvailable"] == 1
    # A budget of 1 below every autoscaler's minimum leaves room to drain a node.
    hpas = named(rendered, "HorizontalPodAutoscaler").values()
    assert min(h["spec"]["minReplicas"] for h in hpas) > 1


def test_network_policy_admits_clients_and_scrapes_only(rendered: list[dict[str, Any]]) -> None:
    [policy] = named(rendered, "NetworkPolicy").values()
    spec = policy["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    deployments = named(rendered, "Deployment").values()
    for deployment in deployments:
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert spec["podSelector"]["matchLabels"].items() <= labels.items()
    [ingress] = spec["ingress"]
    ctr = container(next(iter(deployments)))
    assert [port_number(ctr, p["port"]) for p in ingress["ports"]] == [PORT]
    namespaces = [
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for peer in ingress["from"]
        if "namespaceSelector" in peer
    ]
    assert namespaces == ["monitoring"]
    assert {"podSelector": {}} in ingress["from"]
    egress = {(p["port"], p["protocol"]) for rule in spec["egress"] for p in rule["ports"]}
    assert egress == {(53, "UDP"), (53, "TCP"), (443, "TCP")}


# -- the release ----------------------------------------------------------------------------
def test_base_holds_the_placeholder_images(base: list[dict[str, Any]]) -> None:
    for colour in release.COLOURS:
        deployment = named(base, "Deployment")[f"{release.APP}-{colour}"]
        assert container(deployment)["image"] == release.placeholder_image(colour)


def test_overlay_replaces_both_placeholders(example: list[dict[str, Any]]) -> None:
    placeholders = {release.placeholder_image(c) for c in release.COLOURS}
    images = [container(d)["image"] for d in named(example, "Deployment").values()]
    assert not placeholders & {image.split(":")[0] for image in images}
    for image in images:
        repository, _, version = image.rpartition(":")
        assert image == release.image_reference(f"flight_delay_service:{version}", repository)
        assert repository == release.DEFAULT_IMAGE_REPOSITORY


def test_overlay_has_the_shape_a_release_writes(example: list[dict[str, Any]]) -> None:
    overlay = yaml.safe_load((EXAMPLE / "kustomization.yaml").read_text())
    assert set(overlay) == {"apiVersion", "kind", "resources", "images", "patches"}
    assert overlay["resources"] == ["../../base"]
    assert [i["name"] for i in overlay["images"]] == [
        release.placeholder_image(c) for c in release.COLOURS
    ]
    for image in overlay["images"]:
        assert set(image) == {"name", "newName", "newTag"}
    colours = {}
    for patch in overlay["patches"]:
        assert patch["target"] == {"kind": "Service", "name": patch["target"]["name"]}
        [op] = yaml.safe_load(patch["patch"])
        assert (op["op"], op["path"]) == ("replace", f"/spec/selector/{release.COLOUR_LABEL}")
        colours[patch["target"]["name"]] = op["value"]
    assert colours == {release.APP: "green", f"{release.APP}-preview": "blue"}
    services = named(example, "Service")
    assert {name: colour_of(s) for name, s in services.items()} == colours


# -- Argo CD and Prometheus -----------------------------------------------------------------
def test_argocd_application(base: list[dict[str, Any]]) -> None:
    application = yaml.safe_load(APPLICATION.read_text())
    assert application_errors(application) == []
    spec = application["spec"]
    assert spec["source"]["path"] == release.APP
    assert spec["source"]["targetRevision"] == "main"
    assert spec["destination"]["namespace"] == base[0]["metadata"]["namespace"]
    assert spec["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    assert "CreateNamespace=true" in spec["syncPolicy"]["syncOptions"]


def test_application_schema_catches_mistakes() -> None:
    application = yaml.safe_load(APPLICATION.read_text())
    misspelt = copy.deepcopy(application)
    misspelt["spec"]["syncPolicy"]["automated"]["selfheal"] = True
    errors = application_errors(misspelt)
    assert any("'selfheal' was unexpected" in e for e in errors), errors
    two_targets = copy.deepcopy(application)
    two_targets["spec"]["destination"]["name"] = "in-cluster"
    assert any(e.startswith("spec/destination") for e in application_errors(two_targets))
    no_project = copy.deepcopy(application)
    del no_project["spec"]["project"]
    assert any("'project' is a required property" in e for e in application_errors(no_project))


def test_scrape_job_keeps_the_service_pods(rendered: list[dict[str, Any]]) -> None:
    [job] = yaml.safe_load(SCRAPE.read_text())["scrape_configs"]
    [discovery] = job["kubernetes_sd_configs"]
    assert discovery["role"] == "pod"
    assert discovery["namespaces"]["names"] == [rendered[0]["metadata"]["namespace"]]
    for name, deployment in named(rendered, "Deployment").items():
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/path"] == "/metrics"
        assert int(annotations["prometheus.io/port"]) == PORT
        target = relabel(pod_target(deployment), job["relabel_configs"])
        assert target is not None, name
        assert target["__address__"] == f"10.1.2.3:{PORT}"
        assert target["__metrics_path__"] == "/metrics"
        assert target["colour"] == deployment["metadata"]["labels"][release.COLOUR_LABEL]


def test_scrape_job_drops_other_pods(base: list[dict[str, Any]]) -> None:
    [job] = yaml.safe_load(SCRAPE.read_text())["scrape_configs"]
    deployment = named(base, "Deployment")[f"{release.APP}-blue"]
    other_app = copy.deepcopy(deployment)
    other_app["spec"]["template"]["metadata"]["labels"][NAME_LABEL] = "something-else"
    opted_out = copy.deepcopy(deployment)
    opted_out["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] = "false"
    loading = pod_target(deployment) | {"__meta_kubernetes_pod_ready": "false"}
    for target in (pod_target(other_app), pod_target(opted_out), loading):
        assert relabel(target, job["relabel_configs"]) is None
