"""The runs' console logger: Dagster's coloured text by default, JSON lines on request.

With ``MLOPS_LOG_FORMAT=json`` the code location's ``console`` logger (the name of Dagster's
default console logger, so run config that sets its level keeps working) writes one JSON line
per run log record, in the schema of ``lib.logs`` with the run's identity added: ``run_id``,
``job``, ``step``, ``partition``, the Dagster ``event`` type and the ``asset`` of an asset
event. Runs launched by the daemon and the local loop's in-process runs both take the loggers
of the code location, so one variable switches both.

Both loggers take ``expected_failure_stacks: false`` (the local loop sets it): a deliberate
step failure (``dg.Failure``) is then one line with its description instead of a stack.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

import dagster as dg

from mlops_assets import settings
from mlops_assets.lib.logs import FIELDS, JsonFormatter

PARTITION_TAG = "dagster/partition"


class _StandardError(logging.StreamHandler):
    """Writes to the ``sys.stderr`` of the moment: Dagster swaps it to capture a step's logs."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


class RunFields(logging.Filter):
    """Adds the run's identity to a Dagster run record as structured fields.

    Reads ``dagster_meta``, the record attribute Dagster's own ``json_console_logger`` writes
    out; a record without it keeps its plain message.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Always passes the record, with ``fields`` set and the bare message."""
        meta = getattr(record, "dagster_meta", None)
        if not isinstance(meta, Mapping):
            return True
        tags = meta.get("job_tags") or {}
        fields: dict[str, Any] = {
            "run_id": meta.get("run_id"),
            "job": meta.get("job_name"),
            "step": meta.get("step_key"),
            "partition": tags.get(PARTITION_TAG),
        }
        event = meta.get("dagster_event")
        if isinstance(event, dg.DagsterEvent):
            fields["event"] = event.event_type_value
            if event.asset_key is not None:
                fields["asset"] = event.asset_key.to_user_string()
        setattr(record, FIELDS, {k: v for k, v in fields.items() if v is not None})
        # The message without Dagster's "job - run id - pid - step - event -" prefix: those
        # are fields now.
        original = meta.get("orig_message")
        if isinstance(original, str):
            record.msg, record.args = original, None
        return True


class OneLineRejections(logging.Filter):
    """A deliberate step failure (``dg.Failure``: a broken contract, a refused gate) in one line.

    Dagster appends the stack of the ``dg.Failure`` to its step-failure record, and again to
    the run-failure record when that step failed first; the stack only shows where the step
    chose to stop, while the failure's description says why. The step's record keeps Dagster's
    message and gets the description's first line instead; the run's keeps its message. Any
    other failure (an unexpected exception) keeps its stack. The event log keeps everything.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Always passes the record, shortened if it reports a deliberate failure."""
        meta = getattr(record, "dagster_meta", None)
        event = meta.get("dagster_event") if isinstance(meta, Mapping) else None
        if not isinstance(meta, Mapping) or not isinstance(event, dg.DagsterEvent):
            return True
        if event.is_step_failure:
            reason = _deliberate(event)
            if reason is None:
                return True
            tail = f": {reason} (details in the UI)"
        elif event.event_type == dg.DagsterEventType.RUN_FAILURE:
            first = event.job_failure_data.first_step_failure_event
            if first is None or _deliberate(first) is None:
                return True
            tail = ""  # the step's own record said why
        else:
            return True
        message, original = record.getMessage(), meta.get("orig_message")
        # Dagster's message is "<prefix><original message>" followed by the stack.
        if isinstance(original, str) and original in message:
            message = message[: message.index(original) + len(original)]
        else:
            message = message.split("\n", 1)[0]
        record.msg, record.args = (message.removesuffix(".") + tail if tail else message), None
        return True


def _deliberate(step_failure: dg.DagsterEvent) -> str | None:
    """The first line of a step failure's ``dg.Failure`` description; None for any other error."""
    failure = step_failure.step_failure_data.user_failure_data
    description = (failure.description or "") if failure else ""
    return next((line.strip() for line in description.splitlines() if line.strip()), None)


# Set to false by the local loop, which reports deliberate failures itself.
_STACKS_FIELD = dg.Field(
    bool,
    is_required=False,
    default_value=True,
    description="Print the stack of a deliberate step failure (dg.Failure); false: one line.",
)


# The config of both console loggers: Dagster's console logger's, plus the stacks switch.
CONSOLE_CONFIG = {
    "log_level": dg.Field(str, is_required=False, default_value="INFO"),
    "name": dg.Field(str, is_required=False, default_value="dagster"),
    "expected_failure_stacks": _STACKS_FIELD,
}


@dg.logger(
    CONSOLE_CONFIG,
    description="Dagster's coloured console logger (deliberate failures in one line on request).",
)
def text_console_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    """Dagster's ``colored_console_logger``; one line per deliberate failure if configured so."""
    logger = dg.colored_console_logger.logger_fn(init_context)
    if not init_context.logger_config["expected_failure_stacks"]:
        for handler in logger.handlers:
            handler.addFilter(OneLineRejections())
    return logger


@dg.logger(
    CONSOLE_CONFIG,
    description="Run logs as JSON lines on standard error (MLOPS_LOG_FORMAT=json).",
)
def json_lines_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    """A logger writing each run record as one JSON line (``lib.logs.JsonFormatter``)."""
    config = init_context.logger_config
    logger = logging.Logger(config["name"], level=config["log_level"].upper())
    handler = _StandardError()
    handler.addFilter(RunFields())
    if not config["expected_failure_stacks"]:
        # The line's message then says why the step stopped, as the text console does.
        handler.addFilter(OneLineRejections())
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    return logger


def run_loggers(env: Mapping[str, str]) -> dict[str, dg.LoggerDefinition]:
    """The code location's ``console`` logger: coloured text, or JSON lines for json.

    Raises:
        ValueError: an unknown ``MLOPS_LOG_FORMAT`` (the message names it and its values).
    """
    if settings.log_format(env) == "json":
        return {"console": json_lines_logger}
    return {"console": text_console_logger}
