"""The alerting configuration (deploy/observability), checked by the real Prometheus tools.

`promtool` checks prometheus.yml and its rule files and runs the rules' unit tests
(rules/*_test.yml); `amtool` checks alertmanager.yml and resolves routes in it. Both come
from Debian's `prometheus` and `prometheus-alertmanager` (.ci/ensure-prometheus installs
them): without them these tests skip with the install command, or fail when ``CI=true``.
The structural checks (every alert labelled, annotated and tested both ways; the pipeline
rules use the metric names of lib/pipeline_metrics.py) run with plain YAML.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_assets.lib import pipeline_metrics
from mlops_assets_tests.deploy.tools import require

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "deploy" / "observability"
PROMETHEUS_CONFIG = OBSERVABILITY / "prometheus.yml"
ALERTMANAGER_CONFIG = OBSERVABILITY / "alertmanager.yml"
RULES = OBSERVABILITY / "rules"
RULE_FILES = sorted(p for p in RULES.glob("*.yml") if not p.name.endswith("_test.yml"))
RULE_TESTS = sorted(RULES.glob("*_test.yml"))
SERVICE_JOB = "mlops-assets-service"
SEVERITIES = {"critical", "warning"}
# The labels a push adds to every pipeline series: the Pushgateway group's key.
PUSH_LABELS = {"job", pipeline_metrics.GROUP_LABEL}
TIMEOUT = 60


def run(*command: str | Path, cwd: Path = OBSERVABILITY) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT
    )


def output(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout + done.stderr


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def rules(path: Path) -> list[dict[str, Any]]:
    return [rule for group in load(path)["groups"] for rule in group["rules"]]


def alerts(path: Path) -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in rules(path) if "alert" in rule}


# -- promtool -----------------------------------------------------------------------------


def test_prometheus_config_and_its_rule_files_pass_promtool() -> None:
    done = run(require("promtool"), "check", "config", PROMETHEUS_CONFIG)
    assert done.returncode == 0, output(done)
    text = output(done)
    assert "SUCCESS: 2 rule files found" in text
    for path in RULE_FILES:  # rule files are resolved against the config file's folder
        assert f"Checking {path}\n  SUCCESS: {len(rules(path))} rules found" in text, text


def test_prometheus_config_scrapes_the_service_the_gateway_and_itself() -> None:
    config = load(PROMETHEUS_CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {SERVICE_JOB, "pushgateway", "prometheus"}
    # Without honor_labels the pushed job and day labels would become exported_*.
    assert jobs["pushgateway"].get("honor_labels") is True
    assert not jobs[SERVICE_JOB].get("honor_labels")
    assert sorted(config["rule_files"]) == sorted(
        str(p.relative_to(OBSERVABILITY)) for p in RULE_FILES
    )
    assert config["alerting"]["alertmanagers"], "no Alertmanager to send alerts to"


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_rule_file_passes_promtool_check(path: Path) -> None:
    done = run(require("promtool"), "check", "rules", path)
    assert done.returncode == 0, output(done)
    assert f"SUCCESS: {len(rules(path))} rules found" in output(done)


@pytest.mark.parametrize("path", RULE_TESTS, ids=lambda p: p.name)
def test_rule_unit_tests_pass(path: Path) -> None:
    done = run(require("promtool"), "test", "rules", path)
    assert done.returncode == 0, output(done)
    assert "SUCCESS" in output(done)


def test_a_malformed_rule_file_fails_the_check_naming_its_line(tmp_path: Path) -> None:
    text = (RULES / "pipeline.yml").read_text()
    good = "expr: mlops:day_auc_drop > 0.1"
    assert text.count(good) == 1
    broken = tmp_path / "pipeline.yml"
    broken.write_text(text.replace(good, "expr: mlops:day_auc_drop > > 0.1"))
    line = text[: text.index(good)].count("\n") + 1
    column = text.splitlines()[line - 1].index("mlops:day_auc_drop") + 1

    done = run(require("promtool"), "check", "rules", broken, cwd=tmp_path)
    assert done.returncode == 1, output(done)
    assert f"pipeline.yml: {line}:{column}: " in output(done), output(done)
    assert '"ModelAucDrop": could not parse expression' in output(done)


def test_invalid_yaml_in_a_rule_file_fails_the_check(tmp_path: Path) -> None:
    broken = tmp_path / "service.yml"
    broken.write_text((RULES / "service.yml").read_text().replace("severity: critical", "[", 1))
    done = run(require("promtool"), "check", "rules", broken, cwd=tmp_path)
    assert done.returncode == 1
    assert re.search(r"service\.yml: yaml: line \d+", output(done)), output(done)


def test_a_rule_test_expecting_an_alert_that_cannot_fire_fails(tmp_path: Path) -> None:
    shutil.copy(RULES / "pipeline.yml", tmp_path / "pipeline.yml")
    series = (
        '{job="mlops_pipeline", asset="model_performance", day="2013-08-05", model_version="2"}'
    )
    # 0.05 below validation is under the alert's 0.1: the expected alert cannot come.
    unit_test = {
        "rule_files": ["pipeline.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": f"mlops_day_validation_roc_auc{series}", "values": "0.75x20"},
                    {"series": f"mlops_day_roc_auc{series}", "values": "0.7x20"},
                    {"series": f"mlops_day_performance_usable{series}", "values": "1x20"},
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "10m",
                        "alertname": "ModelAucDrop",
                        "exp_alerts": [
                            {"exp_labels": {"severity": "warning", "day": "2013-08-05"}}
                        ],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "impossible_test.yml"
    path.write_text(yaml.safe_dump(unit_test))

    done = run(require("promtool"), "test", "rules", path, cwd=tmp_path)
    assert done.returncode == 1, output(done)
    assert "FAILED" in output(done)
    assert "alertname: ModelAucDrop, time: 10m" in output(done)
    assert "got:[]" in output(done)


# -- the rules' shape ---------------------------------------------------------------------


def test_every_rule_file_has_unit_tests() -> None:
    tested = {
        rule_file
        for path in RULE_TESTS
        for rule_file in load(path)["rule_files"]
        if (RULES / rule_file).exists()
    }
    assert tested == {p.name for p in RULE_FILES}


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    expected: dict[str, set[bool]] = {}
    for path in RULE_TESTS:
        for group in load(path)["tests"]:
            for case in group.get("alert_rule_test", []):
                expected.setdefault(case["alertname"], set()).add(bool(case.get("exp_alerts")))
    for path in RULE_FILES:
        for name in alerts(path):
            assert expected.get(name) == {True, False}, f"{name}: {expected.get(name)}"


def test_every_alert_has_a_severity_summary_and_description() -> None:
    for path in RULE_FILES:
        for name, rule in alerts(path).items():
            assert rule.get("labels", {}).get("severity") in SEVERITIES, name
            assert {"summary", "description"} <= set(rule.get("annotations", {})), name


def test_pipeline_alerts_name_their_day_and_model_version() -> None:
    by_name = {metric.name: metric for metric in pipeline_metrics.METRICS}
    for name, rule in alerts(RULES / "pipeline.yml").items():
        text = rule["annotations"]["summary"] + rule["annotations"]["description"]
        labels = {
            label
            for metric_name in re.findall(r"\bmlops_[a-z_]+", rule["expr"])
            for label in by_name[metric_name].labels
        }
        # Alerts on recording rules: the labels of the metrics the recording rule reads.
        for record in rules(RULES / "pipeline.yml"):
            if "record" in record and record["record"] in rule["expr"]:
                for metric_name in re.findall(r"\bmlops_[a-z_]+", record["expr"]):
                    labels |= set(by_name[metric_name].labels)
        assert "day" in labels, name
        for label in labels:
            assert f"$labels.{label}" in text, f"{name} does not name {label}"


def test_pipeline_rules_and_their_tests_use_the_metrics_of_pipeline_metrics() -> None:
    by_name = {metric.name: metric for metric in pipeline_metrics.METRICS}
    expressions = " ".join(rule["expr"] for rule in rules(RULES / "pipeline.yml"))
    used = set(re.findall(r"\bmlops_[a-z_]+", expressions))
    assert used and used <= set(by_name), used - set(by_name)
    # The test series look like real pushes: a defined metric with its labels and the group's.
    series = [
        item["series"]
        for group in load(RULES / "pipeline_test.yml")["tests"]
        for item in group["input_series"]
    ]
    assert series
    for text in series:
        name, _, rest = text.partition("{")
        labels = set(re.findall(r"(\w+)=", rest))
        assert name in by_name, name
        assert labels == set(by_name[name].labels) | PUSH_LABELS, text


def test_service_rules_use_bentoml_request_metrics_of_the_installed_bentoml() -> None:
    # BentoML names its HTTP metrics <namespace>_request_duration_seconds/_request_total, the
    # namespace from its configuration: an upgrade that renames them must fail here.
    spec = importlib.util.find_spec("bentoml")
    assert spec and spec.origin
    package = Path(spec.origin).parent
    defaults = (package / "_internal/configuration/v2/default_configuration.yaml").read_text()
    instruments = (package / "_internal/server/http/instruments.py").read_text()
    namespace = re.search(r"^\s+namespace: (\w+)$", defaults, re.MULTILINE)
    assert namespace
    assert 'name="request_duration_seconds"' in instruments
    assert 'name="request_total"' in instruments
    assert '"http_response_code"' in instruments
    expressions = " ".join(rule["expr"] for rule in rules(RULES / "service.yml"))
    for metric in re.findall(r"\bbentoml_[a-z_]+", expressions):
        assert metric in {
            f"{namespace.group(1)}_request_duration_seconds_bucket",
            f"{namespace.group(1)}_request_total",
        }, metric
    assert f'up{{job="{SERVICE_JOB}"}}' in expressions


# [template:if with_service_delivery]
def test_the_kubernetes_scrape_job_has_the_name_the_rules_use() -> None:
    scrape = load(ROOT / "deploy" / "service" / "prometheus-scrape.yaml")
    assert [job["job_name"] for job in scrape["scrape_configs"]] == [SERVICE_JOB]


# [template:if with_kubernetes]
def test_the_kube_prometheus_stack_scrapes_the_service_as_its_scrape_job() -> None:
    """deploy/helm/observability-values.yaml carries a copy of the scrape job: the same."""
    [job] = load(ROOT / "deploy" / "service" / "prometheus-scrape.yaml")["scrape_configs"]
    stack = load(ROOT / "deploy" / "helm" / "observability-values.yaml")
    assert job in stack["prometheus"]["prometheusSpec"]["additionalScrapeConfigs"]


# [template:end]


# [template:end]


# -- amtool -------------------------------------------------------------------------------


def test_alertmanager_config_passes_amtool() -> None:
    done = run(require("amtool"), "check-config", ALERTMANAGER_CONFIG)
    assert done.returncode == 0, output(done)
    assert "SUCCESS" in output(done)
    route = load(ALERTMANAGER_CONFIG)["route"]
    assert route["group_by"] == ["alertname", "model_version"]


def test_every_alert_routes_to_the_webhook() -> None:
    amtool = require("amtool")
    receiver = load(ALERTMANAGER_CONFIG)["route"]["receiver"]
    webhook = next(r for r in load(ALERTMANAGER_CONFIG)["receivers"] if r["name"] == receiver)
    assert webhook["webhook_configs"][0]["url"].startswith("http")
    for path in RULE_FILES:
        for name, rule in alerts(path).items():
            done = run(
                amtool,
                "config",
                "routes",
                "test",
                f"--config.file={ALERTMANAGER_CONFIG}",
                f"--verify.receivers={receiver}",
                f"alertname={name}",
                f"severity={rule['labels']['severity']}",
                "model_version=1",
            )
            assert done.returncode == 0, f"{name}: {output(done)}"
            assert done.stdout.strip() == receiver


def test_the_commented_slack_and_email_receivers_are_valid(tmp_path: Path) -> None:
    # A commented line that is YAML (a key or a list item) is uncommented; prose stays.
    yaml_line = re.compile(r"^(\s*)# (\s*)(- |[a-z_]+:)")
    lines = [
        yaml_line.sub(r"\1\2\3", line) for line in ALERTMANAGER_CONFIG.read_text().splitlines()
    ]
    uncommented = tmp_path / "alertmanager.yml"
    uncommented.write_text("\n".join(lines) + "\n")
    config = load(uncommented)
    assert [r["name"] for r in config["receivers"]] == ["webhook", "slack", "email"]

    done = run(require("amtool"), "check-config", uncommented, cwd=tmp_path)
    assert done.returncode == 0, output(done)
    assert "3 receivers" in output(done)


def test_a_broken_alertmanager_config_fails_amtool(tmp_path: Path) -> None:
    broken = tmp_path / "alertmanager.yml"
    broken.write_text(
        ALERTMANAGER_CONFIG.read_text().replace("receiver: webhook", "receiver: pager")
    )
    done = run(require("amtool"), "check-config", broken, cwd=tmp_path)
    assert done.returncode == 1
    assert 'undefined receiver "pager"' in output(done), output(done)
