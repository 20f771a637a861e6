"""JSON log lines: fields, escaping, exceptions as a field, and never a request's values."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest

from mlops_assets import settings
from mlops_assets.lib import logs
from mlops_assets.lib.scoring import EXAMPLE_REQUEST

CANARY = "QZ7X9QK"
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def record(
    message: str = "hello %s",
    args: tuple[Any, ...] = ("world",),
    level: int = logging.INFO,
    exc_info: Any = None,
    **extra: Any,
) -> logging.LogRecord:
    made = logging.LogRecord("svc.part", level, __file__, 10, message, args, exc_info)
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def line(made: logging.LogRecord) -> dict[str, Any]:
    text = logs.JsonFormatter().format(made)
    assert "\n" not in text
    return dict(json.loads(text))


def test_a_line_has_time_level_logger_message_and_the_fields():
    made = record(fields={"request_id": "ab12", "status": 200, "latency_ms": 1.5, "time": "x"})
    made.created = 1356998400.1234  # 2013-01-01T00:00:00.123 UTC
    got = line(made)
    assert list(got)[:4] == ["time", "level", "logger", "message"]
    assert got["time"] == "2013-01-01T00:00:00.123Z"
    assert got["level"] == "INFO" and got["logger"] == "svc.part"
    assert got["message"] == "hello world"
    assert got["request_id"] == "ab12" and got["status"] == 200 and got["latency_ms"] == 1.5
    assert "exception" not in got


def test_the_time_is_utc_whatever_the_local_zone(monkeypatch: pytest.MonkeyPatch):
    import time

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert logs.iso_utc(1356998400.0) == "2013-01-01T00:00:00.000Z"
        assert ISO_UTC.match(line(record())["time"])
    finally:
        monkeypatch.undo()
        time.tzset()


def test_quotes_newlines_and_odd_values_stay_on_one_line_and_parse_back():
    tricky = 'a "quoted"\nsecond line\t\\ and \u00e9\u2603 \x00'
    got = line(record("%s", (tricky,), fields={"odd": {1, 2}.__class__, "when": object()}))
    assert got["message"] == tricky
    assert isinstance(got["odd"], str) and isinstance(got["when"], str)


def test_an_exception_is_a_field_with_type_message_and_stack():
    try:
        try:
            raise KeyError("inner")
        except KeyError as inner:
            raise RuntimeError("the challenger cannot score") from inner
    except RuntimeError:
        got = line(record("failed", (), logging.ERROR, sys.exc_info()))
    error = got["exception"]
    assert error["type"] == "RuntimeError"
    assert error["message"] == "the challenger cannot score"
    assert "test_logs.py" in error["stack"] and "raise RuntimeError" in error["stack"]
    assert error["cause"]["type"] == "KeyError" and error["cause"]["message"] == "'inner'"
    assert got["level"] == "ERROR" and got["message"] == "failed"


class Flight(pydantic.BaseModel):
    carrier: str
    tailnum: str
    distance: int

    @pydantic.field_validator("carrier")
    @classmethod
    def known(cls, value: str) -> str:
        if value not in ("UA", "AA"):
            raise ValueError(f"{value!r} breaks the contract rule known_carrier")
        return value


def test_a_validation_error_keeps_locations_and_types_never_the_values():
    request = {"carrier": CANARY, "tailnum": CANARY, "distance": f"far {CANARY}"}
    with pytest.raises(pydantic.ValidationError) as caught:
        Flight(**request)
    assert CANARY in str(caught.value)  # what the text format would log
    made = record("Exception on /predict [POST]", (), logging.ERROR)
    made.exc_info = (caught.type, caught.value, caught.tb)
    text = logs.JsonFormatter().format(made)
    assert CANARY not in text
    summary = json.loads(text)["exception"]["message"]
    assert summary == "2 validation errors: carrier (value_error); distance (int_parsing)"


def test_the_real_request_model_refusal_is_summarised_without_values():
    from mlops_assets.lib.scoring import request_fields, request_model

    model = request_model(request_fields(["UA"], ["EWR", "IAH"]))
    with pytest.raises(pydantic.ValidationError) as caught:
        model(**{**EXAMPLE_REQUEST, "carrier": CANARY, "tailnum": f"#{CANARY}"})
    made = record("refused", (), logging.ERROR)
    made.exc_info = (caught.type, caught.value, caught.tb)
    text = logs.JsonFormatter().format(made)
    assert CANARY not in text
    assert "carrier (" in json.loads(text)["exception"]["message"]


def test_text_logs_keep_a_validation_error_summary_never_the_values():
    from mlops_assets.lib.scoring import request_fields, request_model

    model = request_model(request_fields(["UA"], ["EWR", "IAH"]))
    with pytest.raises(pydantic.ValidationError) as caught:
        model(**{**EXAMPLE_REQUEST, "carrier": CANARY, "distance": CANARY})
    made = record("Exception on %s [%s]", ("/predict", "POST"), logging.ERROR)
    made.exc_info = (caught.type, caught.value, caught.tb)
    assert logs.ValidationRedactor().filter(made)
    text = logging.Formatter("%(levelname)s %(message)s").format(made)
    assert CANARY not in text and "input_value" not in text
    assert text == (
        "ERROR Exception on /predict [POST]: "
        "2 validation errors: carrier (value_error); distance (int_type)"
    )
    other = record("failed", (), logging.ERROR, exc_info=(ValueError, ValueError("x"), None))
    assert logs.ValidationRedactor().filter(other) and other.exc_info is not None


@pytest.fixture
def streams() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """The root logger and a library logger writing to streams of their own, as BentoML's
    configuration leaves them (plain text formats); everything restored afterwards."""
    root, library = logging.getLogger(), logging.getLogger("some.library")
    saved = (root.handlers[:], library.handlers[:], library.propagate)
    to_root, to_library = io.StringIO(), io.StringIO()
    plain = logging.Formatter("%(levelname)s %(message)s")
    for logger, stream in ((root, to_root), (library, to_library)):
        handler = logging.StreamHandler(stream)
        handler.setFormatter(plain)
        logger.handlers = [handler]
    library.propagate = False
    try:
        yield to_root, to_library
    finally:
        logging.captureWarnings(False)
        root.handlers, library.handlers, library.propagate = saved


def test_use_json_formats_every_handler_and_the_warnings(
    streams: tuple[io.StringIO, io.StringIO],
):
    to_root, to_library = streams
    logs.use_json()
    logging.getLogger("some.library").warning("from a library")
    logging.getLogger("elsewhere").error("through the root")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("a deprecation", UserWarning, stacklevel=1)
    [library] = [json.loads(x) for x in to_library.getvalue().splitlines()]
    assert library["logger"] == "some.library" and library["message"] == "from a library"
    rooted = [json.loads(x) for x in to_root.getvalue().splitlines()]
    assert [x["logger"] for x in rooted] == ["elsewhere", "py.warnings"]
    assert "a deprecation" in rooted[1]["message"]


def test_the_format_is_text_by_default_json_on_request_and_nothing_else():
    assert settings.log_format({}) == "text"
    assert settings.log_format({settings.LOG_FORMAT_VAR: " JSON "}) == "json"
    with pytest.raises(ValueError) as refused:
        settings.log_format({settings.LOG_FORMAT_VAR: "yaml"})
    assert str(refused.value) == "MLOPS_LOG_FORMAT must be one of text, json, got 'yaml'"
