"""The deployment guide names every setting the files use, and links only files that exist."""

from __future__ import annotations

import re
from pathlib import Path

# [template:if with_kubernetes]
import yaml

# [template:end]
from mlops_assets import settings
from mlops_assets.resources.environments import OPTIONAL_PRODUCTION_VARS, PRODUCTION_VARS

ROOT = settings.project_root()
GUIDE = (ROOT / "docs" / "deploy.md").read_text()


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


def test_linked_files_exist():
    links = re.findall(r"\]\((\.\./[^)#]+)\)", GUIDE)
    assert links
    missing = [link for link in links if not (ROOT / "docs" / link).resolve().exists()]
    assert not missing
