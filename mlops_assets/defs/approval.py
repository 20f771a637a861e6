"""Human approval: approve or reject the pending challenger, and expire stale requests.

One function, ``decide``, serves the ``mlops-assets approve``/``reject`` commands and the
``approve_model`` job of the UI. Dagster's open-source UI has no users: the job's actor is
the name typed into its config, checked against the approvers but not verified.
"""

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import dagster as dg
from pydantic import Field

from mlops_assets.defs import gate_records
from mlops_assets.defs.training import CHAMPION_KEY
from mlops_assets.lib import model_tags
from mlops_assets.lib.approval import (
    ApprovalError,
    ApprovalPolicy,
    approval_policy,
    check_decision,
    decided_text,
)
from mlops_assets.resources.audit import AuditTrail
from mlops_assets.resources.tracking import MlflowTracking

APPROVAL_JOB = "approve_model"
EXPIRY_SENSOR = "approval_expiry_sensor"
EXPIRY_INTERVAL = 300  # seconds between checks: requests last hours


def decide(
    tracking: MlflowTracking,
    audit: AuditTrail,
    instance: dg.DagsterInstance,
    request: tuple[str, str, str, str],
    policy: ApprovalPolicy | None = None,
    now: datetime | None = None,
    dagster_run: str = "",
) -> str:
    """Approves or rejects the pending version; nothing changes when it may not.

    An approval promotes the version as the gate would (``tracking.promote``), records
    ``approval`` and ``promotion`` with the approver as actor, and reports a runless
    ``champion_model`` materialization, so the bento and what else follows the champion
    follow by automation. A rejection clears the request and records ``approval_rejected``.

    Args:
        tracking: The registry.
        audit: The audit trail.
        instance: The Dagster instance the champion's materialization is reported to.
        request: Version, decision (``approve`` or ``reject``), actor and reason.
        policy: The approval policy (default: ``MLOPS_APPROVAL_POLICY``).
        now: When (default: now).
        dagster_run: The Dagster run deciding (the UI job), for the evidence.

    Returns:
        What happened, in a sentence.

    Raises:
        ApprovalError: naming why the decision may not be taken (``lib.approval``).
    """
    version, decision, actor, reason = request
    try:
        policy = approval_policy() if policy is None else policy
    except ValueError as error:
        raise ApprovalError(str(error)) from error
    now = now or datetime.now(UTC)
    champion = tracking.version_by_alias(model_tags.CHAMPION)
    current = str(champion.version) if champion is not None else None
    pending = gate_records.pending(tracking)
    check_decision(policy, pending, version, decision, actor, reason, now, current)
    target = tracking.client().get_model_version(tracking.model_name, version)
    links = gate_records.evidence(tracking, target, champion, dagster_run)
    subject = gate_records.subject(tracking, version)
    if decision == "reject":
        state, act, done = "rejected", "approval_rejected", f"v{version} rejected"
    else:
        tracking.promote(version, champion)
        state, act, done = "approved", "approval", f"v{version} approved and promoted"
    gate_records.clear_pending(tracking, version, state, decided_text(now, actor, reason))
    audit.record(act, actor, subject, reason or state, links)
    metadata = {"decision": f"{state} by {actor}", "reason": reason, "model_version": version}
    if decision == "reject":
        instance.report_runless_asset_event(dg.AssetObservation(CHAMPION_KEY, metadata=metadata))
        return f"{done}: the champion stays v{current}"
    gate_reason = target.tags.get(model_tags.GATE_REASON, "")
    audit.record("promotion", actor, subject, f"approved by {actor}: {gate_reason}", links)
    metadata["mlflow_run_id"] = str(target.run_id)
    instance.report_runless_asset_event(
        dg.AssetMaterialization(CHAMPION_KEY, metadata=metadata),
    )
    return f"{done}: champion v{current} -> v{version}"


class ApprovalConfig(dg.Config):
    """A decision on the version pending approval."""

    version: str = Field(description="The pending model version (mlops-assets lists it).")
    decision: str = Field(default="approve", description="approve or reject.")
    actor: str = Field(
        description="Who decides; must be one of the policy's approvers. Dagster OSS has no "
        "users: the name is declared here, not verified."
    )
    reason: str = Field(default="", description="Why (required to reject).")


@dg.op(name="decide_approval")
def decide_approval(
    context: dg.OpExecutionContext,
    config: ApprovalConfig,
    tracking: MlflowTracking,
    audit: AuditTrail,
) -> None:
    """Approves or rejects the pending version (``decide``), as the command line does."""
    request = (config.version, config.decision, config.actor, config.reason)
    try:
        done = decide(tracking, audit, context.instance, request, dagster_run=context.run_id)
    except ApprovalError as error:
        raise dg.Failure(str(error), allow_retries=False) from error
    context.log.info(done)


@dg.job(
    name=APPROVAL_JOB,
    description="Approve or reject the model version pending approval (MLOPS_APPROVAL_POLICY). "
    "The actor is declared in the config: the open-source UI has no users.",
)
def approve_model() -> None:
    """The UI's way to approve or reject: one op running ``decide``."""
    decide_approval()


def expiry_tick(
    tracking: MlflowTracking, audit: AuditTrail, instance: dg.DagsterInstance, now: datetime
) -> str:
    """One check: clears the pending request if it expired; says what it found."""
    if not approval_policy().require_approval:
        return "approval is not required: nothing to expire"
    expired = gate_records.expire_pending(tracking, audit, f"sensor {EXPIRY_SENSOR}", now)
    if expired is None:
        return "no pending approval has expired"
    instance.report_runless_asset_event(
        dg.AssetObservation(
            CHAMPION_KEY,
            metadata={
                "status": "approval expired",
                "model_version": expired.version,
                "expired_at": expired.expires_at.isoformat(),
            },
        )
    )
    return f"v{expired.version}'s approval request expired at {expired.expires_at.isoformat()}"


@dg.sensor(
    name=EXPIRY_SENSOR,
    minimum_interval_seconds=EXPIRY_INTERVAL,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Clears an approval request that expired (MLOPS_APPROVAL_POLICY "
    "expires_after_hours) and records approval_expired; a registry alias read otherwise.",
)
def approval_expiry_sensor(
    context: dg.SensorEvaluationContext, tracking: MlflowTracking, audit: AuditTrail
) -> Iterator[Any]:
    """Expires a stale approval request; never requests a run."""
    yield dg.SkipReason(expiry_tick(tracking, audit, context.instance, datetime.now(UTC)))
