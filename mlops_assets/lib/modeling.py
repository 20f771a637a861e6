"""Training data windows, the delay classifier, its metrics and the promotion gate.

Plain functions on frames: no Dagster, no MLflow. LightGBM is used (not scikit-learn's
HistGradientBoosting) because it handles pandas categoricals natively (carrier, route, ...
without one-hot encoding), trains the 90-day window in about a second on two cores, and is
bit-for-bit deterministic with ``deterministic=True`` and a fixed seed and thread count, which
``reproduce`` relies on.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from mlops_assets.lib.features import (
    CATEGORICAL_FEATURES,
    FEATURE_COLUMNS,
    LABEL_COLUMN,
    object_values,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

SPLIT_COLUMN = "split"
MIN_ROWS_PER_SPLIT = 200


class TrainingDataError(ValueError):
    """The training window cannot produce a fair model (no data, one class, too few rows)."""


@dataclass(frozen=True)
class TrainingWindow:
    """Days of features a model learns from: ``days`` days ending at ``as_of`` (inclusive).

    The last ``validation_days`` are held out for validation: the split is by time, never
    shuffled, so validation always lies after training, as production data will.
    """

    as_of: date
    days: int = 60
    validation_days: int = 14

    def __post_init__(self) -> None:
        if self.days < 2 or not 0 < self.validation_days < self.days:
            raise ValueError(
                f"window needs days >= 2 and 0 < validation_days < days, got {self.days} "
                f"and {self.validation_days}"
            )

    @property
    def start(self) -> date:
        """First day of the window."""
        return self.as_of - timedelta(days=self.days - 1)

    @property
    def validation_start(self) -> date:
        """First day held out for validation."""
        return self.as_of - timedelta(days=self.validation_days - 1)

    def all_days(self) -> list[date]:
        """Every day of the window, oldest first."""
        return [self.start + timedelta(days=i) for i in range(self.days)]


def assemble_training_set(frames: dict[str, pd.DataFrame], window: TrainingWindow) -> pd.DataFrame:
    """Concatenates the window's feature days, keeps labelled rows and adds the time split.

    Args:
        frames: Feature frames by day (``YYYY-MM-DD``); missing days are allowed.
        window: The window (only its days are used).

    Raises:
        TrainingDataError: if a split is empty, has too few rows or only one class.
    """
    import pandas as pd

    wanted = {d.isoformat() for d in window.all_days()}
    used = [frames[k] for k in sorted(frames) if k in wanted]
    if not used:
        raise TrainingDataError(f"no feature days in the window {window.start} .. {window.as_of}")
    data = pd.concat(used, ignore_index=True)
    data = data[data[LABEL_COLUMN].notna()].reset_index(drop=True)
    validation = data["flight_date"] >= window.validation_start.isoformat()
    data[SPLIT_COLUMN] = validation.map({True: "validation", False: "train"})
    check_trainable(data)
    return data


def check_trainable(data: pd.DataFrame) -> None:
    """Raises ``TrainingDataError`` unless both splits have enough rows of both classes."""
    for split in ("train", "validation"):
        part = data[data[SPLIT_COLUMN] == split]
        if len(part) < MIN_ROWS_PER_SPLIT:
            raise TrainingDataError(
                f"{split} split has {len(part)} labelled rows; at least {MIN_ROWS_PER_SPLIT} "
                "are needed"
            )
        classes = sorted(int(c) for c in part[LABEL_COLUMN].unique())
        if classes != [0, 1]:
            raise TrainingDataError(
                f"{split} split has a single class ({classes}): a classifier cannot learn or "
                "be evaluated on it"
            )


@dataclass(frozen=True)
class HyperParameters:
    """LightGBM settings (see ``TrainingConfig`` for their descriptions)."""

    n_estimators: int = 200
    learning_rate: float = 0.05
    num_leaves: int = 15
    min_child_samples: int = 200
    feature_fraction: float = 0.9
    cat_smooth: float = 50.0
    min_data_per_group: int = 200
    seed: int = 2013
    threads: int = 1

    def lightgbm(self) -> dict[str, Any]:
        """Parameters for ``lightgbm.train`` (deterministic)."""
        return {
            "objective": "binary",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_child_samples": self.min_child_samples,
            "feature_fraction": self.feature_fraction,
            # Smoothing keeps high-cardinality categoricals (route) from memorizing noise.
            "cat_smooth": self.cat_smooth,
            "cat_l2": 20.0,
            "min_data_per_group": self.min_data_per_group,
            "seed": self.seed,
            "num_threads": self.threads,
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
        }


@dataclass
class DelayClassifier:
    """A trained booster plus what it needs to turn feature rows into probabilities.

    Attributes:
        booster_text: The LightGBM model as text (portable, diffable, picklable).
        categories: Levels of each categorical feature seen in training; unseen levels at
            prediction time become missing, as LightGBM expects.
        threshold: Probability above which a flight is predicted delayed.
        features: Feature columns, in training order.
    """

    booster_text: str
    categories: dict[str, list[str]]
    threshold: float = 0.5
    features: list[str] = field(default_factory=lambda: list(FEATURE_COLUMNS))

    def prepare(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Selects and types the feature columns exactly as in training."""
        import pandas as pd

        missing = [c for c in self.features if c not in frame.columns]
        if missing:
            raise ValueError(f"feature columns missing from the input: {missing}")
        out = frame[self.features].copy()
        for column in CATEGORICAL_FEATURES:
            if column in out:
                out[column] = pd.Categorical(
                    out[column].astype("string"), categories=self.categories[column]
                )
        for column in self.features:
            if column not in CATEGORICAL_FEATURES:
                out[column] = out[column].astype("float64")
        return out

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Probability that each flight arrives 15+ minutes late."""
        missing = [c for c in self.features if c not in frame.columns]
        if missing:
            raise ValueError(f"feature columns missing from the input: {missing}")
        import numpy as np

        return self.predict_columns(
            {
                c: object_values(frame[c])
                if c in CATEGORICAL_FEATURES
                else frame[c].to_numpy(dtype="float64", na_value=np.nan)
                for c in self.features
            }
        )

    def predict_columns(self, columns: Mapping[str, Any]) -> np.ndarray:
        """Probabilities for feature columns given as arrays (no DataFrame needed).

        The path both the pipeline and the service take. Categorical levels become their
        position in the training levels (unseen or missing -> NaN), exactly the codes
        LightGBM derives from pandas categoricals in training, so the result equals a
        prediction on the prepared DataFrame bit for bit (tested).
        """
        import numpy as np

        first = columns[self.features[0]]
        matrix = np.empty((len(first), len(self.features)), dtype="float64")
        for j, name in enumerate(self.features):
            values = columns[name]
            if name in CATEGORICAL_FEATURES:
                codes = _level_codes(tuple(self.categories[name]))
                matrix[:, j] = [
                    codes.get(v, np.nan) if isinstance(v, str) else np.nan for v in values
                ]
            else:
                matrix[:, j] = np.asarray(
                    [np.nan if v is None else v for v in values]
                    if isinstance(values, list)
                    else values,
                    dtype="float64",
                )
        booster = _booster(self.booster_text)
        return np.asarray(booster.predict(matrix, num_threads=1), dtype="float64")

    def importances(self) -> pd.DataFrame:
        """Gain and split importances per feature, most important first."""
        import lightgbm as lgb
        import pandas as pd

        booster = lgb.Booster(model_str=self.booster_text)
        return (
            pd.DataFrame(
                {
                    "feature": booster.feature_name(),
                    "gain": booster.feature_importance("gain"),
                    "splits": booster.feature_importance("split"),
                }
            )
            .sort_values("gain", ascending=False)
            .reset_index(drop=True)
        )


@functools.lru_cache(maxsize=64)
def _level_codes(levels: tuple[str, ...]) -> dict[str, float]:
    return {level: float(i) for i, level in enumerate(levels)}


@functools.lru_cache(maxsize=4)
def _booster(text: str) -> Any:
    # Parsing the model text costs milliseconds; a service scores one request at a time.
    import lightgbm as lgb

    return lgb.Booster(model_str=text)


def train_classifier(train: pd.DataFrame, params: HyperParameters) -> DelayClassifier:
    """Fits LightGBM on the training rows (deterministic for fixed params and data)."""
    import lightgbm as lgb

    categories = {
        c: sorted(train[c].dropna().astype(str).unique().tolist()) for c in CATEGORICAL_FEATURES
    }
    model = DelayClassifier(booster_text="", categories=categories)
    x = model.prepare(train)
    y = train[LABEL_COLUMN].astype(int).to_numpy()
    dataset = lgb.Dataset(x, label=y, categorical_feature=CATEGORICAL_FEATURES, free_raw_data=True)
    booster = lgb.train(params.lightgbm(), dataset, num_boost_round=params.n_estimators)
    model.booster_text = booster.model_to_string()
    return model


def best_f1_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The probability threshold that maximizes F1 (chosen on validation data)."""
    import numpy as np
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(y, p)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))])


