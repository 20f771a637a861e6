"""The flight-delay prediction service (BentoML), serving the champion model.

Endpoints (JSON over HTTP, OpenAPI at ``/docs.json``):

- ``POST /predict``: one flight -> probability of a 15+ minute arrival delay, the decision at
  the model's threshold, and the model version that answered;
- ``POST /predict_batch``: ``{"flights": [...]}`` with 1 to ``MAX_BATCH`` flights;
- ``GET /livez``, ``/readyz``, ``/healthz`` and ``/metrics`` (Prometheus): always open.

The request model is generated from the landing data contracts (``lib.scoring``), and a
request is scored through the pipeline's own feature code, so the API and the pipeline
cannot disagree. The prediction endpoints require an API key (``Authorization: Bearer <key>``
or ``X-API-Key``) when ``MLOPS_API_KEY`` is set; in the production flavour
(``MLOPS_ENV=production``) the service refuses to start without one.

This module is loaded by ``bentoml serve`` and ``bentoml build`` only, never by the code
location.
"""

import gc
import json
import os
from pathlib import Path
from typing import Any

import bentoml
from pydantic import BaseModel, Field

from mlops_assets import settings
from mlops_assets.lib import runtime
from mlops_assets.lib.scoring import (
    EXAMPLE_REQUEST,
    MAX_BATCH,
    ScoringBundle,
    request_fields,
    request_model,
    score,
)
from mlops_assets.serving.guard import ApiGuard, api_key_from_environment

MODEL_NAME = settings.MODEL_NAME


def _model_tag() -> str:
    """The model this service serves.

    Served from a Bento (``bentoml serve <tag>``, or the image built from it): exactly the
    model its ``bento.yaml`` names, whatever else the store holds. While building, the model
    the build just stored (``MLOPS_BENTO_MODEL``). From source: the newest in the store.
    """
    manifest = Path(__file__).resolve().parents[3] / "bento.yaml"  # <bento>/src/mlops_assets/...
    if manifest.exists():
        import yaml

        for model in yaml.safe_load(manifest.read_text()).get("models") or []:
            if str(model.get("tag", "")).startswith(f"{MODEL_NAME}:"):
                return str(model["tag"])
    return os.environ.get("MLOPS_BENTO_MODEL", f"{MODEL_NAME}:latest")


_STORED = bentoml.models.get(_model_tag())
MODEL = bentoml.models.BentoModel(_STORED.tag)
_CODES = json.loads((Path(_STORED.path) / "reference.json").read_text())
FlightRequest: Any = request_model(request_fields(_CODES["carriers"], _CODES["airports"]))


class FlightBatch(BaseModel):
    """Flights to score together."""

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


class Predictions(BaseModel):
    """Answers in request order."""

    predictions: list[Prediction]


# Exact versions of what scoring imports at run time, the same list the MLflow model pins.
IMAGE = bentoml.images.Image(python_version="3.11", lock_python_packages=False).python_packages(
    *runtime.pinned_requirements()
)


@bentoml.service(
    name=f"{MODEL_NAME}_service",
    image=IMAGE,
    traffic={"timeout": 10},
    labels={"project": "mlops_assets"},
)
class FlightDelay:
    """Probability that a scheduled flight arrives 15+ minutes late."""

    model = MODEL

    def __init__(self) -> None:
        stored: Any = self.model
        self.bundle = ScoringBundle.load(Path(stored.path))
        self.probability = bentoml.metrics.Histogram(
            name=f"{MODEL_NAME}_probability",
            documentation="Predicted probability of a 15+ minute arrival delay",
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
        )
        # Warm up (imports, model parsing) before the first request is answered.
        score(self.bundle, [FlightRequest(**EXAMPLE_REQUEST).model_dump()])
        # Start-up objects never die: keep them out of the garbage collector's full passes,
        # which otherwise pause a request for 0.2-0.3 s every few seconds under load.
        gc.collect()
        gc.freeze()

    def _score(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        results = score(self.bundle, requests)
        for result in results:
            self.probability.observe(result["probability"])
        return results

    @bentoml.api(input_spec=FlightRequest, output_spec=Prediction)
    def predict(self, **flight: Any) -> Prediction:
        """Scores one flight."""
        return Prediction(**self._score([flight])[0])

    @bentoml.api(input_spec=FlightBatch, output_spec=Predictions)
    def predict_batch(self, flights: list[Any]) -> Predictions:
        """Scores 1 to MAX_BATCH flights in one call (answers in request order)."""
        results = self._score([f.model_dump() for f in flights])
        return Predictions(predictions=[Prediction(**r) for r in results])

    @bentoml.api(route="/model")
    def model_info(self) -> dict[str, Any]:
        """Identity of the model that answers: name, version, MLflow run, training data."""
        return dict(self.bundle.model)


FlightDelay.add_asgi_middleware(ApiGuard, api_key=api_key_from_environment())  # type: ignore[attr-defined]
