"""Streamed predictions through the real graph: published champion, sensor, day, judgement.

A copy of the deployed state (champion v1 published by `scoring_bundle`, 2013-01-22 landed
and predicted in batch) receives micro-batches of that day's flights in the stream sink, as
the stream scorer writes them: scored in process with the published bundle after the
request contract and the pseudonym key, one event delivered twice. The stream sensor and
the automation the daemon runs record and judge the day; a promotion republishes the
bundle, and the flights scored after it name the new version.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from mlops_assets import settings
from mlops_assets.defs.streaming import STREAM_SENSOR
from mlops_assets.defs.training import TRIAL_POLICY_VAR
from mlops_assets.lib import scoring_bundles, stream_sink
from mlops_assets.lib.features import KEY_COLUMNS, LABEL_COLUMN
from mlops_assets.lib.pseudonyms import service_pseudonymizer
from mlops_assets.lib.scoring import request_model, score
from mlops_assets_tests.deployed import (
    PREDICT_DAY,
    Deployment,
    day_requests,
    deployed_copy,
    run_config,
)

DAY = PREDICT_DAY.isoformat()
# Flights streamed before the promotion; the rest are scored by the new champion.
BEFORE_PROMOTION = 600


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, deployed_state: Path) -> Iterator[Deployment]:
    with deployed_copy(deployed_state, tmp_path_factory.mktemp("streaming") / "state") as copy:
        yield copy


@pytest.fixture(scope="module")
def flights(world: Deployment) -> list[dict[str, Any]]:
    """The day's flights as producers send them (raw tail numbers)."""
    return day_requests(world, PREDICT_DAY)


def roots(world: Deployment) -> tuple[str, str]:
    resources = world.resources
    return resources["stream_sink"].root, resources["scoring_bundles"].root


