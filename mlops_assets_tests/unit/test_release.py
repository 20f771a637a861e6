"""Releases as data: image references, the blue-green state, messages and what to revert."""

import json

import pytest

from mlops_assets.lib import model_tags
from mlops_assets.lib import release as rel
from mlops_assets_tests.releases import REPOSITORY
from mlops_assets_tests.releases import release_of as _release


def test_the_image_is_the_repository_tagged_with_the_bento_version() -> None:
    assert rel.image_reference("flight_delay_service:x7y", REPOSITORY) == f"{REPOSITORY}:x7y"
    assert rel.image_reference("s:v1", "localhost:5000/s") == "localhost:5000/s:v1"


@pytest.mark.parametrize(
    ("tag", "repository", "message"),
    [
        ("flight_delay_service", REPOSITORY, "a bento tag is <name>:<version>"),
        ("flight_delay_service:", REPOSITORY, "a bento tag is <name>:<version>"),
        ("s:v1", "registry.example.com/s:latest", "no tag or digest"),
        ("s:v1", "registry.example.com/s@sha256:00", "no tag or digest"),
    ],
)
def test_a_bad_tag_or_repository_is_refused(tag: str, repository: str, message: str) -> None:
    with pytest.raises(rel.ReleaseError, match=message):
        rel.image_reference(tag, repository)


def test_a_release_without_a_bento_is_refused() -> None:
    with pytest.raises(rel.ReleaseError, match="no bento to release"):
        rel.Release("flight_delay", "1", "", f"{REPOSITORY}:x", "why")


def test_an_image_not_built_from_the_bento_is_refused() -> None:
    with pytest.raises(rel.ReleaseError, match="must be the bento version 'aaa'"):
        rel.Release("flight_delay", "1", "flight_delay_service:aaa", f"{REPOSITORY}:bbb", "why")


def test_the_first_release_serves_both_colours_with_blue_live() -> None:
    state = rel.next_state(None, _release("1", "aaa"), "r1")
    assert (state.live, state.idle, state.release_id) == ("blue", "green", "r1")
    assert state.colours["blue"] == state.colours["green"] == _release("1", "aaa").served()


def test_a_release_goes_to_the_idle_colour_and_the_previous_one_stays_ready() -> None:
    first = rel.next_state(None, _release("1", "aaa"), "r1")
    second = rel.next_state(first, _release("2", "bbb"), "r2")
    assert second.live == "green"
    assert second.colours["green"]["model_version"] == "2"
    assert second.colours["blue"]["model_version"] == "1"
    third = rel.next_state(second, _release("3", "ccc"), "r3")
    assert third.live == "blue"
    assert third.colours["blue"]["model_version"] == "3"
    assert third.colours["green"] == second.colours["green"]


def test_releasing_what_is_live_changes_nothing() -> None:
    first = rel.next_state(None, _release("1", "aaa"), "r1")
    assert rel.next_state(first, _release("1", "aaa"), "r2") is first


def test_the_state_round_trips_and_a_bad_file_is_named() -> None:
    state = rel.next_state(None, _release("1", "aaa", challenger_version="2"), "r1")
    assert rel.ReleaseState.from_json(state.as_json()) == state
    with pytest.raises(rel.ReleaseError, match=r"release\.json is not a release state"):
        rel.ReleaseState.from_json("{}")
    with pytest.raises(rel.ReleaseError, match="must describe"):
        rel.ReleaseState.from_json(json.dumps({"live": "blue", "colours": {}, "release_id": "x"}))
    body = json.loads(state.as_json()) | {"live": "red"}
    with pytest.raises(rel.ReleaseError, match="colour must be one of blue, green"):
        rel.ReleaseState.from_json(json.dumps(body))


def test_the_overlay_points_each_placeholder_at_its_image_and_the_services_at_colours() -> None:
    state = rel.next_state(
        rel.next_state(None, _release("1", "aaa"), "r1"), _release("2", "b"), "r2"
    )
    kustomization = rel.overlay(state)
    assert kustomization["resources"] == ["base"]
    images = {entry["name"]: entry for entry in kustomization["images"]}
    assert images["mlops-assets-service-blue"] == {
        "name": "mlops-assets-service-blue",
        "newName": REPOSITORY,
        "newTag": "aaa",
    }
    assert images["mlops-assets-service-green"]["newTag"] == "b"
    selected = {
        patch["target"]["name"]: json.loads(patch["patch"])[0]["value"]
        for patch in kustomization["patches"]
    }
    assert selected == {"mlops-assets-service": "green", "mlops-assets-service-preview": "blue"}


