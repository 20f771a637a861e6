"""Content hashes used as Dagster data versions and for bit-for-bit checks."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def frame_fingerprint(frame: pd.DataFrame) -> str:
    """A SHA-256 of a frame's content, column names and dtypes (not its memory layout).

    Two frames with the same rows in the same order, the same columns and dtypes get the
    same fingerprint, whichever file format they were read from.
    """
    import pandas as pd

    digest = hashlib.sha256()
    for name, dtype in frame.dtypes.items():
        digest.update(f"{name}:{dtype};".encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def md5_bytes(payload: bytes) -> str:
    """MD5 of a payload, as DVC records it for a single file."""
    return hashlib.md5(payload, usedforsecurity=False).hexdigest()
