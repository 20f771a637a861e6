"""Faults injected into the data registry, the lake and run workers, and what a failed run
reports."""

from __future__ import annotations

import contextlib
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


@contextmanager
def held_registry(repo: Path) -> Iterator[None]:
    """Holds the data registry's writer lock (``DataRegistry._lock``'s file) while the block
    runs, as a slow writer would: every commit to ``repo`` waits until the block ends."""
    from filelock import FileLock

    with FileLock(str(repo.parent / f".{repo.name}.lock"), timeout=30):
        yield


@contextmanager
def commits_held(repo: Path, path: str, marker: Path) -> Iterator[None]:
    """A git hook in ``repo`` that holds a commit of ``path``: it touches ``marker`` and
    hangs, so the writer stays inside ``git commit`` (its DVC pointer staged) until it is
    killed. Commits of other paths go through. The hook goes when the block ends."""
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.parent.mkdir(parents=True, exist_ok=True)
    hook.write_text(
        "#!/bin/sh\n"
        f"git diff --cached --name-only | grep -qxF '{path}.dvc' || exit 0\n"
        f"touch '{marker}'\nsleep 600\n"
    )
    hook.chmod(0o755)
    try:
        yield
    finally:
        hook.unlink()


def kill_tree(pid: int) -> list[int]:
    """SIGKILL to a process and all its descendants at once (as the OOM killer or a node
    loss would end a run worker and the git/DVC commands it runs); returns their ids."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(processes, timeout=10)
    return [p.pid for p in processes]


@contextmanager
def full_disk(folder: Path, slack: int = 4096) -> Iterator[bool]:
    """Mounts a tmpfs over ``folder`` holding its files and ``slack`` bytes more, so the next
    write that needs more fails with ENOSPC; yields False (nothing mounted) where this
    machine does not allow mounting (not root, or no CAP_SYS_ADMIN)."""
    import shutil
    import subprocess
    import tempfile

    page = 4096
    files = [p for p in folder.iterdir() if p.is_file()]
    used = sum(-(-p.stat().st_size // page) * page for p in files)
    with tempfile.TemporaryDirectory() as spare:
        for path in files:
            shutil.copy2(path, spare)
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={used + slack}", "tmpfs", str(folder)],
            capture_output=True,
            check=False,
        )
        if mounted.returncode != 0:
            yield False
            return
        try:
            for path in files:
                shutil.copy2(Path(spare) / path.name, folder / path.name)
            yield True
        finally:
            subprocess.run(["umount", str(folder)], check=True, capture_output=True)
