"""The training half on real feature days: tracked runs, the gate, reproduce, rollback, faults.

MLflow runs against its embedded SQLite store in the test's state folder (the real server is
exercised in e2e/test_mlflow_server.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from mlops_assets import settings
from mlops_assets.definitions import build_defs
from mlops_assets.defs.training import TRIAL_POLICY_VAR
from mlops_assets.lib import modeling
from mlops_assets.lib.data_registry import DataRegistry
from mlops_assets.lib.replay import replay
from mlops_assets.lib.reproduce import ReproductionError, reproduce
from mlops_assets.local_daemon import LocalDaemon
from mlops_assets.undo import UndoError, rollback
from mlops_assets_tests.deployed import TRAINING, run_config
from mlops_assets_tests.faults import failure_text, refused_commits, staged_leftovers


class Trainer:
    def __init__(self, state: Path, instance: dg.DagsterInstance):
        self.instance = instance
        self.defs = build_defs({settings.STATE_DIR_VAR: str(state)})
        self.resources = dict(self.defs.resources or {})
        self.tracking = self.resources["tracking"]
        self.client = self.tracking.client()
        where = settings.locations({settings.STATE_DIR_VAR: str(state)})
        self.registry = DataRegistry(where.data_registry, str(where.dvc_remote))

    def train(self, config: dict[str, Any] | None = None, selection: Any = TRAINING) -> Any:
        config = config or run_config()
        if selection is not TRAINING:  # config only for the selected assets
            config = {"ops": {k: v for k, v in config["ops"].items() if k in selection}}
        return dg.materialize(
            list(self.defs.assets or []),  # type: ignore[arg-type]
            selection=selection,
            instance=self.instance,
            resources=self.resources,
            run_config=config,
            raise_on_error=False,
        )

    def count(self, asset: str) -> int:
        return len(self.instance.fetch_materializations(dg.AssetKey(asset), limit=100).records)

    def alias(self, alias: str) -> str:
        return str(self.client.get_model_version_by_alias(self.tracking.model_name, alias).version)

    def runs(self) -> list[Any]:
        experiment = self.client.get_experiment_by_name(self.tracking.experiment)
        return self.client.search_runs([experiment.experiment_id])

    def versions(self) -> list[str]:
        found = self.client.search_model_versions(f"name='{self.tracking.model_name}'")
        return sorted(str(v.version) for v in found)


@pytest.fixture(scope="module")
def trainer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trainer]:
    state = tmp_path_factory.mktemp("training") / "state"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(settings.STATE_DIR_VAR, str(state))
        with dg.instance_for_test() as instance:
            defs = build_defs({settings.STATE_DIR_VAR: str(state)})
            replay(state / "landing", date(2013, 1, 1), 21)
            LocalDaemon(defs, instance, state / "cursors.json").run_until_idle()
            yield Trainer(state, instance)


def test_first_training_is_tracked_registered_and_promoted(trainer: Trainer, tmp_path: Path):
    result = trainer.train()
    assert result.success
    [run] = trainer.runs()
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    data = trainer.instance.get_latest_materialization_event(dg.AssetKey("training_set"))
    meta = {k: v.value for k, v in data.asset_materialization.metadata.items()}
    assert tags["dagster_run_id"] == result.run_id
    assert tags["mlops.asset_key"] == "candidate_model"
    assert tags["mlops.data.dvc_md5"] == meta["dvc_md5"]
    assert tags["mlops.data.registry_rev"] == meta["registry_rev"]
    assert tags["mlops.data.window"] == "2013-01-01 .. 2013-01-21"
    assert len(tags["mlops.uv_lock_sha256"]) == 64
    assert tags["mlops.git_commit"]
    assert {"roc_auc", "pr_auc", "log_loss", "precision", "recall"} <= set(run.data.metrics)
    artifacts = {a.path for a in trainer.client.list_artifacts(run.info.run_id)}
    assert {"feature_importance.csv", "feature_importance.png", "model_card.md"} <= artifacts
    plot = trainer.client.download_artifacts(
        run.info.run_id, "feature_importance.png", str(tmp_path)
    )
    assert Path(plot).read_bytes().startswith(b"\x89PNG")
    assert trainer.alias("champion") == trainer.alias("challenger") == "1"
    # The training snapshot restores bit for bit from the registry.
    payload = trainer.registry.read(meta["registry_path"], meta["registry_rev"])
    assert (
        trainer.registry.recorded_md5(meta["registry_path"], meta["registry_rev"])
        == meta["dvc_md5"]
    )
    assert len(payload) > 0
    card = trainer.instance.get_latest_materialization_event(dg.AssetKey("model_card"))
    text = card.asset_materialization.metadata["card"].value
    assert "flight_delay v1" in text and meta["dvc_md5"] in text


def test_same_data_again_is_not_promoted_and_triggers_nothing(trainer: Trainer):
    champions, cards = trainer.count("champion_model"), trainer.count("model_card")
    result = trainer.train()
    assert result.success
    assert trainer.alias("champion") == "1"
    assert trainer.alias("challenger") == "2"
    version = trainer.client.get_model_version(trainer.tracking.model_name, "2")
    assert version.tags["mlops.gate"] == "rejected"
    assert "does not beat champion" in version.tags["mlops.gate_reason"]
    assert trainer.count("champion_model") == champions
    assert trainer.count("model_card") == cards
    [event] = [e for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"]
    observation = event.event_specific_data.asset_observation
    assert observation.metadata["decision"].value == "rejected"
    assert all(r.info.status == "FINISHED" for r in trainer.runs())


def test_reproduce_gives_identical_metrics(trainer: Trainer):
    result = reproduce(trainer.tracking, trainer.registry, "1")
    assert result.identical
    assert result.recorded["roc_auc"] == result.reproduced["roc_auc"]
    with pytest.raises(ReproductionError, match="not found"):
        reproduce(trainer.tracking, trainer.registry, "99")


def test_promotion_then_rollback(trainer: Trainer, monkeypatch: pytest.MonkeyPatch):
    # A negative margin promotes any challenger that passes the floors; no trial first.
    monkeypatch.setenv(TRIAL_POLICY_VAR, '{"trial_days": 0}')
    assert trainer.train(run_config(margin=-1.0, num_leaves=7)).success
    promoted = trainer.alias("champion")
    assert promoted == trainer.alias("challenger") != "1"
    trail = trainer.resources["audit"]
    moved = rollback(trainer.tracking, trainer.instance, "test", "ops-oncall", trail=trail)
    assert (moved.from_version, moved.to_version, moved.aborted_trial) == (promoted, "1", None)
    record = trail.records()[-1]
    assert (record.act, record.actor, record.reason) == ("rollback", "ops-oncall", "test")
    assert (record.evidence["from_version"], record.evidence["to_version"]) == (promoted, "1")
    assert trainer.alias("champion") == "1"
    left = trainer.client.get_model_version(trainer.tracking.model_name, promoted)
    assert left.tags["mlops.rolled_back"].endswith("by ops-oncall: test")
    event = trainer.instance.get_latest_materialization_event(dg.AssetKey("champion_model"))
    meta = {k: v.value for k, v in event.asset_materialization.metadata.items()}
    assert meta["decision"] == "rolled back" and meta["rolled_back_by"] == "ops-oncall"
    assert meta["model_version"] == "1"
    with pytest.raises(UndoError, match="no previous champion"):
        rollback(trainer.tracking, trainer.instance, "again", "ops-oncall", trail=trail)
    assert trail.records()[-1] == record  # a refused undo records nothing


def test_feature_schema_drift_fails_the_gate_clearly(
    trainer: Trainer, monkeypatch: pytest.MonkeyPatch
):
    champion = trainer.alias("champion")
    fewer = [c for c in modeling.FEATURE_COLUMNS if c != "wind_gust"]
    monkeypatch.setattr(modeling, "FEATURE_COLUMNS", fewer)
    result = trainer.train()
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert failure.step_key == "model_gate"
    description = failure.step_failure_data.user_failure_data.description
    assert "feature schema drift" in description
    assert trainer.alias("champion") == champion
    rejected = trainer.client.get_model_version(
        trainer.tracking.model_name, trainer.alias("challenger")
    )
    assert rejected.tags["mlops.gate"] == "rejected"


def test_failed_training_ends_its_run_and_registers_nothing(
    trainer: Trainer, monkeypatch: pytest.MonkeyPatch
):
    versions, champion = trainer.versions(), trainer.alias("champion")

    def broken(*args: Any) -> Any:
        raise RuntimeError("out of memory while training")

    monkeypatch.setattr(modeling, "fit", broken)
    result = trainer.train(selection=["candidate_model"])
    assert not result.success
    failed = [r for r in trainer.runs() if r.data.tags.get("dagster_run_id") == result.run_id]
    assert [r.info.status for r in failed] == ["FAILED"]  # one run, even with the retries
    assert trainer.versions() == versions
    assert trainer.alias("champion") == champion


def test_run_left_running_by_a_killed_process_is_closed(trainer: Trainer):
    experiment = trainer.client.get_experiment_by_name(trainer.tracking.experiment)
    orphan = trainer.client.create_run(
        experiment.experiment_id,
        tags={"mlops.asset_key": "candidate_model", "dagster_run_id": "killed-run"},
    )
    versions = trainer.versions()
    result = trainer.train(selection=["candidate_model"])
    assert result.success
    assert trainer.client.get_run(orphan.info.run_id).info.status == "KILLED"
    assert not [r for r in trainer.runs() if r.info.status == "RUNNING"]
    assert len(trainer.versions()) == len(versions) + 1


def test_window_without_data_fails_before_anything_is_versioned(trainer: Trainer):
    history = trainer.registry.history("training_set/flight_delay.parquet")
    config = run_config()
    config["ops"]["training_set"]["config"]["as_of"] = "2013-07-01"
    result = trainer.train(config, selection=["training_set"])
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "no feature days in the window 2013-06-11 .. 2013-07-01" in (
        failure.step_failure_data.user_failure_data.description
    )
    assert trainer.registry.history("training_set/flight_delay.parquet") == history


def test_a_registry_failure_stores_no_training_set_and_trains_nothing(trainer: Trainer):
    """training_set is versioned when the lake IO manager writes it: both or neither."""
    registry_path = "training_set/flight_delay.parquet"
    lake = trainer.registry.root.parent / "lake"
    history = trainer.registry.history(registry_path)
    lake_bytes = (lake / "training_set.parquet").read_bytes()
    stored, runs, versions = trainer.count("training_set"), len(trainer.runs()), trainer.versions()
    config = run_config()
    config["ops"]["training_set"]["config"]["days"] = 20  # a new snapshot: a commit is needed
    with refused_commits(trainer.registry.root) as refusal:
        result = trainer.train(config)
    assert not result.success
    failed = {e.step_key for e in result.all_events if e.is_step_failure}
    assert failed == {"training_set"}
    text = failure_text(result)
    assert f"could not version {registry_path}" in text and refusal in text, text
    # Nothing half-written: the lake, the registry and the run history are as they were.
    assert (lake / "training_set.parquet").read_bytes() == lake_bytes
    assert staged_leftovers(lake) == []
    assert trainer.registry.history(registry_path) == history
    assert trainer.count("training_set") == stored
    assert len(trainer.runs()) == runs and trainer.versions() == versions
    meta = {
        k: v.value
        for k, v in trainer.instance.get_latest_materialization_event(
            dg.AssetKey("training_set")
        ).asset_materialization.metadata.items()
    }
    assert trainer.registry.recorded_md5(registry_path, "HEAD") == meta["dvc_md5"]
    assert trainer.registry.read(registry_path, meta["registry_rev"]) == lake_bytes
