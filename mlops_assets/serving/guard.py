"""The request guard in front of the prediction endpoints (plain ASGI).

Credentials, scopes and rate limit (``serving.auth``) first, then the shape of the request.

Kept apart from the service so it can be tested without BentoML or a model.
"""

import asyncio
import json
import os
import re
from collections.abc import Mapping
from typing import Any

from pydantic_core import from_json

from mlops_assets.serving.auth import SCOPES, Access, Principal, RateLimiter

BODY_TIMEOUT_VARIABLE = "MLOPS_BODY_TIMEOUT_S"
# Requests above this size are refused before they are parsed (a full batch is ~0.5 MB).
MAX_BODY_BYTES = 2 * 1024 * 1024
# All header names and values of a request together (h11's own default bound).
MAX_HEADER_BYTES = 16 * 1024
# A request is 3 levels deep ({"flights": [{...}]}); deeper is never a flight.
MAX_JSON_DEPTH = 16
# The whole body must arrive within this; below BentoML's 10 s request timeout, so a slow
# client gets its own 408 rather than a 504 that reads as the server's fault.
BODY_TIMEOUT_S = 5.0
PROTECTED_PATHS = frozenset(SCOPES)
JSON_TYPES = frozenset({"application/json"})
# A media type or an encoding named in an error: a token, short; anything else is not repeated.
_TOKEN = re.compile(r"[A-Za-z0-9!#$&^_.+-]{1,40}(/[A-Za-z0-9!#$&^_.+-]{1,60})?")


