"""Human approval: a challenger the gate passed waits for a named person before it goes live.

With ``require_approval`` the gate (and a trial that ends in favour of the challenger) does
not promote: the version becomes *pending* (the registry's ``pending_approval`` alias, with
the request's time and expiry as tags) until one of ``approvers`` approves or rejects it, or
the request expires after ``expires_after_hours``. The rules are plain functions here; the
registry, the audit trail and Dagster are wired in ``defs/approval.py``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from mlops_assets.lib import model_tags
from mlops_assets.lib.overrides import bounded, check_bounds, from_json_overrides

# The one home of the approval policy: a JSON object of field overrides.
APPROVAL_POLICY_VAR = "MLOPS_APPROVAL_POLICY"
Decision = Literal["approve", "reject"]
DECISIONS: tuple[Decision, ...] = ("approve", "reject")


class ApprovalError(RuntimeError):
    """An approval or rejection that may not happen; nothing was changed."""


@dataclass(frozen=True)
class ApprovalPolicy:
    """Whether a person must approve a promotion, who may, and for how long a request holds.

    Attributes:
        require_approval: A challenger that passes the gate (and its trial) waits for an
            approver instead of being promoted. Off by default.
        approvers: Names allowed to approve or reject; required with ``require_approval``.
        expires_after_hours: Hours after the request after which it can no longer be
            approved (it is cleared and recorded as expired).
    """

    require_approval: bool = False
    approvers: tuple[str, ...] = ()
    expires_after_hours: float = bounded(72.0, low=0.01)

    def __post_init__(self) -> None:
        names = self.approvers
        if isinstance(names, str) or not all(isinstance(n, str) and n.strip() for n in names):
            raise ValueError(f"approvers must be a list of names, got {names!r}")
        object.__setattr__(self, "approvers", tuple(n.strip() for n in names))
        check_bounds(self)
        if self.require_approval and not self.approvers:
            raise ValueError(
                'require_approval is on but no approvers are configured: set "approvers" to '
                "the names who may approve a promotion"
            )

    def as_dict(self) -> dict[str, Any]:
        """The policy as plain values (audit evidence, metadata)."""
        return {**asdict(self), "approvers": list(self.approvers)}


def approval_policy(env: Mapping[str, str] | None = None) -> ApprovalPolicy:
    """The approval policy in force, from ``MLOPS_APPROVAL_POLICY`` (empty: no approval).

    Example: ``{"require_approval": true, "approvers": ["alice", "bob"],
    "expires_after_hours": 48}``.

    Raises:
        ValueError: for invalid JSON, unknown fields, invalid values, or ``require_approval``
            without approvers.
    """
    raw = (os.environ if env is None else env).get(APPROVAL_POLICY_VAR, "")
    return from_json_overrides(ApprovalPolicy, raw, APPROVAL_POLICY_VAR)


@dataclass(frozen=True)
class Pending:
    """A version waiting for approval, as its model-version tags record it.

    Attributes:
        version: The version that passed the gate.
        requested_at: When the gate asked.
        expires_at: When the request lapses.
        champion_version: The champion it was judged against (None: the first model).
    """

    version: str
    requested_at: datetime
    expires_at: datetime
    champion_version: str | None

    def expired(self, now: datetime) -> bool:
        """Whether the request has lapsed at ``now``."""
        return now >= self.expires_at


def request_tags(
    now: datetime, policy: ApprovalPolicy, champion_version: str | None
) -> dict[str, str]:
    """The model-version tags that make a version pending under ``policy`` from ``now``."""
    expires = now + timedelta(hours=policy.expires_after_hours)
    return {
        model_tags.APPROVAL_STATE: "pending",
        model_tags.APPROVAL_REQUESTED_AT: now.isoformat(timespec="seconds"),
        model_tags.APPROVAL_EXPIRES_AT: expires.isoformat(timespec="seconds"),
        model_tags.APPROVAL_CHAMPION: champion_version or "",
    }


def pending_from_tags(version: str, tags: Mapping[str, str]) -> Pending:
    """The pending request recorded in a version's tags."""
    return Pending(
        version=str(version),
        requested_at=datetime.fromisoformat(tags[model_tags.APPROVAL_REQUESTED_AT]),
        expires_at=datetime.fromisoformat(tags[model_tags.APPROVAL_EXPIRES_AT]),
        champion_version=tags.get(model_tags.APPROVAL_CHAMPION) or None,
    )


def check_decision(
    policy: ApprovalPolicy,
    pending: Pending | None,
    version: str,
    decision: str,
    actor: str,
    reason: str,
    now: datetime,
    champion_version: str | None,
) -> None:
    """Refuses a decision that may not be taken, saying why; returns when it may.

    Args:
        policy: The approval policy in force.
        pending: The request waiting for a decision, if any.
        version: The version the decision is about.
        decision: ``approve`` or ``reject``.
        actor: Who decides.
        reason: Why (required to reject).
        now: When.
        champion_version: The champion now (an approval of a version judged against
            another champion is refused: the comparison no longer holds).

    Raises:
        ApprovalError: for an unknown decision, no approvers configured, an actor who is not
            an approver, a rejection without a reason, a version that is not the pending one
            (naming what is pending, if anything), an approval after the request expired, or
            one after the champion changed.
    """
    if decision not in DECISIONS:
        raise ApprovalError(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
    if not policy.approvers:
        raise ApprovalError(
            f"{APPROVAL_POLICY_VAR} names no approvers: nobody may approve or reject"
        )
    if actor.strip() not in policy.approvers:
        raise ApprovalError(
            f"{actor!r} is not an approver ({APPROVAL_POLICY_VAR} approvers: "
            f"{', '.join(policy.approvers)})"
        )
    if decision == "reject" and not reason.strip():
        raise ApprovalError("a rejection needs a reason")
    if pending is None:
        raise ApprovalError(f"v{version} is not pending approval: no version is pending")
    if pending.version != str(version):
        raise ApprovalError(
            f"v{version} is not pending approval: v{pending.version} is (requested "
            f"{pending.requested_at.isoformat()}, expires {pending.expires_at.isoformat()})"
        )
    if decision == "approve" and pending.expired(now):
        raise ApprovalError(
            f"v{version}'s approval request expired at {pending.expires_at.isoformat()} "
            f"(requested {pending.requested_at.isoformat()}): a new gate run asks again"
        )
    if decision == "approve" and pending.champion_version != champion_version:
        raise ApprovalError(
            f"the champion changed since v{version} was judged (v{pending.champion_version} "
            f"-> v{champion_version}): reject it and let the gate judge it again"
        )


def decided_text(now: datetime, actor: str, reason: str) -> str:
    """The ``APPROVAL_DECIDED`` tag: when, by whom, why."""
    return f"{now.isoformat(timespec='seconds')} by {actor}" + (f": {reason}" if reason else "")


def policies_in_force(
    gate: Mapping[str, Any], trial: Mapping[str, Any], approval: ApprovalPolicy
) -> str:
    """The policies a gate decision is taken under, as canonical JSON (audit evidence)."""
    return json.dumps(
        {"gate": dict(gate), "trial": dict(trial), "approval": approval.as_dict()},
        sort_keys=True,
    )
