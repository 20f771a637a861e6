"""Scoring flights on request: the request contract and the scoring bundle.

The API and the pipeline must not disagree, so nothing here is written twice:

- the request fields, their types, bounds, allowed values and nullability are read from the
  pandera contracts of the landing data (``flights_schema`` and ``weather_schema``) and turned
  into a pydantic model (``request_model``): a rule changed in the contract changes the API;
- a request is scored by ``derive_features`` (calendar, schedule, route, plane age, seats,
  weather at the departure hour ...) and ``DelayClassifier.predict_columns``, the functions
  the pipeline's features and batch predictions use: one implementation of each.

A ``ScoringBundle`` is everything the service needs, saved as plain files (the classifier as
JSON with the estimator's model text, the planes table as Parquet, the known carriers and
airports, the model's identity), so serving needs neither MLflow nor the lake.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from mlops_assets.lib.contracts import (
    AIRPORTS_MISSING_FROM_REFERENCE,
    ORIGIN_TIMEZONE,
    SENSITIVE,
    is_clock_time,
    time_hour_matches,
)
from mlops_assets.lib.features import FLIGHT_INPUTS, WEATHER_FIELDS, PlaneLookup
from mlops_assets.lib.modeling import DelayClassifier

if TYPE_CHECKING:
    import pandas as pd
    import pandera.pandas as pa
    from pydantic import BaseModel

# Fields of a flight known when it is scheduled; everything measured later is not accepted.
# ``hour`` and ``minute`` are derived from ``sched_dep_time``, as in the source.
REQUEST_FLIGHT_FIELDS = (*FLIGHT_INPUTS, "time_hour")
MAX_BATCH = 1000

FIELD_DOCS = {
    "year": "Year of the scheduled departure (local time at the origin).",
    "month": "Month of the scheduled departure.",
    "day": "Day of month of the scheduled departure.",
    "carrier": "Two-letter carrier code (see the airlines reference table).",
    "flight": "Flight number.",
    "origin": "Departure airport (FAA code).",
    "dest": "Arrival airport (FAA code).",
    "tailnum": "Plane tail number; unknown planes score with missing plane fields. Personal "
    "data: replaced by its keyed pseudonym on arrival, never logged.",
    "sched_dep_time": "Scheduled departure, local clock time as HHMM.",
    "sched_arr_time": "Scheduled arrival, local clock time as HHMM.",
    "distance": "Distance between the airports in miles.",
    "time_hour": "Scheduled departure hour as an ISO 8601 timestamp with offset.",
}
WEATHER_DOCS = "Weather at the origin in the departure hour (forecast or observation)."


@dataclass(frozen=True)
class FieldSpec:
    """One request field as the contract defines it.

    Attributes:
        name: Field name (the landing column).
        kind: ``int``, ``float``, ``str`` or ``datetime``.
        nullable: Whether the value may be missing (``null``).
        minimum: Inclusive lower bound, if any.
        maximum: Inclusive upper bound, if any.
        choices: Allowed values, if the contract lists them.
        rule: Name of the contract rule for the allowed values (``known_airport`` ...).
        pattern: Regular expression a string must match, if any.
        clock: Whether the number is a clock time HHMM (minutes below 60).
        description: What the field means.
        sensitive: ``direct`` or ``quasi`` for personal data (pseudonymized on arrival).
    """

    name: str
    kind: str
    nullable: bool
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    rule: str = ""
    pattern: str | None = None
    clock: bool = False
    description: str = ""
    sensitive: str = ""


def _kind(dtype: str) -> str:
    if dtype.startswith("datetime"):
        return "datetime"
    if dtype.startswith(("int", "Int")):
        return "int"
    if dtype.startswith(("float", "Float")):
        return "float"
    return "str"


def _spec(column: pa.Column, description: str, nullable: bool | None = None) -> FieldSpec:
    minimum = maximum = pattern = None
    choices: tuple[str, ...] = ()
    rule = ""
    clock = False
    for check in column.checks:
        stats = check.statistics or {}
        if check.name in ("in_range", "clock_time"):
            minimum, maximum = stats["min_value"], stats["max_value"]
            clock = clock or check.name == "clock_time"
        elif check.name == "isin":
            choices = tuple(str(v) for v in stats["allowed_values"])
            rule = str(check.error or "isin")
        elif check.name == "str_matches":
            pattern = str(stats["pattern"])
        else:
            raise ValueError(f"no request rule for check {check.name} on {column.name}")
    return FieldSpec(
        name=str(column.name),
        kind=_kind(str(column.dtype)),
        nullable=column.nullable if nullable is None else nullable,
        minimum=minimum,
        maximum=maximum,
        choices=choices,
        rule=rule,
        pattern=pattern,
        clock=clock,
        description=description,
        sensitive=str((column.metadata or {}).get(SENSITIVE, "")),
    )


def request_fields(carriers: list[str], airports: list[str]) -> list[FieldSpec]:
    """The request fields, read from the landing contracts.

    Flight fields come from ``flights_schema``; the weather fields from ``weather_schema``
    (every weather field may be missing in a request, as it may in a landing file).

    Args:
        carriers: Known carrier codes (the airlines reference table).
        airports: Known airport codes (the airports reference table).
    """
    from mlops_assets.lib.contracts import flights_schema, weather_schema

    flights = flights_schema(carriers, airports).columns
    weather = weather_schema().columns
    specs = [_spec(flights[name], FIELD_DOCS[name]) for name in REQUEST_FLIGHT_FIELDS]
    specs += [_spec(weather[name], WEATHER_DOCS, nullable=True) for name in WEATHER_FIELDS]
    return specs


def request_model(specs: list[FieldSpec]) -> type[BaseModel]:
    """A pydantic model of one flight request with exactly the given fields and rules.

    Unknown fields are refused (a post-departure field such as ``dep_delay`` is leakage, not a
    feature), numbers must be JSON numbers (strict: ``"5"`` is refused) and finite, clock times
    must read as HHMM, timestamps must carry an offset, the date must exist, and ``time_hour``
    must be the scheduled departure hour. No error message repeats the refused value.
    """
    from pydantic import (
        AfterValidator,
        AwareDatetime,
        ConfigDict,
        Field,
        create_model,
        model_validator,
    )

    fields: dict[str, Any] = {}
    for spec in specs:
        base: Any
        constraints: dict[str, Any] = {"description": spec.description}
        if spec.choices:
            # Validated by membership (a short error naming the rule), listed in the schema.
            base = Annotated[str, AfterValidator(_member_of(frozenset(spec.choices), spec.rule))]
            constraints["json_schema_extra"] = {"enum": list(spec.choices)}
        elif spec.clock:
            base = Annotated[int, AfterValidator(_clock_time)]
        elif spec.kind == "int":
            base = int
        elif spec.kind == "float":
            base = float
        elif spec.kind == "datetime":
            base = AwareDatetime
        else:
            base = str
        if spec.minimum is not None:
            constraints["ge"] = spec.minimum
        if spec.maximum is not None:
            constraints["le"] = spec.maximum
        if spec.pattern is not None:
            constraints["pattern"] = spec.pattern
        if spec.kind == "float":
            constraints["allow_inf_nan"] = False
        if spec.kind in ("int", "float"):
            constraints["strict"] = True
        if spec.nullable:
            fields[spec.name] = (base | None, Field(default=None, **constraints))
        else:
            fields[spec.name] = (base, Field(..., **constraints))

    names = {spec.name for spec in specs}

    def date_exists(values: Any) -> Any:
        if {"year", "month", "day"} <= names:
            date(values.year, values.month, values.day)  # ValueError: day is out of range
        if {"year", "month", "day", "sched_dep_time", "time_hour"} <= names:
            day = (values.year, values.month, values.day)
            if not time_hour_matches(*day, values.sched_dep_time // 100, values.time_hour):
                raise ValueError(
                    "time_hour is not the scheduled departure hour (year, month, day and the "
                    f"hour of sched_dep_time, local time at the origin, {ORIGIN_TIMEZONE})"
                )
        return values

    validators: Any = {"date_exists": model_validator(mode="after")(date_exists)}
    # The example goes into the OpenAPI schema (BentoML takes OpenAPI 3.0's `example`): a
    # request that passes every rule, those across fields a JSON schema cannot state included.
    config = ConfigDict(extra="forbid", json_schema_extra={"example": EXAMPLE_REQUEST})
    return create_model("FlightRequest", __config__=config, __validators__=validators, **fields)


def _member_of(allowed: frozenset[str], rule: str) -> Any:
    def check(value: str) -> str:
        if value not in allowed:  # the value is not repeated: messages reach logs and callers
            raise ValueError(f"breaks the contract rule {rule}")
        return value

    return check


def _clock_time(value: int) -> int:
    if not is_clock_time(value):
        raise ValueError("breaks the contract rule clock_time (HHMM, minutes below 60)")
    return value


# A real flight of the demo data (UA 1545, EWR -> IAH, 1 January 2013, 05:15).
EXAMPLE_REQUEST: dict[str, Any] = {
    "year": 2013,
    "month": 1,
    "day": 1,
    "carrier": "UA",
    "flight": 1545,
    "origin": "EWR",
    "dest": "IAH",
    "tailnum": "N14228",
    "sched_dep_time": 515,
    "sched_arr_time": 819,
    "distance": 1400,
    "time_hour": "2013-01-01T05:00:00-05:00",
    "temp": 39.02,
    "dewp": 28.04,
    "humid": 64.43,
    "wind_dir": 260.0,
    "wind_speed": 12.65858,
    "precip": 0.0,
    "pressure": 1011.9,
    "visib": 10.0,
}


@dataclass
class ScoringBundle:
    """What the service needs to score a request: model, planes and the known codes.

    Attributes:
        classifier: The champion classifier.
        planes: The validated planes reference table (for plane age, seats, engines ...).
        carriers: Known carrier codes.
        airports: Known airport codes (the reference table plus the accepted extras).
        model: Identity of the model: name, version, MLflow run, training data md5 ...
    """

    classifier: DelayClassifier
    planes: pd.DataFrame
    carriers: list[str]
    airports: list[str]
    model: dict[str, str] = field(default_factory=dict)

    @functools.cached_property
    def plane_lookup(self) -> PlaneLookup:
        """The planes table indexed by tail number."""
        return PlaneLookup.from_frame(self.planes)

    def files(self) -> dict[str, bytes]:
        """The bundle as plain files: name -> content (what ``save`` writes)."""
        from mlops_assets.lib.storage import to_parquet_bytes

        codes = {"carriers": sorted(self.carriers), "airports": sorted(self.airports)}
        return {
            "classifier.json": json.dumps(asdict(self.classifier)).encode(),
            "planes.parquet": to_parquet_bytes(self.planes),
            "reference.json": json.dumps(codes).encode(),
            "model.json": json.dumps(self.model, sort_keys=True).encode(),
        }

    @classmethod
    def from_files(cls, read: Callable[[str], bytes]) -> ScoringBundle:
        """The bundle from its files, ``read(name)`` giving each one's content."""
        import io

        import pandas as pd

        codes = json.loads(read("reference.json"))
        return cls(
            classifier=DelayClassifier(**json.loads(read("classifier.json"))),
            planes=pd.read_parquet(io.BytesIO(read("planes.parquet"))),
            carriers=codes["carriers"],
            airports=codes["airports"],
            model=json.loads(read("model.json")),
        )

    def save(self, folder: Path) -> None:
        """Writes the bundle as plain files into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in self.files().items():
            (folder / name).write_bytes(content)

    @classmethod
    def load(cls, folder: Path) -> ScoringBundle:
        """Reads a bundle written by ``save``."""
        return cls.from_files(lambda name: (folder / name).read_bytes())

    def request_fields(self) -> list[FieldSpec]:
        """The request fields for this bundle's reference codes."""
        return request_fields(self.carriers, self.airports)


