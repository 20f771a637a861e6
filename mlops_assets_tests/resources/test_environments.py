"""Local and production resources chosen from the environment (``resources/environments.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_assets.resources.environments import MissingSettingError, build_resources, resolved


def test_local_resources_live_under_the_state_folder(state_dir: Path):
    resources = build_resources()
    assert resources["io_manager"].base_url == str(state_dir / "lake")
    assert resources["landing"].url == str(state_dir / "landing")
    assert resources["data_registry"].dvc_remote == str(state_dir / "dvc-remote")


def test_production_without_settings_names_every_missing_variable():
    with pytest.raises(MissingSettingError) as info:
        build_resources({"MLOPS_ENV": "production", "MLOPS_LAKE_URL": "s3://b/lake"})
    message = str(info.value)
    for name in ("MLOPS_LANDING_URL", "MLOPS_REGISTRY_GIT_URL", "MLOPS_DVC_REMOTE_URL"):
        assert name in message
    assert "MLOPS_LAKE_URL" not in message


PRODUCTION = {
    "MLOPS_ENV": "production",
    "MLOPS_LANDING_URL": "s3://b/landing",
    "MLOPS_LAKE_URL": "s3://b/lake",
    "MLOPS_REGISTRY_GIT_URL": "https://git.example/registry.git",
    "MLOPS_DVC_REMOTE_URL": "s3://b/dvc",
    "MLOPS_PSEUDONYM_KEY": "k" * 40,
}


def test_production_without_the_pseudonym_key_refuses_naming_it(tmp_path: Path):
    env = {k: v for k, v in PRODUCTION.items() if k != "MLOPS_PSEUDONYM_KEY"}
    env |= {"MLFLOW_TRACKING_URI": "https://mlflow.example", "MLOPS_STATE_DIR": str(tmp_path)}
    with pytest.raises(MissingSettingError) as info:
        build_resources(env)
    assert str(info.value).startswith("MLOPS_ENV=production needs these variables: ")
    assert "MLOPS_PSEUDONYM_KEY (secret key of the pseudonyms" in str(info.value)
    assert "MLOPS_LAKE_URL" not in str(info.value)
    assert list(tmp_path.iterdir()) == []  # no key file made in its place
    # Given, it is resolved from the environment at run time, never held as a value.
    resources = build_resources({**env, "MLOPS_PSEUDONYM_KEY": "k" * 40})
    assert resources["pseudonyms"].key == "MLOPS_PSEUDONYM_KEY"  # a dg.EnvVar
    assert resources["pseudonyms"].production and not resources["pseudonyms"].key_file


def test_a_tracking_database_needs_an_artifact_location():
    env = {**PRODUCTION, "MLFLOW_TRACKING_URI": "postgresql+psycopg2://u:p@db/mlflow"}
    with pytest.raises(MissingSettingError, match="needs MLFLOW_ARTIFACT_LOCATION"):
        build_resources(env)
    resources = build_resources({**env, "MLFLOW_ARTIFACT_LOCATION": "s3://b/mlflow"})
    assert resources["tracking"].artifact_location == "s3://b/mlflow"
    # A tracking server decides where artifacts go.
    server = build_resources({**PRODUCTION, "MLFLOW_TRACKING_URI": "https://mlflow.example"})
    assert server["tracking"].artifact_location == ""


def test_resolved_resources_hold_the_values_not_the_variable_names():
    env = {**PRODUCTION, "MLFLOW_TRACKING_URI": "https://mlflow.example"}
    unresolved = build_resources(env)
    assert unresolved["data_registry"].dvc_remote == "MLOPS_DVC_REMOTE_URL"  # a dg.EnvVar
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        with resolved("data_registry", "tracking", env=env) as resources:
            assert resources.data_registry.dvc_remote == "s3://b/dvc"
            assert resources.data_registry.git_remote == "https://git.example/registry.git"
            assert resources.tracking.tracking_uri == "https://mlflow.example"
