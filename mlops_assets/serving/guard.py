"""The API key and request-size guard in front of the prediction endpoints (plain ASGI).

Kept apart from the service so it can be tested without BentoML or a model.
"""

import hmac
import json
import os
from collections.abc import Mapping
from typing import Any

API_KEY_VARIABLE = "MLOPS_API_KEY"
# Requests above this size are refused before they are parsed (a full batch is ~0.5 MB).
MAX_BODY_BYTES = 2 * 1024 * 1024
PROTECTED_PATHS = frozenset({"/predict", "/predict_batch", "/model"})


class ApiGuard:
    """ASGI middleware in front of the prediction endpoints.

    Checks the API key (constant-time comparison; the key is never logged), refuses bodies
    over ``max_body`` bytes with 413 before reading them whole, and answers malformed JSON
    with 400 instead of letting it reach the framework.
    """

    def __init__(self, app: Any, api_key: str, max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.api_key = api_key.encode()
        self.max_body = max_body

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Guards the prediction endpoints, passes everything else through."""
        if scope["type"] != "http" or scope["path"] not in PROTECTED_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.api_key and not self._authorized(headers):
            await _reply(send, 401, "missing or wrong API key", {"www-authenticate": "Bearer"})
            return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            await _reply(send, 413, f"request body over the limit of {self.max_body} bytes")
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body:
                await _reply(send, 413, f"request body over the limit of {self.max_body} bytes")
                return
            if not message.get("more_body", False):
                break
        try:
            if body.strip():  # an empty body is an empty input (BentoML reads it as {})
                json.loads(body)
        except ValueError as error:
            await _reply(send, 400, f"malformed JSON: {error}")
            return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        given = headers.get(b"x-api-key", b"")
        bearer = headers.get(b"authorization", b"")
        if bearer.lower().startswith(b"bearer "):
            given = bearer[7:].strip()
        return hmac.compare_digest(given, self.api_key)


async def _reply(send: Any, status: int, error: str, extra: dict[str, str] | None = None) -> None:
    body = json.dumps({"error": error}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def api_key_from_environment(env: Mapping[str, str] | None = None) -> str:
    """The API key the service requires ('' = open), refusing to run production without one."""
    env = dict(os.environ if env is None else env)
    key = env.get(API_KEY_VARIABLE, "")
    if not key and env.get("MLOPS_ENV", "local") == "production":
        raise RuntimeError(
            f"{API_KEY_VARIABLE} must be set when MLOPS_ENV=production: the prediction "
            "endpoints are not served without an API key"
        )
    return key
