"""The runs' console logger: Dagster's coloured text by default, JSON lines on request.

With ``MLOPS_LOG_FORMAT=json`` the code location's ``console`` logger (the name of Dagster's
default console logger, so run config that sets its level keeps working) writes one JSON line
per run log record, in the schema of ``lib.logs`` with the run's identity added: ``run_id``,
``job``, ``step``, ``partition``, the Dagster ``event`` type and the ``asset`` of an asset
event. Runs launched by the daemon and the local loop's in-process runs both take the loggers
of the code location, so one variable switches both.
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


@dg.logger(
    {
        "log_level": dg.Field(str, is_required=False, default_value="INFO"),
        "name": dg.Field(str, is_required=False, default_value="dagster"),
    },
    description="Run logs as JSON lines on standard error (MLOPS_LOG_FORMAT=json).",
)
def json_lines_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    """A logger writing each run record as one JSON line (``lib.logs.JsonFormatter``)."""
    config = init_context.logger_config
    logger = logging.Logger(config["name"], level=config["log_level"].upper())
    handler = _StandardError()
    handler.addFilter(RunFields())
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    return logger


def run_loggers(env: Mapping[str, str]) -> dict[str, dg.LoggerDefinition] | None:
    """The code location's loggers: ``None`` (Dagster's default) for text, JSON lines for json.

    Raises:
        ValueError: an unknown ``MLOPS_LOG_FORMAT`` (the message names it and its values).
    """
    if settings.log_format(env) == "json":
        return {"console": json_lines_logger}
    return None
