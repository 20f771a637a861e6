"""Deployment assets on a real state: the Bento follows promotions only, predictions follow days.

Builds real Bentos with BentoML in the test's state folder (serving them is exercised in
e2e/test_serving.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import yaml

from mlops_assets import settings
from mlops_assets.defs.training import TRIAL_POLICY_VAR
from mlops_assets.lib.pyfunc import load_classifier
from mlops_assets.lib.scoring import ScoringBundle
from mlops_assets_tests.deployed import PREDICT_DAY, Deployment, deployed_copy, run_config

DAY = PREDICT_DAY.isoformat()


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, deployed_state: Path
) -> Iterator[Deployment]:
    with deployed_copy(deployed_state, tmp_path_factory.mktemp("deployment") / "state") as copy:
        yield copy


def bentos(deployment: Deployment) -> list[str]:
    folder = deployment.bentoml_home / "bentos" / "flight_delay_service"
    return sorted(p.name for p in folder.iterdir() if p.name != "latest")


def test_promotion_builds_a_labelled_servable_bento(deployment: Deployment):
    meta = deployment.metadata("bento")
    assert deployment.count("bento") == 1
    assert meta["model_version"] == "1"
    tracking = deployment.resources["tracking"]
    champion = tracking.version_by_alias("champion")
    assert meta["mlflow_run_id"] == champion.run_id
    run = tracking.client().get_run(champion.run_id)
    assert meta["training_set_md5"] == run.data.tags["mlops.data.dvc_md5"]
    assert meta["git_commit"] and meta["size_bytes"] > 10_000
    manifest = yaml.safe_load((Path(meta["build_context"]) / "bento.yaml").read_text())
    assert manifest["labels"]["model_version"] == "1"
    assert manifest["labels"]["mlflow_run_id"] == champion.run_id
    assert manifest["service"] == "mlops_assets.serving.service:FlightDelay"
    assert (Path(meta["build_context"]) / "env" / "docker" / "Dockerfile").exists()
    assert Path(meta["export_path"]).stat().st_size > 10_000
    # The model inside is exactly the registered champion.
    name, version = meta["model_tag"].split(":")
    bundle = ScoringBundle.load(deployment.bentoml_home / "models" / name / version)
    registered = load_classifier(f"models:/flight_delay/{champion.version}", tracking.tracking_uri)
    assert bundle.classifier == registered
    assert bundle.model["model_version"] == "1"


# [template:if with_service_delivery]
def release_log(deployment: Deployment) -> list[str]:
    """Messages of the deployment repository's commits, newest first."""
    remote = settings.Locations(deployment.state).deployment / "remote.git"
    done = subprocess.run(
        ["git", "--git-dir", str(remote), "log", "--format=%B%x1e", "main"],
        capture_output=True,
        text=True,
        check=True,
    )
    return [message.strip() for message in done.stdout.split("\x1e") if message.strip()]


def test_the_bento_is_released_with_its_lineage(deployment: Deployment):
    from mlops_assets.lib.release import DEFAULT_IMAGE_REPOSITORY

    bento, release = deployment.metadata("bento"), deployment.metadata("release")
    assert bento["image"] == f"{DEFAULT_IMAGE_REPOSITORY}:{bento['bento_tag'].split(':')[1]}"
    assert release["status"] == "released"
    assert (release["live_colour"], release["image"]) == ("blue", bento["image"])
    assert release["model_version"] == "1"
    [message] = release_log(deployment)
    assert message.startswith("Release flight_delay v1 to blue\n\nPromoted by the gate: ")
    for lineage in ("mlflow_run_id", "training_set_md5", "bento_tag", "image", "git_commit"):
        assert str(bento[lineage]) in message
    assert f"Release-Id: {release['release_id']}" in message