def known_airports(airports: pd.DataFrame) -> list[str]:
    """Airport codes a request may name: the reference table plus the accepted extras."""
    return sorted(set(airports["faa"].astype(str)) | set(AIRPORTS_MISSING_FROM_REFERENCE))


def score(bundle: ScoringBundle, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Scores validated requests with the pipeline's feature code and the bundle's model.

    Args:
        bundle: The scoring bundle.
        requests: Requests as dicts (fields of the request model).

    Returns:
        One result per request, in request order: the flight key, the probability of a 15+
        minute arrival delay, the decision at the model's threshold and the model version.
    """
    from mlops_assets.lib.features import derive_features

    flights = {name: [r.get(name) for r in requests] for name in FLIGHT_INPUTS}
    weather = {name: [r.get(name) for r in requests] for name in WEATHER_FIELDS}
    features = derive_features(flights, weather, bundle.plane_lookup)
    probabilities = bundle.classifier.predict_columns(features)
    threshold = bundle.classifier.threshold
    version = bundle.model.get("model_version", "")
    return [
        {
            "flight_date": flight_date,
            "carrier": r["carrier"],
            "flight": r["flight"],
            "origin": r["origin"],
            "probability": float(p),
            "delayed": bool(p >= threshold),
            "threshold": threshold,
            "model_version": version,
        }
        for r, flight_date, p in zip(requests, features["flight_date"], probabilities, strict=True)
    ]
