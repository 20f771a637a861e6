"""End to end: the production flavour on object storage, against a real S3 API (moto server).

A ``moto_server`` is started on 127.0.0.1 and one bucket created. ``MLOPS_ENV=production``
then points every store at it: the landing zone (``s3://<bucket>/landing``), the lake
(``.../lake``), the DVC remote of the data registry (``.../dvc``) and MLflow's artifact
location (``.../mlflow``); the data registry's git side is a local bare repository and MLflow
tracks in SQLite. Every client finds the server through ``AWS_ENDPOINT_URL`` alone.

Three weeks are replayed into the S3 landing zone and carried through the real landing sensor
and automation conditions (``LocalDaemon``); then the training group runs. Checked through boto3
on the server: the landing files, one lake object per partition, the DVC objects named by the
recorded MD5s, MLflow's model files and run artifacts; a feature day restored from the S3
remote on a fresh clone of the registry equals the lake object byte for byte; a file put by
another S3 client is picked up by the sensor. Faults: a lake bucket that does not exist and an
MLflow artifact bucket that does not exist fail clearly, create no bucket and register nothing.
The lake and the data registry agree on every failure of a feature day: a lake that turns
unwritable after the inputs were read, a DVC remote bucket that does not exist and a registry
git server that refuses the push each fail clearly and leave neither a lake object without its
registry version nor a registry version without its lake object; a re-materialized day keeps
its previous version on both sides. The audit trail on S3: records chain, a taken number is
refused by ``If-None-Match: *`` (moto honours it), an edit by another client is named, and two
writers racing with their own listing caches never share a number (a few seconds, no training).

Runtime: about 3.5 minutes on two cores (22 feature days ~90 s, mostly Dagster's per-run
bookkeeping and one DVC commit + push per day; one training ~20 s; the MLflow fault trains
three times and waits out the ~20 s retry back-off of candidate_model; the three registry and
lake faults ~30 s).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from mlops_assets import settings
from mlops_assets.definitions import build_defs
from mlops_assets.defs.training import TRACKING_RETRY
from mlops_assets.lib.data_registry import DataRegistry
from mlops_assets.lib.pseudonyms import KEY_VARIABLE as PSEUDONYM_KEY_VAR
from mlops_assets.lib.replay import replay
from mlops_assets.local_daemon import LocalDaemon, RunOutcome
from mlops_assets_tests.deployed import latest_metadata, run_config
from mlops_assets_tests.e2e.s3 import (
    aws_environment,
    bucket_exists,
    forget_s3_clients,
    object_keys,
)
from mlops_assets_tests.e2e.servers import MotoServer

pytestmark = pytest.mark.e2e

BUCKET = "mlops-e2e"
MISSING_LAKE_BUCKET = "mlops-e2e-no-such-lake"
MISSING_ARTIFACT_BUCKET = "mlops-e2e-no-such-artifacts"
MISSING_DVC_BUCKET = "mlops-e2e-no-such-dvc-remote"
FIRST_DAY = date(2013, 1, 1)
DAYS = 21
# Put into the landing zone by another S3 client after the first pass (as an upstream would).
LATE_DAY = date(2013, 1, 22)
TRAINING = dg.AssetSelection.groups("training")
REFERENCES = ("planes", "airports", "airlines")
DAY_ASSETS = ("raw_flights", "raw_weather", "flight_features")


def _days(first: date, count: int) -> list[str]:
    return [(first + timedelta(days=i)).isoformat() for i in range(count)]


def _bare_repo(path: Path) -> Path:
    subprocess.run(
        ["git", "init", "--quiet", "--bare", "--initial-branch=main", str(path)], check=True
    )
    return path


def _git_paths(origin: Path) -> list[str]:
    """Files on ``main`` of a bare repository (empty if nothing was ever pushed)."""
    result = subprocess.run(
        ["git", "--git-dir", str(origin), "ls-tree", "-r", "--name-only", "main"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.split() if result.returncode == 0 else []


def _production_env(root: Path, **overrides: str) -> dict[str, str]:
    """The production settings of one deployment under ``root`` (state, registry origin)."""
    return {
        settings.ENV_VAR: "production",
        settings.STATE_DIR_VAR: str(root / "state"),
        "MLOPS_LANDING_URL": f"s3://{BUCKET}/landing",
        "MLOPS_LAKE_URL": f"s3://{BUCKET}/lake",
        "MLOPS_DVC_REMOTE_URL": f"s3://{BUCKET}/dvc",
        "MLOPS_REGISTRY_GIT_URL": str(root / "registry-origin.git"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "MLFLOW_ARTIFACT_LOCATION": f"s3://{BUCKET}/mlflow",
        PSEUDONYM_KEY_VAR: secrets.token_urlsafe(32),
        **overrides,
    }


def _failure_text(instance: dg.DagsterInstance, run_id: str) -> str:
    """Every step failure of a run with its chain of causes, as one text."""
    texts = []
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        event = record.dagster_event
        data = event.step_failure_data if event else None
        error = data.error if data else None
        while error is not None:
            texts.append(error.message.strip())
            error = error.cause or error.context
        if data and data.user_failure_data and data.user_failure_data.description:
            texts.append(data.user_failure_data.description)
    return "\n".join(texts)


def _materialized(instance: dg.DagsterInstance, asset: str) -> list[Any]:
    return list(instance.fetch_materializations(dg.AssetKey(asset), limit=1000).records)


@dataclass
class World:
    """The moto server, the production deployment on it, and its Dagster instance."""

    server: MotoServer
    root: Path
    env: dict[str, str]
    instance: dg.DagsterInstance
    defs: dg.Definitions
    loop: LocalDaemon
    first_pass: list[RunOutcome]

    @property
    def s3(self) -> Any:
        return self.server.client()

    @property
    def origin(self) -> Path:
        return Path(self.env["MLOPS_REGISTRY_GIT_URL"])

    def keys(self, prefix: str) -> list[str]:
        return object_keys(self.s3, BUCKET, prefix)

    def body(self, key: str) -> bytes:
        return bytes(self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())

    def metadata(self, asset: str, partition: str | None = None) -> dict[str, Any]:
        return latest_metadata(self.instance, asset, partition)

    def materialize(self, defs: dg.Definitions, selection: Any, **kwargs: Any) -> Any:
        return dg.materialize(
            list(defs.assets or []),  # type: ignore[arg-type]
            selection=selection,
            instance=self.instance,
            resources=dict(defs.resources or {}),
            raise_on_error=False,
            **kwargs,
        )


@pytest.fixture(scope="module")
def process_env(
    moto_server: MotoServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """The process environment of the module: every S3 client on the moto server.

    The ``isolated`` fixture keeps the process on the loopback, without inherited AWS or MLflow
    context, and restores the environment afterwards; the cached S3 clients are dropped before
    and after. Yields the module's scratch folder (``~/.aws`` files replaced by absent ones).
    """
    root = tmp_path_factory.mktemp("object_storage")
    os.environ.update(aws_environment(moto_server.endpoint, root))
    forget_s3_clients()
    try:
        yield root
    finally:
        forget_s3_clients()  # they point at a server that is about to stop


@pytest.fixture(scope="module")
def world(moto_server: MotoServer, process_env: Path) -> Iterator[World]:
    """Three weeks replayed into the S3 landing zone and carried through ingestion and features."""
    from upath import UPath

    root = process_env / "deployment"
    root.mkdir()
    env = _production_env(root)
    _bare_repo(Path(env["MLOPS_REGISTRY_GIT_URL"]))
    moto_server.client().create_bucket(Bucket=BUCKET)
    os.environ.update(env)  # resources read their URLs when a run starts (restored later)
    with moto_server.report_on_failure(), dg.instance_for_test() as instance:
        defs = build_defs(os.environ)
        started = time.monotonic()
        replay(UPath(env["MLOPS_LANDING_URL"]), FIRST_DAY, DAYS)
        loop = LocalDaemon(defs, instance, root / "state" / "cursors.json")
        outcomes = loop.run_until_idle()
        print(f"{DAYS} days through S3 in {time.monotonic() - started:.0f} s")
        yield World(moto_server, root, env, instance, defs, loop, outcomes)


# -- the healthy path -------------------------------------------------------------------------


def test_days_flow_from_the_s3_landing_zone_into_the_s3_lake_and_dvc_remote(world: World):
    failed = [(o.assets, o.partition, o.error) for o in world.first_pass if not o.success]
    assert not failed, failed
    days = _days(FIRST_DAY, DAYS)
    for asset in DAY_ASSETS:
        materialized = world.instance.get_materialized_partitions(dg.AssetKey(asset))
        assert sorted(materialized) == days, asset

    landing = world.keys("landing/")
    expected_landing = {f"landing/{d}/{day}.csv" for d in ("flights", "weather") for day in days}
    expected_landing |= {f"landing/reference/{name}.csv" for name in REFERENCES}
    expected_landing |= {f"landing/manifests/{day}.json" for day in days}
    assert set(landing) == expected_landing

    lake = set(world.keys("lake/"))
    expected_lake = {f"lake/{name}.parquet" for name in REFERENCES}
    expected_lake |= {f"lake/{asset}/{day}.parquet" for asset in DAY_ASSETS for day in days}
    assert lake == expected_lake  # one object per partition, no temporary objects left
    for name in REFERENCES:
        meta = world.metadata(name)
        assert meta["path"] == f"s3://{BUCKET}/lake/{name}.parquet"
        assert meta["bytes"] == len(world.body(f"lake/{name}.parquet"))

    dvc_objects = set(world.keys("dvc/"))
    versioned = set(_git_paths(world.origin))
    for day in days:
        meta = world.metadata("flight_features", day)
        md5 = meta["dvc_md5"]
        assert f"dvc/files/md5/{md5[:2]}/{md5[2:]}" in dvc_objects, (day, md5)
        assert meta["path"] == f"s3://{BUCKET}/lake/flight_features/{day}.parquet"
        assert f"flight_features/{day}.parquet.dvc" in versioned
    # The lake bucket holds nothing else: no stray bucket was created either.
    assert {b["Name"] for b in world.s3.list_buckets()["Buckets"]} == {BUCKET}


def test_a_file_put_by_another_s3_client_is_picked_up_by_the_landing_sensor(world: World):
    """The sensor's listing is fresh on every tick (fsspec caches listings per process).

    The upstream puts the day's files, then their manifest, as an export job would.
    """
    from mlops_assets.lib.manifest import build_manifest
    from mlops_assets.lib.source import read_source_table

    payloads = {}
    for dataset in ("flights", "weather"):
        table = read_source_table(dataset)
        day = table[
            (table["year"] == str(LATE_DAY.year))
            & (table["month"] == str(LATE_DAY.month))
            & (table["day"] == str(LATE_DAY.day))
        ]
        payloads[f"{dataset}/{LATE_DAY}.csv"] = day.to_csv(index=False).encode()
    for key, payload in payloads.items():
        world.s3.put_object(Bucket=BUCKET, Key=f"landing/{key}", Body=payload)
    assert world.loop.tick_landing() == []  # the day waits for its manifest
    manifest = build_manifest(LATE_DAY, payloads).to_json()
    world.s3.put_object(Bucket=BUCKET, Key=f"landing/manifests/{LATE_DAY}.json", Body=manifest)
    outcomes = world.loop.run_until_idle()
    assert outcomes and all(o.success for o in outcomes), [(o.assets, o.error) for o in outcomes]
    for asset in DAY_ASSETS:
        assert LATE_DAY.isoformat() in world.instance.get_materialized_partitions(
            dg.AssetKey(asset)
        ), asset
    assert f"lake/flight_features/{LATE_DAY}.parquet" in world.keys("lake/flight_features/")


def test_a_feature_day_restores_from_the_s3_remote_on_a_fresh_clone(world: World):
    """What `mlops-assets restore` does, on a machine that has no registry work tree yet."""
    day = "2013-01-07"
    meta = world.metadata("flight_features", day)
    fresh = DataRegistry(
        world.root / "elsewhere" / "registry", world.env["MLOPS_DVC_REMOTE_URL"], str(world.origin)
    )
    path, rev = str(meta["registry_path"]), str(meta["registry_rev"])
    assert fresh.recorded_md5(path, rev) == meta["dvc_md5"]  # clones the registry first
    out = world.root / "restored" / path
    digest = fresh.restore(path, rev, out, expected_md5=str(meta["dvc_md5"]))
    assert digest == meta["dvc_md5"]
    lake_bytes = world.body(f"lake/flight_features/{day}.parquet")
    assert out.read_bytes() == lake_bytes
    assert fresh.read(path, rev) == lake_bytes


def test_training_tracks_models_and_artifacts_in_s3(world: World):
    started = time.monotonic()
    result = world.materialize(world.defs, TRAINING, run_config=run_config())
    print(f"training in {time.monotonic() - started:.0f} s")
    assert result.success, _failure_text(world.instance, result.run_id)
    candidate = world.metadata("candidate_model")
    champion = world.metadata("champion_model")
    assert str(champion["model_version"]) == str(candidate["model_version"]) == "1"
    run_id = candidate["mlflow_run_id"]

    mlflow_keys = world.keys("mlflow/")
    run_artifacts = {k.split(f"/{run_id}/artifacts/", 1)[1] for k in mlflow_keys if run_id in k}
    assert {"feature_importance.csv", "feature_importance.png", "model_card.md"} <= run_artifacts
    model_files = {k.rsplit("/", 1)[1] for k in mlflow_keys if "/models/" in k}
    assert {"MLmodel", "pyfunc_model.py", "classifier.json", "requirements.txt"} <= model_files, (
        model_files
    )

    from mlflow import MlflowClient

    client = MlflowClient(world.env["MLFLOW_TRACKING_URI"], world.env["MLFLOW_TRACKING_URI"])
    # The registered version's files are in the S3 artifact location.
    location = str(client.get_model_version_download_uri("flight_delay", "1"))
    assert location.startswith(f"s3://{BUCKET}/mlflow/"), location
    prefix = location.removeprefix(f"s3://{BUCKET}/").rstrip("/")
    assert f"{prefix}/MLmodel" in mlflow_keys, (prefix, mlflow_keys)
    importance = [
        k for k in mlflow_keys if k.endswith(f"{run_id}/artifacts/feature_importance.csv")
    ]
    assert world.body(importance[0]).startswith(b"feature,")

    data = world.metadata("training_set")
    md5 = data["dvc_md5"]
    assert f"dvc/files/md5/{md5[:2]}/{md5[2:]}" in world.keys("dvc/")
    assert "training_set/flight_delay.parquet.dvc" in _git_paths(world.origin)


# -- faults -----------------------------------------------------------------------------------


def test_a_missing_lake_bucket_fails_the_first_write_and_registers_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch
):
    from upath import UPath

    root = world.root.parent / "missing-lake"
    root.mkdir()
    env = _production_env(
        root,
        MLOPS_LANDING_URL=f"s3://{BUCKET}/missing-lake/landing",
        MLOPS_LAKE_URL=f"s3://{MISSING_LAKE_BUCKET}/lake",
        MLOPS_DVC_REMOTE_URL=f"s3://{BUCKET}/missing-lake/dvc",
    )
    origin = _bare_repo(Path(env["MLOPS_REGISTRY_GIT_URL"]))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    replay(UPath(env["MLOPS_LANDING_URL"]), FIRST_DAY, 2)
    with dg.instance_for_test() as instance:
        defs = build_defs(os.environ)
        outcomes = LocalDaemon(defs, instance, root / "cursors.json").run_until_idle()
        # The reference tables are the first write; the days wait for them.
        [outcome] = outcomes
        assert outcome.assets == sorted(REFERENCES) and not outcome.success
        text = _failure_text(instance, outcome.run_id)
        print(text)
        assert f"bucket '{MISSING_LAKE_BUCKET}' does not exist" in text
        assert f"to the lake at s3://{MISSING_LAKE_BUCKET}/lake/airlines.parquet" in text
        for asset in (*REFERENCES, *DAY_ASSETS):
            assert not _materialized(instance, asset), asset
    assert not bucket_exists(world.s3, MISSING_LAKE_BUCKET)  # not created by a mkdir
    assert not any(p.startswith("flight_features/") for p in _git_paths(origin))
    assert not object_keys(world.s3, BUCKET, "missing-lake/dvc/")


def test_a_missing_artifact_bucket_fails_the_candidate_and_registers_no_version(
    world: World, monkeypatch: pytest.MonkeyPatch
):
    from mlflow import MlflowClient

    tracking_uri = f"sqlite:///{world.root.parent / 'missing-artifacts' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setenv("MLFLOW_ARTIFACT_LOCATION", f"s3://{MISSING_ARTIFACT_BUCKET}/mlflow")
    defs = build_defs(os.environ)
    started = time.monotonic()
    # Every attempt of the retry policy fails the same way (execute_in_process cannot turn
    # retries off): none of them may leave a version behind.
    result = world.materialize(defs, TRAINING, run_config=run_config())
    print(f"failed training in {time.monotonic() - started:.0f} s")
    assert not result.success
    failed_steps = {
        e.step_key for e in result.all_events if e.is_step_failure and e.step_key is not None
    }
    assert failed_steps == {"candidate_model"}
    retried = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retried) == TRACKING_RETRY.max_retries
    text = _failure_text(world.instance, result.run_id)
    print(text)
    assert MISSING_ARTIFACT_BUCKET in text and "NoSuchBucket" in text

    client = MlflowClient(tracking_uri, tracking_uri)
    assert client.search_model_versions("name='flight_delay'") == []
    experiment = client.get_experiment_by_name("flight_delay")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert runs and {r.info.status for r in runs} == {"FAILED"}
    assert not bucket_exists(world.s3, MISSING_ARTIFACT_BUCKET)
    # The healthy deployment's registry is untouched: version 1 is still the champion.
    healthy = MlflowClient(world.env["MLFLOW_TRACKING_URI"], world.env["MLFLOW_TRACKING_URI"])
    assert str(healthy.get_model_version_by_alias("flight_delay", "champion").version) == "1"


def _hidden_keys(world: World, prefix: str) -> list[str]:
    """Staged or temporary objects (hidden names) under ``prefix``."""
    return [k for k in world.keys(prefix) if k.rsplit("/", 1)[-1].startswith(".")]


def _origin_log(origin: Path, path: str) -> list[str]:
    """Revisions of ``main`` in a bare registry repository that changed ``path``'s pointer."""
    result = subprocess.run(
        ["git", "--git-dir", str(origin), "log", "--format=%H", "main", "--", f"{path}.dvc"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.split()


def _head(git_dir: Path, rev: str = "HEAD") -> str:
    """The commit ``rev`` names in a repository (a work tree or a bare repository)."""
    return subprocess.run(
        ["git", "--git-dir", str(git_dir), "rev-parse", rev],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def _day_materializations(world: World, day: str) -> int:
    records = world.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("flight_features"), asset_partitions=[day]),
        limit=100,
    ).records
    return len(records)


def test_a_lake_write_failing_after_the_inputs_were_read_registers_no_feature_version(
    world: World,
):
    """The lake turns unwritable mid-run (bucket deleted, permissions revoked, S3 error)."""
    from upath import UPath

    from mlops_assets.resources.parquet_io import ParquetLakeIOManager

    day = "2013-01-23"
    path = f"flight_features/{day}.parquet"
    replay(
        UPath(world.env["MLOPS_LANDING_URL"]), date.fromisoformat(day), 1, include_reference=False
    )
    raw = world.materialize(world.defs, ["raw_flights", "raw_weather"], partition_key=day)
    assert raw.success, _failure_text(world.instance, raw.run_id)
    readable = ParquetLakeIOManager(base_path=UPath(world.env["MLOPS_LAKE_URL"]))

    class ReadsTheLakeCannotWriteIt(ParquetLakeIOManager):
        def load_input(self, context: dg.InputContext) -> Any:
            return readable.load_input(context)

    clone = settings.locations(world.env).data_registry
    registry = DataRegistry(clone, world.env["MLOPS_DVC_REMOTE_URL"], str(world.origin))
    head = _head(clone / ".git")
    broken = ReadsTheLakeCannotWriteIt(
        base_path=UPath(f"s3://{MISSING_LAKE_BUCKET}/lake"), registry=registry
    )
    defs = dg.Definitions(
        assets=world.defs.assets, resources={**(world.defs.resources or {}), "io_manager": broken}
    )
    result = world.materialize(defs, ["flight_features"], partition_key=day)
    assert not result.success
    text = _failure_text(world.instance, result.run_id)
    assert f"bucket '{MISSING_LAKE_BUCKET}' does not exist" in text, text
    assert "the data registry still records the previous version" in text
    # Neither side holds the day: no materialization, no lake object, no registry version.
    assert day not in world.instance.get_materialized_partitions(dg.AssetKey("flight_features"))
    assert f"lake/{path}" not in world.keys("lake/flight_features/")
    assert f"{path}.dvc" not in _git_paths(world.origin)
    assert _origin_log(world.origin, path) == []
    assert _head(clone / ".git") == head  # no local commit left to publish
    assert not bucket_exists(world.s3, MISSING_LAKE_BUCKET)


def test_a_registry_push_refused_by_the_git_server_keeps_the_previous_version_everywhere(
    world: World, monkeypatch: pytest.MonkeyPatch
):
    """A re-materialized day with new content; the registry's git server refuses the push."""
    from mlops_assets.lib import features

    day = "2013-01-08"
    path = f"flight_features/{day}.parquet"
    before_bytes = world.body(f"lake/{path}")
    before_meta = world.metadata("flight_features", day)
    before_log = _origin_log(world.origin, path)
    stored = _day_materializations(world, day)
    real = features.build_flight_features
    monkeypatch.setattr(features, "build_flight_features", lambda *a: real(*a).iloc[:-1])
    hook = world.origin / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'the registry is read-only today' >&2\nexit 1\n")
    hook.chmod(0o755)
    try:
        result = world.materialize(world.defs, ["flight_features"], partition_key=day)
    finally:
        hook.unlink()
    assert not result.success
    text = _failure_text(world.instance, result.run_id)
    assert f"could not version {path}" in text and "the registry is read-only today" in text, text
    # The previous version, on both sides and in the materialization history.
    assert world.body(f"lake/{path}") == before_bytes
    assert _hidden_keys(world, "lake/") == []
    assert _origin_log(world.origin, path) == before_log
    assert _day_materializations(world, day) == stored
    assert world.metadata("flight_features", day)["registry_rev"] == before_meta["registry_rev"]
    clone = settings.locations(world.env).data_registry
    assert _head(clone / ".git") == _head(world.origin, "main")  # nothing left to publish later


def test_a_missing_dvc_remote_bucket_stores_the_feature_day_nowhere(
    world: World, monkeypatch: pytest.MonkeyPatch
):
    from upath import UPath

    root = world.root.parent / "missing-dvc"
    root.mkdir()
    env = _production_env(
        root,
        MLOPS_LANDING_URL=f"s3://{BUCKET}/missing-dvc/landing",
        MLOPS_LAKE_URL=f"s3://{BUCKET}/missing-dvc/lake",
        MLOPS_DVC_REMOTE_URL=f"s3://{MISSING_DVC_BUCKET}/dvc",
    )
    origin = _bare_repo(Path(env["MLOPS_REGISTRY_GIT_URL"]))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    replay(UPath(env["MLOPS_LANDING_URL"]), FIRST_DAY, 1)
    with dg.instance_for_test() as instance:
        defs = build_defs(os.environ)
        outcomes = LocalDaemon(defs, instance, root / "cursors.json").run_until_idle()
        failed = [o for o in outcomes if not o.success]
        # The day's landing run carries its features: raw lands, the features step fails.
        day_run = {"raw_flights", "raw_weather", "flight_features"}
        assert [set(o.assets) for o in failed] == [day_run], outcomes
        text = _failure_text(instance, failed[0].run_id)
        print(text)
        assert f"could not version flight_features/{FIRST_DAY}.parquet" in text
        assert f"pushing to the DVC remote s3://{MISSING_DVC_BUCKET}/dvc failed" in text
        assert f"bucket '{MISSING_DVC_BUCKET}' does not exist" in text
        assert not _materialized(instance, "flight_features")
    assert not object_keys(world.s3, BUCKET, "missing-dvc/lake/flight_features/")
    assert not any(p.startswith("flight_features/") for p in _git_paths(origin))
    assert not bucket_exists(world.s3, MISSING_DVC_BUCKET)


# -- the audit trail on S3 --------------------------------------------------------------------

AUDIT_BUCKET = "mlops-e2e-audit"


def test_the_audit_trail_on_s3_chains_and_a_taken_number_is_refused(
    moto_server: MotoServer, process_env: Path
) -> None:
    from upath import UPath

    from mlops_assets.lib import audit
    from mlops_assets.resources.audit import AuditTrail

    client = moto_server.client()
    client.create_bucket(Bucket=AUDIT_BUCKET)
    trail = AuditTrail(url=f"s3://{AUDIT_BUCKET}/trail")
    records = [trail.record("rollback", "alice", f"v{i}", "why", {"commit": "c"}) for i in (1, 2)]
    assert object_keys(client, AUDIT_BUCKET) == ["trail/00000001.json", "trail/00000002.json"]
    assert trail.records() == records
    assert trail.verify() == audit.Verification(2, records[-1].hash)
    # moto honours `If-None-Match: *` like S3: a second create of a taken number fails whole.
    kept = client.get_object(Bucket=AUDIT_BUCKET, Key="trail/00000002.json")["Body"].read()
    with pytest.raises(FileExistsError), (UPath(trail.url) / "00000002.json").open("xb") as out:
        out.write(b"forged")
    assert client.get_object(Bucket=AUDIT_BUCKET, Key="trail/00000002.json")["Body"].read() == kept
    # An edit by another S3 client is named.
    edited = json.loads(kept) | {"actor": "mallory"}
    client.put_object(Bucket=AUDIT_BUCKET, Key="trail/00000002.json", Body=json.dumps(edited))
    result = trail.verify()
    assert (result.first_bad, result.records) == ("00000002.json", 1)
    assert "edited" in result.problem


def test_two_writers_racing_on_s3_never_share_a_number(
    moto_server: MotoServer, process_env: Path
) -> None:
    import threading

    from mlops_assets.resources.audit import AuditTrail

    url = f"s3://{AUDIT_BUCKET}/race"
    # Each writer has a filesystem of its own, with its own listing cache, as two processes.
    writers = [
        AuditTrail(url=url, storage_options='{"skip_instance_cache": true}') for _ in range(2)
    ]

    def write(trail: AuditTrail, who: str) -> None:
        for _ in range(6):
            trail.record("policy_change", who, "trial policy", "race")

    threads = [
        threading.Thread(target=write, args=(trail, f"w{i}")) for i, trail in enumerate(writers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    result = writers[0].verify()
    assert (result.ok, result.records) == (True, 12)
    actors = [record.actor for record in writers[1].records()]
    assert sorted(actors) == ["w0"] * 6 + ["w1"] * 6
    keys = object_keys(moto_server.client(), AUDIT_BUCKET, "race/")
    assert keys == [f"race/{seq:08d}.json" for seq in range(1, 13)]
