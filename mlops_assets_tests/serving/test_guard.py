"""The API guard of the prediction service, on a plain ASGI app (no BentoML, no model)."""

from __future__ import annotations

import json
import warnings
from typing import Any

import pytest

with warnings.catch_warnings():  # starlette's notice about its httpx backend
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from mlops_assets.serving.guard import ApiGuard, api_key_from_environment

SECRET = "s3cr3t-key"


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


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"X-API-Key": "wrong"}, 401),
        ({"Authorization": SECRET}, 401),  # no scheme
        ({"Authorization": f"Bearer {SECRET}"}, 200),
        ({"Authorization": f"bearer {SECRET}"}, 200),
        ({"X-API-Key": SECRET}, 200),
    ],
)
def test_prediction_endpoints_need_the_key(headers, status):
    response = client(SECRET).post("/predict_batch", content=b"{}", headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.json() == {"error": "missing or wrong API key"}
        assert response.headers["www-authenticate"] == "Bearer"
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


def test_production_refuses_to_run_without_a_key():
    with pytest.raises(RuntimeError, match="MLOPS_API_KEY must be set when MLOPS_ENV=production"):
        api_key_from_environment({"MLOPS_ENV": "production"})
    assert api_key_from_environment({"MLOPS_ENV": "production", "MLOPS_API_KEY": "k"}) == "k"
    assert api_key_from_environment({}) == ""
    assert api_key_from_environment({"MLOPS_API_KEY": "k"}) == "k"
