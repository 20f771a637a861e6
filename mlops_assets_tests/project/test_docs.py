"""The docs name every setting the files use, and every repository file they mention exists."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

# [template:if with_kubernetes]
import yaml

# [template:end]
from mlops_assets import settings
from mlops_assets.resources.environments import OPTIONAL_PRODUCTION_VARS, PRODUCTION_VARS

ROOT = settings.project_root()
PACKAGE = Path(settings.__file__).parent
TESTS = Path(__file__).resolve().parents[1]
GUIDE = (ROOT / "docs" / "deploy.md").read_text()

# Folders at the top of a checkout that the repository does not hold (tools and runs make them).
UNTRACKED = {"state", ".git", ".venv", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
UNTRACKED |= {"build", "dist", "__pycache__"}
# Git-ignored paths the docs mention: written by runs or by the reader, absent in a checkout.
GENERATED = ("benchmarks/results", "deploy/compose/.env")
# A path: two or more parts joined by "/", optionally after "./" or "../". Parts may hold
# placeholders or globs (`<day>`, `{txt,prof}`, `*`): such references are not checked.
PATH = re.compile(r"(?<![\w./<>{}*@:-])((?:\.\.?/)*[\w.<>{}*-]+(?:/[\w.<>{}*,@-]+)+/?)")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _folders(parent: Path, *, packages_only: bool = False) -> set[str]:
    return {
        p.name
        for p in parent.iterdir()
        if p.is_dir()
        and p.name not in UNTRACKED
        and not p.name.startswith("tmp")
        and (not packages_only or (p / "__init__.py").exists())
    }


# Where a reference may start, and what it is relative to: a top-level folder of the
# repository, or (as the docs write `lib/drift.py`, `unit/test_docs.py`) a folder of the
# package or of its tests.
BASES = (
    (ROOT, _folders(ROOT)),
    (PACKAGE, _folders(PACKAGE, packages_only=True)),
    (TESTS, _folders(TESTS)),
)


def _comments_and_docstrings(path: Path) -> str:
    source = path.read_text()
    parts = [
        token.string
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    ]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            parts.append(ast.get_docstring(node, clean=False) or "")
    return "\n".join(parts)


def _texts() -> Iterator[tuple[Path, str]]:
    """The README, the docs, pyproject.toml, and the comments and docstrings of the code."""
    for path in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))):
        yield path, path.read_text()
    yield ROOT / "pyproject.toml", (ROOT / "pyproject.toml").read_text()
    for folder in (PACKAGE, ROOT / "benchmarks"):
        for path in sorted(folder.rglob("*.py")):
            yield path, _comments_and_docstrings(path)


def _resolves(reference: str, bases: tuple[tuple[Path, set[str]], ...]) -> bool | None:
    """Whether a path names a repository file; None when it is not a repository path."""
    if any(mark in reference for mark in "<>{}*"):
        return None
    relative = re.sub(r"^(\.\.?/)+", "", reference)
    if relative.startswith(GENERATED):
        return None
    first = relative.split("/")[0]
    candidates = [base / relative for base, folders in bases if first in folders]
    if not candidates:
        return None
    return any(c.exists() for c in candidates)


def missing_references(path: Path, text: str) -> list[str]:
    """The repository paths and Markdown links in ``text`` that name no existing file."""
    missing = []
    for link in LINK.findall(text):
        target = link.split("#")[0]
        if not target or re.match(r"^[a-z]+:", target) or "<" in target:
            continue  # an anchor, an address or a placeholder
        if not (path.parent / target).resolve().exists():
            missing.append(link)
    for reference in PATH.findall(LINK.sub("", text)):
        reference = reference.rstrip(".,;:")  # the end of a sentence
        if _resolves(reference, BASES) is False:
            missing.append(reference)
    return missing


def _env_example(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            names.add(line.split("=", 1)[0].strip())
    return names


def test_every_setting_is_documented():
    instance = (ROOT / "deploy" / "dagster.yaml").read_text()
    names = (
        set(PRODUCTION_VARS)
        | set(OPTIONAL_PRODUCTION_VARS)
        | set(re.findall(r"env: (\w+)", instance))
        | {"MLOPS_API_KEY", "MLOPS_K8S_STEP_PODS", "DAGSTER_HOME"}
    )
    # [template:if with_compose]
    names |= _env_example(ROOT / "deploy" / "compose" / ".env.example")
    # [template:end]
    # [template:if with_kubernetes]
    secrets = [
        doc
        for doc in yaml.safe_load_all(
            (ROOT / "deploy" / "helm" / "secrets.example.yaml").read_text()
        )
        if doc
    ]
    names |= {
        key
        for doc in secrets
        if doc["metadata"]["name"] == "mlops-assets-env"
        for key in doc["stringData"]
    }
    # [template:end]
    missing = sorted(name for name in names if f"`{name}`" not in GUIDE)
    assert not missing, f"docs/deploy.md does not name {missing}"


def test_every_mentioned_repository_file_exists():
    checked = 0
    missing = []
    for path, text in _texts():
        checked += len(LINK.findall(text)) + len(PATH.findall(text))
        where = path.relative_to(ROOT)
        missing += [f"{where}: {reference}" for reference in missing_references(path, text)]
    assert checked > 100  # the patterns still find the references
    assert not missing, "references to files that do not exist:\n" + "\n".join(missing)


def test_a_made_up_reference_is_caught():
    text = """
    See docs/no-such-page.md, `lib/no_such_module.py`, unit/test_nothing.py,
    mlops_assets/nowhere/module.py and [the guide](../docs/missing.md#part).
    Not repository files: state/lake/x.parquet, <state>/bentoml, mlops/trigger,
    benchmarks/results/x.json, https://example.com/a/b, [a site](https://example.com).
    Existing: docs/deploy.md, lib/drift.py, [deploy](deploy.md#settings), ../Dockerfile.
    """
    assert missing_references(ROOT / "docs" / "example.md", text) == [
        "../docs/missing.md#part",
        "docs/no-such-page.md",
        "lib/no_such_module.py",
        "unit/test_nothing.py",
        "mlops_assets/nowhere/module.py",
    ]
