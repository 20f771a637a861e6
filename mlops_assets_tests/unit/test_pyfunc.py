"""The MLflow model of the classifier: logged quietly from code, and every version loads.

The tests log into one SQLite store of their own.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest

from mlops_assets.lib import estimator, modeling, pyfunc, runtime
from mlops_assets.lib.features import CATEGORICAL_FEATURES, LABEL_COLUMN, build_flight_features
from mlops_assets_tests.conftest import validated_day


@pytest.fixture(scope="module")
def features(tables) -> pd.DataFrame:
    from mlops_assets.lib import contracts

    planes = contracts.validate(tables["planes"], contracts.planes_schema(), source="planes")
    frame = build_flight_features(*validated_day(tables, date(2013, 1, 3)), planes)
    return frame[frame[LABEL_COLUMN].notna()].reset_index(drop=True)


@pytest.fixture(scope="module")
def classifier(features: pd.DataFrame) -> modeling.DelayClassifier:
    model = modeling.train_classifier(features, estimator.HyperParameters(n_estimators=10))
    model.threshold = 0.3
    return model


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A tracking store of this module: its URI and an experiment."""
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    created = mlflow.create_experiment("pyfunc", artifact_location=(folder / "a").as_uri())
    return uri, created


@pytest.fixture
def store(experiment: tuple[str, str]) -> Iterator[str]:
    """The module's tracking store with an active run; yields its URI."""
    uri, experiment_id = experiment
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    with mlflow.start_run(experiment_id=experiment_id):
        yield uri


def example(classifier: modeling.DelayClassifier, features: pd.DataFrame) -> pd.DataFrame:
    numbers = [c for c in classifier.features if c not in CATEGORICAL_FEATURES]
    return features[classifier.features].head(5).astype(dict.fromkeys(numbers, "float64"))


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name}: {record.getMessage()}")


def test_logging_a_model_says_nothing(store: str, classifier, features, capfd):
    records = Records()
    logger = logging.getLogger("mlflow")  # MLflow's loggers do not propagate to the root
    logger.addHandler(records)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # Hidden from users by default, and raised inside MLflow's own store.
            warnings.simplefilter("ignore", DeprecationWarning)
            info = pyfunc.log_model(classifier, example(classifier, features), "flight_delay")
    finally:
        logger.removeHandler(records)
    assert [f"{w.category.__name__}: {w.message}" for w in caught] == []
    assert records.lines == []
    # Nor the lines MLflow prints itself when it registers a model and creates a version.
    printed = capfd.readouterr().err
    assert "Successfully registered model" not in printed and "Created version" not in printed
    assert info.registered_model_version is not None


def test_defining_the_model_class_says_nothing():
    # MLflow checks the predict method's type hints when the class is defined, on import: a
    # fresh interpreter with the default warning filters shows what a user would see.
    done = subprocess.run(
        [sys.executable, "-c", "import mlops_assets.lib.pyfunc"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stderr) == (0, "")


def test_the_model_is_code_and_json_with_pinned_requirements(store: str, classifier, features):
    info = pyfunc.log_model(classifier, example(classifier, features), "flight_delay")
    folder = Path(mlflow.artifacts.download_artifacts(info.model_uri))
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert "python_model.pkl" not in files  # nothing to unpickle
    assert {"pyfunc_model.py", "artifacts/classifier.json"} <= files
    assert not files & {"uv.lock", "pyproject.toml"}  # the model's environment is its pins
    requirements = (folder / "requirements.txt").read_text().split()
    assert requirements == runtime.pinned_requirements(extra=("mlflow-skinny",))
    assert any(line.startswith("pip<=") for line in (folder / "conda.yaml").read_text().split())

    loaded = pyfunc.load_classifier(f"models:/flight_delay/{info.registered_model_version}", store)
    assert loaded == classifier
    served = mlflow.pyfunc.load_model(info.model_uri)
    rows = example(classifier, features)
    assert list(served.predict(rows)) == list(classifier.predict_proba(rows))


def test_versions_logged_as_pickles_still_load(store: str, classifier, features):
    # As logged before models from code, by a version that still named the text booster_text.
    old = modeling.DelayClassifier(**vars(classifier))
    state: dict[str, Any] = old.__dict__
    state["booster_text"] = state.pop("model_text")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=pyfunc.DelayModel(old),
            pip_requirements=pyfunc.pip_requirements(),
            registered_model_name="flight_delay",
        )
    loaded = pyfunc.load_classifier(f"models:/flight_delay/{info.registered_model_version}", store)
    assert loaded == classifier
