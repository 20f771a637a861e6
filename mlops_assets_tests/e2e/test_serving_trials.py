"""End to end: online trials (shadow, canary, A/B) in a real ``bentoml serve`` of two models.

The deployed state (``deployed.deploy``) gives the champion, version 1; its bundle is made as
the ``bento`` asset makes it and built into a one-model Bento. A challenger is trained here
with ``lib.modeling.fit`` on the lake's features (a smaller model on the same three weeks)
and built with the champion into a second Bento whose default trial is a 20 % canary; a
third Bento holds a challenger that cannot score (it expects a feature that does not exist).
Each server gets a prediction log root of its own.

Checked: shadow answers equal the champion-only service's for every flight of the day, and
the log holds a served champion line and an unserved challenger line per request; the 20 %
canary routes exactly the flights ``routes_to_challenger`` names (its observed share near
0.2), each role's metrics move by its count, and a restarted service routes them the same way
(the log of the stopped one is flushed at shutdown); A/B answers half the flights with each
model and logs a served and an unserved line for every request; a failing shadow model and an
unwritable log change no answer and are counted in ``/metrics``; a trial mode without a
challenger, and a share outside [0, 1], refuse to start with a message naming the setting.

Runtime: the deployment (75-120 s), three Bento builds (~15 s each), eight servers (~8 s each).
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from mlops_assets import settings
from mlops_assets.lib import estimator
from mlops_assets.lib.modeling import SPLIT_COLUMN, fit
from mlops_assets.lib.prediction_log import COLUMNS, ROOT_VARIABLE, read_day
from mlops_assets.lib.pseudonyms import service_pseudonymizer
from mlops_assets.lib.routing import flight_key, routes_to_challenger
from mlops_assets.lib.scoring import ScoringBundle, request_model, score
from mlops_assets.resources.bentos import local_bentos
from mlops_assets.resources.prediction_log import PredictionLog
from mlops_assets.serving.modes import MODE_VARIABLE, SHARE_VARIABLE
from mlops_assets_tests.deployed import (
    AS_OF,
    PREDICT_DAY,
    TRAIN_DAYS,
    TRAIN_START,
    Deployment,
    day_requests,
    deployed_copy,
)
from mlops_assets_tests.e2e.servers import BentoServer, Servers
from mlops_assets_tests.e2e.test_serving import key_of

pytestmark = pytest.mark.e2e

DAY = PREDICT_DAY.isoformat()
SHARE = 0.2
CHUNK = 400
EXIT_TIMEOUT = 60.0
LOG_WAIT = 30.0  # the writer flushes every 5 s
TOLERANCE = 1e-9
TABLES = ("planes", "airports", "airlines")  # the reference tables the bundle holds
SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$"
)


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, deployed_state: Path
) -> Iterator[Deployment]:
    with deployed_copy(deployed_state, tmp_path_factory.mktemp("trials") / "state") as copy:
        yield copy


@pytest.fixture(scope="module")
def champion(deployment: Deployment) -> ScoringBundle:
    """The champion's scoring bundle, made as the ``bento`` asset makes it (registry + lake).

    Built here rather than read from the ``bento`` asset's store, so these tests do not
    depend on when the graph builds its Bento.
    """
    from mlops_assets.lib import model_tags
    from mlops_assets.resources.tracking import project_fingerprint

    lake = settings.locations({settings.STATE_DIR_VAR: str(deployment.state)}).lake
    tables = tuple(pd.read_parquet(lake / f"{t}.parquet") for t in TABLES)
    references = (*tables, project_fingerprint()[model_tags.GIT_COMMIT])
    tracking = deployment.resources["tracking"]
    bundle, _ = tracking.scoring_bundle(str(tracking.champion().version), references)
    assert bundle.model["model_version"] == "1"
    return bundle


@pytest.fixture(scope="module")
def one_model_bento(deployment: Deployment, champion: ScoringBundle) -> dict:
    """The champion alone: the service as it is outside a trial."""
    labels = {k: str(v) for k, v in champion.model.items()}
    built = local_bentos(deployment.state).build(champion, labels)
    assert built["challenger_model_tag"] is None
    return built


@pytest.fixture(scope="module")
def challenger(deployment: Deployment, champion: ScoringBundle) -> ScoringBundle:
    """A different classifier: fewer, smaller trees on the champion's three weeks."""
    lake = settings.locations({settings.STATE_DIR_VAR: str(deployment.state)}).lake
    days = pd.date_range(TRAIN_START, periods=TRAIN_DAYS).strftime("%Y-%m-%d")
    data = pd.concat(
        [pd.read_parquet(lake / "flight_features" / f"{d}.parquet") for d in days],
        ignore_index=True,
    )
    data = data[data["is_delayed"].notna()].reset_index(drop=True)
    validation_start = (pd.Timestamp(AS_OF) - pd.Timedelta(days=4)).strftime("%Y-%m-%d")
    data[SPLIT_COLUMN] = (data["flight_date"] >= validation_start).map(
        {True: "validation", False: "train"}
    )
    params = estimator.HyperParameters(n_estimators=25, num_leaves=7)
    classifier, _ = fit(data, params)
    identity = {**champion.model, "model_version": "2", "mlflow_run_id": "challenger-e2e"}
    return replace(champion, classifier=classifier, model=identity)


