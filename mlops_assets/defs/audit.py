"""The audit trail in the UI, and the records of launches made by hand.

- ``audit_trail`` is an external asset (group ``governance``): the trail lives outside
  Dagster (``resources/audit.py``). ``audit_trail_sensor`` reports an observation of it when
  new records appear: the records as a table, the count, the head hash and the chain's status.
  Its cursor keeps the last record seen (number and hash), so each tick reads only the new
  records and checks they chain onto it; a trail truncated or rewritten behind that anchor is
  reported loudly, which the chain alone cannot show.
- ``manual_launch_audit`` records every run that materializes training, the champion or the
  bento and was not requested by a sensor, schedule, backfill or automation condition, as
  ``manual_materialization``. A run-status sensor sees every launch of the code location
  (launchpad, ``dagster asset materialize``, GraphQL) with its tags, without touching the
  assets' own code; the run gets the tag ``mlops/audit_record`` so it is never recorded twice.
"""

import json
from dataclasses import dataclass
from typing import Any

import dagster as dg

from mlops_assets.defs import deployment, training
from mlops_assets.defs.alerting import run_assets, run_partition
from mlops_assets.defs.system_tags import automated_by, run_actor
from mlops_assets.lib.audit import (
    GENESIS,
    REASON_TAG,
    RECORD_TAG,
    Record,
    markdown_table,
)
from mlops_assets.resources.audit import AuditTrail

GOVERNANCE_GROUP = "governance"
TRAIL_SENSOR = "audit_trail_sensor"
MANUAL_LAUNCH_SENSOR = "manual_launch_audit"
AUDIT_INTERVAL = 30  # seconds between evaluations
# Rows of the observation's table: the first observation of a long trail shows the newest.
TABLE_ROWS = 50
# The assets whose manual materialization is a consequential act.
WATCHED_ASSETS = frozenset(
    key.to_user_string()
    for key in (
        training.training_set.key,
        training.candidate_model.key,
        training.CHAMPION_KEY,
        training.TRIAL_KEY,
        deployment.bento.key,
    )
)

audit_trail = dg.AssetSpec(
    "audit_trail",
    group_name=GOVERNANCE_GROUP,
    description="The hash-chained audit trail: every promotion, rejection, trial, approval, "
    "rollback, manual materialization and policy change, who did it, when and why "
    "(docs/governance.md). Observed by `audit_trail_sensor`; `mlops-assets audit` prints it.",
    kinds={"json"},
)


@dataclass(frozen=True)
class Observed:
    """One look at the trail.

    Attributes:
        metadata: The observation's metadata, or None when there is nothing new.
        cursor: The next cursor: the last record that checked out and the problem reported.
        problem: What is wrong with the trail (empty when intact).
    """

    metadata: dict[str, Any] | None
    cursor: str
    problem: str = ""


def _status(problem: str) -> str:
    return f"BROKEN at {problem}" if problem else "intact"


def _metadata(records: tuple[Record, ...], count: int, head: str, chain: str) -> dict[str, Any]:
    shown = records[-TABLE_ROWS:]
    table = markdown_table(shown)
    if len(records) > len(shown):
        table = f"{len(records) - len(shown)} earlier new record(s) not shown\n\n{table}"
    return {
        "records": dg.MetadataValue.md(table if records else "no new records"),
        "new_records": len(records),
        "count": count,
        "head_hash": head,
        "chain": chain,
    }


def observe_trail(trail: AuditTrail, cursor: str | None) -> Observed:
    """What changed since the record the cursor saw, checked against it.

    A lost anchor (the trail ends before it, or it was rewritten) is reported once, and the
    cursor moves to what checks out now, so later records are observed again.
    """
    seen: dict[str, Any] = (
        json.loads(cursor) if cursor else {"seq": 0, "hash": GENESIS, "problem": ""}
    )
    found = trail.verify_since(seen["seq"], seen["hash"])
    result = found.verification
    problem = "" if result.ok else f"{result.first_bad}: {result.problem}"
    if found.anchor_lost:
        now = trail.verify()  # reads the whole trail once, to anchor again
        still = "" if now.ok else f"{now.first_bad}: {now.problem}"
        chain = (
            f"BROKEN: record {seen['seq']} seen with hash {seen['hash'][:12]}... is {problem}; "
            f"re-anchored at record {now.records}"
        )
        after = json.dumps({"seq": now.records, "hash": now.head, "problem": still})
        return Observed(_metadata((), now.records, now.head, chain), after, problem)
    after = json.dumps({"seq": result.records, "hash": result.head, "problem": problem})
    if not found.records and problem == seen.get("problem", ""):
        return Observed(None, after, problem)
    metadata = _metadata(found.records, result.records, result.head, _status(problem))
    return Observed(metadata, after, problem)


@dg.sensor(
    name=TRAIL_SENSOR,
    minimum_interval_seconds=AUDIT_INTERVAL,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Observes `audit_trail` when records are appended: checks each new record "
    "chains onto the last one seen, and reports a truncated or rewritten trail.",
)
def audit_trail_sensor(
    context: dg.SensorEvaluationContext, audit: AuditTrail
) -> dg.SensorResult | dg.SkipReason:
    """Lists the trail, reads the anchor and the new records only."""
    observed = observe_trail(audit, context.cursor)
    if observed.problem:
        context.log.error(f"audit trail at {audit.url} is broken: {observed.problem}")
    if observed.metadata is None:
        context.update_cursor(observed.cursor)
        return dg.SkipReason("no new audit records")
    observation = dg.AssetObservation(asset_key=audit_trail.key, metadata=observed.metadata)
    return dg.SensorResult(asset_events=[observation], cursor=observed.cursor)


def record_manual_launch(
    instance: dg.DagsterInstance, run: dg.DagsterRun, trail: AuditTrail
) -> Record | None:
    """Records ``run`` as ``manual_materialization`` if a person launched it on a watched asset.

    The run is tagged with its record's number. None when there is nothing to record.
    """
    if automated_by(run.tags) or RECORD_TAG in run.tags:
        return None
    assets = [name for name in run_assets(instance, run) if name in WATCHED_ASSETS]
    if not assets:
        return None
    record = trail.record(
        "manual_materialization",
        run_actor(run.tags, run.run_id),
        ", ".join(assets),
        run.tags.get(REASON_TAG)
        or f"launched by hand, not by a sensor or automation (no {REASON_TAG} tag)",
        {"dagster_run": run.run_id, "job": run.job_name, "partition": run_partition(run)},
    )
    instance.add_run_tags(run.run_id, {RECORD_TAG: str(record.seq)})
    return record


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.STARTED,
    name=MANUAL_LAUNCH_SENSOR,
    minimum_interval_seconds=AUDIT_INTERVAL,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Records in the audit trail each run of training, the champion or the bento "
    "launched by hand (not by a sensor, schedule, backfill or automation), with its actor.",
)
def manual_launch_audit(context: dg.RunStatusSensorContext, audit: AuditTrail) -> None:
    """Records a manual launch once (the run's tag ``mlops/audit_record`` marks it done)."""
    run = context.instance.get_run_by_id(context.dagster_run.run_id) or context.dagster_run
    record = record_manual_launch(context.instance, run, audit)
    if record is not None:
        context.log.info(f"audit record {record.seq}: {record.actor} launched {record.subject}")


SENSORS = [audit_trail_sensor, manual_launch_audit]
