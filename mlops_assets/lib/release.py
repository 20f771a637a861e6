"""Releases of the prediction service: image references and the blue-green state.

A release puts the new image on the idle colour and points the live Service at it; the
colour that served before keeps its image, so reverting the release flips traffic back at
once. The Kubernetes manifests are in ``deploy/service`` (docs/deploy.md).
"""

from __future__ import annotations

# Kubernetes name of the prediction service: Deployments ``<APP>-blue`` and ``<APP>-green``,
# Services ``<APP>`` (live colour) and ``<APP>-preview`` (idle colour).
APP = "mlops-assets-service"
COLOURS = ("blue", "green")
# Pod label that tells the colours apart; the Services select on it.
COLOUR_LABEL = "colour"
# Where CI pushes the service image (``bentoml containerize``); production sets its own.
IMAGE_REPOSITORY_VAR = "MLOPS_IMAGE_REPOSITORY"
DEFAULT_IMAGE_REPOSITORY = "registry.example.com/mlops/flight_delay_service"


class ReleaseError(ValueError):
    """A release that must not be made (no bento, an image that is not the bento's, ...)."""


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
