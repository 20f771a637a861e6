"""Experiment tracking and the model registry (MLflow), through dagster-mlflow.

dagster-mlflow's ``mlflow_tracking`` resource finds or starts the MLflow run of the current
Dagster run (a retried step resumes the same MLflow run instead of creating a second one).
Its ``end_mlflow_on_run_finished`` hook only exists for op jobs, so a materialization from the
UI, a sensor or declarative automation would leave the run RUNNING. ``training_run``
complements it: the run always ends, FINISHED on success and FAILED on any error, and runs
left RUNNING by a killed process are closed as KILLED the next time the same asset trains.
"""

import contextlib
import functools
import hashlib
import json
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import dagster as dg

from mlops_assets import settings
from mlops_assets.lib import model_tags


def project_fingerprint() -> dict[str, str]:
    """Git commit of the project and a hash of the locked environment (``uv.lock``)."""
    root = settings.project_root()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", ""
    lock = root / "uv.lock"
    return {
        model_tags.GIT_COMMIT: (commit or "unknown") + ("-dirty" if dirty else ""),
        model_tags.UV_LOCK_SHA256: hashlib.sha256(lock.read_bytes()).hexdigest()
        if lock.exists()
        else "unknown",
    }


@dataclass(frozen=True)
class Trial:
    """A running live trial, as its model version's tags record it.

    Attributes:
        version: The challenger on trial.
        champion_version: The champion it is compared with.
        start_day: First day both score (the day after the newest feature day at the start).
        policy: The ``lib.trials.TrialPolicy`` it started under (later changes do not apply).
        mlflow_run_id: The challenger's MLflow run.
    """

    version: str
    champion_version: str
    start_day: date
    policy: Any
    mlflow_run_id: str


@dataclass(frozen=True)
class ModelFacts:
    """What monitoring needs to know about a registered version, from its MLflow run."""

    mlflow_run_id: str
    validation_roc_auc: float | None
    validation_predicted_rate: float | None
    window_start: date | None
    window_end: date | None


@functools.lru_cache(maxsize=16)
def _model_facts(tracking_uri: str, model_name: str, version: str) -> ModelFacts:
    # Versions never change their run: cached per process.
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    run = client.get_run(str(client.get_model_version(model_name, version).run_id))
    start, end = model_tags.parse_window(run.data.tags.get(model_tags.DATA_WINDOW, ""))
    return ModelFacts(
        mlflow_run_id=run.info.run_id,
        validation_roc_auc=run.data.metrics.get("roc_auc"),
        validation_predicted_rate=run.data.metrics.get("predicted_positive_rate"),
        window_start=start,
        window_end=end,
    )


@functools.lru_cache(maxsize=4)
def _classifier(tracking_uri: str, model_name: str, version: str) -> Any:
    # One load per process and version: a run predicting many days loads the model once.
    from mlops_assets.lib.pyfunc import load_classifier

    return load_classifier(f"models:/{model_name}/{version}", tracking_uri)


