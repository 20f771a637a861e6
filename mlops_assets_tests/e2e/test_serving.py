"""End to end: the champion's Bento served by a real ``bentoml serve``, observed over HTTP.

A state is deployed through the real graph (``deployed.deploy``: three weeks replayed, a
champion trained and promoted, its Bento built, 2013-01-22 landed and batch-predicted). The
Bento is then served from that state's store on a free port on 127.0.0.1 by the ``servers``
fixture, twice: open (no API key), and in the production flavour with a random API key, the
tokens of a local key set and a rate limit per client (each server with a ``BENTOML_HOME`` of
its own that links to the store, see ``servers.private_home``).

First, the state is copied and the copy moved: each lands a day, restores its features,
reproduces the champion and serves it on its own, while the original stays byte for byte
unchanged (the deployment's Dagster instance lives in the state, so copies carry it).

Checked: answers for real flights, batch order, online/offline consistency with the
``batch_predictions`` asset for every flight of the day, every kind of bad input answered with
a precise 4xx (never 5xx, the server keeps serving), the API key (and that it never reaches
the log), the refusal to start in production without a key, token scopes and a burst over
the rate limit (429 with Retry-After, counted by status), the Prometheus metrics, a
bounded schemathesis fuzz of the prediction endpoints against the served OpenAPI schema, and
hostile input (JSON nested 10,000 deep, a non-JSON body, an 8 MB header, a slow body): each a
fast 4xx, counted in ``/metrics`` and the access log, no submitted value in the log.

Runtime: roughly 3 to 4 minutes: the deployment takes 75 to 120 s, each server ~8 s to get
ready, the copy and the move 20 to 25 s each (a day through the graph ~11 s, a server, a
restore and a reproduction ~1 s each), the fuzz ~10 to 20 s, the hostile input ~2 s (1 s of
it the slow client's deadline).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlops_assets import cli, settings
from mlops_assets.lib.features import WEATHER_FIELDS
from mlops_assets.lib.fingerprints import md5_bytes
from mlops_assets.lib.pseudonyms import KEY_VARIABLE as PSEUDONYM_KEY_VAR
from mlops_assets.lib.scoring import EXAMPLE_REQUEST, MAX_BATCH
from mlops_assets.processes import HOST
from mlops_assets.serving import tokens
from mlops_assets.serving.auth import (
    ADMIN,
    API_KEY_VARIABLE,
    JWT_AUDIENCE_VARIABLE,
    JWT_KEYS_VARIABLE,
    PREDICT,
    RATE_LIMIT_VARIABLE,
)
from mlops_assets.serving.guard import (
    BODY_TIMEOUT_VARIABLE,
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    MAX_JSON_DEPTH,
    PROTECTED_PATHS,
)
from mlops_assets.serving.workers import WORKERS_VARIABLE
from mlops_assets_tests.deployed import (
    PREDICT_DAY,
    Deployment,
    day_requests,
    deployed_copy,
    open_deployment,
    state_instance,
)
from mlops_assets_tests.e2e.servers import REQUEST_TIMEOUT, BentoServer, Servers

pytestmark = pytest.mark.e2e

EXIT_TIMEOUT = 60.0  # a server that must refuse to start
OPEN = ("/livez", "/readyz", "/healthz", "/metrics")
KEY_COLUMNS = ["flight_date", "carrier", "flight", "origin"]
TOLERANCE = 1e-9
BATCH_CHUNK = 400  # the day's ~890 flights go in three batches (order across calls checked)
FUZZ_EXAMPLES = 50  # per operation and generation mode


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, deployed_state: Path
) -> Iterator[Deployment]:
    """A state with a champion (version 1), its Bento and the batch predictions of a day."""
    with deployed_copy(deployed_state, tmp_path_factory.mktemp("serving") / "state") as copy:
        yield copy


@pytest.fixture(scope="module")
def bento_tag(deployment: Deployment) -> str:
    return str(deployment.metadata("bento")["bento_tag"])


@pytest.fixture(scope="module")
def server(deployment: Deployment, bento_tag: str, servers: Servers) -> BentoServer:
    """The Bento served open (no API key, local flavour)."""
    return servers.bentoml(bento_tag, deployment.bentoml_home)


@dataclass
class KeyedServer:
    server: BentoServer
    key: str
    keys: Path  # the local issuer's key set folder, whose tokens the server accepts


TOKEN_AUDIENCE = "flight-delay-e2e"
RATE_PER_S = 20  # per client: far above what the other tests send with one credential
KEYED_WORKERS = 2  # the rate limit holds per worker process


@pytest.fixture(scope="module")
def keyed(
    deployment: Deployment,
    bento_tag: str,
    servers: Servers,
    tmp_path_factory: pytest.TempPathFactory,
) -> KeyedServer:
    """The Bento served in the production flavour, with a random API key, the tokens of a
    local key set, and a rate limit per client."""
    key = secrets.token_urlsafe(32)
    keys = tmp_path_factory.mktemp("api_auth")
    tokens.add_key(keys)
    env = {
        settings.ENV_VAR: "production",
        API_KEY_VARIABLE: key,
        JWT_KEYS_VARIABLE: str(keys / tokens.PUBLIC_FILE),
        JWT_AUDIENCE_VARIABLE: TOKEN_AUDIENCE,
        RATE_LIMIT_VARIABLE: f"{RATE_PER_S}/s",
        # A short body deadline, so the slow client of the hostile-input tests waits 1 s, not 5.
        BODY_TIMEOUT_VARIABLE: "1",
        # Several workers, as production runs per core: every check below holds across them.
        WORKERS_VARIABLE: str(KEYED_WORKERS),
    }
    # The pseudonym key of the pipeline that made the Bento, as production passes it.
    env[PSEUDONYM_KEY_VAR] = settings.locations(
        {settings.STATE_DIR_VAR: str(deployment.state)}
    ).pseudonym_key.read_text()
    return KeyedServer(servers.bentoml(bento_tag, deployment.bentoml_home, env), key, keys)


# -- the requests of a day --------------------------------------------------------------------


def key_of(item: dict[str, Any]) -> tuple[str, str, int, str]:
    """(flight_date, carrier, flight, origin) of a request or an answer."""
    if "flight_date" in item:
        return (item["flight_date"], item["carrier"], int(item["flight"]), item["origin"])
    flight_date = f"{item['year']:04d}-{item['month']:02d}-{item['day']:02d}"
    return (flight_date, item["carrier"], int(item["flight"]), item["origin"])


@pytest.fixture(scope="module")
def flights(deployment: Deployment) -> list[dict[str, Any]]:
    requests_ = day_requests(deployment)
    assert len(requests_) > 500, len(requests_)  # ~890 flights on 2013-01-22
    return requests_


@pytest.fixture(scope="module")
def offline(deployment: Deployment) -> pd.DataFrame:
    """The ``batch_predictions`` partition of ``PREDICT_DAY`` written by the pipeline."""
    lake = settings.locations({settings.STATE_DIR_VAR: str(deployment.state)}).lake
    return pd.read_parquet(lake / "batch_predictions" / f"{PREDICT_DAY.isoformat()}.parquet")


def assert_prediction(answer: dict[str, Any], request: dict[str, Any], version: str) -> None:
    assert set(answer) == {
        *KEY_COLUMNS,
        "probability",
        "delayed",
        "threshold",
        "model_version",
        "role",
    }
    assert answer["role"] == "champion", answer  # a Bento without a challenger
    assert key_of(answer) == key_of(request), (answer, request)
    assert 0.0 <= answer["probability"] <= 1.0, answer
    assert 0.0 < answer["threshold"] < 1.0, answer
    assert answer["delayed"] == (answer["probability"] >= answer["threshold"]), answer
    assert answer["model_version"] == version, answer


# -- 0. a copied, then moved state -----------------------------------------------------------
# First in the module: no server of the original runs yet, whose prediction log could flush
# into the original while the copy is checked.

RELOCATED_DAYS = (date(2013, 1, 23), date(2013, 1, 24))


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def _naming(state: Path, folder: Path) -> list[str]:
    """Files of ``state`` that name ``folder``, except the Dagster history (its event log
    records where each run wrote, like any log)."""
    needle = str(folder).encode()
    return [
        str(path.relative_to(state))
        for path in state.rglob("*")
        if path.is_file()
        and not path.is_relative_to(state / "dagster_home")
        and needle in path.read_bytes()
    ]


def _use_on_its_own(state: Path, day: date, bento_tag: str, servers: Servers) -> None:
    """A day landed and processed, a restore, a reproduction and a served prediction, all
    from ``state`` (selected by ``MLOPS_STATE_DIR`` as a user would)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(settings.STATE_DIR_VAR, str(state))
        with state_instance(state) as instance:
            here = open_deployment(state, instance)
            here.land(day)
            assert here.metadata("batch_predictions", day.isoformat())["model_version"] == "1"
            features = here.metadata("flight_features", day.isoformat())
        rev = str(features["registry_rev"])
        assert cli.main(["restore", "flight_features", day.isoformat(), "--rev", rev]) == 0
        restored = state / "restored" / rev[:12] / "flight_features" / f"{day}.parquet"
        assert md5_bytes(restored.read_bytes()) == features["dvc_md5"]
        assert cli.main(["reproduce", "--model-version", "1"]) == 0  # identical metrics
        server = servers.bentoml(bento_tag, state / "bentoml", {settings.STATE_DIR_VAR: str(state)})
        with server.report_on_failure():
            response = server.post("/predict", EXAMPLE_REQUEST)
            assert response.status_code == 200, response.text
            assert response.json()["model_version"] == "1"
        servers.stop(server)  # flushes the prediction log
    assert list((state / "prediction_log").rglob("*.jsonl")), "nothing logged in the state"