@pytest.fixture(scope="module")
def trial_bento(deployment: Deployment, champion: ScoringBundle, challenger: ScoringBundle) -> dict:
    """Champion and challenger, default trial: a 20 % canary."""
    labels = {k: str(v) for k, v in champion.model.items()}
    built = local_bentos(deployment.state).build(
        champion, labels, challenger=challenger, trial={"mode": "canary", "share": SHARE}
    )
    assert built["challenger_model_tag"].startswith(f"{settings.MODEL_NAME}_challenger:")
    return built


@pytest.fixture(scope="module")
def broken_bento(
    deployment: Deployment, champion: ScoringBundle, challenger: ScoringBundle
) -> dict:
    """A challenger that fails on every request (it wants a feature nobody computes)."""
    classifier = replace(
        challenger.classifier, features=[*challenger.classifier.features, "no_such_feature"]
    )
    broken = replace(
        challenger, classifier=classifier, model={**challenger.model, "model_version": "3"}
    )
    labels = {k: str(v) for k, v in champion.model.items()}
    return local_bentos(deployment.state).build(
        champion, labels, challenger=broken, trial={"mode": "shadow", "share": 0.0}
    )


@pytest.fixture(scope="module")
def flights(deployment: Deployment) -> list[dict[str, Any]]:
    requests_ = day_requests(deployment)
    assert len(requests_) > 500, len(requests_)
    return requests_


@pytest.fixture(scope="module")
def reference(
    deployment: Deployment, servers: Servers, one_model_bento: dict, flights: list[dict[str, Any]]
) -> dict[tuple, dict[str, Any]]:
    """The champion-only service's answers for the day (its one-model Bento, mode off)."""
    server = servers.bentoml(one_model_bento["bento_tag"], deployment.bentoml_home)
    try:
        answers = answer_all(server, flights)
    finally:
        servers.stop(server)
    assert {a["role"] for a in answers} == {"champion"}
    return {key_of(a): a for a in answers}


# -- helpers ----------------------------------------------------------------------------------


