"""Structured logs: one JSON object per line, for the prediction service and the pipeline.

``JsonFormatter`` turns any ``logging.LogRecord`` into one line with ``time`` (ISO 8601, UTC),
``level``, ``logger`` and ``message``, the record's structured fields (passed as
``extra={"fields": {...}}``) and, for a record with an exception, an ``exception`` object.
``use_json`` puts it on every handler of the process, so the lines of the libraries underneath
(BentoML, uvicorn) are JSON too.

Request values never reach a line through an exception: a validation error (pydantic's, which
echoes the offending input in its text) is reduced to its count, field locations and error
types, and a stack holds code locations only; in the text format ``redact_validation_errors``
does the same (a traceback of pydantic's error would print every ``input_value``). Plain
Python: no Dagster, no BentoML.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

# Name of the record attribute holding a line's structured fields: extra={FIELDS: {...}}.
FIELDS = "fields"
# The keys every line starts with; a field of the same name cannot overwrite them.
BASE_KEYS = ("time", "level", "logger", "message")
# How many chained exceptions (``raise ... from``, or raised while handling) a line follows.
MAX_CHAIN = 5


def iso_utc(timestamp: float) -> str:
    """``timestamp`` (Unix seconds) in ISO 8601, UTC, milliseconds: ``...T10:00:00.123Z``."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _is_validation_error(error: BaseException) -> bool:
    # pydantic's ValidationError, recognised by its interface: lib does not import pydantic.
    return callable(getattr(error, "errors", None)) and callable(
        getattr(error, "error_count", None)
    )


def _validation_summary(error: Any) -> str:
    """Count, field locations and error types of a validation error: never its inputs or text.

    The messages are left out too: a contract rule's message quotes the refused value.
    """
    try:
        details = error.errors(include_input=False, include_context=False, include_url=False)
    except TypeError:  # an older interface without the keyword arguments
        details = []
    parts = []
    for detail in details:
        location = ".".join(str(part) for part in detail.get("loc", ())) or "(body)"
        parts.append(f"{location} ({detail.get('type', 'invalid')})")
    count = error.error_count()
    noun = "error" if count == 1 else "errors"
    return f"{count} validation {noun}" + (": " + "; ".join(parts) if parts else "")


def exception_fields(error: BaseException) -> dict[str, Any]:
    """An exception as a JSON-ready object: ``type``, ``message``, ``stack``, ``cause``.

    ``stack`` lists the frames (file, line, function, source line) without local values; a
    validation error's message is its summary only (see the module's docstring).
    """
    return _exception(error, MAX_CHAIN)


def _exception(error: BaseException, depth: int) -> dict[str, Any]:
    kind = type(error)
    name = kind.__qualname__
    if kind.__module__ != "builtins":
        name = f"{kind.__module__}.{name}"
    message = _validation_summary(error) if _is_validation_error(error) else str(error)
    out: dict[str, Any] = {
        "type": name,
        "message": message,
        "stack": "".join(traceback.format_tb(error.__traceback__)),
    }
    chained = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    if chained is not None and depth > 1:
        out["cause"] = _exception(chained, depth - 1)
    return out


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line (see the module's docstring).

    Values JSON cannot hold are written as their ``str``; newlines and quotes inside strings
    are escaped, so a line is always one line.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        line: dict[str, Any] = {
            "time": iso_utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, Mapping):
            for key, value in fields.items():
                line.setdefault(str(key), value)
        if record.exc_info and record.exc_info[1] is not None:
            line["exception"] = exception_fields(record.exc_info[1])
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, default=str)


class ValidationRedactor(logging.Filter):
    """Turns a record carrying a validation error into one line with its summary only."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrites the record in place; never drops it."""
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and _is_validation_error(error):
            record.msg = f"{record.getMessage()}: {_validation_summary(error)}"
            record.args = ()
            record.exc_info = record.exc_text = None
        return True


def _handlers() -> list[logging.Handler]:
    """The handlers of the root logger and of every logger that has its own."""
    loggers: list[logging.Logger] = [logging.getLogger()]
    loggers += [
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    return [handler for logger in loggers for handler in logger.handlers]


def redact_validation_errors() -> ValidationRedactor:
    """Puts a ``ValidationRedactor`` on each handler of this process (text logs, see above)."""
    redactor = ValidationRedactor()
    for handler in _handlers():
        handler.addFilter(redactor)
    return redactor


def use_json() -> JsonFormatter:
    """Formats every line of this process as JSON, from now on.

    Puts one ``JsonFormatter`` on each handler of the root logger and of every logger that
    has its own handlers (BentoML's, uvicorn's); adds a standard-error handler to the root
    logger if it has none; routes ``warnings`` through logging, so they become lines too.
    Handlers added later keep their own formatter.
    """
    formatter = JsonFormatter()
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    for handler in _handlers():
        handler.setFormatter(formatter)
    logging.captureWarnings(True)
    return formatter
