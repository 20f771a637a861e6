"""The flight-delay prediction service (BentoML): the champion, and a challenger on trial.

Endpoints (JSON over HTTP, OpenAPI at ``/docs.json``):

- ``POST /predict``: one flight -> probability of a 15+ minute arrival delay, the decision at
  the model's threshold, and the model version and role (champion or challenger) that
  answered;
- ``POST /predict_batch``: ``{"flights": [...]}`` with 1 to ``MAX_BATCH`` flights;
- ``GET /livez``, ``/readyz``, ``/healthz`` and ``/metrics`` (Prometheus): always open.

A Bento holds the champion and, during a trial, a challenger. The serving mode is read once
at start (``serving.modes``: ``MLOPS_SERVING_MODE``, ``MLOPS_CANARY_SHARE``, defaults recorded
in the Bento): ``off``, ``shadow`` (the challenger scores off the response path), ``canary``
(a sticky share of flights answered by the challenger) or ``ab`` (canary routing, the other
model scoring off the path). Every prediction, shadow ones included, goes to the prediction
log (``lib.prediction_log``, root ``MLOPS_PREDICTION_LOG``).

The request model is generated from the landing data contracts (``lib.scoring``), and a
request is scored through the pipeline's own feature code, so the API and the pipeline
cannot disagree. Personal data in a request (the tail number) is replaced by its keyed
pseudonym before the plane lookup and before anything is logged: the key is
``MLOPS_PSEUDONYM_KEY`` (required in production), locally the state folder's key file
(``lib.pseudonyms.service_pseudonymizer``). The prediction endpoints require credentials when
configured (``serving.auth``): the API key ``MLOPS_API_KEY`` and/or bearer tokens verified
against the key set ``MLOPS_JWT_KEYS``, with the scope ``predict`` (``/predict``,
``/predict_batch``) or ``admin`` (``/model``); ``MLOPS_RATE_LIMIT`` limits each client. In the
production flavour (``MLOPS_ENV=production``) the service refuses to start with neither a key
nor a key set.

This module is loaded by ``bentoml serve`` and ``bentoml build`` only, never by the code
location.
"""

import gc
import json
import logging
import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bentoml
from pydantic import BaseModel, ConfigDict, Field

from mlops_assets import settings
from mlops_assets.lib import logs, runtime
from mlops_assets.lib.prediction_log import PredictionLogWriter, default_root, log_lines
from mlops_assets.lib.pseudonyms import PseudonymKeyError, service_pseudonymizer
from mlops_assets.lib.scoring import (
    EXAMPLE_REQUEST,
    MAX_BATCH,
    ScoringBundle,
    request_fields,
    request_model,
    score,
)
from mlops_assets.serving.access_log import AccessLog, note
from mlops_assets.serving.auth import access_from_environment, rate_limit_from_environment
from mlops_assets.serving.coalescing import Coalescer
from mlops_assets.serving.guard import ApiGuard, body_timeout_from_environment
from mlops_assets.serving.modes import CHALLENGER, CHAMPION, serving_mode_from_environment
from mlops_assets.serving.off_path import OffPathQueue
from mlops_assets.serving.workers import workers_from_environment

MODEL_NAME = settings.MODEL_NAME
CHALLENGER_NAME = f"{MODEL_NAME}_challenger"
SHUTDOWN_WAIT_S = 10.0

logger = logging.getLogger(__name__)

# First, so that everything after it, the model's loading included, logs in the chosen format.
# A bad value stops the server here (RuntimeError: see SERVING_MODE below for why).
try:
    LOG_FORMAT = settings.log_format()
except ValueError as error:
    raise RuntimeError(str(error)) from None
if LOG_FORMAT == "json":
    logs.use_json()
    # The service's own lines are INFO (BentoML's server configuration shows WARNING and up);
    # BentoML's access line goes: the service's request line carries the same and more.
    logging.getLogger("mlops_assets").setLevel(logging.INFO)
    logging.getLogger("bentoml.access").setLevel(logging.WARNING)
else:  # the JSON formatter reduces them itself
    logs.redact_validation_errors()
# Fixed fields of every request line (the models), filled in when the models are loaded.
ACCESS_FIELDS: dict[str, Any] = {}


def _manifest() -> dict[str, Any]:
    """The Bento's own ``bento.yaml`` when served from a Bento, else {}."""
    manifest = Path(__file__).resolve().parents[3] / "bento.yaml"  # <bento>/src/mlops_assets/...
    if not manifest.exists():
        return {}
    import yaml

    return dict(yaml.safe_load(manifest.read_text()) or {})


