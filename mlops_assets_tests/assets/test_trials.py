"""Live trials through the real graph: start, batch shadow, evidence, promote, retire, undo.

A deployed state (champion v1, its Bento, 2013-01-22 predicted) gets challengers that pass
the offline gate (negative margin); each goes on trial, the following days are scored by
both models, and the trial sensor ends the trial through the gate. The trial policy's
``min_gain`` picks the path on real evidence: -1 promotes whatever the data says, +1 can
never be cleared and retires.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from sklearn.metrics import roc_auc_score

from mlops_assets.cli import main
from mlops_assets.defs.training import TRIAL_POLICY_VAR
from mlops_assets.defs.trials import TRIAL_SENSOR
from mlops_assets.lib import audit, model_tags
from mlops_assets.lib.approval import APPROVAL_POLICY_VAR
from mlops_assets.lib.features import LABEL_COLUMN
from mlops_assets.undo import UndoError, abort_trial, rollback
from mlops_assets_tests.deployed import PREDICT_DAY, Deployment, deployed_copy, run_config

FAST = {"trial_days": 2, "timeout_days": 3, "rounds": 300}
PROMOTING = {**FAST, "min_gain": -1.0}
RETIRING = {**FAST, "min_gain": 1.0}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, deployed_state: Path) -> Iterator[Deployment]:
    with deployed_copy(deployed_state, tmp_path_factory.mktemp("trials") / "state") as copy:
        copy.loop.extra_sensors = (TRIAL_SENSOR,)
        yield copy


def _start_trial(world: Deployment, policy: dict[str, object], mp: pytest.MonkeyPatch) -> str:
    """Trains a challenger the gate passes; returns the version that went on trial."""
    mp.setenv(TRIAL_POLICY_VAR, json.dumps(policy))
    assert world.train(run_config(margin=-1.0, num_leaves=7)).success
    started = world.metadata("model_trial")
    assert started["status"] == "running", started
    return str(started["model_version"])


def _version(world: Deployment, version: str) -> object:
    tracking = world.resources["tracking"]
    return tracking.client().get_model_version(tracking.model_name, version)


def _alias(world: Deployment, alias: str) -> str | None:
    found = world.resources["tracking"].version_by_alias(alias)
    return None if found is None else str(found.version)


def test_a_challenger_that_passes_the_gate_goes_on_trial(
    world: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = _start_trial(world, PROMOTING, monkeypatch)
    assert (_alias(world, model_tags.CHAMPION), _alias(world, model_tags.TRIAL)) == ("1", version)
    started = world.metadata("model_trial")
    # The first day both models score is the day after the newest feature day.
    assert started["start_day"] == (PREDICT_DAY + timedelta(days=1)).isoformat()
    assert (started["champion_version"], started["mode"]) == ("1", "shadow")
    tags = _version(world, version).tags  # type: ignore[attr-defined]
    assert tags[model_tags.GATE] == "trial" and tags[model_tags.TRIAL_STATE] == "running"
    assert json.loads(tags[model_tags.TRIAL_POLICY])["min_gain"] == -1.0
    # The champion did not change, and the bento now carries the challenger too.
    assert world.metadata("champion_model")["model_version"] == "1"
    bento = world.metadata("bento")
    assert (bento["model_version"], bento["challenger_version"]) == ("1", version)
    assert bento["trial_mode"] == "shadow"
    # [template:if with_service_delivery]
    # The service with both models goes out as a release of its own.
    release = world.metadata("release")
    assert release["image"] == bento["image"]
    assert release["reason"] == f"Live trial of v{version} against champion v1 (shadow mode)"
    # [template:end]


def test_trial_days_are_scored_by_both_and_the_evidence_promotes(world: Deployment) -> None:
    version = _alias(world, model_tags.TRIAL)
    first = PREDICT_DAY + timedelta(days=1)
    world.land(first)
    failed = [o.failure_report() for o in world.loop.state.outcomes if not o.success]
    assert not failed, failed
    key = first.isoformat()
    challenger = world.metadata("challenger_predictions", key)
    assert (challenger["model_version"], challenger["champion_version"]) == (version, "1")
    evaluation = world.metadata("trial_evaluation", key)
    assert evaluation["outcome"] == "continue", evaluation
    assert evaluation["labelled_days"] == 1 and "1 of 2 labelled" in evaluation["reason"]
    _assert_evidence_is_the_paired_auc(world, key)
    assert _alias(world, model_tags.TRIAL) == version  # one labelled day decides nothing

    world.land(first + timedelta(days=1))
    evaluation = world.metadata("trial_evaluation", (first + timedelta(days=1)).isoformat())
    assert (evaluation["outcome"], evaluation["labelled_days"]) == ("promote", 2), evaluation
    # The trial sensor ended the trial through the gate; the champion's followers followed.
    assert (_alias(world, model_tags.CHAMPION), _alias(world, model_tags.TRIAL)) == (version, None)
    tags = _version(world, str(version)).tags  # type: ignore[attr-defined]
    assert tags[model_tags.TRIAL_STATE] == "promoted"
    assert tags[model_tags.PREVIOUS_CHAMPION] == "1"
    assert f"by {TRIAL_SENSOR}" in tags[model_tags.TRIAL_ENDED]
    assert world.metadata("model_trial")["status"] == "promoted"
    assert world.metadata("champion_model")["decision"] == "promoted after trial"
    assert world.metadata("drift_reference")["model_version"] == version
    bento = world.metadata("bento")
    assert bento["model_version"] == version and "challenger_version" not in bento
    # [template:if with_service_delivery]
    release = world.metadata("release")
    assert (release["model_version"], release["image"]) == (version, bento["image"])
    assert release["reason"].startswith("Promoted after a live trial: ")
    # [template:end]


def _assert_evidence_is_the_paired_auc(world: Deployment, day: str) -> None:
    """The evaluation's AUCs are those of the two prediction assets on the day's labels."""
    lake = world.resources["lake"]
    frames = {
        name: lake.read_partitions(name, [day])[day]
        for name in ("flight_features", "batch_predictions", "challenger_predictions")
    }
    keys = ["flight_date", "carrier", "flight", "origin"]
    joined = (
        frames["flight_features"][[*keys, LABEL_COLUMN]]
        .merge(frames["batch_predictions"][[*keys, "probability"]], on=keys)
        .merge(frames["challenger_predictions"][[*keys, "probability"]], on=keys)
        .dropna(subset=[LABEL_COLUMN])
    )
    evaluation = world.metadata("trial_evaluation", day)
    labels = joined[LABEL_COLUMN].astype(bool)
    assert evaluation["flights"] == len(joined)
    assert evaluation["champion_roc_auc"] == pytest.approx(
        roc_auc_score(labels, joined["probability_x"]), abs=1e-4
    )
    assert evaluation["challenger_roc_auc"] == pytest.approx(
        roc_auc_score(labels, joined["probability_y"]), abs=1e-4
    )
    assert evaluation["gain_lower_bound"] <= evaluation["roc_auc_gain"]


def test_a_challenger_that_cannot_clear_the_rule_is_retired(
    world: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    champion = _alias(world, model_tags.CHAMPION)
    version = _start_trial(world, RETIRING, monkeypatch)
    start = date.fromisoformat(world.metadata("model_trial")["start_day"])
    world.land(start, days=2)
    evaluation = world.metadata("trial_evaluation", (start + timedelta(days=1)).isoformat())
    assert evaluation["outcome"] == "retire" and "<= +1.0000" in evaluation["reason"]
    assert (_alias(world, model_tags.CHAMPION), _alias(world, model_tags.TRIAL)) == (champion, None)
    tags = _version(world, version).tags  # type: ignore[attr-defined]
    assert tags[model_tags.TRIAL_STATE] == "retired"
    assert tags[model_tags.TRIAL_REASON] == evaluation["reason"]
    ended = world.metadata("model_trial")
    assert (ended["status"], ended["champion_version"], ended["mode"]) == (
        "retired",
        champion,
        "shadow",
    )
    assert world.metadata("bento")["model_version"] == champion
    assert "challenger_version" not in world.metadata("bento")
    # [template:if with_service_delivery]
    retired = f"Trial ended (retired): {evaluation['reason']}"
    assert world.metadata("release")["reason"] == retired
    # [template:end]
    # Days after the trial are not scored by the retired challenger.
    world.land(start + timedelta(days=2))
    after = (start + timedelta(days=2)).isoformat()
    with pytest.raises(LookupError):
        world.metadata("challenger_predictions", after)


def _records(world: Deployment, since: int) -> list[audit.Record]:
    return [r for r in world.resources["audit"].records() if r.seq > since]


def test_abort_and_rollback_end_a_trial_saying_who_and_why(
    world: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracking, instance, trail = (
        world.resources["tracking"],
        world.instance,
        world.resources["audit"],
    )
    version = _start_trial(world, PROMOTING, monkeypatch)
    before, _ = trail.tail()
    assert abort_trial(tracking, instance, "latency too high", "alice", trail=trail) == version
    tags = _version(world, version).tags  # type: ignore[attr-defined]
    assert tags[model_tags.TRIAL_STATE] == "aborted"
    assert tags[model_tags.TRIAL_REASON] == "latency too high"
    assert tags[model_tags.TRIAL_ENDED].endswith("by alice")
    aborted = world.metadata("model_trial")
    assert (aborted["status"], aborted["ended_by"], aborted["model_version"]) == (
        "aborted",
        "alice",
        version,
    )
    assert aborted["champion_version"] == _alias(world, model_tags.CHAMPION)
    (record,) = _records(world, before)
    assert (record.act, record.actor, record.reason) == ("trial_end", "alice", "latency too high")
    assert record.subject == f"flight_delay v{version} trial"
    assert record.evidence["status"] == "aborted" and record.evidence["model_version"] == version
    assert record.evidence["mlflow_run"] == _version(world, version).run_id  # type: ignore[attr-defined]
    world.loop.run_until_idle()  # the bento follows: champion only again
    assert "challenger_version" not in world.metadata("bento")
    # [template:if with_service_delivery]
    assert world.metadata("release")["reason"] == "Trial ended (aborted): latency too high"
    # [template:end]
    before, _ = trail.tail()
    with pytest.raises(UndoError, match="no trial running"):
        abort_trial(tracking, instance, "again", "alice", trail=trail)
    assert _records(world, before) == []  # a refused undo records nothing

    # A rollback during a trial aborts the trial first: it was judged against the leaving
    # champion.
    champion = _alias(world, model_tags.CHAMPION)
    version = _start_trial(world, PROMOTING, monkeypatch)
    before, _ = trail.tail()
    moved = rollback(tracking, instance, "bad answers in production", "bob", trail=trail)
    assert (moved.from_version, moved.to_version, moved.aborted_trial) == (champion, "1", version)
    assert (_alias(world, model_tags.CHAMPION), _alias(world, model_tags.TRIAL)) == ("1", None)
    tags = _version(world, version).tags  # type: ignore[attr-defined]
    assert tags[model_tags.TRIAL_REASON] == "champion rolled back: bad answers in production"
    ended, rolled = _records(world, before)
    assert (ended.act, ended.actor, ended.evidence["model_version"]) == (
        "trial_end",
        "bob",
        version,
    )
    assert (rolled.act, rolled.actor, rolled.reason) == (
        "rollback",
        "bob",
        "bad answers in production",
    )
    assert rolled.subject == f"flight_delay champion v{champion} -> v1"
    assert rolled.evidence["to_mlflow_run"] == _version(world, "1").run_id  # type: ignore[attr-defined]
    assert rolled.evidence["aborted_trial"] == version
    world.loop.run_until_idle()
    bento = world.metadata("bento")
    assert bento["model_version"] == "1" and "challenger_version" not in bento
    assert world.metadata("drift_reference")["model_version"] == "1"
    # [template:if with_service_delivery]
    released = world.metadata("release")
    assert released["reason"].startswith("Rollback to v1: ")
    assert released["reason"].endswith("bad answers in production")

    # Reverting that release puts the colour that served before it back in front.
    from mlops_assets.undo import revert_release

    repo = world.resources["deployment_repo"]
    before, _ = trail.tail()
    said = revert_release(repo, instance, "rollback release misbehaves", "carol", trail=trail)
    reverted = world.metadata("release")
    assert reverted["status"] == "reverted" and reverted["reverted_by"] == "carol"
    assert reverted["live_colour"] != released["live_colour"]
    assert said.startswith(f"release reverted: {reverted['live_colour']} serves v")
    (record,) = _records(world, before)
    assert (record.act, record.actor) == ("rollback", "carol")
    assert record.subject.startswith("release ") and record.evidence["commit"] == reverted["commit"]
    assert record.evidence["image"] == reverted["image"]
    # [template:end]
    assert trail.verify().ok


def test_an_unreadable_trail_refuses_an_undo_and_nothing_changes(world: Deployment) -> None:
    tracking, trail = world.resources["tracking"], world.resources["audit"]
    last, _ = trail.tail()
    torn = Path(trail.url) / f"{last + 1:08d}.json"
    torn.parent.mkdir(parents=True, exist_ok=True)
    torn.write_text("{torn")
    files = sorted(torn.parent.iterdir())
    champion = _alias(world, model_tags.CHAMPION)
    try:
        for undo in (rollback, abort_trial):
            with pytest.raises(
                UndoError, match=rf"nothing was changed: .*{torn.name} .*unreadable"
            ):
                undo(tracking, world.instance, "why", "dave", trail=trail)
        assert _alias(world, model_tags.CHAMPION) == champion
        assert sorted(torn.parent.iterdir()) == files  # nothing appended past the torn record
    finally:
        torn.unlink()


def test_a_trial_won_with_approval_required_waits_for_an_approver(
    world: Deployment, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = {"require_approval": True, "approvers": ["alice"]}
    monkeypatch.setenv(APPROVAL_POLICY_VAR, json.dumps(policy))
    champion = _alias(world, model_tags.CHAMPION)
    version = _start_trial(world, PROMOTING, monkeypatch)
    start = date.fromisoformat(world.metadata("model_trial")["start_day"])
    world.land(start, days=2)
    evaluation = world.metadata("trial_evaluation", (start + timedelta(days=1)).isoformat())
    assert evaluation["outcome"] == "promote", evaluation
    # The trial is over; the champion waits for a person, and the bento serves it alone.
    aliases = (model_tags.CHAMPION, model_tags.TRIAL, model_tags.PENDING_APPROVAL)
    assert tuple(_alias(world, a) for a in aliases) == (champion, None, version)
    assert world.metadata("model_trial")["status"] == "passed"
    bento = world.metadata("bento")
    assert bento["model_version"] == champion and "challenger_version" not in bento
    acts = [(r.act, r.actor) for r in world.resources["audit"].records()][-2:]
    assert acts == [("trial_end", f"sensor {TRIAL_SENSOR}"), ("approval_requested", acts[1][1])]
    capsys.readouterr()
    assert main(["approve", "--version", version, "--actor", "alice", "--reason", "won"]) == 0
    world.loop.run_until_idle()  # the automation follows the approved champion
    assert (_alias(world, model_tags.CHAMPION), _alias(world, model_tags.PENDING_APPROVAL)) == (
        version,
        None,
    )
    assert world.metadata("bento")["model_version"] == version
    assert [r.act for r in world.resources["audit"].records()][-2:] == ["approval", "promotion"]
