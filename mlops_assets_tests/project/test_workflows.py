"""The CI workflows (.github/workflows): valid for actionlint, Makefile targets only, pinned.

The workflows run only on GitHub; here they are checked as files: actionlint (a dev
dependency, offline) parses them, every `make` target they call exists, every action is
pinned to a version, and their steps run the Makefile targets a developer runs locally.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from mlops_assets import settings

ROOT = settings.project_root()
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
EXPECTED = {"pull-request.yml", "e2e.yml", "images.yml", "release.yml"}
# A target line of the Makefile: "name other: prerequisites" (not a ":=" assignment).
TARGET = re.compile(r"^([A-Za-z0-9_.-]+(?:[ \t]+[A-Za-z0-9_.-]+)*)[ \t]*:(?!=)", re.MULTILINE)
# A pinned action: owner/name[/path]@vN[.N...] or @<commit sha>; or a local or docker action.
PINNED = re.compile(r"^([\w.-]+/[\w./-]+@(v\d+(\.\d+)*|[0-9a-f]{40})|\./.+|docker://.+@.+)$")
# Lines a run step may hold besides `make` and the .ci scripts: writes to the step's files.
GITHUB_FILE = re.compile(r'>> "\$GITHUB_(ENV|OUTPUT|STEP_SUMMARY)"$')


def actionlint() -> str:
    found = shutil.which("actionlint", path=str(Path(sys.executable).parent))
    assert found, "actionlint is missing: `uv sync --frozen` installs the dev group"
    return found


def run_actionlint(*files: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [actionlint(), "-no-color", *map(str, files)],
        cwd=files[0].parent,
        capture_output=True,
        text=True,
        timeout=120,
    )


def makefile_targets(text: str) -> set[str]:
    """The targets a Makefile defines (explicit rules; special targets such as .PHONY too)."""
    return {name for match in TARGET.finditer(text) for name in match.group(1).split()}


def steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def make_targets_called(script: str) -> list[str]:
    """The targets of every `make` command in a run script (variables and options skipped)."""
    targets: list[str] = []
    for line in script.splitlines():
        words = shlex.split(line, comments=True)
        for i, word in enumerate(words):
            if word != "make" or (i and words[i - 1] not in {"&&", "||", ";", "|"}):
                continue
            for arg in words[i + 1 :]:
                if arg in {"&&", "||", ";", "|"}:
                    break
                if not arg.startswith("-") and "=" not in arg:
                    targets.append(arg)
    return targets


def unknown_make_targets(workflow_text: str, targets: set[str]) -> list[str]:
    """The `make` targets a workflow calls that the Makefile does not define."""
    workflow = yaml.safe_load(workflow_text)
    called = [t for step in steps(workflow) for t in make_targets_called(step.get("run", ""))]
    return sorted(set(called) - targets)


def unpinned_actions(workflow_text: str) -> list[str]:
    workflow = yaml.safe_load(workflow_text)
    uses = [step["uses"] for step in steps(workflow) if "uses" in step]
    return [action for action in uses if not PINNED.match(action)]


def foreign_run_lines(workflow_text: str) -> list[str]:
    """Run lines that are neither `make`, a .ci script, nor a write to GitHub's step files."""
    foreign = []
    for step in steps(yaml.safe_load(workflow_text)):
        for line in filter(None, (raw.strip() for raw in step.get("run", "").splitlines())):
            if not (line.startswith(("make ", "./.ci/")) or GITHUB_FILE.search(line)):
                foreign.append(line)
    return foreign


def test_the_workflows_are_there() -> None:
    assert {path.name for path in WORKFLOWS} == EXPECTED


def test_actionlint_passes_on_every_workflow() -> None:
    done = run_actionlint(*WORKFLOWS)
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    text = (ROOT / ".github" / "workflows" / "pull-request.yml").read_text()
    assert "timeout-minutes: 20" in text
    broken = tmp_path / "broken.yml"
    broken.write_text(text.replace("timeout-minutes: 20", "timeout-minutes: soon", 1))
    done = run_actionlint(broken)
    assert done.returncode == 1
    assert "broken.yml:" in done.stdout
    assert "found plain text node [syntax-check]" in done.stdout


def test_every_make_target_a_workflow_calls_exists() -> None:
    targets = makefile_targets((ROOT / "Makefile").read_text())
    assert {"setup", "check", "test", "test-fast", "service-image", "fetch-export"} <= targets
    called = 0
    for path in WORKFLOWS:
        text = path.read_text()
        called += len(re.findall(r"\bmake ", text))
        assert unknown_make_targets(text, targets) == [], path.name
    assert called >= 6  # the parser still finds the calls


def test_a_missing_make_target_is_caught() -> None:
    workflow = """
    on: push
    jobs:
      build:
        runs-on: ubuntu-latest
        steps:
          - run: make check
          - run: make -s test-fast PUSH=1 && make no-such-target
          - run: |
              echo "not a make call: make believe" >> "$GITHUB_STEP_SUMMARY"
              make lint typo-check | tee out.log
    """
    assert make_targets_called("make -s a B=1 b && echo make c ; make d") == ["a", "b", "d"]
    targets = makefile_targets("check lint: setup\n\nX := 1\ntest-fast:\n\techo make\n")
    assert targets == {"check", "lint", "test-fast"}
    assert unknown_make_targets(workflow, targets) == ["no-such-target", "typo-check"]


def test_every_action_is_pinned_to_a_version() -> None:
    for path in WORKFLOWS:
        assert unpinned_actions(path.read_text()) == [], path.name
    bad = """
    on: push
    jobs:
      a:
        runs-on: ubuntu-latest
        steps:
          - uses: actions/checkout
          - uses: actions/checkout@main
          - uses: actions/checkout@v6
          - uses: docker/build-push-action@4f58ea79222b3b9dc2c8bbdd6debcef730109a75
    """
    assert unpinned_actions(bad) == ["actions/checkout", "actions/checkout@main"]


def test_steps_run_makefile_targets_only() -> None:
    for path in WORKFLOWS:
        assert foreign_run_lines(path.read_text()) == [], path.name
    assert foreign_run_lines(
        'jobs: {a: {steps: [{run: "uv run pytest"}, {run: "make test"}]}}'
    ) == ["uv run pytest"]


def test_least_privilege_time_limits_and_the_makefile_uv() -> None:
    uv_version = re.search(r"^UV_VERSION \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert uv_version
    for path in WORKFLOWS:
        workflow = yaml.safe_load(path.read_text())
        assert workflow["permissions"]["contents"] == "read", path.name
        assert all("timeout-minutes" in job for job in workflow["jobs"].values()), path.name
        for step in steps(workflow):
            if str(step.get("uses", "")).startswith("astral-sh/setup-uv@"):
                assert step["with"]["version"] == uv_version.group(1), path.name
