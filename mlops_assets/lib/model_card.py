"""The model card: what a champion is for, what it learned from, how good it is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops_assets.lib import model_tags

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class CardFacts:
    """Everything a model card states, gathered from the registry, MLflow and Dagster."""

    model_name: str
    version: str
    window: str
    data_md5: str
    data_rev: str
    metrics: dict[str, float]
    decision: str
    features: list[str]
    importances: list[tuple[str, float]]  # (feature, the estimator's importance), best first
    mlflow_run_id: str
    dagster_run_id: str
    git_commit: str
    params: dict[str, Any]


def card_facts(model_name: str, version: Any, run: Any, importances: pd.DataFrame) -> CardFacts:
    """The card's facts from a registered version, its MLflow run and its importances.

    Args:
        model_name: Registered model name.
        version: The MLflow model version (its tags hold the gate's decision).
        run: The MLflow run that trained it (tags, metrics, parameters).
        importances: ``feature_importance.csv`` of the run: feature, importance.
    """
    tags, data = run.data.tags, run.data
    # Models logged before the estimator module named the column `gain` (a rollback reaches them).
    values = importances["importance" if "importance" in importances else "gain"]
    decision = version.tags.get(model_tags.GATE, "?")
    return CardFacts(
        model_name=model_name,
        version=str(version.version),
        window=tags.get(model_tags.DATA_WINDOW, "?"),
        data_md5=tags.get(model_tags.DATA_DVC_MD5, "?"),
        data_rev=tags.get(model_tags.DATA_REGISTRY_REV, "?"),
        metrics={k: v for k, v in data.metrics.items() if k != "rows"},
        decision=f"{decision}: {version.tags.get(model_tags.GATE_REASON, '')}",
        features=list(importances["feature"]),
        importances=list(zip(importances["feature"], values, strict=True)),
        mlflow_run_id=run.info.run_id,
        dagster_run_id=tags.get(model_tags.DAGSTER_RUN_ID_RUN_TAG, "?"),
        git_commit=tags.get(model_tags.GIT_COMMIT, "?"),
        params={k: v for k, v in data.params.items() if k != "threshold"},
    )


def render_model_card(facts: CardFacts) -> str:
    """Markdown model card for the UI and the MLflow run's artifacts."""
    metrics = "\n".join(
        f"| {name} | {value:.4f} |" for name, value in sorted(facts.metrics.items())
    )
    top = "\n".join(f"| {name} | {_number(value)} |" for name, value in facts.importances[:10])
    params = ", ".join(f"`{k}={v}`" for k, v in sorted(facts.params.items()))
    return f"""# {facts.model_name} v{facts.version}

## Intended use
Predicts, when a flight from New York (EWR, JFK, LGA) is scheduled, the probability that it
arrives 15 or more minutes late. For planning and alerting on schedules; not for decisions
about individual passengers or crews. Only facts known before departure are inputs.

## Data
- Window: {facts.window} (time split; the last days are the validation holdout)
- Training set version: DVC md5 `{facts.data_md5}`, registry revision `{facts.data_rev}`
- Features ({len(facts.features)}): {", ".join(facts.features)}

## Metrics (validation holdout)
| metric | value |
|---|---|
{metrics}

## Gate decision
{facts.decision}

## Most important features
| feature | importance |
|---|---|
{top}

## Training
Parameters: {params}

## Known limitations
- Trained on 2013 flights from three New York airports; other airports and years are out of
  scope. Seasonal weather shifts the inputs: monitor drift and retrain.
- Flights whose plane is missing from the planes table (about 16 %) have no plane features.
- Cancelled and diverted flights have no label and are not learned from.

## Lineage
- MLflow run `{facts.mlflow_run_id}`
- Dagster run `{facts.dagster_run_id}`
- Project commit `{facts.git_commit}`
"""


def _number(value: float) -> str:
    # Importances are the estimator's own measure: gains in the thousands, or shares below 1.
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.4g}"
