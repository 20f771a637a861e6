"""The MLflow pyfunc flavour of ``DelayClassifier`` (imported only when logging or loading).

Kept apart from ``modeling`` because subclassing ``PythonModel`` imports MLflow.

A model is logged from code (``pyfunc_model.py``, MLflow's models-from-code): the classifier
is stored as JSON among the model's artifacts and read back by ``DelayModel.load_context``, so
loading a model runs this project's code, never unpickled objects. Versions logged before
hold a pickled ``DelayModel`` instead; ``load_classifier`` still loads them (a rollback can
reach them).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel, PythonModelContext

from mlops_assets.lib import runtime
from mlops_assets.lib.modeling import DelayClassifier

# The file MLflow runs to build the model; it is copied into every logged model.
MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")
CLASSIFIER_ARTIFACT = "classifier"


def pip_requirements() -> list[str]:
    """Exact versions of what the model needs at prediction time (``lib.runtime``)."""
    return runtime.pinned_requirements(extra=("mlflow-skinny",))


class DelayModel(PythonModel):
    """Predicts the probability that a flight arrives 15+ minutes late."""

    def __init__(self, classifier: DelayClassifier | None = None):
        self.classifier = classifier

    def load_context(self, context: PythonModelContext) -> None:
        """Reads the classifier from the model's artifacts (models logged from code)."""
        path = context.artifacts.get(CLASSIFIER_ARTIFACT)
        if path is not None:
            self.classifier = DelayClassifier(**json.loads(Path(path).read_text()))

    # Typed input: MLflow takes a DataFrame hint as "validate against the given signature".
    def predict(
        self,
        context: PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> np.ndarray:
        """Probabilities for feature rows (a DataFrame with the feature columns)."""
        if self.classifier is None:
            raise RuntimeError("no classifier: load the model with mlflow.pyfunc.load_model")
        return self.classifier.predict_proba(model_input)


def log_model(
    classifier: DelayClassifier, example: pd.DataFrame, registered_model_name: str
) -> Any:
    """Logs the classifier into the active MLflow run and registers it as a new version.

    Args:
        classifier: The trained classifier.
        example: A few feature rows, typed as the model will receive them; the signature is
            inferred from them and they are stored as the input example.
        registered_model_name: The registered model that gets the new version.

    Returns:
        MLflow's ``ModelInfo`` (``registered_model_version`` is the new version).
    """
    from mlflow.models import infer_signature

    # The model's environment is its pinned requirements. By default MLflow also copies the
    # uv.lock and pyproject.toml of the working directory (this whole project, dev tools
    # included) into every model.
    os.environ.setdefault("MLFLOW_UV_AUTO_DETECT", "false")
    with tempfile.TemporaryDirectory() as folder:
        stored = Path(folder) / "classifier.json"
        stored.write_text(json.dumps(asdict(classifier)))
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=MODEL_CODE,
            artifacts={CLASSIFIER_ARTIFACT: str(stored)},
            signature=infer_signature(example, classifier.predict_proba(example)),
            input_example=example,
            pip_requirements=pip_requirements(),
        )
    info.registered_model_version = _register(registered_model_name, info.model_id)
    return info


def _register(name: str, model_id: str) -> Any:
    """Registers a logged model as a new version of ``name`` (created if missing).

    What ``log_model(registered_model_name=...)`` does, through the client: MLflow's fluent
    registration also prints "Successfully registered model" and "Created version" lines to
    stderr, which only MLflow's switch for all of its output (warnings too) turns off, and
    which would mix into the callers' own output.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import ALREADY_EXISTS, RESOURCE_ALREADY_EXISTS, ErrorCode
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    client = MlflowClient()
    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code not in (
            ErrorCode.Name(RESOURCE_ALREADY_EXISTS),
            ErrorCode.Name(ALREADY_EXISTS),
        ):
            raise
    version = client.create_model_version(name, f"models:/{model_id}", model_id=model_id)
    # As the fluent registration does: the logged model lists its versions (MLflow UI).
    made = [{"name": version.name, "version": version.version}]
    client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(made)})
    return version.version


def load_classifier(model_uri: str, tracking_uri: str) -> DelayClassifier:
    """The ``DelayClassifier`` inside a logged or registered model, from code or pickled.

    The tracking URI is always explicit: MLflow's default would create ``./mlflow.db``.
    """
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    model = mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
    if not isinstance(model, DelayModel) or model.classifier is None:
        raise TypeError(f"{model_uri} is not a flight-delay model")
    return model.classifier
