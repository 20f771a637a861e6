"""The request line of the prediction service, on a plain ASGI app (no BentoML, no model)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from mlops_assets.lib.logs import JsonFormatter
from mlops_assets.serving.access_log import LOGGER_NAME, AccessLog, note

CANARY = "QZ7X9QK"
BODY = json.dumps({"carrier": CANARY, "tailnum": CANARY}).encode()


def app(status: int = 200, request_id: str | None = "0123456789abcdef", rows: int = 2) -> Any:
    """An app that reads the body, notes its rows from a worker thread, and answers."""

    async def handle(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await asyncio.to_thread(note, rows=rows)  # BentoML runs sync handlers in a thread
        headers = [(b"content-type", b"application/json")]
        if request_id:
            headers.append((b"x-bentoml-request-id", request_id.encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})

    return handle


def call(handler: Any, path: str = "/predict") -> list[dict[str, Any]]:
    """Sends one POST with ``BODY`` to ``path``; returns the messages sent back."""
    sent: list[dict[str, Any]] = []
    scope = {"type": "http", "method": "POST", "path": path, "headers": []}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(handler(scope, receive, send))
    return sent


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture) -> Any:
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)

    def formatted() -> list[dict[str, Any]]:
        out = []
        for record in caplog.records:
            assert record.name == LOGGER_NAME
            text = JsonFormatter().format(record)
            assert CANARY not in text
            out.append(json.loads(text))
        return out

    return formatted


def test_one_line_per_request_with_id_status_latency_rows_and_model(lines: Any):
    fields = {"model_version": "7", "mode": "off"}
    call(AccessLog(app(), fields))
    fields["model_version"] = "8"  # read at each request: the service fills it in at start
    call(AccessLog(app(request_id="fedcba9876543210", rows=5), fields))
    first, second = lines()
    assert first["message"] == "POST /predict 200" and first["level"] == "INFO"
    assert first["request_id"] == "0123456789abcdef"
    assert first["endpoint"] == "/predict" and first["method"] == "POST"
    assert first["status"] == 200 and first["latency_ms"] > 0
    assert first["model_version"] == "7" and first["mode"] == "off" and first["rows"] == 2
    assert second["request_id"] == "fedcba9876543210" and second["rows"] == 5
    assert second["model_version"] == "8"


def test_a_refusal_before_the_framework_gets_a_fresh_id_and_no_rows(lines: Any):
    async def refuse(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 401, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    call(AccessLog(refuse, {}))
    call(AccessLog(refuse, {}))
    first, second = lines()
    assert first["status"] == 401 and first["rows"] == 0
    assert len(first["request_id"]) == 16 and first["request_id"] != second["request_id"]


def test_a_crash_is_logged_as_a_500_error_and_raised(lines: Any):
    async def crash(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        call(AccessLog(crash, {}))
    [line] = lines()
    assert line["status"] == 500 and line["level"] == "ERROR"


def test_probes_and_metrics_are_not_logged_and_pass_through(lines: Any):
    for path in ("/livez", "/readyz", "/healthz", "/metrics"):
        sent = call(AccessLog(app(), {}), path)
        assert sent[0]["status"] == 200
    assert lines() == []


def test_note_outside_a_request_does_nothing():
    note(rows=3)  # no error, nowhere to go
