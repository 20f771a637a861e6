"""Training data windows, the delay classifier, its metrics and the promotion gate.

Plain functions on frames: no Dagster, no MLflow, and no particular learning algorithm. The
classifier turns feature columns into a float matrix (a categorical level becomes its
position in the training levels) and leaves fitting, predicting and importances to
``lib.estimator``, the one module to edit to change the model.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from mlops_assets.lib import estimator, model_tags
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

    def keys(self) -> list[str]:
        """Every day of the window as a partition key, oldest first."""
        return [d.isoformat() for d in self.all_days()]

    def __str__(self) -> str:
        return model_tags.window_text(self.start, self.as_of)

    @classmethod
    def spanning(cls, start: date, end: date) -> TrainingWindow:
        """The window from ``start`` to ``end`` (inclusive), e.g. read back from a model's tag."""
        return cls(end, (end - start).days + 1, 1)


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


def input_example(model: DelayClassifier, frame: pd.DataFrame, rows: int = 5) -> pd.DataFrame:
    """The first rows of the model's features, numbers as floats (for the model signature).

    Floats, because any number may be missing at prediction time.
    """
    numeric = {c: "float64" for c in model.features if c not in CATEGORICAL_FEATURES}
    return frame[model.features].head(rows).astype(numeric)


def split_counts(data: pd.DataFrame) -> dict[str, Any]:
    """Rows per split and the share of delayed flights of a training set."""
    return {
        "train_rows": int((data[SPLIT_COLUMN] == "train").sum()),
        "validation_rows": int((data[SPLIT_COLUMN] == "validation").sum()),
        "positive_rate": round(float(data[LABEL_COLUMN].mean()), 4),
    }


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


