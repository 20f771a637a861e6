"""Training: a versioned training set, a tracked candidate, the champion gate, the model card."""

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from mlops_assets import settings
from mlops_assets.defs.features import REGISTRY_POOL, flight_features
from mlops_assets.defs.outputs import frame_output
from mlops_assets.defs.run_config import config_from
from mlops_assets.defs.system_tags import SENSOR_NAME_TAG, run_actor
from mlops_assets.lib import estimator, model_tags
from mlops_assets.lib.approval import approval_policy, policies_in_force
from mlops_assets.lib.modeling import GatePolicy
from mlops_assets.lib.trials import TrialPolicy, trial_policy_from_json
from mlops_assets.resources.audit import AuditTrail
from mlops_assets.resources.lake import LakeReader, versioned_in_registry
from mlops_assets.resources.tracking import MlflowTracking, Trial

TRAINING_GROUP = "training"
TRIALS_GROUP = "trials"
# The gate's two outputs: the champion, and the challenger on live trial.
CHAMPION_KEY = dg.AssetKey("champion_model")
TRIAL_KEY = dg.AssetKey("model_trial")
TRIAL_EVALUATION_KEY = dg.AssetKey("trial_evaluation")
TRIAL_POLICY_VAR = "MLOPS_TRIAL_POLICY"
TRAINING_SET_PATH = f"training_set/{settings.MODEL_NAME}.parquet"
# The gate's verdicts and the audit act each one is recorded as.
PENDING_VERDICT = "pending approval"
VERDICT_ACTS = {"promoted": "promotion", "rejected": "rejection", "trial": "trial_start"}
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


# Generated, not written out: the estimator module (lib/estimator.py) owns its settings and
# the gate's policy (lib/modeling.py) its thresholds, with their defaults and descriptions, so
# a change there changes the launchpad with it.
if TYPE_CHECKING:  # mypy cannot see generated fields: it checks the configs as plain Configs
    TrainingConfig = dg.Config

    class GateConfig(dg.Config):  # noqa: D101
        conclude_trial: bool
else:
    TrainingConfig = config_from(
        estimator.HyperParameters,
        "TrainingConfig",
        f"Settings of the {estimator.KIND} estimator (HyperParameters, lib/estimator.py).",
        __name__,
    )
    GateConfig = config_from(
        GatePolicy,
        "GateConfig",
        "When a challenger replaces the champion.",
        __name__,
        conclude_trial=(
            bool,
            Field(
                default=False,
                description="End the running trial by its latest trial_evaluation's verdict "
                "(what the trial sensor asks) instead of judging the newest candidate.",
            ),
        ),
    )