def _model_tag(
    manifest: dict[str, Any], name: str, variable: str, default: str | None
) -> str | None:
    """The tag of model ``name`` this service serves.

    Served from a Bento (``bentoml serve <tag>``, or the image built from it): exactly the
    model its ``bento.yaml`` names, whatever else the store holds. While building, the model
    the build just stored (``variable``). From source: ``default``.
    """
    if manifest:
        for model in manifest.get("models") or []:
            if str(model.get("tag", "")).startswith(f"{name}:"):
                return str(model["tag"])
        return None
    return os.environ.get(variable, default)


def _trial_labels(manifest: dict[str, Any]) -> dict[str, str]:
    if manifest:
        return {str(k): str(v) for k, v in (manifest.get("labels") or {}).items()}
    return dict(json.loads(os.environ.get("MLOPS_BENTO_TRIAL", "{}")))


_MANIFEST = _manifest()
_CHAMPION_TAG = _model_tag(_MANIFEST, MODEL_NAME, "MLOPS_BENTO_MODEL", f"{MODEL_NAME}:latest")
if _CHAMPION_TAG is None:
    raise RuntimeError(f"the Bento's bento.yaml names no {MODEL_NAME} model")
_CHALLENGER_TAG = _model_tag(_MANIFEST, CHALLENGER_NAME, "MLOPS_BENTO_CHALLENGER", None)
_TRIAL = _trial_labels(_MANIFEST)
# Read once at start; a bad setting stops the server here, with a message naming it. Raised as
# RuntimeError: `bentoml serve` takes a ValueError while loading a Bento for "not a Bento" and
# reports an unrelated import error instead.
try:
    SERVING_MODE = serving_mode_from_environment(
        os.environ,
        _TRIAL.get("trial_mode"),
        float(_TRIAL["trial_share"]) if "trial_share" in _TRIAL else None,
        has_challenger=_CHALLENGER_TAG is not None,
    )
except ValueError as error:
    raise RuntimeError(str(error)) from None
try:
    WORKERS = workers_from_environment(os.environ)
except ValueError as error:
    raise RuntimeError(str(error)) from None

_STORED = bentoml.models.get(_CHAMPION_TAG)
MODEL = bentoml.models.BentoModel(_STORED.tag)
CHALLENGER_MODEL = bentoml.models.BentoModel(_CHALLENGER_TAG) if _CHALLENGER_TAG else None
_CODES = json.loads((Path(_STORED.path) / "reference.json").read_text())
_FIELDS = request_fields(_CODES["carriers"], _CODES["airports"])
FlightRequest: Any = request_model(_FIELDS)
# Personal data of a request (the tail number): pseudonymized on arrival with the pipeline's
# key, so it matches the bundle's planes (pseudonymized in the lake) and is never logged.
SENSITIVE_FIELDS = tuple(spec.name for spec in _FIELDS if spec.sensitive)


def request_ids(count: int) -> list[str]:
    """One id per flight of a request: 32 hex digits, consecutive from one random start.

    Random where it matters (unguessable, unique across requests and workers), without
    drawing 16 bytes from the OS for each of a batch's 1000 flights.
    """
    start = uuid.uuid4().int
    return [f"{(start + i) & _ID_MASK:032x}" for i in range(count)]


_ID_MASK = (1 << 128) - 1


class FlightBatch(BaseModel):
    """Flights to score together."""

    model_config = ConfigDict(json_schema_extra={"example": {"flights": [EXAMPLE_REQUEST]}})

    flights: list[FlightRequest] = Field(
        ...,
        min_length=1,
        max_length=MAX_BATCH,
        description=f"1 to {MAX_BATCH} flights.",
    )


class Prediction(BaseModel):
    """The model's answer for one flight."""

    flight_date: str = Field(description="Scheduled departure date (YYYY-MM-DD).")
    carrier: str
    flight: int
    origin: str
    probability: float = Field(description="Probability of arriving 15+ minutes late.")
    delayed: bool = Field(description="probability >= threshold")
    threshold: float = Field(description="The model's decision threshold.")
    model_version: str = Field(description="Registered version of the model that answered.")
    role: str = Field(description="Role of the model that answered: champion or challenger.")


class Predictions(BaseModel):
    """Answers in request order."""

    predictions: list[Prediction]


# The service's Prometheus metrics are named after the model; all but one are labelled by the
# model (version and role) that scored.
ROLES = ("model_version", "role")


