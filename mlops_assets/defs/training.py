"""Training: a versioned training set, a tracked candidate, the champion gate, the model card."""

import dataclasses
import json
from collections.abc import Iterator
from datetime import date
from typing import TYPE_CHECKING, Any, get_type_hints

import dagster as dg
from pydantic import Field, create_model

from mlops_assets import settings
from mlops_assets.defs.features import flight_features
from mlops_assets.lib import estimator, model_tags
from mlops_assets.resources.data_registry import DataRegistryResource
from mlops_assets.resources.lake import LakeReader
from mlops_assets.resources.tracking import MlflowTracking

TRAINING_GROUP = "training"
TRAINING_SET_PATH = f"training_set/{settings.MODEL_NAME}.parquet"
# MLflow unreachable or busy: try again a little later before failing the run.
TRACKING_RETRY = dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL)


class TrainingSetConfig(dg.Config):
    """Which days the model learns from."""

    days: int = Field(default=60, description="Days of features in the window.")
    validation_days: int = Field(
        default=14, description="Last days of the window held out for validation."
    )
    as_of: str = Field(
        default="",
        description="Last day of the window (YYYY-MM-DD); empty = latest feature day.",
    )


def _config_fields(parameters: type) -> dict[str, Any]:
    """Pydantic fields of the dataclass fields that carry a ``description`` in their metadata."""
    hints = get_type_hints(parameters)
    fields: dict[str, Any] = {}
    for spec in dataclasses.fields(parameters):
        if "description" not in spec.metadata:
            continue  # internal: not a training setting
        if spec.default is dataclasses.MISSING:
            raise TypeError(f"{parameters.__name__}.{spec.name} needs a default value")
        fields[spec.name] = (
            hints[spec.name],
            Field(default=spec.default, description=spec.metadata["description"]),
        )
    return fields


# Generated, not written out: the estimator module (lib/estimator.py) owns its settings, their
# defaults and descriptions, so swapping the algorithm changes the launchpad with it.
if TYPE_CHECKING:  # mypy cannot see generated fields: it checks the config as a plain Config
    TrainingConfig = dg.Config
else:
    TrainingConfig = create_model(
        "TrainingConfig",
        __base__=dg.Config,
        __doc__=f"Settings of the {estimator.KIND} estimator (HyperParameters, lib/estimator.py).",
        __module__=__name__,
        **_config_fields(estimator.HyperParameters),
    )


class GateConfig(dg.Config):
    """When a challenger replaces the champion."""

    metric: str = Field(default="roc_auc", description="Metric compared, higher is better.")
    margin: float = Field(default=0.005, description="Required improvement over the champion.")
    min_roc_auc: float = Field(default=0.60, description="Absolute floor for ROC AUC.")
    min_pr_auc: float = Field(default=0.30, description="Absolute floor for PR AUC.")


