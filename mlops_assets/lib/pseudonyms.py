"""Keyed pseudonyms for the sensitive columns of the contracts (docs/data.md, "Personal data").

A sensitive value (a column the contracts mark ``direct`` or ``quasi``) is replaced by
``ps_`` + the first ``DIGEST_CHARS`` hex digits of HMAC-SHA256(key, value) before anything
is stored. The same key gives the same pseudonym, so flights still join planes on the
pseudonymized tail number and the service, which pseudonymizes requests with the same key,
finds the plane. Without the key a pseudonym cannot be turned back into its value, nor a
guessed value into its pseudonym (a plain hash of a tail number could be brute-forced).

The key comes from ``MLOPS_PSEUDONYM_KEY``; locally, when it is not set, from a key file in
the state folder, generated once (mode 0600). The production flavour refuses to start
without the variable. The key is never logged nor shown: ``Pseudonymizer`` hides it from its
``repr`` and no error message quotes it. Plain Python: no Dagster, no BentoML.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

KEY_VARIABLE = "MLOPS_PSEUDONYM_KEY"
# Recognisable in any table or log line, and never a valid tail number (lower case, "_").
PREFIX = "ps_"
# 80 bits: no collision among billions of values, short enough to read in a table.
DIGEST_CHARS = 20
PSEUDONYM_LENGTH = len(PREFIX) + DIGEST_CHARS
# A shorter key is guessable; the generated one has 43 characters (32 random bytes).
MIN_KEY_CHARS = 32


class PseudonymKeyError(RuntimeError):
    """No usable pseudonym key (the message names the variable or file, never a key)."""


class Pseudonymizer:
    """Turns sensitive values into keyed pseudonyms; the key stays inside.

    Args:
        key: The secret key (at least ``MIN_KEY_CHARS`` characters).
    """

    __slots__ = ("_key", "_known")

    def __init__(self, key: str) -> None:
        if len(key.strip()) < MIN_KEY_CHARS:
            raise PseudonymKeyError(
                f"the pseudonym key ({KEY_VARIABLE}) must have at least {MIN_KEY_CHARS} "
                "characters, e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        self._key = key.strip().encode()
        self._known: dict[str, str] = {}

    def __repr__(self) -> str:
        return "Pseudonymizer(key=<hidden>)"

    def pseudonym(self, value: str) -> str:
        """The pseudonym of one value (the same for the same key and value)."""
        known = self._known.get(value)
        if known is None:
            digest = hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()
            known = PREFIX + digest[:DIGEST_CHARS]
            if len(self._known) < 100_000:  # a service sees unbounded values: cap the memory
                self._known[value] = known
        return known

    def column(self, values: pd.Series) -> pd.Series:
        """Pseudonyms of a column; missing values stay missing."""
        import pandas as pd

        mapped = [None if pd.isna(v) else self.pseudonym(str(v)) for v in values]
        return pd.Series(mapped, index=values.index, dtype=object, name=values.name)

    def frame(self, frame: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
        """A copy of ``frame`` with ``columns`` (those present) pseudonymized."""
        present = [c for c in columns if c in frame.columns]
        if not present:
            return frame
        out = frame.copy()
        for column in present:
            out[column] = self.column(frame[column])
        return out

    def records(self, records: list[dict[str, Any]], fields: Iterable[str]) -> list[dict[str, Any]]:
        """Copies of ``records`` (requests) with ``fields`` pseudonymized; None stays None."""
        names = list(fields)
        out = []
        for record in records:
            copied = dict(record)
            for name in names:
                value = copied.get(name)
                if value is not None:
                    copied[name] = self.pseudonym(str(value))
            out.append(copied)
        return out


def is_pseudonym(value: object) -> bool:
    """Whether ``value`` looks like a pseudonym of this module."""
    return (
        isinstance(value, str)
        and len(value) == PSEUDONYM_LENGTH
        and value.startswith(PREFIX)
        and all(c in "0123456789abcdef" for c in value[len(PREFIX) :])
    )


def load_key(
    env: Mapping[str, str], key_file: Path | None, *, production: bool, create: bool
) -> Pseudonymizer:
    """The pseudonymizer of this environment.

    Args:
        env: The environment (``MLOPS_PSEUDONYM_KEY`` wins when set).
        key_file: The local key file (``settings.Locations.pseudonym_key``); ignored in
            production.
        production: Whether the production flavour runs: the variable is then required.
        create: Generate the key file when it is missing (the pipeline does; the service does
            not: a new key would silently stop its plane lookups).

    Raises:
        PseudonymKeyError: production without the variable, a key too short, or no key file
            where one must exist.
    """
    value = env.get(KEY_VARIABLE, "")
    if value.strip():
        return Pseudonymizer(value)
    if production or key_file is None:
        raise PseudonymKeyError(
            f"MLOPS_ENV=production needs {KEY_VARIABLE} (the secret key of the pseudonyms of "
            "personal data, docs/data.md)"
        )
    if not key_file.exists():
        if not create:
            raise PseudonymKeyError(
                f"no pseudonym key: set {KEY_VARIABLE} or let the pipeline create {key_file} "
                "(the key of the lake this service's planes come from)"
            )
        _create_key_file(key_file)
    return Pseudonymizer(key_file.read_text())


def service_pseudonymizer(env: Mapping[str, str] | None = None) -> Pseudonymizer:
    """The key of a process outside the pipeline (the prediction service).

    ``MLOPS_PSEUDONYM_KEY`` (required in production); locally, the state folder's key file
    the pipeline made, never a new one: a new key would silently stop the plane lookups.
    """
    from mlops_assets import settings

    env = os.environ if env is None else env
    return load_key(
        env,
        settings.locations(dict(env)).pseudonym_key,
        production=settings.environment(dict(env)) == "production",
        create=False,
    )


def _create_key_file(path: Path) -> None:
    """Writes a random key readable by its owner only, atomically; a concurrent key wins.

    The key is written to a private temporary file, then linked to its name (``link`` fails
    when the name exists), so no reader ever sees a partial key.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
