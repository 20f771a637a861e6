"""Rendering this repository as a copier template: renamed, optional parts, nothing else."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from mlops_assets_tests.template.template import ANSWERS, ROOT, render, snapshot

RENAMES = {
    "mlops_assets": ANSWERS["package_name"],
    "mlops-assets": ANSWERS["project_name"],
    "flight_delay": ANSWERS["model_name"],
}
TEMPLATE_ONLY = {".copier", "copier.yml", "{{ _copier_conf.answers_file }}"}


def _extension():
    spec = importlib.util.spec_from_file_location("rename", ROOT / ".copier" / "rename.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rename(text: str) -> str:
    return re.sub("|".join(RENAMES), lambda m: RENAMES[m.group(0)], text)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    template = snapshot(tmp_path_factory.mktemp("template"))
    return template, render(template, tmp_path_factory.mktemp("gen") / "fraud-platform")


def test_every_file_is_the_renamed_original(rendered: tuple[Path, Path]) -> None:
    template, project = rendered
    expected: dict[str, bytes] = {}
    fenced: set[str] = set()
    for path in template.rglob("*"):
        relative = path.relative_to(template).as_posix()
        top = relative.split("/")[0]
        if not path.is_file() or top in TEMPLATE_ONLY or top == ".git":
            continue
        if relative.startswith("mlops_assets_tests/template/") or path.suffix == ".pyc":
            continue
        text = path.read_text()
        if "[template:" in text:
            fenced.add(_rename(relative))  # optional sections: checked below
            continue
        expected[_rename(relative)] = _rename(text).encode()
    for name in (
        "deploy/helm/values.yaml",
        "deploy/helm/secrets.example.yaml",
        "deploy/helm/observability-values.yaml",
        "fraud_assets_tests/deploy/test_kubernetes.py",
        "fraud_assets_tests/fixtures/dagster_helm_values.schema.json",
    ):
        assert name in expected, name
        del expected[name]  # with_kubernetes=False
    service = [
        name for name in expected if name.startswith(("deploy/service/", ".github/workflows/"))
    ]
    assert "deploy/service/base/kustomization.yaml" in service
    assert ".github/workflows/pull-request.yml" in service
    for name in (
        *service,
        "fraud_assets_tests/deploy/test_service_manifests.py",
        "fraud_assets_tests/fixtures/argocd_application.schema.json",
        "fraud_assets_tests/resources/test_deployment_repo.py",
        "fraud_assets_tests/project/test_workflows.py",
        "docs/ci.md",
    ):
        assert name in expected, name
        del expected[name]  # with_service_delivery=False
    for name, content in expected.items():
        assert (project / name).read_bytes() == content, name
    produced = {p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file()}
    assert fenced <= produced
    assert produced - set(expected) - fenced == {".copier-answers.yml"}


def test_no_trace_of_the_template_names_or_markers(rendered: tuple[Path, Path]) -> None:
    _, project = rendered
    for path in project.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert not re.search("mlops_assets|mlops-assets|flight_delay", text), path
            assert "[template:" not in text, path
            assert "{% raw %}" not in text, path
    assert not (project / "deploy" / "helm").exists()
    assert not (project / "deploy" / "service").exists()
    assert (project / "deploy" / "compose.yaml").exists()
    assert not (project / "copier.yml").exists()
    assert not (project / ".copier").exists()
    answers = (project / ".copier-answers.yml").read_text()
    assert "_commit: v1.0.0" in answers
    assert "model_name: fraud_risk" in answers
    assert "with_kubernetes: false" in answers
    assert "with_service_delivery: false" in answers
    assert "template_docs" not in answers


def test_optional_sections_follow_the_answers(rendered: tuple[Path, Path]) -> None:
    _, project = rendered
    guide = (project / "docs" / "deploy.md").read_text()
    assert "## One host: compose" in guide
    assert "## Cluster: the official Dagster Helm chart" not in guide
    assert "deploy/helm" not in guide
    assert "## The prediction service on Kubernetes" not in guide
    assert "deploy/service" not in guide
    assert "release.env" not in (project / "deploy" / "compose.yaml").read_text()
    assert "release" not in (project / "deploy" / "compose" / ".env.example").read_text()
    compose_test = (project / "fraud_assets_tests" / "deploy" / "test_compose.py").read_text()
    assert "release" not in compose_test
    assert "def test_bento_healthcheck_asks_the_readiness_endpoint" in compose_test
    readme = (project / "README.md").read_text()
    assert "deploy/service" not in readme
    assert "on one host with compose (`deploy/compose.yaml`" in readme
    assert "Helm chart" not in readme
    assert "## Template updates and swap points" in readme
    assert "## Your own platform from this template" not in readme
    assert "template-check: setup" not in (project / "Makefile").read_text()
    assert "import yaml" not in (project / "fraud_assets_tests/project/test_docs.py").read_text()
    pyproject = (project / "pyproject.toml").read_text()
    assert 'name = "fraud-assets"' in pyproject
    assert 'fraud-assets = "fraud_assets.cli:main"' in pyproject
    assert 'root_module = "fraud_assets"' in pyproject
    assert 'name = "fraud-assets"' in (project / "uv.lock").read_text()
    assert 'MODEL_NAME = "fraud_risk"' in (project / "fraud_assets" / "settings.py").read_text()
    guide = (project / "docs" / "template.md").read_text()
    assert "## Upgrade a generated project" in guide
    assert "## Swap points" in guide
    assert "## Generate a project" not in guide  # about the template, not the project


def test_default_answers_reproduce_this_repository(
    tmp_path: Path, rendered: tuple[Path, Path]
) -> None:
    template, _ = rendered
    project = render(template, tmp_path / "same", {})
    answers = (project / ".copier-answers.yml").read_text()
    assert "project_name: mlops-assets" in answers
    assert "package_name: mlops_assets" in answers
    assert "model_name: flight_delay" in answers
    for path in template.rglob("*"):
        relative = path.relative_to(template)
        if not path.is_file() or relative.parts[0] in {*TEMPLATE_ONLY, ".git"}:
            continue
        if relative.parts[:2] == ("mlops_assets_tests", "template") or path.suffix == ".pyc":
            continue
        text = path.read_text()
        if "[template:" in text:
            continue  # marker lines are dropped; the rest is compared in the other tests
        assert (project / relative).read_text() == text, relative


def test_extension_keeps_text_literal_and_fences_sections() -> None:
    rename = _extension()
    source = (
        "x = {'a': '{{ b }}'}  # {% if %}\n"
        "import mlops_assets.lib  # mlops-assets flight_delay\n"
        "# [template:if with_kubernetes]\n"
        "k8s = True\n"
        "# [template:end]\n"
        "| row | kubernetes | <!-- [template:only with_kubernetes] -->\n"
        "last\n"
    )
    from jinja2 import Environment

    env = Environment(keep_trailing_newline=True)
    values = {"package_name": "p", "project_name": "p-p", "model_name": "m"}
    off = env.from_string(rename.render_source(source)).render(with_kubernetes=False, **values)
    on = env.from_string(rename.render_source(source)).render(with_kubernetes=True, **values)
    assert off == "x = {'a': '{{ b }}'}  # {% if %}\nimport p.lib  # p-p m\nlast\n"
    assert on == (
        "x = {'a': '{{ b }}'}  # {% if %}\nimport p.lib  # p-p m\nk8s = True\n"
        "| row | kubernetes |\nlast\n"
    )
    negated = rename.render_source("# [template:if not k]\nno k\n# [template:end]\n")
    assert env.from_string(negated).render(k=False) == "no k\n"
    assert env.from_string(negated).render(k=True) == ""
    with pytest.raises(ValueError, match="without a matching"):
        rename.render_source("# [template:if with_kubernetes]\n")
    with pytest.raises(ValueError, match="without a matching"):
        rename.render_source("# [template:end]\n")


def test_invalid_answers_are_refused(tmp_path: Path, rendered: tuple[Path, Path]) -> None:
    from copier.errors import CopierAnswersInterrupt, UserMessageError

    template, _ = rendered
    for bad in ({"package_name": "Fraud-Assets"}, {"model_name": "fraud risk"}):
        with pytest.raises((ValueError, UserMessageError, CopierAnswersInterrupt)):
            render(template, tmp_path / "bad", {**ANSWERS, **bad})
        assert not (tmp_path / "bad" / "pyproject.toml").exists()
