"""The champion's scoring bundle, published for scorers that run outside the code location.

The stream scorer has neither MLflow nor the lake's tables at hand: it reads the champion's
``ScoringBundle`` (the same plain files the Bento holds) from here, and polls one small
pointer between micro-batches to switch to a new champion without a restart.

Layout: ``<root>/<model_version>/`` holds the bundle's files; ``<root>/champion.json`` names
the champion (``{"model_version": ..., "published_at": ...}``). A publish writes the files
first and the pointer last, each atomically, so a reader that follows the pointer always finds
a complete bundle. Republishing a version (new reference tables) replaces its files one by one;
each is valid on its own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mlops_assets.lib.storage import location, write_atomic

if TYPE_CHECKING:
    from mlops_assets.lib.scoring import ScoringBundle

ROOT_VARIABLE = "MLOPS_SCORING_BUNDLES"
POINTER = "champion.json"


class BundleError(RuntimeError):
    """A published bundle or its pointer cannot be read."""


def publish(root: str, bundle: ScoringBundle) -> str:
    """Publishes ``bundle`` as the champion's: its files, then the pointer.

    Returns:
        The published model version.

    Raises:
        ValueError: if the bundle does not name its model version.
    """
    version = str(bundle.model.get("model_version") or "")
    if not version:
        raise ValueError("the bundle names no model_version: nothing published")
    folder = location(root) / version
    for name, content in bundle.files().items():
        write_atomic(folder / name, content)
    pointer = {"model_version": version, "published_at": time.time()}
    write_atomic(location(root) / POINTER, json.dumps(pointer, sort_keys=True).encode())
    return version


def champion(root: str) -> dict[str, Any] | None:
    """The pointer (``model_version``, ``published_at``), or None before the first publish.

    Raises:
        BundleError: if the pointer exists but cannot be read.
    """
    path = location(root) / POINTER
    try:
        pointer = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise BundleError(f"cannot read the champion pointer {path}: {error}") from error
    if not isinstance(pointer, dict) or not pointer.get("model_version"):
        raise BundleError(f"the champion pointer {path} names no model_version")
    return pointer


def champion_version(root: str) -> str | None:
    """The champion's version named by the pointer (one small read), None before a publish."""
    pointer = champion(root)
    return None if pointer is None else str(pointer["model_version"])


def load(root: str, version: str) -> ScoringBundle:
    """The published bundle of ``version``.

    Raises:
        BundleError: if it is missing or incomplete.
    """
    from mlops_assets.lib.scoring import ScoringBundle

    folder = location(root) / version
    try:
        return ScoringBundle.from_files(lambda name: (folder / name).read_bytes())
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise BundleError(
            f"cannot load the scoring bundle of version {version}: {error}"
        ) from error


def default_root(env: Mapping[str, str] | None = None) -> str:
    """Where bundles are published when nothing else says.

    ``MLOPS_SCORING_BUNDLES``; else in production ``<MLOPS_LAKE_URL>/scoring_bundles``; else
    the state folder's ``lake/scoring_bundles``.
    """
    from mlops_assets import settings

    return settings.lake_root(ROOT_VARIABLE, "scoring_bundles", env=env)
