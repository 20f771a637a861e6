"""Human approval through the real graph, on a copy of the deployed state.

With ``MLOPS_APPROVAL_POLICY`` requiring approval, a retrain the gate passes waits
(``pending_approval``) instead of being promoted, and nothing downstream runs; ``approve``
promotes it and the bento follows by automation; ``reject`` and expiry clear it. Every bad
decision is refused with its reason and changes nothing: the champion, the pending request
and the audit trail stay as they were.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest

from mlops_assets.cli import main
from mlops_assets.defs.approval import APPROVAL_JOB, EXPIRY_SENSOR, approval_expiry_sensor, decide
from mlops_assets.defs.gate_records import pending
from mlops_assets.defs.training import TRIAL_POLICY_VAR
from mlops_assets.lib import audit, model_tags
from mlops_assets.lib.approval import APPROVAL_POLICY_VAR, ApprovalError, approval_policy
from mlops_assets_tests.deployed import Deployment, deployed_copy, run_config

POLICY = {"require_approval": True, "approvers": ["alice", "bob"], "expires_after_hours": 24}
LAUNCHED_BY = {audit.ACTOR_TAG: "carol"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, deployed_state: Path) -> Iterator[Deployment]:
    env = {APPROVAL_POLICY_VAR: json.dumps(POLICY), TRIAL_POLICY_VAR: '{"trial_days": 0}'}
    state = tmp_path_factory.mktemp("approval") / "state"
    with deployed_copy(deployed_state, state) as copy, pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        yield copy


def _retrain(world: Deployment) -> str:
    """A retrain the gate passes; returns the version left pending."""
    assert world.train(run_config(margin=-1.0, num_leaves=7), tags=LAUNCHED_BY).success
    found = pending(world.resources["tracking"])
    assert found is not None
    return found.version


def _snapshot(world: Deployment) -> tuple[str | None, str | None, int]:
    """What a refused decision must leave alone: champion, pending version, trail length."""
    tracking = world.resources["tracking"]
    champion = tracking.version_by_alias(model_tags.CHAMPION)
    waiting = pending(tracking)
    return (
        None if champion is None else str(champion.version),
        None if waiting is None else waiting.version,
        len(world.resources["audit"].records()),
    )


def _decide(world: Deployment, *request: str, **kwargs: object) -> str:
    tracking, trail = world.resources["tracking"], world.resources["audit"]
    return decide(tracking, trail, world.instance, request, **kwargs)  # type: ignore[arg-type]


def _acts(world: Deployment) -> list[tuple[str, str, str]]:
    return [(r.act, r.actor, r.subject) for r in world.resources["audit"].records()]


def test_a_retrain_that_passes_waits_for_approval(world: Deployment) -> None:
    bentos, champions = world.count("bento"), world.count("champion_model")
    before = len(world.resources["audit"].records())
    version = _retrain(world)
    assert _snapshot(world)[:2] == ("1", version)
    # Nothing downstream: no champion materialization, no bento.
    assert (world.count("bento"), world.count("champion_model")) == (bentos, champions)
    observed = world.instance.fetch_observations(dg.AssetKey("champion_model"), limit=1).records
    shown = {k: v.value for k, v in observed[0].asset_observation.metadata.items()}  # type: ignore[union-attr]
    assert (shown["status"], shown["pending_version"]) == ("pending approval", version)
    # The gate's acts are on the trail, by the launch's actor, with their evidence.
    added = world.resources["audit"].records()[before:]
    assert [r.act for r in added][-1] == "approval_requested"
    requested = added[-1]
    assert (requested.actor, requested.subject) == ("carol", f"flight_delay v{version}")
    assert requested.evidence["champion_version"] == "1"
    assert requested.evidence["data_dvc_md5"] and requested.evidence["dagster_run"]
    # The first gate run under these policies recorded them.
    change = next(r for r in reversed(added) if r.act == "policy_change")
    assert json.loads(change.evidence["policy"])["approval"]["approvers"] == ["alice", "bob"]


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        (("{v}", "approve", "mallory", ""), "'mallory' is not an approver"),
        (("1", "approve", "alice", ""), "v1 is not pending approval: v{v} is"),
        (("1", "reject", "alice", "no"), "v1 is not pending approval: v{v} is"),
        (("{v}", "reject", "alice", ""), "a rejection needs a reason"),
    ],
)
def test_a_bad_decision_is_refused_and_changes_nothing(
    world: Deployment, request_: tuple[str, ...], error: str
) -> None:
    before = _snapshot(world)
    version = str(before[1])
    request = tuple(part.format(v=version) for part in request_)
    with pytest.raises(ApprovalError, match=error.format(v=version)):
        _decide(world, *request)
    assert _snapshot(world) == before


def test_an_approval_after_expiry_is_refused_naming_it(world: Deployment) -> None:
    before = _snapshot(world)
    waiting = pending(world.resources["tracking"])
    assert waiting is not None
    later = waiting.expires_at + timedelta(seconds=1)
    expired = f"v{waiting.version}'s approval request expired at {waiting.expires_at.isoformat()}"
    with pytest.raises(ApprovalError, match=re.escape(expired)):
        _decide(world, waiting.version, "approve", "alice", "", now=later)
    assert _snapshot(world) == before


def test_approval_without_approvers_is_refused_by_command_and_gate(
    world: Deployment, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _snapshot(world)
    monkeypatch.setenv(APPROVAL_POLICY_VAR, '{"require_approval": true}')
    with pytest.raises(ValueError, match="no approvers are configured"):
        approval_policy()
    assert main(["approve", "--version", str(before[1]), "--actor", "alice"]) == 1
    assert "no approvers are configured" in capsys.readouterr().err
    # The gate refuses to start: its outputs alone, on the stored training set.
    gate = world.defs.resolve_job_def("training").execute_in_process(
        asset_selection=[dg.AssetKey("champion_model"), dg.AssetKey("model_trial")],
        instance=world.instance,
        run_config=run_config(),
        raise_on_error=False,
    )
    assert not gate.success
    failure = gate.get_step_failure_events()[0].step_failure_data.error
    assert failure is not None and "no approvers are configured" in failure.message
    assert _snapshot(world) == before


def test_approve_promotes_and_the_bento_follows(
    world: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    version = str(_snapshot(world)[1])
    bentos = world.count("bento")
    assert main(["approve", "--version", version, "--actor", "bob", "--reason", "reviewed"]) == 0
    assert f"v{version} approved and promoted: champion v1 -> v{version}" in capsys.readouterr().out
    assert _snapshot(world)[:2] == (version, None)
    tags = world.resources["tracking"].version_by_alias(model_tags.CHAMPION).tags
    assert tags[model_tags.PREVIOUS_CHAMPION] == "1"
    assert (
        tags[model_tags.APPROVAL_STATE] == "approved"
        and "by bob" in tags[model_tags.APPROVAL_DECIDED]
    )
    world.loop.run_until_idle()  # the automation builds the approved champion's bento
    assert world.count("bento") == bentos + 1
    assert world.metadata("bento")["model_version"] == version
    acts = _acts(world)
    subject = f"flight_delay v{version}"
    assert acts[-3:] == [
        ("approval_requested", "carol", subject),
        ("approval", "bob", subject),
        ("promotion", "bob", subject),
    ]
    assert audit.verify(world.resources["audit"].root()).ok


def test_reject_from_the_ui_job_clears_the_request(world: Deployment) -> None:
    version = _retrain(world)
    champion = _snapshot(world)[0]
    job = world.defs.resolve_job_def(APPROVAL_JOB)

    def launch(actor: str) -> dg.ExecuteInProcessResult:
        config = {"version": version, "decision": "reject", "actor": actor, "reason": "too slow"}
        return job.execute_in_process(
            run_config={"ops": {"decide_approval": {"config": config}}},
            instance=world.instance,
            raise_on_error=False,
        )

    before = _snapshot(world)
    refused = launch("mallory")
    assert not refused.success and _snapshot(world) == before
    failure = refused.get_step_failure_events()[0].step_failure_data.error
    assert failure is not None and "'mallory' is not an approver" in failure.message
    assert launch("alice").success
    assert _snapshot(world)[:2] == (champion, None)
    assert _acts(world)[-1] == ("approval_rejected", "alice", f"flight_delay v{version}")


def test_the_sensor_expires_a_stale_request(world: Deployment) -> None:
    version = _retrain(world)
    tracking = world.resources["tracking"]
    # Time passes: the request's expiry is now in the past.
    tracking.client().set_model_version_tag(
        tracking.model_name, version, model_tags.APPROVAL_EXPIRES_AT, "2020-01-01T00:00:00+00:00"
    )
    resources = {"tracking": tracking, "audit": world.resources["audit"]}
    with dg.build_sensor_context(instance=world.instance, resources=resources) as context:
        result = approval_expiry_sensor.evaluate_tick(context)
    assert "expired at 2020-01-01" in str(result.skip_message)
    assert pending(tracking) is None
    assert _acts(world)[-1] == (
        "approval_expired",
        f"sensor {EXPIRY_SENSOR}",
        f"flight_delay v{version}",
    )
    before = _snapshot(world)
    with pytest.raises(ApprovalError, match=f"v{version} is not pending approval: no version"):
        _decide(world, version, "approve", "alice", "")
    assert _snapshot(world) == before