def _latest_metadata(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict[str, Any]:
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        raise dg.Failure(f"{key.to_user_string()} has not been materialized yet")
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


@dg.asset(group_name=TRAINING_GROUP, deps=[flight_features], kinds={"pandas", "dvc"})
def training_set(
    context: dg.AssetExecutionContext,
    config: TrainingSetConfig,
    lake: LakeReader,
    data_registry: DataRegistryResource,
) -> dg.Output[Any]:
    """The labelled rows of a window of feature days, split by time, versioned in DVC.

    The window ends at `as_of` (default: the latest feature day) and spans `days` days; the
    last `validation_days` are the validation holdout, always later than the training rows.
    Missing days are allowed; a window with no data or a split with one class fails with the
    reason. The snapshot is committed to the data registry: `dvc_md5` and `registry_rev`
    restore it bit for bit and are tagged on every model trained from it.
    """
    from mlops_assets.lib.fingerprints import frame_fingerprint
    from mlops_assets.lib.modeling import TrainingDataError, TrainingWindow, assemble_training_set
    from mlops_assets.lib.storage import to_parquet_bytes

    if config.as_of:
        as_of = date.fromisoformat(config.as_of)
    else:
        days = context.instance.get_materialized_partitions(flight_features.key)
        if not days:
            raise dg.Failure("no flight_features partitions are materialized yet")
        as_of = date.fromisoformat(max(days))
    window = TrainingWindow(as_of, config.days, config.validation_days)
    frames = lake.read_partitions("flight_features", [d.isoformat() for d in window.all_days()])
    try:
        data = assemble_training_set(frames, window)
    except TrainingDataError as error:
        raise dg.Failure(f"training_set {window.start} .. {window.as_of}: {error}") from error
    saved = data_registry.open().commit(
        TRAINING_SET_PATH,
        to_parquet_bytes(data),
        f"training_set {window.start} .. {window.as_of} (dagster run {context.run.run_id})",
    )
    train = data[data["split"] == "train"]
    validation = data[data["split"] == "validation"]
    return dg.Output(
        data,
        data_version=dg.DataVersion(saved.md5),
        metadata={
            "dagster/row_count": len(data),
            "window": f"{window.start} .. {window.as_of}",
            "window_start": window.start.isoformat(),
            "window_end": window.as_of.isoformat(),
            "validation_start": window.validation_start.isoformat(),
            "days_present": len(frames),
            "train_rows": len(train),
            "validation_rows": len(validation),
            "positive_rate": round(float(data["is_delayed"].mean()), 4),
            "dvc_md5": saved.md5,
            "registry_rev": saved.rev,
            "registry_path": TRAINING_SET_PATH,
            "content_hash": frame_fingerprint(data),
        },
    )


@dg.asset(
    group_name=TRAINING_GROUP,
    retry_policy=TRACKING_RETRY,
    automation_condition=dg.AutomationCondition.eager(),
    kinds={estimator.KIND, "mlflow"},
)
def candidate_model(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    tracking: MlflowTracking,
    training_set: Any,
) -> dg.MaterializeResult:
    """A delay classifier trained on the training set, tracked and registered in MLflow.

    The learning algorithm is `lib/estimator.py` (its name is this asset's kind); this asset's
    config is the estimator's `HyperParameters`.

    One MLflow run per training (ended FINISHED or FAILED on every path), tagged with the
    Dagster run, the training-set version (DVC md5 + registry revision), the project commit
    and the hash of `uv.lock`. Logs parameters, validation metrics (ROC AUC, PR AUC, log loss,
    precision/recall/F1 at the F1-best threshold), feature importances (CSV + plot), and the
    model with signature, input example and pinned requirements; registers it as a new
    version with the `challenger` alias.
    """
    import mlflow
    from mlflow.models import infer_signature

    from mlops_assets.lib import modeling
    from mlops_assets.lib.pyfunc import DelayModel, pip_requirements

    data_meta = _latest_metadata(context.instance, dg.AssetKey("training_set"))
    params = estimator.HyperParameters(**config.model_dump())
    tags = {
        model_tags.DATA_DVC_MD5: str(data_meta["dvc_md5"]),
        model_tags.DATA_REGISTRY_REV: str(data_meta["registry_rev"]),
        model_tags.DATA_REGISTRY_PATH: str(data_meta["registry_path"]),
        model_tags.DATA_WINDOW: str(data_meta["window"]),
        model_tags.DATA_VALIDATION_START: str(data_meta["validation_start"]),
    }
    client = tracking.client()
    registered = None
    with tracking.training_run(context, tags) as run:
        model, metrics = modeling.fit(training_set, params)
        mlflow.log_params({**config.model_dump(), "threshold": model.threshold})
        mlflow.log_metrics(metrics)
        importances = model.importances()
        mlflow.log_text(importances.to_csv(index=False), "feature_importance.csv")
        mlflow.log_figure(_importance_plot(importances), "feature_importance.png")
        # Numbers as floats in the signature: any of them may be missing at prediction time.
        example = (
            training_set[model.features]
            .head(5)
            .astype(
                {c: "float64" for c in model.features if c not in modeling.CATEGORICAL_FEATURES}
            )
        )
        try:
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=DelayModel(model),
                signature=infer_signature(example, model.predict_proba(example)),
                input_example=example,
                pip_requirements=pip_requirements(),
                registered_model_name=tracking.model_name,
            )
            registered = str(info.registered_model_version)
            client.set_registered_model_alias(
                tracking.model_name, model_tags.CHALLENGER, registered
            )
            client.set_model_version_tag(
                tracking.model_name, registered, model_tags.DAGSTER_RUN_ID, context.run.run_id
            )
        except BaseException:
            # No half-registered version: a version without its alias is removed again.
            if registered is not None:
                client.delete_model_version(tracking.model_name, registered)
            raise
        run_id = run.info.run_id
    return dg.MaterializeResult(
        metadata={
            "mlflow_run_id": run_id,
            "model_name": tracking.model_name,
            "model_version": registered,
            "model_uri": f"models:/{tracking.model_name}/{registered}",
            "threshold": round(model.threshold, 4),
            **{k: round(v, 4) for k, v in metrics.items()},
            "training_set_md5": tags[model_tags.DATA_DVC_MD5],
            "training_set_rev": tags[model_tags.DATA_REGISTRY_REV],
            "feature_importance": dg.MetadataValue.md(
                importances.head(15).to_markdown(index=False)
            ),
        }
    )