def test_a_copied_then_moved_state_works_on_its_own_and_the_original_is_unchanged(
    deployment: Deployment,
    bento_tag: str,
    servers: Servers,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    original = deployment.state
    before = _digests(original)
    base = tmp_path_factory.mktemp("relocated")
    copy, moved = base / "copy", base / "moved"
    shutil.copytree(original, copy, symlinks=True)
    _use_on_its_own(copy, RELOCATED_DAYS[0], bento_tag, servers)
    assert _digests(original) == before
    assert _naming(copy, original) == []

    copy.rename(moved)
    _use_on_its_own(moved, RELOCATED_DAYS[1], bento_tag, servers)
    assert not copy.exists(), "something wrote to where the state was before the move"
    assert _naming(moved, copy) == []
    assert _digests(original) == before


# -- 1. valid requests ------------------------------------------------------------------------


def test_a_real_flight_is_scored_by_the_champion(
    server: BentoServer, deployment: Deployment, flights: list[dict[str, Any]]
) -> None:
    built = deployment.metadata("bento")
    version = str(built["model_version"])
    assert version == "1"
    with server.report_on_failure():
        for request in (EXAMPLE_REQUEST, flights[0], flights[len(flights) // 2]):
            response = server.post("/predict", request)
            assert response.status_code == 200, response.text
            assert response.headers["content-type"].startswith("application/json")
            answer = response.json()
            assert_prediction(answer, request, version)
            assert answer["threshold"] == pytest.approx(float(built["threshold"]), abs=1e-4)

        # The identity of the model that answers is the one the bento asset recorded.
        response = server.post("/model")  # no input: an empty body
        assert response.status_code == 200, response.text
        identity = response.json()
        labels = ("model_name", "model_version", "mlflow_run_id", "training_set_md5", "git_commit")
        assert identity == {name: str(built[name]) for name in labels}


def test_a_batch_is_answered_in_request_order(
    server: BentoServer, flights: list[dict[str, Any]]
) -> None:
    chosen = [flights[i] for i in (0, 7, 100, 3, len(flights) - 1, 42)]
    with server.report_on_failure():
        single = []
        for request in chosen:
            response = server.post("/predict", request)
            assert response.status_code == 200, response.text
            single.append(response.json())
        for order in (chosen, chosen[::-1]):
            response = server.post("/predict_batch", {"flights": order})
            assert response.status_code == 200, response.text
            answers = response.json()["predictions"]
            assert [key_of(a) for a in answers] == [key_of(r) for r in order]
            for answer, request in zip(answers, order, strict=True):
                assert_prediction(answer, request, "1")
        # Scoring alone or in a batch gives the same numbers.
        batch = server.post("/predict_batch", {"flights": chosen}).json()["predictions"]
        assert batch == single


# -- 2. online / offline consistency ----------------------------------------------------------


def test_every_flight_of_the_day_matches_the_batch_predictions(
    server: BentoServer, flights: list[dict[str, Any]], offline: pd.DataFrame
) -> None:
    with server.report_on_failure():
        answers: list[dict[str, Any]] = []
        for start in range(0, len(flights), BATCH_CHUNK):
            chunk = flights[start : start + BATCH_CHUNK]
            assert len(chunk) <= MAX_BATCH
            response = server.post("/predict_batch", {"flights": chunk})
            assert response.status_code == 200, response.text[:2000]
            answers += response.json()["predictions"]
        assert [key_of(a) for a in answers] == [key_of(r) for r in flights]

        online = pd.DataFrame(answers)
        assert len(online) == len(offline) == len(flights)
        merged = online.merge(
            offline.astype({"carrier": object, "origin": object}),
            on=KEY_COLUMNS,
            how="outer",
            suffixes=("_online", "_offline"),
            validate="one_to_one",
            indicator=True,
        )
        unmatched = merged[merged["_merge"] != "both"]
        assert unmatched.empty, unmatched[[*KEY_COLUMNS, "_merge"]].to_string()
        diff = (merged["probability_online"] - merged["probability_offline"]).abs()
        worst = merged.loc[diff.idxmax(), [*KEY_COLUMNS, "probability_online"]].to_dict()
        print(f"{len(merged)} flights, max |online - offline| = {diff.max():.3g}")
        assert bool((diff <= TOLERANCE).all()), (
            f"{int((diff > TOLERANCE).sum())} of {len(merged)} flights differ by more than "
            f"{TOLERANCE}; worst {diff.max():.3g} at {worst}"
        )
        assert set(merged["model_version_online"]) == {"1"}
        assert set(merged["model_version_offline"]) == {"1"}
        assert (merged["threshold_online"] == merged["threshold_offline"]).all()
        clear = (merged["probability_offline"] - merged["threshold_offline"]).abs() > TOLERANCE
        assert (merged.loc[clear, "delayed_online"] == merged.loc[clear, "delayed_offline"]).all()

        # A handful one by one through /predict: the same numbers again. Chosen to include a
        # flight without a tail number and flights with missing weather values.
        expected = {key_of(a): a for a in answers}
        no_tail = [r for r in flights if r["tailnum"] is None][:2]
        gaps = [r for r in flights if any(r[w] is None for w in WEATHER_FIELDS)][:2]
        spread = [flights[i] for i in range(0, len(flights), len(flights) // 4)]
        handful = no_tail + gaps + spread
        assert no_tail and gaps, "the day should have flights without tailnum and weather gaps"
        for request in handful:
            response = server.post("/predict", request)
            assert response.status_code == 200, response.text
            answer = response.json()
            assert abs(answer["probability"] - expected[key_of(request)]["probability"]) <= (
                TOLERANCE
            )
            assert answer["model_version"] == "1"


# -- 3. bad input -----------------------------------------------------------------------------


def _without(name: str) -> dict[str, Any]:
    return {k: v for k, v in EXAMPLE_REQUEST.items() if k != name}


def _with(**changes: Any) -> dict[str, Any]:
    return {**EXAMPLE_REQUEST, **changes}


def _huge_batch() -> bytes:
    one = json.dumps(EXAMPLE_REQUEST)
    count = MAX_BODY_BYTES // len(one) + 100  # a well-formed body just over the limit
    body = ('{"flights": [' + ", ".join([one] * count) + "]}").encode()
    assert len(body) > MAX_BODY_BYTES
    return body


@dataclass(frozen=True)
class BadInput:
    """A request the service must refuse, and how.

    ``detail``: the one pydantic error expected (loc, type, message fragment); ``error``: a
    regular expression the guard's ``error`` text must match in full.
    """

    path: str
    body: Callable[[], Any]  # JSON-able payload, or bytes sent as they are
    status: int = 400
    detail: tuple[list[Any], str, str] | None = None
    error: str | None = None


BAD_INPUTS = {
    "missing_field": BadInput(
        "/predict", lambda: _without("carrier"), detail=(["carrier"], "missing", "Field required")
    ),
    "wrong_type": BadInput(
        "/predict",
        lambda: _with(distance="far"),
        detail=(["distance"], "int_type", "Input should be a valid integer"),
    ),
    "unknown_airport": BadInput(
        "/predict",
        lambda: _with(dest="XXX"),
        detail=(["dest"], "value_error", "breaks the contract rule known_airport"),
    ),
    "unknown_departure_airport": BadInput(
        "/predict",
        lambda: _with(origin="LAX"),  # a known airport, but not one the data departs from
        detail=(["origin"], "value_error", "breaks the contract rule known_departure_airport"),
    ),
    "unknown_carrier": BadInput(
        "/predict",
        lambda: _with(carrier="ZZ"),
        detail=(["carrier"], "value_error", "breaks the contract rule known_carrier"),
    ),
    "negative_distance": BadInput(
        "/predict",
        lambda: _with(distance=-5),
        detail=(["distance"], "greater_than_equal", "Input should be greater than or equal to 1"),
    ),
    "empty_batch": BadInput(
        "/predict_batch",
        lambda: {"flights": []},
        detail=(["flights"], "too_short", "List should have at least 1 item"),
    ),
    "oversized_batch": BadInput(
        "/predict_batch",
        lambda: {"flights": [EXAMPLE_REQUEST] * (MAX_BATCH + 1)},
        detail=(["flights"], "too_long", f"List should have at most {MAX_BATCH} items"),
    ),
    "bad_item_in_batch": BadInput(
        "/predict_batch",
        lambda: {"flights": [EXAMPLE_REQUEST, _with(carrier="ZZ")]},
        detail=(["flights", 1, "carrier"], "value_error", "breaks the contract rule known_carrier"),
    ),
    "malformed_json": BadInput(
        "/predict",
        lambda: b'{"year": 2013, "month": ',
        error=r"malformed JSON: Expecting value: line 1 column 25 \(char 24\)",
    ),
    "huge_payload": BadInput(
        "/predict_batch",
        _huge_batch,
        status=413,
        error=re.escape(f"request body over the limit of {MAX_BODY_BYTES} bytes"),
    ),
    "post_departure_field": BadInput(
        "/predict",
        lambda: _with(dep_delay=12.0),
        detail=(["dep_delay"], "extra_forbidden", "Extra inputs are not permitted"),
    ),
    "impossible_date": BadInput(
        "/predict",
        lambda: _with(month=2, day=31),
        detail=([], "value_error", "day is out of range for month"),
    ),
    "naive_timestamp": BadInput(
        "/predict",
        lambda: _with(time_hour="2013-01-01T05:00:00"),
        detail=(["time_hour"], "timezone_aware", "Input should have timezone info"),
    ),
    "number_as_string": BadInput(
        "/predict",
        lambda: _with(distance="1400"),  # strict: a JSON number, not a numeric string
        detail=(["distance"], "int_type", "Input should be a valid integer"),
    ),
    "minutes_over_59": BadInput(
        "/predict",
        lambda: _with(sched_dep_time=1275),
        detail=(["sched_dep_time"], "value_error", "breaks the contract rule clock_time"),
    ),
    "hours_over_23": BadInput(
        "/predict",
        lambda: _with(sched_arr_time=2399),
        detail=(["sched_arr_time"], "less_than_equal", "less than or equal to 2359"),
    ),
    "time_hour_contradicts_the_date": BadInput(
        "/predict",
        lambda: _with(time_hour="2013-01-02T05:00:00-05:00"),
        detail=([], "value_error", "time_hour is not the scheduled departure hour"),
    ),
    "non_finite_weather": BadInput(
        "/predict",
        lambda: json.dumps(_with(temp=float("nan"))).encode(),  # NaN: Python's JSON extension
        detail=(["temp"], "finite_number", "Input should be a finite number"),
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS.values()), ids=list(BAD_INPUTS))
def test_bad_input_is_refused_precisely(server: BentoServer, case: BadInput) -> None:
    body = case.body()
    with server.report_on_failure():
        if isinstance(body, bytes):
            headers = {"content-type": "application/json"}
            response = server.post(case.path, data=body, headers=headers)
        else:
            response = server.post(case.path, body)
        assert response.status_code == case.status, response.text[:2000]
        answer = response.json()
        if case.detail is not None:
            loc, kind, message = case.detail
            assert answer["error"].startswith("1 validation error"), answer
            [error] = answer["detail"]
            assert error["loc"] == loc, error
            assert error["type"] == kind, error
            assert message in error["msg"], error
        if case.error is not None:
            assert set(answer) == {"error"}, answer
            assert re.fullmatch(case.error, answer["error"]), answer

        # The server shrugs it off and keeps answering.
        server.check_alive()
        response = server.post("/predict", EXAMPLE_REQUEST)
        assert response.status_code == 200, response.text


def test_the_server_still_serves_after_the_bad_input(
    server: BentoServer, flights: list[dict[str, Any]]
) -> None:
    with server.report_on_failure():
        response = server.post("/predict_batch", {"flights": flights[:10]})
        assert response.status_code == 200, response.text
        assert len(response.json()["predictions"]) == 10
        assert server.get("/readyz").status_code == 200
        # BentoML logs each refused request with its traceback at ERROR; none was a 5xx.
        served = re.findall(r"\(status=(\d{3}),", server.log_text())
        assert served, "the access log should record the requests"
        assert not [s for s in served if s.startswith("5")], server.log_tail()


# -- 4. the API key ---------------------------------------------------------------------------


def raw_post(server: BentoServer, path: str, body: bytes) -> int:
    """POSTs to ``path`` exactly as written (no client-side normalisation); the status."""
    connection = http.client.HTTPConnection(HOST, server.port, timeout=REQUEST_TIMEOUT)
    try:
        connection.request("POST", path, body=body, headers={"content-type": "application/json"})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


MISSING = "missing credentials: send Authorization: Bearer <API key or token>"
INVALID = 'Bearer error="invalid_token"'


def test_the_api_key_guards_the_prediction_endpoints(keyed: KeyedServer) -> None:
    server, key = keyed.server, keyed.key
    with server.report_on_failure():
        payloads = {
            "/predict": EXAMPLE_REQUEST,
            "/predict_batch": {"flights": [EXAMPLE_REQUEST]},
            "/model": {},
        }
        assert set(payloads) == PROTECTED_PATHS
        for path, payload in payloads.items():
            malformed = "malformed Authorization header: send Bearer <API key or token>"
            refusals = {
                "no key": ({}, MISSING, "Bearer"),
                "wrong bearer": (
                    {"Authorization": f"Bearer {key[:-1]}x"},
                    "wrong API key",
                    INVALID,
                ),
                "wrong X-API-Key": ({"X-API-Key": "not-the-key"}, "wrong API key", INVALID),
                "key without scheme": ({"Authorization": key}, malformed, INVALID),
                "empty bearer": ({"Authorization": "Bearer "}, malformed, INVALID),
            }
            for what, (headers, error, challenge) in refusals.items():
                response = server.post(path, payload, headers=headers)
                assert response.status_code == 401, (path, what, response.text)
                assert response.json() == {"error": error}, (path, what)
                assert response.headers["www-authenticate"] == challenge
            for headers in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}):
                response = server.post(path, payload, headers=headers)
                assert response.status_code == 200, (path, response.text)
                assert key not in response.text

        # Spellings of the paths that reach the endpoints are guarded too; the others do not
        # route (sent raw: requests would normalise them).
        spellings = {
            "/%70redict": 401,  # decoded to /predict by the server
            "/predict?debug=1": 401,
            "/predict_batch?x=%2F": 401,
            "/predict/": 307,  # redirected to /predict, which asks for the key
            "/model/": 307,
            "//predict": 404,
            "/./predict": 404,
            "/x/../predict": 404,
            "/PREDICT": 404,
        }
        for raw, status in spellings.items():
            assert raw_post(server, raw, json.dumps(EXAMPLE_REQUEST).encode()) == status, raw

        # The key is checked before anything else: an unauthenticated huge body is a 401.
        response = server.post("/predict_batch", data=_huge_batch())
        assert response.status_code == 401, response.text

        # Probes, metrics and the schema stay open.
        for path in (*OPEN, "/docs.json"):
            response = server.get(path)
            assert response.status_code == 200, (path, response.text[:500])
            assert key not in response.text, path
        assert "flight_delay_probability" in server.get("/metrics").text


def test_the_api_key_never_reaches_the_log(keyed: KeyedServer) -> None:
    server, key = keyed.server, keyed.key
    # A request carrying the key in both headers, and one with a wrong key, are logged.
    headers = {"Authorization": f"Bearer {key}", "X-API-Key": key}
    assert server.post("/predict", EXAMPLE_REQUEST, headers=headers).status_code == 200
    wrong = server.post("/predict", EXAMPLE_REQUEST, headers={"X-API-Key": key[::-1]})
    assert wrong.status_code == 401
    time.sleep(0.5)  # let the access log reach the file
    text = server.log_text()
    assert "path=/predict" in text, "the access log should record the requests"
    assert key not in text, "the API key appears in the server log"
    assert key[::-1] not in text, "a wrong API key appears in the server log"


# -- 5. production without a key ---------------------------------------------------------------


def test_production_without_an_api_key_refuses_to_start(
    deployment: Deployment, bento_tag: str, servers: Servers
) -> None:
    env = {settings.ENV_VAR: "production"}
    server = servers.bentoml(bento_tag, deployment.bentoml_home, env, wait=False)
    try:
        code = server.process.wait(timeout=EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        servers.stop(server)  # fails if a process of its group is left
    output = server.log_text()
    assert code is not None, f"still running after {EXIT_TIMEOUT:.0f} s:\n{output[-3000:]}"
    assert code != 0, output[-3000:]
    assert (
        "MLOPS_API_KEY or MLOPS_JWT_KEYS must be set when MLOPS_ENV=production: the prediction "
        "endpoints are not served without an API key or a token key set" in output
    ), output[-3000:]


# -- 5b. tokens, scopes and the rate limit -----------------------------------------------------


def test_tokens_scopes_and_the_rate_limit_on_the_served_bento(keyed: KeyedServer) -> None:
    """A predict token predicts and is refused /model; a burst over the limit is a 429 with
    Retry-After, counted by status in /metrics, and the client is served after it."""
    from concurrent.futures import ThreadPoolExecutor

    server = keyed.server

    def bearer(subject: str, *scopes: str) -> dict[str, str]:
        minted = tokens.mint(keyed.keys, subject, list(scopes), TOKEN_AUDIENCE)
        return {"Authorization": f"Bearer {minted}"}

    with server.report_on_failure():
        predictor = bearer("e2e-predictor", PREDICT)
        response = server.post("/predict", EXAMPLE_REQUEST, headers=predictor)
        assert response.status_code == 200, response.text
        assert response.json()["role"] == "champion"
        response = server.post("/model", {}, headers=predictor)
        assert response.status_code == 403, response.text
        assert response.json() == {"error": "this endpoint needs the scope admin"}
        assert response.headers["www-authenticate"] == (
            'Bearer error="insufficient_scope", scope="admin"'
        )
        response = server.post("/model", {}, headers=bearer("e2e-admin", ADMIN))
        assert response.status_code == 200 and response.json()["model_version"] == "1"

        # Three times what all workers' buckets hold, at once from 8 threads (each worker counts
        # its own share): well over what refills meanwhile.
        burst = bearer("e2e-burst", PREDICT)
        before = status_count(server, "/predict", 429)
        scored = histogram(server.get("/metrics").text).get(f"{HISTOGRAM}_count", 0.0)
        with ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(
                    lambda _: server.post("/predict", EXAMPLE_REQUEST, headers=burst),
                    range(3 * RATE_PER_S * KEYED_WORKERS),
                )
            )
        statuses = [a.status_code for a in answers]
        refused = [a for a in answers if a.status_code == 429]
        assert set(statuses) == {200, 429}, statuses
        assert statuses.count(200) >= RATE_PER_S, statuses  # the bucket started full
        retry_after = {a.headers["retry-after"] for a in refused}
        assert retry_after == {"1"}, retry_after
        assert refused[0].json() == {
            "error": f"rate limit of {RATE_PER_S} requests per 1 s exceeded: retry after 1 s"
        }
        assert status_count(server, "/predict", 429) == before + len(refused)
        # Answered by both workers, and counted whole: /metrics sums the workers' shards.
        assert len(worker_processes(server)) == KEYED_WORKERS
        after = histogram(server.get("/metrics").text)[f"{HISTOGRAM}_count"]
        assert after - scored == statuses.count(200)
        # Other clients were never limited by it; the burst's client is served after the wait.
        assert server.post("/predict", EXAMPLE_REQUEST, headers=predictor).status_code == 200
        time.sleep(1.0)
        assert server.post("/predict", EXAMPLE_REQUEST, headers=burst).status_code == 200


# -- 6. metrics -------------------------------------------------------------------------------

HISTOGRAM = "flight_delay_probability"
SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<labels>\{[^}]*\})? (?P<value>\S+)$")


def histogram(text: str) -> dict[str, float]:
    """The samples of the prediction histogram: ``_count``, ``_sum`` and each bucket.

    Summed over the model labels (``model_version``, ``role``): only the champion answers
    here, and the sums do not depend on the labels' order.
    """
    samples: dict[str, float] = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match and match["name"].startswith(HISTOGRAM):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"] or ""))
            assert set(labels) - {"le"} == {"model_version", "role"}, line
            assert labels["role"] == "champion", line
            name = match["name"] + (f'{{le="{labels["le"]}"}}' if "le" in labels else "")
            samples[name] = samples.get(name, 0.0) + float(match["value"])
    return samples


def test_metrics_are_prometheus_text_with_the_prediction_histogram(
    server: BentoServer, flights: list[dict[str, Any]]
) -> None:
    with server.report_on_failure():
        before = histogram(server.get("/metrics").text)
        assert server.post("/predict", flights[0]).status_code == 200
        assert server.post("/predict_batch", {"flights": flights[:5]}).status_code == 200

        response = server.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain"), response.headers
        text = response.text
        assert f"# HELP {HISTOGRAM} Predicted probability of a 15+ minute arrival delay" in text
        assert f"# TYPE {HISTOGRAM} histogram" in text
        for line in text.splitlines():  # every line a comment or a well-formed sample
            assert not line or line.startswith("#") or SAMPLE.match(line), line
        after = histogram(text)
        count = f"{HISTOGRAM}_count"
        assert after[count] - before.get(count, 0.0) == 6.0, (before, after)
        assert after[f'{HISTOGRAM}_bucket{{le="+Inf"}}'] == after[count]
        assert 0.0 < after[f"{HISTOGRAM}_sum"] <= after[count]
        assert "bentoml_service_request_duration_seconds" in text


# -- 7. fuzzing -------------------------------------------------------------------------------


@dataclass
class FuzzOutcome:
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    # Cases invalid by the OpenAPI schema that the request contract parses all the same:
    # answered, not refused (none expected since numbers are strict; each one is checked).
    coerced: int = 0

    @property
    def cases(self) -> int:
        return sum(self.statuses.values())


def contract_accepts(contract: Any, label: str, body: Any) -> bool:
    """Whether the request contract (the service's pydantic model) parses ``body``."""
    from pydantic import ValidationError

    flights = body.get("flights") if label.endswith("_batch") and isinstance(body, dict) else [body]
    if not isinstance(flights, list) or not 1 <= len(flights) <= MAX_BATCH:
        return False
    try:
        for flight in flights:
            contract.model_validate(flight)
    except ValidationError:
        return False
    return True


def fuzz(server: BentoServer, operation: Any, mode: Any, contract: Any = None) -> FuzzOutcome:
    """Sends ``FUZZ_EXAMPLES`` generated cases of ``operation`` and records what came back.

    Every answer must not be a server error and must use a documented status code; a 200
    must match the documented response schema. (BentoML documents the 400 body's ``detail``
    as a string but sends pydantic's error list, so 400 bodies are not schema-checked.)
    """
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        response_schema_conformance,
        status_code_conformance,
    )

    outcome = FuzzOutcome()

    @settings(
        max_examples=FUZZ_EXAMPLES,
        derandomize=True,  # the same cases on every run
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: every failure is recorded
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def call(case: Any) -> None:
        answer = case.call(base_url=server.url, session=server.http, timeout=REQUEST_TIMEOUT)
        status = answer.status_code
        outcome.statuses[status] = outcome.statuses.get(status, 0) + 1
        if contract is not None and status == 200:
            if not contract_accepts(contract, operation.label, case.body):
                outcome.failures.append(
                    f"accepted, but the contract refuses it: {case.body!r:.500}"
                )
            outcome.coerced += 1
        checks = [not_a_server_error, status_code_conformance]
        if status == 200:
            checks.append(response_schema_conformance)
        try:
            case.validate_response(answer, checks=checks)
        except AssertionError as error:
            first = str(error).strip().splitlines()[:3]
            curl = case.as_curl_command(base_url=server.url)
            outcome.failures.append(f"{status}: {' | '.join(first)}\n  {curl[:1500]}")

    call()
    return outcome


@pytest.fixture
def hypothesis_home(tmp_path: Path) -> Iterator[Path]:
    """Hypothesis' caches (constants, unicode data) in a temporary folder, not the project."""
    from hypothesis import configuration

    home = tmp_path / ".hypothesis"
    configuration.set_hypothesis_home_dir(home)
    try:
        yield home
    finally:
        configuration.set_hypothesis_home_dir(None)


def request_contract(deployment: Deployment) -> Any:
    """The service's request model, built as the service builds it from its model's codes."""
    from mlops_assets.lib.scoring import request_fields, request_model

    models = deployment.bentoml_home / "models" / settings.MODEL_NAME
    reference = max(models.glob("*/reference.json"), key=lambda path: path.stat().st_mtime)
    codes = json.loads(reference.read_text())
    return request_model(request_fields(codes["carriers"], codes["airports"]))


def test_fuzzing_the_prediction_endpoints_never_yields_a_server_error(
    server: BentoServer,
    deployment: Deployment,
    hypothesis_home: Path,
    record_property: Callable[[str, Any], None],
) -> None:
    import schemathesis
    from schemathesis import GenerationMode

    contract = request_contract(deployment)

    with server.report_on_failure():
        response = server.get("/docs.json")
        assert response.status_code == 200
        schema = schemathesis.openapi.from_dict(response.json()).include(
            path=["/predict", "/predict_batch"], method="POST"
        )
        operations = [result.ok() for result in schema.get_all_operations()]
        assert sorted(op.label for op in operations) == ["POST /predict", "POST /predict_batch"]

        started = time.monotonic()
        outcomes = {
            (operation.label, mode.value): fuzz(
                server, operation, mode, contract if mode == GenerationMode.NEGATIVE else None
            )
            for operation in operations
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        }
        elapsed = time.monotonic() - started

        total = sum(o.cases for o in outcomes.values())
        record_property("fuzz_cases", total)
        summary = "; ".join(f"{op} {mode}: {o.statuses}" for (op, mode), o in outcomes.items())
        print(f"schemathesis: {total} cases in {elapsed:.1f} s ({summary})")
        assert total > 0
        failures = [f for o in outcomes.values() for f in o.failures]
        assert not failures, f"{len(failures)} failing cases:\n" + "\n".join(failures[:10])
        for (label, mode), outcome in outcomes.items():
            assert outcome.cases > 0, (label, mode)
            assert max(outcome.statuses) < 500, (label, mode, outcome.statuses)
            if mode == GenerationMode.NEGATIVE.value:  # invalid by the schema: refused
                # ... unless the contract parses it (checked case by case in fuzz).
                assert outcome.statuses.get(400, 0) > 0, (label, outcome.statuses)
                assert set(outcome.statuses) <= {200, 400}, (label, outcome.statuses)
                assert outcome.statuses.get(200, 0) == outcome.coerced
            else:  # valid by the schema: the schema's example is answered; generated values
                # mostly break rules across fields that a JSON schema cannot state (time_hour
                # against the date and sched_dep_time, HHMM minutes) and are refused.
                assert outcome.statuses.get(200, 0) > 0, (label, outcome.statuses)
        server.check_alive()
        assert server.post("/predict", EXAMPLE_REQUEST).status_code == 200


# -- 8. hostile input -------------------------------------------------------------------------

FAST_S = 0.5  # a refusal is answered at once, whatever the body
SLOW_BODY_DEADLINE_S = 1.0  # the keyed server's MLOPS_BODY_TIMEOUT_S


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    seconds: float


def send_raw(server: BentoServer, head: bytes, parts: list[tuple[float, bytes]]) -> Answer:
    """Sends a request as bytes over a socket (``parts`` after their delays), reads the answer.

    No client library in between: malformed headers, huge headers and slow bodies go out as
    written. ``seconds`` runs from the end of the headers to the complete answer.
    """
    import socket

    with socket.create_connection((HOST, server.port), timeout=REQUEST_TIMEOUT) as sock:
        sock.sendall(head)
        started = time.monotonic()
        try:
            for delay, chunk in parts:
                time.sleep(delay)
                sock.sendall(chunk)
        except OSError:  # the server answered and closed while the client was still sending
            pass
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = response.read()
        seconds = time.monotonic() - started
    return Answer(response.status, json.loads(body) if body else {}, seconds)


def request_head(path: str, key: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {HOST}", f"X-API-Key: {key}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def post_raw(
    server: BentoServer, key: str, body: bytes, headers: dict[str, str], path: str = "/predict"
) -> Answer:
    head = request_head(path, key, {"Content-Length": str(len(body)), **headers})
    return send_raw(server, head, [(0.0, body)])


def nested(canary: str) -> bytes:
    return ('{"a": ' + "[" * 10_000 + json.dumps(canary) + "]" * 10_000 + "}").encode()


def _gzipped(canary: str) -> bytes:
    import gzip

    return gzip.compress(json.dumps(_with(tailnum=canary)).encode())


@dataclass(frozen=True)
class Hostile:
    """A hostile request (carrying ``canary`` somewhere) and the refusal it must get."""

    send: Callable[[BentoServer, str, str], Answer]  # (server, key, canary) -> answer
    status: int
    error: str  # a regular expression the error text must match in full
    bound_s: float = FAST_S


HOSTILE = {
    "json_nested_10000_deep": Hostile(
        lambda s, k, c: post_raw(s, k, nested(c), {"Content-Type": "application/json"}),
        400,
        re.escape(f"JSON nested deeper than {MAX_JSON_DEPTH} levels"),
    ),
    "multipart_without_boundary": Hostile(
        lambda s, k, c: post_raw(s, k, c.encode(), {"Content-Type": "multipart/form-data"}),
        415,
        re.escape("unsupported content type multipart/form-data: send application/json"),
    ),
    "gzip_body": Hostile(
        lambda s, k, c: post_raw(
            s, k, _gzipped(c), {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        ),
        415,
        re.escape("unsupported content encoding gzip: send the JSON uncompressed"),
    ),
    "header_of_8_mb": Hostile(
        lambda s, k, c: post_raw(
            s,
            k,
            json.dumps(EXAMPLE_REQUEST).encode(),
            {"Content-Type": "application/json", "X-Padding": c + "a" * (8 * 1024 * 1024)},
        ),
        431,
        re.escape(f"request headers over the limit of {MAX_HEADER_BYTES} bytes"),
        bound_s=1.0,  # the 8 MB still cross the loopback and the HTTP parser first (0.2-0.4 s)
    ),
    "body_sent_slowly": Hostile(
        lambda s, k, c: send_raw(
            s,
            request_head(
                "/predict", k, {"Content-Type": "application/json", "Content-Length": "1000"}
            ),
            [(0.0, b'{"tailnum": "'), (0.3, c.encode()), (0.3, b'", ')],  # and no more
        ),
        408,
        re.escape(f"request body not received within {SLOW_BODY_DEADLINE_S:g} s"),
        bound_s=SLOW_BODY_DEADLINE_S + FAST_S,
    ),
}


def worker_processes(server: BentoServer) -> list[int]:
    """Process ids of the server's workers (BentoML's supervisor starts one per worker)."""
    import psutil

    children = psutil.Process(server.process.pid).children(recursive=True)
    return [c.pid for c in children if "_bentoml_impl.worker" in " ".join(c.cmdline())]


def status_count(server: BentoServer, path: str, status: int) -> float:
    """Requests to ``path`` answered ``status``, from BentoML's request counter in /metrics."""
    total = 0.0
    for line in server.get("/metrics").text.splitlines():
        match = SAMPLE.match(line)
        if match and match["name"] == "bentoml_service_request_total":
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"] or ""))
            if labels.get("endpoint") == path and labels.get("http_response_code") == str(status):
                total += float(match["value"])
    return total


def access_lines(server: BentoServer, path: str, status: int) -> int:
    """Lines of BentoML's access log for ``path`` answered ``status``."""
    return len(re.findall(rf"path={re.escape(path)},.*\(status={status},", server.log_text()))


def assert_refused_fast_counted_and_unlogged(
    server: BentoServer, answer: Answer, case: Hostile, canary: str, path: str, counts: Any
) -> None:
    """The refusal: its status and error, in time, counted once, logged once, no value."""
    assert answer.status == case.status, answer
    assert set(answer.body) == {"error"} and re.fullmatch(case.error, answer.body["error"]), answer
    assert canary not in json.dumps(answer.body)
    assert answer.seconds < case.bound_s, f"answered in {answer.seconds:.2f} s"
    metric_before, lines_before = counts
    assert status_count(server, path, case.status) == metric_before + 1
    deadline = time.monotonic() + 5.0  # the access line reaches the file shortly
    while access_lines(server, path, case.status) == lines_before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert access_lines(server, path, case.status) == lines_before + 1, server.log_tail()
    assert canary not in server.log_text(), "a submitted value reached the server log"


@pytest.mark.parametrize("case", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_input_is_a_fast_counted_4xx_that_logs_no_value(
    keyed: KeyedServer, case: Hostile
) -> None:
    server, canary = keyed.server, f"canary-{secrets.token_hex(8)}"
    with server.report_on_failure():
        path, status = "/predict", case.status
        counts = (status_count(server, path, status), access_lines(server, path, status))
        answer = case.send(server, keyed.key, canary)
        print(f"{case.status} in {answer.seconds * 1000:.0f} ms")
        assert_refused_fast_counted_and_unlogged(server, answer, case, canary, "/predict", counts)
        # The server shrugs it off and keeps answering.
        ok = server.post("/predict", EXAMPLE_REQUEST, headers={"X-API-Key": keyed.key})
        assert ok.status_code == 200, ok.text


CONTRACT_REFUSALS = {
    "minutes_over_59": ({"sched_dep_time": 1275}, ["sched_dep_time"], "value_error"),
    "hours_over_23": ({"sched_dep_time": 2399}, ["sched_dep_time"], "less_than_equal"),
    "time_hour_contradicts_the_date": (
        {"time_hour": "2013-01-01T09:00:00-05:00"},
        [],
        "value_error",
    ),
    "number_as_string": ({"distance": "1400"}, ["distance"], "int_type"),
    "unknown_airport_named_by_the_canary": ({"dest": "CANARY"}, ["dest"], "value_error"),
}


@pytest.mark.parametrize("change", list(CONTRACT_REFUSALS.values()), ids=list(CONTRACT_REFUSALS))
def test_a_contract_refusal_names_field_and_rule_and_logs_no_value(
    keyed: KeyedServer, change: tuple[dict[str, Any], list[Any], str]
) -> None:
    server = keyed.server
    # The canary is a valid tail number sent with every request (the refused field's value
    # in the last case): no value of a refused request may reach the log.
    canary = "Q" + secrets.token_hex(3).upper()
    values, loc, kind = change
    values = {k: canary if v == "CANARY" else v for k, v in values.items()}
    with server.report_on_failure():
        counts = (status_count(server, "/predict", 400), access_lines(server, "/predict", 400))
        started = time.monotonic()
        response = server.post(
            "/predict", _with(tailnum=canary, **values), headers={"X-API-Key": keyed.key}
        )
        answer = Answer(response.status_code, response.json(), time.monotonic() - started)
        assert answer.status == 400, response.text
        [error] = answer.body["detail"]
        assert (error["loc"], error["type"]) == (loc, kind), error
        assert "input" not in error
        for value in values.values():
            assert str(value) not in error["msg"], error
        refusal = Answer(400, {"error": error["msg"]}, answer.seconds)
        case = Hostile(lambda *_: refusal, 400, r"(Value error, )?\S.*")
        assert_refused_fast_counted_and_unlogged(server, refusal, case, canary, "/predict", counts)
        assert "input_value" not in server.log_text()
