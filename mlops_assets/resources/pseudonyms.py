"""The key of the pseudonyms of personal data, for the ingestion assets."""

from typing import Any

import dagster as dg
from pydantic import Field


class PseudonymKey(dg.ConfigurableResource):
    """Where the pseudonym key comes from (``lib/pseudonyms.py``, docs/data.md).

    Attributes:
        key: The key itself, only ever as ``dg.EnvVar("MLOPS_PSEUDONYM_KEY")`` (the UI shows
            the variable's name, never its value); empty: the local key file.
        key_file: The local key file, generated on first use (mode 0600).
        production: Whether the production flavour runs: the key must then be set.
    """

    key: str = Field(default="", description="The secret key, from MLOPS_PSEUDONYM_KEY only.")
    key_file: str = Field(default="", description="Local key file, made on first use.")
    production: bool = False

    def pseudonymizer(self) -> Any:
        """The ``lib.pseudonyms.Pseudonymizer`` of this key (the file made if missing)."""
        from pathlib import Path

        from mlops_assets.lib.pseudonyms import KEY_VARIABLE, load_key

        return load_key(
            {KEY_VARIABLE: self.key},
            Path(self.key_file) if self.key_file else None,
            production=self.production,
            create=True,
        )
