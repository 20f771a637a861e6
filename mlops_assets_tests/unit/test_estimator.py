"""The estimator contract: what any replacement of ``lib/estimator.py`` must satisfy.

Only the module's public names are used (``KIND``, ``RUNTIME_PACKAGES``, ``HyperParameters``,
``fit``, ``predict``, ``importances``), never the internals of one algorithm, so these tests
hold for LightGBM, scikit-learn's HistGradientBoosting or anything else a team swaps in.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import subprocess
import sys
from importlib.metadata import version

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from mlops_assets.lib import estimator, modeling
from mlops_assets.lib.features import CATEGORICAL_FEATURES, FEATURE_COLUMNS, LABEL_COLUMN

FEATURES = ["carrier", "route", "temp", "distance"]
CATEGORICAL = [0, 1]
ROWS = 4000


def _matrix(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Delay depends on temperature and carrier; ~10 % of every column is missing."""
    rng = np.random.default_rng(seed)
    x = np.column_stack(
        [
            rng.integers(0, 4, rows).astype("float64"),  # carrier: 4 levels
            rng.integers(0, 30, rows).astype("float64"),  # route: 30 levels
            rng.normal(size=rows),
            rng.uniform(100, 2500, rows),
        ]
    )
    logit = 1.5 * np.nan_to_num(x[:, 2]) + (x[:, 0] == 1) - 1
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    x[rng.random(x.shape) < 0.1] = np.nan
    return x, y


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return _matrix(ROWS, seed=0)


@pytest.fixture(scope="module")
def model_text(data) -> str:
    x, y = data
    return estimator.fit(
        x, y, features=FEATURES, categorical=CATEGORICAL, params=estimator.HyperParameters()
    )


def test_the_module_declares_its_kind_packages_and_parameters():
    assert isinstance(estimator.KIND, str) and estimator.KIND
    assert isinstance(estimator.RUNTIME_PACKAGES, tuple)
    for name in estimator.RUNTIME_PACKAGES:
        assert version(name)  # installed: pinned into the model's and the image's requirements
    assert dataclasses.is_dataclass(estimator.HyperParameters)
    params = estimator.HyperParameters()  # every field has a default
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.seed = 1  # type: ignore[misc]
    for spec in dataclasses.fields(estimator.HyperParameters):
        assert isinstance(spec.metadata.get("description", ""), str)


def test_importing_the_module_loads_no_heavy_library():
    heavy = ("numpy", "pandas", "sklearn", "lightgbm", "xgboost", "torch", "dagster", "mlflow")
    code = (
        "import sys, mlops_assets.lib.estimator; "
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "", f"importing lib.estimator loads {loaded}"


def test_fit_returns_text_and_predict_probabilities(data, model_text):
    x, y = data
    assert isinstance(model_text, str) and model_text
    p = estimator.predict(model_text, x)
    assert isinstance(p, np.ndarray)
    assert p.shape == (len(x),)
    assert np.isfinite(p).all()
    assert ((p >= 0) & (p <= 1)).all()
    assert roc_auc_score(y, p) > 0.7  # it learns the signal


def test_missing_values_are_accepted_in_every_column(model_text):
    x, _ = _matrix(50, seed=1)
    x[0, :] = np.nan  # nothing known
    x[1, CATEGORICAL] = np.nan  # unseen or missing levels
    x[2, 2:] = np.nan  # missing numbers
    p = estimator.predict(model_text, x)
    assert p.shape == (50,)
    assert np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
    assert estimator.predict(model_text, x[:1]).shape == (1,)  # one row, as the service asks


def test_training_is_deterministic(data, model_text):
    x, y = data
    again = estimator.fit(
        x, y, features=FEATURES, categorical=CATEGORICAL, params=estimator.HyperParameters()
    )
    test, _ = _matrix(500, seed=2)
    np.testing.assert_array_equal(
        estimator.predict(again, test), estimator.predict(model_text, test)
    )


def test_importances_name_every_feature_most_important_first(model_text):
    pairs = estimator.importances(model_text, FEATURES)
    assert sorted(name for name, _ in pairs) == sorted(FEATURES)
    values = [value for _, value in pairs]
    assert all(isinstance(value, float) for value in values)
    assert values == sorted(values, reverse=True)


def _frame(rows: int, seed: int) -> pd.DataFrame:
    """Feature-shaped rows as the pipeline holds them (categoricals as strings, missing values)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({c: rng.normal(size=rows) for c in FEATURE_COLUMNS})
    for column in CATEGORICAL_FEATURES:
        values = rng.choice(["A", "B", "C"], size=rows).astype(object)
        values[rng.random(rows) < 0.05] = None
        frame[column] = pd.array(values, dtype="string")
    frame.loc[rng.random(rows) < 0.05, "temp"] = np.nan
    logit = 1.5 * frame["temp"].fillna(0) + (frame["carrier"] == "A").fillna(False) - 1
    frame[LABEL_COLUMN] = pd.array((rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int))
    return frame


def test_a_classifier_survives_json_and_pickle_with_identical_predictions():
    classifier = modeling.train_classifier(_frame(2000, seed=3), estimator.HyperParameters())
    rows = _frame(300, seed=4)
    rows.loc[0, "carrier"] = "ZZ"  # never seen in training
    expected = classifier.predict_proba(rows)
    # The scoring bundle stores the classifier as JSON; MLflow pickles it.
    loaded = modeling.DelayClassifier(**json.loads(json.dumps(dataclasses.asdict(classifier))))
    np.testing.assert_array_equal(loaded.predict_proba(rows), expected)
    np.testing.assert_array_equal(
        pickle.loads(pickle.dumps(classifier)).predict_proba(rows), expected
    )
    assert set(classifier.importances()["feature"]) == set(FEATURE_COLUMNS)


def test_training_config_exposes_exactly_the_described_parameters():
    from mlops_assets.defs.training import TrainingConfig
    from mlops_assets.lib.reproduce import _hyper_parameters

    described = {
        spec.name: spec
        for spec in dataclasses.fields(estimator.HyperParameters)
        if "description" in spec.metadata
    }
    config = TrainingConfig()
    assert set(type(config).model_fields) == set(described)
    for name, spec in described.items():
        assert type(config).model_fields[name].description == spec.metadata["description"]
        assert getattr(config, name) == spec.default
    params = estimator.HyperParameters(**config.model_dump())
    assert params == estimator.HyperParameters()
    # MLflow logs the config as strings; reproduce reads them back to the same parameters.
    logged = {name: str(value) for name, value in config.model_dump().items()}
    assert _hyper_parameters({**logged, "threshold": "0.3"}) == params
