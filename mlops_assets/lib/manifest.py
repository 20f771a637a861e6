"""A day's manifest: the upstream's word that the day's files are complete, and what they hold.

Contracts check what a file contains, not whether it is all there: a flights file cut at a
line boundary is a valid CSV of valid rows. So an upstream writes, after the day's files, a
manifest naming each file with its row count, size and SHA-256; the landing sensor waits for
it, and ingestion checks each file against it before the contract::

    <root>/manifests/2013-01-05.json
    {
      "day": "2013-01-05",
      "files": {
        "flights/2013-01-05.csv": {"rows": 842, "bytes": 113154, "sha256": "5b1f..."},
        "weather/2013-01-05.csv": {"rows": 72, "bytes": 6632, "sha256": "90ac..."}
      }
    }

``rows`` counts the lines after the header (``wc -l`` minus one for a file that ends with a
newline), so any tool can write it without parsing CSV.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_assets.lib.landing import (
    DAY_DATASETS,
    MANIFEST_FOLDER,
    LandingFileError,
    landing_path,
    manifest_path,
    parse_csv,
    read_payload,
)
from mlops_assets.lib.storage import write_atomic

if TYPE_CHECKING:
    import pandas as pd
    from upath import UPath

# Characters of a SHA-256 shown in messages (the manifest and the metadata keep all 64).
DIGEST_SHOWN = 12


class ManifestError(ValueError):
    """A manifest cannot be read (not JSON, or not the manifest format)."""


class IncompleteDeliveryError(LandingFileError):
    """A landing file has no manifest (when one is required) or does not match it."""

    rule = "matches_manifest"


@dataclass(frozen=True)
class FileEntry:
    """What the upstream says it delivered in one file."""

    rows: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """One day's manifest: landing key (``flights/2013-01-05.csv``) -> ``FileEntry``."""

    day: date
    files: dict[str, FileEntry]

    def to_json(self) -> bytes:
        """The manifest as written to the landing zone."""
        files = {key: asdict(entry) for key, entry in sorted(self.files.items())}
        return (json.dumps({"day": self.day.isoformat(), "files": files}, indent=2) + "\n").encode()


def count_rows(payload: bytes) -> int:
    """Lines after the header; a last line without a newline counts too."""
    lines = payload.count(b"\n") + (1 if payload and not payload.endswith(b"\n") else 0)
    return max(lines - 1, 0)


def describe(payload: bytes) -> FileEntry:
    """The manifest entry of a file's bytes."""
    return FileEntry(count_rows(payload), len(payload), hashlib.sha256(payload).hexdigest())


def build_manifest(day: date, payloads: Mapping[str, bytes]) -> Manifest:
    """The manifest of ``day`` for files given as landing key -> bytes."""
    return Manifest(day, {key: describe(payload) for key, payload in payloads.items()})


def write_manifest(root: UPath | Path, day: date) -> Manifest:
    """Writes the manifest of the day files present for ``day`` (atomically; call it last).

    Raises:
        LandingFileError: when no file of that day is in the landing zone.
    """
    payloads = {}
    for dataset in DAY_DATASETS:
        path = landing_path(root, dataset, day)
        if path.exists():
            payloads[f"{dataset}/{path.name}"] = read_payload(path)
    if not payloads:
        names = " or ".join(f"{d}/{day.isoformat()}.csv" for d in DAY_DATASETS)
        raise LandingFileError(f"{root}: no {names} to write a manifest for")
    manifest = build_manifest(day, payloads)
    write_atomic(manifest_path(root, day), manifest.to_json())
    return manifest


def read_manifest(root: UPath | Path, day: date) -> Manifest | None:
    """The manifest of ``day``, or ``None`` when it has not arrived.

    Raises:
        ManifestError: naming the file and what is wrong with it.
    """
    path = manifest_path(root, day)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw)
        files = {
            str(key): FileEntry(int(e["rows"]), int(e["bytes"]), str(e["sha256"]).lower())
            for key, e in data["files"].items()
        }
        return Manifest(date.fromisoformat(data["day"]), files)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        reason = f"{type(error).__name__}: {error}"
        raise ManifestError(
            f"{MANIFEST_FOLDER}/{path.name} is not a valid manifest ({reason}); expected "
            '{"day": "YYYY-MM-DD", "files": {"<dataset>/<day>.csv": '
            '{"rows": N, "bytes": N, "sha256": "<hex>"}}}'
        ) from error


def listing(root: UPath | Path, day: date) -> frozenset[str] | str:
    """The keys the manifest of ``day`` lists, or why it cannot be read (for the sensor)."""
    try:
        manifest = read_manifest(root, day)
    except ManifestError as error:
        return str(error)
    return frozenset(manifest.files) if manifest else frozenset()


def mismatches(delivered: FileEntry, promised: FileEntry) -> list[str]:
    """How a file differs from its manifest entry, each with both values."""
    found = []
    if delivered.rows != promised.rows:
        found.append(f"{delivered.rows:,} rows delivered, {promised.rows:,} in the manifest")
    if delivered.bytes != promised.bytes:
        found.append(f"{delivered.bytes:,} bytes delivered, {promised.bytes:,} in the manifest")
    if delivered.sha256 != promised.sha256:
        found.append(
            f"sha256 {delivered.sha256[:DIGEST_SHOWN]} delivered, "
            f"{promised.sha256[:DIGEST_SHOWN]} in the manifest"
        )
    return found


def read_delivered(
    root: UPath | Path, dataset: str, day: date, *, require_manifest: bool
) -> pd.DataFrame:
    """Reads a day file as strings once its bytes match the day's manifest (``read_csv``).

    Without a manifest the file is read unchecked unless ``require_manifest``.

    Raises:
        IncompleteDeliveryError: naming the file, the manifest and, for a mismatch, both
            row counts, sizes or checksums.
        LandingFileError: when the file cannot be read as CSV (see ``landing.read_csv``).
    """
    path = landing_path(root, dataset, day)
    payload = read_payload(path)
    try:
        manifest = read_manifest(root, day)
    except ManifestError as error:
        raise IncompleteDeliveryError(f"{path}: {error}") from error
    expected = f"{MANIFEST_FOLDER}/{day.isoformat()}.json"
    if manifest is None:
        if require_manifest:
            raise IncompleteDeliveryError(
                f"{path}: no manifest {expected} (the upstream writes it after the day's files)"
            )
        return parse_csv(payload, path)
    promised = manifest.files.get(f"{dataset}/{path.name}")
    if promised is None:
        raise IncompleteDeliveryError(f"{path}: not listed in its manifest {expected}")
    found = mismatches(describe(payload), promised)
    if found:
        raise IncompleteDeliveryError(
            f"{path}: does not match its manifest {expected}: {'; '.join(found)}"
        )
    return parse_csv(payload, path)
