"""Undo in one command: abort a live trial, roll back a promotion, revert a release.

Both act on the registry (aliases and tags saying who, when and why) and record a runless
materialization in the Dagster instance, so what follows the champion or the trial (the
bento, the model card, the drift reference) follows the undo too, by automation.

Each undo that was done is one record of the audit trail (``lib/audit.py``); one that is
refused records nothing. A trail whose last record cannot be read refuses the undo before
anything changes: an act the trail cannot record is not done.
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
from mlops_assets.lib.audit import AuditError


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


def _recordable(trail: Any) -> None:
    """Refuses an undo the audit trail could not record (its last record is unreadable)."""
    try:
        trail.tail()
    except AuditError as error:
        raise UndoError(f"nothing was changed: {error}") from error


def abort_trial(
    tracking: Any, instance: dg.DagsterInstance, reason: str, by: str, *, trail: Any
) -> str:
    """Ends the running trial as aborted: the challenger is retired, traffic goes back.

    The trial's end rebuilds the bento without the challenger (automation). The audit
    ``trail`` (``resources.audit.AuditTrail``) records it as ``trial_end``.

    Returns:
        The version whose trial was aborted.

    Raises:
        UndoError: when no trial is running, or the trail cannot record it.
    """
    _recordable(trail)
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
    trail.record(
        "trial_end",
        by,
        f"{tracking.model_name} v{trial.version} trial",
        reason,
        {
            "status": "aborted",
            "model_version": trial.version,
            "mlflow_run": trial.mlflow_run_id,
            "champion_version": trial.champion_version,
        },
    )
    return str(trial.version)


def rollback(
    tracking: Any, instance: dg.DagsterInstance, reason: str, by: str, *, trail: Any
) -> Rollback:
    """Moves ``champion`` back to the version it replaced, recording who, when and why.

    A trial running against the champion is aborted first: it was judged against the
    version that is leaving. The audit ``trail`` records the rollback (and the abort).

    Raises:
        UndoError: if there is no champion or no previous champion recorded, or the trail
            cannot record it.
    """
    _recordable(trail)
    current, previous = _champion_and_previous(tracking)
    aborted = None
    if tracking.trial() is not None:
        aborted = abort_trial(
            tracking, instance, f"champion rolled back: {reason}", by, trail=trail
        )
    _move_champion_back(tracking, current, previous, reason, by)
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
    restored = tracking.client().get_model_version(tracking.model_name, previous)
    trail.record(
        "rollback",
        by,
        f"{tracking.model_name} champion v{current.version} -> v{previous}",
        reason,
        {
            "from_version": current.version,
            "from_mlflow_run": current.run_id,
            "to_version": previous,
            "to_mlflow_run": restored.run_id,
            "aborted_trial": aborted,
        },
    )
    return Rollback(str(current.version), str(previous), aborted)


def _champion_and_previous(tracking: Any) -> tuple[Any, str]:
    """The champion's version and the version it replaced; UndoError when either is missing."""
    name = tracking.model_name
    current = tracking.version_by_alias(model_tags.CHAMPION)
    if current is None:
        raise UndoError(f"{name} has no champion to roll back")
    previous = current.tags.get(model_tags.PREVIOUS_CHAMPION)
    if not previous:
        raise UndoError(
            f"{name} v{current.version} records no previous champion "
            f"({model_tags.PREVIOUS_CHAMPION} tag)"
        )
    return current, str(previous)


def _move_champion_back(tracking: Any, current: Any, previous: str, reason: str, by: str) -> None:
    """Points the alias at ``previous`` and tags both versions with who, when and why."""
    client, name = tracking.client(), tracking.model_name
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


def revert_release(
    repo: Any, instance: dg.DagsterInstance, reason: str, by: str, *, trail: Any
) -> str:
    """Reverts the newest release in the deployment repository: traffic flips back.

    The revert is a commit Argo CD applies like any other; a runless materialization of
    ``release`` shows it in the UI, and the audit ``trail`` records it as a ``rollback``.

    Raises:
        UndoError: when there is nothing to revert, the repository cannot be written or the
            trail cannot record it.
    """
    from mlops_assets.lib.release import ReleaseError
    from mlops_assets.resources.deployment_repo import DeploymentRepoError

    _recordable(trail)
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
    # The revert commit's subject names the release: "Revert release <id>: <its subject>".
    subject = repo.history()[0]["subject"].removeprefix("Revert ")
    trail.record(
        "rollback",
        by,
        subject,
        reason,
        {
            "commit": done.commit,
            "image": live["image"],
            "model_version": live["model_version"],
            "live_colour": done.state.live,
        },
    )
    return f"release reverted: {done.state.live} serves v{live['model_version']} ({live['image']})"