def scored_events(world: Deployment, flights: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sink rows of ``flights`` as the stream scorer makes them, with the published champion.

    Each flight is validated with the bundle's request contract and pseudonymized with the
    state's key before it is scored; its event id is the replay's.
    """
    _, bundles = roots(world)
    version = scoring_bundles.champion_version(bundles)
    assert version is not None
    bundle = scoring_bundles.load(bundles, version)
    fields = bundle.request_fields()
    model = request_model(fields)
    pseudonyms = service_pseudonymizer({settings.STATE_DIR_VAR: str(world.state)})
    sensitive = tuple(spec.name for spec in fields if spec.sensitive)
    requests = pseudonyms.records([model(**f).model_dump() for f in flights], sensitive)
    sent = time.time()
    rows = []
    for flight, result in zip(flights, score(bundle, requests), strict=True):
        event_id = "/".join(
            str(flight[k]) for k in ("carrier", "flight", "origin", "sched_dep_time")
        )
        rows.append(
            {
                **result,
                "event_id": f"{result['flight_date']}/{event_id}",
                "sent_at": sent,
                "scored_at": time.time(),
            }
        )
    return rows


def stored(world: Deployment, asset: str) -> pd.DataFrame:
    return pd.read_parquet(world.state / "lake" / asset / f"{DAY}.parquet")


def test_the_champion_is_published_for_the_stream_scorer(world: Deployment) -> None:
    meta = world.metadata("scoring_bundle")
    _, bundles = roots(world)
    assert meta["model_version"] == "1"
    assert scoring_bundles.champion_version(bundles) == "1"
    # Published into the lake of the state that ran it (this copy's template).
    assert Path(meta["where"]).parts[-3:] == ("lake", "scoring_bundles", "1")
    assert sorted(meta["files"]) == sorted(p.name for p in (Path(bundles) / "1").iterdir())
    assert meta["size_bytes"] == sum(meta["files"].values()) > 10_000
    # The same model and lineage as the bento the service runs.
    bento = world.metadata("bento")
    for label in ("model_version", "mlflow_run_id", "training_set_md5", "git_commit"):
        assert meta[label] == bento[label]
    bundle = scoring_bundles.load(bundles, "1")
    assert bundle.classifier == world.resources["tracking"].classifier("1")
    assert bundle.model["model_version"] == "1"


def test_streamed_days_are_requested_once_deduplicated_and_judged(
    world: Deployment, flights: list[dict[str, Any]]
) -> None:
    sink, _ = roots(world)
    events = scored_events(world, flights[:BEFORE_PROMOTION])
    # Two micro-batches; the broker redelivered the first batch's last event with the second.
    half = BEFORE_PROMOTION // 2
    stream_sink.write_batch(sink, events[:half])
    stream_sink.write_batch(sink, [events[half - 1], *events[half:]])

    [outcome] = world.loop.tick_sensor(STREAM_SENSOR)
    assert outcome.success and outcome.partition == DAY, outcome.failure_report()
    assert outcome.assets == ["stream_predictions"]
    assert world.loop.tick_sensor(STREAM_SENSOR) == []  # the same parts: nothing new
    world.loop.run_until_idle()  # automation judges the day: its labels are in

    meta = world.metadata("stream_predictions", DAY)
    assert (meta["events"], meta["duplicates_dropped"]) == (BEFORE_PROMOTION, 1)
    assert meta["model_versions"] == {"1": BEFORE_PROMOTION}
    assert 0 <= meta["latency_ms_p50"] <= meta["latency_ms_p99"] <= meta["latency_ms_max"]
    assert "| flight_date" in meta["preview"]
    frame = stored(world, "stream_predictions")
    assert len(frame) == frame["event_id"].nunique() == BEFORE_PROMOTION
    assert "tailnum" not in frame.columns

    judged = world.metadata("stream_performance", DAY)
    assert judged["status"] == "ok" and judged["v1_batch_flights"] == BEFORE_PROMOTION
    # The batch ran the same scoring code with the same model: the same probabilities.
    assert judged["v1_batch_max_gap"] < 1e-9 and judged["v1_batch_agreement"] == 1.0
    labels = stored(world, "flight_features")[[*KEY_COLUMNS, LABEL_COLUMN]]
    batch = stored(world, "batch_predictions")
    # The streamed flights' batch probabilities (flight_date is one day: the rest is the key).
    streamed = batch.merge(frame[KEY_COLUMNS[1:]], on=KEY_COLUMNS[1:])
    truth = streamed.merge(labels, on=KEY_COLUMNS).dropna(subset=[LABEL_COLUMN])
    assert judged["labelled_flights"] == len(truth) > 0
    expected = roc_auc_score(truth[LABEL_COLUMN].astype(bool), truth["probability"])
    assert judged["roc_auc"] == pytest.approx(expected, abs=1e-4)


def test_a_promotion_republishes_and_later_events_name_the_new_version(
    world: Deployment, flights: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    sink, bundles = roots(world)
    # A negative margin promotes any challenger that passes the floors; no live trial first.
    monkeypatch.setenv(TRIAL_POLICY_VAR, json.dumps({"trial_days": 0}))
    assert world.train(run_config(margin=-1.0, num_leaves=7)).success
    champion = str(world.resources["tracking"].version_by_alias("champion").version)
    assert champion != "1"
    assert world.metadata("scoring_bundle")["model_version"] == champion
    assert scoring_bundles.champion_version(bundles) == champion
    assert (Path(bundles) / "1").is_dir()  # a scorer mid-batch on v1 still reads it whole

    later = scored_events(world, flights[BEFORE_PROMOTION:])
    assert {e["model_version"] for e in later} == {champion}
    stream_sink.write_batch(sink, later)
    [outcome] = world.loop.tick_sensor(STREAM_SENSOR)
    assert outcome.success and outcome.partition == DAY
    world.loop.run_until_idle()

    meta = world.metadata("stream_predictions", DAY)
    assert meta["model_versions"] == {"1": BEFORE_PROMOTION, champion: len(later)}
    assert meta["events"] == len(flights) and meta["duplicates_dropped"] == 1
    judged = world.metadata("stream_performance", DAY)
    # The day's batch predictions are v1's: only v1's streamed answers compare with them.
    assert judged["v1_batch_flights"] == BEFORE_PROMOTION and judged["v1_batch_max_gap"] < 1e-9
    assert judged[f"v{champion}_batch_flights"] == 0
    assert judged[f"v{champion}_labelled_flights"] > 0 and judged["flights"] == len(flights)
