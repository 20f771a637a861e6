"""Storage helpers shared by the landing zone, the lake and the reports: any fsspec URL.

A local folder or an object store (``s3://...``) behind the same ``UPath`` code.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from upath import UPath


def location(url: str, storage_options: str = "{}") -> UPath:
    """The ``UPath`` of ``url`` with fsspec options given as a JSON object.

    Credentials come from the environment (``AWS_*``), never from the options.
    """
    from upath import UPath

    return UPath(url, **json.loads(storage_options or "{}"))


def is_object_store(path: Any) -> bool:
    """Whether ``path`` lives in a cloud object store (S3, GCS, Azure): keys, no directories."""
    try:
        from upath.implementations.cloud import CloudPath
    except ImportError:  # pragma: no cover - upath is a dependency
        return False
    return isinstance(path, CloudPath)


def write_atomic(target: Any, payload: bytes) -> None:
    """Writes ``payload`` so that readers see the old content or the new, never a part.

    On a disk: under a hidden temporary name, then renamed into place. In an object store a
    single PUT is already atomic, and there are no directories to create (``mkdir`` with
    parents would create a missing *bucket*), so the object is written directly.
    """
    if is_object_store(target):
        target.write_bytes(payload)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
    tmp.write_bytes(payload)
    tmp.rename(target)


def to_parquet_bytes(frame: pd.DataFrame) -> bytes:
    """Serializes a frame to Parquet deterministically (no index, fixed compression)."""
    import io

    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, compression="zstd", engine="pyarrow")
    return buffer.getvalue()