def test_a_release_of_an_image_that_is_not_the_bentos_is_refused(deployment: Deployment):
    from mlops_assets.resources.bentos import BentoStore

    before, log = deployment.metadata("release"), release_log(deployment)
    resources = deployment.resources
    store = resources["bentos"]
    elsewhere = BentoStore(home=store.home, export_dir=store.export_dir, image_repository="o.io/x")
    result = dg.materialize(
        list(deployment.defs.assets or []),  # type: ignore[arg-type]
        selection=dg.AssetSelection.assets("release"),
        instance=deployment.instance,
        resources={**resources, "bentos": elsewhere},
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "release refused or failed, nothing pushed" in str(failure.step_failure_data.error)
    assert "but flight_delay_service:" in str(failure.step_failure_data.error)
    assert deployment.metadata("release") == before
    assert release_log(deployment) == log


def test_an_unreachable_deployment_remote_fails_the_release_and_changes_nothing(
    deployment: Deployment, tmp_path: Path
):
    from mlops_assets.resources.deployment_repo import DeploymentRepo

    before, log = deployment.metadata("release"), release_log(deployment)
    tracking = deployment.resources["tracking"]
    champion = tracking.version_by_alias("champion").version
    local = deployment.resources["deployment_repo"]
    unreachable = DeploymentRepo(
        url="http://127.0.0.1:9/deployment.git",
        checkout=str(tmp_path / "c"),
        manifests=local.manifests,
    )
    result = dg.materialize(
        list(deployment.defs.assets or []),  # type: ignore[arg-type]
        selection=dg.AssetSelection.assets("release"),
        instance=deployment.instance,
        resources={**deployment.resources, "deployment_repo": unreachable},
        raise_on_error=False,
    )
    assert not result.success
    failure = str(next(e for e in result.all_events if e.is_step_failure).step_failure_data.error)
    assert "release refused or failed, nothing pushed" in failure
    assert "http://127.0.0.1:9/deployment.git" in failure
    assert tracking.version_by_alias("champion").version == champion
    assert deployment.metadata("release") == before
    assert release_log(deployment) == log


# [template:end]
def test_new_day_is_predicted_by_the_champion(deployment: Deployment):
    meta = deployment.metadata("batch_predictions", DAY)
    assert meta["model_version"] == "1"
    lake = deployment.state / "lake"
    predictions = pd.read_parquet(lake / "batch_predictions" / f"{DAY}.parquet")
    features = pd.read_parquet(lake / "flight_features" / f"{DAY}.parquet")
    assert len(predictions) == len(features) == meta["dagster/row_count"]
    tracking = deployment.resources["tracking"]
    classifier = load_classifier("models:/flight_delay/1", tracking.tracking_uri)
    np.testing.assert_array_equal(predictions["probability"], classifier.predict_proba(features))
    assert (predictions["delayed"] == (predictions["probability"] >= classifier.threshold)).all()
    assert set(predictions["model_version"]) == {"1"}


def test_rejected_challenger_builds_no_bento(deployment: Deployment):
    before, stored = deployment.count("bento"), bentos(deployment)
    releases = release_log(deployment)  # [template:only with_service_delivery]
    result = deployment.train()  # same data and config: not better, rejected
    assert result.success
    assert str(deployment.resources["tracking"].version_by_alias("champion").version) == "1"
    assert deployment.count("bento") == before
    assert bentos(deployment) == stored
    assert release_log(deployment) == releases  # [template:only with_service_delivery]


def test_failed_build_keeps_the_previous_bento(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
):
    before, stored = deployment.metadata("bento"), bentos(deployment)
    # BentoML builds with uv: without it on PATH the build fails before touching the store.
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    result = dg.materialize(
        list(deployment.defs.assets or []),  # type: ignore[arg-type]
        selection=dg.AssetSelection.assets("bento"),
        instance=deployment.instance,
        resources=deployment.resources,
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "building a Bento needs `uv` on PATH" in str(failure.step_failure_data.error)
    assert deployment.metadata("bento") == before
    assert bentos(deployment) == stored


def test_promotion_rebuilds_and_new_days_use_the_new_champion(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
):
    first = deployment.metadata("bento")
    old_predictions = deployment.metadata("batch_predictions", DAY)
    # A negative margin promotes any challenger that passes the floors; no live trial first.
    monkeypatch.setenv(TRIAL_POLICY_VAR, '{"trial_days": 0}')
    result = deployment.train(run_config(margin=-1.0, num_leaves=7))
    assert result.success
    champion = str(deployment.resources["tracking"].version_by_alias("champion").version)
    assert champion not in ("1", "2")
    new = deployment.metadata("bento")
    assert new["model_version"] == champion
    assert new["bento_tag"] != first["bento_tag"]
    assert Path(first["build_context"]).exists()  # the previous bento stays servable
    # Past predictions are history: not rewritten by the new champion.
    assert deployment.metadata("batch_predictions", DAY) == old_predictions
    next_day = PREDICT_DAY + timedelta(days=1)
    deployment.land(next_day)
    assert deployment.metadata("batch_predictions", next_day.isoformat())["model_version"] == (
        champion
    )
    manifest = yaml.safe_load((Path(new["build_context"]) / "bento.yaml").read_text())
    assert manifest["labels"]["model_version"] == champion
    # [template:if with_service_delivery]
    # The new champion goes live on the other colour; the first stays ready to return to.
    release = deployment.metadata("release")
    assert (release["live_colour"], release["image"]) == ("green", new["image"])
    assert release["idle_colour_serves"] == first["image"]
    assert release_log(deployment)[0].startswith(
        f"Release flight_delay v{champion} to green (blue keeps v1)\n\nPromoted by the gate: "
    )
    # [template:end]
    # The previous Bento still serves its own model, not the newest one in the store.
    assert served_model(deployment, first["bento_tag"]) == first["model_tag"]
    assert served_model(deployment, new["bento_tag"]) == new["model_tag"]


def served_model(deployment: Deployment, bento_tag: str) -> str:
    """The model tag the service resolves when ``bento_tag`` is loaded (as `bentoml serve`)."""
    script = (
        "import bentoml, sys; bentoml.load(sys.argv[1]); "
        "import mlops_assets.serving.service as s; print(s.MODEL.tag)"
    )
    env = {**os.environ, "BENTOML_HOME": str(deployment.bentoml_home)}
    done = subprocess.run(
        [sys.executable, "-c", script, bento_tag],
        env=env,
        cwd=deployment.state,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]
