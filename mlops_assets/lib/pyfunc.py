"""The MLflow pyfunc flavour of ``DelayClassifier`` (imported only when logging or loading).

Kept apart from ``modeling`` because subclassing ``PythonModel`` imports MLflow.
"""

from __future__ import annotations

from importlib.metadata import version

import mlflow.pyfunc
from mlflow.pyfunc import PythonModel

from mlops_assets.lib import estimator
from mlops_assets.lib.modeling import DelayClassifier

# Pinned from the running environment: inferring requirements costs ~8 s per log_model.
# The generic ones, then what the estimator (lib/estimator.py) needs to predict.
RUNTIME_PACKAGES = tuple(
    dict.fromkeys(
        ("pandas", "numpy", "scikit-learn", "pyarrow", "cloudpickle", *estimator.RUNTIME_PACKAGES)
    )
)


def pip_requirements() -> list[str]:
    """Exact versions of what the model needs at prediction time."""
    return [f"{name}=={version(name)}" for name in RUNTIME_PACKAGES] + [
        f"mlflow-skinny=={version('mlflow-skinny')}"
    ]


class DelayModel(PythonModel):
    """Predicts the probability that a flight arrives 15+ minutes late."""

    def __init__(self, classifier: DelayClassifier):
        self.classifier = classifier

    # No type hints: MLflow would try to derive the signature from them; it is given explicitly.
    def predict(self, context, model_input, params=None):
        """Probabilities for feature rows (a DataFrame with the feature columns)."""
        return self.classifier.predict_proba(model_input)


def load_classifier(model_uri: str, tracking_uri: str) -> DelayClassifier:
    """The ``DelayClassifier`` inside a logged or registered model.

    The tracking URI is always explicit: MLflow's default would create ``./mlflow.db``.
    """
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    model = mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
    if not isinstance(model, DelayModel):
        raise TypeError(f"{model_uri} is not a flight-delay model")
    return model.classifier
