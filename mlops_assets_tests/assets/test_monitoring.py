"""Monitoring on a real state: reports follow predictions, the retraining sensor acts once.

The state is deployed through the real graph (three weeks, a champion, its Bento, one
predicted day); the tests land more real days, some of them degraded on purpose (labels
shuffled among the day's flights, so the champion is no better than chance there), and drive
the same sensors and automation the daemon runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import evidently
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from mlops_assets.defs.jobs import AS_OF_TAG, REASON_TAG, TRAINING_JOB
from mlops_assets.defs.monitoring import DRIFT_CHECK
from mlops_assets.defs.retraining import POLICY_VAR, RETRAIN_SENSOR, retrain_policy
from mlops_assets.lib.features import KEY_COLUMNS, LABEL_COLUMN
from mlops_assets.lib.report_assets import VIEWER, VIEWER_HTML, read_page
from mlops_assets_tests.deployed import PREDICT_DAY, Deployment, deployed_copy, shuffle_labels

DAY = PREDICT_DAY.isoformat()
NO_LABELS_DAY = PREDICT_DAY + timedelta(days=1)
DEGRADED = [PREDICT_DAY + timedelta(days=2), PREDICT_DAY + timedelta(days=3)]
EMPTY_DAY = "2013-02-20"
# A short policy so two degraded days decide (the defaults need a week).
TEST_POLICY = {
    "window_days": 2,
    "min_new_days": 1,
    "cooldown_days": 5,
    "drift_days": 30,
    "training_days": 21,
    "validation_days": 5,
}


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, deployed_state: Path
) -> Iterator[Deployment]:
    # The policy is read by the retraining sensor only, which the deployment did not tick.
    state = tmp_path_factory.mktemp("monitoring") / "state"
    with pytest.MonkeyPatch.context() as mp, deployed_copy(deployed_state, state) as copy:
        mp.setenv(POLICY_VAR, json.dumps(TEST_POLICY))
        yield copy


def lake(deployment: Deployment, asset: str, day: str) -> pd.DataFrame:
    return pd.read_parquet(deployment.state / "lake" / asset / f"{day}.parquet")


def check_record(deployment: Deployment, day: str) -> Any:
    key = dg.AssetCheckKey(dg.AssetKey("drift_report"), DRIFT_CHECK)
    records = deployment.instance.event_log_storage.get_asset_check_execution_history(key, limit=50)
    for record in records:
        evaluation = record.event.dagster_event.event_specific_data  # type: ignore[union-attr]
        if evaluation.partition == day:
            return evaluation
    raise LookupError(f"no {DRIFT_CHECK} evaluation for {day}")


def test_reports_follow_the_predictions(deployment: Deployment) -> None:
    reference = deployment.metadata("drift_reference")
    assert reference["model_version"] == "1"
    assert reference["window"] == "2013-01-01 .. 2013-01-21"
    assert 0 < reference["sampled_rows"] <= reference["window_rows"]

    drift = deployment.metadata("drift_report", DAY)
    assert drift["model_version"] == "1" and drift["reference_model_version"] == "1"
    assert 0.0 <= drift["drift_share"] <= 1.0
    assert drift["status"] == ("drifted" if drift["drifted"] else "ok")
    assert drift["current_rows"] == len(lake(deployment, "flight_features", DAY))
    html, report = Path(drift["html"]), Path(drift["json"])
    assert html.name == f"{DAY}.html.gz"
    page = read_page(html.read_bytes())
    assert page.lstrip().lower().startswith("<") and "drawDashboard" in page
    # The page links Evidently's shared script instead of carrying its 3.5 MB, and is gzipped.
    assert html.stat().st_size < 150_000 < len(page)
    script = html.parents[1] / "assets" / f"evidently-{evidently.__version__}.js"
    assert f'src="../assets/{script.name}"' in page and script.stat().st_size > 10**6
    assert json.loads(report.read_text())
    # One click: the folder's viewer shows the gzipped page.
    assert drift["html_url"].endswith(f"/drift/{VIEWER}?report={DAY}")
    assert (html.parent / VIEWER).read_text() == VIEWER_HTML
    evaluation = check_record(deployment, DAY)
    assert evaluation.passed is (not drift["drifted"])
    assert evaluation.severity == dg.AssetCheckSeverity.WARN

    performance = deployment.metadata("model_performance", DAY)
    predictions = lake(deployment, "batch_predictions", DAY)
    labels = lake(deployment, "flight_features", DAY)
    joined = predictions.merge(labels[[*KEY_COLUMNS, LABEL_COLUMN]], on=KEY_COLUMNS)
    known = joined[joined[LABEL_COLUMN].notna()]
    expected = roc_auc_score(known[LABEL_COLUMN].astype(int), known["probability"])
    assert performance["status"] == "ok" and performance["usable"] is True
    assert performance["roc_auc"] == pytest.approx(expected, abs=1e-4)
    assert performance["labelled_rows"] == len(known)
    tracking = deployment.resources["tracking"]
    run = tracking.client().get_run(tracking.version_by_alias("champion").run_id)
    assert performance["validation_roc_auc"] == pytest.approx(run.data.metrics["roc_auc"], 1e-3)
    assert performance["window_end"] == "2013-01-21"


def test_a_day_without_labels_is_reported_and_not_judged(deployment: Deployment) -> None:
    def drop_arrivals(flights: pd.DataFrame) -> None:
        flights["arr_delay"] = "NA"
        flights["arr_time"] = "NA"

    deployment.land_edited(NO_LABELS_DAY, drop_arrivals)
    performance = deployment.metadata("model_performance", NO_LABELS_DAY.isoformat())
    assert performance["status"] == "no labels"
    assert performance["labelled_rows"] == 0 and performance["usable"] is False
    assert "roc_auc" not in performance
    assert performance["rows"] > 0 and "predicted_positive_rate" in performance
    # Nothing to judge: the sensor evaluates and requests nothing.
    context = dg.build_sensor_context(
        instance=deployment.instance, definitions=deployment.defs, sensor_name=RETRAIN_SENSOR
    )
    result = deployment.defs.get_sensor_def(RETRAIN_SENSOR).evaluate_tick(context)
    assert not result.run_requests
    assert "1 of 2 usable" in str(result.skip_message)


def test_drift_report_on_an_empty_day(deployment: Deployment) -> None:
    lake_root = deployment.state / "lake"
    before = (deployment.state / "reports" / "drift" / f"{DAY}.html.gz").read_bytes()
    for asset in ("flight_features", "batch_predictions"):
        empty = lake(deployment, asset, DAY).iloc[0:0]
        (lake_root / asset / f"{EMPTY_DAY}.parquet").write_bytes(empty.to_parquet(index=False))
    result = dg.materialize(
        list(deployment.defs.assets or []),  # type: ignore[arg-type]
        selection=["drift_report"],
        partition_key=EMPTY_DAY,
        instance=deployment.instance,
        resources=deployment.resources,
    )
    assert result.success
    meta = deployment.metadata("drift_report", EMPTY_DAY)
    assert meta["status"] == "empty day"
    assert meta["current_rows"] == 0 and "no rows" in meta["detail"].lower()
    evaluation = check_record(deployment, EMPTY_DAY)
    assert evaluation.passed and "nothing compared" in evaluation.description
    assert not (deployment.state / "reports" / "drift" / f"{EMPTY_DAY}.html.gz").exists()
    after = (deployment.state / "reports" / "drift" / f"{DAY}.html.gz").read_bytes()
    assert after == before


def test_decay_requests_one_retraining_and_a_losing_challenger_changes_nothing(
    deployment: Deployment,
) -> None:
    sensor = deployment.defs.get_sensor_def(RETRAIN_SENSOR)
    for day in DEGRADED:
        deployment.land_edited(day, shuffle_labels)
        assert deployment.metadata("model_performance", day.isoformat())["roc_auc"] < 0.6

    def tick(cursor: str | None) -> Any:
        context = dg.build_sensor_context(
            instance=deployment.instance,
            cursor=cursor,
            definitions=deployment.defs,
            sensor_name=RETRAIN_SENSOR,
        )
        return sensor.evaluate_tick(context)

    first = tick(None)
    assert len(first.run_requests) == 1
    request = first.run_requests[0]
    assert request.tags[REASON_TAG].startswith("performance decay")
    assert request.tags[AS_OF_TAG] == DEGRADED[-1].isoformat()
    assert request.run_config["ops"]["training_set"]["config"]["as_of"] == request.tags[AS_OF_TAG]
    # Evaluated again on the same data: nothing new, no request.
    again = tick(first.cursor)
    assert not again.run_requests and "no new monitoring" in str(again.skip_message)
    # A lost cursor (a restarted daemon) asks for the same run key, which the daemon skips.
    lost = tick(None)
    assert [r.run_key for r in lost.run_requests] == [request.run_key]

    tracking = deployment.resources["tracking"]
    bento_before = deployment.metadata("bento")
    bentos_before = deployment.count("bento")
    # The challenger must beat the champion by a margin it cannot reach.
    # Launched like the daemon launches the request (its job, its asset selection).
    result = deployment.defs.resolve_job_def(TRAINING_JOB).execute_in_process(
        asset_selection=list(request.asset_selection or []),
        instance=deployment.instance,
        run_config={
            "ops": {
                **request.run_config["ops"],
                "candidate_model": {"config": {"n_estimators": 60}},
                "model_gate": {"config": {"margin": 1.0, "min_roc_auc": 0.5, "min_pr_auc": 0.1}},
            }
        },
        tags={
            **request.tags,
            "dagster/sensor_name": RETRAIN_SENSOR,
            "dagster/run_key": str(request.run_key),
        },
    )
    assert result.success
    deployment.loop.run_until_idle()
    assert str(tracking.version_by_alias("champion").version) == "1"
    assert str(tracking.version_by_alias("challenger").version) == "2"
    assert deployment.count("bento") == bentos_before
    assert deployment.metadata("bento")["bento_tag"] == bento_before["bento_tag"]
    assert deployment.metadata("drift_reference")["model_version"] == "1"
    observations = deployment.instance.fetch_observations(
        dg.AssetKey("champion_model"), limit=1
    ).records
    decision = observations[0].asset_observation.metadata  # type: ignore[union-attr]
    assert decision["decision"].value == "rejected"
    assert "does not beat champion" in str(decision["reason"].value)
    version = tracking.client().get_model_version("flight_delay", "2")
    assert version.tags["mlops.gate"] == "rejected"
    # The loop's own sensor tick now finds the run key used: no second training.
    runs_before = len(deployment.instance.get_runs())
    assert deployment.loop.tick_sensor(RETRAIN_SENSOR) == []
    assert len(deployment.instance.get_runs()) == runs_before


def test_policy_override_is_validated() -> None:
    assert retrain_policy({POLICY_VAR: '{"window_days": 3}'}).window_days == 3
    with pytest.raises(ValueError, match="unknown field"):
        retrain_policy({POLICY_VAR: '{"windows": 3}'})
    with pytest.raises(ValueError, match="not valid JSON"):
        retrain_policy({POLICY_VAR: "window_days=3"})
    assert retrain_policy({}).window_days == 7
