"""A generated project passes its own tests, then runs on a swapped source and estimator.

The proof behind docs/template.md: render this repository with non-default answers, set the
new project up exactly as its README says (`uv sync --frozen`), run its unit suite, then
replace the data source and the estimator through their swap points only (one `lib/` module
each, plus the partition dates in `settings.py`), run the swap-point contract tests and the
main job (`<project> demo`) on a short window, and read what it produced.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mlops_assets_tests.template.template import ANSWERS, ROOT, render, snapshot

pytestmark = pytest.mark.e2e

SWAP = ROOT / "mlops_assets_tests" / "fixtures" / "swap"
PACKAGE = ANSWERS["package_name"]
# The generated project's tests that start no server and build no state: lib (unit/), settings,
# resources, the service's API guard, the deployment files and the project's own files.
FAST_SUITES = ("unit", "test_settings.py", "resources", "serving", "deploy", "project")
# Read back inside the generated project's own environment.
INSPECT = """
import json, sys
import dagster as dg
from mlflow import MlflowClient
from {package} import settings

where = settings.locations()
out = {{}}
with dg.DagsterInstance.get() as instance:  # DAGSTER_HOME is <state>/dagster_home
    def meta(asset):
        event = instance.get_latest_materialization_event(dg.AssetKey(asset))
        m = event.asset_materialization.metadata
        return {{k: v.value for k, v in m.items() if isinstance(v.value, (str, int, float))}}
    out["candidate"] = meta("candidate_model")
    out["bento"] = meta("bento")
    out["predicted_days"] = sorted(
        instance.get_materialized_partitions(dg.AssetKey("batch_predictions"))
    )
    out["performance_days"] = sorted(
        instance.get_materialized_partitions(dg.AssetKey("model_performance"))
    )
uri = f"sqlite:///{{where.state / 'mlflow' / 'mlflow.db'}}"
client = MlflowClient(tracking_uri=uri, registry_uri=uri)
champion = client.get_model_version_by_alias("{model}", "champion")
out["champion_version"] = str(champion.version)
out["params"] = client.get_run(champion.run_id).data.params
json.dump(out, sys.stdout)
"""


def _env(state: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        # MLflow exports the URIs it was last given (MLFLOW_TRACKING_URI, MLFLOW_REGISTRY_URI)
        # into os.environ: earlier in-process tests would point the project at their stores.
        if not k.startswith(
            (
                "MLOPS_",
                "PYTEST_",
                "DAGSTER_",
                "MLFLOW_",
                "BENTOML_HOME",
                "VIRTUAL_ENV",
                "UV_PROJECT",
            )
        )
    }
    env["MLOPS_STATE_DIR"] = str(state)
    env["DAGSTER_HOME"] = str(state / "dagster_home")  # as the demo sets it
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int) -> str:
    done = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, (
        f"{' '.join(cmd)} failed:\n{done.stdout[-6000:]}\n{done.stderr[-4000:]}"
    )
    return done.stdout


def _swap(project: Path) -> None:
    lib = project / PACKAGE / "lib"
    shutil.copy(SWAP / "synthetic_source.py", lib / "source.py")
    shutil.copy(SWAP / "estimator_hgb.py", lib / "estimator.py")
    settings = project / PACKAGE / "settings.py"
    text = settings.read_text()
    text, starts = re.subn(
        r"^PARTITION_START = .*$", "PARTITION_START = date(2024, 1, 1)", text, flags=re.M
    )
    text, ends = re.subn(
        r"^PARTITION_END = .*$", "PARTITION_END = date(2024, 4, 1)  # exclusive", text, flags=re.M
    )
    assert starts == ends == 1
    settings.write_text(text)


@pytest.mark.timeout(2400)
def test_generated_project_passes_its_tests_and_runs_on_swapped_parts(tmp_path: Path) -> None:
    uv = shutil.which("uv")
    assert uv, "uv must be on PATH (make setup installs it)"
    project = render(snapshot(tmp_path / "template"), tmp_path / "fraud-platform", ANSWERS)
    env = _env(tmp_path / "state")
    _run([uv, "sync", "--frozen", "--quiet"], project, env, 900)

    # 1. The generated project's own fast suites, as generated.
    tests = [uv, "run", "--frozen", "pytest", "-q", "-p", "no:cacheprovider"]
    unit = _run([*tests, *(f"{PACKAGE}_tests/{s}" for s in FAST_SUITES)], project, env, 1200)
    assert re.search(r"\d+ passed", unit) and " failed" not in unit, unit[-2000:]

    # 2. Swap the data source and the estimator through their swap points only.
    _swap(project)
    contracts = _run(
        [
            *tests,
            f"{PACKAGE}_tests/unit/test_source.py",
            f"{PACKAGE}_tests/unit/test_estimator.py",
        ],
        project,
        env,
        600,
    )
    assert " failed" not in contracts, contracts[-2000:]

    # 3. The main job on a short window of the synthetic source.
    demo = _run(
        [
            uv,
            "run",
            "--frozen",
            ANSWERS["project_name"],
            "demo",
            "--start",
            "2024-01-01",
            "--bootstrap-days",
            "14",
            "--days",
            "17",
        ],
        project,
        env,
        1200,
    )
    assert "closed loop on 2024-01-01 .. 2024-01-17" in demo
    facts = json.loads(
        _run(
            [
                uv,
                "run",
                "--frozen",
                "python",
                "-c",
                INSPECT.format(package=PACKAGE, model=ANSWERS["model_name"]),
            ],
            project,
            env,
            300,
        )
    )
    # The swapped estimator was trained, registered under the team's model name and deployed.
    assert "max_iter" in facts["params"] and "num_leaves" not in facts["params"]
    assert facts["candidate"]["model_name"] == ANSWERS["model_name"]
    assert facts["champion_version"] == "1"
    assert facts["bento"]["bento_tag"].startswith(f"{ANSWERS['model_name']}_service:")
    # The days after the bootstrap were predicted and monitored.
    for day in ("2024-01-15", "2024-01-16", "2024-01-17"):
        assert day in facts["predicted_days"]
        assert day in facts["performance_days"]