class ApiGuard:
    """ASGI middleware in front of the prediction endpoints.

    Every refusal is a 4xx with a JSON ``{"error": ...}`` naming the rule, sent before the
    request reaches the framework, and never repeating a submitted value other than a
    well-formed media type or encoding name. In order:

    - headers over ``max_header`` bytes in all: 431 (on every path);
    - missing, wrong or invalid credentials (``access``; the API key is compared in constant
      time, nothing of them is logged): 401 with ``WWW-Authenticate``;
    - a token without the scope the path needs: 403 naming the scope;
    - more requests than ``limiter`` allows the client: 429 with ``Retry-After`` (seconds);
    - a content type other than JSON, or a compressed body: 415;
    - a body over ``max_body`` bytes: 413, before it is read whole;
    - a body not received within ``body_timeout`` seconds: 408;
    - malformed JSON, or JSON nested deeper than ``MAX_JSON_DEPTH``: 400.
    """

    def __init__(
        self,
        app: Any,
        api_key: str = "",
        access: Access | None = None,
        limiter: RateLimiter | None = None,
        max_body: int = MAX_BODY_BYTES,
        max_header: int = MAX_HEADER_BYTES,
        body_timeout: float = BODY_TIMEOUT_S,
    ) -> None:
        self.app = app
        self.access = access if access is not None else Access(api_key)
        self.limiter = limiter
        self.max_body = max_body
        self.max_header = max_header
        self.body_timeout = body_timeout

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Guards the prediction endpoints, passes everything else through."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if sum(len(name) + len(value) for name, value in scope["headers"]) > self.max_header:
            error = f"request headers over the limit of {self.max_header} bytes"
            await _reply(send, 431, error, {"connection": "close"})
            return
        if scope["path"] not in PROTECTED_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if not await self._admitted(scope, headers, send):
            return
        unsupported = _unsupported_media(headers)
        if unsupported:
            await _reply(send, 415, unsupported)
            return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            await _reply(send, 413, self._too_large(), {"connection": "close"})
            return
        try:
            async with asyncio.timeout(self.body_timeout):
                body = await self._read_body(receive)
        except TimeoutError:
            error = f"request body not received within {self.body_timeout:g} s"
            await _reply(send, 408, error, {"connection": "close"})
            return
        if body is None:  # the client left
            return
        if len(body) > self.max_body:
            await _reply(send, 413, self._too_large(), {"connection": "close"})
            return
        malformed = _malformed_json(body)
        if malformed:
            await _reply(send, 400, malformed)
            return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read_body(self, receive: Any) -> bytes | None:
        """The whole body, or its first ``max_body + 1`` bytes; None if the client left."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if size > self.max_body or not message.get("more_body", False):
                return b"".join(chunks)

    def _too_large(self) -> str:
        return f"request body over the limit of {self.max_body} bytes"

    async def _admitted(self, scope: Any, headers: dict[bytes, bytes], send: Any) -> bool:
        """Whether the caller may go on; if not, the 401, 403 or 429 is sent."""
        address = (scope.get("client") or ("unknown",))[0]
        verdict = self.access.check(headers, scope["path"], str(address))
        if not isinstance(verdict, Principal):
            challenge = {"www-authenticate": verdict.challenge}
            await _reply(send, verdict.status, verdict.error, challenge)
            return False
        wait = self.limiter.take(verdict.client) if self.limiter is not None else 0
        if wait:
            limit = f"{self.limiter.rate} requests per {self.limiter.period:g} s"  # type: ignore[union-attr]
            error = f"rate limit of {limit} exceeded: retry after {wait} s"
            await _reply(send, 429, error, {"retry-after": str(wait)})
            return False
        return True


def _named(raw: bytes) -> str:
    """``raw`` (a media type or an encoding) if it is a short token, else a placeholder."""
    text = raw.decode("latin-1").strip().lower()
    return text if _TOKEN.fullmatch(text) else "(unreadable)"


def _unsupported_media(headers: dict[bytes, bytes]) -> str:
    """Why the body's declared type or encoding is refused; '' when it is plain JSON.

    A body without a content type is read as JSON (clients posting no input send none).
    """
    encoding = headers.get(b"content-encoding", b"").strip().lower()
    if encoding not in (b"", b"identity"):
        return f"unsupported content encoding {_named(encoding)}: send the JSON uncompressed"
    declared = headers.get(b"content-type")
    if declared is None:
        return ""
    media = declared.split(b";", 1)[0]
    if _named(media) in JSON_TYPES:
        return ""
    return f"unsupported content type {_named(media)}: send application/json"


def _malformed_json(body: bytes) -> str:
    """Why ``body`` is not acceptable JSON; '' when it is (an empty body is an empty input).

    The depth is read from the bytes before anything parses them; the well-formedness by
    pydantic's parser (Rust, ~2x faster than ``json`` on a full batch), and the message, when
    it fails, by ``json``'s (positions only: its messages never quote the input).
    """
    if not body.strip():  # BentoML reads it as {}
        return ""
    if _depth_over(body, MAX_JSON_DEPTH):
        return f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
    try:
        from_json(body)
    except ValueError:
        try:
            json.loads(body)
        except RecursionError:  # unbalanced brackets deeper than the parser's own bound
            return f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
        except ValueError as error:
            return f"malformed JSON: {error}"
    return ""


# Everything but the characters that open and close containers and strings.
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'"[]{}')
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_EMPTY_PAIR = re.compile(rb"\{\}|\[\]")


def _depth_over(body: bytes, limit: int) -> bool:
    """Whether the JSON text ``body`` nests containers more than ``limit`` deep.

    Read from its skeleton (escapes dropped, then everything but quotes and brackets, then the
    strings' contents): each pass removes the innermost empty pairs, so a skeleton still there
    after ``limit`` passes is deeper. Unbalanced brackets stop the passes: the parser then
    says what is malformed. C-speed string operations only, no recursion.
    """
    if b"\\" in body:
        body = _ESCAPE.sub(b"", body)
    skeleton = b"".join(body.translate(None, _NOT_STRUCTURE).split(b'"')[::2])
    for _ in range(limit):
        if not skeleton:
            return False
        reduced = _EMPTY_PAIR.sub(b"", skeleton)
        if len(reduced) == len(skeleton):
            return False
        skeleton = reduced
    return bool(skeleton)


async def _reply(send: Any, status: int, error: str, extra: dict[str, str] | None = None) -> None:
    body = json.dumps({"error": error}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def body_timeout_from_environment(env: Mapping[str, str] | None = None) -> float:
    """Seconds a client has to send its whole body (``MLOPS_BODY_TIMEOUT_S``, default 5)."""
    raw = (os.environ if env is None else env).get(BODY_TIMEOUT_VARIABLE, "").strip()
    if not raw:
        return BODY_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0.0 < value < 10.0:  # NaN fails this too; 10 s is BentoML's request timeout
        raise RuntimeError(
            f"{BODY_TIMEOUT_VARIABLE} must be a number of seconds in (0, 10), got {raw!r}"
        )
    return value