def _importance_plot(importances: Any) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    top = importances.head(15).iloc[::-1]
    figure, axis = plt.subplots(figsize=(7, 5))
    axis.barh(top["feature"], top["importance"])
    axis.set_xlabel(f"importance ({estimator.KIND})")
    axis.set_title("Feature importance")
    figure.tight_layout()
    plt.close(figure)
    return figure


@dg.asset(
    group_name=TRAINING_GROUP,
    deps=["candidate_model"],
    output_required=False,
    automation_condition=dg.AutomationCondition.eager(),
    kinds={"mlflow"},
)
def champion_model(
    context: dg.AssetExecutionContext,
    config: GateConfig,
    tracking: MlflowTracking,
    training_set: Any,
) -> Iterator[Any]:
    """The model in production: the challenger replaces it only if it is clearly better.

    Challenger and champion are scored on the same holdout rows (the training set's
    validation split) by the same metric code. The challenger is promoted (the `champion`
    alias moves) when it passes the absolute floors and beats the champion by the margin,
    or when there is no champion yet. Otherwise nothing is materialized, so nothing
    downstream is triggered; the decision, both scores and the reason are recorded as an
    observation here and as tags on the version either way.
    """
    from mlops_assets.lib import modeling
    from mlops_assets.lib.pyfunc import load_classifier

    client = tracking.client()
    name = tracking.model_name
    challenger = tracking.version_by_alias(model_tags.CHALLENGER)
    if challenger is None:
        raise dg.Failure(f"{name} has no challenger: materialize candidate_model first")
    champion = tracking.version_by_alias(model_tags.CHAMPION)
    holdout = training_set[training_set["split"] == "validation"]
    challenger_model = load_classifier(
        f"models:/{name}/{challenger.version}", tracking.tracking_uri
    )
    challenger_scores = modeling.evaluate(challenger_model, holdout)
    champion_scores = None
    if champion is not None and champion.version != challenger.version:
        champion_model_ = load_classifier(
            f"models:/{name}/{champion.version}", tracking.tracking_uri
        )
        missing = sorted(set(champion_model_.features) - set(holdout.columns))
        changed = champion_model_.features != challenger_model.features
        if missing or changed:
            reason = (
                f"feature schema drift between champion v{champion.version} and challenger "
                f"v{challenger.version}: "
                + (f"missing in the holdout {missing}" if missing else "")
                + ("; " if missing and changed else "")
                + ("feature lists differ" if changed else "")
                + ". Not promoting; compare or retire the champion deliberately."
            )
            client.set_model_version_tag(name, challenger.version, model_tags.GATE, "rejected")
            client.set_model_version_tag(name, challenger.version, model_tags.GATE_REASON, reason)
            raise dg.Failure(description=reason, allow_retries=False)
        champion_scores = modeling.evaluate(champion_model_, holdout)
    elif champion is not None:
        champion_scores = challenger_scores  # already the champion: nothing to promote
    policy = modeling.GatePolicy(
        metric=config.metric,
        margin=config.margin,
        floors={"roc_auc": config.min_roc_auc, "pr_auc": config.min_pr_auc},
    )
    decision = modeling.decide(challenger_scores, champion_scores, policy)
    verdict = "promoted" if decision.promote else "rejected"
    client.set_model_version_tag(name, challenger.version, model_tags.GATE, verdict)
    client.set_model_version_tag(name, challenger.version, model_tags.GATE_REASON, decision.reason)
    run_id = challenger.run_id
    if run_id:
        client.set_tag(run_id, model_tags.GATE, f"{verdict}: {decision.reason}")
    metadata = {
        "decision": verdict,
        "reason": decision.reason,
        "challenger_version": challenger.version,
        "champion_version": champion.version if champion else None,
        "challenger_scores": json.dumps({k: round(v, 4) for k, v in challenger_scores.items()}),
        "champion_scores": json.dumps({k: round(v, 4) for k, v in (champion_scores or {}).items()}),
        "holdout_rows": len(holdout),
    }
    if not decision.promote:
        context.log.info(f"challenger v{challenger.version} not promoted: {decision.reason}")
        context.log_event(dg.AssetObservation(asset_key=context.asset_key, metadata=metadata))
        return
    if champion is not None:
        client.set_model_version_tag(
            name, challenger.version, model_tags.PREVIOUS_CHAMPION, champion.version
        )
    client.set_registered_model_alias(name, model_tags.CHAMPION, challenger.version)
    yield dg.MaterializeResult(
        metadata={**metadata, "model_version": challenger.version, "mlflow_run_id": run_id},
        data_version=dg.DataVersion(f"{name}-v{challenger.version}"),
    )