def test_the_commit_message_carries_version_reason_lineage_and_trailers() -> None:
    first = rel.next_state(None, _release("1", "aaa"), "r1")
    release = _release("2", "bbb", challenger_version="3", serving_mode="shadow")
    state = rel.next_state(first, release, "r2")
    message = rel.commit_message(release, state, first)
    subject, _, body = message.partition("\n\n")
    assert subject == "Release flight_delay v2 with v3 on trial (shadow) to green (blue keeps v1)"
    for expected in (
        "Promoted by the gate: v2 is better",
        "MLflow run run2",
        "DVC md5 md52",
        "Bento: flight_delay_service:bbb",
        f"Image: {REPOSITORY}:bbb",
        "Code: abc1234",
        "Trial: v3 in shadow mode",
        "Release-Id: r2",
        "Model-Version: 2",
        "Colour: green",
    ):
        assert expected in body


def _history(*entries: dict[str, str]) -> list[dict[str, str]]:
    return [{"sha": f"c{i}", "subject": f"s{i}", **entry} for i, entry in enumerate(entries)]


def test_the_newest_release_not_yet_reverted_is_reverted() -> None:
    history = _history(
        {rel.RELEASE_TRAILER: "r3"},
        {rel.REVERT_TRAILER: "r2"},
        {rel.RELEASE_TRAILER: "r2"},
        {rel.RELEASE_TRAILER: "r1"},
    )
    assert rel.to_revert(history)[rel.RELEASE_TRAILER] == "r3"


def test_nothing_to_revert_is_said() -> None:
    with pytest.raises(rel.ReleaseError, match="holds no release"):
        rel.to_revert([])
    only_first = _history({rel.RELEASE_TRAILER: "r1"})
    with pytest.raises(rel.ReleaseError, match="is the first release"):
        rel.to_revert(only_first)
    all_reverted = _history(
        {rel.REVERT_TRAILER: "r2"}, {rel.RELEASE_TRAILER: "r2"}, {rel.RELEASE_TRAILER: "r1"}
    )
    with pytest.raises(rel.ReleaseError, match="is the first release"):
        rel.to_revert(all_reverted)


def test_the_reason_follows_the_registry_record() -> None:
    gate = {model_tags.GATE_REASON: "AUC 0.67 vs 0.63"}
    first = rel.next_state(None, _release("1", "aaa"), "r1")
    assert rel.release_reason(("1", {}), None, None) == "Champion v1 (first release)"
    assert rel.release_reason(("2", gate), None, first) == "Promoted by the gate: AUC 0.67 vs 0.63"
    trial = rel.release_reason(("1", gate), ("2", "shadow"), first)
    assert trial == "Live trial of v2 against champion v1 (shadow mode)"
    promoted = {**gate, model_tags.TRIAL_STATE: "promoted", model_tags.TRIAL_REASON: "gain +0.04"}
    assert rel.release_reason(("2", promoted), None, first).startswith(
        "Promoted after a live trial"
    )
    rolled = {**gate, model_tags.RESTORED_BY_ROLLBACK: "2026-11-30 by ana: bad"}
    assert (
        rel.release_reason(("1", rolled), None, first) == "Rollback to v1: 2026-11-30 by ana: bad"
    )
    retired = {model_tags.TRIAL_STATE: "retired", model_tags.TRIAL_REASON: "no gain"}
    assert rel.release_reason(("1", gate), None, first, retired) == "Trial ended (retired): no gain"


def test_a_trial_ended_when_the_live_colour_carried_it_beside_the_same_champion() -> None:
    on_trial = rel.next_state(None, _release("1", "aaa", challenger_version="2"), "r1")
    assert rel.ended_trial_version(on_trial, "1") == "2"
    assert rel.ended_trial_version(on_trial, "2") is None
    assert rel.ended_trial_version(None, "1") is None
    plain = rel.next_state(None, _release("1", "aaa"), "r1")
    assert rel.ended_trial_version(plain, "1") is None
