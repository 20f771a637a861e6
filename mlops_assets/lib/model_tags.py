"""The MLflow vocabulary of the project: registry aliases and the tag keys it writes.

Every alias and ``mlops.*`` tag is named here once; the assets, the rollback and the tests
read and write them through these names.
"""

from collections.abc import Mapping
from datetime import date
from typing import Any

# Registry aliases (MLflow stages are deprecated).
CHAMPION = "champion"
CHALLENGER = "challenger"
# The version on live trial against the champion (lib/trials.py), while the trial runs.
TRIAL = "trial"

# Run tags: where a model's training data came from (the DVC data registry).
DATA_DVC_MD5 = "mlops.data.dvc_md5"
DATA_REGISTRY_REV = "mlops.data.registry_rev"
DATA_REGISTRY_PATH = "mlops.data.registry_path"
DATA_WINDOW = "mlops.data.window"
DATA_VALIDATION_START = "mlops.data.validation_start"
# Run tags: which code and environment trained it, and which asset.
GIT_COMMIT = "mlops.git_commit"
UV_LOCK_SHA256 = "mlops.uv_lock_sha256"
ASSET_KEY = "mlops.asset_key"
# Run tag set by dagster-mlflow: the Dagster run that owns the MLflow run.
DAGSTER_RUN_ID_RUN_TAG = "dagster_run_id"

# Model-version tags: the Dagster run, the gate's decision, promotions and rollbacks.
DAGSTER_RUN_ID = "mlops.dagster_run_id"
GATE = "mlops.gate"
GATE_REASON = "mlops.gate_reason"
PREVIOUS_CHAMPION = "mlops.previous_champion"
ROLLED_BACK = "mlops.rolled_back"
RESTORED_BY_ROLLBACK = "mlops.restored_by_rollback"

# Model-version tags of a live trial: how it started, and how it ended, when and by whom.
TRIAL_STATE = "mlops.trial"  # running, then promoted, retired or aborted
TRIAL_START_DAY = "mlops.trial.start_day"
TRIAL_CHAMPION = "mlops.trial.champion"
TRIAL_MODE = "mlops.trial.mode"
TRIAL_SHARE = "mlops.trial.share"
TRIAL_POLICY = "mlops.trial.policy"
TRIAL_REASON = "mlops.trial.reason"
TRIAL_ENDED = "mlops.trial.ended"

# A challenger the gate passed, waiting for a person's approval (lib/approval.py), and the
# model-version tags of its request: when it was asked, when it lapses, how it ended.
PENDING_APPROVAL = "pending_approval"
APPROVAL_STATE = "mlops.approval"  # pending, then approved, rejected, expired or superseded
APPROVAL_REQUESTED_AT = "mlops.approval.requested_at"
APPROVAL_EXPIRES_AT = "mlops.approval.expires_at"
APPROVAL_CHAMPION = "mlops.approval.champion"
APPROVAL_DECIDED = "mlops.approval.decided"

# The run tag holding the training window is written as "<start> .. <end>".
WINDOW_SEPARATOR = " .. "


def data_tags(training_set: Mapping[str, Any]) -> dict[str, str]:
    """The run tags naming a training set's version, from its materialization metadata."""
    return {
        DATA_DVC_MD5: str(training_set["dvc_md5"]),
        DATA_REGISTRY_REV: str(training_set["registry_rev"]),
        DATA_REGISTRY_PATH: str(training_set["registry_path"]),
        DATA_WINDOW: str(training_set["window"]),
        DATA_VALIDATION_START: str(training_set["validation_start"]),
    }


def window_text(start: date, end: date) -> str:
    """A training window as the ``DATA_WINDOW`` tag and the metadata write it."""
    return f"{start}{WINDOW_SEPARATOR}{end}"


def parse_window(text: str) -> tuple[date | None, date | None]:
    """The first and last day of a ``DATA_WINDOW`` tag (None where it is missing)."""
    start, _, end = text.partition(WINDOW_SEPARATOR)
    return (
        date.fromisoformat(start) if start else None,
        date.fromisoformat(end) if end else None,
    )
