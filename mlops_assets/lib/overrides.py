"""Policies set from a JSON object of field overrides (an environment variable)."""

import json
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def from_json_overrides(policy: type[T], raw: str, source: str) -> T:
    """A ``policy`` dataclass from a JSON object of field overrides; empty means the defaults.

    Raises:
        ValueError: for invalid JSON, unknown fields or invalid values, naming ``source``.
    """
    if not raw.strip():
        return policy()
    try:
        values: Any = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"{source} is not valid JSON: {error}") from error
    known = {f.name for f in fields(policy)}  # type: ignore[arg-type]
    if not isinstance(values, dict) or set(values) - known:
        unknown = sorted(set(values) - known) if isinstance(values, dict) else values
        raise ValueError(f"{source}: unknown field(s) {unknown}; known: {sorted(known)}")
    try:
        return policy(**values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{source}: {error}") from error
