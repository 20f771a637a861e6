"""One structured log line per request to the prediction service (plain ASGI, no BentoML).

``AccessLog`` wraps the service (outside the API-key guard, so refused requests are logged
too) and, when the response is sent, logs one record on ``mlops_assets.access`` with the
request id, method, endpoint, status, latency and the service's fixed fields (model version;
challenger version, mode and share during a trial). The handler adds what only it knows (the
number of flights, and how many the challenger answered) with ``note``. Nothing of the
request's body is read or logged.

The request id is the one BentoML returns in ``X-BentoML-Request-ID``, so a caller's id finds
its line; a response BentoML did not make (401, 413 and malformed JSON from the guard) gets a
fresh id. Health probes and ``/metrics`` are not logged: they come every few seconds.
"""

from __future__ import annotations

import contextvars
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

from mlops_assets.lib.logs import FIELDS

LOGGER_NAME = "mlops_assets.access"
REQUEST_ID_HEADER = b"x-bentoml-request-id"
UNLOGGED_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics"})

# The fields of the request being answered; a dict the handler fills in (the handler runs in
# a worker thread with a copy of this context: the copy holds the same dict).
_current: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "mlops_access_fields", default=None
)


def note(**fields: Any) -> None:
    """Adds ``fields`` to the current request's line (nothing outside a logged request)."""
    current = _current.get()
    if current is not None:
        current.update(fields)


class AccessLog:
    """ASGI middleware: one record per request on ``mlops_assets.access``."""

    def __init__(self, app: Any, fields: Mapping[str, Any] | None = None) -> None:
        self.app = app
        # Read at every request: the service fills it in once its models are loaded.
        self.fields = fields if fields is not None else {}
        self.logger = logging.getLogger(LOGGER_NAME)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Passes the request on and logs it once the response is complete."""
        if scope["type"] != "http" or scope["path"] in UNLOGGED_PATHS:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        response: dict[str, Any] = {"status": 500, "request_id": None}
        noted: dict[str, Any] = {}
        token = _current.set(noted)

        async def observed_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                response["status"] = int(message["status"])
                for name, value in message.get("headers") or ():
                    if name.lower() == REQUEST_ID_HEADER:
                        response["request_id"] = value.decode("latin-1")
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            _current.reset(token)
            self._log(scope, response, noted, (time.perf_counter() - start) * 1000)

    def _log(
        self, scope: Any, response: dict[str, Any], noted: dict[str, Any], latency_ms: float
    ) -> None:
        status = response["status"]
        method, path = scope.get("method", ""), scope["path"]
        fields = {
            "request_id": response["request_id"] or uuid.uuid4().hex[:16],
            "method": method,
            "endpoint": path,
            "status": status,
            "latency_ms": round(latency_ms, 3),
            **self.fields,
            "rows": 0,  # nothing scored unless the handler says otherwise
            **noted,
        }
        level = logging.ERROR if status >= 500 else logging.INFO
        self.logger.log(level, "%s %s %s", method, path, status, extra={FIELDS: fields})
