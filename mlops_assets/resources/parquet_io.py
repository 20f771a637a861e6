"""The Parquet UPath IO manager behind ``LakeIOManager`` (imported when a run starts)."""

from typing import Any

import dagster as dg
from upath import UPath

from mlops_assets.lib.data_registry import DataRegistry, DataRegistryError
from mlops_assets.resources.lake import REGISTRY_PATH_TEMPLATE


class LakeStorageError(RuntimeError):
    """The lake could not store a partition; the message names the URL."""


def _storage_problem(path: UPath, error: BaseException) -> str:
    """Why ``path`` could not be used, naming the bucket when it does not exist."""
    from mlops_assets.lib.storage import missing_bucket

    reason = f"{type(error).__name__}: {error}"
    # Only a "not found" is checked against the bucket (a denied write is not a missing bucket).
    bucket = missing_bucket(path) if isinstance(error, FileNotFoundError) else None
    return f"bucket {bucket!r} does not exist ({reason})" if bucket else reason


class ParquetLakeIOManager(dg.UPathIOManager):
    """Stores each asset (partition) as one Parquet file.

    Writes go to a hidden temporary file first and are renamed into place, so a failed write
    never replaces a good partition (in an object store a single PUT is atomic already). The
    size is added to the materialization metadata. A storage error becomes a
    ``LakeStorageError`` naming the asset, the partition and the URL (a missing bucket by
    name), so the step fails with a message that says what to fix.

    An asset whose definition metadata names a registry path (``versioned_in_registry``) is
    written with ``store_versioned``: staged in the lake, committed to the data registry, then
    published, so a failure on either side leaves both at their previous version. Its
    materialization gets ``dvc_md5``, ``registry_rev`` and ``registry_path``.
    """

    extension = ".parquet"

    def __init__(self, base_path: UPath | None = None, registry: DataRegistry | None = None):
        super().__init__(base_path=base_path)
        self._registry = registry

    def make_directory(self, path: UPath) -> None:
        """Creates a folder on disk; nothing in an object store.

        Object stores have no directories, and ``mkdir(parents=True)`` of s3fs creates a
        missing *bucket*: a mistyped lake URL would silently start a new lake.
        """
        from mlops_assets.lib.storage import is_object_store

        if not is_object_store(path):
            super().make_directory(path)

    def dump_to_path(self, context: dg.OutputContext, obj: Any, path: UPath) -> None:
        """Writes a frame as Parquet, atomically; versions it too if the asset asks for it."""
        from mlops_assets.lib.data_registry import store_versioned
        from mlops_assets.lib.storage import to_parquet_bytes, write_atomic

        registry_path = _registry_path(context)
        if registry_path and self._registry is None:
            raise LakeStorageError(
                f"{_describe(context)} is versioned in the data registry ({registry_path}), "
                "but this lake IO manager has no registry: nothing was written"
            )
        payload = to_parquet_bytes(obj)
        metadata: dict[str, Any] = {"bytes": len(payload)}
        try:
            if registry_path and self._registry is not None:
                version = store_versioned(
                    self._registry,
                    registry_path,
                    payload,
                    f"{_describe(context)} (dagster run {context.run_id})",
                    path,
                )
                metadata.update(
                    dvc_md5=version.md5, registry_rev=version.rev, registry_path=registry_path
                )
            else:
                write_atomic(path, payload)
        except DataRegistryError:
            raise  # says what failed; the lake was not changed
        except Exception as error:
            kept = "; the data registry still records the previous version" if registry_path else ""
            raise LakeStorageError(
                f"cannot write {_describe(context)} to the lake at {path}: "
                f"{_storage_problem(path, error)}; lake base URL {self._base_path} "
                f"(MLOPS_LAKE_URL in production){kept}"
            ) from error
        context.add_output_metadata(metadata)

    def load_from_path(self, context: dg.InputContext, path: UPath) -> Any:
        """Reads a Parquet file into a frame."""
        import pandas as pd

        # Not wrapped: Dagster reads FileNotFoundError as "partition missing".
        with path.open("rb") as handle:
            return pd.read_parquet(handle)


def _describe(context: dg.OutputContext) -> str:
    """``asset`` or ``asset partition <key>`` for messages."""
    if not context.has_asset_key:
        return "the output"
    name = context.asset_key.to_user_string()
    if context.has_asset_partitions and len(context.asset_partition_keys) == 1:
        return f"{name} partition {context.asset_partition_keys[0]}"
    return name


def _registry_path(context: dg.OutputContext) -> str | None:
    """The asset's path in the data registry (partition filled in), if it is versioned there."""
    if not context.has_asset_key:
        return None
    template = context.definition_metadata.get(REGISTRY_PATH_TEMPLATE)
    if isinstance(template, dg.MetadataValue):
        template = template.value
    if not template:
        return None
    if not context.has_asset_partitions:
        return str(template)
    return str(template).format(partition=context.asset_partition_key)
