"""Where things live and which environment runs: the one place that decides.

Everything a local run writes lives under one state folder (``MLOPS_STATE_DIR``, default
``<project>/state``). ``MLOPS_ENV`` picks the flavour of every resource: ``local`` (default,
embedded stores, no servers, no secrets) or ``production`` (URLs and secrets from the
environment). Nothing here imports a heavy library or touches the disk at import time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Literal

ENV_VAR = "MLOPS_ENV"
STATE_DIR_VAR = "MLOPS_STATE_DIR"
# One switch for the logs of the prediction service and of the pipeline's runs.
LOG_FORMAT_VAR = "MLOPS_LOG_FORMAT"
LOG_FORMATS = ("text", "json")

# Whether a landing day waits for its manifest (docs/data.md, "Complete deliveries").
LANDING_MANIFESTS_VAR = "MLOPS_LANDING_MANIFESTS"
LANDING_MANIFEST_MODES = ("required", "optional")

Environment = Literal["local", "production"]
LogFormat = Literal["text", "json"]

# Name of the model in the MLflow registry (and of its experiment); the bento service is
# ``<MODEL_NAME>_service``. Generated projects get their own (docs/template.md).
MODEL_NAME = "flight_delay"

# The demo data covers 2013; a team replacing the source moves these two dates.
PARTITION_START = date(2013, 1, 1)
PARTITION_END = date(2014, 1, 1)  # exclusive

# Local port of the report server (``make reports``) that drift-report links point to.
REPORTS_PORT = 8008

# Telemetry switches of every tool in the stack; applied as defaults (an explicit value wins).
TELEMETRY_OFF: dict[str, str] = {
    "DAGSTER_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "BENTOML_DO_NOT_TRACK": "true",
    "EVIDENTLY_DISABLE_TELEMETRY": "1",
}


def environment(env: MutableMapping[str, str] | None = None) -> Environment:
    """Returns the selected environment flavour.

    Raises:
        ValueError: if ``MLOPS_ENV`` holds anything but ``local`` or ``production``.
    """
    value = (env if env is not None else os.environ).get(ENV_VAR, "local").strip().lower()
    if value not in ("local", "production"):
        raise ValueError(f"{ENV_VAR} must be 'local' or 'production', got {value!r}")
    return value  # type: ignore[return-value]


def log_format(env: Mapping[str, str] | None = None) -> LogFormat:
    """Returns the log format of the service and the pipeline: ``text`` (default) or ``json``.

    Raises:
        ValueError: if ``MLOPS_LOG_FORMAT`` holds anything else (the message names the variable
            and the allowed values).
    """
    raw = (env if env is not None else os.environ).get(LOG_FORMAT_VAR, "")
    value = raw.strip().lower() or "text"
    if value not in LOG_FORMATS:
        raise ValueError(f"{LOG_FORMAT_VAR} must be one of {', '.join(LOG_FORMATS)}, got {raw!r}")
    return value  # type: ignore[return-value]


def manifests_required(env: Mapping[str, str] | None = None) -> bool:
    """Whether landing days need a manifest: ``required`` (default) or ``optional``.

    ``optional`` is for an upstream that cannot write manifests: a day without one is
    ingested as it arrives (contracts only); a day with one is still checked against it.

    Raises:
        ValueError: if ``MLOPS_LANDING_MANIFESTS`` holds anything else.
    """
    raw = (env if env is not None else os.environ).get(LANDING_MANIFESTS_VAR, "")
    value = raw.strip().lower() or LANDING_MANIFEST_MODES[0]
    if value not in LANDING_MANIFEST_MODES:
        allowed = ", ".join(LANDING_MANIFEST_MODES)
        raise ValueError(f"{LANDING_MANIFESTS_VAR} must be one of {allowed}, got {raw!r}")
    return value == "required"


def project_root() -> Path:
    """The source checkout holding ``pyproject.toml``, or the working directory."""
    candidate = Path(__file__).resolve().parents[1]
    return candidate if (candidate / "pyproject.toml").exists() else Path.cwd()


# Folder of each kind of local state, below the state folder.
STATE_FOLDERS = {
    "dagster_home": "dagster_home",
    "landing": "landing",
    "lake": "lake",
    "data_registry": "data-registry",
    "dvc_remote": "dvc-remote",
    "reports": "reports",
    "bentoml_home": "bentoml",
    "prediction_log": "prediction_log",
    "deployment": "deployment",
    "observability": "observability",
    "mlflow": "mlflow",
    "audit": "audit",
}


@dataclass(frozen=True)
class Locations:
    """Local paths of the runtime state, all below ``state``; production swaps most for URLs.

    Attributes:
        state: The state folder.
        dagster_home: Dagster instance home (SQLite storage, dagster.yaml).
        landing: Landing zone root.
        lake: Parquet lake root.
        data_registry: Work tree of the DVC data-registry repository.
        dvc_remote: DVC remote of the data registry.
        reports: Monitoring reports (Evidently HTML and JSON), served by ``make reports``.
        bentoml_home: BentoML store (models and bentos of the service; exports in
            ``exports``).
        prediction_log: The online prediction log (JSON lines per flight date), unless
            ``MLOPS_PREDICTION_LOG`` names another root.
        deployment: The embedded deployment repository (``remote.git``, a bare git
            repository Argo CD would watch) and the releases' checkout of it.
        observability: The count of metric pushes that missed the Pushgateway.
            Also ``mlops-assets observe``'s stack and alerts.  # [template:only with_observability]
        mlflow: The embedded MLflow store: ``tracking_db`` and ``artifacts``.
        audit: The audit trail, one hash-chained record per file (``lib/audit.py``).
    """

    state: Path
    dagster_home: Path = field(init=False)
    landing: Path = field(init=False)
    lake: Path = field(init=False)
    data_registry: Path = field(init=False)
    dvc_remote: Path = field(init=False)
    reports: Path = field(init=False)
    bentoml_home: Path = field(init=False)
    prediction_log: Path = field(init=False)
    deployment: Path = field(init=False)
    observability: Path = field(init=False)
    mlflow: Path = field(init=False)
    audit: Path = field(init=False)

    def __post_init__(self) -> None:
        for name, folder in STATE_FOLDERS.items():
            object.__setattr__(self, name, self.state / folder)

    @property
    def tracking_db(self) -> Path:
        """MLflow's SQLite store."""
        return self.mlflow / "mlflow.db"

    @property
    def artifacts(self) -> Path:
        """MLflow's artifact root."""
        return self.mlflow / "artifacts"

    @property
    def pseudonym_key(self) -> Path:
        """The local key of the pseudonyms of personal data (mode 0600, made on first use)."""
        return self.state / "pseudonym.key"


