"""Undo in one command: abort a live trial, roll back a promotion, revert a release.

Both act on the registry (aliases and tags saying who, when and why) and record a runless
materialization in the Dagster instance, so what follows the champion or the trial (the
bento, the model card, the drift reference) follows the undo too, by automation.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from mlops_assets.defs.deployment import release
from mlops_assets.defs.training import CHAMPION_KEY, TRIAL_KEY, trial_ended
from mlops_assets.lib import model_tags


class UndoError(RuntimeError):
    """There is nothing to undo (no trial, no champion, no previous champion)."""


@dataclass(frozen=True)
class Rollback:
    """Which version the champion alias moved from and to, and the trial it aborted."""

    from_version: str
    to_version: str
    aborted_trial: str | None = None


def actor(given: str | None = None) -> str:
    """Who acts: the name given (``--actor``), else the operating-system user."""
    return given or getpass.getuser()


def abort_trial(tracking: Any, instance: dg.DagsterInstance, reason: str, by: str) -> str:
    """Ends the running trial as aborted: the challenger is retired, traffic goes back.

    The trial's end rebuilds the bento without the challenger (automation).

    Returns:
        The version whose trial was aborted.

    Raises:
        UndoError: when no trial is running.
    """
    trial = tracking.trial()
    if trial is None:
        raise UndoError(f"{tracking.model_name} has no trial running")
    tracking.end_trial(trial, "aborted", reason, by)
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=TRIAL_KEY,
            metadata=trial_ended(trial, "aborted", reason, by),
        )
    )
    return str(trial.version)


def rollback(tracking: Any, instance: dg.DagsterInstance, reason: str, by: str) -> Rollback:
    """Moves ``champion`` back to the version it replaced, recording who, when and why.

    A trial running against the champion is aborted first: it was judged against the
    version that is leaving.

    Raises:
        UndoError: if there is no champion or no previous champion recorded.
    """
    client, name = tracking.client(), tracking.model_name
    current = tracking.version_by_alias(model_tags.CHAMPION)
    if current is None:
        raise UndoError(f"{name} has no champion to roll back")
    previous = current.tags.get(model_tags.PREVIOUS_CHAMPION)
    if not previous:
        raise UndoError(
            f"{name} v{current.version} records no previous champion "
            f"({model_tags.PREVIOUS_CHAMPION} tag)"
        )
    aborted = None
    if tracking.trial() is not None:
        aborted = abort_trial(tracking, instance, f"champion rolled back: {reason}", by)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    client.set_registered_model_alias(name, model_tags.CHAMPION, previous)
    client.set_model_version_tag(
        name, current.version, model_tags.ROLLED_BACK, f"{stamp} by {by}: {reason}"
    )
    client.set_model_version_tag(
        name,
        previous,
        model_tags.RESTORED_BY_ROLLBACK,
        f"{stamp} by {by} from v{current.version}: {reason}",
    )
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=CHAMPION_KEY,
            metadata={
                "decision": "rolled back",
                "reason": reason,
                "model_version": str(previous),
                "rolled_back_from": str(current.version),
                "rolled_back_by": by,
            },
        )
    )
    return Rollback(str(current.version), str(previous), aborted)


def revert_release(repo: Any, instance: dg.DagsterInstance, reason: str, by: str) -> str:
    """Reverts the newest release in the deployment repository: traffic flips back.

    The revert is a commit Argo CD applies like any other; a runless materialization of
    ``release`` shows it in the UI.

    Raises:
        UndoError: when there is nothing to revert or the repository cannot be written.
    """
    from mlops_assets.lib.release import ReleaseError
    from mlops_assets.resources.deployment_repo import DeploymentRepoError

    try:
        done = repo.revert(by, reason)
    except (ReleaseError, DeploymentRepoError) as error:
        raise UndoError(str(error)) from error
    live = done.state.colours[done.state.live]
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=release.key,
            metadata={
                "status": "reverted",
                "commit": done.commit,
                "live_colour": done.state.live,
                "image": live["image"],
                "model_version": str(live["model_version"]),
                "reason": reason,
                "reverted_by": by,
                "repository": dg.MetadataValue.path(str(repo.app_dir)),
            },
        )
    )
    return f"release reverted: {done.state.live} serves v{live['model_version']} ({live['image']})"
