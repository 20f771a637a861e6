"""Faults injected into the data registry and the lake, and what a failed run reports."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REFUSAL = "commits to the data registry are frozen"


@contextmanager
def refused_commits(repo: Path) -> Iterator[str]:
    """A git hook in ``repo`` that refuses every commit while the block runs (a policy hook).

    Yields the refusal message the hook prints.
    """
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.parent.mkdir(parents=True, exist_ok=True)
    hook.write_text(f"#!/bin/sh\necho '{REFUSAL}' >&2\nexit 1\n")
    hook.chmod(0o755)
    try:
        yield REFUSAL
    finally:
        hook.unlink()


def failure_text(result: Any) -> str:
    """Every step failure of an in-process run with its chain of causes, as one text."""
    texts = []
    for event in result.all_events:
        if not event.is_step_failure:
            continue
        error = event.step_failure_data.error
        while error is not None:
            texts.append(error.message.strip())
            error = error.cause or error.context
    return "\n".join(texts)


def staged_leftovers(folder: Path) -> list[str]:
    """Hidden (staged or temporary) files left in a lake folder."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))
