"""The learning algorithm: the one module to edit to change the model.

Everything else (training windows, the feature matrix, the threshold, metrics, the champion
gate, the MLflow pyfunc, the service, the model card, ``reproduce``) is generic and calls only
what is defined here. A replacement module keeps these names and this contract:

- ``KIND``: the algorithm's name, shown as the kind of the assets that train or run it;
- ``RUNTIME_PACKAGES``: extra pip packages needed at prediction time (pinned into the MLflow
  model's requirements and installed in the service image);
- ``HyperParameters``: a frozen dataclass with a default for every field. A field with a
  ``description`` in its metadata is a training setting in the Dagster launchpad
  (``TrainingConfig`` is generated from it) and is logged to MLflow, from where
  ``reproduce`` reads it back; a field without one stays internal;
- ``fit(x, y, features=..., categorical=..., params=...) -> str``: trains on a float matrix
  and returns the model serialized as text. Categorical columns (indices in ``categorical``)
  hold level codes ``0 .. k-1`` as floats, NaN when missing or unseen; numeric columns may
  hold NaN. The result must be deterministic for the same data and parameters;
- ``predict(model_text, x) -> probabilities of class 1``, one per row, for the same kind of
  matrix;
- ``importances(model_text, features) -> [(feature, importance), ...]``: every feature, most
  important first.

The model text is stored in the classifier's JSON (scoring bundle) and in the pickled MLflow
model, so it must be a ``str``; a binary model can be base64-encoded. The contract is tested
in ``mlops_assets_tests/unit/test_estimator.py``.

This demo uses LightGBM rather than scikit-learn's HistGradientBoosting because it splits on
categoricals natively (carrier, route, ... without one-hot encoding), trains the 90-day window
in about two seconds on one thread, and is bit-for-bit deterministic with
``deterministic=True``, a fixed seed and thread count, which ``reproduce`` relies on. Its model
text is portable and diffable.

No Dagster or MLflow here, and the heavy imports (LightGBM, NumPy) happen inside the
functions: the code location imports this module for ``KIND`` and the config fields.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

KIND = "lightgbm"
RUNTIME_PACKAGES: tuple[str, ...] = ("lightgbm",)


@dataclass(frozen=True)
class HyperParameters:
    """LightGBM settings; those with a description are the Dagster ``TrainingConfig``."""

    n_estimators: int = field(default=200, metadata={"description": "Boosting rounds."})
    learning_rate: float = field(default=0.05, metadata={"description": "Shrinkage per round."})
    num_leaves: int = field(default=15, metadata={"description": "Leaves per tree."})
    min_child_samples: int = field(default=200, metadata={"description": "Minimum rows per leaf."})
    feature_fraction: float = field(
        default=0.9, metadata={"description": "Share of features per tree."}
    )
    cat_smooth: float = field(
        default=50.0, metadata={"description": "Smoothing of categorical splits."}
    )
    min_data_per_group: int = field(
        default=200, metadata={"description": "Minimum rows per category."}
    )
    seed: int = field(
        default=2013, metadata={"description": "Random seed (training is deterministic)."}
    )
    # Internal: one thread keeps training bit-for-bit reproducible across machines.
    threads: int = 1


def _lightgbm_params(params: HyperParameters) -> dict[str, Any]:
    """Parameters for ``lightgbm.train`` (deterministic)."""
    return {
        "objective": "binary",
        "learning_rate": params.learning_rate,
        "num_leaves": params.num_leaves,
        "min_child_samples": params.min_child_samples,
        "feature_fraction": params.feature_fraction,
        # Smoothing keeps high-cardinality categoricals (route) from memorizing noise.
        "cat_smooth": params.cat_smooth,
        "cat_l2": 20.0,
        "min_data_per_group": params.min_data_per_group,
        "seed": params.seed,
        "num_threads": params.threads,
        "deterministic": True,
        "force_row_wise": True,
        "verbosity": -1,
    }


def fit(
    x: np.ndarray,
    y: np.ndarray,
    *,
    features: list[str],
    categorical: list[int],
    params: HyperParameters,
) -> str:
    """Trains a binary classifier and returns it serialized as text.

    Args:
        x: Float matrix, one column per feature; categorical columns hold level codes
            ``0 .. k-1`` (NaN = missing), numeric columns may hold NaN.
        y: Labels 0/1, one per row.
        features: Column names, in matrix order.
        categorical: Indices of the categorical columns.
        params: The hyper-parameters.
    """
    import lightgbm as lgb

    dataset = lgb.Dataset(
        x,
        label=y,
        feature_name=features,
        categorical_feature=categorical,
        free_raw_data=True,
    )
    booster = lgb.train(_lightgbm_params(params), dataset, num_boost_round=params.n_estimators)
    return str(booster.model_to_string())


def predict(model_text: str, x: np.ndarray) -> np.ndarray:
    """Probability of class 1 for each row of a matrix shaped as in ``fit``."""
    import numpy as np

    return np.asarray(_booster(model_text).predict(x, num_threads=1), dtype="float64")


def importances(model_text: str, features: list[str]) -> list[tuple[str, float]]:
    """Total gain of each feature's splits, most important first."""
    gains = _booster(model_text).feature_importance("gain")
    pairs = [(name, float(gain)) for name, gain in zip(features, gains, strict=True)]
    return sorted(pairs, key=lambda pair: -pair[1])


@functools.lru_cache(maxsize=4)
def _booster(text: str) -> Any:
    # Parsing the model text costs milliseconds; a service scores one request at a time.
    import lightgbm as lgb

    return lgb.Booster(model_str=text)
