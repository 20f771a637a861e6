"""The metrics sensor's parts, read from a test instance."""

from __future__ import annotations

import uuid

import dagster as dg

from mlops_assets.defs.jobs import AS_OF_TAG, CHAMPION_TAG, RETRAIN_TRIGGER, TRIGGER_TAG
from mlops_assets.defs.observability import retraining_state
from mlops_assets.lib import pipeline_metrics as pm


def add_run(instance: dg.DagsterInstance, status: dg.DagsterRunStatus, **tags: str) -> None:
    instance.add_run(
        dg.DagsterRun(job_name="training", run_id=str(uuid.uuid4()), status=status, tags=tags)
    )


def values(samples: list[pm.Sample]) -> dict[tuple[str, tuple[str, ...]], float]:
    return {(s.metric.name, tuple(s.labels.values())): s.value for s in samples}


def test_retraining_totals_are_pushed_as_zeros_before_any_retraining() -> None:
    with dg.instance_for_test() as instance:
        # Runs that are not retrainings, or not finished, count for nothing.
        add_run(instance, dg.DagsterRunStatus.FAILURE)
        add_run(instance, dg.DagsterRunStatus.STARTED, **{TRIGGER_TAG: RETRAIN_TRIGGER})
        marker, samples = retraining_state(instance)
        assert marker
        assert values(samples) == {
            (pm.RETRAINING_RUNS.name, ("success",)): 0.0,
            (pm.RETRAINING_RUNS.name, ("failure",)): 0.0,
            (pm.RETRAINING_RUNS.name, ("canceled",)): 0.0,
        }
        # Unchanged state, unchanged marker: the sensor does not push it again.
        assert retraining_state(instance)[0] == marker


def test_a_failed_retraining_is_counted_and_is_the_newest_run() -> None:
    with dg.instance_for_test() as instance:
        before, _ = retraining_state(instance)
        tags = {TRIGGER_TAG: RETRAIN_TRIGGER, AS_OF_TAG: "2013-02-11", CHAMPION_TAG: "1"}
        add_run(instance, dg.DagsterRunStatus.FAILURE, **tags)
        marker, samples = retraining_state(instance)
        assert marker != before
        found = values(samples)
        assert found[(pm.RETRAINING_RUNS.name, ("failure",))] == 1.0
        assert found[(pm.RETRAINING_RUNS.name, ("success",))] == 0.0
        assert found[(pm.RETRAINING_FAILED.name, ("2013-02-11", "1"))] == 1.0
        assert (pm.RETRAINING_FINISHED.name, ("2013-02-11", "1")) in found
