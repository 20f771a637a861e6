"""The state folder, the environment flavour and telemetry (``mlops_assets/settings.py``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mlops_assets import settings


def test_state_folder_defaults_to_project_and_moves_with_one_variable(tmp_path: Path):
    assert settings.locations({}).state == settings.project_root() / "state"
    moved = settings.locations({settings.STATE_DIR_VAR: str(tmp_path / "elsewhere")})
    assert moved.state == tmp_path / "elsewhere"
    assert moved.lake == tmp_path / "elsewhere" / "lake"
    assert moved.data_registry.parent == moved.dvc_remote.parent == moved.state


def test_environment_is_local_by_default_and_validated():
    assert settings.environment({}) == "local"
    assert settings.environment({"MLOPS_ENV": "Production"}) == "production"
    with pytest.raises(ValueError, match="MLOPS_ENV must be"):
        settings.environment({"MLOPS_ENV": "staging"})


def test_telemetry_is_off_unless_set_explicitly():
    env = {"DO_NOT_TRACK": "false"}
    settings.telemetry_off(env)
    assert env["DO_NOT_TRACK"] == "false"
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert env["DVC_NO_ANALYTICS"] == "1"


def test_the_makefile_turns_off_exactly_the_telemetry_of_settings():
    makefile = (settings.project_root() / "Makefile").read_text()
    [line] = re.findall(r"^export ((?:[^\n]*\\\n)*[^\n]*)$", makefile, re.MULTILINE)
    pairs = line.replace("\\\n", " ").split()
    assert dict(pair.split("=", 1) for pair in pairs) == settings.TELEMETRY_OFF
