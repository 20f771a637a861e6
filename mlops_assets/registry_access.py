"""Who may do what in the model registry: the accounts of ``mlflow server --app-name basic-auth``.

Two accounts besides MLflow's administrator:

- the pipeline's (the Dagster processes): EDIT on the experiment (runs, metrics, logged
  models) and MANAGE on the registered model (register versions, move and delete aliases,
  delete a half-registered version);
- a reader's (people, dashboards, audits): READ on both.

``default_permission`` is NO_PERMISSIONS: an account without a grant can neither write nor
read the pipeline's experiment and model (runs carry data windows, commits, gate reasons), so
every reader is a decision. Note that MLflow lets any signed-in account create experiments and
models of its own (it then manages those): the grants protect what exists, not the server.

``mlops-assets registry-auth-config`` writes the server's configuration file;
``mlops-assets registry-accounts`` creates or updates the accounts and grants, as the
administrator. Both are safe to run again; running the second with a new password rotates it.
"""

from __future__ import annotations

import configparser
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_assets import settings

APP_NAME = "basic-auth"
DEFAULT_PERMISSION = "NO_PERMISSIONS"
AUTHORIZATION_FUNCTION = "mlflow.server.auth:authenticate_request_basic_auth"
# Each password check is a PBKDF2 hash (~0.3-0.6 s of a busy core) and a training makes dozens
# of requests: a check is cached this long per worker. The price: another worker may accept a
# rotated password or a deleted account for up to this long.
AUTH_CACHE_SECONDS = 60
# Grants per account: resource type (MLflow's) -> permission.
PIPELINE_GRANTS = {"experiment": "EDIT", "registered_model": "MANAGE"}
READER_GRANTS = {"experiment": "READ", "registered_model": "READ"}

# Settings of the two commands (the administrator signs in with MLflow's own client variables,
# MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD).
AUTH_DATABASE_VAR = "MLFLOW_AUTH_DATABASE_URI"
PIPELINE_USERNAME_VAR = "MLOPS_REGISTRY_PIPELINE_USERNAME"
PIPELINE_PASSWORD_VAR = "MLOPS_REGISTRY_PIPELINE_PASSWORD"
READER_USERNAME_VAR = "MLOPS_REGISTRY_READER_USERNAME"
READER_PASSWORD_VAR = "MLOPS_REGISTRY_READER_PASSWORD"


class RegistryAccessError(RuntimeError):
    """A setting is missing or the server refused; the message is one line for the command."""


@dataclass(frozen=True)
class Account:
    """A registry account and the permission it gets per resource type."""

    username: str
    password: str
    grants: Mapping[str, str]


def write_auth_config(path: Path, database_uri: str) -> Path:
    """Writes the basic-auth app's configuration (``MLFLOW_AUTH_CONFIG_PATH`` points at it).

    The administrator's name and password are not in the file: the server reads
    ``MLFLOW_AUTH_ADMIN_USERNAME`` / ``MLFLOW_AUTH_ADMIN_PASSWORD`` when it creates the
    administrator on its first start.
    """
    if not database_uri:
        raise RegistryAccessError(f"{AUTH_DATABASE_VAR} is empty: where do the accounts live?")
    config = configparser.ConfigParser(interpolation=None)
    config["mlflow"] = {
        "default_permission": DEFAULT_PERMISSION,
        "database_uri": database_uri,
        "authorization_function": AUTHORIZATION_FUNCTION,
        "auth_cache_ttl_seconds": str(AUTH_CACHE_SECONDS),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        config.write(handle)
    return path


def accounts_from(env: Mapping[str, str]) -> list[Account]:
    """The pipeline's account (required) and the reader's (when its name is set)."""
    accounts = [_account(env, PIPELINE_USERNAME_VAR, PIPELINE_PASSWORD_VAR, PIPELINE_GRANTS)]
    if env.get(READER_USERNAME_VAR):
        accounts.append(_account(env, READER_USERNAME_VAR, READER_PASSWORD_VAR, READER_GRANTS))
    return accounts


def _account(
    env: Mapping[str, str], user_var: str, password_var: str, grants: Mapping[str, str]
) -> Account:
    missing = [name for name in (user_var, password_var) if not env.get(name)]
    if missing:
        raise RegistryAccessError(f"registry-accounts needs {' and '.join(missing)}")
    return Account(env[user_var], env[password_var], grants)


def ensure_accounts(tracking: Any, accounts: list[Account]) -> list[str]:
    """Creates the experiment, the registered model and ``accounts`` with their grants.

    Runs as the administrator (MLflow's client credentials). An existing account gets the
    given password (a rotation); grants are set again, so a changed permission applies.

    Args:
        tracking: The ``MlflowTracking`` resource naming the server, experiment and model.
        accounts: What to create.

    Returns:
        One line per thing done, for the command's output.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    client = tracking.client()
    experiment_id = tracking.ensure_experiment()
    try:
        client.get_registered_model(tracking.model_name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_registered_model(tracking.model_name)
    resource_ids = {"experiment": experiment_id, "registered_model": tracking.model_name}

    auth = get_app_client(APP_NAME, tracking_uri=tracking.tracking_uri)
    done = []
    for account in accounts:
        try:
            auth.get_user(account.username)
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            auth.create_user(account.username, account.password)
            done.append(f"created account {account.username}")
        else:
            auth.update_user_password(account.username, account.password)
            done.append(f"set the password of {account.username}")
        for resource_type, permission in account.grants.items():
            resource_id = resource_ids[resource_type]
            _grant(auth, account.username, resource_type, resource_id, permission)
            done.append(f"  {permission} on {resource_type} {resource_id}")
    return done


def _grant(auth: Any, username: str, resource_type: str, resource_id: str, permission: str) -> None:
    """Grants ``permission``, replacing a different grant the account already holds."""
    from mlflow.exceptions import MlflowException

    try:
        auth.grant_user_permission(username, resource_type, resource_id, permission)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        held = auth.get_user_permission(username, resource_type, resource_id).permission
        if held != permission:
            auth.revoke_user_permission(username, resource_type, resource_id)
            auth.grant_user_permission(username, resource_type, resource_id, permission)


def run_accounts(env: Mapping[str, str]) -> int:
    """``mlops-assets registry-accounts``: the accounts of ``env`` on ``MLFLOW_TRACKING_URI``."""
    from mlflow.exceptions import MlflowException

    from mlops_assets.resources.tracking import MlflowTracking

    uri = env.get("MLFLOW_TRACKING_URI", "")
    if not uri.startswith(("http://", "https://")):
        raise RegistryAccessError(f"MLFLOW_TRACKING_URI must name the server, not {uri!r}")
    if not env.get("MLFLOW_TRACKING_USERNAME"):
        raise RegistryAccessError(
            "sign in as MLflow's administrator: MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD"
        )
    tracking = MlflowTracking(
        tracking_uri=uri,
        artifact_location=env.get("MLFLOW_ARTIFACT_LOCATION", ""),
        experiment=settings.MODEL_NAME,
        model_name=settings.MODEL_NAME,
    )
    try:
        done = ensure_accounts(tracking, accounts_from(env))
    except MlflowException as error:
        raise RegistryAccessError(f"{uri} refused: {error.message}") from error
    print("\n".join(done))
    return 0
