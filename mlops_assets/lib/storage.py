"""Storage helpers shared by the landing zone, the lake and the reports: any fsspec URL.

A local folder or an object store (``s3://...``) behind the same ``UPath`` code.
"""

from __future__ import annotations

import json
import logging
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


def missing_bucket(path: Any) -> str | None:
    """The bucket of an object-store ``path`` when that bucket does not exist, else None.

    None too when the probe itself fails: without s3:ListBucket it fails like a missing bucket
    would, and an access problem must not be reported as one.
    """
    if not is_object_store(path):
        return None
    bucket = str(path.drive).rstrip("/")
    try:
        return None if path.fs.exists(bucket) else bucket
    except Exception:
        return None


def write_atomic(target: Any, payload: bytes) -> None:
    """Writes ``payload`` so that readers see the old content or the new, never a part.

    On a disk: under a hidden temporary name, then renamed into place. In an object store a
    single PUT is already atomic, and there are no directories to create (``mkdir`` with
    parents would create a missing *bucket*), so the object is written directly.
    """
    if is_object_store(target):
        target.write_bytes(payload)
        return
    staged = stage(target, payload)
    try:
        promote(staged, target)
    finally:
        discard(staged)
    discard_interrupted(target)


def stage(target: Any, payload: bytes) -> Any:
    """Writes ``payload`` next to ``target`` under a hidden temporary name; returns that path.

    ``target`` itself is untouched, so a failure here (or a later decision not to publish)
    changes nothing readers can see. ``promote`` publishes it, ``discard`` removes it.
    """
    staged = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
    if is_object_store(target):
        staged.write_bytes(payload)  # one PUT: it fails whole, leaving nothing behind
        return staged
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        staged.write_bytes(payload)
    except BaseException:
        discard(staged)
        raise
    return staged


def promote(staged: Any, target: Any) -> None:
    """Replaces ``target`` by the staged content in one step (old content or new, never a part).

    A rename on a disk; a server-side copy in an object store (a PUT of the whole object), which
    leaves the staged object for ``discard``.
    """
    if is_object_store(target):
        target.fs.copy(staged.path, target.path)
    else:
        staged.replace(target)


def discard(staged: Any) -> None:
    """Removes a staged object if it is still there; a failure is logged, not raised.

    A leftover has a hidden temporary name that no reader opens, and raising here would hide
    the outcome that matters (the publish succeeded or its own error).
    """
    try:
        if staged.exists():
            staged.unlink()
    except Exception as error:
        logging.getLogger(__name__).warning("could not remove staged %s: %s", staged, error)


def discard_interrupted(target: Any) -> list[str]:
    """Removes what writers of ``target`` killed before publishing left: their staged files.

    Called after a write of ``target`` was published. Writes of one partition run one at a
    time (the instance's per-day run limit), so any other staged file of ``target`` belongs to
    a writer that is gone. Only on a disk: a staged object (one PUT) is named in the
    ``discard`` that follows it, and listing a bucket on every write would cost a request.

    Returns:
        The names removed.
    """
    if is_object_store(target) or not target.parent.exists():
        return []
    removed = []
    for leftover in target.parent.glob(f".{target.name}.*.tmp"):
        discard(leftover)
        removed.append(leftover.name)
    return removed


def to_parquet_bytes(frame: pd.DataFrame) -> bytes:
    """Serializes a frame to Parquet deterministically (no index, fixed compression)."""
    import io

    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, compression="zstd", engine="pyarrow")
    return buffer.getvalue()