def _histogram(name: str, documentation: str, buckets: tuple[float, ...]) -> Any:
    """The histogram ``<model>_<name>``, by the model that scored."""
    return bentoml.metrics.Histogram(
        name=f"{MODEL_NAME}_{name}",
        documentation=documentation,
        labelnames=list(ROLES),
        buckets=buckets,
    )


def _counter(name: str, documentation: str, labels: tuple[str, ...] = ROLES) -> Any:
    """The counter ``<model>_<name>``, by ``labels`` (by default the model that scored)."""
    return bentoml.metrics.Counter(
        name=f"{MODEL_NAME}_{name}", documentation=documentation, labelnames=list(labels)
    )


# Exact versions of what scoring imports at run time, the same list the MLflow model pins,
# plus what writes the prediction log to a folder or an object store.
IMAGE = bentoml.images.Image(python_version="3.11", lock_python_packages=False).python_packages(
    *runtime.pinned_requirements(
        extra=("universal_pathlib", "fsspec", "s3fs", "pyjwt", "cryptography")
    )
)


@bentoml.service(
    name=f"{MODEL_NAME}_service",
    image=IMAGE,
    workers=WORKERS,
    traffic={"timeout": 10},
    labels={"project": "mlops_assets"},
)
class FlightDelay:
    """Probability that a scheduled flight arrives 15+ minutes late."""

    model = MODEL
    if CHALLENGER_MODEL is not None:  # declared only when the Bento holds one
        challenger_model = CHALLENGER_MODEL

    def __init__(self) -> None:
        # Read at start, not at import: building the Bento needs no key.
        try:
            self.pseudonyms = service_pseudonymizer()
        except PseudonymKeyError as error:
            raise RuntimeError(str(error)) from None
        self.mode = SERVING_MODE
        stored: Any = self.model
        self.bundles = {CHAMPION: ScoringBundle.load(Path(stored.path))}
        if self.mode.uses_challenger:
            challenger: Any = self.challenger_model
            self.bundles[CHALLENGER] = ScoringBundle.load(Path(challenger.path))
        self.probability = _histogram(
            "probability",
            "Predicted probability of a 15+ minute arrival delay",
            (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
        )
        self.predictions = _counter(
            "predictions",
            "Flights scored, by model; served=false: scored off the response path",
            (*ROLES, "served"),
        )
        self.latency = _histogram(
            "scoring_seconds",
            "Time to score one call's flights (features and model), by model",
            (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
        )
        self.shadow_failures = _counter(
            "shadow_failures", "Flights the model scoring off the response path failed to score"
        )
        self.log_lost = _counter(
            "prediction_log_lost_lines", "Prediction log lines that could not be written", ()
        )
        self.log = PredictionLogWriter(default_root(), on_lost=lambda n: self.log_lost.inc(n))
        ACCESS_FIELDS.update(model_version=self._version(CHAMPION), mode=self.mode.mode)
        if CHALLENGER in self.bundles:
            ACCESS_FIELDS.update(challenger_version=self._version(CHALLENGER))
        if self.mode.mode in ("canary", "ab"):
            ACCESS_FIELDS.update(challenger_share=self.mode.share)
        self.off_path = OffPathQueue(self._score_off_path, self._count_shadow_failures)
        self.singles = Coalescer(self._answer)
        logger.info(
            "serving mode %s (challenger share %s), models %s, prediction log %s",
            self.mode.mode,
            self.mode.share,
            {role: b.model.get("model_version", "") for role, b in self.bundles.items()},
            self.log.root,
        )
        self._warm_up()

    def _warm_up(self) -> None:
        """Before the first request: each model scores an example, start-up objects freeze."""
        example = self._pseudonymized([FlightRequest(**EXAMPLE_REQUEST).model_dump()])
        score(self.bundles[CHAMPION], example)
        if CHALLENGER in self.bundles:
            try:
                score(self.bundles[CHALLENGER], example)
            except Exception as error:
                if self.mode.mode != "shadow":  # it would answer callers: refuse to start
                    raise RuntimeError(f"the challenger cannot score: {error!r}") from error
                logger.error("the shadow challenger cannot score: %r", error)
        # Start-up objects never die: keep them out of the garbage collector's full passes,
        # which otherwise pause a request for 0.2-0.3 s every few seconds under load.
        gc.collect()
        gc.freeze()

    def _pseudonymized(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.pseudonyms.records(requests, SENSITIVE_FIELDS)

    def _version(self, role: str) -> str:
        return str(self.bundles[role].model.get("model_version", ""))

    def _score(
        self, role: str, requests: list[dict[str, Any]], served: bool
    ) -> list[dict[str, Any]]:
        """Scores with one model and records its metrics."""
        version = self._version(role)
        start = time.perf_counter()
        results = score(self.bundles[role], requests)
        self.latency.labels(model_version=version, role=role).observe(time.perf_counter() - start)
        self.predictions.labels(model_version=version, role=role, served=str(served).lower()).inc(
            len(results)
        )
        histogram = self.probability.labels(model_version=version, role=role)
        for result in results:
            histogram.observe(result["probability"])
        return results

    def _answer(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The answers in request order; off-path scoring queued, every line logged."""
        requests = self._pseudonymized(requests)
        ids = request_ids(len(requests))
        now = datetime.now(UTC)  # one time for the call's lines: they are one event
        routed = self.mode.mode in ("canary", "ab")
        roles = (
            [self.mode.answering_role(r) for r in requests]
            if routed
            else [CHAMPION] * len(requests)
        )
        answers: list[dict[str, Any]] = [{} for _ in requests]
        lines = []
        for role in (CHAMPION, CHALLENGER):
            chosen = [i for i, r in enumerate(roles) if r == role]
            if not chosen:
                continue
            results = self._score(role, [requests[i] for i in chosen], served=True)
            for i, result in zip(chosen, results, strict=True):
                answers[i] = {**result, "role": role}
            lines += log_lines(
                results,
                [ids[i] for i in chosen],
                role=role,
                served=True,
                mode=self.mode.mode,
                at=now,
            )
            other = self.mode.shadow_role(role)
            if other is not None:
                self.off_path.put(other, [requests[i] for i in chosen], [ids[i] for i in chosen])
        self.log.append(lines)
        return answers

    def _score_off_path(self, role: str, requests: list[dict[str, Any]], ids: list[str]) -> None:
        """Scores a batch of the off-path queue (its thread) and logs it as not served."""
        try:
            results = self._score(role, requests, served=False)
        except Exception as error:  # the answers are long gone: count, log, go on
            self._count_shadow_failures(role, len(requests))
            logger.error("off-path scoring by the %s failed: %r", role, error)
            return
        self.log.append(log_lines(results, ids, role=role, served=False, mode=self.mode.mode))

    def _count_shadow_failures(self, role: str, count: int) -> None:
        self.shadow_failures.labels(model_version=self._version(role), role=role).inc(count)

    def _note(self, answers: list[dict[str, Any]]) -> None:
        """The request's rows (and the challenger's share of them) on its access-log line."""
        note(rows=len(answers))
        if self.mode.mode in ("canary", "ab"):
            note(challenger_rows=sum(a["role"] == CHALLENGER for a in answers))

    # Single flights are scored on the event loop (a fraction of a millisecond): handing them
    # to a thread cost more than the scoring. Those that arrive together go in one call
    # (coalescing.py). Batches (up to ~40 ms) run in BentoML's thread pool, so they never hold
    # up the loop.
    @bentoml.api(input_spec=FlightRequest, output_spec=Prediction)
    async def predict(self, **flight: Any) -> Prediction:
        """Scores one flight."""
        answer = await self.singles.submit(flight)
        self._note([answer])
        return Prediction(**answer)

    @bentoml.api(input_spec=FlightBatch, output_spec=Predictions)
    def predict_batch(self, flights: list[Any]) -> Predictions:
        """Scores 1 to MAX_BATCH flights in one call (answers in request order)."""
        results = self._answer([f.model_dump() for f in flights])
        self._note(results)
        return Predictions(predictions=[Prediction(**r) for r in results])

    @bentoml.api(route="/model")
    def model_info(self) -> dict[str, Any]:
        """Identity of the champion: name, version, MLflow run, training data."""
        return dict(self.bundles[CHAMPION].model)

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        """Scores what waits off the path, then writes the log's last lines."""
        self.off_path.close(SHUTDOWN_WAIT_S)
        self.log.close()


# Outermost first: the request line covers what the guard refuses. Text logs stay BentoML's own.
if LOG_FORMAT == "json":
    FlightDelay.add_asgi_middleware(AccessLog, fields=ACCESS_FIELDS)  # type: ignore[attr-defined]
FlightDelay.add_asgi_middleware(  # type: ignore[attr-defined]
    ApiGuard,
    access=access_from_environment(),
    limiter=rate_limit_from_environment(),
    body_timeout=body_timeout_from_environment(),
)