def _latest_metadata(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict[str, Any]:
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        raise dg.Failure(f"{key.to_user_string()} has not been materialized yet")
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def _window_end(instance: dg.DagsterInstance, as_of: str) -> date:
    """The configured last day of the window, or the latest feature day."""
    if as_of:
        return date.fromisoformat(as_of)
    days = instance.get_materialized_partitions(flight_features.key)
    if not days:
        raise dg.Failure("no flight_features partitions are materialized yet")
    return date.fromisoformat(max(days))


@dg.asset(
    group_name=TRAINING_GROUP,
    deps=[flight_features],
    # Written to the lake and committed to the DVC registry together by the lake IO manager.
    metadata=versioned_in_registry(TRAINING_SET_PATH),
    pool=REGISTRY_POOL,
    kinds={"pandas", "dvc"},
)
def training_set(
    context: dg.AssetExecutionContext, config: TrainingSetConfig, lake: LakeReader
) -> dg.Output[Any]:
    """The labelled rows of a window of feature days, split by time, versioned in DVC.

    The window ends at `as_of` (default: the latest feature day) and spans `days` days; the
    last `validation_days` are the validation holdout, always later than the training rows.
    Missing days are allowed; a window with no data or a split with one class fails with the
    reason. The snapshot is written to the lake and committed to the data registry together
    (both or neither): `dvc_md5` and `registry_rev` restore it bit for bit and are tagged on
    every model trained from it.
    """
    from mlops_assets.lib.modeling import (
        TrainingDataError,
        TrainingWindow,
        assemble_training_set,
        split_counts,
    )

    window = TrainingWindow(
        _window_end(context.instance, config.as_of), config.days, config.validation_days
    )
    frames = lake.read_partitions("flight_features", window.keys())
    try:
        data = assemble_training_set(frames, window)
    except TrainingDataError as error:
        raise dg.Failure(f"training_set {window}: {error}") from error
    return frame_output(
        data,
        {
            "window": str(window),
            "window_start": window.start.isoformat(),
            "window_end": window.as_of.isoformat(),
            "validation_start": window.validation_start.isoformat(),
            "days_present": len(frames),
            **split_counts(data),
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
    from mlops_assets.lib import modeling

    tags = model_tags.data_tags(_latest_metadata(context.instance, dg.AssetKey("training_set")))
    with tracking.training_run(context, tags) as run:
        params = estimator.HyperParameters(**config.model_dump())
        model, metrics = modeling.fit(training_set, params)
        importances = _log_evaluation(config.model_dump(), model, metrics)
        example = modeling.input_example(model, training_set)
        registered = tracking.register_challenger(model, example, context.run.run_id)
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


def _log_evaluation(params: dict[str, Any], model: Any, metrics: dict[str, float]) -> Any:
    """Logs parameters, validation metrics and importances (CSV + plot) to the active run."""
    import mlflow

    mlflow.log_params({**params, "threshold": model.threshold})
    mlflow.log_metrics(metrics)
    importances = model.importances()
    mlflow.log_text(importances.to_csv(index=False), "feature_importance.csv")
    mlflow.log_figure(_importance_plot(importances), "feature_importance.png")
    return importances


def _importance_plot(importances: Any) -> Any:
    # A bare Figure, not pyplot: no global figure registry or backend switch, and a fresh run
    # process imports less (pyplot adds about a second to matplotlib's import).
    from matplotlib.figure import Figure

    top = importances.head(15).iloc[::-1]
    figure = Figure(figsize=(7, 5))
    axis = figure.subplots()
    axis.barh(top["feature"], top["importance"])
    axis.set_xlabel(f"importance ({estimator.KIND})")
    axis.set_title("Feature importance")
    figure.tight_layout()
    return figure


def trial_policy(env: Mapping[str, str] | None = None) -> TrialPolicy:
    """The live-trial policy in force (defaults in ``lib.trials.TrialPolicy``).

    ``MLOPS_TRIAL_POLICY`` may override fields with a JSON object, e.g.
    ``{"trial_days": 0}`` (no trials: promote at once) or ``{"mode": "canary", "share": 0.2}``.
    A trial keeps the policy it started with.

    Raises:
        ValueError: for a value that is not a JSON object of known fields and valid values.
    """
    raw = (os.environ if env is None else env).get(TRIAL_POLICY_VAR, "")
    return trial_policy_from_json(raw, TRIAL_POLICY_VAR)


def _gate_output(key: dg.AssetKey, description: str) -> dg.AssetSpec:
    """One of the gate's two outputs: both follow a new candidate, and either may be skipped."""
    return dg.AssetSpec(
        key,
        group_name=TRAINING_GROUP,
        deps=["candidate_model", "training_set"],
        skippable=True,
        automation_condition=dg.AutomationCondition.eager(),
        kinds={"mlflow"},
        description=description,
    )


@dg.multi_asset(
    specs=[
        _gate_output(CHAMPION_KEY, "The model in production (the registry's `champion` alias)."),
        _gate_output(
            TRIAL_KEY,
            "The challenger on live trial (the `trial` alias): started, promoted, retired or "
            "aborted.",
        ),
    ],
)
def model_gate(
    context: dg.AssetExecutionContext,
    config: GateConfig,
    tracking: MlflowTracking,
    audit: AuditTrail,
    training_set: Any,
) -> Iterator[dg.MaterializeResult]:
    """The gate: the challenger replaces the champion only if it is clearly better.

    Challenger and champion are scored on the same holdout rows (the training set's
    validation split) by the same metric code. A challenger that passes the absolute floors
    and beats the champion by the margin goes on live trial when the trial policy asks for
    one (`MLOPS_TRIAL_POLICY`, `lib/trials.py`: `model_trial` materializes), else it is
    promoted at once (`champion_model` materializes); the first model is always promoted.
    With `MLOPS_APPROVAL_POLICY` requiring approval (`lib/approval.py`) it is not promoted
    but waits for an approver (the `pending_approval` alias, an observation on
    `champion_model`): nothing downstream runs until `mlops-assets approve`.
    Whenever the gate acts (a promotion, a trial's start or end) both outputs materialize, so
    a run that also selects what follows them (the bento) never skips it; `champion_model`'s
    data version changes only when the champion does. A rejection materializes nothing, so
    nothing downstream runs; the decision, both scores and the reason are recorded as an
    observation and as tags on the version either way, and every act as an audit record.
    Models that do not score the same features are never compared: the step fails.

    With `conclude_trial`, the trial sensor's run ends the running trial instead, by the
    verdict of its latest `trial_evaluation`: promoted (both assets materialize) or retired.
    """
    gate = _Gate(context, tracking, audit)
    if config.conclude_trial:
        yield from _conclude_trial(context, tracking, gate)
        return
    policy = GatePolicy(**config.model_dump(exclude={"conclude_trial"}))
    challenger, champion, holdout, decision = _judged(tracking, training_set, policy)
    versions = (str(challenger.version), str(champion.version) if champion else None)
    trial = trial_policy()
    gate.record_policies(asdict(policy), trial)
    on_trial = decision.promote and champion is not None and trial.enabled
    verdict = _verdict(decision.promote, on_trial, gate.approval.require_approval)
    tracking.record_gate(challenger, verdict, decision.reason, champion)
    if verdict in VERDICT_ACTS:  # a pending one is recorded with its request
        gate.record(VERDICT_ACTS[verdict], challenger, champion, decision.reason)
    if not decision.comparable:
        raise dg.Failure(description=decision.reason, allow_retries=False)
    metadata = {
        "decision": verdict,
        "reason": decision.reason,
        "challenger_version": versions[0],
        "champion_version": versions[1],
        "challenger_scores": _rounded(decision.challenger),
        "champion_scores": _rounded(decision.champion or {}),
        "holdout_rows": len(holdout),
    }
    if verdict in ("rejected", PENDING_VERDICT):
        context.log.info(f"challenger v{challenger.version} not promoted: {verdict}")
        if verdict == PENDING_VERDICT:
            metadata.update(gate.request(challenger, champion, decision.reason))
        context.log_event(dg.AssetObservation(asset_key=CHAMPION_KEY, metadata=metadata))
    elif verdict == "trial":
        start = _window_end(context.instance, "") + timedelta(days=1)
        started = tracking.start_trial(challenger, champion, start, trial)
        yield _champion_result(tracking, champion, metadata)
        yield dg.MaterializeResult(asset_key=TRIAL_KEY, metadata=_trial_started(started))
    else:
        yield _champion_result(tracking, challenger, metadata)
        yield dg.MaterializeResult(asset_key=TRIAL_KEY, metadata=_no_trial(champion))


def _judged(
    tracking: MlflowTracking, training_set: Any, policy: GatePolicy
) -> tuple[Any, Any, Any, Any]:
    """The challenger, the champion, the holdout rows and the gate's decision on them."""
    from mlops_assets.lib.modeling import judge

    challenger = tracking.version_by_alias(model_tags.CHALLENGER)
    if challenger is None:
        raise dg.Failure(f"{tracking.model_name} has no challenger: materialize candidate_model")
    champion = tracking.version_by_alias(model_tags.CHAMPION)
    challenger_model = tracking.classifier(challenger.version)
    champion_model = _champion_classifier(tracking, champion, challenger, challenger_model)
    holdout = training_set[training_set["split"] == "validation"]
    versions = (str(challenger.version), str(champion.version) if champion else None)
    decision = judge(challenger_model, champion_model, holdout, policy, versions=versions)
    return challenger, champion, holdout, decision


def _verdict(promote: bool, on_trial: bool, require_approval: bool) -> str:
    if on_trial:
        return "trial"
    if not promote:
        return "rejected"
    return PENDING_VERDICT if require_approval else "promoted"


class _Gate:
    """Who runs the gate, under which approval policy, and its audit records.

    Reads the approval policy first (an invalid one fails the step before anything changes)
    and clears an approval request that expired.
    """

    def __init__(
        self, context: dg.AssetExecutionContext, tracking: MlflowTracking, audit: AuditTrail
    ) -> None:
        from mlops_assets.defs import gate_records

        try:
            self.approval = approval_policy()
        except ValueError as error:
            raise dg.Failure(str(error), allow_retries=False) from error
        self.run_id = context.run.run_id
        self.actor = run_actor(context.run.tags, self.run_id)
        self.tracking, self.audit, self.records = tracking, audit, gate_records
        expired = gate_records.expire_pending(tracking, audit, self.actor, datetime.now(UTC))
        if expired is not None:
            context.log.info(f"v{expired.version}'s approval request expired")

    def record(self, act: str, version: Any, champion: Any, reason: str) -> None:
        """One audit record of a gate act on ``version``."""
        links = self.records.evidence(self.tracking, version, champion, self.run_id)
        subject = self.records.subject(self.tracking, version.version)
        self.audit.record(act, self.actor, subject, reason, links)

    def record_policies(self, gate: dict[str, Any], trial: TrialPolicy) -> None:
        """``policy_change`` when the policies in force differ from the last recorded."""
        policies = policies_in_force(gate, trial.as_dict(), self.approval)
        self.records.record_policies(self.audit, self.actor, policies, self.run_id)

    def request(self, version: Any, champion: Any, reason: str) -> dict[str, Any]:
        """Makes ``version`` pending approval; the metadata saying so."""
        acting = (self.actor, self.run_id)
        now = datetime.now(UTC)
        found = self.records.request_approval(
            self.tracking, self.audit, acting, version, champion, self.approval, reason, now
        )
        return {
            "status": "pending approval",
            "pending_version": found.version,
            "expires_at": found.expires_at.isoformat(),
            "approvers": ", ".join(self.approval.approvers),
        }


def _no_trial(champion: Any) -> dict[str, Any]:
    why = "no champion to try against" if champion is None else "trial_days is 0"
    return {"status": "none", "reason": f"promoted without a live trial: {why}"}


def _trial_started(trial: Trial) -> dict[str, Any]:
    return {
        "status": "running",
        "model_version": trial.version,
        "champion_version": trial.champion_version,
        "start_day": trial.start_day.isoformat(),
        "mode": trial.policy.mode,
        "share": trial.policy.share,
        "policy": json.dumps(trial.policy.as_dict(), sort_keys=True),
        "mlflow_run_id": trial.mlflow_run_id,
    }


def trial_ended(trial: Trial, status: str, reason: str, by: str) -> dict[str, Any]:
    """The model_trial materialization of an ended trial; it keeps the versions and the mode."""
    return {
        "status": status,
        "reason": reason,
        "model_version": trial.version,
        "champion_version": trial.champion_version,
        "mode": trial.policy.mode,
        "ended_by": by,
    }


def _champion_result(
    tracking: MlflowTracking, version: Any, metadata: dict[str, Any]
) -> dg.MaterializeResult:
    """The champion_model materialization of a newly promoted version."""
    return dg.MaterializeResult(
        asset_key=CHAMPION_KEY,
        metadata={
            **metadata,
            "model_version": str(version.version),
            "mlflow_run_id": version.run_id,
        },
        data_version=dg.DataVersion(f"{tracking.model_name}-v{version.version}"),
    )


def _conclude_trial(
    context: dg.AssetExecutionContext, tracking: MlflowTracking, gate: "_Gate"
) -> Iterator[dg.MaterializeResult]:
    """Ends the running trial by its latest evaluation's verdict (promote or retire).

    With approval required, a trial in the challenger's favour ends as ``passed`` and the
    challenger waits for an approver instead of being promoted.
    """
    trial = tracking.trial()
    if trial is None:
        raise dg.Failure("no trial is running: nothing to conclude", allow_retries=False)
    champion = tracking.champion()
    outcome, reason = _trial_verdict(context.instance, trial, champion)
    actor = context.run.tags.get(SENSOR_NAME_TAG) or "dagster run " + context.run.run_id[:8]
    approval = outcome == "promote" and gate.approval.require_approval
    state = "passed" if approval else "promoted" if outcome == "promote" else "retired"
    tracking.end_trial(trial, state, reason, actor)
    ended = trial_ended(trial, state, reason, actor)
    version = tracking.client().get_model_version(tracking.model_name, trial.version)
    gate.record("trial_end", version, champion, f"{state}: {reason}")
    decision = {"decision": f"{state} after trial", "reason": reason}
    decision["champion_version"] = str(champion.version)
    if approval:
        decision.update(gate.request(version, champion, reason))
        context.log_event(dg.AssetObservation(asset_key=CHAMPION_KEY, metadata=decision))
        yield dg.MaterializeResult(asset_key=TRIAL_KEY, metadata=ended)
        return
    if state == "promoted":
        tracking.promote(trial.version, champion)
        gate.record("promotion", version, champion, f"after a live trial: {reason}")
        champion = version
    yield _champion_result(tracking, champion, decision)
    yield dg.MaterializeResult(asset_key=TRIAL_KEY, metadata=ended)


def _trial_verdict(instance: dg.DagsterInstance, trial: Trial, champion: Any) -> tuple[str, str]:
    """The latest evaluation's outcome for ``trial`` (retire if the champion changed)."""
    evaluation = _latest_metadata(instance, TRIAL_EVALUATION_KEY)
    outcome, reason = evaluation.get("outcome"), str(evaluation.get("reason", ""))
    decided = outcome in ("promote", "retire")
    if str(evaluation.get("trial_version")) != trial.version or not decided:
        raise dg.Failure(
            f"the latest trial_evaluation has not decided v{trial.version}'s trial "
            f"(it says {outcome!r} for v{evaluation.get('trial_version')})",
            allow_retries=False,
        )
    if outcome == "promote" and str(champion.version) != trial.champion_version:
        return "retire", (
            f"the champion changed during the trial (v{trial.champion_version} -> "
            f"v{champion.version})"
        )
    return str(outcome), reason


def _rounded(scores: dict[str, float]) -> str:
    return json.dumps({k: round(v, 4) for k, v in scores.items()})


def _champion_classifier(
    tracking: MlflowTracking, champion: Any, challenger: Any, challenger_model: Any
) -> Any:
    """The champion's classifier: None without one, the challenger's if it is the champion."""
    if champion is None:
        return None
    if champion.version == challenger.version:
        return challenger_model
    return tracking.classifier(champion.version)


@dg.asset(
    group_name=TRAINING_GROUP,
    deps=[CHAMPION_KEY],
    automation_condition=dg.AutomationCondition.eager(),
    kinds={"mlflow"},
)
def model_card(tracking: MlflowTracking) -> dg.MaterializeResult:
    """A Markdown card for the current champion: use, data, metrics, decision, lineage.

    Shown here as metadata and saved as `model_card.md` in the champion's MLflow run.
    """
    import tempfile

    import pandas as pd

    from mlops_assets.lib.model_card import card_facts, render_model_card

    client = tracking.client()
    version = tracking.champion()
    run = client.get_run(version.run_id)
    with tempfile.TemporaryDirectory() as folder:
        importances = pd.read_csv(
            client.download_artifacts(run.info.run_id, "feature_importance.csv", folder)
        )
    facts = card_facts(tracking.model_name, version, run, importances)
    card = render_model_card(facts)
    client.log_text(run.info.run_id, card, "model_card.md")
    return dg.MaterializeResult(
        metadata={
            "model_version": str(version.version),
            "card": dg.MetadataValue.md(card),
            "mlflow_run_id": run.info.run_id,
        }
    )
