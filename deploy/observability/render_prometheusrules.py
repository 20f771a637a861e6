"""Writes prometheusrules.yaml: the rule files of rules/ as PrometheusRule objects.

The Prometheus Operator (kube-prometheus-stack) reads alert and recording rules from
PrometheusRule objects, not from files; kustomize cannot turn a file into an object's
fields. This keeps rules/*.yml the one place rules are written (and unit-tested with
promtool), and the objects a copy that a test compares with them:

    uv run python deploy/observability/render_prometheusrules.py
"""

from __future__ import annotations

from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "prometheusrules.yaml"
HEADER = (
    "# Generated from rules/*.yml by render_prometheusrules.py; edit the rule files and run\n"
    "#   uv run python deploy/observability/render_prometheusrules.py\n"
)


class _Dumper(yaml.SafeDumper):
    """Multi-line expressions as literal blocks, so the objects read like the rule files."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _string)


def rule_files() -> list[Path]:
    """The rule files (their unit tests, *_test.yml, are not rules)."""
    return sorted(p for p in (HERE / "rules").glob("*.yml") if not p.name.endswith("_test.yml"))


def render() -> str:
    """The PrometheusRule objects, one per rule file, as one YAML stream."""
    objects = [
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PrometheusRule",
            "metadata": {
                "name": f"mlops-assets-{path.stem}",
                "labels": {"app.kubernetes.io/part-of": "mlops-assets"},
            },
            "spec": yaml.safe_load(path.read_text()),
        }
        for path in rule_files()
    ]
    body = yaml.dump_all(objects, Dumper=_Dumper, sort_keys=False, width=4096, explicit_start=True)
    return HEADER + body


if __name__ == "__main__":
    OUTPUT.write_text(render())
