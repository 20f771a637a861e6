"""Deployment: the champion as a BentoML bundle, and the champion's daily batch predictions."""

from typing import Any

import dagster as dg

from mlops_assets.defs.ingestion import airlines, airports, planes
from mlops_assets.defs.partitions import daily_partitions, follow_upstream
from mlops_assets.defs.training import champion_model
from mlops_assets.lib import estimator, model_tags
from mlops_assets.resources.bentos import BentoStore
from mlops_assets.resources.tracking import MlflowTracking, project_fingerprint

DEPLOYMENT_GROUP = "deployment"
REFERENCE_TABLES = dg.AssetSelection.assets(planes, airports, airlines)


@dg.asset(
    group_name=DEPLOYMENT_GROUP,
    deps=[champion_model],
    # Only a new champion rebuilds the bundle; reference updates reach the next build.
    automation_condition=dg.AutomationCondition.eager().ignore(REFERENCE_TABLES),
    kinds={"bentoml"},
)
def bento(
    context: dg.AssetExecutionContext,
    tracking: MlflowTracking,
    bentos: BentoStore,
    planes: Any,
    airports: Any,
    airlines: Any,
) -> dg.MaterializeResult:
    """The champion packaged as a BentoML service, built and exported.

    The bundle holds the champion classifier, the planes table and the known carriers and
    airports the request contract is generated from. It is built in the BentoML store
    (`bentoml serve <bento_tag>` or `make serve` answers at once) and exported as a `.bento`
    archive: a complete build context with its Dockerfile, for the image build where Docker
    runs. Labels on model and bento: model version, MLflow run, training-set DVC md5, git
    commit. Runs when the champion changes (a promotion), never on a rejected challenger.
    """
    from mlops_assets.lib.scoring import ScoringBundle, known_airports

    champion = tracking.champion()
    version = str(champion.version)
    run = tracking.client().get_run(champion.run_id)
    classifier = tracking.classifier(version)
    fingerprint = project_fingerprint()
    labels = {
        "model_name": tracking.model_name,
        "model_version": version,
        "mlflow_run_id": str(champion.run_id),
        "training_set_md5": run.data.tags.get(model_tags.DATA_DVC_MD5, "unknown"),
        "git_commit": fingerprint[model_tags.GIT_COMMIT],
    }
    bundle = ScoringBundle(
        classifier=classifier,
        planes=planes,
        carriers=sorted(airlines["carrier"].astype(str)),
        airports=known_airports(airports),
        model=labels,
    )
    built = bentos.build(bundle, labels)
    context.log.info(f"built {built['bento_tag']} for {tracking.model_name} v{version}")
    return dg.MaterializeResult(
        metadata={
            "bento_tag": built["bento_tag"],
            "model_tag": built["model_tag"],
            **labels,
            "threshold": round(classifier.threshold, 4),
            "size_bytes": built["size_bytes"],
            "build_context": dg.MetadataValue.path(built["bento_path"]),
            "export_path": dg.MetadataValue.path(built["export_path"]),
            "serve": f"bentoml serve {built['bento_tag']}",
        },
        data_version=dg.DataVersion(built["bento_tag"]),
    )


@dg.asset(
    partitions_def=daily_partitions,
    group_name=DEPLOYMENT_GROUP,
    deps=[champion_model],
    # New feature days are predicted once a champion exists; a new champion does not
    # rewrite past predictions.
    automation_condition=follow_upstream(ignore=dg.AssetSelection.assets(champion_model))
    & ~dg.AutomationCondition.any_deps_missing().allow(dg.AssetSelection.assets(champion_model)),
    kinds={estimator.KIND, "parquet"},
)
def batch_predictions(
    context: dg.AssetExecutionContext, tracking: MlflowTracking, flight_features: Any
) -> dg.Output[Any]:
    """The champion's predictions for the day's flights, stored with the model version.

    Scores every flight of the feature partition with the model holding the `champion`
    alias when the run starts (the same feature columns and prediction code as the
    service, so both give the same probabilities). Columns: flight key, probability of a
    15+ minute arrival delay, decision at the model's threshold, model name and version.
    """
    import numpy as np

    from mlops_assets.lib.features import KEY_COLUMNS
    from mlops_assets.lib.fingerprints import frame_fingerprint

    champion = tracking.champion()
    version = str(champion.version)
    classifier = tracking.classifier(version)
    probabilities = (
        classifier.predict_proba(flight_features) if len(flight_features) else np.empty(0)
    )
    out = flight_features[KEY_COLUMNS].reset_index(drop=True)
    out["probability"] = probabilities
    out["delayed"] = probabilities >= classifier.threshold
    out["threshold"] = classifier.threshold
    out["model_name"] = tracking.model_name
    out["model_version"] = version
    return dg.Output(
        out,
        metadata={
            "dagster/row_count": len(out),
            "model_name": tracking.model_name,
            "model_version": version,
            "mlflow_run_id": str(champion.run_id),
            "threshold": round(classifier.threshold, 4),
            "mean_probability": round(float(probabilities.mean()), 4) if len(out) else 0.0,
            "predicted_delayed_share": round(float(out["delayed"].mean()), 4) if len(out) else 0.0,
            "content_hash": frame_fingerprint(out),
        },
    )