def evaluate(model: DelayClassifier, frame: pd.DataFrame) -> dict[str, float]:
    """The metrics every model is judged by, on the given labelled rows.

    Returns ROC AUC, PR AUC (average precision), log loss, and precision, recall and F1 at the
    model's threshold, plus the positive rate and the predicted-positive rate.
    """
    import numpy as np
    from sklearn.metrics import (
        average_precision_score,
        f1_score,
        log_loss,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    y = frame[LABEL_COLUMN].astype(int).to_numpy()
    p = model.predict_proba(frame)
    predicted = (p >= model.threshold).astype(int)
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "log_loss": float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7))),
        "precision": float(precision_score(y, predicted, zero_division=0)),
        "recall": float(recall_score(y, predicted, zero_division=0)),
        "f1": float(f1_score(y, predicted, zero_division=0)),
        "threshold": float(model.threshold),
        "positive_rate": float(y.mean()),
        "predicted_positive_rate": float(predicted.mean()),
        "rows": float(len(y)),
    }


def fit(data: pd.DataFrame, params: HyperParameters) -> tuple[DelayClassifier, dict[str, float]]:
    """Trains on the train split, picks the threshold and scores on the validation split."""
    train = data[data[SPLIT_COLUMN] == "train"]
    validation = data[data[SPLIT_COLUMN] == "validation"]
    model = train_classifier(train, params)
    y = validation[LABEL_COLUMN].astype(int).to_numpy()
    model.threshold = best_f1_threshold(y, model.predict_proba(validation))
    return model, evaluate(model, validation)


