"""Deployment: the champion as a BentoML bundle, and the champion's daily batch predictions."""

from typing import Any

import dagster as dg

from mlops_assets.defs.ingestion import airlines, airports, planes
from mlops_assets.defs.partitions import daily_asset, follow_upstream
from mlops_assets.defs.training import CHAMPION_KEY, TRIAL_KEY
from mlops_assets.lib import estimator, model_tags
from mlops_assets.resources.bentos import BentoStore
from mlops_assets.resources.deployment_repo import DeploymentRepo, DeploymentRepoError
from mlops_assets.resources.tracking import MlflowTracking, project_fingerprint

DEPLOYMENT_GROUP = "deployment"
REFERENCE_TABLES = dg.AssetSelection.assets(planes, airports, airlines)


@dg.asset(
    group_name=DEPLOYMENT_GROUP,
    deps=[CHAMPION_KEY, TRIAL_KEY],
    # A new champion or a trial's start or end rebuilds the bundle; reference updates reach
    # the next build.
    # `model_trial` is missing until the first trial: that must not hold back the first build.
    automation_condition=dg.AutomationCondition.eager()
    .replace(
        "any_deps_missing",
        dg.AutomationCondition.any_deps_missing().ignore(dg.AssetSelection.assets(TRIAL_KEY)),
    )
    .ignore(REFERENCE_TABLES),
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
    """The champion, and the challenger during a live trial, packaged as a BentoML service.

    The bundle holds the champion classifier (and the one on trial, with the trial's mode
    and share as the service's default serving mode), the planes table and the known
    carriers and airports the request contract is generated from. It is built in the BentoML
    store (`bentoml serve <bento_tag>` or `make serve` answers at once) and exported as a
    `.bento` archive: a complete build context with its Dockerfile, for the image build where
    Docker runs. Labels on model and bento: model version, MLflow run, training-set DVC md5,
    git commit. Runs when the champion changes or a trial starts or ends, never on a
    rejected challenger.
    """
    # The project's commit once per build (a git call), shared by both models' labels.
    references = (planes, airports, airlines, project_fingerprint()[model_tags.GIT_COMMIT])
    bundle, labels = tracking.scoring_bundle(str(tracking.champion().version), references)
    trial = tracking.trial()
    challenger, serving = None, {}
    if trial is not None:
        challenger, _ = tracking.scoring_bundle(trial.version, references)
        serving = {"mode": trial.policy.mode, "share": trial.policy.share}
        labels["challenger_version"] = trial.version
    built = bentos.build(bundle, labels, challenger=challenger, trial=serving or None)
    context.log.info(f"built {built['bento_tag']} for {tracking.model_name} {labels}")
    return dg.MaterializeResult(
        metadata={
            "bento_tag": built["bento_tag"],
            "image": bentos.image(built["bento_tag"]),
            "model_tag": built["model_tag"],
            "challenger_model_tag": str(built.get("challenger_model_tag")),
            **labels,
            **{f"trial_{k}": v for k, v in serving.items()},
            "threshold": round(bundle.classifier.threshold, 4),
            "size_bytes": built["size_bytes"],
            "build_context": dg.MetadataValue.path(built["bento_path"]),
            "export_path": dg.MetadataValue.path(built["export_path"]),
            "serve": f"bentoml serve {built['bento_tag']}",
        },
        data_version=dg.DataVersion(built["bento_tag"]),
    )


@dg.asset(
    group_name=DEPLOYMENT_GROUP,
    deps=[bento],
    automation_condition=dg.AutomationCondition.eager(),
    kinds={"git", "kubernetes"},
)
def release(
    context: dg.AssetExecutionContext,
    tracking: MlflowTracking,
    bentos: BentoStore,
    deployment_repo: DeploymentRepo,
) -> dg.MaterializeResult:
    """The newest bento, live on the prediction service: a commit in the deployment repository.

    The bento's image goes on the idle colour (blue or green) and the live Service selects
    it; the other colour keeps the previous image, so `mlops-assets release-revert` flips
    traffic back at once. The commit message holds the model version, why it goes out
    (promotion, trial, rollback) and its lineage (MLflow run, training-set DVC md5, bento,
    image, code). Argo CD applies the repository; nothing here touches a cluster.
    """
    from mlops_assets.lib import release as rel

    built = _latest_metadata(context, bento.key)
    try:
        previous = deployment_repo.state()
        candidate = _release(built, tracking, bentos, previous, context.run_id)
        done = deployment_repo.release(candidate)
    except (rel.ReleaseError, DeploymentRepoError) as error:
        raise dg.Failure(f"release refused or failed, nothing pushed: {error}") from error
    state = done.state
    return dg.MaterializeResult(
        metadata={
            "status": "released" if done.changed else "already live",
            "commit": done.commit,
            "live_colour": state.live,
            "image": state.colours[state.live]["image"],
            "model_version": candidate.model_version,
            "reason": candidate.reason,
            "release_id": state.release_id,
            "idle_colour_serves": str(state.colours[state.idle]["image"]),
            "repository": dg.MetadataValue.path(str(deployment_repo.app_dir)),
        },
        data_version=dg.DataVersion(done.commit),
    )


def _latest_metadata(context: dg.AssetExecutionContext, key: dg.AssetKey) -> dict[str, Any]:
    """The newest materialization's metadata values of ``key`` (empty when never built)."""
    event = context.instance.get_latest_materialization_event(key)
    found = event.asset_materialization if event is not None else None
    if found is None:
        return {}
    return {name: getattr(value, "value", value) for name, value in found.metadata.items()}


def _release(
    built: dict[str, Any],
    tracking: MlflowTracking,
    bentos: BentoStore,
    previous: Any,
    run_id: str,
) -> Any:
    """The release of the bento described by ``built``, checked against the store's image."""
    from mlops_assets.lib import release as rel

    tag = str(built.get("bento_tag", ""))
    if not tag:
        raise rel.ReleaseError("no bento to release: materialize `bento` first")
    expected = bentos.image(tag)
    if built.get("image") != expected:
        raise rel.ReleaseError(
            f"the bento records image {built.get('image')!r}, but {tag} builds {expected!r}"
        )
    version = str(built["model_version"])
    client = tracking.client()
    champion_tags = dict(client.get_model_version(tracking.model_name, version).tags)
    challenger = built.get("challenger_version")
    trial = (str(challenger), str(built.get("trial_mode"))) if challenger else None
    ended = rel.ended_trial_version(previous, version)
    ended_tags = dict(client.get_model_version(tracking.model_name, ended).tags) if ended else None
    return rel.Release(
        model_name=tracking.model_name,
        model_version=version,
        bento_tag=tag,
        image=str(built["image"]),
        reason=rel.release_reason((version, champion_tags), trial, previous, ended_tags),
        mlflow_run_id=str(built.get("mlflow_run_id", "unknown")),
        training_set_md5=str(built.get("training_set_md5", "unknown")),
        git_commit=str(built.get("git_commit", "unknown")),
        challenger_version=str(challenger) if challenger else None,
        serving_mode=str(built.get("trial_mode", "off")),
        dagster_run_id=run_id,
    )


@daily_asset(
    DEPLOYMENT_GROUP,
    deps=[CHAMPION_KEY],
    # New feature days are predicted once a champion exists; a new champion does not
    # rewrite past predictions.
    automation_condition=follow_upstream(ignore=dg.AssetSelection.assets(CHAMPION_KEY))
    & ~dg.AutomationCondition.any_deps_missing().allow(dg.AssetSelection.assets(CHAMPION_KEY)),
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
    from mlops_assets.lib.fingerprints import frame_fingerprint
    from mlops_assets.lib.predictions import prediction_frame

    champion = tracking.champion()
    version = str(champion.version)
    classifier = tracking.classifier(version)
    out = prediction_frame(flight_features, classifier, tracking.model_name, version)
    probabilities = out["probability"]
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
