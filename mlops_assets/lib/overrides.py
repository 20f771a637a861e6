"""Policy dataclasses: bounds declared with their fields, overrides from a JSON object."""

import json
from dataclasses import field, fields
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


def bounded(
    default: T, *, low: float | None = None, high: float | None = None, below: float | None = None
) -> T:
    """A policy field with a default whose value ``check_bounds`` keeps within its bounds.

    Args:
        default: The field's default.
        low: Smallest valid value.
        high: Largest valid value.
        below: A bound the value must stay strictly under.
    """
    return field(default=default, metadata={"bounds": (low, high, below)})


def check_bounds(policy: object) -> None:
    """Checks every ``bounded`` field of a policy dataclass (in ``__post_init__``).

    Raises:
        ValueError: naming the first field out of its bounds, the bound and the value.
    """
    for item in fields(policy):  # type: ignore[arg-type]
        if "bounds" not in item.metadata:
            continue
        low, high, below = item.metadata["bounds"]
        value = getattr(policy, item.name)
        if low is not None and value < low:
            raise ValueError(f"{item.name} must be at least {low}, got {value}")
        if high is not None and value > high:
            raise ValueError(f"{item.name} must be at most {high}, got {value}")
        if below is not None and value >= below:
            raise ValueError(f"{item.name} must be below {below}, got {value}")
