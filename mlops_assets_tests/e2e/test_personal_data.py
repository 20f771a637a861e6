"""End to end: a canary tail number goes through the whole lifecycle and is stored nowhere.

A copy of the session's deployed state (``deployed.deployed_copy``) receives a new day whose
flights and planes carry a canary tail number (a valid one, never a real plane). The day goes
through ingestion, features, batch predictions, drift and performance reports, and a
retraining that includes it; then a real ``bentoml serve`` answers a request carrying the
canary (and refuses one carrying it in the wrong format). Every file of the state but the
landing zone (the upstream's own delivery), the server's output and home are then searched
for the canary's bytes, upper and lower case, also inside Parquet, gzip, zip and tar files:
found nowhere. Its pseudonym is found (in the lake, the data registry, the Bento's planes), so
the search is not vacuous.

Runtime: about 60 s beyond the session's deployment (the day through the graph ~15 s, the
retraining ~20 s, the server ~8 s, the search a few seconds).
"""

from __future__ import annotations

import gzip
import io
import json
import secrets
import tarfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from mlops_assets import settings
from mlops_assets.lib.contracts import TAILNUM_PATTERN
from mlops_assets.lib.landing import landing_path
from mlops_assets.lib.pseudonyms import is_pseudonym, service_pseudonymizer
from mlops_assets.lib.scoring import ScoringBundle, score
from mlops_assets_tests.deployed import (
    PREDICT_DAY,
    Deployment,
    day_requests,
    deployed_copy,
)
from mlops_assets_tests.e2e.servers import BentoServer, Servers

pytestmark = pytest.mark.e2e

CANARY_DAY = PREDICT_DAY + timedelta(days=1)
CANARY_FLIGHTS = 3
# Letters past F: neither the canary nor its lower case can hide in a hex digest.
ALPHABET = "GHJKLMNPQRSTVWXYZ"


def new_canary() -> str:
    canary = "Z" + "".join(secrets.choice(ALPHABET + "0123456789") for _ in range(6))
    assert pd.Series([canary]).str.match(TAILNUM_PATTERN).all()
    return canary


@dataclass
class Planted:
    deployment: Deployment
    canary: str
    pseudonym: str
    server: BentoServer
    requests: dict[str, dict[str, Any]]
    answers: dict[str, tuple[int, str]]
    seconds: dict[str, float]


def plant(deployment: Deployment, canary: str) -> None:
    """The canary as a new plane of the registry and the plane of a few flights of a new day."""
    planes_csv = landing_path(deployment.state / "landing", "planes")
    planes = pd.read_csv(planes_csv, dtype=str, keep_default_na=False)
    planes = pd.concat([planes, planes.head(1).assign(tailnum=canary)], ignore_index=True)
    planes_csv.write_bytes(planes.to_csv(index=False).encode())

    def fly_the_canary(flights: pd.DataFrame) -> None:
        flights.loc[flights.index[:CANARY_FLIGHTS], "tailnum"] = canary

    deployment.land_edited(CANARY_DAY, fly_the_canary)


def retrain(deployment: Deployment) -> None:
    """A retraining whose window ends on the canary day (as the retrain sensor would ask),
    then the Bento built again."""
    config = {
        "ops": {
            "training_set": {
                "config": {"days": 21, "validation_days": 5, "as_of": CANARY_DAY.isoformat()}
            },
            "candidate_model": {"config": {"n_estimators": 60}},
            "model_gate": {"config": {"margin": -1.0, "min_roc_auc": 0.0, "min_pr_auc": 0.0}},
        }
    }
    assert deployment.train(config).success
    # The Bento is rebuilt on the new planes table (the champion's references).
    job = deployment.defs.resolve_implicit_global_asset_job_def()
    built = job.execute_in_process(
        asset_selection=[dg.AssetKey("bento")], instance=deployment.instance
    )
    assert built.success


@pytest.fixture(scope="module")
def planted(
    tmp_path_factory: pytest.TempPathFactory, deployed_state: Path, servers: Servers
) -> Iterator[Planted]:
    canary = new_canary()
    seconds: dict[str, float] = {}
    state = tmp_path_factory.mktemp("personal_data") / "state"
    with deployed_copy(deployed_state, state) as deployment:
        started = time.monotonic()
        plant(deployment, canary)
        seconds["day through the graph"] = time.monotonic() - started
        started = time.monotonic()
        retrain(deployment)
        seconds["retraining"] = time.monotonic() - started
        started = time.monotonic()
        tag = str(deployment.metadata("bento")["bento_tag"])
        server = servers.bentoml(tag, deployment.bentoml_home)
        valid = next(r for r in day_requests(deployment, CANARY_DAY) if r["tailnum"] == canary)
        requests = {"valid": valid, "invalid": {**valid, "tailnum": canary.lower()}}
        answers = {}
        with server.report_on_failure():
            for name, request in requests.items():
                response = server.post("/predict", request)
                answers[name] = (response.status_code, response.text)
        servers.stop(server)  # flushes the prediction log
        seconds["serving"] = time.monotonic() - started
        pseudonym = service_pseudonymizer({settings.STATE_DIR_VAR: str(state)}).pseudonym(canary)
        yield Planted(deployment, canary, pseudonym, server, requests, answers, seconds)


