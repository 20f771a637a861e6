"""The package uses Dagster only through its public surface, so a minor upgrade cannot break it.

Public means: a Dagster package (``dagster``, ``dagster_mlflow``, ``dagster_k8s``, ...)
imported from its top-level module, and no underscore name on it. ``dagster_shared`` is
Dagster's internal support library. Tests may reach into internals; the product may not.
"""

import ast
from pathlib import Path

import pytest

import mlops_assets

PACKAGE = Path(mlops_assets.__file__).parent


def _is_dagster(module: str) -> bool:
    top = module.split(".")[0]
    return top == "dagster" or top.startswith("dagster_")


def private_uses(source: str) -> list[str]:
    """The private Dagster imports and attribute accesses in ``source`` (one line each)."""
    tree = ast.parse(source)
    found: list[str] = []
    aliases: set[str] = set()  # local names bound to a Dagster module
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if not _is_dagster(alias.name):
                    continue
                if "." in alias.name or alias.name == "dagster_shared":
                    found.append(f"{node.lineno}: import {alias.name}")
                aliases.add(alias.asname or alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module and _is_dagster(node.module):
            if "." in node.module or node.module == "dagster_shared":
                found.append(f"{node.lineno}: from {node.module} import ...")
            for alias in node.names:
                if alias.name.startswith("_"):
                    found.append(f"{node.lineno}: from {node.module} import {alias.name}")
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and node.attr.startswith("_")
        ):
            found.append(f"{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_the_package_imports_no_private_dagster_api():
    offenders = {
        str(path.relative_to(PACKAGE.parent)): uses
        for path in sorted(PACKAGE.rglob("*.py"))
        if (uses := private_uses(path.read_text(encoding="utf-8")))
    }
    assert not offenders, f"private Dagster API in the package: {offenders}"


@pytest.mark.parametrize(
    "source",
    [
        "from dagster._core.storage.tags import RUN_KEY_TAG",
        "import dagster._check as check",
        "from dagster_shared.serdes import serialize_value",
        "import dagster_shared",
        "from dagster_mlflow.resources import MlFlow",
        "from dagster import _check",
        "import dagster as dg\ndg._core.storage",
        "def f():\n    from dagster._utils import backoff",
        "if TYPE_CHECKING:\n    from dagster._core.definitions import X",
    ],
)
def test_the_scan_catches_private_uses(source: str):
    assert private_uses(source)


@pytest.mark.parametrize(
    "source",
    [
        "import dagster as dg\ndg.serialize_value(1)",
        "from dagster_mlflow import mlflow_tracking",
        "from dagster_k8s import k8s_job_executor",
        "import dagsterish._private",
    ],
)
def test_the_scan_accepts_public_uses(source: str):
    assert not private_uses(source)


def test_our_run_tag_names_are_dagsters():
    # The daemon's own constants are private, so the package spells the strings out once.
    from dagster._core.storage.tags import (
        AUTOMATION_CONDITION_TAG,
        BACKFILL_ID_TAG,
        RUN_KEY_TAG,
        SCHEDULE_NAME_TAG,
        SENSOR_NAME_TAG,
    )

    from mlops_assets.defs import system_tags

    assert system_tags.RUN_KEY_TAG == RUN_KEY_TAG
    assert system_tags.SENSOR_NAME_TAG == SENSOR_NAME_TAG
    assert system_tags.SCHEDULE_NAME_TAG == SCHEDULE_NAME_TAG
    assert system_tags.BACKFILL_ID_TAG == BACKFILL_ID_TAG
    assert system_tags.AUTOMATION_CONDITION_TAG == AUTOMATION_CONDITION_TAG


def test_the_actor_of_a_run():
    from mlops_assets.defs.system_tags import ACTOR_TAG, SENSOR_NAME_TAG, run_actor

    assert run_actor({ACTOR_TAG: " carol "}, "abcdef123") == "carol"
    assert run_actor({SENSOR_NAME_TAG: "retrain_sensor"}, "abc") == "sensor retrain_sensor"
    assert run_actor({}, "abcdef123456") == "unattributed (run abcdef12, no mlops/actor tag)"


def test_what_requested_a_run():
    from mlops_assets.defs.system_tags import automated_by

    assert automated_by({"dagster/sensor_name": "landing_sensor"}) == "sensor landing_sensor"
    assert automated_by({"dagster/backfill": "abc"}) == "backfill abc"
    assert automated_by({"mlops/actor": "carol"}) is None
