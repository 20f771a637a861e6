"""The audit trail: every consequential act on the model in production, hash-chained.

One record per act (a promotion, a rejection, a trial's start and end, a rollback, an
approval, a manual materialization, a policy change): who, what, when, why, and links to the
evidence (MLflow run, data version, bento, Dagster run). Each record carries the SHA-256 of
the one before it, so an edited, removed or reordered record breaks the chain there and
``verify`` names it.

Each record is its own object, ``<seq>.json``, created exclusively (a hard link on a disk,
``If-None-Match: *`` in S3): two writers racing for the same number cannot both win, the
loser reads the new tail and takes the next number. Appending to one shared file works on a
disk but not in an object store, where a read-modify-write loses a concurrent record.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

# The hash the first record points back to.
GENESIS = "0" * 64
# The acts the trail records; anything else is a programming error, refused on append.
ACTS = frozenset(
    {
        "promotion",
        "rejection",
        "trial_start",
        "trial_end",
        "rollback",
        "approval_requested",
        "approval",
        "approval_rejected",
        "approval_expired",
        "manual_materialization",
        "policy_change",
    }
)
# The run tag a launcher sets to say who launched (UI launchpad tags, the command line).
ACTOR_TAG = "mlops/actor"
# The run tag saying why a person launched it, and the one naming its audit record (de-dup).
REASON_TAG = "mlops/reason"
RECORD_TAG = "mlops/audit_record"
_NAME_DIGITS = 8
_ATTEMPTS = 50


class AuditError(RuntimeError):
    """A record could not be written, or the act or its fields are not valid."""


@dataclass(frozen=True)
class Record:
    """One act: who did what, when and why, with its evidence and its place in the chain.

    Attributes:
        seq: Position in the trail, from 1, without gaps.
        at: When, ISO 8601 in UTC, to the second.
        act: One of ``ACTS``.
        actor: Who: a person (``--actor``, the OS user, the launch's actor tag) or, for
            automation, ``sensor <name>``.
        subject: What was acted on, e.g. ``flight_delay v7``.
        reason: Why, in words.
        evidence: Links to the evidence, e.g. ``mlflow_run``, ``data_version``, ``bento``,
            ``dagster_run``.
        prev: Hash of the record before (``GENESIS`` for the first).
        hash: SHA-256 of this record's canonical JSON without ``hash``.
    """

    seq: int
    at: str
    act: str
    actor: str
    subject: str
    reason: str
    evidence: dict[str, str] = field(default_factory=dict)
    prev: str = GENESIS
    hash: str = ""

    def body(self) -> dict[str, Any]:
        """Every field but ``hash``: what the hash covers."""
        fields = asdict(self)
        fields.pop("hash")
        return fields


@dataclass(frozen=True)
class Verification:
    """The outcome of checking a trail.

    Attributes:
        records: How many records were read.
        head: Hash of the last record that checked out (``GENESIS`` if none).
        first_bad: File name of the first record that breaks the chain, or None.
        problem: What is wrong with it, or empty.
    """

    records: int
    head: str
    first_bad: str | None = None
    problem: str = ""

    @property
    def ok(self) -> bool:
        """Whether every record checked out."""
        return self.first_bad is None


def record_hash(body: Mapping[str, Any]) -> str:
    """SHA-256 of a record body's canonical JSON (sorted keys, no spaces, UTF-8)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _name(seq: int) -> str:
    return f"{seq:0{_NAME_DIGITS}d}.json"


def _numbers(root: Any) -> list[int]:
    """The sequence numbers present in the trail, ascending (names that are not ours skipped)."""
    from mlops_assets.lib.storage import is_object_store

    if is_object_store(root):
        # fsspec caches listings per filesystem: another writer's records would stay unseen,
        # and a writer would lose every race against the number it cannot see.
        root.fs.invalidate_cache(root.path)
    if not root.exists():
        return []
    numbers = []
    for child in root.iterdir():
        stem, _, suffix = child.name.partition(".")
        if suffix == "json" and stem.isdigit() and len(stem) == _NAME_DIGITS:
            numbers.append(int(stem))
    return sorted(numbers)


def _parse(payload: bytes) -> Record:
    """A record from its stored bytes; raises ValueError naming what is wrong."""
    try:
        fields = json.loads(payload)
        return Record(**fields)
    except (ValueError, TypeError) as error:
        raise ValueError(f"not a record: {error}") from error


def _create_exclusive(target: Any, payload: bytes) -> None:
    """Writes ``target`` whole, only if it does not exist yet; FileExistsError otherwise."""
    from mlops_assets.lib.storage import is_object_store

    if is_object_store(target):
        with target.open("xb") as handle:  # one PUT with If-None-Match: *
            handle.write(payload)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
    with open(staged, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())  # on disk before it is named: a crash leaves no empty record
    try:
        os.link(staged, target)  # atomic and exclusive: readers never see a part
    finally:
        staged.unlink(missing_ok=True)


def append(
    root: Any,
    act: str,
    actor: str,
    subject: str,
    reason: str,
    evidence: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> Record:
    """Appends one record to the trail at ``root`` (a ``UPath``) and returns it.

    Raises:
        AuditError: for an unknown act, an empty actor, or a trail whose last record cannot
            be read (the trail must be repaired before it grows).
    """
    if act not in ACTS:
        raise AuditError(f"unknown act {act!r}: one of {', '.join(sorted(ACTS))}")
    if not actor.strip():
        raise AuditError(f"an audit record of {act} needs an actor")
    at = (now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds")
    links = {key: str(value) for key, value in (evidence or {}).items() if value not in (None, "")}
    for _ in range(_ATTEMPTS):
        seq, prev = tail(root)
        record = Record(seq + 1, at, act, actor.strip(), subject, reason, links, prev)
        record = Record(**{**record.body(), "hash": record_hash(record.body())})
        payload = (json.dumps(asdict(record), sort_keys=True, ensure_ascii=False) + "\n").encode()
        try:
            _create_exclusive(root / _name(record.seq), payload)
        except FileExistsError:
            continue  # another writer took this number: chain onto its record instead
        return record
    raise AuditError(f"could not append to the audit trail at {root}: {_ATTEMPTS} races lost")


def tail(root: Any) -> tuple[int, str]:
    """The last record's number and hash (0 and ``GENESIS`` for an empty trail).

    Raises:
        AuditError: when the last record cannot be read.
    """
    numbers = _numbers(root)
    if not numbers:
        return 0, GENESIS
    last = numbers[-1]
    try:
        record = _parse((root / _name(last)).read_bytes())
    except ValueError as error:
        raise AuditError(f"audit record {_name(last)} at {root} is unreadable: {error}") from error
    return last, record.hash


def read(root: Any) -> list[Record]:
    """Every record of the trail, in order; an unreadable record raises ValueError naming it."""
    records = []
    for seq in _numbers(root):
        try:
            records.append(_parse((root / _name(seq)).read_bytes()))
        except ValueError as error:
            raise ValueError(f"{_name(seq)}: {error}") from error
    return records


def verify(root: Any) -> Verification:
    """Checks the whole chain and names the first record that breaks it.

    A record breaks the chain when it is missing (a gap in the numbers), cannot be read,
    holds another number than its name, does not point at the hash of the one before, or
    does not hash to the value it carries (it was edited).
    """
    return _walk(root, _numbers(root), 0, GENESIS)[1]


@dataclass(frozen=True)
class Continuation:
    """What ``verify_since`` found after an anchor (a record seen before).

    Attributes:
        records: The new records that check out, oldest first.
        verification: ``records`` counts the whole trail up to the new head; ``first_bad``
            names the record that breaks the chain (the anchor itself when it was lost).
        anchor_lost: The anchor record is gone or rewritten: the trail was truncated or its
            history changed since it was seen.
    """

    records: tuple[Record, ...]
    verification: Verification
    anchor_lost: bool = False


def verify_since(root: Any, seq: int, head: str) -> Continuation:
    """Checks only what was appended after record ``seq``, seen before with hash ``head``.

    The anchor is kept outside the trail (a sensor's cursor), so it catches what the chain
    alone cannot: the newest records deleted, or the whole trail rewritten from some point.
    Reads the anchor record and the new ones; earlier records are not read.
    """
    numbers = _numbers(root)
    if seq == 0:
        return Continuation(*_walk(root, numbers, 0, GENESIS))
    anchor = _name(seq)
    if not numbers or numbers[-1] < seq:
        last = numbers[-1] if numbers else 0
        problem = f"missing: the trail ends at record {last}, this one was seen (truncated)"
        return Continuation((), Verification(last, head, anchor, problem), anchor_lost=True)
    try:
        seen = _parse((root / anchor).read_bytes())
    except (ValueError, FileNotFoundError) as error:
        problem = f"rewritten: unreadable now ({error}), it was seen intact"
        return Continuation((), Verification(seq, head, anchor, problem), anchor_lost=True)
    if seen.hash != head or record_hash(seen.body()) != head:
        problem = f"rewritten: it hashed {head[:12]}... when seen, it holds {seen.hash[:12]}... now"
        return Continuation((), Verification(seq, head, anchor, problem), anchor_lost=True)
    return Continuation(*_walk(root, [n for n in numbers if n > seq], seq, head))


def _walk(
    root: Any, numbers: list[int], seq: int, head: str
) -> tuple[tuple[Record, ...], Verification]:
    """Reads ``numbers`` (ascending) chaining each onto the one before, from ``seq``/``head``."""
    records: list[Record] = []
    for expected, number in enumerate(numbers, start=seq + 1):
        if number != expected:
            problem = "missing: the numbers skip it"
            return tuple(records), Verification(expected - 1, head, _name(expected), problem)
        name = _name(number)
        try:
            record = _parse((root / name).read_bytes())
        except ValueError as error:
            return tuple(records), Verification(expected - 1, head, name, str(error))
        problem = _chain_problem(record, number, head)
        if problem:
            return tuple(records), Verification(expected - 1, head, name, problem)
        head = record.hash
        records.append(record)
    return tuple(records), Verification(seq + len(records), head)


def _chain_problem(record: Record, seq: int, prev: str) -> str:
    """What breaks the chain at ``record``, or an empty string."""
    if record.seq != seq:
        return f"holds number {record.seq}"
    if record.prev != prev:
        return "does not point at the record before it (removed, reordered or replaced)"
    if record_hash(record.body()) != record.hash:
        return "its content does not match its hash (edited)"
    if record.act not in ACTS:
        return f"unknown act {record.act!r}"
    return ""


COLUMNS = ("seq", "when", "act", "actor", "subject", "reason", "evidence")


def rows(records: list[Record] | tuple[Record, ...]) -> list[tuple[str, ...]]:
    """One row of ``COLUMNS`` per record; evidence as ``key=value`` pairs."""
    return [
        (
            str(r.seq),
            r.at,
            r.act,
            r.actor,
            r.subject,
            r.reason,
            ", ".join(f"{key}={value}" for key, value in sorted(r.evidence.items())),
        )
        for r in records
    ]


def markdown_table(records: list[Record] | tuple[Record, ...]) -> str:
    """The records as a Markdown table (the UI renders it)."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows(records)]
    return "\n".join(lines)


def text_table(records: list[Record] | tuple[Record, ...]) -> str:
    """The records as aligned columns for a terminal (the last column unpadded)."""
    table = [COLUMNS, *rows(records)]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS) - 1)]
    return "\n".join(
        "  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[-1]]).rstrip()
        for row in table
    )
