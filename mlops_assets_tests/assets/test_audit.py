"""The audit trail in Dagster: its observations in the UI and the records of manual launches.

``audit_trail_sensor`` is ticked with ``build_sensor_context`` on a real trail folder; the
manual-launch sensor reads real runs of a Dagster instance (a one-line stand-in asset keyed
like the watched ones, so the run costs no training).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from mlops_assets.defs import audit as audit_defs
from mlops_assets.lib import audit
from mlops_assets.resources.audit import AuditTrail


def _tick(trail: AuditTrail, cursor: str | None) -> tuple[dict[str, Any] | None, str]:
    with dg.build_sensor_context(cursor=cursor, resources={"audit": trail}) as context:
        result = audit_defs.audit_trail_sensor(context)
        if isinstance(result, dg.SkipReason):
            assert context.cursor is not None
            return None, context.cursor
    assert isinstance(result, dg.SensorResult) and result.cursor is not None
    (observation,) = result.asset_events
    assert observation.asset_key == audit_defs.audit_trail.key
    return {k: v.value for k, v in observation.metadata.items()}, result.cursor


def _append(trail: AuditTrail, count: int) -> list[audit.Record]:
    return [
        trail.record("policy_change", "alice", "trial policy", f"change {i}") for i in range(count)
    ]


def test_new_records_are_observed_once_each(tmp_path: Path) -> None:
    trail = AuditTrail(url=str(tmp_path / "audit"))
    assert _tick(trail, None)[0] is None  # no trail yet: nothing to show
    first = _append(trail, 2)
    seen, cursor = _tick(trail, None)
    assert seen is not None
    assert (seen["new_records"], seen["count"], seen["chain"]) == (2, 2, "intact")
    assert seen["head_hash"] == first[-1].hash
    assert seen["records"].splitlines()[2].startswith("| 1 | ")
    assert _tick(trail, cursor)[0] is None  # nothing new: no observation
    (record,) = _append(trail, 1)
    seen, cursor = _tick(trail, cursor)
    assert seen is not None and (seen["new_records"], seen["count"]) == (1, 3)
    assert (
        seen["records"].splitlines()[2].startswith("| 3 | ")
        and len(seen["records"].splitlines()) == 3
    )
    assert json.loads(cursor) == {"seq": 3, "hash": record.hash, "problem": ""}


def test_deleting_the_newest_records_is_reported_loudly(tmp_path: Path, capfd) -> None:
    trail = AuditTrail(url=str(tmp_path / "audit"))
    _append(trail, 3)
    _, cursor = _tick(trail, None)
    (tmp_path / "audit" / "00000003.json").unlink()  # the chain that is left checks out
    assert trail.verify().ok
    seen, cursor = _tick(trail, cursor)
    assert seen is not None and seen["chain"].startswith("BROKEN: record 3 seen with hash")
    assert "truncated" in seen["chain"] and "re-anchored at record 2" in seen["chain"]
    logged = capfd.readouterr().err
    assert "ERROR - audit trail at" in logged
    assert "is broken: 00000003.json: missing: the trail ends at record 2" in logged
    # Reported once; records appended later are observed again from the new anchor.
    assert _tick(trail, cursor)[0] is None
    _append(trail, 1)
    seen, _ = _tick(trail, cursor)
    assert seen is not None and (seen["new_records"], seen["chain"]) == (1, "intact")


def test_a_record_that_breaks_the_chain_is_named(tmp_path: Path, capfd) -> None:
    trail = AuditTrail(url=str(tmp_path / "audit"))
    _append(trail, 1)
    _, cursor = _tick(trail, None)
    _append(trail, 2)
    (tmp_path / "audit" / "00000003.json").write_text("{torn")
    seen, cursor = _tick(trail, cursor)
    assert seen is not None and seen["new_records"] == 1 and seen["count"] == 2
    assert seen["chain"].startswith("BROKEN at 00000003.json: not a record")
    assert "is broken: 00000003.json: not a record" in capfd.readouterr().err
    assert _tick(trail, cursor)[0] is None  # the same break is not observed again


@dg.asset(name="bento")
def _stand_in_bento() -> None:
    """Keyed like the real bento: the run's selection is what the sensor reads."""


@dg.asset(name="drift_report")
def _stand_in_unwatched() -> None:
    """Not a watched asset: its manual runs are not recorded."""


@pytest.fixture(scope="module")
def instance() -> Any:
    with dg.instance_for_test() as instance:
        yield instance


def _launch(instance: dg.DagsterInstance, asset: Any, tags: dict[str, str]) -> dg.DagsterRun:
    result = dg.materialize([asset], instance=instance, tags=tags)
    return result.dagster_run


def _record(instance: dg.DagsterInstance, run: dg.DagsterRun, trail: AuditTrail) -> None:
    (started,) = instance.get_records_for_run(
        run.run_id, of_type=dg.DagsterEventType.RUN_START
    ).records
    assert started.event_log_entry.dagster_event is not None
    context = dg.build_run_status_sensor_context(
        sensor_name=audit_defs.MANUAL_LAUNCH_SENSOR,
        dagster_event=started.event_log_entry.dagster_event,
        dagster_instance=instance,
        dagster_run=run,
        resources={"audit": trail},
    )
    audit_defs.manual_launch_audit(context)


def test_a_launch_by_hand_is_recorded_once_with_its_actor(instance: Any, tmp_path: Path) -> None:
    trail = AuditTrail(url=str(tmp_path / "audit"))
    tagged = _launch(instance, _stand_in_bento, {"mlops/actor": "carol", "mlops/reason": "hotfix"})
    anonymous = _launch(instance, _stand_in_bento, {})
    for run in (tagged, anonymous, tagged):  # the second look at a run records nothing
        _record(instance, run, trail)
    first, second = trail.records()
    assert (first.act, first.actor, first.subject, first.reason) == (
        "manual_materialization",
        "carol",
        "bento",
        "hotfix",
    )
    assert first.evidence == {"dagster_run": tagged.run_id, "job": tagged.job_name}
    assert second.actor == f"unattributed (run {anonymous.run_id[:8]}, no mlops/actor tag)"
    assert "no mlops/reason tag" in second.reason
    tags = instance.get_run_by_id(tagged.run_id).tags
    assert tags[audit.RECORD_TAG] == "1"


def test_automated_and_unwatched_launches_are_not_recorded(instance: Any, tmp_path: Path) -> None:
    trail = AuditTrail(url=str(tmp_path / "audit"))
    for asset, tags in (
        (_stand_in_bento, {"dagster/sensor_name": "automation_sensor"}),
        (_stand_in_bento, {"dagster/backfill": "abcdefgh"}),
        (_stand_in_unwatched, {"mlops/actor": "carol"}),
    ):
        _record(instance, _launch(instance, asset, tags), trail)
    assert trail.records() == []
