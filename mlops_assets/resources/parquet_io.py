"""The Parquet UPath IO manager behind ``LakeIOManager`` (imported when a run starts)."""

from typing import Any

import dagster as dg
from upath import UPath


class ParquetLakeIOManager(dg.UPathIOManager):
    """Stores each asset (partition) as one Parquet file.

    Writes go to a hidden temporary file first and are renamed into place, so a failed write
    never replaces a good partition. The size is added to the materialization metadata.
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