def locations(env: MutableMapping[str, str] | None = None) -> Locations:
    """Resolves the state folder from ``MLOPS_STATE_DIR`` (absolute) or the default."""
    raw = (env if env is not None else os.environ).get(STATE_DIR_VAR)
    state = Path(raw).expanduser() if raw else project_root() / "state"
    return Locations(state=state.resolve())


def telemetry_off(env: MutableMapping[str, str] | None = None) -> None:
    """Turns every tool's telemetry off unless the caller set a value explicitly."""
    target = env if env is not None else os.environ
    for key, value in TELEMETRY_OFF.items():
        target.setdefault(key, value)


def lake_root(
    variable: str, name: str, local: str | None = None, env: Mapping[str, str] | None = None
) -> str:
    """Where a folder the pipeline and an outside process share lives, when nothing else says.

    ``variable`` if set; else in production ``<MLOPS_LAKE_URL>/<name>`` (where the pipeline
    reads it); else the state folder's ``local`` location (a ``Locations`` field; by default
    ``lake/<name>``).
    """
    env = os.environ if env is None else env
    if env.get(variable):
        return env[variable]
    lake = env.get("MLOPS_LAKE_URL", "")
    if env.get(ENV_VAR, "local").strip().lower() == "production" and lake:
        return lake.rstrip("/") + "/" + name
    where = locations(dict(env))
    return str(getattr(where, local) if local else where.lake / name)