@dg.asset(
    group_name=TRAINING_GROUP,
    deps=[champion_model],
    automation_condition=dg.AutomationCondition.eager(),
    kinds={"mlflow"},
)
def model_card(context: dg.AssetExecutionContext, tracking: MlflowTracking) -> dg.MaterializeResult:
    """A Markdown card for the current champion: use, data, metrics, decision, lineage.

    Shown here as metadata and saved as `model_card.md` in the champion's MLflow run.
    """
    import tempfile

    import pandas as pd

    from mlops_assets.lib.model_card import CardFacts, render_model_card

    client = tracking.client()
    version = client.get_model_version_by_alias(tracking.model_name, model_tags.CHAMPION)
    run = client.get_run(version.run_id)
    tags, data = run.data.tags, run.data
    with tempfile.TemporaryDirectory() as folder:
        importances = pd.read_csv(
            client.download_artifacts(run.info.run_id, "feature_importance.csv", folder)
        )
    # Models logged before the estimator module named the column `gain` (a rollback reaches them).
    values = importances["importance" if "importance" in importances else "gain"]
    params = {k: v for k, v in data.params.items() if k != "threshold"}
    facts = CardFacts(
        model_name=tracking.model_name,
        version=str(version.version),
        window=tags.get(model_tags.DATA_WINDOW, "?"),
        data_md5=tags.get(model_tags.DATA_DVC_MD5, "?"),
        data_rev=tags.get(model_tags.DATA_REGISTRY_REV, "?"),
        metrics={k: v for k, v in data.metrics.items() if k != "rows"},
        decision=version.tags.get(model_tags.GATE, "?")
        + ": "
        + version.tags.get(model_tags.GATE_REASON, ""),
        features=list(importances["feature"]),
        importances=list(zip(importances["feature"], values, strict=True)),
        mlflow_run_id=run.info.run_id,
        dagster_run_id=tags.get(model_tags.DAGSTER_RUN_ID_RUN_TAG, "?"),
        git_commit=tags.get(model_tags.GIT_COMMIT, "?"),
        params=params,
    )
    card = render_model_card(facts)
    client.log_text(run.info.run_id, card, "model_card.md")
    return dg.MaterializeResult(
        metadata={
            "model_version": str(version.version),
            "card": dg.MetadataValue.md(card),
            "mlflow_run_id": run.info.run_id,
        }
    )
