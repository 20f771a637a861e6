"""The gate's acts on the registry and the audit trail: records, approval requests, expiry.

Shared by the gate (``defs/training.py``), the approval job and sensor (``defs/approval.py``)
and the ``approve``/``reject`` commands; the rules themselves are ``lib/approval.py``.
"""

from datetime import datetime
from typing import Any

from mlops_assets.lib import model_tags
from mlops_assets.lib.approval import (
    ApprovalPolicy,
    Pending,
    decided_text,
    pending_from_tags,
    request_tags,
)
from mlops_assets.resources.audit import AuditTrail
from mlops_assets.resources.tracking import MlflowTracking

POLICY_EVIDENCE = "policy"


def subject(tracking: MlflowTracking, version: Any) -> str:
    """What a record is about: ``<model> v<N>``."""
    return f"{tracking.model_name} v{version}"


def evidence(
    tracking: MlflowTracking, version: Any, champion: Any | None, dagster_run: str = ""
) -> dict[str, str]:
    """Links to what a gate act rests on: MLflow runs, versions, training data, Dagster run.

    Args:
        tracking: The registry.
        version: The registered version acted on (challenger, trial or pending version).
        champion: The champion's registered version at the time, if any.
        dagster_run: The Dagster run that acted (empty for a command).
    """
    tags = tracking.client().get_run(version.run_id).data.tags if version.run_id else {}
    found = {
        "mlflow_run": str(version.run_id or ""),
        "model_version": str(version.version),
        "champion_version": str(champion.version) if champion is not None else "",
        "champion_mlflow_run": str(champion.run_id or "") if champion is not None else "",
        "data_dvc_md5": tags.get(model_tags.DATA_DVC_MD5, ""),
        "data_registry_rev": tags.get(model_tags.DATA_REGISTRY_REV, ""),
        "dagster_run": dagster_run,
    }
    return {key: value for key, value in found.items() if value}


def record_policies(audit: AuditTrail, actor: str, policies: str, dagster_run: str) -> bool:
    """Records ``policy_change`` when ``policies`` differ from the last recorded ones.

    The first call on a trail records the initial policies. Returns whether it recorded.
    """
    last = next(
        (r for r in reversed(audit.records()) if r.act == "policy_change"),
        None,
    )
    if last is not None and last.evidence.get(POLICY_EVIDENCE) == policies:
        return False
    reason = "initial policies" if last is None else "the policies in force changed"
    evidence = {POLICY_EVIDENCE: policies, "dagster_run": dagster_run}
    audit.record("policy_change", actor, "gate policies", reason, evidence)
    return True


def pending(tracking: MlflowTracking) -> Pending | None:
    """The version waiting for approval (the ``pending_approval`` alias), or None."""
    version = tracking.version_by_alias(model_tags.PENDING_APPROVAL)
    if version is None:
        return None
    return pending_from_tags(str(version.version), version.tags)


def clear_pending(tracking: MlflowTracking, version: str, state: str, decided: str) -> None:
    """Ends a request: the alias goes, how, when, by whom and why stay as tags."""
    client, name = tracking.client(), tracking.model_name
    client.set_model_version_tag(name, version, model_tags.APPROVAL_STATE, state)
    client.set_model_version_tag(name, version, model_tags.APPROVAL_DECIDED, decided)
    current = tracking.version_by_alias(model_tags.PENDING_APPROVAL)
    if current is not None and str(current.version) == version:
        client.delete_registered_model_alias(name, model_tags.PENDING_APPROVAL)


def request_approval(
    tracking: MlflowTracking,
    audit: AuditTrail,
    acting: tuple[str, str],
    version: Any,
    champion: Any | None,
    policy: ApprovalPolicy,
    reason: str,
    now: datetime,
) -> Pending:
    """Makes ``version`` pending (a request still open for another version is superseded).

    Args:
        tracking: The registry.
        audit: The trail the ``approval_requested`` record goes to.
        acting: Who asks (the gate run's actor) and the Dagster run.
        version: The registered version that passed.
        champion: The champion it was judged against, if any.
        policy: The approval policy in force (approvers, expiry).
        reason: The gate's (or the trial's) reason to promote.
        now: When the request is made.
    """
    actor, dagster_run = acting
    earlier = pending(tracking)
    if earlier is not None and earlier.version != str(version.version):
        why = f"superseded by v{version.version}"
        clear_pending(tracking, earlier.version, "superseded", decided_text(now, actor, why))
    client, name = tracking.client(), tracking.model_name
    champion_version = str(champion.version) if champion is not None else None
    for key, value in request_tags(now, policy, champion_version).items():
        client.set_model_version_tag(name, str(version.version), key, value)
    client.set_registered_model_alias(name, model_tags.PENDING_APPROVAL, str(version.version))
    found = pending(tracking)
    assert found is not None  # the alias was just set
    links = evidence(tracking, version, champion, dagster_run)
    links["expires_at"] = found.expires_at.isoformat()
    links["approvers"] = ", ".join(policy.approvers)
    audit.record("approval_requested", actor, subject(tracking, version.version), reason, links)
    return found


def expire_pending(
    tracking: MlflowTracking, audit: AuditTrail, actor: str, now: datetime
) -> Pending | None:
    """Clears the pending request if it lapsed at ``now``, recording ``approval_expired``.

    Returns:
        The request that expired, or None (nothing pending, or not expired yet).
    """
    found = pending(tracking)
    if found is None or not found.expired(now):
        return None
    why = f"no decision by {found.expires_at.isoformat()} (requested {found.requested_at})"
    clear_pending(tracking, found.version, "expired", decided_text(now, actor, why))
    version = tracking.client().get_model_version(tracking.model_name, found.version)
    audit.record(
        "approval_expired",
        actor,
        subject(tracking, found.version),
        why,
        evidence(tracking, version, tracking.version_by_alias(model_tags.CHAMPION)),
    )
    return found
