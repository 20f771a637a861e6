"""Helpers for the template tests: snapshot this repository as a template, render it."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlops_assets import settings

ROOT = settings.project_root()
# Non-default answers used by the tests (and by `make template-check`).
ANSWERS: dict[str, Any] = {
    "project_name": "fraud-assets",
    "package_name": "fraud_assets",
    "model_name": "fraud_risk",
    "with_kubernetes": False,
    "with_compose": True,
    "with_service_delivery": False,
    "with_observability": False,
    "with_streaming": False,
}
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Template Test",
    "GIT_AUTHOR_EMAIL": "template-test@example.invalid",
    "GIT_COMMITTER_NAME": "Template Test",
    "GIT_COMMITTER_EMAIL": "template-test@example.invalid",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(cwd: Path, *args: str) -> str:
    """Runs git in ``cwd`` with a fixed identity and no user or system configuration."""
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **GIT_ENV},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def commit_all(repo: Path, message: str, tag: str | None = None) -> None:
    """Commits every file of ``repo`` (and tags the commit)."""
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    if tag:
        git(repo, "tag", tag)


def snapshot(dest: Path, tag: str = "v1.0.0", extra: Mapping[str, str] | None = None) -> Path:
    """This repository's working tree (tracked and new files, not ignored ones) as a git repo.

    The tests render what is on disk, not the last commit, so they test the change under way.
    ``extra`` adds files (path -> text) that the working tree lacks.
    """
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if not source.is_file():
            continue  # deleted in the working tree
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    for name, text in (extra or {}).items():
        target = dest / name
        assert not target.exists(), f"{name} is in the working tree"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    git(dest, "init", "-q", "-b", "main")
    commit_all(dest, "template snapshot", tag)
    return dest


def render(
    template: Path, dest: Path, answers: Mapping[str, Any] = ANSWERS, ref: str = "v1.0.0"
) -> Path:
    """``copier copy --trust --defaults`` of ``template`` at ``ref`` with ``answers``."""
    from copier import run_copy

    run_copy(
        str(template),
        str(dest),
        data=dict(answers),
        vcs_ref=ref,
        defaults=True,
        unsafe=True,
        quiet=True,
    )
    return dest
