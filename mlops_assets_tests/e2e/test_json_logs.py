"""End to end: ``MLOPS_LOG_FORMAT=json`` on a real ``bentoml serve`` and on a real pipeline run.

The service: a small model (LightGBM, 30 trees on two January days) is bundled as the
``bento`` asset bundles the champion and built, with a copy of it as the challenger, into a
Bento whose trial is a 50 % canary; ``bentoml serve`` runs it with JSON logs. Valid, invalid
and malformed requests carry a canary value (a tail number, an unknown carrier); then every
line the server wrote must be JSON, each request must have its line (request id as returned in
``X-BentoML-Request-ID``, status, latency, rows, model and challenger versions, mode), and the
canary must appear nowhere in the log. An unknown ``MLOPS_LOG_FORMAT`` stops the server with
a message naming the variable and the allowed values.

The pipeline: the landing sensor of the local loop runs the reference tables and a landed
day's ingestion with the console logger at DEBUG (Dagster's events included); every line on
standard error is JSON, and the lines name the run, the job, the step, the day and the asset.

Runtime: about 30 s (the model and the Bento build ~20 s, the server ~5 s, the day's runs ~6 s).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from mlops_assets import settings
from mlops_assets.definitions import build_defs
from mlops_assets.lib import scoring
from mlops_assets.lib.pseudonyms import KEY_VARIABLE as PSEUDONYM_KEY_VAR
from mlops_assets.lib.replay import replay
from mlops_assets.local_daemon import LocalDaemon
from mlops_assets.resources.bentos import local_bentos
from mlops_assets.serving.access_log import LOGGER_NAME
from mlops_assets_tests.bundles import small_bundle
from mlops_assets_tests.e2e.servers import BentoServer, Servers

pytestmark = pytest.mark.e2e

# In the requests, never in the log: a valid tail number, and an unknown carrier.
CANARY = "QZ7X9QK"
JSON_ENV = {settings.LOG_FORMAT_VAR: "json"}
LOG_WAIT = 15.0
EXIT_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def store(tables: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A BentoML store with a canary-trial Bento: champion version 7, challenger version 8."""
    bentos = local_bentos(tmp_path_factory.mktemp("json_logs") / "state")
    champion = small_bundle(tables, "7")
    challenger = replace(champion, model={**champion.model, "model_version": "8"})
    labels = {"model_name": settings.MODEL_NAME, "model_version": "7"}
    built = bentos.build(
        champion, labels, challenger=challenger, trial={"mode": "canary", "share": 0.5}
    )
    return Path(bentos.home), built["bento_tag"]


@pytest.fixture(scope="module")
def server(store: Any, servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> BentoServer:
    home, tag = store
    log_root = tmp_path_factory.mktemp("prediction_log")
    env = {**JSON_ENV, "MLOPS_PREDICTION_LOG": str(log_root)}
    # The store was built without the pipeline (no key file in its state): a key of its own.
    env[PSEUDONYM_KEY_VAR] = secrets.token_urlsafe(32)
    return servers.bentoml(tag, home, env)


def parsed_lines(text: str) -> list[dict[str, Any]]:
    """Every non-empty line of ``text`` as JSON (AssertionError naming the first that is not)."""
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"line {number} is not JSON: {line[:300]!r}") from None
    return out


def request_lines(server: BentoServer, count: int) -> list[dict[str, Any]]:
    """The service's request lines, once ``count`` of them are written (bounded wait)."""
    deadline = time.monotonic() + LOG_WAIT
    while True:
        lines = [e for e in parsed_lines(server.log_text()) if e["logger"] == LOGGER_NAME]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.2)


