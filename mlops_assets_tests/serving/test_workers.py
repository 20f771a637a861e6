"""The number of worker processes read at start: per core by default, refusals naming it."""

from __future__ import annotations

import pytest

from mlops_assets.serving.workers import (
    DEFAULT_WORKERS,
    MAX_WORKERS,
    PER_CORE,
    WORKERS_VARIABLE,
    workers_from_environment,
)


def test_per_core_by_default_and_a_number_when_set():
    assert DEFAULT_WORKERS == PER_CORE == "cpu_count"
    assert workers_from_environment({}) == PER_CORE
    assert workers_from_environment({WORKERS_VARIABLE: "  "}) == PER_CORE
    assert workers_from_environment({WORKERS_VARIABLE: "CPU_count"}) == PER_CORE
    assert workers_from_environment({WORKERS_VARIABLE: "1"}) == 1
    assert workers_from_environment({WORKERS_VARIABLE: f" {MAX_WORKERS} "}) == MAX_WORKERS


@pytest.mark.parametrize("raw", ["0", "-2", "2.5", "two", "1e3", str(MAX_WORKERS + 1), "auto"])
def test_anything_else_is_refused_with_a_message_naming_the_setting(raw: str):
    with pytest.raises(ValueError) as refused:
        workers_from_environment({WORKERS_VARIABLE: raw})
    assert str(refused.value) == (
        f"{WORKERS_VARIABLE} must be cpu_count or a whole number from 1 to {MAX_WORKERS}, "
        f"got {raw.strip().lower()!r}"
    )
