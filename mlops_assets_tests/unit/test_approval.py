"""The approval policy and the rules of a decision (lib/approval.py), without a registry."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from mlops_assets.lib.approval import (
    APPROVAL_POLICY_VAR,
    ApprovalError,
    ApprovalPolicy,
    approval_policy,
    check_decision,
    pending_from_tags,
    policies_in_force,
    request_tags,
)

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
POLICY = ApprovalPolicy(require_approval=True, approvers=("alice",), expires_after_hours=2)


def test_no_policy_requires_no_approval() -> None:
    assert approval_policy({}) == ApprovalPolicy()
    assert not approval_policy({}).require_approval


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"require_approval": true}', "no approvers are configured"),
        ('{"approvers": "alice"}', "approvers must be a list of names"),
        ('{"expires_after_hours": 0}', "expires_after_hours must be at least"),
        ('{"approver": ["alice"]}', "unknown field"),
        ("{", "not valid JSON"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_setting(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        approval_policy({APPROVAL_POLICY_VAR: raw})
    if "JSON" in message or "unknown" in message:
        assert APPROVAL_POLICY_VAR in str(error.value)


def test_a_request_lapses_after_its_hours() -> None:
    pending = pending_from_tags("7", request_tags(NOW, POLICY, "3"))
    assert (pending.version, pending.champion_version) == ("7", "3")
    assert pending.expires_at == NOW + timedelta(hours=2)
    assert not pending.expired(NOW + timedelta(hours=1, minutes=59))
    assert pending.expired(NOW + timedelta(hours=2))


def test_the_rules_of_a_decision() -> None:
    pending = pending_from_tags("7", request_tags(NOW, POLICY, "3"))
    check_decision(POLICY, pending, "7", "approve", "alice", "", NOW, "3")
    check_decision(POLICY, pending, "7", "reject", "alice", "no", NOW + timedelta(days=1), "3")
    late = NOW + timedelta(hours=3)
    refused = {
        "decision must be one of": ("7", "promote", "alice", "", NOW, "3"),
        "'bob' is not an approver": ("7", "approve", "bob", "", NOW, "3"),
        "v6 is not pending approval: v7 is": ("6", "approve", "alice", "", NOW, "3"),
        "expired at 2026-01-05T14:00:00": ("7", "approve", "alice", "", late, "3"),
        "the champion changed since v7 was judged": ("7", "approve", "alice", "", NOW, "4"),
    }
    for message, (version, decision, actor, reason, now, champion) in refused.items():
        with pytest.raises(ApprovalError, match=message):
            check_decision(POLICY, pending, version, decision, actor, reason, now, champion)
    with pytest.raises(ApprovalError, match="no version is pending"):
        check_decision(POLICY, None, "7", "approve", "alice", "", NOW, "3")
    with pytest.raises(ApprovalError, match="names no approvers"):
        check_decision(ApprovalPolicy(), pending, "7", "approve", "alice", "", NOW, "3")


def test_the_policies_in_force_are_canonical() -> None:
    one = policies_in_force({"margin": 0.1}, {"trial_days": 0}, POLICY)
    assert one == policies_in_force({"margin": 0.1}, {"trial_days": 0}, POLICY)
    assert json.loads(one)["approval"]["approvers"] == ["alice"]
    assert one != policies_in_force({"margin": 0.2}, {"trial_days": 0}, POLICY)