def answer_all(server: BentoServer, flights: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every flight through ``/predict_batch``; the answers in request order."""
    answers: list[dict[str, Any]] = []
    with server.report_on_failure():
        for start in range(0, len(flights), CHUNK):
            response = server.post("/predict_batch", {"flights": flights[start : start + CHUNK]})
            assert response.status_code == 200, response.text[:2000]
            answers += response.json()["predictions"]
    assert [key_of(a) for a in answers] == [key_of(r) for r in flights]
    return answers


def own_scores(
    bundle: ScoringBundle, flights: list[dict[str, Any]], state: Path
) -> dict[tuple, dict]:
    """In-process scores of ``bundle`` for validated requests, by flight key.

    The tail numbers are pseudonymized with the key of ``state`` first, as the service does.
    """
    fields = bundle.request_fields()
    model = request_model(fields)
    pseudonyms = service_pseudonymizer({settings.STATE_DIR_VAR: str(state)})
    sensitive = tuple(spec.name for spec in fields if spec.sensitive)
    requests = pseudonyms.records([model(**r).model_dump() for r in flights], sensitive)
    return {key_of(a): a for a in score(bundle, requests)}


def metric(server: BentoServer, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in server.get("/metrics").text.splitlines():
        match = SAMPLE.match(line)
        if not match or match["name"] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"] or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match["value"])
    return total


def wait_for_lines(root: Path, expected: int) -> pd.DataFrame:
    """The day's log once it holds ``expected`` lines (bounded wait)."""
    deadline = time.monotonic() + LOG_WAIT
    while True:
        frame = read_day(str(root), DAY)
        if len(frame) >= expected or time.monotonic() > deadline:
            return frame
        time.sleep(0.5)


def served(deployment: Deployment, servers: Servers, tag: str, env: dict[str, str]) -> BentoServer:
    return servers.bentoml(tag, deployment.bentoml_home, env)


def refusal(deployment: Deployment, servers: Servers, tag: str, env: dict[str, str]) -> str:
    """The output of a server that must refuse to start (fails if it keeps running)."""
    server = servers.bentoml(tag, deployment.bentoml_home, env, wait=False)
    try:
        code = server.process.wait(timeout=EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        servers.stop(server)
    output = server.log_text()
    assert code is not None and code != 0, (code, output[-3000:])
    return output


# -- shadow -----------------------------------------------------------------------------------


def test_shadow_answers_as_the_champion_and_logs_both_models(
    deployment: Deployment,
    servers: Servers,
    trial_bento: dict,
    flights: list[dict[str, Any]],
    reference: dict[tuple, dict[str, Any]],
    challenger: ScoringBundle,
    tmp_path: Path,
) -> None:
    root = tmp_path / "log"
    env = {MODE_VARIABLE: "shadow", ROOT_VARIABLE: str(root)}
    server = served(deployment, servers, trial_bento["bento_tag"], env)
    with server.report_on_failure():
        answers = answer_all(server, flights)
        one = server.post("/predict", flights[3]).json()
        assert one == reference[key_of(flights[3])]
        # Every answer is the champion-only service's answer, role included.
        assert answers == [reference[key_of(r)] for r in flights]

        n = len(flights) + 1
        log = wait_for_lines(root, 2 * n)
        assert list(log.columns) == COLUMNS
        assert len(log) == 2 * n, log.groupby(["role", "served"]).size()
        pairs = log.groupby("request_id")
        assert len(pairs) == n
        assert (pairs.size() == 2).all()
        champion_lines = log[log["role"] == "champion"]
        shadow_lines = log[log["role"] == "challenger"]
        assert champion_lines["served"].all() and not shadow_lines["served"].any()
        assert set(champion_lines["model_version"]) == {"1"}
        assert set(shadow_lines["model_version"]) == {"2"}
        assert set(log["mode"]) == {"shadow"}
        assert set(champion_lines["request_id"]) == set(shadow_lines["request_id"])
        # The shadow lines are the challenger's own scores.
        expected = {
            k: a["probability"]
            for k, a in own_scores(challenger, flights, deployment.state).items()
        }
        logged = {key_of(row): row["probability"] for row in shadow_lines.to_dict("records")}
        assert max(abs(logged[k] - expected[k]) for k in expected) <= TOLERANCE
        # The log names the flight, never the request body.
        text = "".join(p.read_text() for p in (root / DAY).glob("part-*.jsonl"))
        assert "tailnum" not in text and "temp" not in text

        kind = f"{settings.MODEL_NAME}_predictions_total"
        assert metric(server, kind, role="challenger", served="false") == n
        assert metric(server, kind, role="champion", served="true") == n
        assert metric(server, f"{settings.MODEL_NAME}_shadow_failures_total") == 0


# -- canary -----------------------------------------------------------------------------------


def test_a_canary_routes_the_expected_flights_and_keeps_them_after_a_restart(
    deployment: Deployment,
    servers: Servers,
    trial_bento: dict,
    flights: list[dict[str, Any]],
    reference: dict[tuple, dict[str, Any]],
    challenger: ScoringBundle,
    tmp_path: Path,
) -> None:
    root = tmp_path / "log"
    env = {ROOT_VARIABLE: str(root)}  # the mode and share the Bento records: canary, 20 %
    server = served(deployment, servers, trial_bento["bento_tag"], env)
    expected = [routes_to_challenger(flight_key(r), SHARE) for r in flights]
    share = sum(expected) / len(expected)
    print(f"canary at {SHARE}: {sum(expected)} of {len(flights)} flights ({share:.3f})")
    assert abs(share - SHARE) <= 0.04
    by_challenger = own_scores(challenger, flights, deployment.state)
    with server.report_on_failure():
        answers = answer_all(server, flights)
        roles = [a["role"] == "challenger" for a in answers]
        assert roles == expected
        for answer in answers:
            if answer["role"] == "champion":
                assert answer == reference[key_of(answer)]
            else:
                own = by_challenger[key_of(answer)]
                assert answer["model_version"] == "2"
                assert abs(answer["probability"] - own["probability"]) <= TOLERANCE
                assert answer["threshold"] == pytest.approx(challenger.classifier.threshold)
        kind = f"{settings.MODEL_NAME}_predictions_total"
        histogram = f"{settings.MODEL_NAME}_probability_count"
        latency = f"{settings.MODEL_NAME}_scoring_seconds_count"
        assert metric(server, kind, role="challenger", model_version="2") == sum(expected)
        assert metric(server, kind, role="champion", model_version="1") == len(flights) - sum(
            expected
        )
        assert metric(server, histogram, role="challenger") == sum(expected)
        assert metric(server, histogram, role="champion") == len(flights) - sum(expected)
        assert metric(server, latency, role="challenger") > 0
        assert metric(server, latency, role="champion") > 0
    # Stopped at once: the lines still in memory are written at shutdown.
    servers.stop(server)
    log = read_day(str(root), DAY)
    assert len(log) == len(flights) and log["served"].all()
    assert set(log["mode"]) == {"canary"}
    assert (log["role"] == "challenger").sum() == sum(expected)
    assert_the_log_lands_in_the_lake_asset(deployment, root, share)

    # A restarted service routes every flight the same way.
    again = served(deployment, servers, trial_bento["bento_tag"], env)
    with again.report_on_failure():
        assert [a["role"] == "challenger" for a in answer_all(again, flights)] == expected
        for request in flights[:20]:
            answer = again.post("/predict", request).json()
            assert (answer["role"] == "challenger") == routes_to_challenger(
                flight_key(request), SHARE
            )
    servers.stop(again)


def assert_the_log_lands_in_the_lake_asset(deployment: Deployment, root: Path, share: float):
    """online_predictions[DAY] reads the service's log back and judges it against the labels."""
    result = dg.materialize(
        list(deployment.defs.assets or []),  # type: ignore[arg-type]
        selection=[dg.AssetKey("online_predictions")],
        partition_key=DAY,
        instance=deployment.instance,
        resources={**deployment.resources, "prediction_log": PredictionLog(root=str(root))},
    )
    assert result.success
    meta = deployment.metadata("online_predictions", DAY)
    lines = len(read_day(str(root), DAY))
    assert (meta["online_lines"], meta["dagster/row_count"]) == (lines, lines)
    assert meta["online_challenger_share"] == pytest.approx(share, abs=1e-4)
    # The champion's online answers are the batch predictions of the same version.
    assert meta["online_vs_batch_max_gap"] <= TOLERANCE
    assert 0.5 < meta["online_champion_roc_auc"] < 1 and 0.5 < meta["online_challenger_roc_auc"] < 1
    stored = deployment.resources["lake"].read_partitions("online_predictions", [DAY])[DAY]
    assert list(stored.columns) == COLUMNS and len(stored) == lines


def test_ab_answers_half_and_pairs_every_request_with_the_other_model(
    deployment: Deployment,
    servers: Servers,
    trial_bento: dict,
    flights: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    root = tmp_path / "log"
    env = {MODE_VARIABLE: "ab", ROOT_VARIABLE: str(root)}  # default share 0.5
    server = served(deployment, servers, trial_bento["bento_tag"], env)
    expected = [routes_to_challenger(flight_key(r), 0.5) for r in flights]
    with server.report_on_failure():
        answers = answer_all(server, flights)
        assert [a["role"] == "challenger" for a in answers] == expected
        log = wait_for_lines(root, 2 * len(flights))
    assert len(log) == 2 * len(flights)
    assert set(log["mode"]) == {"ab"}
    for _, pair in log.groupby("request_id"):
        assert sorted(pair["role"]) == ["challenger", "champion"], pair
        assert sorted(pair["served"]) == [False, True], pair
    served_lines = log[log["served"]]
    assert (served_lines["role"] == "challenger").sum() == sum(expected)
    servers.stop(server)


# -- faults -----------------------------------------------------------------------------------


def test_a_failing_shadow_model_and_an_unwritable_log_change_no_answer(
    deployment: Deployment,
    servers: Servers,
    broken_bento: dict,
    flights: list[dict[str, Any]],
    reference: dict[tuple, dict[str, Any]],
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "log"
    blocker.write_text("a file where the log's folder should be")
    server = served(deployment, servers, broken_bento["bento_tag"], {ROOT_VARIABLE: str(blocker)})
    failures = f"{settings.MODEL_NAME}_shadow_failures_total"
    lost = f"{settings.MODEL_NAME}_prediction_log_lost_lines_total"
    with server.report_on_failure():
        chosen = flights[:300]
        assert answer_all(server, chosen) == [reference[key_of(r)] for r in chosen]
        for request in flights[300:320]:
            assert server.post("/predict", request).json() == reference[key_of(request)]
        n = len(chosen) + 20
        deadline = time.monotonic() + LOG_WAIT
        while time.monotonic() < deadline and (
            metric(server, failures) < n or metric(server, lost) < n
        ):
            time.sleep(0.5)
        assert metric(server, failures, role="challenger", model_version="3") == n
        assert metric(server, lost) == n  # only champion lines: the shadow never scored
        assert metric(server, f"{settings.MODEL_NAME}_predictions_total", role="champion") == n
        text = server.log_text()
        assert "off-path scoring by the challenger failed" in text
        assert "lines lost" in text
        assert server.get("/readyz").status_code == 200


def test_a_trial_without_a_challenger_or_with_a_bad_share_refuses_to_start(
    deployment: Deployment, servers: Servers, one_model_bento: dict, trial_bento: dict
) -> None:
    one_model = one_model_bento["bento_tag"]
    output = refusal(deployment, servers, one_model, {MODE_VARIABLE: "canary"})
    assert f"{MODE_VARIABLE}=canary needs a challenger" in output, output[-3000:]
    output = refusal(deployment, servers, trial_bento["bento_tag"], {SHARE_VARIABLE: "1.5"})
    assert f"{SHARE_VARIABLE} must be a number in [0, 1], got '1.5'" in output, output[-3000:]
