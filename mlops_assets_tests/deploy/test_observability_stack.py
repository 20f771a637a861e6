"""The observability stack's wiring (deploy/observability), checked without Docker or a cluster.

- The compose stack's Prometheus configuration is prometheus.yml with the compose services
  as targets (same jobs, settings and rules), and promtool accepts it.
- Grafana's provisioning: one Prometheus data source, one provider for the dashboards.
- ``kubectl kustomize deploy/observability`` renders what the kube-prometheus-stack release
  reads: a ConfigMap per dashboard labelled for Grafana's sidecar, the Alertmanager
  configuration as a Secret, and PrometheusRules equal to rules/*.yml. The built-in kinds
  validate strictly against the Kubernetes schemas (kubernetes-validate); the generated
  prometheusrules.yaml must be current (a stale copy fails with the command to refresh it).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from mlops_assets_tests.deploy.manifests import kustomize, named, validation_errors
from mlops_assets_tests.deploy.tools import require

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "deploy" / "observability"
DASHBOARDS = OBSERVABILITY / "dashboards"
RULES = OBSERVABILITY / "rules"
GRAFANA = OBSERVABILITY / "grafana" / "provisioning"
# The kubectl of this environment (a dev dependency), not whichever one is on PATH.
NAMESPACE = "monitoring"
# kubectl apply (client side) keeps the whole object in an annotation limited to 256 KiB.
ANNOTATION_LIMIT = 262_144


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def renderer(folder: Path = OBSERVABILITY) -> ModuleType:
    """render_prometheusrules.py of ``folder`` as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location(
        "render_prometheusrules", folder / "render_prometheusrules.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stale_rules(folder: Path = OBSERVABILITY) -> str | None:
    """Why prometheusrules.yaml of ``folder`` is not the rendering of its rules, or None."""
    if (folder / "prometheusrules.yaml").read_text() == renderer(folder).render():
        return None
    return (
        "prometheusrules.yaml differs from rules/*.yml: run "
        "`uv run python deploy/observability/render_prometheusrules.py`"
    )


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return kustomize(OBSERVABILITY)


# -- compose ------------------------------------------------------------------------------


def test_compose_prometheus_config_is_prometheus_yml_with_service_names() -> None:
    local = load(OBSERVABILITY / "prometheus.yml")
    compose = load(OBSERVABILITY / "prometheus.compose.yml")

    def without_targets(config: dict[str, Any]) -> dict[str, Any]:
        config = json.loads(json.dumps(config))
        for job in config["scrape_configs"]:
            for static in job["static_configs"]:
                static["targets"] = ["..."]
        for manager in config["alerting"]["alertmanagers"]:
            manager["static_configs"] = ["..."]
        return config

    assert without_targets(compose) == without_targets(local)
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in compose["scrape_configs"]
    }
    assert targets == {
        "mlops-assets-service": ["bento:3000"],
        "pushgateway": ["pushgateway:9091"],
        "prometheus": ["localhost:9090"],
    }
    [manager] = compose["alerting"]["alertmanagers"]
    assert manager["static_configs"][0]["targets"] == ["alertmanager:9093"]


def test_compose_prometheus_config_passes_promtool() -> None:
    done = subprocess.run(
        [require("promtool"), "check", "config", "prometheus.compose.yml"],
        cwd=OBSERVABILITY,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 2 rule files found" in done.stdout + done.stderr


def test_grafana_provisioning() -> None:
    [datasource] = load(GRAFANA / "datasources" / "prometheus.yml")["datasources"]
    assert datasource["type"] == "prometheus" and datasource["isDefault"] is True
    # $__rate_interval is at least four scrape intervals: Grafana must know the scrape rhythm.
    assert (
        datasource["jsonData"]["timeInterval"]
        == load(OBSERVABILITY / "prometheus.yml")["global"]["scrape_interval"]
    )
    [provider] = load(GRAFANA / "dashboards" / "mlops_assets.yml")["providers"]
    assert provider["type"] == "file"
    assert provider["allowUiUpdates"] is False


# -- kustomize ----------------------------------------------------------------------------


def test_renders_a_configmap_per_dashboard_for_the_sidecar(
    rendered: list[dict[str, Any]],
) -> None:
    config_maps = named(rendered, "ConfigMap")
    files = sorted(p.name for p in DASHBOARDS.glob("*.json"))
    assert sorted(key for cm in config_maps.values() for key in cm["data"]) == files
    for name, config_map in config_maps.items():
        meta = config_map["metadata"]
        assert meta["namespace"] == NAMESPACE
        assert meta["labels"]["grafana_dashboard"] == "1", name
        assert meta["annotations"]["grafana_folder"] == "mlops_assets", name
        [(file, text)] = config_map["data"].items()
        assert text == (DASHBOARDS / file).read_text(), name
        assert len(json.dumps(config_map)) < ANNOTATION_LIMIT, f"{name} too big for apply"


def test_renders_the_alertmanager_config_as_a_secret(rendered: list[dict[str, Any]]) -> None:
    secret = named(rendered, "Secret")["mlops-alertmanager"]
    # The key the Prometheus Operator reads from an Alertmanager's configSecret.
    config = base64.b64decode(secret["data"]["alertmanager.yaml"]).decode()
    assert config == (OBSERVABILITY / "alertmanager.yml").read_text()


def test_renders_the_rule_files_as_prometheusrules(rendered: list[dict[str, Any]]) -> None:
    rules = named(rendered, "PrometheusRule")
    files = sorted(p for p in RULES.glob("*.yml") if not p.name.endswith("_test.yml"))
    assert sorted(rules) == sorted(f"mlops-assets-{p.stem}" for p in files)
    for path in files:
        rule = rules[f"mlops-assets-{path.stem}"]
        assert rule["apiVersion"] == "monitoring.coreos.com/v1"
        assert rule["metadata"]["namespace"] == NAMESPACE
        assert rule["spec"] == load(path), path.name


def test_built_in_kinds_validate_strictly(rendered: list[dict[str, Any]]) -> None:
    built_in = [o for o in rendered if o["apiVersion"] == "v1"]
    assert {o["kind"] for o in built_in} == {"ConfigMap", "Secret"}
    assert validation_errors(built_in) == []


def test_a_misspelt_field_fails_validation(rendered: list[dict[str, Any]]) -> None:
    config_map = json.loads(json.dumps(next(o for o in rendered if o["kind"] == "ConfigMap")))
    config_map["metadata"]["label"] = config_map["metadata"].pop("labels")
    [error] = validation_errors([config_map])
    assert "label" in error and error.startswith("ConfigMap/")


def test_generated_prometheusrules_are_current() -> None:
    assert stale_rules() is None, stale_rules()


def test_a_changed_rule_file_makes_them_stale(tmp_path: Path) -> None:
    copy = tmp_path / "observability"
    shutil.copytree(OBSERVABILITY, copy)
    path = copy / "rules" / "pipeline.yml"
    path.write_text(
        path.read_text().replace("mlops_drift_streak_days >= 7", "mlops_drift_streak_days >= 5")
    )
    assert "render_prometheusrules.py" in (stale_rules(copy) or "")
    renderer(copy).OUTPUT.write_text(renderer(copy).render())
    assert stale_rules(copy) is None
    assert "mlops_drift_streak_days >= 5" in (copy / "prometheusrules.yaml").read_text()