def test_every_line_is_json_and_every_request_has_its_line_without_request_values(
    server: BentoServer,
):
    valid = {**scoring.EXAMPLE_REQUEST, "tailnum": CANARY}
    invalid = {**valid, "carrier": CANARY}  # an unknown carrier: refused by the contract
    batch = {"flights": [valid, {**valid, "flight": 1546}, {**valid, "flight": 1547}]}
    answers = [
        server.post("/predict", valid),
        server.post("/predict", invalid),
        server.post("/predict_batch", batch),
        server.post(
            "/predict",
            data=f'{{"tailnum": "{CANARY}", '.encode(),
            headers={"Content-Type": "application/json"},
        ),
    ]
    assert [a.status_code for a in answers] == [200, 400, 200, 400], [a.text for a in answers]
    assert "known_carrier" in answers[1].text  # the caller is told the rule ...
    assert CANARY not in answers[1].text  # ... never the value (nor is the log)
    lines = request_lines(server, len(answers))
    assert len(lines) == len(answers), lines

    text = server.log_text()
    assert CANARY not in text
    entries = parsed_lines(text)  # every line of the process, BentoML's own included
    assert any(e["logger"].startswith("bentoml") for e in entries), entries[:5]
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= entry.keys(), entry
        assert entry["time"].endswith("Z"), entry
    # BentoML logs the refused request as an error with its exception: inputs left out.
    [refusal] = [e for e in entries if "exception" in e and "/predict" in e["message"]]
    assert refusal["exception"]["message"].startswith("1 validation error: carrier ("), refusal

    by_order = dict(zip(["valid", "invalid", "batch", "malformed"], lines, strict=True))
    for name, line in by_order.items():
        assert line["endpoint"] == ("/predict_batch" if name == "batch" else "/predict")
        assert line["method"] == "POST"
        assert line["latency_ms"] > 0, line
        assert line["model_version"] == "7" and line["challenger_version"] == "8", line
        assert line["mode"] == "canary" and line["challenger_share"] == 0.5, line
        assert len(line["request_id"]) == 16, line
    for name, answer in zip(by_order, answers, strict=True):
        assert by_order[name]["status"] == answer.status_code
        if name != "malformed":  # answered by the guard, before BentoML
            assert by_order[name]["request_id"] == answer.headers["X-BentoML-Request-ID"]
    assert by_order["valid"]["rows"] == 1 and by_order["batch"]["rows"] == 3
    assert by_order["invalid"]["rows"] == 0 and by_order["malformed"]["rows"] == 0
    assert by_order["batch"]["challenger_rows"] in range(4)
    assert by_order["invalid"]["level"] == "INFO"


def test_an_unknown_log_format_refuses_to_start(
    store: Any, tmp_path_factory: pytest.TempPathFactory
):
    home, tag = store
    refused = BentoServer.spawn(
        tag, home, tmp_path_factory.mktemp("refused"), {settings.LOG_FORMAT_VAR: "yaml"}
    )
    try:
        refused.process.wait(timeout=EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        refused.shutdown()
        pytest.fail("the server started with MLOPS_LOG_FORMAT=yaml")
    finally:
        refused.http.close()
    assert refused.process.returncode != 0
    assert "MLOPS_LOG_FORMAT must be one of text, json, got 'yaml'" in refused.log_text()


@pytest.mark.usefixtures("steps_mirrored")
def test_a_pipeline_run_logs_json_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
):
    state = tmp_path / "state"
    monkeypatch.setenv(settings.STATE_DIR_VAR, str(state))
    env = {settings.STATE_DIR_VAR: str(state), **JSON_ENV}
    defs = build_defs(env)
    day = "2013-01-01"
    with dg.instance_for_test() as instance:
        loop = LocalDaemon(defs, instance, state / "cursors.json", log_level="DEBUG")
        replay(settings.locations(env).landing, date(2013, 1, 1), 1)
        capfd.readouterr()
        outcomes = loop.tick_landing()  # the reference tables first
        outcomes += loop.tick_landing()  # then the day
    assert [o.partition for o in outcomes] == [None, day]
    assert all(o.success for o in outcomes), [o.error for o in outcomes]
    entries = parsed_lines(capfd.readouterr().err)
    runs = {o.run_id: o for o in outcomes}
    assert {e.get("run_id") for e in entries} == set(runs), entries[:3]
    daily = [e for e in entries if runs[e["run_id"]].partition == day]
    assert all(e["partition"] == day and e["job"] == "__ASSET_JOB" for e in daily)
    steps = {e["step"] for e in daily if e.get("event") == "STEP_SUCCESS"}
    assert steps == {"raw_flights", "raw_weather", "flight_features"}  # one run a landed day
    materialized = {e["asset"] for e in daily if e.get("event") == "ASSET_MATERIALIZATION"}
    assert materialized == {"raw_flights", "raw_weather", "flight_features"}
    assert all(not e["message"].startswith("__ASSET_JOB - ") for e in entries)
