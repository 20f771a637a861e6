"""``mlops-assets``: replay the data source, run the main job, restore versioned data."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import sys
import time
import warnings
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from mlops_assets import settings


def prepare_dagster_home() -> Path:
    """Points ``DAGSTER_HOME`` at the state folder and installs the instance config there."""
    home = settings.locations().dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = settings.project_root() / "dagster.yaml"
    installed = home / "dagster.yaml"
    if config.exists() and (
        not installed.exists() or installed.read_bytes() != config.read_bytes()
    ):
        shutil.copyfile(config, installed)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


# Dagster beta and preview APIs this project uses on purpose, as (category, message start).
# Dagster warns at every use, which would bury the main job's output; each is ignored by its
# category and message, nothing else.
DELIBERATE_PREVIEWS = (
    # Checks per daily partition: the contract and performance checks of each day.
    ("PreviewWarning", "Specifying a partitions_def on an AssetCheckSpec"),
    # Content-hash data versions of the validated outputs (staleness and lineage).
    ("BetaWarning", "Parameter `data_version` of initializer `Output.__init__`"),
    # Raised inside dg.evaluate_automation_conditions, which the local daemon ticks.
    ("BetaWarning", "Parameter `include_sources` of function `AssetSelection.all`"),
    # dagster-mlflow: the mlflow_tracking resource of resources/tracking.py (the MLflow run of
    # a Dagster run), the MlFlow object it returns, and the hook the package defines on import.
    ("BetaWarning", "Dagster resource `mlflow_tracking`"),
    ("BetaWarning", "Class `MlFlow`"),
    ("BetaWarning", "Function `_create_mlflow_run_hook`"),
)


def ignore_deliberate_previews() -> None:
    """Ignores exactly the warnings of ``DELIBERATE_PREVIEWS``, before Dagster is imported.

    Matched by their message (the category names are Dagster's classes: importing Dagster
    here would cost every command its import time).
    """
    for _category, message in DELIBERATE_PREVIEWS:
        warnings.filterwarnings("ignore", message=re.escape(message))


def _replay(args: argparse.Namespace) -> int:
    from mlops_assets.lib.replay import replay

    landing = Path(args.landing) if args.landing else settings.locations().landing
    summary = replay(landing, args.start, args.days, skip_existing=args.skip_existing)
    print(
        f"replayed {len(summary.days)} day(s) {summary.days[0]} .. {summary.days[-1]} "
        f"into {landing}: {len(summary.files)} file(s), rows {summary.rows}"
    )
    return 0


def _landing_manifest(args: argparse.Namespace) -> int:
    from mlops_assets.lib.landing import LandingFileError
    from mlops_assets.lib.manifest import write_manifest

    landing = Path(args.landing) if args.landing else settings.locations().landing
    try:
        manifest = write_manifest(landing, args.day)
    except LandingFileError as error:
        return _failed(error)
    files = ", ".join(f"{key} ({e.rows} rows)" for key, e in sorted(manifest.files.items()))
    print(f"wrote {landing}/manifests/{args.day}.json: {files}")
    return 0


def _add_landing_manifest(sub: Any) -> None:
    manifest = sub.add_parser(
        "landing-manifest",
        help="write a day's manifest for the files in the landing zone (rows, bytes, sha256): "
        "the signal that the day is complete, for an upstream that cannot write it",
    )
    manifest.add_argument("--day", type=date.fromisoformat, required=True, help="e.g. 2013-01-05")
    manifest.add_argument("--landing", help="landing root (default: <state>/landing)")
    manifest.set_defaults(func=_landing_manifest)


# The main job's default window: a champion trained on three weeks of July decays in early
# August, the retraining's challenger passes the gate and a three-day shadow trial promotes
# it (docs/monitoring.md). The retraining's 28-day window lies inside the replayed days.
DEMO_START = date(2013, 7, 9)
DEMO_BOOTSTRAP_DAYS = 21
DEMO_DAYS = 31  # in all, bootstrap included


def _demo(args: argparse.Namespace) -> int:
    from mlops_assets.lib.replay import replay

    where = settings.locations()
    started = time.perf_counter()
    prepare_dagster_home()
    until = args.until or args.start + timedelta(days=args.days - 1)
    if until < args.start + timedelta(days=args.bootstrap_days):
        print("error: --until must leave days to replay after the bootstrap", file=sys.stderr)
        return 2

    def deliver(first: date, days: int) -> None:
        replay(where.landing, first, days, skip_existing=True)

    import dagster as dg

    from mlops_assets.definitions import defs
    from mlops_assets.defs.observability import METRICS_SENSOR
    from mlops_assets.defs.retraining import RETRAIN_SENSOR
    from mlops_assets.defs.trials import TRIAL_SENSOR
    from mlops_assets.demo import read_history, run_closed_loop, summary_table
    from mlops_assets.local_daemon import LocalDaemon

    print(
        f"closed loop on {args.start} .. {until}: bootstrap {args.bootstrap_days} days, "
        f"then day by day (state {where.state})"
    )
    with dg.DagsterInstance.get() as instance:
        loop = LocalDaemon(
            defs,
            instance,
            where.dagster_home / "local_loop_cursors.json",
            extra_sensors=(RETRAIN_SENSOR, TRIAL_SENSOR, METRICS_SENSOR),
        )
        report = run_closed_loop(
            defs,
            instance,
            loop,
            deliver,
            start=args.start,
            bootstrap_days=args.bootstrap_days,
            until=until,
        )
        outcomes = report.bootstrap + report.replay
        failed = [o.partition or ",".join(o.assets) for o in outcomes if not o.success]
        which = f": {', '.join(dict.fromkeys(failed))}" if failed else ""
        print(
            f"\n{len(report.days)} day(s) replayed, {len(outcomes)} runs "
            f"({len(failed)} failed{which}) in {report.seconds:.0f} s\n"
        )
        print(summary_table(read_history(instance), outcomes))
        _print_deployment(instance)
    print("\nresults:")
    print(f"  lake (Parquet)        {where.lake}")
    print(f"  drift reports (HTML)  {where.reports}  (make reports)")
    print(f"  data registry (DVC)   {where.data_registry}  (remote {where.dvc_remote})")
    print(f"  MLflow store          {where.mlflow}  (make mlflow-ui)")
    print(f"  Dagster home          {where.dagster_home}")
    print(f"  done in {time.perf_counter() - started:.1f} s; the history in the UI: make dev")
    return 0


def _print_deployment(instance: Any) -> None:
    import dagster as dg

    event = instance.get_latest_materialization_event(dg.AssetKey("bento"))
    predicted = instance.get_materialized_partitions(dg.AssetKey("batch_predictions"))
    print("\ndeployment:")
    if event is None or event.asset_materialization is None:
        print("  no bento (no champion was promoted)")
        return
    meta = {k: v.value for k, v in event.asset_materialization.metadata.items()}
    print(f"  bento {meta['bento_tag']} serving {meta['model_name']} v{meta['model_version']}")
    print(f"  exported to {meta['export_path']}")
    print(f"  batch predictions for {len(predicted)} day(s); serve the model: make serve")
    _print_releases(instance)  # [template:only with_service_delivery]


def _print_releases(instance: Any) -> None:
    """One line per release commit of the deployment repository, oldest first."""
    from mlops_assets.defs.deployment import release

    records = instance.fetch_materializations(release.key, limit=1000).records
    released = [
        {k: v.value for k, v in r.asset_materialization.metadata.items()}
        for r in reversed(records)
        if r.asset_materialization is not None
    ]
    print(f"  {len(released)} release(s) in the deployment repository (GitOps):")
    for meta in released:
        where = f"v{meta['model_version']} on {meta['live_colour']}"
        print(f"    {meta['status']:<9} {where:<14} {meta['reason']}")
    if released:
        print(f"  manifests: uv run kubectl kustomize {released[-1]['repository']}")


def _failed(error: Exception) -> int:
    """A known error of a command (bad input, a check that says no): one line, exit status 1."""
    print(f"error: {error}", file=sys.stderr)
    return 1


def _restore(args: argparse.Namespace) -> int:
    from mlops_assets.lib.data_registry import DataRegistryError
    from mlops_assets.resources.environments import resolved

    where = settings.locations()
    with resolved("data_registry") as resources:  # local or production flavour
        registry = resources.data_registry.open()
    path = f"{args.dataset}/{args.partition}.parquet"
    out = Path(args.out) if args.out else where.state / "restored" / args.rev[:12] / path
    try:
        expected = registry.recorded_md5(path, args.rev)
        digest = registry.restore(path, args.rev, out, expected_md5=expected)
    except DataRegistryError as error:
        return _failed(error)
    print(f"restored {path} at registry revision {args.rev} -> {out} (md5 {digest}, verified)")
    return 0


def _dev(args: argparse.Namespace) -> int:
    home = prepare_dagster_home()
    os.chdir(settings.project_root())
    _fail_orphaned_runs(home)
    command = [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        "-h",
        args.host,
        "-p",
        str(args.port),
        "-w",
        "workspace.yaml",
    ]
    print(f"Dagster UI on http://{args.host}:{args.port} (DAGSTER_HOME={home})", flush=True)
    # A background shell job inherits SIGINT as ignored, and dagster dev treats SIGTERM as
    # SIGINT: restore the default so `kill` stops it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.execv(sys.executable, command)
    return 0  # pragma: no cover


def _fail_orphaned_runs(home: Path) -> None:
    """Fails runs a stopped server left in progress (``orphans.py``) before the next starts."""
    if not (home / "history").exists():  # a new instance has no runs
        return
    import dagster as dg

    from mlops_assets.orphans import fail_orphaned_runs

    with dg.DagsterInstance.from_config(str(home)) as instance:
        for run_id in fail_orphaned_runs(instance):
            print(f"run {run_id} was left in progress by a stopped server: marked failed")


# [template:if with_observability]
def _observe(args: argparse.Namespace) -> int:
    from mlops_assets import observe

    ports = {
        observe.PROMETHEUS: args.prometheus_port,
        observe.PUSHGATEWAY: args.pushgateway_port,
        observe.ALERTMANAGER: args.alertmanager_port,
        "receiver": args.receiver_port,
    }
    where = settings.locations()
    try:
        timings = observe.TIMINGS[args.timings]
        observe.run_foreground(where.observability, ports, args.service_port, timings=timings)
    except (observe.MissingToolError, observe.PortInUseError) as error:
        return _failed(error)
    return 0


# [template:end]
# [template:if with_streaming]
def _stream_score(args: argparse.Namespace) -> int:
    import logging

    from mlops_assets.lib import logs
    from mlops_assets.lib.pseudonyms import PseudonymKeyError
    from mlops_assets.streaming.brokers import BrokerUrlError, stream_url
    from mlops_assets.streaming.microbatch import ScorerSettings
    from mlops_assets.streaming.scorer import run_foreground

    if settings.log_format() == "json":
        logs.use_json()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = ScorerSettings(
        max_events=args.max_events,
        max_wait_s=args.max_wait_ms / 1000,
        ack_wait_s=args.ack_wait,
        poll_s=args.poll,
    )
    try:
        run_foreground(args.url or stream_url(), config)
    except (BrokerUrlError, PseudonymKeyError, ConnectionError) as error:
        return _failed(error)
    except KeyboardInterrupt:  # while waiting for a champion
        pass
    return 0


def _add_stream_score(sub: Any) -> None:
    from mlops_assets.streaming.microbatch import ScorerSettings  # standard library at import

    defaults = ScorerSettings()
    score = sub.add_parser(
        "stream-score",
        help="score flights.scheduled events with the published champion, in micro-batches, "
        "until SIGTERM/SIGINT: predictions to the stream sink and flights.predictions, refused "
        "events to flights.dead_letter (docs/streaming.md)",
    )
    score.add_argument(
        "--url",
        default=None,
        help="the broker (default: $MLOPS_STREAM_URL or nats://127.0.0.1:4222)",
    )
    score.add_argument(
        "--max-events", type=int, default=defaults.max_events, help="events per micro-batch at most"
    )
    score.add_argument(
        "--max-wait-ms",
        type=float,
        default=defaults.max_wait_s * 1000,
        help="a batch is scored when full or this long after its first fetch",
    )
    score.add_argument(
        "--ack-wait",
        type=float,
        default=defaults.ack_wait_s,
        help="NATS: seconds before an unacknowledged event is delivered again",
    )
    score.add_argument(
        "--poll",
        type=float,
        default=defaults.poll_s,
        help="seconds between two looks for a new champion (between micro-batches)",
    )
    score.set_defaults(func=_stream_score)


# [template:end]
def _reproduce(args: argparse.Namespace) -> int:
    from mlops_assets.lib.reproduce import ReproductionError, reproduce
    from mlops_assets.resources.environments import resolved

    try:
        with resolved("tracking", "data_registry") as resources:
            registry = resources.data_registry.open()
            result = reproduce(resources.tracking, registry, args.model_version)
    except ReproductionError as error:
        return _failed(error)
    print(
        f"model version {args.model_version}: training set {result.data_path} "
        f"@ {result.data_rev[:10]} (md5 {result.data_md5}, verified)"
    )
    print(f"{'metric':24} {'recorded':>20} {'reproduced':>20}")
    for name in sorted(result.recorded):
        again = result.reproduced.get(name, float("nan"))
        print(f"{name:24} {result.recorded[name]:>20.12g} {again:>20.12g}")
    print("identical" if result.identical else "DIFFERENT")
    return 0 if result.identical else 2


def _rollback(args: argparse.Namespace) -> int:
    from mlops_assets.undo import rollback

    def act(resources: Any, instance: Any, by: str) -> str:
        moved = rollback(resources.tracking, instance, args.reason, by, trail=resources.audit)
        aborted = f"; v{moved.aborted_trial}'s trial aborted" if moved.aborted_trial else ""
        return f"champion moved back from v{moved.from_version} to v{moved.to_version}{aborted}"

    return _undo(args, act)


def _trial_abort(args: argparse.Namespace) -> int:
    from mlops_assets.undo import abort_trial

    def act(resources: Any, instance: Any, by: str) -> str:
        version = abort_trial(resources.tracking, instance, args.reason, by, trail=resources.audit)
        return f"trial of v{version} aborted: traffic goes back to the champion"

    return _undo(args, act)


def _release_revert(args: argparse.Namespace) -> int:
    from mlops_assets.resources.environments import resolved
    from mlops_assets.undo import revert_release

    def act(resources: Any, instance: Any, by: str) -> str:
        with resolved("deployment_repo") as repo:
            return revert_release(
                repo.deployment_repo, instance, args.reason, by, trail=resources.audit
            )

    return _undo(args, act)


def _undo(args: argparse.Namespace, act: Any) -> int:
    """Runs an undo on the registry and the instance, printing what it did (or why not)."""
    import dagster as dg

    from mlops_assets.lib.audit import AuditError
    from mlops_assets.resources.environments import resolved
    from mlops_assets.undo import UndoError, actor

    prepare_dagster_home()
    by = actor(args.actor)
    try:
        with resolved("tracking", "audit") as resources, dg.DagsterInstance.get() as instance:
            done = act(resources, instance, by)
    except UndoError as error:
        return _failed(error)
    except AuditError as error:  # a writer raced it into an unreadable trail after the check
        return _failed(RuntimeError(f"{args.command} was done but not recorded: {error}"))
    print(f"{done} (by {by}: {args.reason})")
    return 0


def _audit(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from mlops_assets.lib import audit
    from mlops_assets.resources.environments import resolved

    with resolved("audit") as resources:
        trail = resources.audit
        if args.verify:
            result = trail.verify()
            if not result.ok:
                return _failed(
                    RuntimeError(
                        f"the audit trail at {trail.url} is broken at {result.first_bad}: "
                        f"{result.problem} ({result.records} record(s) before it check out)"
                    )
                )
            print(f"intact: {result.records} record(s), head {result.head}")
            return 0
        try:
            records = trail.records()
        except ValueError as error:
            return _failed(RuntimeError(f"the audit trail at {trail.url}: {error}"))
    shown = records[-args.last :] if args.last else records
    if args.json:
        for record in shown:
            print(json.dumps(asdict(record), sort_keys=True, ensure_ascii=False))
    else:
        print(audit.text_table(shown))
    return 0


def _add_audit(sub: Any) -> None:
    trail = sub.add_parser(
        "audit",
        help="print the audit trail (who did what, when and why), or check its hash chain",
    )
    trail.add_argument("--json", action="store_true", help="one JSON object per line")
    trail.add_argument("--last", type=int, default=0, help="only the last N records")
    trail.add_argument(
        "--verify",
        action="store_true",
        help="check the chain: exit 0 when intact, 1 naming the first bad record",
    )
    trail.set_defaults(func=_audit)


def _decide(args: argparse.Namespace) -> int:
    """Approves or rejects the version pending approval (``defs/approval.py``)."""
    import dagster as dg

    from mlops_assets.defs.approval import decide
    from mlops_assets.lib.approval import ApprovalError
    from mlops_assets.resources.environments import resolved

    prepare_dagster_home()
    request = (str(args.version), args.decision, args.actor, args.reason)
    try:
        with resolved("tracking", "audit") as found, dg.DagsterInstance.get() as instance:
            done = decide(found.tracking, found.audit, instance, request)
    except ApprovalError as error:
        return _failed(error)
    print(f"{done} (by {args.actor}{': ' + args.reason if args.reason else ''})")
    return 0


def _add_approval(sub: Any) -> None:
    for decision, what in (
        ("approve", "promote the version pending approval (MLOPS_APPROVAL_POLICY)"),
        ("reject", "reject the version pending approval: the champion stays"),
    ):
        command = sub.add_parser(decision, help=what)
        command.add_argument("--version", required=True, help="the pending model version")
        command.add_argument("--actor", required=True, help="who decides: one of the approvers")
        command.add_argument("--reason", required=decision == "reject", default="")
        command.set_defaults(func=_decide, decision=decision)


def _ui_check(args: argparse.Namespace) -> int:
    from mlops_assets import ui_check

    return ui_check.run(
        args.state,
        args.out,
        chromium=args.chromium,
        startup_timeout=args.startup_timeout,
        graph_timeout=args.graph_timeout,
        viewport=(args.width, args.height),
    )


def _service_image(args: argparse.Namespace) -> int:
    from mlops_assets import service_image

    return service_image.run(
        bento=args.bento,
        from_export=args.from_export,
        repository=args.repository,
        push=args.push,
        dry_run=args.dry_run,
    )


def _add_service_image(sub: Any) -> None:
    from mlops_assets.lib.release import DEFAULT_IMAGE_REPOSITORY, IMAGE_REPOSITORY_VAR

    image = sub.add_parser(
        "service-image",
        help="build the prediction service's image from a bento (bentoml containerize, needs "
        "a Docker engine); prints the image reference last",
    )
    source = image.add_mutually_exclusive_group()
    source.add_argument("--bento", help="bento tag (default: the service's newest bento)")
    source.add_argument(
        "--from-export", type=Path, help="import this exported .bento archive first"
    )
    image.add_argument(
        "--repository",
        help=f"image repository (default: ${IMAGE_REPOSITORY_VAR} or {DEFAULT_IMAGE_REPOSITORY})",
    )
    image.add_argument("--push", action="store_true", help="docker push the image")
    image.add_argument(
        "--dry-run", action="store_true", help="print the commands and the image, run nothing"
    )
    image.set_defaults(func=_service_image)


def _registry_accounts(_: argparse.Namespace) -> int:
    from mlops_assets import registry_access

    try:
        return registry_access.run_accounts(os.environ)
    except registry_access.RegistryAccessError as error:
        return _failed(error)


def _registry_auth_config(args: argparse.Namespace) -> int:
    from mlops_assets import registry_access

    try:
        database = os.environ.get(registry_access.AUTH_DATABASE_VAR, "")
        print(registry_access.write_auth_config(args.path, database))
    except registry_access.RegistryAccessError as error:
        return _failed(error)
    return 0


def _add_registry_access(sub: Any) -> None:
    accounts = sub.add_parser(
        "registry-accounts",
        help="as MLflow's administrator: create or update the pipeline's and the reader's "
        "registry accounts and their grants (docs/deploy.md#access-control)",
    )
    accounts.set_defaults(func=_registry_accounts)
    config = sub.add_parser(
        "registry-auth-config",
        help="write the configuration of `mlflow server --app-name basic-auth` "
        "(accounts database from $MLFLOW_AUTH_DATABASE_URI)",
    )
    config.add_argument("path", type=Path)
    config.set_defaults(func=_registry_auth_config)


def _where(_: argparse.Namespace) -> int:
    where = settings.locations()
    for name in ("state", "dagster_home", "landing", "lake", "data_registry", "dvc_remote"):
        print(f"{name:13} {getattr(where, name)}")
    if settings.environment() == "local":
        from mlops_assets.lib.relocation import relocate

        moved = relocate(where)  # as opening the resources would: a copy is re-pointed
        if moved is not None:
            print(f"{'re-pointed':13} from {moved.previous}, where it was last opened")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(prog="mlops-assets", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_data(sub)
    _add_demo(sub)
    _add_lineage(sub)
    _add_undo(sub)
    _add_approval(sub)
    dev = sub.add_parser("dev", help="dagster dev (UI + daemon) on the local state")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=3000)
    dev.set_defaults(func=_dev)
    _add_service_image(sub)
    _add_stream_score(sub)  # [template:only with_streaming]
    _add_registry_access(sub)
    from mlops_assets.serving import tokens  # standard library; PyJWT when a command runs

    tokens.add_parser(sub)
    _add_audit(sub)
    _add_observe(sub)  # [template:only with_observability]
    _add_stream_tools(sub)  # [template:only with_streaming]
    where = sub.add_parser(
        "where", help="print where the local state lives (and re-point a copied or moved one)"
    )
    where.set_defaults(func=_where)
    _add_ui_check(sub)
    return parser


def _add_data(sub: Any) -> None:
    """``replay`` and ``landing-manifest``: days of the data source into the landing zone."""
    replay = sub.add_parser(
        "replay", help="copy days from the data source (lib/source.py) into the landing zone"
    )
    replay.add_argument("--start", type=date.fromisoformat, default=settings.PARTITION_START)
    replay.add_argument("--days", type=int, default=28)
    replay.add_argument("--landing", help="landing root (default: <state>/landing)")
    replay.add_argument("--skip-existing", action="store_true")
    replay.set_defaults(func=_replay)
    _add_landing_manifest(sub)


def _add_demo(sub: Any) -> None:
    """``demo``: the main job."""
    demo = sub.add_parser(
        "demo",
        help="main job: bootstrap a champion, then replay days through the closed loop",
    )
    demo.add_argument("--start", type=date.fromisoformat, default=DEMO_START)
    demo.add_argument(
        "--bootstrap-days",
        type=int,
        default=DEMO_BOOTSTRAP_DAYS,
        help="days before the first training",
    )
    demo.add_argument("--days", type=int, default=DEMO_DAYS, help="days in all, bootstrap included")
    demo.add_argument(
        "--until", type=date.fromisoformat, help="last day replayed (overrides --days)"
    )
    demo.set_defaults(func=_demo)


def _add_lineage(sub: Any) -> None:
    """``restore`` and ``reproduce``: data and models back from their recorded versions."""
    restore = sub.add_parser("restore", help="restore a versioned dataset from the data registry")
    restore.add_argument("dataset", help="e.g. flight_features")
    restore.add_argument("partition", help="e.g. 2013-01-05")
    restore.add_argument("--rev", required=True, help="registry_rev from the materialization")
    restore.add_argument("--out", help="output file (default: <state>/restored/<rev>/...)")
    restore.set_defaults(func=_restore)
    reproduce = sub.add_parser(
        "reproduce", help="restore a model's training data and retrain it with its recorded config"
    )
    reproduce.add_argument("--model-version", required=True, help="registered model version")
    reproduce.set_defaults(func=_reproduce)


# The undo commands: each records who undid what, when and why.
UNDO_COMMANDS = (
    (
        "rollback",
        _rollback,
        "move the champion alias to the previous champion (aborts a running trial)",
        "manual rollback",
        "who rolls back",
    ),
    (
        "trial-abort",
        _trial_abort,
        "end the running trial: retire the challenger, champion only",
        "manual abort",
        "who aborts",
    ),
    (
        "release-revert",
        _release_revert,
        "revert the newest release in the deployment repository (traffic flips back)",
        "manual revert",
        "who reverts",
    ),
)


def _add_undo(sub: Any) -> None:
    """``rollback``, ``trial-abort``, ``release-revert``."""
    for name, func, what, reason, actor in UNDO_COMMANDS:
        undo = sub.add_parser(name, help=what)
        undo.add_argument("--reason", default=reason)
        undo.add_argument("--actor", help=f"{actor} (default: the OS user)")
        undo.set_defaults(func=func)


def _add_ui_check(sub: Any) -> None:
    """``ui-check``: the lineage graph in headless Chromium."""
    from mlops_assets import ui_check  # standard library only; Playwright when the check runs

    ui = sub.add_parser(
        "ui-check",
        help="start the UI, screenshot the asset lineage graph in headless Chromium and check "
        "it shows every asset and group (a development check: needs the dev dependencies)",
    )
    ui.add_argument(
        "--state",
        type=Path,
        default=None,
        help=f"state folder (default: ${settings.STATE_DIR_VAR} or ./state)",
    )
    ui.add_argument(
        "--out", type=Path, default=None, help="PNG to write (default: <state>/ui/lineage.png)"
    )
    ui.add_argument(
        "--chromium",
        default=None,
        help=f"Chromium binary (default: ${ui_check.CHROMIUM_VAR} or PATH)",
    )
    ui.add_argument("--width", type=int, default=ui_check.VIEWPORT[0])
    ui.add_argument("--height", type=int, default=ui_check.VIEWPORT[1])
    ui.add_argument("--startup-timeout", type=float, default=ui_check.STARTUP_TIMEOUT)
    ui.add_argument("--graph-timeout", type=float, default=ui_check.GRAPH_TIMEOUT)
    ui.set_defaults(func=_ui_check)


# [template:if with_observability]
def _add_observe(sub: Any) -> None:
    from mlops_assets import observe  # standard library and PyYAML

    stack = sub.add_parser(
        "observe",
        help="Prometheus, the Pushgateway, Alertmanager and an alert receiver on 127.0.0.1, "
        "scraping the service (make serve); alerts printed and kept in <state>/observability",
    )
    ports = observe.DEFAULT_PORTS
    stack.add_argument("--prometheus-port", type=int, default=ports[observe.PROMETHEUS])
    stack.add_argument("--pushgateway-port", type=int, default=ports[observe.PUSHGATEWAY])
    stack.add_argument("--alertmanager-port", type=int, default=ports[observe.ALERTMANAGER])
    stack.add_argument(
        "--receiver-port",
        type=int,
        default=ports["receiver"],
        help="the webhook receiver (the port of deploy/observability/alertmanager.yml)",
    )
    stack.add_argument("--service-port", type=int, default=observe.DEFAULT_SERVICE_PORT)
    stack.add_argument(
        "--timings",
        choices=sorted(observe.TIMINGS),
        default="production",
        help="production: the files' scrape interval and alert durations; demo: seconds, so "
        "alerts fire while `make demo` replays days",
    )
    stack.set_defaults(func=_observe)


# [template:end]
# [template:if with_streaming]
def _stream_replay(args: argparse.Namespace) -> int:
    from mlops_assets.streaming import replay
    from mlops_assets.streaming.brokers import BrokerUrlError, stream_url

    url = args.url or stream_url()
    try:
        report = replay.replay_day(url, args.day, args.rate, args.limit)
    except (ValueError, BrokerUrlError, replay.BrokerUnavailableError) as error:
        return _failed(error)
    print(f"{args.day.isoformat()} to {url}: {report.summary()}")
    return 0


def _stream_broker(args: argparse.Namespace) -> int:
    from mlops_assets.streaming import local, nats_server

    store = args.store or nats_server.default_store()
    replay = local.Replay(args.replay_day, args.rate) if args.replay_day else None
    try:
        local.run_foreground(
            store, args.port, dict(os.environ), scorer=args.with_scorer, replay=replay
        )
    except nats_server.NatsServerError as error:
        return _failed(error)
    return 0


def _add_stream_tools(sub: Any) -> None:
    from mlops_assets.streaming.nats_server import DEFAULT_PORT  # standard library only

    replay = sub.add_parser(
        "stream-replay",
        help="publish a day's scheduled flights of the data source as events "
        "(flights.scheduled), paced at --rate events per second",
    )
    replay.add_argument("--day", type=date.fromisoformat, required=True, help="YYYY-MM-DD")
    replay.add_argument("--rate", type=float, default=100.0, help="events per second")
    replay.add_argument("--limit", type=int, default=None, help="only the first K flights")
    replay.add_argument(
        "--url",
        default=None,
        help="the broker (default: $MLOPS_STREAM_URL or nats://127.0.0.1:4222)",
    )
    replay.set_defaults(func=_stream_replay)
    broker = sub.add_parser(
        "stream-broker",
        help="a local NATS server with JetStream on 127.0.0.1 (store: <state>/stream/nats) "
        "until Ctrl-C",
    )
    broker.add_argument("--port", type=int, default=DEFAULT_PORT)
    broker.add_argument("--store", type=Path, default=None, help="JetStream's store folder")
    broker.add_argument(
        "--with-scorer", action="store_true", help="also run the scorer (mlops-assets stream-score)"
    )
    broker.add_argument(
        "--replay-day", type=date.fromisoformat, default=None, help="then replay this day"
    )
    broker.add_argument("--rate", type=float, default=100.0, help="events per second (replay)")
    broker.set_defaults(func=_stream_broker)


# [template:end]
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mlops-assets``."""
    settings.telemetry_off()
    # Keep the command's own output readable: MLflow logs every step at INFO and draws
    # progress bars. It sets its loggers' level from this variable when it is imported.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    ignore_deliberate_previews()
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
