"""The lake: Parquet files under a local folder or any fsspec/UPath URL."""

import json
from typing import Any

import dagster as dg
from upath import UPath


class ParquetLakeIOManager(dg.UPathIOManager):
    """Stores each asset (partition) as one Parquet file: ``<base>/<asset>/<partition>.parquet``.

    Writes go to a hidden temporary file first and are renamed into place, so a failed write
    never replaces a good partition. The path and size are added to the materialization.
    """

    extension = ".parquet"

    def dump_to_path(self, context: dg.OutputContext, obj: Any, path: UPath) -> None:
        """Writes a frame as Parquet, atomically."""
        from mlops_assets.lib.hashing import to_parquet_bytes
        from mlops_assets.lib.landing import write_atomic

        payload = to_parquet_bytes(obj)
        write_atomic(path, payload)
        context.add_output_metadata({"bytes": len(payload)})

    def load_from_path(self, context: dg.InputContext, path: UPath) -> Any:
        """Reads a Parquet file into a frame."""
        import pandas as pd

        with path.open("rb") as handle:
            return pd.read_parquet(handle)


class LakeIOManager(dg.ConfigurableIOManagerFactory):
    """Parquet lake IO manager, configured by a base URL.

    Attributes:
        base_url: Local folder or URL (``s3://bucket/lake``).
        storage_options: JSON object of fsspec options (credentials come from the environment).
    """

    base_url: str
    storage_options: str = "{}"

    def create_io_manager(self, context: dg.InitResourceContext) -> ParquetLakeIOManager:
        """Builds the UPath IO manager for the configured base URL."""
        return ParquetLakeIOManager(
            base_path=UPath(self.base_url, **json.loads(self.storage_options))
        )
