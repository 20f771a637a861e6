"""The API guard of the prediction service, on a plain ASGI app (no BentoML, no model)."""

from __future__ import annotations

import asyncio
import json
import time
import warnings
from typing import Any

import pytest

with warnings.catch_warnings():  # starlette's notice about its httpx backend
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from mlops_assets.serving.guard import (
    MAX_HEADER_BYTES,
    MAX_JSON_DEPTH,
    ApiGuard,
    body_timeout_from_environment,
)

SECRET = "s3cr3t-key"
CANARY = "canary-7f3a9c"  # a submitted value that must never be repeated
FAST_S = 0.5  # a refusal is answered at once


async def echo(scope: Any, receive: Any, send: Any) -> None:
    """Answers with the size and a hash of the body it received."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    payload = json.dumps({"path": scope["path"], "body": body.decode()}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": payload})


def client(key: str = "", max_body: int = 1000) -> TestClient:
    return TestClient(ApiGuard(echo, api_key=key, max_body=max_body))


def test_without_a_key_requests_pass_unchanged():
    response = client().post("/predict", content=b'{"a": 1}')
    assert response.status_code == 200
    assert response.json() == {"path": "/predict", "body": '{"a": 1}'}


INVALID = 'Bearer error="invalid_token"'


@pytest.mark.parametrize(
    ("headers", "status", "error", "challenge"),
    [
        ({}, 401, "missing credentials: send Authorization: Bearer <API key>", "Bearer"),
        ({"Authorization": "Bearer wrong"}, 401, "wrong API key", INVALID),
        ({"X-API-Key": "wrong"}, 401, "wrong API key", INVALID),
        (  # no scheme
            {"Authorization": SECRET},
            401,
            "malformed Authorization header: send Bearer <API key>",
            INVALID,
        ),
        ({"Authorization": f"Bearer {SECRET}"}, 200, "", ""),
        ({"Authorization": f"bearer {SECRET}"}, 200, "", ""),
        ({"X-API-Key": SECRET}, 200, "", ""),
    ],
)
def test_prediction_endpoints_need_the_key(headers, status, error, challenge):
    response = client(SECRET).post("/predict_batch", content=b"{}", headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.json() == {"error": error}
        assert response.headers["www-authenticate"] == challenge
        assert SECRET not in response.text


@pytest.mark.parametrize("path", ["/metrics", "/readyz", "/livez", "/healthz", "/docs.json"])
def test_health_metrics_and_docs_stay_open(path):
    assert client(SECRET).get(path).status_code == 200


def test_declared_oversized_body_is_refused_before_reading():
    response = client(max_body=100).post("/predict", content=b"[" + b"1," * 100 + b"1]")
    assert response.status_code == 413
    assert response.json() == {"error": "request body over the limit of 100 bytes"}


def test_streamed_oversized_body_is_refused():
    def chunks() -> Any:
        for _ in range(50):
            yield b"0123456789"

    response = client(max_body=100).post("/predict", content=chunks())
    assert response.status_code == 413


def test_malformed_json_is_a_clear_400():
    response = client().post("/predict", content=b'{"year": 2013,')
    assert response.status_code == 400
    assert response.json()["error"].startswith("malformed JSON: Expecting property name")


def test_an_empty_body_is_an_empty_input():
    response = client().post("/model")
    assert response.status_code == 200
    assert response.json() == {"path": "/model", "body": ""}


def test_json_nested_deeper_than_the_parser_allows_is_a_fast_400():
    started = time.perf_counter()
    response = client(max_body=100_000).post("/predict", content=b"[" * 10_000 + b"]" * 10_000)
    assert time.perf_counter() - started < FAST_S
    assert response.status_code == 400
    assert response.json() == {"error": f"JSON nested deeper than {MAX_JSON_DEPTH} levels"}


def test_json_nested_deeper_than_the_bound_is_refused_and_a_request_passes():
    deep = {"flights": [{"a": 1}]}
    for _ in range(MAX_JSON_DEPTH - 3):  # exactly the bound: accepted
        deep = {"x": deep}
    assert client().post("/predict", content=json.dumps(deep).encode()).status_code == 200
    response = client().post("/predict", content=json.dumps({"x": deep}).encode())
    assert response.status_code == 400
    assert "nested deeper" in response.json()["error"]


def test_brackets_and_escaped_quotes_inside_strings_do_not_count_as_depth():
    inside = "[{" * 40 + '\\"}]\\\\' + "]}" * 40  # brackets, an escaped quote, a backslash
    body = {"flights": [{"a": inside, "b": "x\\u00e9]]]"}], "c": '"' * 3}
    assert client().post("/predict", content=json.dumps(body).encode()).status_code == 200
    deep = json.dumps({"s": "[[[", "x": [[[[[[[[[[[[[[[[["]"]]]]]]]]]]]]]]]]]})  # 18 levels
    response = client().post("/predict", content=deep.encode())
    assert response.json() == {"error": f"JSON nested deeper than {MAX_JSON_DEPTH} levels"}


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        (
            {"content-type": "multipart/form-data"},  # no boundary
            "unsupported content type multipart/form-data: send application/json",
        ),
        (
            {"content-type": "text/plain; charset=utf-8"},
            "unsupported content type text/plain: send application/json",
        ),
        (
            {"content-type": f"text/{CANARY} x y"},  # not a token: not repeated
            "unsupported content type (unreadable): send application/json",
        ),
        (
            {"content-type": "application/json", "content-encoding": "gzip"},
            "unsupported content encoding gzip: send the JSON uncompressed",
        ),
    ],
)
def test_a_body_that_is_not_plain_json_is_a_415_naming_its_type(headers, error):
    response = client().post("/predict", content=b'{"a": 1}', headers=headers)
    assert response.status_code == 415
    assert response.json() == {"error": error}


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"]
)
def test_json_content_types_pass(content_type):
    response = client().post("/predict", content=b"{}", headers={"content-type": content_type})
    assert response.status_code == 200


@pytest.mark.parametrize("path", ["/predict", "/metrics"])
def test_headers_over_the_limit_are_a_431_on_every_path(path):
    big = {"x-padding": "a" * MAX_HEADER_BYTES}
    response = client().post(path, content=b"{}", headers=big)
    assert response.status_code == 431
    assert response.json() == {
        "error": f"request headers over the limit of {MAX_HEADER_BYTES} bytes"
    }
    assert response.headers["connection"] == "close"
    fits = {"x-padding": "a" * (MAX_HEADER_BYTES // 2)}
    assert client().post(path, content=b"{}", headers=fits).status_code == 200


def call(guard: ApiGuard, messages: list[tuple[float, dict[str, Any]]]) -> tuple[list, float]:
    """Runs one POST /predict through ``guard`` in process: ``messages`` are received after
    their delay (a slow client); returns what was sent and the seconds it took."""
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        if not queue:
            await asyncio.sleep(3600)  # a client that sends nothing more
        delay, message = queue.pop(0)
        await asyncio.sleep(delay)
        return message

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": []}
    started = time.perf_counter()
    asyncio.run(guard(scope, receive, send))
    return sent, time.perf_counter() - started


def test_a_body_sent_too_slowly_is_a_408_at_the_deadline():
    guard = ApiGuard(echo, api_key="", body_timeout=0.3)
    trickle = [(0.1, {"type": "http.request", "body": b"{", "more_body": True})] * 10
    sent, took = call(guard, trickle)
    assert 0.3 <= took < 0.3 + FAST_S
    assert sent[0]["status"] == 408
    assert (b"connection", b"close") in sent[0]["headers"]
    assert json.loads(sent[1]["body"]) == {"error": "request body not received within 0.3 s"}


def test_a_body_in_time_passes_and_a_client_that_left_gets_nothing():
    guard = ApiGuard(echo, api_key="", body_timeout=2.0)
    parts = [(0.05, {"type": "http.request", "body": b'{"a"', "more_body": True})]
    parts += [(0.05, {"type": "http.request", "body": b": 1}", "more_body": False})]
    sent, _ = call(guard, parts)
    assert sent[0]["status"] == 200
    assert json.loads(sent[1]["body"])["body"] == '{"a": 1}'
    sent, _ = call(guard, [(0.0, {"type": "http.disconnect"})])
    assert sent == []


def test_the_body_deadline_is_a_setting_below_the_request_timeout():
    assert body_timeout_from_environment({}) == 5.0
    assert body_timeout_from_environment({"MLOPS_BODY_TIMEOUT_S": "1.5"}) == 1.5
    for bad in ("0", "10", "nan", "soon"):
        with pytest.raises(RuntimeError, match=r"MLOPS_BODY_TIMEOUT_S must be a number"):
            body_timeout_from_environment({"MLOPS_BODY_TIMEOUT_S": bad})
