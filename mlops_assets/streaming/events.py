"""Events of the stream: reading a scheduled-flight event, building prediction and refusal events.

An event in is one JSON object, UTF-8: ``{"event_id": str, "sent_at": float, "flight": {...}}``
where ``flight`` holds exactly the fields of one flight of the Bento's ``/predict`` request,
validated by the same pydantic model (``lib.scoring.request_model``), so the stream, the
service and the pipeline accept the same flights. An event that is not valid becomes a
dead-letter event whose reason names the field and the rule it breaks, never the submitted
value (at most the payload's length and sha256).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops_assets.lib.scoring import FieldSpec, request_model

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError

ENVELOPE = ("event_id", "sent_at", "flight")
# Longest event id accepted (replay ids are ~30 characters); longer ones are refused.
MAX_EVENT_ID_CHARS = 200
# Field names from a payload quoted in a reason are cut to this length.
MAX_NAME_CHARS = 40
# Errors named in one reason at most (the count of the others follows).
MAX_REASONS = 5


@dataclass(frozen=True)
class Event:
    """A valid scheduled-flight event.

    Attributes:
        event_id: The producer's id (replay: ``<date>/<carrier>/<flight>/<origin>/<hhmm>``).
        sent_at: When the producer sent it (unix seconds, the producer's clock).
        flight: The flight as the request model validated it (sensitive fields still raw).
    """

    event_id: str
    sent_at: float
    flight: dict[str, Any]


@dataclass(frozen=True)
class Refusal:
    """An event that cannot be scored, and why.

    Attributes:
        event_id: The event's id when the payload had a usable one, else None.
        reason: The field and the rule it breaks (never the submitted value).
        payload_bytes: Length of the payload.
        payload_sha256: Digest of the payload (to find it at the producer, not to read it).
    """

    event_id: str | None
    reason: str
    payload_bytes: int
    payload_sha256: str


class EventReader:
    """Reads events with the request contract of one scoring bundle.

    Args:
        fields: The request fields (``ScoringBundle.request_fields()``).
    """

    def __init__(self, fields: list[FieldSpec]) -> None:
        self.model: type[BaseModel] = request_model(fields)
        self.sensitive = tuple(spec.name for spec in fields if spec.sensitive)

    def read(self, payload: bytes) -> Event | Refusal:
        """The event in ``payload``, or the reason it is refused."""
        from pydantic import ValidationError

        def refuse(reason: str, event_id: str | None = None) -> Refusal:
            return Refusal(event_id, reason, len(payload), hashlib.sha256(payload).hexdigest())

        try:
            document = json.loads(payload.decode("utf-8"))
        except UnicodeDecodeError:
            return refuse("payload: not UTF-8 text")
        except json.JSONDecodeError as error:  # its message gives the position, not the text
            return refuse(f"payload: malformed JSON ({error.msg} at character {error.pos})")
        if not isinstance(document, dict):
            return refuse("payload: not a JSON object (an event is {event_id, sent_at, flight})")
        event_id = _event_id(document.get("event_id"))
        problem = _envelope_problem(document, event_id)
        if problem:
            return refuse(problem, event_id)
        assert event_id is not None  # checked by _envelope_problem
        try:
            flight = self.model.model_validate(document["flight"])
        except ValidationError as error:
            return refuse(describe(error, prefix="flight"), event_id)
        return Event(event_id, float(document["sent_at"]), flight.model_dump())


def _event_id(value: Any) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= MAX_EVENT_ID_CHARS and value.isprintable():
        return value
    return None


def _envelope_problem(document: dict[str, Any], event_id: str | None) -> str:
    """What is wrong with the event around the flight ('' when nothing)."""
    unknown = sorted(str(k)[:MAX_NAME_CHARS] for k in document if k not in ENVELOPE)
    if unknown:
        return f"{unknown[0]}: not a field of an event (fields: {', '.join(ENVELOPE)})"
    if event_id is None:
        return f"event_id: required, a string of 1 to {MAX_EVENT_ID_CHARS} printable characters"
    sent_at = document.get("sent_at")
    if isinstance(sent_at, bool) or not isinstance(sent_at, int | float):
        return "sent_at: required, a number (unix seconds)"
    if not math.isfinite(sent_at) or sent_at < 0:
        return "sent_at: must be a finite, non-negative number (unix seconds)"
    if not isinstance(document.get("flight"), dict):
        return "flight: required, a JSON object with the fields of one /predict request"
    return ""


def describe(error: ValidationError, prefix: str) -> str:
    """The errors of a validation as ``field: rule`` items, the input left out.

    Pydantic's messages name the rule and its bound (``less than or equal to 2359``).
    """
    items = []
    for detail in error.errors(include_input=False, include_url=False, include_context=False):
        where = ".".join(str(part)[:MAX_NAME_CHARS] for part in (prefix, *detail["loc"]))
        message = detail["msg"].removeprefix("Value error, ")
        items.append(f"{where}: {message} [{detail['type']}]")
    extra = len(items) - MAX_REASONS
    return "; ".join(items[:MAX_REASONS]) + (f"; and {extra} more" if extra > 0 else "")


def prediction_event(event: Event, result: dict[str, Any], scored_at: float) -> dict[str, Any]:
    """The prediction event of ``event``: the scoring result, the event's id and times.

    Holds no tail number: ``lib.scoring.score`` returns the flight key and the answer only.
    """
    return {
        "event_id": event.event_id,
        "flight_date": result["flight_date"],
        "carrier": result["carrier"],
        "flight": result["flight"],
        "origin": result["origin"],
        "probability": result["probability"],
        "delayed": result["delayed"],
        "threshold": result["threshold"],
        "model_version": result["model_version"],
        "sent_at": event.sent_at,
        "scored_at": scored_at,
    }


def dead_letter_event(refusal: Refusal, received_at: float) -> dict[str, Any]:
    """The dead-letter event of a refused payload (its reason, never its content)."""
    return {
        "event_id": refusal.event_id,
        "reason": refusal.reason,
        "received_at": received_at,
        "payload_bytes": refusal.payload_bytes,
        "payload_sha256": refusal.payload_sha256,
    }