def test_the_canary_went_through_the_whole_lifecycle(planted: Planted) -> None:
    deployment, day = planted.deployment, CANARY_DAY.isoformat()
    for asset in ("raw_flights", "flight_features", "batch_predictions"):
        assert deployment.metadata(asset, day)["dagster/row_count"] > 0, asset
    assert deployment.metadata("drift_report", day)["current_rows"] > 0
    assert "status" in deployment.metadata("model_performance", day)
    assert deployment.metadata("training_set")["window_end"] == day
    assert deployment.metadata("candidate_model")["model_version"] == "2"
    lake = settings.locations({settings.STATE_DIR_VAR: str(deployment.state)}).lake
    flights = pd.read_parquet(lake / "raw_flights" / f"{day}.parquet")
    planes = pd.read_parquet(lake / "planes.parquet")
    assert (flights["tailnum"] == planted.pseudonym).sum() == CANARY_FLIGHTS
    assert flights["tailnum"].dropna().map(is_pseudonym).all()
    assert (planes["tailnum"] == planted.pseudonym).sum() == 1
    # Flights still join planes: the features of the canary's flights have its plane.
    features = pd.read_parquet(lake / "flight_features" / f"{day}.parquet")
    canary_rows = features[features["tailnum"] == planted.pseudonym]
    assert len(canary_rows) == CANARY_FLIGHTS and canary_rows["seats"].notna().all()


def test_the_service_pseudonymizes_the_request_and_echoes_nothing(planted: Planted) -> None:
    status, body = planted.answers["valid"]
    assert status == 200, body
    status, body = planted.answers["invalid"]
    assert status == 400 and "tailnum" in body, body
    for text in (planted.answers["valid"][1], body):
        assert planted.canary not in text and planted.canary.lower() not in text


def test_the_service_finds_the_plane_by_the_lake_pseudonym(planted: Planted) -> None:
    """The Bento's planes hold the canary's plane as its pseudonym only, and the service's
    answer is the pipeline code's score of the pseudonymized request: the same key."""
    deployment = planted.deployment
    name, version = str(deployment.metadata("bento")["model_tag"]).split(":")
    bundle = ScoringBundle.load(deployment.bentoml_home / "models" / name / version)
    assert planted.pseudonym in bundle.plane_lookup.position
    assert planted.canary not in bundle.plane_lookup.position
    request = planted.requests["valid"]
    [expected] = score(bundle, [{**request, "tailnum": planted.pseudonym}])
    answer = json.loads(planted.answers["valid"][1])
    assert answer["probability"] == pytest.approx(expected["probability"], abs=1e-9)


def _contents(path: Path) -> Iterator[bytes]:
    """The file's bytes, and what a compressed or columnar file holds once opened."""
    data = path.read_bytes()
    yield data
    if data[:2] == b"\x1f\x8b":
        yield gzip.decompress(data)
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for name in archive.namelist():
                yield archive.read(name)
    parquet = data[:4] == b"PAR1"  # also a DVC remote's objects, named by their MD5 only
    if parquet:
        frame = pd.read_parquet(io.BytesIO(data))
        yield frame.astype(str).to_csv(index=False).encode()
    if tarfile.is_tarfile(io.BytesIO(data)) and not parquet:
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            for member in archive.getmembers():
                extracted = archive.extractfile(member)
                if extracted is not None:
                    yield extracted.read()


def _search(roots: list[Path], needles: list[bytes], skip: Path) -> dict[bytes, list[str]]:
    found: dict[bytes, list[str]] = {needle: [] for needle in needles}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path.is_symlink() or skip in path.parents:
                continue
            for content in _contents(path):
                for needle in needles:
                    if needle in content and str(path) not in found[needle]:
                        found[needle].append(str(path))
    return found


def test_the_canary_is_stored_nowhere_and_its_pseudonym_is_found(planted: Planted) -> None:
    started = time.monotonic()
    state = planted.deployment.state
    landing = settings.locations({settings.STATE_DIR_VAR: str(state)}).landing
    server_root = planted.server.log_path.parent  # its output and its private home
    canary = planted.canary.encode()
    found = _search(
        [state, server_root], [canary, canary.lower(), planted.pseudonym.encode()], landing
    )
    searched = time.monotonic() - started
    print({**planted.seconds, "search": searched})
    assert found[canary] == [] and found[canary.lower()] == [], found
    # Not vacuous: the pseudonym is where the canary was (the lake, the data registry's DVC
    # remote, the Bento's planes), and the canary itself sits in the landing zone the search
    # skipped.
    where = found[planted.pseudonym.encode()]
    assert any("/lake/" in p for p in where) and any("/bentoml/" in p for p in where), where
    assert any("/data-registry/" in p or "/dvc-remote/" in p for p in where), where
    planes = landing_path(landing, "planes")
    assert canary in planes.read_bytes()
    assert list(server_root.glob("*.log")) and (state / "dagster_home").is_dir()