@dataclass(frozen=True)
class GatePolicy:
    """When a challenger replaces the champion.

    Attributes:
        metric: The metric compared (higher is better).
        margin: How much the challenger must beat the champion by.
        floors: Absolute minimums every promoted model must reach.
    """

    metric: str = "roc_auc"
    margin: float = 0.005
    floors: dict[str, float] = field(default_factory=lambda: {"roc_auc": 0.60, "pr_auc": 0.30})


@dataclass(frozen=True)
class GateDecision:
    """The outcome of comparing a challenger with the champion on the same rows."""

    promote: bool
    reason: str
    challenger: dict[str, float]
    champion: dict[str, float] | None

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for metadata and tags."""
        return asdict(self)


def decide(
    challenger: dict[str, float], champion: dict[str, float] | None, policy: GatePolicy
) -> GateDecision:
    """Promote when the floors pass and the challenger beats the champion by the margin."""
    below = [
        f"{name} {challenger.get(name, float('nan')):.4f} < floor {floor:.4f}"
        for name, floor in policy.floors.items()
        if not challenger.get(name, float("-inf")) >= floor
    ]
    if below:
        return GateDecision(False, "below floor: " + "; ".join(below), challenger, champion)
    if champion is None:
        return GateDecision(True, "no champion yet and the floors pass", challenger, None)
    new, old = challenger[policy.metric], champion[policy.metric]
    if new >= old + policy.margin:
        return GateDecision(
            True,
            f"{policy.metric} {new:.4f} beats champion {old:.4f} by >= {policy.margin}",
            challenger,
            champion,
        )
    return GateDecision(
        False,
        f"{policy.metric} {new:.4f} does not beat champion {old:.4f} by {policy.margin}",
        challenger,
        champion,
    )
