"""A state folder that can be copied and moved (backups, a second checkout, CI caches).

Most of the state needs nothing: every tool is pointed at ``<state>/...`` when its resource
opens, the data registry keeps its local DVC remote relative (``lib.data_registry``) and a
release points the deployment checkout at the remote it is given. MLflow is the exception:
its SQLite store records absolute ``file://`` artifact locations (experiments, runs, logged
models, model versions) and has no API to move them, so a copy would keep reading and
writing the original's artifacts. ``relocate`` re-points those records when the state is
opened in another folder than the last time, which a marker file in the state records
(with each logged model's ``MLmodel`` file, and the deployment checkout's remote, so no
file of the state names the original's folder).
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

if TYPE_CHECKING:
    import sqlite3

    from mlops_assets.settings import Locations

# Where the state folder was last opened (one line: its absolute path).
MARKER = ".location"
# The line of a logged model's MLmodel file that records its location.
_KEY = "artifact_path: "
# Declared column types of SQLite that hold text (MLflow's are VARCHAR(n) and TEXT).
_TEXT_TYPES = ("CHAR", "TEXT", "CLOB")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Relocation:
    """A state opened in a new folder, and what was re-pointed.

    Attributes:
        previous: Where the state was last opened (a copy's original, a move's old place).
        current: Where it is now.
        tracking_records: MLflow records (store rows, ``MLmodel`` files) whose artifact
            location now lies in ``current``.
    """

    previous: Path
    current: Path
    tracking_records: int


def relocate(where: Locations) -> Relocation | None:
    """Re-points a copied or moved state at its own folder.

    When nothing moved this reads one small file. Only files inside ``state`` are written:
    the folder a copy was made from is never opened, so the original stays as it was.
    Idempotent, and safe for processes opening the same state at once (a file lock).

    Args:
        where: The state folder (absolute, as ``settings.locations`` resolves it).

    Returns:
        What was re-pointed, or None when the state was last opened where it is (or does
        not exist yet).
    """
    state = where.state
    marker = state / MARKER
    if _recorded(marker) == str(state) or not state.is_dir():
        return None
    from filelock import FileLock

    with FileLock(str(state / f"{MARKER}.lock"), timeout=600):
        recorded = _recorded(marker)  # another process may have re-pointed it meanwhile
        if recorded == str(state):
            return None
        # A state from before the marker: it was made where its artifact root was.
        previous = Path(recorded) if recorded else _tracking_origin(where)
        moved = previous if previous is not None and previous != state else None
        records = 0
        if moved is not None:
            records = _repoint_tracking(where.tracking_db, moved, state)
            records += _repoint_models(where.artifacts, moved, state)
            _repoint_checkout(where.deployment / "checkout", moved, state)
        partial = marker.with_name(f"{MARKER}.tmp")
        partial.write_text(str(state), encoding="utf-8")
        os.replace(partial, marker)
    if moved is None:
        return None
    logger.info("state opened in %s (last in %s): %d MLflow records", state, moved, records)
    return Relocation(moved, state, records)


def _recorded(marker: Path) -> str | None:
    try:
        return marker.read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _tracking_origin(where: Locations) -> Path | None:
    """The state folder the MLflow store was made in, from its experiments' artifact roots."""
    if not where.tracking_db.is_file():
        return None
    import sqlite3

    suffix = where.artifacts.relative_to(where.state).parts  # ("mlflow", "artifacts")
    with contextlib.closing(sqlite3.connect(where.tracking_db, timeout=60)) as db:
        rows = db.execute("SELECT artifact_location FROM experiments").fetchall()
    for (location,) in rows:
        parsed = urlparse(str(location or ""))
        path = Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(str(location))
        if path.is_absolute() and path.parts[-len(suffix) :] == suffix:
            return path.parents[len(suffix) - 1]
    return None


def _repoint_tracking(tracking_db: Path, previous: Path, current: Path) -> int:
    """Rewrites every text value starting with ``previous`` (as a path or a file URI)."""
    if not tracking_db.is_file():
        return 0
    import sqlite3

    pairs = [
        (f"{previous.as_uri()}/", f"{current.as_uri()}/"),
        (f"{previous}/", f"{current}/"),
    ]
    changed = 0
    with contextlib.closing(sqlite3.connect(tracking_db, timeout=60)) as db, db:
        tables = [
            name
            for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not name.startswith("sqlite_")
        ]
        for table in tables:
            for column in _text_columns(db, table):
                for old, new in pairs:
                    changed += db.execute(
                        f'UPDATE "{table}" SET "{column}" = ? || substr("{column}", ?) '
                        f'WHERE substr("{column}", 1, ?) = ?',
                        (new, len(old) + 1, len(old), old),
                    ).rowcount
    return changed


def _repoint_models(artifact_root: Path, previous: Path, current: Path) -> int:
    """Rewrites the location each logged model's ``MLmodel`` file records.

    MLflow reads ``artifact_path`` back as the model's location (e.g. its input example).
    """
    old, new = f"{_KEY}{previous.as_uri()}/", f"{_KEY}{current.as_uri()}/"
    changed = 0
    for path in artifact_root.glob("models/*/artifacts/MLmodel"):
        text = path.read_text(encoding="utf-8")
        lines = [
            new + line[len(old) :] if line.startswith(old) else line for line in text.split("\n")
        ]
        if (rewritten := "\n".join(lines)) != text:
            partial = path.with_name(f"{path.name}.tmp")
            partial.write_text(rewritten, encoding="utf-8")
            os.replace(partial, path)
            changed += 1
    return changed


def _repoint_checkout(checkout: Path, previous: Path, current: Path) -> None:
    """Points the releases' checkout at the deployment remote in ``current``.

    The next release would too; until then its git config names the original's remote.
    """
    if not (checkout / ".git").is_dir():
        return
    import subprocess

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=checkout, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    url = git("remote", "get-url", "origin")
    if url.startswith(f"{previous}/"):
        git("remote", "set-url", "origin", f"{current}/{url[len(str(previous)) + 1 :]}")


def _text_columns(db: sqlite3.Connection, table: str) -> list[str]:
    rows = db.execute(f'PRAGMA table_info("{table}")').fetchall()
    return [str(r[1]) for r in rows if any(t in str(r[2]).upper() for t in _TEXT_TYPES)]