@dataclass
class DelayClassifier:
    """A trained model plus what it needs to turn feature rows into probabilities.

    Generic over the learning algorithm: this class builds the float matrix the estimator
    (``lib.estimator``) learns from and predicts on, and the estimator does the rest.

    Attributes:
        model_text: The model serialized as text by ``estimator.fit`` (portable, picklable,
            stored as is in the scoring bundle's JSON).
        categories: Levels of each categorical feature seen in training, in code order; a
            level is coded as its position, an unseen or missing level as NaN.
        threshold: Probability above which a flight is predicted delayed.
        features: Feature columns, in training order.
    """

    model_text: str
    categories: dict[str, list[str]]
    threshold: float = 0.5
    features: list[str] = field(default_factory=lambda: list(FEATURE_COLUMNS))

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Models registered before the rename pickled the model text as ``booster_text``.
        if "booster_text" in state:
            state = {**state, "model_text": state["booster_text"]}
            del state["booster_text"]
        self.__dict__.update(state)

    def prepare(self, frame: pd.DataFrame) -> np.ndarray:
        """The float matrix of a frame's feature columns, exactly as in training."""
        missing = [c for c in self.features if c not in frame.columns]
        if missing:
            raise ValueError(f"feature columns missing from the input: {missing}")
        import numpy as np

        return self.matrix(
            {
                c: object_values(frame[c])
                if c in self.categories
                else frame[c].to_numpy(dtype="float64", na_value=np.nan)
                for c in self.features
            }
        )

    def matrix(self, columns: Mapping[str, Any]) -> np.ndarray:
        """The float matrix of feature columns given as arrays (no DataFrame needed).

        The one place features become model input, for training, batch predictions and the
        service alike. Categorical levels become their position in the training levels
        (unseen or missing -> NaN); numbers become floats (``None`` -> NaN).
        """
        import numpy as np

        first = columns[self.features[0]]
        matrix = np.empty((len(first), len(self.features)), dtype="float64")
        for j, name in enumerate(self.features):
            values = columns[name]
            if name in self.categories:
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
        return matrix

    def categorical_indices(self) -> list[int]:
        """Positions of the categorical features in the matrix."""
        return [j for j, name in enumerate(self.features) if name in self.categories]

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Probability that each flight arrives 15+ minutes late."""
        return estimator.predict(self.model_text, self.prepare(frame))

    def predict_columns(self, columns: Mapping[str, Any]) -> np.ndarray:
        """Probabilities for feature columns given as arrays: the path the service takes.

        Equal to ``predict_proba`` on a DataFrame of the same columns, bit for bit (tested).
        """
        return estimator.predict(self.model_text, self.matrix(columns))

    def importances(self) -> pd.DataFrame:
        """Columns ``feature`` and ``importance`` (the estimator's own measure), best first."""
        import pandas as pd

        pairs = estimator.importances(self.model_text, list(self.features))
        return pd.DataFrame(pairs, columns=["feature", "importance"])


@functools.lru_cache(maxsize=64)
def _level_codes(levels: tuple[str, ...]) -> dict[str, float]:
    return {level: float(i) for i, level in enumerate(levels)}


def train_classifier(train: pd.DataFrame, params: estimator.HyperParameters) -> DelayClassifier:
    """Fits the estimator on the training rows (deterministic for fixed params and data)."""
    categories = {
        c: sorted(train[c].dropna().astype(str).unique().tolist()) for c in CATEGORICAL_FEATURES
    }
    model = DelayClassifier(model_text="", categories=categories)
    model.model_text = estimator.fit(
        model.prepare(train),
        train[LABEL_COLUMN].astype(int).to_numpy(),
        features=list(model.features),
        categorical=model.categorical_indices(),
        params=params,
    )
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


def fit(
    data: pd.DataFrame, params: estimator.HyperParameters
) -> tuple[DelayClassifier, dict[str, float]]:
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

    Fields with a ``description`` are the gate's settings in the Dagster launchpad
    (``GateConfig`` is generated from them).
    """

    metric: str = field(
        default="roc_auc", metadata={"description": "Metric compared, higher is better."}
    )
    margin: float = field(
        default=0.005, metadata={"description": "Required improvement over the champion."}
    )
    min_roc_auc: float = field(
        default=0.60, metadata={"description": "Absolute floor for ROC AUC."}
    )
    min_pr_auc: float = field(default=0.30, metadata={"description": "Absolute floor for PR AUC."})

    @property
    def floors(self) -> dict[str, float]:
        """Absolute minimums every promoted model must reach, by metric."""
        return {"roc_auc": self.min_roc_auc, "pr_auc": self.min_pr_auc}


@dataclass(frozen=True)
class GateDecision:
    """The outcome of comparing a challenger with the champion on the same rows.

    Attributes:
        comparable: False when the two models do not score the same features: nothing was
            compared, and the champion must be retired or compared deliberately.
    """

    promote: bool
    reason: str
    challenger: dict[str, float]
    champion: dict[str, float] | None
    comparable: bool = True

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for metadata and tags."""
        return asdict(self)


def schema_mismatch(
    champion: DelayClassifier, challenger: DelayClassifier, columns: Sequence[str]
) -> str | None:
    """Why two models cannot be compared on rows with ``columns`` (None when they can)."""
    missing = sorted(set(champion.features) - set(columns))
    changed = champion.features != challenger.features
    problems = ([f"missing in the holdout {missing}"] if missing else []) + (
        ["feature lists differ"] if changed else []
    )
    return "; ".join(problems) or None


def judge(
    challenger: DelayClassifier,
    champion: DelayClassifier | None,
    holdout: pd.DataFrame,
    policy: GatePolicy,
    *,
    versions: tuple[str, str | None] = ("challenger", None),
) -> GateDecision:
    """Scores both models on the same holdout rows with the same code, then decides.

    Args:
        challenger: The new model.
        champion: The current champion (None: there is none; the challenger itself: it is
            already the champion, nothing to promote).
        holdout: The validation rows of the challenger's training set.
        policy: Floors, metric and margin.
        versions: Challenger and champion version, for the reasons.
    """
    scores = evaluate(challenger, holdout)
    if champion is None:
        return decide(scores, None, policy)
    if champion is challenger:
        return decide(scores, scores, policy)
    mismatch = schema_mismatch(champion, challenger, list(holdout.columns))
    if mismatch:
        reason = (
            f"feature schema drift between champion v{versions[1]} and challenger "
            f"v{versions[0]}: {mismatch}. Not promoting; compare or retire the champion "
            "deliberately."
        )
        return GateDecision(False, reason, scores, None, comparable=False)
    return decide(scores, evaluate(champion, holdout), policy)


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
