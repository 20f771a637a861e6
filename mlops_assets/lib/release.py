"""Releases of the prediction service: image references and the blue-green state.

A release puts the new image on the idle colour and points the live Service at it; the
colour that served before keeps its image, so reverting the release flips traffic back at
once. The Kubernetes manifests and the release flow: docs/deploy.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlops_assets.lib import model_tags

# Kubernetes name of the prediction service: Deployments ``<APP>-blue`` and ``<APP>-green``,
# Services ``<APP>`` (live colour) and ``<APP>-preview`` (idle colour).
APP = "mlops-assets-service"
COLOURS = ("blue", "green")
# Pod label that tells the colours apart; the Services select on it.
COLOUR_LABEL = "colour"
# Where CI pushes the service image (``bentoml containerize``); production sets its own.
IMAGE_REPOSITORY_VAR = "MLOPS_IMAGE_REPOSITORY"
DEFAULT_IMAGE_REPOSITORY = "registry.example.com/mlops/flight_delay_service"
# Commit trailers: a release commit names its release; a revert names the release it undoes.
RELEASE_TRAILER = "Release-Id"
REVERT_TRAILER = "Reverts-Release"
# The Kubernetes version the manifests are validated against (kubernetes-validate schemas).
KUBERNETES_VERSION = "1.33.0"


class ReleaseError(ValueError):
    """A release that must not be made (no bento, an image that is not the bento's, ...)."""


def image_repository(env: Mapping[str, str]) -> str:
    """The service images' repository: ``MLOPS_IMAGE_REPOSITORY`` or the default."""
    return env.get(IMAGE_REPOSITORY_VAR) or DEFAULT_IMAGE_REPOSITORY


def placeholder_image(colour: str) -> str:
    """The image name a colour's Deployment holds in the base, replaced by each release."""
    if colour not in COLOURS:
        raise ReleaseError(f"colour must be one of {', '.join(COLOURS)}, got {colour!r}")
    return f"{APP}-{colour}"


def image_reference(bento_tag: str, repository: str = DEFAULT_IMAGE_REPOSITORY) -> str:
    """The service image built from a Bento: ``<repository>:<bento version>``.

    Raises:
        ReleaseError: for a tag without a version or a repository with a tag of its own.
    """
    name, _, version = bento_tag.partition(":")
    if not name or not version:
        raise ReleaseError(f"a bento tag is <name>:<version>, got {bento_tag!r}")
    if not repository or ":" in repository.rsplit("/", 1)[-1] or "@" in repository:
        raise ReleaseError(f"an image repository has no tag or digest, got {repository!r}")
    return f"{repository}:{version}"


def other_colour(colour: str) -> str:
    """The colour that is not ``colour``."""
    placeholder_image(colour)
    return COLOURS[1] if colour == COLOURS[0] else COLOURS[0]


@dataclass(frozen=True)
class Release:
    """What one release puts on the idle colour, and why.

    Attributes:
        model_name: Registered model.
        model_version: The champion the bento serves.
        bento_tag: The bento the image is built from.
        image: The service image (``image_reference(bento_tag, repository)``).
        reason: Why this release exists (promotion, trial start or end, rollback).
        mlflow_run_id: The champion's training run.
        training_set_md5: DVC md5 of the champion's training set.
        git_commit: The project's commit the bento was built from.
        challenger_version: The version on live trial in the same bento, if any.
        serving_mode: The bento's default serving mode (``off`` without a trial).
        dagster_run_id: The run that made the release.
    """

    model_name: str
    model_version: str
    bento_tag: str
    image: str
    reason: str
    mlflow_run_id: str = "unknown"
    training_set_md5: str = "unknown"
    git_commit: str = "unknown"
    challenger_version: str | None = None
    serving_mode: str = "off"
    dagster_run_id: str = "unknown"

    def __post_init__(self) -> None:
        expected = self.bento_tag.partition(":")[2]
        name, _, tag = self.image.rpartition(":")
        if not self.bento_tag or not expected:
            raise ReleaseError(f"no bento to release (bento tag {self.bento_tag!r})")
        if not name or "/" in tag or tag != expected:
            raise ReleaseError(
                f"image {self.image!r} is not built from bento {self.bento_tag!r}: "
                f"its tag must be the bento version {expected!r}"
            )

    def served(self) -> dict[str, Any]:
        """What a colour runs after this release (kept in ``release.json``)."""
        return {
            "image": self.image,
            "bento_tag": self.bento_tag,
            "model_version": self.model_version,
            "challenger_version": self.challenger_version,
            "serving_mode": self.serving_mode,
        }


@dataclass(frozen=True)
class ReleaseState:
    """The blue-green state a deployment repository holds: the live colour and both colours.

    Attributes:
        live: The colour the live Service selects.
        colours: What each colour runs (``Release.served()``).
        release_id: The release that made this state.
    """

    live: str
    colours: dict[str, dict[str, Any]]
    release_id: str

    @property
    def idle(self) -> str:
        """The colour the preview Service selects (the previous release, ready to return)."""
        return other_colour(self.live)

    def as_json(self) -> str:
        """``release.json``."""
        body = {"live": self.live, "release_id": self.release_id, "colours": self.colours}
        return json.dumps(body, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ReleaseState:
        """Reads ``release.json``.

        Raises:
            ReleaseError: for a file that is not a release state.
        """
        try:
            body = json.loads(text)
            state = cls(str(body["live"]), dict(body["colours"]), str(body["release_id"]))
        except (ValueError, KeyError, TypeError) as error:
            raise ReleaseError(f"release.json is not a release state: {error}") from error
        if set(state.colours) != set(COLOURS):
            raise ReleaseError(f"release.json must describe {COLOURS}, got {sorted(state.colours)}")
        other_colour(state.live)
        return state


def next_state(previous: ReleaseState | None, release: Release, release_id: str) -> ReleaseState:
    """The state after ``release``: its image on the idle colour, which becomes live.

    The first release puts the image on both colours (blue live), so the preview Service
    never points at nothing. Releasing the image that is already live changes nothing.
    """
    served = release.served()
    if previous is None:
        return ReleaseState(COLOURS[0], {c: dict(served) for c in COLOURS}, release_id)
    if previous.colours[previous.live] == served:
        return previous
    colours = {**previous.colours, previous.idle: served}
    return ReleaseState(previous.idle, colours, release_id)


def overlay(state: ReleaseState, repository_base: str = "base") -> dict[str, Any]:
    """The kustomization a release writes beside the base: images and the live colour."""
    images = []
    for colour in COLOURS:
        name, _, tag = state.colours[colour]["image"].rpartition(":")
        images.append({"name": placeholder_image(colour), "newName": name, "newTag": tag})
    patches = [
        _selector_patch(APP, state.live),
        _selector_patch(f"{APP}-preview", state.idle),
    ]
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [repository_base],
        "images": images,
        "patches": patches,
    }


def _selector_patch(service: str, colour: str) -> dict[str, Any]:
    operation = [{"op": "replace", "path": f"/spec/selector/{COLOUR_LABEL}", "value": colour}]
    return {"target": {"kind": "Service", "name": service}, "patch": json.dumps(operation)}


def commit_message(release: Release, state: ReleaseState, previous: ReleaseState | None) -> str:
    """The release commit's message: what goes live, why, its lineage, and trailers."""
    kept = "" if previous is None else f" ({state.idle} keeps {_served_text(state.idle, state)})"
    lines = [
        f"Release {release.model_name} {_served_text(state.live, state)} to {state.live}{kept}",
        "",
        release.reason,
        "",
        f"Model: {release.model_name} v{release.model_version}, MLflow run {release.mlflow_run_id}",
        f"Training data: DVC md5 {release.training_set_md5}",
        f"Bento: {release.bento_tag}",
        f"Image: {release.image}",
        f"Code: {release.git_commit}",
    ]
    if release.challenger_version is not None:
        lines.append(f"Trial: v{release.challenger_version} in {release.serving_mode} mode")
    trailers = {
        RELEASE_TRAILER: state.release_id,
        "Model-Version": release.model_version,
        "Bento-Tag": release.bento_tag,
        "Colour": state.live,
        "Dagster-Run": release.dagster_run_id,
    }
    return "\n".join([*lines, "", *(f"{k}: {v}" for k, v in trailers.items())]) + "\n"


def _served_text(colour: str, state: ReleaseState) -> str:
    served = state.colours[colour]
    trial = served.get("challenger_version")
    on_trial = f" with v{trial} on trial ({served.get('serving_mode')})" if trial else ""
    return f"v{served['model_version']}{on_trial}"


def revert_message(release_id: str, subject: str, actor: str, reason: str) -> str:
    """The message of a commit that reverts release ``release_id``."""
    return (
        f"Revert release {release_id}: {subject}\n\n{reason}\n\nBy: {actor}\n\n"
        f"{REVERT_TRAILER}: {release_id}\n"
    )


def to_revert(history: list[dict[str, str]]) -> dict[str, str]:
    """The newest release in ``history`` (newest first) that no later commit reverted.

    Each entry holds the commit's ``sha``, ``subject`` and its trailers.

    Raises:
        ReleaseError: when there is none, or only the first release (reverting it would
            delete the service).
    """
    reverted = {entry[REVERT_TRAILER] for entry in history if REVERT_TRAILER in entry}
    releases = [entry for entry in history if RELEASE_TRAILER in entry]
    for position, entry in enumerate(releases):
        if entry[RELEASE_TRAILER] in reverted:
            continue
        if position == len(releases) - 1:
            raise ReleaseError(
                f"nothing to revert: {entry['subject']!r} is the first release, and reverting "
                "it would delete the service (delete its Argo CD Application instead)"
            )
        return entry
    raise ReleaseError("nothing to revert: the deployment repository holds no release")


def release_reason(
    champion: tuple[str, Mapping[str, str]],
    trial: tuple[str, str] | None,
    previous: ReleaseState | None,
    ended_trial: Mapping[str, str] | None = None,
) -> str:
    """Why a bento goes out, from the registry's own record.

    Args:
        champion: The champion's version and its model-version tags.
        trial: The version on trial in the same bento and the serving mode, if any.
        previous: The deployment repository's state before this release.
        ended_trial: Tags of the version whose trial the live colour carried, when the
            champion did not change (the trial just ended).
    """
    version, tags = champion
    if trial is not None:
        return f"Live trial of v{trial[0]} against champion v{version} ({trial[1]} mode)"
    if ended_trial is not None:
        state = ended_trial.get(model_tags.TRIAL_STATE, "ended")
        return f"Trial ended ({state}): {ended_trial.get(model_tags.TRIAL_REASON, 'no reason')}"
    if model_tags.RESTORED_BY_ROLLBACK in tags:
        return f"Rollback to v{version}: {tags[model_tags.RESTORED_BY_ROLLBACK]}"
    if tags.get(model_tags.TRIAL_STATE) == "promoted":
        return f"Promoted after a live trial: {tags.get(model_tags.TRIAL_REASON, '')}".rstrip()
    if model_tags.GATE_REASON in tags:
        return f"Promoted by the gate: {tags[model_tags.GATE_REASON]}"
    return f"Champion v{version}" + ("" if previous else " (first release)")


def ended_trial_version(previous: ReleaseState | None, champion_version: str) -> str | None:
    """The version whose trial the live colour served beside an unchanged champion, if any."""
    if previous is None:
        return None
    live = previous.colours[previous.live]
    same_champion = str(live.get("model_version")) == champion_version
    return (
        str(live["challenger_version"])
        if live.get("challenger_version") and same_champion
        else None
    )