class MlflowTracking(dg.ConfigurableResource):
    """MLflow tracking server or store, experiment and registered model.

    Attributes:
        tracking_uri: ``sqlite:////abs/path/mlflow.db`` locally, ``http(s)://...`` in production.
        artifact_location: Where a new experiment stores artifacts (local default: a folder
            in the state folder; a server decides for itself when empty).
        experiment: Experiment name.
        model_name: Registered model name.
    """

    tracking_uri: str
    artifact_location: str = ""
    experiment: str = settings.MODEL_NAME
    model_name: str = settings.MODEL_NAME

    def client(self) -> Any:
        """An ``MlflowClient`` bound to this tracking URI (registry included)."""
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def version_by_alias(self, alias: str) -> Any | None:
        """The model version holding ``alias``, or ``None`` if no version holds it.

        Any other error (an unreachable server) is raised, never read as "no champion".
        """
        from mlflow.exceptions import MlflowException

        try:
            return self.client().get_model_version_by_alias(self.model_name, alias)
        except MlflowException as error:
            if error.error_code in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST") and (
                "not found" in str(error)
            ):
                return None
            raise

    def champion(self) -> Any:
        """The champion's model version.

        Raises:
            dagster.Failure: when no version holds the alias yet.
        """
        champion = self.version_by_alias(model_tags.CHAMPION)
        if champion is None:
            raise dg.Failure(
                f"{self.model_name} has no champion yet: train and promote a model first "
                "(materialize the training group)"
            )
        return champion

    def classifier(self, version: str) -> Any:
        """The ``DelayClassifier`` of a registered version (loaded once per process)."""
        return _classifier(self.tracking_uri, self.model_name, str(version))

    def model_facts(self, version: str) -> ModelFacts:
        """Validation metrics and training window of a registered version (cached)."""
        return _model_facts(self.tracking_uri, self.model_name, str(version))

    def scoring_bundle(
        self, version: str, references: tuple[Any, Any, Any, str]
    ) -> tuple[Any, dict[str, str]]:
        """The scoring bundle of a registered version, and its labels (identity and lineage).

        Args:
            version: The registered version.
            references: The planes, airports and airlines tables, and the project's commit.

        Returns:
            The ``lib.scoring.ScoringBundle`` (the bento's, and any other scorer's) and its
            labels: model name and version, MLflow run, training-set DVC md5, git commit.
        """
        from mlops_assets.lib.scoring import ScoringBundle, known_airports

        planes, airports, airlines, commit = references
        client = self.client()
        found = client.get_model_version(self.model_name, version)
        run = client.get_run(found.run_id)
        labels = {
            "model_name": self.model_name,
            "model_version": version,
            "mlflow_run_id": str(found.run_id),
            "training_set_md5": run.data.tags.get(model_tags.DATA_DVC_MD5, "unknown"),
            "git_commit": commit,
        }
        bundle = ScoringBundle(
            classifier=self.classifier(version),
            planes=planes,
            carriers=sorted(airlines["carrier"].astype(str)),
            airports=known_airports(airports),
            model=dict(labels),
        )
        return bundle, labels

    def register_challenger(self, classifier: Any, example: Any, dagster_run_id: str) -> str:
        """Logs the classifier as the active run's model and registers it as the challenger.

        No half-registered version: a version whose alias cannot be set is deleted again.

        Returns:
            The new version.
        """
        from mlops_assets.lib import pyfunc

        client, registered = self.client(), None
        try:
            info = pyfunc.log_model(classifier, example, registered_model_name=self.model_name)
            registered = str(info.registered_model_version)
            client.set_registered_model_alias(self.model_name, model_tags.CHALLENGER, registered)
            client.set_model_version_tag(
                self.model_name, registered, model_tags.DAGSTER_RUN_ID, dagster_run_id
            )
        except BaseException:
            if registered is not None:
                client.delete_model_version(self.model_name, registered)
            raise
        return registered

    def record_gate(self, challenger: Any, verdict: str, reason: str, champion: Any) -> None:
        """Writes the gate's verdict on the challenger; ``promoted`` moves the champion alias.

        The verdict (promoted, rejected or trial) and the reason are tags of the version and
        of its MLflow run.
        """
        client, name, version = self.client(), self.model_name, str(challenger.version)
        client.set_model_version_tag(name, version, model_tags.GATE, verdict)
        client.set_model_version_tag(name, version, model_tags.GATE_REASON, reason)
        if challenger.run_id:
            client.set_tag(challenger.run_id, model_tags.GATE, f"{verdict}: {reason}")
        if verdict == "promoted":
            self.promote(version, champion)

    def promote(self, version: str, champion: Any) -> None:
        """Moves the champion alias to ``version``, recording the champion it replaced.

        The previous champion (tag ``mlops.previous_champion``) is what a rollback returns to.
        """
        client = self.client()
        if champion is not None:
            client.set_model_version_tag(
                self.model_name, version, model_tags.PREVIOUS_CHAMPION, str(champion.version)
            )
        client.set_registered_model_alias(self.model_name, model_tags.CHAMPION, version)

    def trial(self) -> Trial | None:
        """The running trial (the version holding the ``trial`` alias), or None."""
        from mlops_assets.lib.trials import trial_policy_from_json

        version = self.version_by_alias(model_tags.TRIAL)
        if version is None:
            return None
        tags = version.tags
        return Trial(
            version=str(version.version),
            champion_version=tags[model_tags.TRIAL_CHAMPION],
            start_day=date.fromisoformat(tags[model_tags.TRIAL_START_DAY]),
            policy=trial_policy_from_json(tags[model_tags.TRIAL_POLICY], model_tags.TRIAL_POLICY),
            mlflow_run_id=str(version.run_id),
        )

    def start_trial(self, challenger: Any, champion: Any, start_day: date, policy: Any) -> Trial:
        """Puts ``challenger`` on trial against ``champion`` from ``start_day`` under ``policy``.

        A trial still running is ended first (retired, superseded by this one).
        """
        client, name, version = self.client(), self.model_name, str(challenger.version)
        running = self.trial()
        if running is not None and running.version != version:
            self.end_trial(running, "retired", f"superseded by v{version}", "gate")
        tags = {
            model_tags.TRIAL_STATE: "running",
            model_tags.TRIAL_START_DAY: start_day.isoformat(),
            model_tags.TRIAL_CHAMPION: str(champion.version),
            model_tags.TRIAL_MODE: policy.mode,
            model_tags.TRIAL_SHARE: str(policy.share),
            model_tags.TRIAL_POLICY: json.dumps(policy.as_dict(), sort_keys=True),
        }
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
        client.set_registered_model_alias(name, model_tags.TRIAL, version)
        found = self.trial()
        assert found is not None  # the alias was just set
        return found

    def end_trial(self, trial: Trial, state: str, reason: str, actor: str) -> None:
        """Ends ``trial`` (promoted, retired or aborted): the alias goes, who/when/why stay."""
        client, name = self.client(), self.model_name
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        client.set_model_version_tag(name, trial.version, model_tags.TRIAL_STATE, state)
        client.set_model_version_tag(name, trial.version, model_tags.TRIAL_REASON, reason)
        client.set_model_version_tag(
            name, trial.version, model_tags.TRIAL_ENDED, f"{stamp} by {actor}"
        )
        current = self.version_by_alias(model_tags.TRIAL)
        if current is not None and str(current.version) == trial.version:
            client.delete_registered_model_alias(name, model_tags.TRIAL)

    def ensure_experiment(self) -> str:
        """Creates the experiment with its artifact location if it does not exist yet."""
        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(
                parents=True, exist_ok=True
            )
        client = self.client()
        found = client.get_experiment_by_name(self.experiment)
        if found is not None:
            return str(found.experiment_id)
        return str(
            client.create_experiment(
                self.experiment, artifact_location=self.artifact_location or None
            )
        )

    def close_abandoned_runs(self, asset: str, current_dagster_run: str) -> list[str]:
        """Marks runs of ``asset`` still RUNNING from other Dagster runs as KILLED."""
        client = self.client()
        experiment = self.ensure_experiment()
        stale = client.search_runs(
            [experiment],
            filter_string=f"attributes.status = 'RUNNING' and tags.`mlops.asset_key` = '{asset}'",
        )
        closed = []
        for run in stale:
            if run.data.tags.get(model_tags.DAGSTER_RUN_ID_RUN_TAG) != current_dagster_run:
                client.set_terminated(run.info.run_id, status="KILLED")
                closed.append(run.info.run_id)
        return closed

    @contextlib.contextmanager
    def training_run(
        self, context: dg.AssetExecutionContext, tags: Mapping[str, str]
    ) -> Iterator[Any]:
        """The MLflow run of this Dagster run for this asset, always ended on exit.

        Yields:
            The ``mlflow.ActiveRun``.
        """
        import mlflow
        from dagster_mlflow import mlflow_tracking

        settings.telemetry_off()
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        self.ensure_experiment()
        asset = context.asset_key.to_user_string()
        closed = self.close_abandoned_runs(asset, context.run.run_id)
        if closed:
            context.log.warning(f"closed MLflow runs left RUNNING by killed runs: {closed}")
        config = {
            "experiment_name": self.experiment,
            "mlflow_tracking_uri": self.tracking_uri,
            "extra_tags": {model_tags.ASSET_KEY: asset, **project_fingerprint(), **tags},
        }
        # Initialized here rather than as a resource of the asset: only this step pays for the
        # import, the run starts when training does, and the data tags are known by then.
        # The resource reads the Dagster run from its init context, which build_resources
        # provides (build_init_resource_context cannot).
        with dg.build_resources(
            {"mlflow": mlflow_tracking},
            instance=context.instance,
            resource_config={"mlflow": {"config": config}},
            dagster_run=context.run,
            log_manager=context.log,
        ):
            run = mlflow.active_run()  # found by the Dagster run id tag, or just started
            try:
                yield run
            except BaseException:
                mlflow.end_run(status="FAILED")
                raise
            else:
                mlflow.end_run(status="FINISHED")


def local_tracking(state: Path) -> MlflowTracking:
    """The embedded default: a SQLite store and an artifact folder in the state folder."""
    where = settings.Locations(state)
    return MlflowTracking(
        tracking_uri=f"sqlite:///{where.tracking_db}",
        artifact_location=where.artifacts.as_uri(),
    )
