"""What a newcomer reads: the main job's whole output, on a window that reaches a blocked day.

Runs ``mlops-assets demo`` as a user would (a fresh state folder, Python's default warning
filters): a 14-day bootstrap from 2013-01-29, then 2013-02-12, whose weather breaks its
contract. The expected failure is one line; nothing else may be a traceback or a warning, and
every line is the project's own (nothing MLflow or Dagster's loggers print of themselves).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_assets import settings

pytestmark = pytest.mark.e2e

BLOCKED = (
    "  2013-02-12 blocked: raw_weather: contract 'weather' failed: wind_speed: in_range(0, 200) "
    "broken by 1048.36058 at row(s) 4 (details in the UI)"
)


def test_the_main_job_prints_no_traceback_and_no_warning(tmp_path: Path):
    env = {
        k: v
        for k, v in os.environ.items()
        # Nothing of this test session: its warning filters, stores or MLflow URIs.
        if not k.startswith(("MLOPS_", "PYTEST_", "DAGSTER_", "MLFLOW_", "BENTOML_", "PYTHONW"))
    }
    env[settings.STATE_DIR_VAR] = str(tmp_path / "state")
    command = [sys.executable, "-m", "mlops_assets.cli", "demo", "--start", "2013-01-29"]
    done = subprocess.run(
        [*command, "--bootstrap-days", "14", "--until", "2013-02-12"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Traceback" not in output and "Stack Trace" not in output, output
    assert re.findall(r"^.*(?:Warning\b|\bWARNING\b).*$", output, re.MULTILINE) == [], output
    # Only the project's own lines: none that MLflow prints when it registers a model or a
    # version, no log line of Dagster's console logger ("<time> - dagster - INFO - ...").
    mlflow_lines = r"^.*(?:registered model|Registered model|Created version).*$"
    assert re.findall(mlflow_lines, output, re.MULTILINE) == [], output
    assert re.findall(r"^.* - dagster - .*$", output, re.MULTILINE) == [], output
    assert [line for line in output.splitlines() if "blocked:" in line] == [BLOCKED], output
    assert "(1 failed: 2013-02-12)" in output
    # [template:if with_service_delivery]
    # The promotion reached the deployment repository as one release commit with its lineage.
    remote = settings.Locations(tmp_path / "state").deployment / "remote.git"
    log = subprocess.run(
        ["git", "--git-dir", str(remote), "log", "--format=%s%n%b%x1e", "main"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    [message] = [entry.strip() for entry in log.split("\x1e") if entry.strip()]
    assert message.startswith("Release flight_delay v1 to blue"), message
    for lineage in ("MLflow run ", "Training data: DVC md5 ", "Bento: flight_delay_service:"):
        assert lineage in message, message
    assert "released  v1 on blue" in output, output
    # [template:end]
